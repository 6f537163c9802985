//! The tokio shell: [`BackedPipe`] (`AsyncRead + AsyncWrite`, owned split
//! halves), the driver task that dials, handshakes, keeps connections alive
//! and moves bytes when the application does not, and the wake-up plumbing
//! between them.
//!
//! # How the work is shared
//!
//! The state (the core, the list of connections, the reconnect
//! bookkeeping) lives in one mutex, never held across an await. Each
//! connection is split into a read half and a write half, each behind a
//! lock of its own (sockets split into independent halves; other
//! transports share one lock between their halves, as `tokio::io::split`
//! does). The application's own `poll_read`/`poll_write` do the I/O of the
//! current connection inline: a write copies into the send buffer and
//! hands the new frame to the transport with one vectored write, from the
//! caller's buffer, with only the write half held; a read reads DATA
//! payload straight from the transport into the caller's buffer with only
//! the read half held. So a pipe's reading and writing never wait for
//! each other's system calls. Locks are taken half first, then state;
//! whoever holds the state only ever tries a half, and leaves what it
//! cannot send in the core for the half's holder, who sends it before
//! letting go. A driver task (one per pipe) handles everything else:
//! dialling, handshakes, timers, and reading when no application read is
//! waiting (acknowledgements, pings, end of stream).
//!
//! Readiness of a transport wakes the application task that waits for it,
//! or the driver when none does. Work that arrives while an application
//! task is between two calls is left to its next call: incoming bytes to
//! a reader between two reads; acknowledgements, and room in the
//! transport, to a writer between two writes (a writer waiting in a write
//! is woken for incoming bytes, as a write reads what has arrived). Waking
//! the driver for them would put a second task in the runtime's queue,
//! which the other worker thread steals: the stream's tasks then bounce
//! between cores. If the application does not come back for the I/O
//! within [`CLAIM_DELAY`] (its read or write future was dropped, or it
//! stopped reading or writing), the driver does the I/O itself, so a
//! cancelled read never stalls acknowledgements. While the stream is busy,
//! the driver checks on this from its timer every [`CLAIM_DELAY`] instead
//! of being woken by each readiness event.
//!
//! Between DATA payloads a read takes up to [`STASH_BYTES`] at once, so
//! control frames and the next DATA header cost no read of their own; the
//! payload then goes straight into the caller's buffer.
//!
//! A failed write does not end a connection at once: it is read on (for
//! a short while) until it ends, so that an ERROR frame the peer sent
//! before it closed is still seen (see [`Core::write_failed`]).
//!
//! # Logs
//!
//! Every pipe has a `pipe` span with its side (`active` or `passive`) and
//! its session id (known from the start on the passive side, recorded at
//! the first handshake on the active side), a child of the span current
//! where the pipe was made. The driver task runs in it, and the
//! application's calls enter it, so every line the pipe and its core log
//! says which pipe it is about.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tracing::Instrument;

use crate::core::{ConnectionState, Core, Event, FirstHandshake, Generation, ReadOutcome, Role};
use crate::error::Error;
use crate::options::Options;
use crate::proto::{self, DecodeError, Hello, Nonce, SessionId};
use crate::reconnect::Reconnector;

/// How long the driver leaves a transport's readiness to the application
/// task it woke before doing the I/O itself.
pub(crate) const CLAIM_DELAY: Duration = Duration::from_millis(5);

/// The most bytes read from a connection in one go between DATA payloads
/// (whole control frames and the start of the next payload).
const STASH_BYTES: usize = 4096;

/// The state a pipe reports through [`BackedPipe::watch_status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub enum PipeState {
    /// No connection; waiting to dial again (backoff) or, on the passive
    /// side, for the next connection to be handed over.
    Disconnected,
    /// Dialling or handshaking.
    Reconnecting,
    /// A connection carries the stream.
    Connected,
    /// Closed or failed; see [`BackedPipe::failure`].
    Closed,
}

/// The pipe's state and the generation of its newest connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub struct Status {
    /// Connected, disconnected, reconnecting or closed.
    pub state: PipeState,
    /// The current connection's generation, or that of the newest attempt.
    pub generation: Generation,
}

/// Counters of a pipe; see [`BackedPipe::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub struct Stats {
    /// Application bytes transmitted, replays included.
    pub bytes_sent: u64,
    /// Application bytes received.
    pub bytes_received: u64,
    /// Application bytes transmitted again after a reconnect.
    pub bytes_replayed: u64,
    /// Successful handshakes after the first one.
    pub reconnects: u64,
    /// Dials and handshakes that failed.
    pub failed_attempts: u64,
    /// The current (or newest) connection's generation.
    pub generation: Generation,
    /// Memory held by the send and receive buffers. It follows what they
    /// hold, and drops to 0 when an idle pipe has nothing unacknowledged.
    pub buffer_bytes: usize,
}

// ----- wake-up plumbing -----------------------------------------------------------

#[derive(Default)]
struct Slots {
    reader: Option<Waker>,
    writer: Option<Waker>,
    driver: Option<Waker>,
    /// A readiness wake went to the reader, which has not polled since
    /// (when the first such wake came, in [`Hub::nanos`]).
    unclaimed_read: Option<u64>,
    /// A readiness wake went to the writer, which has not polled since.
    unclaimed_write: Option<u64>,
    /// The driver looks at the unclaimed wakes again by itself (its timer
    /// is set, or it is about to run): wakes left to the application need
    /// not wake it.
    claim_armed: bool,
    /// A wake was left to the application since the driver last looked:
    /// while the stream is this busy, the driver keeps looking every
    /// [`CLAIM_DELAY`] instead of being woken for every wake.
    claim_activity: bool,
    /// The waiting writer needs acknowledgements (the send buffer is full,
    /// or a shutdown waits for its end of stream to be acknowledged), not
    /// only a writable transport.
    writer_needs_acks: bool,
    /// The writer's last call was a write (not a flush or shutdown), which
    /// reads what has arrived before it returns.
    writer_reads: bool,
    /// The driver has been woken and has not run since (nor ended).
    driver_woken: bool,
}

/// Who waits for what. Its lock is a leaf: nothing is called under it.
struct Hub {
    epoch: Instant,
    /// When an application read last returned, in nanoseconds after `epoch`.
    last_read_nanos: AtomicU64,
    /// When an application write last returned.
    last_write_nanos: AtomicU64,
    slots: Mutex<Slots>,
    /// The current transport became readable while no application read
    /// waited: a writer that holds the state anyway reads the
    /// acknowledgements itself rather than wait for the driver to get in.
    read_ready: AtomicBool,
    /// Notified when a closed pipe has let go of its last connection.
    drained: tokio::sync::Notify,
    /// Notified when acknowledgements arrive or the pipe ends.
    acked: tokio::sync::Notify,
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn register_reader(&self, waker: &Waker) {
        let mut slots = self.lock();
        slots.unclaimed_read = None;
        set_waker(&mut slots.reader, waker);
    }

    fn clear_reader(&self) {
        self.lock().reader = None;
    }

    fn register_writer(&self, waker: &Waker, needs_acks: bool, reads: bool) {
        let mut slots = self.lock();
        slots.unclaimed_write = None;
        slots.writer_needs_acks = needs_acks;
        slots.writer_reads = reads;
        set_waker(&mut slots.writer, waker);
    }

    fn clear_writer(&self) {
        self.lock().writer = None;
    }

    fn register_driver(&self, waker: &Waker) {
        let mut slots = self.lock();
        slots.driver_woken = false;
        set_waker(&mut slots.driver, waker);
    }

    /// Whether the driver has been woken and has not run since.
    fn driver_woken(&self) -> bool {
        self.lock().driver_woken
    }

    fn reader_waiting(&self) -> bool {
        self.lock().reader.is_some()
    }

    fn wake(&self, reader: bool, writer: bool, driver: bool) {
        let wakers = {
            let mut slots = self.lock();
            let wakers = [
                if reader { slots.reader.take() } else { None },
                if writer { slots.writer.take() } else { None },
                if driver { slots.driver.take() } else { None },
            ];
            slots.driver_woken |= wakers[2].is_some();
            wakers
        };
        for waker in wakers.into_iter().flatten() {
            waker.wake();
        }
    }

    /// Transport readiness in one direction.
    fn ready(&self, read: bool) {
        let (app, driver) = {
            let mut slots = self.lock();
            let mut app = if read { slots.reader.take() } else { slots.writer.take() };
            let mut wake_driver = app.is_none();
            if read && app.is_none() {
                // No read waits: acknowledgements, pings or data nobody
                // asked for yet. A writer that waits for acknowledgements
                // is woken for them; a reader between two reads takes them
                // in on its next call; so does a writer between two writes,
                // and a writer waiting in a write is woken for them (its
                // write reads what arrived before it returns, so a broken
                // connection is found at once). Waking the driver for them
                // would only move the work to another thread. Otherwise,
                // the driver reads them. If the application does not come
                // back within the claim delay, the driver reads them too.
                self.read_ready.store(true, Ordering::Release);
                let reader_busy = self.reader_busy();
                if slots.writer_needs_acks || (slots.writer_reads && !reader_busy) {
                    app = slots.writer.take();
                }
                if app.is_some() || reader_busy {
                    wake_driver = self.leave_to_app(&mut slots, true);
                }
            } else if app.is_some() || (!read && slots.writer_reads && slots.reader.is_none() && self.writer_busy()) {
                // A writer between two writes sends what waits on its next
                // one; but while a read waits (perhaps for the answer to
                // what was written), the driver sends it at once.
                wake_driver = self.leave_to_app(&mut slots, read);
            }
            let driver = if wake_driver { slots.driver.take() } else { None };
            slots.driver_woken |= driver.is_some();
            (app, driver)
        };
        if let Some(waker) = app {
            waker.wake();
        }
        if let Some(waker) = driver {
            waker.wake();
        }
    }

    /// Notes a readiness wake left to the application; whether the driver
    /// must be woken to watch that it is claimed.
    fn leave_to_app(&self, slots: &mut Slots, read: bool) -> bool {
        let unclaimed = if read { &mut slots.unclaimed_read } else { &mut slots.unclaimed_write };
        if unclaimed.is_none() {
            *unclaimed = Some(self.nanos());
        }
        slots.claim_activity = true;
        !std::mem::replace(&mut slots.claim_armed, true)
    }

    /// Notes that an application read returned now.
    fn reading(&self) {
        self.last_read_nanos.store(self.nanos(), Ordering::Relaxed);
    }

    fn nanos(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1)
    }

    /// Whether an application read returned within the last
    /// [`CLAIM_DELAY`].
    fn reader_busy(&self) -> bool {
        self.recent(&self.last_read_nanos)
    }

    /// Notes that an application write returned now.
    fn writing(&self) {
        self.last_write_nanos.store(self.nanos(), Ordering::Relaxed);
    }

    /// Whether an application write returned within the last
    /// [`CLAIM_DELAY`].
    fn writer_busy(&self) -> bool {
        self.recent(&self.last_write_nanos)
    }

    fn recent(&self, at: &AtomicU64) -> bool {
        let last = at.load(Ordering::Relaxed);
        last != 0 && self.nanos().saturating_sub(last) < CLAIM_DELAY.as_nanos() as u64
    }
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            epoch: Instant::now(),
            last_read_nanos: AtomicU64::new(0),
            last_write_nanos: AtomicU64::new(0),
            slots: Mutex::default(),
            read_ready: AtomicBool::new(false),
            drained: tokio::sync::Notify::new(),
            acked: tokio::sync::Notify::new(),
        }
    }
}

fn set_waker(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(existing) if existing.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

/// The waker handed to transports: readiness goes through the hub.
struct Readiness {
    hub: Arc<Hub>,
    read: bool,
}

impl Wake for Readiness {
    fn wake(self: Arc<Self>) {
        self.hub.ready(self.read);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.hub.ready(self.read);
    }
}

// ----- shared state -----------------------------------------------------------------

/// A connection's reading half.
type ReadIo = Box<dyn AsyncRead + Send + Unpin>;

/// A connection's writing half, and whether it owes a flush.
struct WriteSide {
    io: Box<dyn AsyncWrite + Send + Unpin>,
    flush_pending: bool,
}

/// One connection, in two halves, each behind its own lock: reading and
/// writing never wait for each other.
struct ConnIo {
    generation: Generation,
    reader: Arc<Mutex<ReadIo>>,
    writer: Arc<Mutex<WriteSide>>,
}

impl ConnIo {
    fn new<T: AsyncRead + AsyncWrite + Unpin + Send + 'static>(generation: Generation, io: T) -> ConnIo {
        let (read, write) = split_transport(io);
        ConnIo {
            generation,
            reader: Arc::new(Mutex::new(read)),
            writer: Arc::new(Mutex::new(WriteSide { io: write, flush_pending: false })),
        }
    }
}

/// Splits a transport into halves. Sockets split into halves that work
/// independently; any other transport into halves that share one lock
/// (taken only for each call), as `tokio::io::split` does.
fn split_transport<T: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: T,
) -> (ReadIo, Box<dyn AsyncWrite + Send + Unpin>) {
    let io: Box<dyn std::any::Any> = Box::new(io);
    let io = match io.downcast::<tokio::net::UnixStream>() {
        Ok(stream) => {
            let (read, write) = stream.into_split();
            return (Box::new(read), Box::new(write));
        }
        Err(io) => io,
    };
    let io = match io.downcast::<tokio::net::TcpStream>() {
        Ok(stream) => {
            let (read, write) = stream.into_split();
            return (Box::new(read), Box::new(write));
        }
        Err(io) => io,
    };
    let Ok(io) = io.downcast::<T>() else { unreachable!("the box holds a T") };
    let (read, write) = tokio::io::split(*io);
    (Box::new(read), Box::new(write))
}

/// Locks a connection half if no one else holds it.
fn try_half<S: ?Sized>(half: &Mutex<S>) -> Option<MutexGuard<'_, S>> {
    match half.try_lock() {
        Ok(guard) => Some(guard),
        Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

/// Locks a connection half, waiting for its holder (who holds it only for
/// one system call and its bookkeeping).
fn lock_half<S: ?Sized>(half: &Mutex<S>) -> MutexGuard<'_, S> {
    half.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Reconnect bookkeeping of the dialling side.
struct Redial {
    /// Consecutive failed attempts.
    failures: u32,
    /// Do not dial before this.
    not_before: Option<Instant>,
    /// When the pipe last had no connection, if it has none now.
    disconnected_since: Option<Instant>,
    /// The generation of the handshake in flight.
    attempt: Option<Generation>,
    /// A dial is in flight.
    dialing: bool,
    /// The last dial error.
    last_error: Option<Arc<io::Error>>,
    rng: fastrand::Rng,
}

type ForceResult = Option<Result<Generation, Error>>;

struct Inner<T> {
    core: Core,
    options: Options,
    active: bool,
    conns: Vec<ConnIo>,
    _transport: std::marker::PhantomData<fn() -> T>,
    current: Option<Generation>,
    redial: Redial,
    failed_attempts: u64,
    force: Option<watch::Sender<ForceResult>>,
    force_requested: bool,
    /// The core has a new deadline the driver's timer does not know.
    rearm_driver: bool,
    /// The newest status, as last computed.
    published: Option<Status>,
    /// How many times the status changed.
    status_changes: u64,
    /// A change not yet sent to the watch channel, with its number: it is
    /// sent once the state's lock is released (see [`StateGuard`]).
    unpublished: Option<(u64, Status)>,
    /// The pipe's span (as [`Shared::span`]), to record the session id in
    /// at the first handshake.
    span: tracing::Span,
    /// Whether the span has the session id yet.
    span_has_session: bool,
}

struct Shared<T> {
    inner: Mutex<Inner<T>>,
    hub: Arc<Hub>,
    read_waker: Waker,
    write_waker: Waker,
    status: watch::Sender<Status>,
    /// The number of the newest change sent to `status`.
    status_sent: AtomicU64,
    /// The pipe's span (see the module's "Logs"): the driver runs in it,
    /// and the application's calls into the pipe enter it.
    span: tracing::Span,
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl<T> Shared<T> {
    /// Locks the state. It is never held across an await; the application's
    /// reads and writes make their system calls without it, so the wait is
    /// short (the driver and control paths may be inside one non-blocking
    /// system call while holding it).
    fn lock(&self) -> StateGuard<'_, T> {
        StateGuard { guard: Some(self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())), shared: self }
    }
}

/// The locked state. Dropping it unlocks, then sends a status change made
/// meanwhile to the watch channel: never the other way round, because a
/// `wait_for` closure runs under the channel's lock and may call into the
/// pipe, which locks the state.
struct StateGuard<'a, T> {
    guard: Option<MutexGuard<'a, Inner<T>>>,
    shared: &'a Shared<T>,
}

impl<T> std::ops::Deref for StateGuard<'_, T> {
    type Target = Inner<T>;
    fn deref(&self) -> &Inner<T> {
        self.guard.as_deref().expect("held until dropped")
    }
}

impl<T> std::ops::DerefMut for StateGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut Inner<T> {
        self.guard.as_deref_mut().expect("held until dropped")
    }
}

impl<T> Drop for StateGuard<'_, T> {
    fn drop(&mut self) {
        let Some(mut guard) = self.guard.take() else { return };
        let change = guard.unpublished.take();
        drop(guard);
        if let Some((number, new)) = change {
            let sent = &self.shared.status_sent;
            // Two guards dropped at once may send out of order: the
            // channel's own lock orders them, and an older change that
            // comes second is not sent.
            self.shared.status.send_if_modified(|old| {
                if sent.load(Ordering::Relaxed) >= number {
                    return false;
                }
                sent.store(number, Ordering::Relaxed);
                let changed = *old != new;
                *old = new;
                changed
            });
        }
    }
}

/// Who is processing events (and so needs no wake-up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Party {
    Reader,
    Writer,
    Driver,
    Other,
}

/// Outcome of one write to a connection.
enum Wrote {
    /// Bytes went.
    Bytes,
    /// The transport would block (and will wake the waker given).
    Blocked,
    /// Writing failed; see [`Inner::write_failed`].
    Failed,
}

/// Outcome of one read for the application.
enum AppRead {
    /// Bytes went into the application's buffer.
    Data,
    /// Something changed (frames read, the connection lost or replaced):
    /// look at the state again.
    Again,
    /// Nothing to read now; the transport will wake the reader.
    Blocked,
}

/// Outcome of one transport operation.
enum Io {
    /// Bytes moved; the transport would now block (and will wake us).
    Progress,
    /// Bytes moved and more are waiting: the transport will not wake
    /// anyone for them, so the caller must come back.
    More,
    /// Nothing moved; the transport will wake us.
    Blocked,
    Lost,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Inner<T> {
    fn conn_index(&self, generation: Generation) -> Option<usize> {
        self.conns.iter().position(|conn| conn.generation == generation)
    }

    /// Writes what the core has for `generation` until done or blocked.
    fn transmit(&mut self, now: Instant, generation: Generation, cx: &mut Context<'_>) -> Io {
        let Some(index) = self.conn_index(generation) else { return Io::Blocked };
        let writer = Arc::clone(&self.conns[index].writer);
        let Some(mut side) = try_half(&writer) else { return Io::Blocked };
        self.transmit_on(now, generation, &mut side, cx)
    }

    /// [`Inner::transmit`] with the connection's write half already locked.
    fn transmit_on(&mut self, now: Instant, generation: Generation, conn: &mut WriteSide, cx: &mut Context<'_>) -> Io {
        let mut progress = false;
        while let Some(transmit) = self.core.poll_transmit(generation) {
            if transmit.is_empty() {
                break;
            }
            let slices = transmit.io_slices();
            let outcome = Pin::new(&mut conn.io).poll_write_vectored(cx, &slices);
            match self.wrote(now, generation, conn, outcome) {
                Wrote::Bytes => progress = true,
                Wrote::Blocked => break,
                Wrote::Failed => return Io::Progress,
            }
        }
        self.finish_transmit(now, generation, conn, cx, progress)
    }

    /// Accounts for one write to `generation`.
    fn wrote(
        &mut self,
        now: Instant,
        generation: Generation,
        conn: &mut WriteSide,
        outcome: Poll<io::Result<usize>>,
    ) -> Wrote {
        let count = match &outcome {
            Poll::Ready(Ok(count)) => *count,
            _ => 0,
        };
        self.core.transmitted(now, generation, count);
        match outcome {
            Poll::Ready(Ok(0)) => {
                self.write_failed(now, generation);
                Wrote::Failed
            }
            Poll::Ready(Ok(_)) => {
                conn.flush_pending = true;
                Wrote::Bytes
            }
            Poll::Ready(Err(err)) => {
                tracing::debug!(%generation, %err, "write failed");
                self.write_failed(now, generation);
                Wrote::Failed
            }
            Poll::Pending => Wrote::Blocked,
        }
    }

    /// Flushes after writes to `generation`.
    fn finish_transmit(
        &mut self,
        now: Instant,
        generation: Generation,
        conn: &mut WriteSide,
        cx: &mut Context<'_>,
        progress: bool,
    ) -> Io {
        if conn.flush_pending {
            match Pin::new(&mut conn.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => conn.flush_pending = false,
                Poll::Ready(Err(_)) => return self.write_failed(now, generation),
                Poll::Pending => {}
            }
        }
        if progress { Io::Progress } else { Io::Blocked }
    }

    /// Writing to `generation` failed: the core keeps reading it for a
    /// while (see [`Core::write_failed`]); the driver must arm the timer.
    fn write_failed(&mut self, now: Instant, generation: Generation) -> Io {
        self.core.write_failed(now, generation);
        self.rearm_driver = true;
        Io::Progress
    }

    /// Reads from `generation` into the core until blocked or its buffer is
    /// full, or (with `for_app`) until a DATA payload can go straight into
    /// the application's buffer.
    fn receive(&mut self, now: Instant, generation: Generation, cx: &mut Context<'_>, for_app: bool) -> Io {
        let Some(index) = self.conn_index(generation) else { return Io::Blocked };
        let recv_limit = self.options.recv_buffer_bytes;
        let reader = Arc::clone(&self.conns[index].reader);
        let Some(mut io) = try_half(&reader) else { return Io::Blocked };
        let core = &mut self.core;
        let mut progress = false;
        let mut stash = [MaybeUninit::<u8>::uninit(); STASH_BYTES];
        // Bounded so that one busy connection cannot starve the others.
        for round in 0.. {
            if round == 64 {
                return Io::More;
            }
            // Between DATA payloads, one read takes the next frames whole
            // (acknowledgements, a DATA header and the first bytes of its
            // payload) instead of one read per header and body.
            let stashing =
                core.between_payloads(generation) && core.recv_buffered() < recv_limit.saturating_sub(STASH_BYTES);
            let outcome = if stashing {
                let mut buf = ReadBuf::uninit(&mut stash);
                let outcome = Pin::new(&mut *io).poll_read(cx, &mut buf);
                if let Poll::Ready(Ok(())) = outcome
                    && !buf.filled().is_empty()
                {
                    core.handle_read(now, generation, buf.filled());
                }
                outcome.map_ok(|()| buf.filled().len())
            } else {
                let Some(target) = core.recv_target(generation) else { break };
                let mut buf = ReadBuf::new(target);
                let outcome = Pin::new(&mut *io).poll_read(cx, &mut buf);
                let count = buf.filled().len();
                if let Poll::Ready(Ok(())) = outcome {
                    core.recv_done(now, generation, count);
                }
                outcome.map_ok(|()| count)
            };
            match outcome {
                Poll::Ready(Ok(count)) => {
                    if count == 0 {
                        return Io::Lost;
                    }
                    progress = true;
                    if core.generations().all(|g| g != generation) {
                        break;
                    }
                    if for_app && (core.direct_read_len(generation) > 0 || core.recv_buffered() > 0) {
                        break;
                    }
                }
                Poll::Ready(Err(err)) => {
                    tracing::debug!(%generation, %err, "read failed");
                    return Io::Lost;
                }
                Poll::Pending => break,
            }
        }
        if progress { Io::Progress } else { Io::Blocked }
    }

    /// Handles the core's events: drops finished transports, keeps the
    /// reconnect bookkeeping, wakes whoever waits, publishes the status.
    fn process_events(&mut self, now: Instant, shared_hub: &Hub, me: Party) {
        let (mut reader, mut writer, mut driver) = (false, false, std::mem::take(&mut self.rearm_driver));
        while let Some(event) = self.core.poll_event() {
            match event {
                Event::Connected { generation, .. } => {
                    // The active side learns its session id here.
                    if !std::mem::replace(&mut self.span_has_session, true) {
                        self.span.record("session", tracing::field::display(self.core.session_id()));
                    }
                    self.current = Some(generation);
                    if self.redial.attempt == Some(generation) {
                        self.redial.attempt = None;
                    }
                    self.redial.failures = 0;
                    self.redial.not_before = None;
                    self.redial.disconnected_since = None;
                    self.complete_force(Ok(generation));
                    (reader, writer, driver) = (true, true, true);
                }
                Event::ConnectionClosed { generation } => {
                    self.conns.retain(|conn| conn.generation != generation);
                    if self.current == Some(generation) {
                        self.current = None;
                        self.redial.disconnected_since.get_or_insert(now);
                    } else if self.redial.attempt == Some(generation) {
                        self.redial.attempt = None;
                        self.attempt_failed(now);
                    }
                    (reader, writer, driver) = (true, true, true);
                }
                Event::Readable => reader = true,
                Event::Writable => {
                    writer = true;
                    shared_hub.acked.notify_waiters();
                }
                Event::Failed(err) => {
                    shared_hub.acked.notify_waiters();
                    self.complete_force(Err(err));
                    (reader, writer, driver) = (true, true, true);
                }
            }
        }
        if self.core.state() == ConnectionState::Closed {
            self.complete_force(Err(self.core.failure().cloned().unwrap_or(Error::Closed)));
            if self.conns.is_empty() {
                shared_hub.drained.notify_waiters();
            }
        }
        self.publish();
        // The caller is running and looks at the state again before it
        // returns: waking it too would only poll it once more.
        let (reader, writer, driver) =
            (reader && me != Party::Reader, writer && me != Party::Writer, driver && me != Party::Driver);
        if reader || writer || driver {
            shared_hub.wake(reader, writer, driver);
        }
    }

    fn attempt_failed(&mut self, now: Instant) {
        self.failed_attempts += 1;
        self.redial.failures = self.redial.failures.saturating_add(1);
        let delay = self.options.backoff.delay(self.redial.failures, self.redial.rng.f64());
        self.redial.not_before = Some(now + delay);
        self.redial.disconnected_since.get_or_insert(now);
        self.complete_force(Err(handshake_failed()));
    }

    fn complete_force(&mut self, result: Result<Generation, Error>) {
        if let Some(sender) = self.force.take() {
            sender.send_replace(Some(result));
        }
    }

    fn status(&self) -> Status {
        let state = match self.core.state() {
            ConnectionState::Closed => PipeState::Closed,
            ConnectionState::Connected => PipeState::Connected,
            ConnectionState::Handshaking => PipeState::Reconnecting,
            _ if self.redial.dialing => PipeState::Reconnecting,
            _ => PipeState::Disconnected,
        };
        let newest = Generation(self.core.next_generation().0.saturating_sub(1));
        Status { state, generation: self.core.current_generation().unwrap_or(newest) }
    }

    /// Notes the status for the watch channel; it is sent when the lock
    /// is released.
    fn publish(&mut self) {
        let new = self.status();
        // Most calls change nothing: skip the channel's lock then.
        if self.published == Some(new) {
            return;
        }
        self.published = Some(new);
        self.status_changes += 1;
        self.unpublished = Some((self.status_changes, new));
    }
}

fn handshake_failed() -> Error {
    Error::Io(Arc::new(io::Error::new(io::ErrorKind::ConnectionAborted, "the handshake did not complete")))
}

impl<T: AsyncRead + AsyncWrite + Unpin> Shared<T> {
    fn read_cx(&self) -> Context<'_> {
        Context::from_waker(&self.read_waker)
    }

    fn write_cx(&self) -> Context<'_> {
        Context::from_waker(&self.write_waker)
    }

    /// After input on `generation`: events, then whatever the core wants to
    /// send on the current connection (ACKs, pongs).
    fn after_input(&self, inner: &mut Inner<T>, now: Instant) {
        inner.process_events(now, &self.hub, Party::Reader);
        if let Some(generation) = inner.core.current_generation() {
            if let Io::Lost = inner.transmit(now, generation, &mut self.write_cx()) {
                inner.core.connection_lost(now, generation);
            }
            inner.process_events(now, &self.hub, Party::Reader);
        }
    }

    /// Writes what the core has for `generation` until done or blocked, as
    /// [`Inner::transmit`] does, except that the bytes of `window` (the
    /// caller's buffer, which the send buffer now holds from sequence
    /// number `window.0`) are written from the caller's buffer with the
    /// state unlocked: the connection's write half is held instead, so
    /// that no one else writes to it meanwhile, and the core is told the
    /// write is out (see [`Core::lend_transmit`]). Others who find the
    /// half taken leave their frames in the core; they are written here
    /// before the half is let go, while the state is held.
    fn write_out<'a>(
        &'a self,
        mut inner: StateGuard<'a, T>,
        now: Instant,
        generation: Generation,
        window: Option<(u64, &[u8])>,
    ) -> (StateGuard<'a, T>, Io) {
        let Some(index) = inner.conn_index(generation) else { return (inner, Io::Blocked) };
        let writer = Arc::clone(&inner.conns[index].writer);
        let Some(mut conn) = try_half(&writer) else { return (inner, Io::Blocked) };
        let mut cx = self.write_cx();
        let mut progress = false;
        while let Some(transmit) = inner.core.poll_transmit(generation) {
            if transmit.is_empty() {
                break;
            }
            let parts = transmit.parts();
            let payload = parts[1].len() + parts[2].len();
            let lendable = match (window, transmit.payload_seq()) {
                (Some((start, bytes)), Some(seq)) if seq >= start && parts[0].len() <= proto::HEADER_LEN => {
                    let offset = usize::try_from(seq - start).unwrap_or(usize::MAX);
                    bytes.get(offset..offset.saturating_add(payload)).map(|payload| (parts[0], payload))
                }
                _ => None,
            };
            let outcome = if let Some((header, payload)) = lendable {
                let mut head = [0u8; proto::HEADER_LEN];
                head[..header.len()].copy_from_slice(header);
                let head = &head[..header.len()];
                inner.core.lend_transmit(generation);
                drop(inner);
                let outcome = Pin::new(&mut conn.io)
                    .poll_write_vectored(&mut cx, &[io::IoSlice::new(head), io::IoSlice::new(payload)]);
                inner = self.lock();
                outcome
            } else {
                let slices = transmit.io_slices();
                Pin::new(&mut conn.io).poll_write_vectored(&mut cx, &slices)
            };
            match inner.wrote(now, generation, &mut conn, outcome) {
                Wrote::Bytes => progress = true,
                Wrote::Blocked => break,
                Wrote::Failed => return (inner, Io::Progress),
            }
        }
        let io = inner.finish_transmit(now, generation, &mut conn, &mut cx, progress);
        drop(conn);
        (inner, io)
    }

    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let _span = self.span.enter();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        // Take part in the runtime's cooperative budget: a task that reads
        // buffered bytes in a loop still lets the driver and others run.
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        self.hub.register_reader(cx.waker());
        let mut inner = self.lock();
        let now = now();
        let mut rounds = 0;
        let result = loop {
            let was_full = inner.core.recv_buffered() >= inner.options.recv_buffer_bytes;
            match inner.core.read(buf.initialize_unfilled()) {
                ReadOutcome::Data(count) => {
                    buf.advance(count);
                    if was_full {
                        // The driver paused reading for lack of room.
                        self.hub.wake(false, false, true);
                    }
                    // Buffered bytes were only the start of a payload: the
                    // rest may go straight into the caller's buffer now.
                    if buf.remaining() > 0
                        && let Some(generation) = inner.core.current_generation()
                    {
                        inner = self.read_io(inner, now, generation, buf, true).0;
                    }
                    break Poll::Ready(Ok(()));
                }
                ReadOutcome::EndOfStream => break Poll::Ready(Ok(())),
                ReadOutcome::Failed(err) => break Poll::Ready(Err(err.into())),
                ReadOutcome::Pending => {}
            }
            let Some(generation) = inner.core.current_generation() else { break Poll::Pending };
            if inner.conn_index(generation).is_none() {
                break Poll::Pending;
            }
            rounds += 1;
            if rounds > 64 {
                // Bounded so that a stream of control frames cannot keep
                // this task (and its thread) to itself.
                cx.waker().wake_by_ref();
                break Poll::Pending;
            }
            let outcome;
            (inner, outcome) = self.read_io(inner, now, generation, buf, false);
            match outcome {
                AppRead::Data => break Poll::Ready(Ok(())),
                AppRead::Again => {}
                AppRead::Blocked => break Poll::Pending,
            }
        };
        drop(inner);
        if result.is_ready() {
            coop.made_progress();
            self.hub.clear_reader();
            self.hub.reading();
        }
        result
    }

    /// One read from connection `generation` for the application: DATA
    /// payload straight into `buf` if the core allows it now, otherwise the
    /// next frames into the core (with `direct_only`, nothing then).
    ///
    /// The state is unlocked during the system call: the connection's read
    /// half is held instead, so that no one else reads from it meanwhile,
    /// and the core is told what was read before anyone else may read. A
    /// connection the pipe gave up on meanwhile keeps what was read from it
    /// (the next connection replays it).
    fn read_io<'a>(
        &'a self,
        mut inner: StateGuard<'a, T>,
        now: Instant,
        generation: Generation,
        buf: &mut ReadBuf<'_>,
        direct_only: bool,
    ) -> (StateGuard<'a, T>, AppRead) {
        let Some(index) = inner.conn_index(generation) else { return (inner, AppRead::Blocked) };
        let reader = Arc::clone(&inner.conns[index].reader);
        let mut io = match try_half(&reader) {
            Some(io) => io,
            None => {
                // The half is held only by one of the pipe's tasks in a
                // system call; the order is always the half, then the state.
                drop(inner);
                let io = lock_half(&reader);
                inner = self.lock();
                if inner.core.current_generation() != Some(generation) || inner.core.recv_buffered() > 0 {
                    return (inner, AppRead::Again);
                }
                io
            }
        };
        let direct = inner.core.direct_read_len(generation);
        let stash = direct == 0
            && !direct_only
            && inner.core.between_payloads(generation)
            && inner.core.recv_buffered() < inner.options.recv_buffer_bytes.saturating_sub(STASH_BYTES);
        if direct == 0 && !stash {
            drop(io);
            if direct_only {
                return (inner, AppRead::Blocked);
            }
            // The rest of a payload goes into the core's buffer (it holds
            // bytes the application has not taken yet): under the lock.
            let outcome = inner.receive(now, generation, &mut self.read_cx(), true);
            let result = match outcome {
                Io::Progress | Io::More => AppRead::Again,
                Io::Blocked => {
                    if inner.core.recv_target(generation).is_none() && inner.core.recv_buffered() == 0 {
                        // Nothing to read into: only a closed connection
                        // gets here; the driver handles it.
                        self.hub.wake(false, false, true);
                    }
                    AppRead::Blocked
                }
                Io::Lost => {
                    inner.core.connection_lost(now, generation);
                    AppRead::Again
                }
            };
            if !matches!(result, AppRead::Blocked) {
                self.after_input(&mut inner, now);
            }
            return (inner, result);
        }
        drop(inner);
        let mut stash_buf = [MaybeUninit::<u8>::uninit(); STASH_BYTES];
        let mut read_buf = if stash {
            ReadBuf::uninit(&mut stash_buf)
        } else {
            let unfilled = buf.initialize_unfilled();
            let limit = direct.min(unfilled.len());
            ReadBuf::new(&mut unfilled[..limit])
        };
        let outcome = Pin::new(&mut **io).poll_read(&mut self.read_cx(), &mut read_buf);
        let count = read_buf.filled().len();
        let mut inner = self.lock();
        let result = match outcome {
            Poll::Ready(Ok(())) if count > 0 => {
                if stash {
                    inner.core.handle_read(now, generation, read_buf.filled());
                    AppRead::Again
                } else if inner.core.direct_read_len(generation) >= count {
                    inner.core.direct_read_done(now, generation, count);
                    buf.advance(count);
                    AppRead::Data
                } else {
                    AppRead::Again
                }
            }
            Poll::Ready(_) => {
                inner.core.connection_lost(now, generation);
                AppRead::Again
            }
            Poll::Pending => AppRead::Blocked,
        };
        // The core knows what was read: others may read now.
        drop(io);
        if !matches!(result, AppRead::Blocked) {
            self.after_input(&mut inner, now);
        }
        (inner, result)
    }

    fn poll_write(&self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let _span = self.span.enter();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // A writer filling the send buffer while disconnected never meets
        // a blocking transport: the budget makes it yield now and then.
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        self.hub.register_writer(cx.waker(), false, true);
        let mut inner = self.lock();
        if inner.core.current_generation().is_none()
            && inner.core.state() != ConnectionState::Closed
            && self.hub.driver_woken()
        {
            // Without a connection, a writer could fill the whole send
            // buffer before the driver (woken to reconnect, and as likely
            // as not on this thread) gets to run: let it run first.
            drop(inner);
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let now = now();
        let mut result = Poll::Pending;
        for _ in 0..2 {
            let start = inner.core.written_seq();
            let mut window = None;
            match inner.core.write(data) {
                Err(err) => {
                    result = Poll::Ready(Err(err.into()));
                    break;
                }
                Ok(0) => {}
                Ok(count) => {
                    result = Poll::Ready(Ok(count));
                    window = Some((start, &data[..count]));
                }
            }
            // Hand the bytes to the connection now (or, when the buffer
            // was full, make room by sending what waits), and take in
            // acknowledgements that arrived meanwhile.
            if let Some(generation) = inner.core.current_generation() {
                let transmitted;
                (inner, transmitted) = self.write_out(inner, now, generation, window);
                let mut lost = matches!(transmitted, Io::Lost);
                // Readiness reaches the runtime only now and then while it
                // is busy; a writer with more than an acknowledgement
                // interval outstanding looks for them itself (cheap: a
                // transport not known to be readable is not even asked).
                // Acknowledgements taken in late let the send buffer grow,
                // and with it the memory each copy into it walks through.
                let ack_overdue = inner.core.unacked_bytes() as u64 > inner.options.ack_interval_bytes;
                let read_ready = !self.hub.reader_busy() && self.hub.read_ready.swap(false, Ordering::Acquire);
                if !lost && (read_ready || ack_overdue) && !self.hub.reader_waiting() {
                    self.hub.lock().unclaimed_read = None;
                    match inner.receive(now, generation, &mut self.read_cx(), false) {
                        Io::Lost => lost = true,
                        Io::More => {
                            self.hub.read_ready.store(true, Ordering::Release);
                            self.hub.wake(false, false, true);
                        }
                        Io::Progress | Io::Blocked => {}
                    }
                }
                if lost {
                    inner.core.connection_lost(now, generation);
                }
                inner.process_events(now, &self.hub, Party::Writer);
            }
            if result.is_ready() {
                break;
            }
        }
        let needs_acks = result.is_pending() && inner.core.unacked_bytes() >= inner.options.send_buffer_bytes;
        drop(inner);
        if result.is_ready() {
            coop.made_progress();
            self.hub.clear_writer();
            self.hub.writing();
        } else if needs_acks {
            self.hub.register_writer(cx.waker(), true, true);
        }
        result
    }

    fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _span = self.span.enter();
        self.hub.register_writer(cx.waker(), false, false);
        let mut inner = self.lock();
        let now = now();
        let result = if let Some(err) = inner.core.failure() {
            Poll::Ready(Err(err.clone().into()))
        } else if inner.core.state() == ConnectionState::Closed {
            Poll::Ready(Err(Error::Closed.into()))
        } else {
            if let Some(generation) = inner.core.current_generation() {
                if let Io::Lost = inner.transmit(now, generation, &mut self.write_cx()) {
                    inner.core.connection_lost(now, generation);
                }
                inner.process_events(now, &self.hub, Party::Writer);
            }
            // Without a connection the bytes wait in the send buffer for
            // the next one (they are replayed then): unless configured to
            // wait for it, there is nothing to wait for.
            let flushed = match inner.core.current_generation() {
                None => !inner.options.flush_waits_for_connection,
                Some(generation) => {
                    inner.core.all_transmitted()
                        && inner
                            .conn_index(generation)
                            .is_some_and(|i| try_half(&inner.conns[i].writer).is_some_and(|side| !side.flush_pending))
                }
            };
            if flushed { Poll::Ready(Ok(())) } else { Poll::Pending }
        };
        drop(inner);
        if result.is_ready() {
            self.hub.clear_writer();
        }
        result
    }

    fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _span = self.span.enter();
        self.hub.register_writer(cx.waker(), true, false);
        let mut inner = self.lock();
        let now = now();
        let result = match inner.core.shutdown_write() {
            // Completed before the pipe ended (e.g. the peer then closed).
            _ if inner.core.is_shutdown_complete() => Poll::Ready(Ok(())),
            Err(err) => Poll::Ready(Err(err.into())),
            Ok(()) => {
                if let Some(generation) = inner.core.current_generation() {
                    if let Io::Lost = inner.transmit(now, generation, &mut self.write_cx()) {
                        inner.core.connection_lost(now, generation);
                    }
                    inner.process_events(now, &self.hub, Party::Writer);
                }
                if inner.core.is_shutdown_complete() { Poll::Ready(Ok(())) } else { Poll::Pending }
            }
        };
        drop(inner);
        if result.is_ready() {
            self.hub.clear_writer();
        }
        result
    }

    fn close(&self) {
        let _span = self.span.enter();
        let mut inner = self.lock();
        let now = now();
        inner.core.close(now);
        // One non-blocking attempt to tell the peer; the driver finishes it.
        let generations: Vec<Generation> = inner.core.generations().collect();
        for generation in generations {
            if let Io::Lost = inner.transmit(now, generation, &mut self.write_cx()) {
                inner.core.connection_lost(now, generation);
            }
        }
        inner.process_events(now, &self.hub, Party::Other);
        drop(inner);
        self.hub.wake(true, true, true);
    }

    /// Closes, then waits until every connection has taken its close
    /// report (or was lost), at most `timeout`; whether the peer was told.
    async fn close_gracefully(&self, timeout: Duration) -> bool {
        let (connected, abandoned_before) = {
            let inner = self.lock();
            (inner.core.current_generation().is_some(), inner.core.abandoned_reports())
        };
        self.close();
        let reported = async {
            loop {
                let drained = self.hub.drained.notified();
                tokio::pin!(drained);
                drained.as_mut().enable();
                if self.lock().conns.is_empty() {
                    return;
                }
                drained.await;
            }
        };
        tokio::time::timeout(timeout, reported).await.is_ok()
            && connected
            && self.lock().core.abandoned_reports() == abandoned_before
    }
}

// ----- the driver -----------------------------------------------------------------------

type DialFuture<T> = Pin<Box<dyn Future<Output = io::Result<T>> + Send>>;

/// Starts a dial; `None` on the passive side.
type Dialer<T> = Option<Box<dyn Fn() -> DialFuture<T> + Send + Sync>>;

struct Driver<T> {
    shared: Arc<Shared<T>>,
    dialer: Dialer<T>,
    dial: Option<DialFuture<T>>,
    /// A finished dial, kept until the state can be locked.
    dialed: Option<io::Result<T>>,
    timer: Pin<Box<tokio::time::Sleep>>,
    claim_deadline: Option<Instant>,
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Future for Driver<T> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let shared = Arc::clone(&this.shared);
        shared.hub.register_driver(cx.waker());
        let own_waker = cx.waker().clone();
        for _ in 0..64 {
            let now = now();
            let mut inner = shared.lock();
            if let Some(result) = this.dialed.take() {
                inner.redial.dialing = false;
                match result {
                    Ok(io) if inner.core.state() != ConnectionState::Closed => {
                        match inner.core.connect(now, Nonce::random()) {
                            Ok(generation) => {
                                inner.conns.push(ConnIo::new(generation, io));
                                inner.redial.attempt = Some(generation);
                            }
                            Err(_) => drop(io),
                        }
                    }
                    Ok(io) => drop(io),
                    Err(err) => {
                        tracing::debug!(%err, "dial failed");
                        let err = Arc::new(err);
                        inner.redial.last_error = Some(Arc::clone(&err));
                        inner.complete_force(Err(Error::Io(err)));
                        inner.attempt_failed(now);
                    }
                }
                inner.process_events(now, &shared.hub, Party::Driver);
            }
            if inner.core.state() == ConnectionState::Closed {
                this.dial = None;
                inner.redial.dialing = false;
                if inner.conns.is_empty() {
                    inner.publish();
                    return Poll::Ready(());
                }
            }
            if inner.core.poll_timeout().is_some_and(|at| at <= now) {
                inner.core.handle_timeout(now);
            }
            let claim_read = this.check_claims(now);
            shared.hub.read_ready.store(false, Ordering::Release);
            if std::mem::take(&mut inner.force_requested) {
                if let Some(generation) = inner.core.current_generation() {
                    inner.core.connection_lost(now, generation);
                }
                inner.redial.not_before = None;
                inner.redial.failures = 0;
            }
            // Move bytes on every connection the application does not serve.
            let mut more = false;
            for _ in 0..4 {
                let mut progress = false;
                more = false;
                let generations: Vec<Generation> = inner.conns.iter().map(|conn| conn.generation).collect();
                for generation in generations {
                    // The current connection's readiness goes through the
                    // hub (the application may wait on it); any other
                    // connection is the driver's alone.
                    let current = inner.core.current_generation() == Some(generation);
                    let (write_waker, read_waker) =
                        if current { (&shared.write_waker, &shared.read_waker) } else { (&own_waker, &own_waker) };
                    let lost = match inner.transmit(now, generation, &mut Context::from_waker(write_waker)) {
                        Io::Lost => true,
                        Io::Progress | Io::More => {
                            progress = true;
                            false
                        }
                        Io::Blocked => false,
                    };
                    let lost = lost
                        || (!current || claim_read || !shared.hub.reader_waiting())
                            && match inner.receive(now, generation, &mut Context::from_waker(read_waker), false) {
                                Io::Lost => true,
                                Io::Progress => {
                                    progress = true;
                                    false
                                }
                                Io::More => {
                                    progress = true;
                                    more = true;
                                    false
                                }
                                Io::Blocked => false,
                            };
                    if lost {
                        inner.core.connection_lost(now, generation);
                        progress = true;
                    }
                }
                inner.process_events(now, &shared.hub, Party::Driver);
                if !progress {
                    break;
                }
            }
            // Dial when the dialling side has nothing.
            let mut dial_at = None;
            if this.dialer.is_some() && this.dial.is_none() && inner.core.state() == ConnectionState::Disconnected {
                let since = *inner.redial.disconnected_since.get_or_insert(now);
                let give_up = inner.options.backoff.give_up_after.is_some_and(|limit| now >= since + limit);
                if give_up && inner.redial.failures > 0 {
                    let error = Error::GaveUp {
                        attempts: u64::from(inner.redial.failures),
                        last_error: inner.redial.last_error.clone(),
                    };
                    inner.core.abort(now, error);
                    inner.process_events(now, &shared.hub, Party::Driver);
                    continue;
                }
                match inner.redial.not_before {
                    Some(at) if at > now => dial_at = Some(at),
                    _ => {
                        if let Some(dialer) = &this.dialer {
                            this.dial = Some(dialer());
                            inner.redial.dialing = true;
                            inner.publish();
                        }
                    }
                }
            }
            let next_timeout = inner.core.poll_timeout();
            drop(inner);
            if more {
                // Bytes wait that no readiness will announce: come back
                // after other tasks had their turn.
                cx.waker().wake_by_ref();
            }

            if let Some(dial) = this.dial.as_mut()
                && let Poll::Ready(result) = dial.as_mut().poll(cx)
            {
                this.dial = None;
                this.dialed = Some(result);
                continue;
            }

            let next = [next_timeout, dial_at, this.claim_deadline].into_iter().flatten().min();
            if let Some(at) = next {
                if at <= self::now() {
                    continue;
                }
                this.timer.as_mut().reset(at.into());
                if this.timer.as_mut().poll(cx).is_ready() {
                    continue;
                }
            }
            return Poll::Pending;
        }
        // Plenty done in one go: let other tasks run, then carry on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<T> Drop for Driver<T> {
    fn drop(&mut self) {
        self.shared.hub.lock().driver_woken = false;
    }
}

impl<T> Driver<T> {
    /// Tracks readiness wakes the application has not claimed; returns
    /// whether the driver should read the current connection itself.
    ///
    /// A wake is claimed when the task it went to polls again; one left
    /// unclaimed for [`CLAIM_DELAY`] is taken over. While wakes keep being
    /// left to the application, the driver stays armed and looks again
    /// every [`CLAIM_DELAY`] on its timer, so a busy stream does not wake
    /// it for every readiness event.
    fn check_claims(&mut self, now: Instant) -> bool {
        let hub = &self.shared.hub;
        let mut slots = hub.lock();
        let nanos = hub.nanos();
        let delay = CLAIM_DELAY.as_nanos() as u64;
        let overdue = |since: Option<u64>| since.is_some_and(|at| nanos.saturating_sub(at) >= delay);
        let mut read = false;
        if overdue(slots.unclaimed_read) || overdue(slots.unclaimed_write) {
            read = slots.unclaimed_read.is_some() || hub.read_ready.load(Ordering::Acquire);
            slots.unclaimed_read = None;
            slots.unclaimed_write = None;
        }
        let oldest = [slots.unclaimed_read, slots.unclaimed_write].into_iter().flatten().min();
        self.claim_deadline = if let Some(at) = oldest {
            Some(now + Duration::from_nanos((at + delay).saturating_sub(nanos)))
        } else if slots.claim_activity {
            Some(now + CLAIM_DELAY)
        } else {
            // Keep an armed watch until it expires, then stop watching: the
            // next wake left to the application wakes the driver again.
            self.claim_deadline.filter(|&at| at > now)
        };
        slots.claim_activity = false;
        slots.claim_armed = self.claim_deadline.is_some();
        read
    }
}

// ----- the public pipe ---------------------------------------------------------------

/// Closes the pipe when the last application handle goes away.
struct Handle<T> {
    shared: Arc<Shared<T>>,
    /// `Shared::close` (which needs the transport bounds `Drop` cannot
    /// name): it also makes one attempt to tell the peer at once, which
    /// is all a pipe dropped just before its runtime ends gets.
    close: fn(&Shared<T>),
}

impl<T> Drop for Handle<T> {
    fn drop(&mut self) {
        (self.close)(&self.shared);
    }
}

/// A reliable byte stream over a transport that may break and be replaced.
///
/// See the [crate documentation](crate) for the model and an example. A
/// `BackedPipe` is either *active* ([`BackedPipe::connect`]: it dials
/// through a [`Reconnector`]) or *passive* ([`BackedPipe::passive`]: it is
/// handed connections with [`BackedPipe::resume`]).
///
/// Reads return the peer's bytes exactly once and in order, across any
/// number of reconnects, and `Ok(0)` only at the peer's end of stream.
/// Writes are taken into the send buffer and return at once while there is
/// room; a write waits only while the buffer is full of unacknowledged
/// bytes, or, when connected, while the connection is slower than the
/// writer. Dropping the pipe (both halves, if split) closes it.
///
/// `poll_flush` completes when every written byte has been handed to the
/// current connection; while there is none it waits for the next one, or,
/// with [`Options::flush_waits_for_connection`] off, completes at once (the
/// bytes wait in the send buffer and are replayed to the next connection,
/// so a server can queue output for a client that is away). It never
/// means the peer has the bytes: [`PipeControl::acknowledged`] does.
///
/// `poll_shutdown` sends end of stream after every written byte and
/// completes with `Ok` when the peer has acknowledged all of it, so
/// nothing is lost if the pipe is dropped afterwards. It completes with an
/// error as soon as the pipe ends otherwise: the peer closed it
/// ([`Error::PeerClosed`]), it was closed here ([`Error::Closed`]), or it
/// failed. While disconnected it waits for the next connection, like a
/// read: bound it with a timeout if the peer may never come back.
///
/// Closing ([`BackedPipe::close`], or dropping the pipe) tells the peer
/// with a final ERROR frame, which makes the peer's reads and a pending
/// shutdown there fail with [`Error::PeerClosed`] (its reads return end of
/// stream instead if this side had ended its stream). The report is sent
/// by the pipe's driver task if the connection cannot take it at once; a
/// process about to exit uses [`BackedPipe::close_gracefully`] so that the
/// report is out before the runtime ends. Closing without `shutdown`
/// abandons what the peer has not acknowledged.
///
/// # Cancel safety
///
/// `read` and `write` (through `AsyncReadExt`/`AsyncWriteExt`) are cancel
/// safe: a dropped read loses no byte, and a dropped write wrote nothing or
/// reported what it wrote. A dropped `shutdown` still ends the stream; call
/// it again to wait for the acknowledgement.
///
/// # Panics
///
/// The constructors spawn the pipe's driver task, so they must be called
/// within a tokio runtime.
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub struct BackedPipe<T> {
    handle: Arc<Handle<T>>,
}

impl<T> std::fmt::Debug for BackedPipe<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.handle.shared.lock();
        f.debug_struct("BackedPipe").field("core", &inner.core).finish_non_exhaustive()
    }
}

impl<T> BackedPipe<T>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// An active pipe: it dials through `reconnector` at once and again
    /// whenever the connection is lost, with the backoff in `options`.
    /// Writes are accepted before the first connection exists.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use backedpipe::{BackedPipe, Options};
    ///
    /// let pipe = BackedPipe::connect(|| tokio::net::TcpStream::connect("127.0.0.1:1"), Options::new());
    /// assert_eq!(pipe.status().state, backedpipe::PipeState::Reconnecting);
    /// pipe.close();
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn connect<R: Reconnector<T>>(reconnector: R, options: Options) -> BackedPipe<T> {
        let reconnector = Arc::new(reconnector);
        let dialer: Box<dyn Fn() -> DialFuture<T> + Send + Sync> = Box::new(move || {
            let reconnector = Arc::clone(&reconnector);
            Box::pin(async move { reconnector.reconnect().await })
        });
        BackedPipe::start(Core::active(options.clone()), options, Some(dialer))
    }

    /// A passive pipe for a new session with a random id: it waits for
    /// connections handed to it with [`BackedPipe::resume`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn passive(options: Options) -> BackedPipe<T> {
        BackedPipe::passive_with_session(options, SessionId::random())
    }

    /// A passive pipe for the session `session_id`.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn passive_with_session(options: Options, session_id: SessionId) -> BackedPipe<T> {
        BackedPipe::start(Core::passive(options.clone(), session_id), options, None)
    }

    fn start(core: Core, options: Options, dialer: Dialer<T>) -> BackedPipe<T> {
        let span = match core.role() {
            Role::Active => tracing::info_span!("pipe", side = %"active", session = tracing::field::Empty),
            Role::Passive => tracing::info_span!("pipe", side = %"passive", session = %core.session_id()),
        };
        let hub = Arc::new(Hub::default());
        let read_waker = Waker::from(Arc::new(Readiness { hub: Arc::clone(&hub), read: true }));
        let write_waker = Waker::from(Arc::new(Readiness { hub: Arc::clone(&hub), read: false }));
        let active = dialer.is_some();
        let inner = Inner {
            core,
            options,
            active,
            conns: Vec::new(),
            _transport: std::marker::PhantomData,
            current: None,
            redial: Redial {
                failures: 0,
                not_before: None,
                disconnected_since: None,
                attempt: None,
                dialing: false,
                last_error: None,
                rng: fastrand::Rng::new(),
            },
            failed_attempts: 0,
            force: None,
            force_requested: false,
            rearm_driver: false,
            published: None,
            status_changes: 0,
            unpublished: None,
            span: span.clone(),
            span_has_session: !active,
        };
        let initial = Status {
            state: if active { PipeState::Reconnecting } else { PipeState::Disconnected },
            generation: Generation(0),
        };
        let (status, _) = watch::channel(initial);
        let shared = Arc::new(Shared {
            inner: Mutex::new(inner),
            hub,
            read_waker,
            write_waker,
            status,
            status_sent: AtomicU64::new(0),
            span: span.clone(),
        });
        let driver = Driver {
            shared: Arc::clone(&shared),
            dialer,
            dial: None,
            dialed: None,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            claim_deadline: None,
        };
        tokio::spawn(driver.instrument(span));
        BackedPipe { handle: Arc::new(Handle { shared, close: Shared::close }) }
    }

    fn shared(&self) -> &Arc<Shared<T>> {
        &self.handle.shared
    }

    /// Passive side: hands the pipe a new connection from the peer. The
    /// pipe runs the handshake on it; the current connection, if any, keeps
    /// carrying the stream until the new one has authenticated, so a bogus
    /// connection never disturbs a live one.
    ///
    /// # Errors
    ///
    /// The failure, or [`Error::Closed`], if the pipe has ended; `conn` is
    /// dropped then.
    pub fn resume(&self, conn: T) -> Result<Generation, Error> {
        self.control().resume(conn)
    }

    /// Passive side: as [`BackedPipe::resume`], for a connection whose HELLO
    /// has already been read (see [`read_hello`]), e.g. by a server that
    /// routes connections to sessions by [`Hello::session_id`].
    ///
    /// # Errors
    ///
    /// As [`BackedPipe::resume`].
    pub fn resume_with_hello(&self, conn: T, hello: Hello) -> Result<Generation, Error> {
        self.control().resume_with_hello(conn, hello)
    }

    /// Splits the pipe into halves that can be used from different tasks.
    /// The pipe closes when both are dropped.
    pub fn into_split(self) -> (OwnedReadHalf<T>, OwnedWriteHalf<T>) {
        let read = OwnedReadHalf { handle: Arc::clone(&self.handle) };
        (read, OwnedWriteHalf { handle: self.handle })
    }

    /// A cloneable handle for status, statistics, forced reconnects and
    /// closing, usable while the pipe itself is busy reading or writing. It
    /// does not keep the pipe open.
    pub fn control(&self) -> PipeControl<T> {
        PipeControl { shared: Arc::clone(self.shared()) }
    }

    /// The session id (all zeros on the active side before the first
    /// handshake).
    pub fn session_id(&self) -> SessionId {
        self.control().session_id()
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.control().status()
    }

    /// A subscription to status changes.
    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.control().watch_status()
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.control().stats()
    }

    /// Why the pipe ended, if it failed.
    pub fn failure(&self) -> Option<Error> {
        self.control().failure()
    }

    /// Waits until the pipe is connected; see [`PipeControl::connected`].
    ///
    /// # Errors
    ///
    /// As [`PipeControl::connected`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes.
    pub async fn connected(&self) -> Result<Generation, Error> {
        self.control().connected().await
    }

    /// Drops the current connection and reconnects; see
    /// [`PipeControl::force_reconnect`].
    ///
    /// # Errors
    ///
    /// As [`PipeControl::force_reconnect`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future does not stop the attempt.
    pub async fn force_reconnect(&self) -> Result<Generation, Error> {
        self.control().force_reconnect().await
    }

    /// Closes the pipe; see [`PipeControl::close`].
    pub fn close(&self) {
        self.shared().close();
    }

    /// Closes the pipe and waits until the peer has been told; see
    /// [`PipeControl::close_gracefully`].
    ///
    /// # Cancel safety
    ///
    /// As [`PipeControl::close_gracefully`].
    pub async fn close_gracefully(&self, timeout: Duration) -> bool {
        self.shared().close_gracefully(timeout).await
    }
}

/// Status, statistics and control of a pipe, from any task; see
/// [`BackedPipe::control`].
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub struct PipeControl<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for PipeControl<T> {
    fn clone(&self) -> Self {
        PipeControl { shared: Arc::clone(&self.shared) }
    }
}

impl<T> std::fmt::Debug for PipeControl<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeControl").field("status", &*self.shared.status.borrow()).finish_non_exhaustive()
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> PipeControl<T> {
    /// The session id (all zeros on the active side before the first
    /// handshake).
    pub fn session_id(&self) -> SessionId {
        self.shared.lock().core.session_id()
    }

    /// Passive side: how the first handshake stands, read from the core
    /// (the published status follows it only once the state's lock is
    /// released). The server enters a new session in its table by it.
    pub(crate) fn first_handshake(&self) -> FirstHandshake {
        self.shared.lock().core.first_handshake()
    }

    /// Passive side: hands the pipe a new connection; see
    /// [`BackedPipe::resume`].
    ///
    /// # Errors
    ///
    /// As [`BackedPipe::resume`].
    pub fn resume(&self, conn: T) -> Result<Generation, Error> {
        self.resume_inner(conn, None)
    }

    /// Passive side: hands the pipe a new connection whose HELLO was read;
    /// see [`BackedPipe::resume_with_hello`].
    ///
    /// # Errors
    ///
    /// As [`BackedPipe::resume`].
    pub fn resume_with_hello(&self, conn: T, hello: Hello) -> Result<Generation, Error> {
        self.resume_inner(conn, Some(hello))
    }

    fn resume_inner(&self, conn: T, hello: Option<Hello>) -> Result<Generation, Error> {
        let shared = &self.shared;
        let _span = shared.span.enter();
        let mut inner = shared.lock();
        let now = now();
        let generation = match hello {
            Some(hello) => inner.core.accept_with_hello(now, Nonce::random(), hello)?,
            None => inner.core.accept(now, Nonce::random())?,
        };
        inner.conns.push(ConnIo::new(generation, conn));
        inner.process_events(now, &shared.hub, Party::Other);
        drop(inner);
        shared.hub.wake(false, false, true);
        Ok(generation)
    }

    /// The current status.
    pub fn status(&self) -> Status {
        *self.shared.status.borrow()
    }

    /// A subscription to status changes.
    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.shared.status.subscribe()
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        let inner = self.shared.lock();
        let core = inner.core.stats();
        Stats {
            bytes_sent: core.bytes_sent,
            bytes_received: core.bytes_received,
            bytes_replayed: core.bytes_replayed,
            reconnects: core.handshakes.saturating_sub(1),
            failed_attempts: if inner.active { inner.failed_attempts } else { core.failed_handshakes },
            generation: inner.status().generation,
            buffer_bytes: inner.core.allocated_bytes(),
        }
    }

    /// Why the pipe ended, if it failed (not after a plain
    /// [`close`](PipeControl::close)).
    pub fn failure(&self) -> Option<Error> {
        self.shared.lock().core.failure().cloned()
    }

    /// Waits until the pipe is connected and returns the generation.
    ///
    /// # Errors
    ///
    /// The failure, or [`Error::Closed`], if the pipe ends first.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes.
    pub async fn connected(&self) -> Result<Generation, Error> {
        let mut status = self.watch_status();
        loop {
            let current = *status.borrow_and_update();
            match current.state {
                PipeState::Connected => return Ok(current.generation),
                PipeState::Closed => return Err(self.failure().unwrap_or(Error::Closed)),
                _ => {}
            }
            if status.changed().await.is_err() {
                return Err(Error::Closed);
            }
        }
    }

    /// Drops the current connection and reconnects now (the active side
    /// dials without waiting for the backoff; the passive side waits for the
    /// next connection handed to it). Concurrent calls, and an automatic
    /// reconnect already under way, share one attempt and its one result.
    ///
    /// # Errors
    ///
    /// The attempt's error (the dial's, or a failed handshake's); the
    /// pipe keeps retrying in the background. [`Error::Closed`] or the
    /// failure if the pipe has ended.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future does not stop the attempt.
    pub async fn force_reconnect(&self) -> Result<Generation, Error> {
        let mut result = {
            let mut inner = self.shared.lock();
            if inner.core.state() == ConnectionState::Closed {
                return Err(inner.core.failure().cloned().unwrap_or(Error::Closed));
            }
            match &inner.force {
                Some(sender) => sender.subscribe(),
                None => {
                    let (sender, receiver) = watch::channel(None);
                    inner.force = Some(sender);
                    let in_flight = inner.redial.dialing || inner.core.state() == ConnectionState::Handshaking;
                    if !in_flight || !inner.active {
                        inner.force_requested = true;
                    }
                    drop(inner);
                    self.shared.hub.wake(false, false, true);
                    receiver
                }
            }
        };
        loop {
            if let Some(outcome) = result.borrow_and_update().clone() {
                return outcome;
            }
            if result.changed().await.is_err() {
                return Err(self.failure().unwrap_or(Error::Closed));
            }
        }
    }

    /// Closes the pipe: pending and later reads and writes fail with
    /// [`Error::Closed`], an in-flight dial is cancelled, and the peer is
    /// told (best effort). Idempotent; returns at once.
    ///
    /// The peer is told with an ERROR frame after any DATA frame half
    /// written. `close` makes one attempt at once; what the connection does
    /// not take then, the pipe's driver task sends later (for up to 1 s).
    /// If the runtime ends before that (a process about to exit), the peer
    /// sees the connection end without a report, and, as after any broken
    /// connection, waits for a resume that does not come: use
    /// [`PipeControl::close_gracefully`] there.
    pub fn close(&self) {
        self.shared.close();
    }

    /// Waits until the peer has acknowledged every byte written before the
    /// call: they are in the peer's receive buffer (not necessarily read
    /// by its application yet), and nothing is lost if this side closes
    /// now. Unlike `flush`, this is a statement about the peer. While
    /// disconnected it waits for the next connection.
    ///
    /// # Errors
    ///
    /// The failure, or [`Error::Closed`], if the pipe ends first.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes.
    pub async fn acknowledged(&self) -> Result<(), Error> {
        let target = self.shared.lock().core.written_seq();
        loop {
            let acked = self.shared.hub.acked.notified();
            tokio::pin!(acked);
            acked.as_mut().enable();
            {
                let inner = self.shared.lock();
                if inner.core.acked_seq() >= target {
                    return Ok(());
                }
                if inner.core.state() == ConnectionState::Closed {
                    return Err(inner.core.failure().cloned().unwrap_or(Error::Closed));
                }
            }
            acked.await;
        }
    }

    /// Closes the pipe as [`PipeControl::close`] does, then waits (at most
    /// `timeout`) until every connection has taken the report. Returns
    /// whether it did: then the peer's reads fail with
    /// [`Error::PeerClosed`] (or return end of stream if this side ended
    /// its stream first) once it has read what came before. `false` when
    /// there was no connection to tell, or it stayed blocked (the peer
    /// does not read) past `timeout` or the 1 s the pipe gives it: the
    /// peer then sees a broken connection at most. The pipe is closed
    /// either way.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the pipe is closed by the first poll; dropping the
    /// future only stops the waiting.
    pub async fn close_gracefully(&self, timeout: Duration) -> bool {
        self.shared.close_gracefully(timeout).await
    }

    /// Requests end of stream without waiting for it (`shutdown` on the
    /// pipe waits for the acknowledgement): the peer reads end of stream
    /// after every byte written so far, and later writes fail with
    /// [`Error::WriteAfterShutdown`]. Idempotent.
    ///
    /// # Errors
    ///
    /// The failure, or [`Error::Closed`], if the pipe has ended.
    pub fn shutdown_write(&self) -> Result<(), Error> {
        self.shared.lock().core.shutdown_write()?;
        self.shared.hub.wake(false, false, true);
        Ok(())
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for BackedPipe<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.handle.shared.poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for BackedPipe<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.handle.shared.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.handle.shared.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.handle.shared.poll_shutdown(cx)
    }
}

/// The reading half of a [`BackedPipe`] (see [`BackedPipe::into_split`]).
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub struct OwnedReadHalf<T> {
    handle: Arc<Handle<T>>,
}

/// The writing half of a [`BackedPipe`] (see [`BackedPipe::into_split`]).
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub struct OwnedWriteHalf<T> {
    handle: Arc<Handle<T>>,
}

impl<T> std::fmt::Debug for OwnedReadHalf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedReadHalf").finish_non_exhaustive()
    }
}

impl<T> std::fmt::Debug for OwnedWriteHalf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedWriteHalf").finish_non_exhaustive()
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> OwnedReadHalf<T> {
    /// Status and control of the pipe; see [`BackedPipe::control`].
    pub fn control(&self) -> PipeControl<T> {
        PipeControl { shared: Arc::clone(&self.handle.shared) }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> OwnedWriteHalf<T> {
    /// Status and control of the pipe; see [`BackedPipe::control`].
    pub fn control(&self) -> PipeControl<T> {
        PipeControl { shared: Arc::clone(&self.handle.shared) }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for OwnedReadHalf<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.handle.shared.poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for OwnedWriteHalf<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.handle.shared.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.handle.shared.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.handle.shared.poll_shutdown(cx)
    }
}

/// Reads exactly one HELLO frame from a new connection, without reading a
/// byte past it: a server can look at [`Hello::session_id`] and hand the
/// connection to the right pipe with [`BackedPipe::resume_with_hello`].
///
/// # Errors
///
/// [`Error::Io`] when the connection fails or ends, [`Error::Protocol`]
/// when its first bytes are no HELLO (checked before the payload is read,
/// so an oversized length is refused without reading it).
///
/// # Cancel safety
///
/// Not cancel safe: bytes read before cancellation are lost. Wrap it in a
/// timeout and drop the connection when it fires.
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub async fn read_hello<R: AsyncRead + Unpin>(conn: &mut R) -> Result<Hello, Error> {
    let io_error = |err: io::Error| Error::Io(Arc::new(err));
    let mut frame = [0u8; proto::HEADER_LEN + proto::MAX_HANDSHAKE_LEN];
    conn.read_exact(&mut frame[..proto::HEADER_LEN]).await.map_err(io_error)?;
    let total = match Hello::decode(&frame[..proto::HEADER_LEN]) {
        Err(DecodeError::Incomplete { needed }) if needed <= frame.len() => needed,
        Err(err) => return Err(Error::Protocol(err)),
        Ok(_) => return Err(Error::Protocol(DecodeError::BadValue("HELLO length"))),
    };
    conn.read_exact(&mut frame[proto::HEADER_LEN..total]).await.map_err(io_error)?;
    Hello::decode(&frame[..total]).map(|(hello, _)| hello).map_err(Error::Protocol)
}
