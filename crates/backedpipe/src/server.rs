//! The server side: a [`Listener`] that takes connections from any number
//! of sources (TCP, Unix sockets, or any [`Accept`] implementation), starts
//! a new session for each new client and routes a resuming client to the
//! session it names, with admission checks, limits and expiry.
//!
//! # Routing
//!
//! Every accepted connection gets a task that, in this order:
//!
//! 1. checks the peer's uid where the transport knows it (Unix sockets), by
//!    [`PeerUid`];
//! 2. reads the HELLO within the handshake timeout, without reading a byte
//!    past it (an oversized length is refused before any payload is read);
//! 3. for the all-zero session id: starts a new passive pipe, lets it run
//!    the handshake (with the secret, if one is configured) and, once the
//!    client has authenticated, hands the pipe out through
//!    [`Listener::accept`];
//! 4. for an id the server holds (a session, or a new one whose first
//!    handshake is still under way): hands the connection to that pipe,
//!    which keeps its current connection until the new one has proved it
//!    knows the secret;
//! 5. for an id it does not hold, flagged unconfirmed
//!    ([`Hello::is_unconfirmed`]: the client has the id from a WELCOME but
//!    never heard from the server after its PROOF, so the first handshake
//!    may have been cut before the server verified it): starts a new
//!    session under that id, as in 3;
//! 6. for any other id: refuses it with an ERROR frame `SessionUnknown`,
//!    on which the client's pipe fails ([`Error::is_session_gone`]).
//!
//! So a session exists for both sides or for neither: a client treats its
//! session as one the server holds only once the server has spoken after
//! the client's PROOF, which it does only after it verified that PROOF,
//! and by then the session is in the table (from its first HELLO on, as a
//! session starting). One id never has two pipes: a HELLO naming a
//! session that is still starting reaches that session's pipe, where
//! whichever handshake completes first makes the session and a later one
//! of an older attempt is refused. An id whose session existed and ended
//! is not started again (the last [`max_sessions`](ServerOptions::max_sessions)
//! such ids are remembered).
//!
//! Nothing a connection sends before its proof is verified can end a
//! session, replace its connection or change its stream. (It can occupy
//! one of the few handshake slots a session keeps for resumes, and push
//! out an older pending resume: a denial of service that a firewall, not
//! the protocol, prevents.)
//!
//! # Limits
//!
//! See [`ServerOptions`]: sessions at most
//! [`max_sessions`](ServerOptions::max_sessions) (the one disconnected
//! longest is evicted for a new client), handshakes under way at most
//! [`max_handshakes`](ServerOptions::max_handshakes), HELLO within the
//! pipe's [`handshake_timeout`](crate::Options::handshake_timeout) and at
//! most 261 bytes (header included), sessions away for longer than
//! [`session_expiry`](ServerOptions::session_expiry) forgotten. A session's
//! memory follows what its buffers hold: an idle one costs a few KiB.
//!
//! # Logs
//!
//! Every accepted connection is served in a `connection` span whose
//! `session` field names the session it resumes, or the one it starts,
//! once its HELLO is read. Every session has a `session` span with its
//! `id`: its expiry watcher runs in it, and its pipe's own `pipe` span is
//! its child. Both are children of the span current where the listener
//! was made. So the lines of many sessions in one log can be told apart.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use crate::core::FirstHandshake;
use crate::error::Error;
use crate::options::Options;
use crate::pipe::{BackedPipe, PipeControl, PipeState, read_hello};
use crate::proto::{ErrorCode, FLAG_EOS_RECEIVED, Hello, SessionId, error_frame};
use crate::transport::Transport;

/// A connection as the listener holds it, whatever its source.
type Conn = Box<dyn Transport>;

/// Which peers a [`Listener`] admits by their user id, where the transport
/// reports one (Unix sockets, through `SO_PEERCRED`).
///
/// A connection whose transport has no notion of a peer user (TCP, a
/// channel of in-process streams: [`Credentials::NotApplicable`]) is not
/// checked by uid; use a [`Secret`](crate::Secret) there. A Unix socket
/// connection whose credentials cannot be read is refused unless the
/// policy is [`PeerUid::Any`].
///
/// ```
/// use backedpipe::server::{Credentials, PeerUid};
/// let own = rustix::process::geteuid().as_raw();
/// assert!(PeerUid::SameAsServer.admits(Credentials::Uid(own)));
/// assert!(!PeerUid::Only(vec![own + 1]).admits(Credentials::Uid(own)));
/// assert!(!PeerUid::SameAsServer.admits(Credentials::Unknown));
/// assert!(PeerUid::SameAsServer.admits(Credentials::NotApplicable));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PeerUid {
    /// Any user.
    Any,
    /// Only the user the server runs as (its effective uid). The default.
    #[default]
    SameAsServer,
    /// Only these users.
    Only(Vec<u32>),
}

impl PeerUid {
    /// Whether a peer with `credentials` is admitted.
    pub fn admits(&self, credentials: Credentials) -> bool {
        match credentials {
            Credentials::NotApplicable => true,
            Credentials::Unknown => *self == PeerUid::Any,
            Credentials::Uid(uid) => match self {
                PeerUid::Any => true,
                PeerUid::SameAsServer => uid == rustix::process::geteuid().as_raw(),
                PeerUid::Only(uids) => uids.contains(&uid),
            },
        }
    }
}

/// What the transport says about who is at the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credentials {
    /// The transport has no notion of a peer user (TCP, an in-process
    /// stream).
    NotApplicable,
    /// The peer process runs as this user id.
    Uid(u32),
    /// The transport should know, but could not tell.
    Unknown,
}

/// One accepted connection and what its transport says about the peer.
#[derive(Debug)]
#[non_exhaustive]
pub struct Accepted<C> {
    /// The connection.
    pub conn: C,
    /// The peer's credentials.
    pub credentials: Credentials,
}

impl<C> Accepted<C> {
    /// A connection whose transport has no notion of a peer user.
    pub fn new(conn: C) -> Accepted<C> {
        Accepted { conn, credentials: Credentials::NotApplicable }
    }

    /// A connection with the given credentials.
    pub fn with_credentials(conn: C, credentials: Credentials) -> Accepted<C> {
        Accepted { conn, credentials }
    }
}

/// A source of accepted connections for a [`Listener`]: implemented for
/// [`TcpListener`], [`UnixListener`] and an [`mpsc::Receiver`] of
/// connections (for transports accepted elsewhere, e.g. websockets).
///
/// ```
/// use backedpipe::server::{Accept, Listener, ServerOptions};
/// use tokio::net::UnixStream;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // Connections accepted elsewhere, handed over through a channel.
/// let (tx, rx) = tokio::sync::mpsc::channel::<UnixStream>(8);
/// let listener = Listener::new(ServerOptions::new());
/// listener.listen(rx);
/// # drop(tx);
/// # }
/// ```
///
/// # Cancel safety
///
/// `accept` must be cancel safe (a dropped future loses no connection):
/// the listener drops it when it shuts down.
pub trait Accept: Send + 'static {
    /// The connection type.
    type Conn: Transport;

    /// The next connection; `Ok(None)` when the source has ended. An error
    /// is logged and the listener tries again after a short pause (as for
    /// running out of descriptors).
    fn accept(&mut self) -> impl Future<Output = io::Result<Option<Accepted<Self::Conn>>>> + Send;

    /// This source with every connection converted by `map` (e.g. a
    /// socket option set, or each wrapped in a [`Transport`] of one's own).
    ///
    /// ```
    /// use backedpipe::server::{Accept, Listener, ServerOptions};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// let listener = Listener::new(ServerOptions::new());
    /// listener.listen(tcp.map_conn(|conn| {
    ///     let _ = conn.set_ttl(16);
    ///     conn
    /// }));
    /// # Ok(())
    /// # }
    /// ```
    fn map_conn<U, F>(self, map: F) -> MapConn<Self, F>
    where
        Self: Sized,
        F: FnMut(Self::Conn) -> U + Send + 'static,
        U: Transport,
    {
        MapConn { source: self, map }
    }
}

impl Accept for TcpListener {
    type Conn = TcpStream;

    async fn accept(&mut self) -> io::Result<Option<Accepted<TcpStream>>> {
        let (conn, _) = TcpListener::accept(self).await?;
        // Small frames (handshakes, acknowledgements) must not wait.
        let _ = conn.set_nodelay(true);
        Ok(Some(Accepted::new(conn)))
    }
}

impl Accept for UnixListener {
    type Conn = UnixStream;

    async fn accept(&mut self) -> io::Result<Option<Accepted<UnixStream>>> {
        let (conn, _) = UnixListener::accept(self).await?;
        let credentials = match conn.peer_cred() {
            Ok(cred) => Credentials::Uid(cred.uid()),
            Err(_) => Credentials::Unknown,
        };
        Ok(Some(Accepted::with_credentials(conn, credentials)))
    }
}

impl<C: Transport> Accept for mpsc::Receiver<C> {
    type Conn = C;

    async fn accept(&mut self) -> io::Result<Option<Accepted<C>>> {
        Ok(self.recv().await.map(Accepted::new))
    }
}

/// A source whose connections are converted; see [`Accept::map_conn`].
pub struct MapConn<A, F> {
    source: A,
    map: F,
}

impl<A, F> std::fmt::Debug for MapConn<A, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapConn").finish_non_exhaustive()
    }
}

impl<A, F, U> Accept for MapConn<A, F>
where
    A: Accept,
    F: FnMut(A::Conn) -> U + Send + 'static,
    U: Transport,
{
    type Conn = U;

    async fn accept(&mut self) -> io::Result<Option<Accepted<U>>> {
        let accepted = self.source.accept().await?;
        Ok(accepted.map(|Accepted { conn, credentials }| Accepted { conn: (self.map)(conn), credentials }))
    }
}

/// How a [`Listener`] behaves. Built with chained setters from
/// [`ServerOptions::new`], which holds the defaults.
///
/// ```
/// use std::time::Duration;
/// use backedpipe::server::ServerOptions;
/// use backedpipe::{Options, Secret};
///
/// let secret = Secret::new(b"a shared secret of 16+ bytes".to_vec());
/// let options = ServerOptions::new()
///     .pipe(Options::new().secret(Some(secret)))
///     .max_sessions(100)
///     .session_expiry(Duration::from_secs(60));
/// # drop(options);
/// ```
#[derive(Debug, Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub struct ServerOptions {
    pub(crate) pipe: Options,
    pub(crate) peer_uid: PeerUid,
    pub(crate) max_sessions: usize,
    pub(crate) session_expiry: Duration,
    pub(crate) max_handshakes: usize,
    pub(crate) accept_backlog: usize,
}

impl ServerOptions {
    /// The defaults: every session's pipe with [`Options::new`], only the
    /// server's own user admitted on Unix sockets, at most 1024 sessions
    /// forgotten after 10 minutes away, at most 256 handshakes under way
    /// and 64 new sessions waiting for [`Listener::accept`].
    pub fn new() -> Self {
        ServerOptions {
            pipe: Options::new(),
            peer_uid: PeerUid::default(),
            max_sessions: 1024,
            session_expiry: Duration::from_secs(600),
            max_handshakes: 256,
            accept_backlog: 64,
        }
    }

    /// The options of every session's pipe (default [`Options::new`]),
    /// including the secret every handshake must prove and the handshake
    /// timeout, which also bounds the wait for a new connection's HELLO.
    pub fn pipe(mut self, options: Options) -> Self {
        self.pipe = options;
        self
    }

    /// Which peers are admitted by uid where the transport tells (default
    /// [`PeerUid::SameAsServer`]).
    pub fn peer_uid(mut self, peer_uid: PeerUid) -> Self {
        self.peer_uid = peer_uid;
        self
    }

    /// The most sessions held at once (default 1024). When a new client
    /// arrives and the server is full, the session disconnected for the
    /// longest time is evicted; when every session is connected, the new
    /// client is refused with ERROR `ServerFull`.
    pub fn max_sessions(mut self, count: usize) -> Self {
        self.max_sessions = count;
        self
    }

    /// A session whose client has been disconnected for this long is
    /// closed and forgotten (default 10 minutes); its client then gets
    /// "session gone".
    pub fn session_expiry(mut self, expiry: Duration) -> Self {
        self.session_expiry = expiry;
        self
    }

    /// The most connections between accept and routing at once (default
    /// 256): reading their HELLO, or finishing a new session's first
    /// handshake. Connections beyond it are closed at once.
    pub fn max_handshakes(mut self, count: usize) -> Self {
        self.max_handshakes = count;
        self
    }

    /// New sessions that may wait for [`Listener::accept`] (default 64);
    /// handshakes of further new clients wait meanwhile.
    pub fn accept_backlog(mut self, count: usize) -> Self {
        self.accept_backlog = count;
        self
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions::new()
    }
}

/// Counters of a [`Listener`]; see [`Listener::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Sessions held now.
    pub sessions: usize,
    /// Connections taken from the sources.
    pub connections: u64,
    /// New sessions whose first handshake completed.
    pub sessions_created: u64,
    /// Of those, sessions started under an id the client already held
    /// from an earlier first handshake that was cut before the server
    /// verified its PROOF (see the module's "Routing", 5).
    pub sessions_created_unconfirmed: u64,
    /// Connections handed to an existing session.
    pub resumes_routed: u64,
    /// Connections refused for naming a session the server does not hold.
    pub refused_unknown_session: u64,
    /// Connections refused because they did not open with a valid HELLO
    /// (garbage, an oversized length, an early end) or sent none in time.
    pub refused_bad_hello: u64,
    /// Connections refused by the peer uid check.
    pub refused_peer_uid: u64,
    /// New clients refused because every session was connected and the
    /// server was full.
    pub refused_full: u64,
    /// Connections closed at once because too many handshakes were under
    /// way.
    pub refused_busy: u64,
    /// New clients whose first handshake failed (wrong secret, timeout).
    pub failed_new_handshakes: u64,
    /// Sessions closed because they stayed disconnected too long.
    pub sessions_expired: u64,
    /// Sessions evicted to make room for a new client.
    pub sessions_evicted: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    sessions_created: AtomicU64,
    sessions_created_unconfirmed: AtomicU64,
    resumes_routed: AtomicU64,
    refused_unknown_session: AtomicU64,
    refused_bad_hello: AtomicU64,
    refused_peer_uid: AtomicU64,
    refused_full: AtomicU64,
    refused_busy: AtomicU64,
    failed_new_handshakes: AtomicU64,
    sessions_expired: AtomicU64,
    sessions_evicted: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

struct Entry {
    control: PipeControl,
    /// When the client was last seen leaving, while it is away.
    disconnected_since: Option<Instant>,
}

struct Table {
    /// Sessions whose first handshake completed (handed to the
    /// application).
    sessions: HashMap<SessionId, Entry>,
    /// New sessions whose first handshake is under way, by the id they
    /// gave out: resumes of that id reach them too. They count against
    /// `max_sessions`.
    starting: HashMap<SessionId, PipeControl>,
    /// Sessions that existed and ended.
    ended: EndedIds,
}

impl Table {
    fn holds(&self, id: &SessionId) -> bool {
        self.sessions.contains_key(id) || self.starting.contains_key(id) || self.ended.contains(id)
    }
}

/// The ids of the sessions that ended most recently, at most `limit`: a
/// client that never heard the server confirm one of them must not get a
/// new session under it (it would replay bytes the ended one took).
struct EndedIds {
    ids: HashSet<SessionId>,
    order: VecDeque<SessionId>,
    limit: usize,
}

impl EndedIds {
    fn new(limit: usize) -> EndedIds {
        EndedIds { ids: HashSet::new(), order: VecDeque::new(), limit: limit.max(1) }
    }

    fn contains(&self, id: &SessionId) -> bool {
        self.ids.contains(id)
    }

    fn insert(&mut self, id: SessionId) {
        if !self.ids.insert(id) {
            return;
        }
        self.order.push_back(id);
        if self.order.len() > self.limit
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
    }
}

struct Router {
    options: ServerOptions,
    /// The span current where the listener was made: the parent of the
    /// spans of its connections and sessions (see the module's "Logs").
    span: tracing::Span,
    table: Mutex<Table>,
    handshakes: Arc<Semaphore>,
    accepted: mpsc::Sender<BackedPipe>,
    stopping: watch::Sender<bool>,
    counters: Counters,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How long an ERROR frame refusing a connection may take to go out.
const REFUSE_LINGER: Duration = Duration::from_secs(1);

/// The pause after a source's accept failed (e.g. no descriptors left).
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// A server of many sessions: accepts connections, starts a session (a
/// passive [`BackedPipe`]) for each new client and routes every resuming
/// client to its session.
///
/// # Example
///
/// ```
/// use backedpipe::dial::TcpDialer;
/// use backedpipe::server::{Listener, ServerOptions};
/// use backedpipe::{BackedPipe, Options, Secret};
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let secret = Secret::new(b"sixteen or more bytes".to_vec());
/// let options = ServerOptions::new().pipe(Options::new().secret(Some(secret.clone())));
/// let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let addr = tcp.local_addr()?;
/// let listener = Listener::tcp(tcp, options)?;
///
/// let client_options = Options::new().secret(Some(secret));
/// let mut client = BackedPipe::connect(TcpDialer::new(addr.to_string()), client_options);
/// client.write_all(b"ping").await?;
/// let mut session = listener.accept().await.expect("a session");
/// let mut got = [0; 4];
/// session.read_exact(&mut got).await?;
/// assert_eq!(&got, b"ping");
///
/// client.force_reconnect().await?; // a new connection, routed to the same session
/// session.write_all(b"pong").await?;
/// client.read_exact(&mut got).await?;
/// assert_eq!(&got, b"pong");
/// assert_eq!(listener.stats().resumes_routed, 1);
///
/// listener.shutdown(std::time::Duration::from_millis(200)).await;
/// assert_eq!(client.read(&mut got).await?, 0); // end of stream from the server
/// # Ok(())
/// # }
/// ```
///
/// # Drop
///
/// Dropping the listener stops accepting (as [`Listener::shutdown`] does)
/// but leaves the sessions already handed out to the application: they
/// work while connected and can no longer be resumed.
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub struct Listener {
    router: Arc<Router>,
    accepted: tokio::sync::Mutex<mpsc::Receiver<BackedPipe>>,
    sources: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").field("sessions", &lock(&self.router.table).sessions.len()).finish_non_exhaustive()
    }
}

impl Listener {
    /// A listener serving the connections of a TCP listener. Every client
    /// must prove the secret, so one is required.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] when the pipe options have no secret:
    /// TCP has no peer credentials, so without a secret anyone who can
    /// reach the port and learn a session id could take the session over.
    /// Serve TCP without a secret through [`Listener::listen`] if another
    /// layer authenticates the peer.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn tcp(listener: TcpListener, options: ServerOptions) -> io::Result<Listener> {
        if options.pipe.secret.is_none() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a TCP listener requires a secret"));
        }
        let server = Listener::new(options);
        server.listen(listener);
        Ok(server)
    }
}

impl Listener {
    /// A listener serving the connections of a Unix socket listener, with
    /// the peer uid check of [`ServerOptions::peer_uid`] (by default: the server's
    /// own user only) and the secret, if one is configured.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn unix(listener: UnixListener, options: ServerOptions) -> Listener {
        let server = Listener::new(options);
        server.listen(listener);
        server
    }
}

impl Listener {
    /// A listener with no source yet; add sources with
    /// [`Listener::listen`].
    pub fn new(options: ServerOptions) -> Listener {
        let (tx, rx) = mpsc::channel(options.accept_backlog.max(1));
        let ended = EndedIds::new(options.max_sessions);
        let router = Router {
            handshakes: Arc::new(Semaphore::new(options.max_handshakes.max(1))),
            options,
            span: tracing::Span::current(),
            table: Mutex::new(Table { sessions: HashMap::new(), starting: HashMap::new(), ended }),
            accepted: tx,
            stopping: watch::Sender::new(false),
            counters: Counters::default(),
        };
        Listener { router: Arc::new(router), accepted: tokio::sync::Mutex::new(rx), sources: Mutex::new(Vec::new()) }
    }

    /// Serves the connections of `source` (in a task of its own) until it
    /// ends or the listener shuts down. Any number of sources can feed one
    /// listener; their sessions are shared, so a client may resume through
    /// any of them.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn listen<A: Accept>(&self, mut source: A) {
        let router = Arc::clone(&self.router);
        let mut stopping = router.stopping.subscribe();
        let span = router.span.clone();
        let task = tokio::spawn(
            async move {
                loop {
                    let accepted = tokio::select! {
                        accepted = source.accept() => accepted,
                        _ = stopping.wait_for(|stop| *stop) => return,
                    };
                    match accepted {
                        Ok(Some(Accepted { conn, credentials })) => {
                            let accepted = Accepted { conn: Box::new(conn) as Conn, credentials };
                            bump(&router.counters.connections);
                            match Arc::clone(&router.handshakes).try_acquire_owned() {
                                Ok(permit) => {
                                    let span = tracing::info_span!(
                                        parent: &router.span,
                                        "connection",
                                        session = tracing::field::Empty
                                    );
                                    tokio::spawn(Arc::clone(&router).serve(accepted, permit).instrument(span));
                                }
                                Err(_) => {
                                    bump(&router.counters.refused_busy);
                                    tracing::warn!("too many handshakes under way; closed a new connection");
                                }
                            }
                        }
                        Ok(None) => return,
                        Err(err) => {
                            tracing::warn!(error = %err, "accepting a connection failed");
                            tokio::time::sleep(ACCEPT_RETRY).await;
                        }
                    }
                }
            }
            .instrument(span),
        );
        let mut sources = lock(&self.sources);
        sources.retain(|task| !task.is_finished());
        sources.push(task);
    }

    /// The next new session, once its client has completed the first
    /// handshake; `None` after [`Listener::shutdown`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped call loses no session.
    pub async fn accept(&self) -> Option<BackedPipe> {
        let mut stopping = self.router.stopping.subscribe();
        let mut accepted = self.accepted.lock().await;
        tokio::select! {
            pipe = accepted.recv() => pipe,
            _ = stopping.wait_for(|stop| *stop) => None,
        }
    }

    /// Counters and the number of sessions held.
    pub fn stats(&self) -> ServerStats {
        let counters = &self.router.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ServerStats {
            sessions: lock(&self.router.table).sessions.len(),
            connections: get(&counters.connections),
            sessions_created: get(&counters.sessions_created),
            sessions_created_unconfirmed: get(&counters.sessions_created_unconfirmed),
            resumes_routed: get(&counters.resumes_routed),
            refused_unknown_session: get(&counters.refused_unknown_session),
            refused_bad_hello: get(&counters.refused_bad_hello),
            refused_peer_uid: get(&counters.refused_peer_uid),
            refused_full: get(&counters.refused_full),
            refused_busy: get(&counters.refused_busy),
            failed_new_handshakes: get(&counters.failed_new_handshakes),
            sessions_expired: get(&counters.sessions_expired),
            sessions_evicted: get(&counters.sessions_evicted),
        }
    }

    /// The controls of every session the listener holds (e.g. to cut all
    /// their connections with `force_reconnect`).
    pub fn sessions(&self) -> Vec<PipeControl> {
        lock(&self.router.table).sessions.values().map(|entry| entry.control.clone()).collect()
    }

    /// The control of the session `id`, if the listener holds it.
    pub fn session(&self, id: SessionId) -> Option<PipeControl> {
        lock(&self.router.table).sessions.get(&id).map(|entry| entry.control.clone())
    }

    /// Shuts the server down gracefully: stops accepting (every source
    /// task ends, [`Listener::accept`] returns `None`, a new client still
    /// in its handshake is refused with ERROR `Closed`; a resume already
    /// accepted still reaches its session), ends every session's stream (its client reads
    /// end of stream after every byte the session wrote), waits up to
    /// `grace` for the sessions to end (a client that reads the end and
    /// closes its pipe ends its session), then closes those that remain.
    /// A connected client whose session is closed gets "peer closed"; a
    /// disconnected one gets "session gone" if it comes back to a new
    /// server.
    ///
    /// # Cancel safety
    ///
    /// Accepting stops and every stream is ended at the first poll; a
    /// dropped future skips the wait and the final close.
    pub async fn shutdown(&self, grace: Duration) {
        self.router.stopping.send_replace(true);
        for task in lock(&self.sources).drain(..) {
            task.abort();
        }
        let controls = self.sessions();
        for control in &controls {
            if control.status().state == PipeState::Connected {
                let _ = control.shutdown_write();
            } else {
                // Nobody to tell: the client cannot come back any more.
                control.close();
            }
        }
        let _ = tokio::time::timeout(grace, async {
            for control in &controls {
                let _ = control.watch_status().wait_for(|status| status.state == PipeState::Closed).await;
            }
        })
        .await;
        for control in &controls {
            control.close();
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.router.stopping.send_replace(true);
        for task in lock(&self.sources).drain(..) {
            task.abort();
        }
    }
}

impl Router {
    /// Admits, reads the HELLO of, and routes one new connection.
    async fn serve(self: Arc<Self>, accepted: Accepted<Conn>, permit: OwnedSemaphorePermit) {
        let Accepted { mut conn, credentials } = accepted;
        if !self.options.peer_uid.admits(credentials) {
            bump(&self.counters.refused_peer_uid);
            tracing::info!(?credentials, "refused a connection by its peer uid");
            return refuse(conn, ErrorCode::AuthenticationFailed, "peer uid not admitted").await;
        }
        let hello = match tokio::time::timeout(self.options.pipe.handshake_timeout, read_hello(&mut conn)).await {
            Ok(Ok(hello)) => hello,
            Ok(Err(Error::Protocol(err))) => {
                bump(&self.counters.refused_bad_hello);
                tracing::info!(error = %err, "refused a connection that did not open with a HELLO");
                return refuse(conn, ErrorCode::Protocol, &err.to_string()).await;
            }
            Ok(Err(err)) => {
                bump(&self.counters.refused_bad_hello);
                tracing::debug!(error = %err, "a connection ended before its HELLO");
                return;
            }
            Err(_) => {
                bump(&self.counters.refused_bad_hello);
                tracing::info!("dropped a connection that sent no HELLO in time");
                return;
            }
        };
        match self.route(conn, hello) {
            Routed::Handed => {}
            Routed::Refused { conn, code, reason } => refuse(conn, code, reason).await,
            Routed::Started(started) => self.settle(started, permit).await,
        }
    }

    /// Decides where a connection goes by its HELLO, and hands it there,
    /// under the table's lock: no other connection is routed meanwhile, so
    /// one id never gets two pipes, and a new session's fate is never
    /// decided while a connection is on its way to it.
    fn route(&self, conn: Conn, hello: Hello) -> Routed {
        let id = hello.session_id();
        let mut table = lock(&self.table);
        if !id.is_new() {
            // The session it names, whether or not it proves to belong there.
            tracing::Span::current().record("session", tracing::field::display(id));
            let live = table.sessions.get(&id).map(|entry| entry.control.clone()).filter(|control| {
                // A session that ended is gone even before its watcher
                // removed it.
                control.status().state != PipeState::Closed
            });
            if let Some(control) = live.or_else(|| table.starting.get(&id).cloned()) {
                match control.resume_with_hello(conn, hello) {
                    Ok(generation) => {
                        bump(&self.counters.resumes_routed);
                        tracing::debug!(%generation, "connection routed to its session");
                    }
                    Err(err) => tracing::debug!(error = %err, "a resume arrived as its session ended"),
                }
                return Routed::Handed;
            }
            if !hello.is_unconfirmed() || table.holds(&id) {
                bump(&self.counters.refused_unknown_session);
                tracing::info!("refused to resume an unknown session");
                return Routed::Refused { conn, code: ErrorCode::SessionUnknown, reason: "unknown session" };
            }
            if hello.reader_seq() != 0 || hello.flags() & FLAG_EOS_RECEIVED != 0 {
                // A client that never heard from the server has read nothing.
                bump(&self.counters.refused_bad_hello);
                tracing::info!("refused an unconfirmed session that claims to have read from it");
                let reason = "an unconfirmed session has received nothing";
                return Routed::Refused { conn, code: ErrorCode::InvalidSequence, reason };
            }
        }
        if *self.stopping.borrow() {
            return Routed::Refused { conn, code: ErrorCode::Closed, reason: "the server is shutting down" };
        }
        let mut evicted = None;
        if table.sessions.len() + table.starting.len() >= self.options.max_sessions.max(1) {
            let oldest = table
                .sessions
                .iter()
                .filter_map(|(id, entry)| {
                    // A client that just left may not be recorded yet.
                    let away = entry.control.status().state != PipeState::Connected;
                    let since = entry.disconnected_since.or_else(|| away.then(Instant::now))?;
                    Some((since, *id))
                })
                .min()
                .map(|(_, id)| id);
            let Some(entry) = oldest.and_then(|id| table.sessions.remove(&id)) else {
                drop(table);
                bump(&self.counters.refused_full);
                tracing::warn!(limit = self.options.max_sessions, "refused a new client: every session is in use");
                return Routed::Refused { conn, code: ErrorCode::ServerFull, reason: "too many sessions" };
            };
            let evicted_id = entry.control.session_id();
            table.ended.insert(evicted_id);
            evicted = Some(entry.control);
        }
        let unconfirmed = !id.is_new();
        let id = if unconfirmed {
            id
        } else {
            loop {
                let id = SessionId::random();
                if !table.holds(&id) {
                    break id;
                }
            }
        };
        tracing::Span::current().record("session", tracing::field::display(id));
        let span = tracing::info_span!(parent: &self.span, "session", id = %id);
        let pipe = span.in_scope(|| BackedPipe::passive_with_session(self.options.pipe.clone(), id));
        table.starting.insert(id, pipe.control());
        // A failure here shows as a failed first handshake when it settles.
        let _ = pipe.resume_with_hello(conn, hello);
        drop(table);
        if let Some(control) = evicted {
            bump(&self.counters.sessions_evicted);
            tracing::info!(session = %control.session_id(), "evicted the session disconnected longest");
            control.close();
        }
        Routed::Started(Started { id, pipe, span, unconfirmed })
    }

    /// Waits until a new session's first handshake completed (on any of
    /// the connections routed to it) or can no longer complete, then
    /// enters it in the table and hands it to the application, or forgets
    /// it; `permit` (a handshake slot) is given back before the session
    /// waits for the application to accept it.
    async fn settle(self: Arc<Self>, started: Started, permit: OwnedSemaphorePermit) {
        let Started { id, pipe, span, unconfirmed } = started;
        let control = pipe.control();
        let mut status = control.watch_status();
        let completed = loop {
            // Marked seen before the core is asked, so that a change after
            // the answer wakes the wait below.
            status.borrow_and_update();
            let settled = {
                let mut table = lock(&self.table);
                match control.first_handshake() {
                    FirstHandshake::UnderWay => None,
                    FirstHandshake::Completed if !*self.stopping.borrow() => {
                        table.starting.remove(&id);
                        table.sessions.insert(id, Entry { control: control.clone(), disconnected_since: None });
                        Some(true)
                    }
                    FirstHandshake::Completed | FirstHandshake::Failed => {
                        table.starting.remove(&id);
                        Some(false)
                    }
                }
            };
            if let Some(completed) = settled {
                break completed;
            }
            // Every handshake under way ends by its own deadline, which
            // changes the status; the timeout only guards against a lost
            // wake-up.
            let _ = tokio::time::timeout(self.options.pipe.handshake_timeout, status.changed()).await;
        };
        if !completed {
            bump(&self.counters.failed_new_handshakes);
            tracing::info!(parent: &span, "a new client's first handshake failed");
            // Dropping the pipe still lets its refusal (ERROR frame) reach
            // the client.
            return;
        }
        drop(permit);
        bump(&self.counters.sessions_created);
        if unconfirmed {
            bump(&self.counters.sessions_created_unconfirmed);
        }
        tracing::debug!(parent: &span, unconfirmed, "new session");
        let watch = watch_session(Arc::downgrade(&self), id, control, self.options.session_expiry);
        tokio::spawn(watch.instrument(span.clone()));
        let mut stopping = self.stopping.subscribe();
        tokio::select! {
            sent = self.accepted.send(pipe) => if sent.is_err() {
                tracing::debug!(parent: &span, "a new session arrived as the server shut down");
            },
            _ = stopping.wait_for(|stop| *stop) => {}
        }
    }
}

/// Where [`Router::route`] sent a connection.
enum Routed {
    /// To a session (or to one that ended meanwhile, which dropped it).
    Handed,
    /// Nowhere: it gets this ERROR frame.
    Refused { conn: Conn, code: ErrorCode, reason: &'static str },
    /// To a new session, whose first handshake is under way.
    Started(Started),
}

/// A new session whose first handshake is under way.
struct Started {
    id: SessionId,
    pipe: BackedPipe,
    span: tracing::Span,
    /// Started under an id the client already held (an unconfirmed one).
    unconfirmed: bool,
}

/// Follows a session: records when its client leaves, expires it when the
/// client stays away too long, and forgets it when it ends.
async fn watch_session(router: Weak<Router>, id: SessionId, control: PipeControl, expiry: Duration) {
    let mut status = control.watch_status();
    loop {
        let state = status.borrow_and_update().state;
        let Some(strong) = router.upgrade() else { return };
        match state {
            PipeState::Closed => break,
            PipeState::Connected => {
                if let Some(entry) = lock(&strong.table).sessions.get_mut(&id) {
                    entry.disconnected_since = None;
                }
                drop(strong);
                if status.changed().await.is_err() {
                    break;
                }
            }
            PipeState::Disconnected | PipeState::Reconnecting => {
                // A handshake under way (perhaps an impostor's) does not
                // count as the client being back.
                let since = match lock(&strong.table).sessions.get_mut(&id) {
                    Some(entry) => *entry.disconnected_since.get_or_insert_with(Instant::now),
                    None => break,
                };
                drop(strong);
                tokio::select! {
                    changed = status.changed() => if changed.is_err() { break },
                    () = tokio::time::sleep_until(since + expiry) => {
                        if let Some(strong) = router.upgrade() {
                            bump(&strong.counters.sessions_expired);
                        }
                        tracing::info!("session expired");
                        control.close();
                        break;
                    }
                }
            }
        }
    }
    if let Some(router) = router.upgrade() {
        let mut table = lock(&router.table);
        if table.sessions.get(&id).is_some_and(|entry| entry.control.status().state == PipeState::Closed) {
            table.sessions.remove(&id);
            table.ended.insert(id);
        }
    }
}

/// Tells the peer why its connection is refused (an ERROR frame), ends the
/// connection and reads what the peer still sends until it closes too, so
/// that the frame is not lost to a reset; all within [`REFUSE_LINGER`].
async fn refuse<T: AsyncRead + AsyncWrite + Unpin>(mut conn: T, code: ErrorCode, reason: &str) {
    let frame = error_frame(code, reason);
    let _ = tokio::time::timeout(REFUSE_LINGER, async {
        conn.write_all(&frame).await?;
        conn.shutdown().await?;
        let mut sink = [0u8; 1024];
        let mut drained = 0usize;
        while drained < 64 << 10 {
            match conn.read(&mut sink).await? {
                0 => break,
                count => drained += count,
            }
        }
        io::Result::Ok(())
    })
    .await;
}
