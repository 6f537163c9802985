//! A fault-injecting TCP proxy for tests.
//!
//! A [`Proxy`] listens on an ephemeral loopback port and forwards every
//! connection it accepts to one upstream address, byte for byte, until the
//! test tells it to misbehave:
//!
//! - [`Proxy::set_cut`] cuts connections after a number of bytes or a time,
//!   fixed or drawn at random per connection ([`Cut`]); [`Proxy::cut_all`]
//!   cuts every current connection now. A cut closes both the client-side and
//!   the upstream-side socket at once, by reset or by close ([`CutStyle`]).
//! - [`Proxy::set_black_hole`] makes connections swallow everything: bytes
//!   are read and discarded, nothing is forwarded, and nothing is closed.
//! - [`Proxy::refuse_for`] resets new connections for a while without
//!   connecting upstream.
//! - [`Proxy::set_delay`] delivers every forwarded chunk a fixed time after
//!   it was read, without limiting throughput to one chunk per delay.
//! - [`Proxy::stats`] counts accepted, refused, cut and open connections and
//!   the bytes forwarded each way.
//!
//! Random choices come from a generator seeded by [`Proxy::start_seeded`], so
//! a failing test can be replayed with the same sequence of cut points.
//!
//! Dropping the proxy stops accepting and closes every proxied connection at
//! once; [`Proxy::shutdown`] does the same and also waits until every task of
//! the proxy has ended and the listening port is closed.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use faultproxy::{Cut, CutStyle, Proxy};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use tokio::net::TcpListener;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! // An upstream that sends 1 MiB to whoever connects.
//! let upstream = TcpListener::bind("127.0.0.1:0").await?;
//! let upstream_addr = upstream.local_addr()?;
//! tokio::spawn(async move {
//!     while let Ok((mut socket, _)) = upstream.accept().await {
//!         tokio::spawn(async move {
//!             let _ = socket.write_all(&vec![7u8; 1 << 20]).await;
//!         });
//!     }
//! });
//!
//! let proxy = Proxy::start_seeded(upstream_addr, 42).await?;
//! proxy.set_cut_style(CutStyle::Close);
//! proxy.set_cut(Cut::AfterBytes(1000));
//!
//! let mut client = tokio::net::TcpStream::connect(proxy.addr()).await?;
//! let mut received = Vec::new();
//! let read = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut received)).await?;
//! assert!(read.is_ok());
//! assert_eq!(received.len(), 1000); // exactly the allowance, then EOF
//! assert_eq!(proxy.stats().cuts, 1);
//!
//! proxy.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Runtime
//!
//! [`Proxy::start`] spawns its tasks on the current tokio runtime, which must
//! have the `net` and `time` drivers enabled (as `#[tokio::test]` does).

mod conn;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// When the proxy cuts a connection on its own.
///
/// Set with [`Proxy::set_cut`]. Byte counts are the bytes forwarded on the
/// connection in both directions summed; times are measured from the moment
/// the proxy accepted the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Cut {
    /// Never cut (the default).
    #[default]
    Never,
    /// Cut once this many bytes in total have been forwarded.
    ///
    /// The cut is exact: a chunk that would cross the limit is forwarded only
    /// up to it, then both sockets are closed. With traffic in both
    /// directions at once the two directions share the allowance, so the
    /// total never exceeds it but bytes the other direction had already
    /// taken a share for may be lost with the cut. With the default
    /// [`CutStyle::Reset`] the reset may also discard forwarded bytes the
    /// kernel had not sent yet; use [`CutStyle::Close`] when the receiver
    /// must see exactly the allowance.
    AfterBytes(u64),
    /// Like [`Cut::AfterBytes`] with a limit drawn uniformly from
    /// `min..=max` for each connection.
    RandomBytes {
        /// Smallest limit drawn.
        min: u64,
        /// Largest limit drawn.
        max: u64,
    },
    /// Cut this long after the connection was accepted.
    AfterTime(Duration),
    /// Like [`Cut::AfterTime`] with a time drawn uniformly from `min..=max`
    /// for each connection.
    RandomTime {
        /// Shortest time drawn.
        min: Duration,
        /// Longest time drawn.
        max: Duration,
    },
}

/// How a cut closes the two sockets of a connection.
///
/// Set with [`Proxy::set_cut_style`]; it also applies to the connections
/// closed by dropping or shutting down the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CutStyle {
    /// Abort both sockets with a TCP reset (`SO_LINGER` of zero), as a
    /// crashed peer or a middlebox dropping state would. The default.
    ///
    /// Bytes the proxy had written but the kernel had not yet sent are
    /// discarded with the reset, so a receiver may see fewer bytes than a
    /// byte-count [`Cut`] allowed.
    #[default]
    Reset,
    /// Close both sockets normally: the peers see every forwarded byte, then
    /// end of stream. (A socket that still holds unread incoming bytes is
    /// reset by the kernel when closed, whatever the style.)
    Close,
}

/// A snapshot of a proxy's counters, from [`Proxy::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections the listener accepted, refused ones included.
    pub accepted: u64,
    /// Connections closed without forwarding anything: during a
    /// [`Proxy::refuse_for`] window, or because the upstream connect failed.
    pub refused: u64,
    /// Connections cut by a [`Cut`] policy or by [`Proxy::cut_all`].
    pub cuts: u64,
    /// Connections currently open (connecting upstream or forwarding).
    pub open: u64,
    /// Bytes forwarded from clients to the upstream.
    pub bytes_up: u64,
    /// Bytes forwarded from the upstream to clients.
    pub bytes_down: u64,
}

/// A fault-injecting TCP proxy from an ephemeral loopback port to one
/// upstream address.
///
/// Every setter takes `&self` and applies at once; the proxy can be shared
/// between tasks behind an [`Arc`]. Dropping it stops accepting and closes
/// every proxied connection (in the current [`CutStyle`]); its tasks end as
/// soon as the runtime next polls them. Use [`Proxy::shutdown`] to wait for
/// that.
pub struct Proxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy to `upstream`, with random choices seeded from the
    /// operating system.
    ///
    /// # Errors
    ///
    /// Returns the error of binding the listener on `127.0.0.1:0`.
    ///
    /// # Panics
    ///
    /// Panics if called outside a tokio runtime.
    pub async fn start(upstream: SocketAddr) -> io::Result<Proxy> {
        Self::start_seeded(upstream, fastrand::u64(..)).await
    }

    /// Starts a proxy to `upstream` whose random choices (the limits drawn
    /// for [`Cut::RandomBytes`] and [`Cut::RandomTime`]) come from a
    /// generator seeded with `seed`, in the order connections are accepted.
    ///
    /// # Errors
    ///
    /// Returns the error of binding the listener on `127.0.0.1:0`.
    ///
    /// # Panics
    ///
    /// Panics if called outside a tokio runtime.
    pub async fn start_seeded(upstream: SocketAddr, seed: u64) -> io::Result<Proxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            policy: Mutex::new(Policy {
                cut: Cut::Never,
                style: CutStyle::Reset,
                black_hole: false,
                refuse_until: None,
                rng: fastrand::Rng::with_seed(seed),
            }),
            delay_nanos: AtomicU64::new(0),
            registry: Mutex::new(Registry { closing: false, next_id: 0, conns: HashMap::new() }),
            stop: Notify::new(),
            counters: Counters::default(),
        });
        let task = tokio::spawn(accept_loop(Arc::clone(&shared), listener));
        Ok(Proxy { shared, addr, task: Some(task) })
    }

    /// The address clients connect to (on `127.0.0.1`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address the proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// Sets the cut policy.
    ///
    /// It applies to connections accepted from now on, and to current ones
    /// as if it had been set when they were accepted: a current connection
    /// that has already forwarded more than a new byte limit, or has lived
    /// longer than a new time limit, is cut at once. Random limits are drawn
    /// afresh for every connection, current ones included. [`Cut::Never`]
    /// lifts the limits of current connections.
    pub fn set_cut(&self, cut: Cut) {
        let mut policy = self.shared.lock_policy();
        policy.cut = cut;
        let conns: Vec<Arc<ConnCtl>> = self.shared.lock_registry().conns.values().cloned().collect();
        for ctl in conns {
            self.shared.apply_cut(&mut policy, &ctl);
        }
    }

    /// Sets how cuts close sockets (see [`CutStyle`]), for cuts from now on.
    pub fn set_cut_style(&self, style: CutStyle) {
        self.shared.lock_policy().style = style;
    }

    /// Cuts every current connection now and returns how many were cut.
    ///
    /// Connections already being cut are not counted again.
    pub fn cut_all(&self) -> usize {
        let conns: Vec<Arc<ConnCtl>> = self.shared.lock_registry().conns.values().cloned().collect();
        conns.iter().filter(|ctl| self.shared.cut(ctl)).count()
    }

    /// Turns the black hole on or off.
    ///
    /// On: current and new connections stop forwarding in both directions.
    /// Bytes they read are discarded, and their sockets stay open (the proxy
    /// sends neither FIN nor reset, even when a peer closes). A connection
    /// that has been black-holed stays so until it is cut or the proxy is
    /// dropped, since its stream is already corrupt.
    ///
    /// Off: connections accepted from now on forward normally.
    pub fn set_black_hole(&self, on: bool) {
        let mut policy = self.shared.lock_policy();
        policy.black_hole = on;
        if on {
            for ctl in self.shared.lock_registry().conns.values() {
                ctl.black_holed.store(true, Ordering::Release);
            }
        }
    }

    /// Delays forwarding: every chunk is delivered `delay` after it was read,
    /// in order, on current and new connections.
    ///
    /// Chunks in flight are queued (up to 4 MiB per direction per
    /// connection, after which reading pauses), so a bulk transfer keeps its
    /// throughput; only latency grows. A chunk read before a change keeps
    /// the delay it was read with. `Duration::ZERO` turns the delay off.
    pub fn set_delay(&self, delay: Duration) {
        let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.shared.delay_nanos.store(nanos, Ordering::Relaxed);
    }

    /// For the next `duration`, resets every new connection as soon as it is
    /// accepted, without connecting upstream. Current connections are not
    /// affected. A later call replaces the window; `Duration::ZERO` ends it.
    pub fn refuse_for(&self, duration: Duration) {
        self.shared.lock_policy().refuse_until = Instant::now().checked_add(duration);
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let counters = &self.shared.counters;
        Stats {
            accepted: counters.accepted.load(Ordering::Relaxed),
            refused: counters.refused.load(Ordering::Relaxed),
            cuts: counters.cuts.load(Ordering::Relaxed),
            open: self.shared.lock_registry().conns.len() as u64,
            bytes_up: counters.bytes_up.load(Ordering::Relaxed),
            bytes_down: counters.bytes_down.load(Ordering::Relaxed),
        }
    }

    /// Stops the proxy like dropping it, and waits until every task of the
    /// proxy has ended: when this returns, every proxied socket is closed and
    /// the listening port refuses connections.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes still stops the proxy (as
    /// dropping the proxy would); only the waiting is lost.
    pub async fn shutdown(mut self) {
        self.shared.stop_all();
        if let Some(task) = self.task.take() {
            // The task never panics; a join error could only mean the runtime
            // is shutting down, in which case everything is dropped anyway.
            let _ = task.await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop_all();
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// The settings that decide what happens to a new connection.
struct Policy {
    cut: Cut,
    style: CutStyle,
    black_hole: bool,
    refuse_until: Option<Instant>,
    rng: fastrand::Rng,
}

/// The live connections, by id.
struct Registry {
    /// Set once the proxy is stopping: no connection is registered after.
    closing: bool,
    next_id: u64,
    conns: HashMap<u64, Arc<ConnCtl>>,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    cuts: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

/// State shared by the handle, the accept task and the connection tasks.
///
/// Lock order: `policy` before `registry`.
struct Shared {
    upstream: SocketAddr,
    policy: Mutex<Policy>,
    delay_nanos: AtomicU64,
    registry: Mutex<Registry>,
    /// Wakes the accept loop to stop.
    stop: Notify,
    counters: Counters,
}

impl Shared {
    fn lock_policy(&self) -> MutexGuard<'_, Policy> {
        self.policy.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn style(&self) -> CutStyle {
        self.lock_policy().style
    }

    fn delay(&self) -> Duration {
        Duration::from_nanos(self.delay_nanos.load(Ordering::Relaxed))
    }

    /// Asks a connection to be cut; true if this call did it (and counted it).
    fn cut(&self, ctl: &ConnCtl) -> bool {
        let first = ctl.end(End::Cut);
        if first {
            self.counters.cuts.fetch_add(1, Ordering::Relaxed);
        }
        first
    }

    /// Sets a connection's limits from the policy, cutting it if it is
    /// already past them.
    fn apply_cut(&self, policy: &mut Policy, ctl: &ConnCtl) {
        let (limit, deadline) = match policy.cut {
            Cut::Never => (u64::MAX, None),
            Cut::AfterBytes(limit) => (limit, None),
            Cut::RandomBytes { min, max } => (policy.rng.u64(min.min(max)..=max.max(min)), None),
            Cut::AfterTime(after) => (u64::MAX, Some(after)),
            Cut::RandomTime { min, max } => {
                let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
                let (lo, hi) = (nanos(min.min(max)), nanos(max.max(min)));
                (u64::MAX, Some(Duration::from_nanos(policy.rng.u64(lo..=hi))))
            }
        };
        ctl.limit.store(limit, Ordering::Release);
        let deadline_nanos = deadline.map_or(u64::MAX, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        ctl.deadline_nanos.store(deadline_nanos, Ordering::Release);
        if ctl.forwarded.load(Ordering::Acquire) >= limit {
            self.cut(ctl);
        } else {
            // Re-arms the connection's timer with the new deadline.
            ctl.wake.notify_one();
        }
    }

    /// Stops accepting and ends every connection. Idempotent.
    fn stop_all(&self) {
        let mut registry = self.lock_registry();
        registry.closing = true;
        for ctl in registry.conns.values() {
            ctl.end(End::Shutdown);
        }
        drop(registry);
        self.stop.notify_one();
    }

    /// Takes a newly accepted socket: refuses it, or registers it and spawns
    /// its task.
    fn admit(self: &Arc<Self>, client: TcpStream, tasks: &mut JoinSet<()>) {
        self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut policy = self.lock_policy();
        if policy.refuse_until.is_some_and(|until| now < until) {
            drop(policy);
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            conn::close(CutStyle::Reset, client);
            return;
        }
        let ctl = Arc::new(ConnCtl::new(now, policy.black_hole));
        let mut registry = self.lock_registry();
        if registry.closing {
            drop(registry);
            conn::close(policy.style, client);
            return;
        }
        let id = registry.next_id;
        registry.next_id += 1;
        registry.conns.insert(id, Arc::clone(&ctl));
        drop(registry);
        self.apply_cut(&mut policy, &ctl);
        drop(policy);
        let registration = Registration { shared: Arc::clone(self), id };
        tasks.spawn(conn::run(Arc::clone(self), client, ctl, registration));
    }
}

/// Removes a connection from the registry when its task ends (or is
/// dropped).
struct Registration {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shared.lock_registry().conns.remove(&self.id);
    }
}

/// Why a connection is being ended by the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Cut = 1,
    Shutdown = 2,
}

/// The control block of one connection, shared between its task and the
/// handle.
struct ConnCtl {
    accepted_at: Instant,
    /// Byte limit over both directions; `u64::MAX` for none.
    limit: AtomicU64,
    /// Bytes forwarded (or reserved for forwarding) over both directions.
    forwarded: AtomicU64,
    /// Time limit from `accepted_at`, in nanoseconds; `u64::MAX` for none.
    deadline_nanos: AtomicU64,
    black_holed: AtomicBool,
    /// 0 while running, else an [`End`].
    end: AtomicU8,
    /// Wakes the connection task when `end` or the deadline changes.
    wake: Notify,
}

impl ConnCtl {
    fn new(accepted_at: Instant, black_holed: bool) -> ConnCtl {
        ConnCtl {
            accepted_at,
            limit: AtomicU64::new(u64::MAX),
            forwarded: AtomicU64::new(0),
            deadline_nanos: AtomicU64::new(u64::MAX),
            black_holed: AtomicBool::new(black_holed),
            end: AtomicU8::new(0),
            wake: Notify::new(),
        }
    }

    /// Requests the end of the connection; true if it was not already ending.
    fn end(&self, why: End) -> bool {
        let first = self.end.compare_exchange(0, why as u8, Ordering::AcqRel, Ordering::Acquire).is_ok();
        if first {
            self.wake.notify_one();
        }
        first
    }

    fn ended(&self) -> Option<End> {
        match self.end.load(Ordering::Acquire) {
            0 => None,
            1 => Some(End::Cut),
            _ => Some(End::Shutdown),
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match self.deadline_nanos.load(Ordering::Acquire) {
            u64::MAX => None,
            nanos => self.accepted_at.checked_add(Duration::from_nanos(nanos)),
        }
    }

    fn is_black_holed(&self) -> bool {
        self.black_holed.load(Ordering::Acquire)
    }

    /// Takes a share of the byte allowance for a chunk of `want` bytes and
    /// returns how many of them may be forwarded.
    fn reserve(&self, want: u64) -> u64 {
        let mut forwarded = self.forwarded.load(Ordering::Acquire);
        loop {
            let room = self.limit.load(Ordering::Acquire).saturating_sub(forwarded);
            let take = want.min(room);
            match self.forwarded.compare_exchange_weak(
                forwarded,
                forwarded.saturating_add(take),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return take,
                Err(current) => forwarded = current,
            }
        }
    }

    fn limit_reached(&self) -> bool {
        self.forwarded.load(Ordering::Acquire) >= self.limit.load(Ordering::Acquire)
    }
}

/// Accepts connections until stopped, then waits for every connection task.
async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            () = shared.stop.notified() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => shared.admit(client, &mut tasks),
                // Out of descriptors or an aborted handshake: pause rather
                // than spin, and keep serving.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
        if shared.lock_registry().closing {
            break;
        }
    }
    drop(listener);
    shared.stop_all();
    while tasks.join_next().await.is_some() {}
}
