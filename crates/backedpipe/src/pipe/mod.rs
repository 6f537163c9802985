//! The tokio shell: [`BackedPipe`] (`AsyncRead + AsyncWrite`, owned split
//! halves), its [`PipeControl`], and [`read_hello`]. The machinery behind
//! them lives in rooms of its own:
//!
//! - `hub`: who waits for what (the application's reader and writer, the
//!   driver), and where a transport's readiness goes;
//! - `state`: the state all of them share (the core, the connections, the
//!   reconnect bookkeeping) and the events that change it;
//! - `conn_io`: moving bytes between the core and a connection;
//! - `app_io`: the application's reads, writes, flushes, shutdown and
//!   close, which do the current connection's I/O inline;
//! - `driver`: the task that dials, handshakes, keeps time and moves bytes
//!   when the application does not.
//!
//! # How the work is shared
//!
//! One driver task per pipe dials, runs handshakes, keeps the timers, and
//! reads when no application read waits (acknowledgements, pings, end of
//! stream). The rest happens in the application's own calls: a write
//! copies the caller's bytes into a chunk with the state unlocked
//! (`write_chunk` takes the caller's chunk as it is), queues it in the send
//! buffer and hands the frame to the connection with one vectored write
//! from the send buffer's chunks; a read takes DATA
//! payload straight from the connection into the caller's buffer. Each
//! connection is split into a read half and a write half (how they relate
//! underneath is the transport's: see [`Transport`]), and these system
//! calls run with their half held and the state unlocked, so a pipe's
//! reading and writing never wait for each other. Every lock, what it
//! guards and the order they are taken in are listed once, in `state`'s
//! module documentation.
//!
//! A transport's readiness goes to the application task that waits for
//! it, or is left to that task's next call; the driver takes over what is
//! not claimed in time. `hub` says when.
//!
//! # Logs
//!
//! Every pipe has a `pipe` span with its side (`active` or `passive`) and
//! its session id (known from the start on the passive side, recorded at
//! the first handshake on the active side), a child of the span current
//! where the pipe was made. The driver task runs in it, and the
//! application's calls enter it, so every line the pipe and its core log
//! says which pipe it is about.

mod app_io;
mod conn_io;
mod copies;
mod driver;
mod hub;
mod state;

use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tracing::Instrument;

use self::app_io::WriteSource;
use self::driver::{DialFuture, Dialer, Driver};
use self::state::{Party, Shared};
use crate::core::{ConnectionState, Core, FirstHandshake, Generation, Role};
use crate::error::Error;
use crate::options::Options;
use crate::proto::{self, DecodeError, Hello, Nonce, SessionId};
use crate::reconnect::Reconnector;
use crate::transport::{Transport, halves};

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
pub struct BackedPipe {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for BackedPipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.handle.shared.lock();
        f.debug_struct("BackedPipe").field("core", &inner.core).finish_non_exhaustive()
    }
}

impl BackedPipe {
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
    pub fn connect(reconnector: impl Reconnector, options: Options) -> BackedPipe {
        let reconnector = Arc::new(reconnector);
        let dialer: Box<dyn Fn() -> DialFuture + Send + Sync> = Box::new(move || {
            let reconnector = Arc::clone(&reconnector);
            Box::pin(async move { reconnector.reconnect().await.map(halves) })
        });
        BackedPipe::start(Core::active(options.clone()), options, Some(dialer))
    }

    /// A passive pipe for a new session with a random id: it waits for
    /// connections handed to it with [`BackedPipe::resume`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn passive(options: Options) -> BackedPipe {
        BackedPipe::passive_with_session(options, SessionId::random())
    }

    /// A passive pipe for the session `session_id`.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn passive_with_session(options: Options, session_id: SessionId) -> BackedPipe {
        BackedPipe::start(Core::passive(options.clone(), session_id), options, None)
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
    pub fn resume(&self, conn: impl Transport) -> Result<Generation, Error> {
        self.control().resume(conn)
    }

    /// Passive side: as [`BackedPipe::resume`], for a connection whose HELLO
    /// has already been read (see [`read_hello`]), e.g. by a server that
    /// routes connections to sessions by [`Hello::session_id`].
    ///
    /// # Errors
    ///
    /// As [`BackedPipe::resume`].
    pub fn resume_with_hello(&self, conn: impl Transport, hello: Hello) -> Result<Generation, Error> {
        self.control().resume_with_hello(conn, hello)
    }

    /// Writes `chunk` whole, without a copy: the send buffer keeps the
    /// chunk itself (a reference to it) until the peer acknowledges it, and
    /// the connection is written from it. Waits, as `write` does, while
    /// the send buffer has no room (see [`Options::max_unsent_bytes`]).
    /// Chunks shorter than 1 KiB are copied, so that small writes still
    /// travel in few frames.
    ///
    /// ```
    /// # use backedpipe::{BackedPipe, Options};
    /// # use tokio::io::AsyncReadExt;
    /// # use tokio::net::UnixStream;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = BackedPipe::passive(Options::new());
    /// # let control = server.control();
    /// # let mut server = server;
    /// # let mut client = BackedPipe::connect(
    /// #     move || {
    /// #         let control = control.clone();
    /// #         async move {
    /// #             let (near, far) = UnixStream::pair()?;
    /// #             control.resume(far).map_err(std::io::Error::other)?;
    /// #             Ok(near)
    /// #         }
    /// #     },
    /// #     Options::new(),
    /// # );
    /// let output = bytes::Bytes::from(vec![b'x'; 64 << 10]);
    /// client.write_chunk(output.clone()).await?;
    /// let mut received = vec![0; output.len()];
    /// server.read_exact(&mut received).await?;
    /// assert_eq!(received, output);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As `write`: the pipe failed, was closed, or its stream was ended
    /// with `shutdown`.
    ///
    /// # Cancel safety
    ///
    /// A dropped future may have taken a prefix of the chunk; to know how
    /// much, use [`poll_write_chunk`](Self::poll_write_chunk).
    pub async fn write_chunk(&mut self, chunk: Bytes) -> Result<(), Error> {
        self.handle.shared.write_chunk(chunk).await
    }

    /// Takes as much of the front of `chunk` as the send buffer has room
    /// for, without a copy (see [`write_chunk`](Self::write_chunk)), and
    /// returns how many bytes that was; pending, with the task woken
    /// later, when there is no room. Empty chunks take nothing at once.
    ///
    /// # Errors
    ///
    /// As [`write_chunk`](Self::write_chunk).
    pub fn poll_write_chunk(&mut self, cx: &mut Context<'_>, chunk: &Bytes) -> Poll<Result<usize, Error>> {
        self.handle.shared.poll_write(cx, WriteSource::Chunk(chunk))
    }

    /// Borrows the pipe as a reading half and a writing half that can be
    /// used at once (for example in one `select!` or `join!`), the
    /// writing half with [`WriteHalf::write_chunk`]. The pipe is whole
    /// again when both are dropped.
    ///
    /// ```
    /// # use backedpipe::{BackedPipe, Options};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut pipe = BackedPipe::passive(Options::new());
    /// let (_reader, mut writer) = pipe.split();
    /// // Taken into the send buffer: the pipe sends it once connected.
    /// writer.write_chunk(bytes::Bytes::from_static(b"hello")).await.unwrap();
    /// # }
    /// ```
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        let shared = &self.handle.shared;
        (ReadHalf { shared }, WriteHalf { shared, _pipe: PhantomData })
    }

    /// Splits the pipe into halves that can be used from different tasks.
    /// The pipe closes when both are dropped.
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        let read = OwnedReadHalf { handle: Arc::clone(&self.handle) };
        (read, OwnedWriteHalf { handle: self.handle })
    }

    /// A cloneable handle for status, statistics, forced reconnects and
    /// closing, usable while the pipe itself is busy reading or writing. It
    /// does not keep the pipe open.
    pub fn control(&self) -> PipeControl {
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

    /// Starts a pipe around `core`: its state, and its driver in the
    /// pipe's span.
    fn start(core: Core, options: Options, dialer: Dialer) -> BackedPipe {
        let span = match core.role() {
            Role::Active => tracing::info_span!("pipe", side = %"active", session = tracing::field::Empty),
            Role::Passive => tracing::info_span!("pipe", side = %"passive", session = %core.session_id()),
        };
        let active = dialer.is_some();
        let shared = Arc::new(Shared::new(core, options, active, span.clone()));
        tokio::spawn(Driver::new(Arc::clone(&shared), dialer).instrument(span));
        BackedPipe { handle: Arc::new(Handle { shared }) }
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }
}

impl AsyncRead for BackedPipe {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.handle.shared.poll_read(cx, buf)
    }
}

impl AsyncWrite for BackedPipe {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.handle.shared.poll_write(cx, WriteSource::Borrowed(buf)).map_err(io::Error::from)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.handle.shared.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.handle.shared.poll_shutdown(cx)
    }
}

/// The reading half of a borrowed [`BackedPipe`] (see [`BackedPipe::split`]).
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub struct ReadHalf<'a> {
    shared: &'a Shared,
}

/// The writing half of a borrowed [`BackedPipe`] (see [`BackedPipe::split`]).
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub struct WriteHalf<'a> {
    shared: &'a Shared,
    /// Borrows the pipe mutably, as the write half of a split does.
    _pipe: PhantomData<&'a mut BackedPipe>,
}

impl std::fmt::Debug for ReadHalf<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadHalf").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for WriteHalf<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteHalf").finish_non_exhaustive()
    }
}

impl WriteHalf<'_> {
    /// Writes `chunk` whole, without a copy; see
    /// [`BackedPipe::write_chunk`].
    ///
    /// # Errors
    ///
    /// As [`BackedPipe::write_chunk`].
    ///
    /// # Cancel safety
    ///
    /// As [`BackedPipe::write_chunk`].
    pub async fn write_chunk(&mut self, chunk: Bytes) -> Result<(), Error> {
        self.shared.write_chunk(chunk).await
    }

    /// Takes as much of the front of `chunk` as there is room for; see
    /// [`BackedPipe::poll_write_chunk`].
    ///
    /// # Errors
    ///
    /// As [`BackedPipe::write_chunk`].
    pub fn poll_write_chunk(&mut self, cx: &mut Context<'_>, chunk: &Bytes) -> Poll<Result<usize, Error>> {
        self.shared.poll_write(cx, WriteSource::Chunk(chunk))
    }
}

impl AsyncRead for ReadHalf<'_> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.shared.poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteHalf<'_> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.shared.poll_write(cx, WriteSource::Borrowed(buf)).map_err(io::Error::from)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shared.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shared.poll_shutdown(cx)
    }
}

/// The reading half of a [`BackedPipe`] (see [`BackedPipe::into_split`]).
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub struct OwnedReadHalf {
    handle: Arc<Handle>,
}

/// The writing half of a [`BackedPipe`] (see [`BackedPipe::into_split`]).
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub struct OwnedWriteHalf {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for OwnedReadHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedReadHalf").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for OwnedWriteHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedWriteHalf").finish_non_exhaustive()
    }
}

impl OwnedReadHalf {
    /// Status and control of the pipe; see [`BackedPipe::control`].
    pub fn control(&self) -> PipeControl {
        PipeControl { shared: Arc::clone(&self.handle.shared) }
    }
}

impl OwnedWriteHalf {
    /// Status and control of the pipe; see [`BackedPipe::control`].
    pub fn control(&self) -> PipeControl {
        PipeControl { shared: Arc::clone(&self.handle.shared) }
    }

    /// Writes `chunk` whole, without a copy; see
    /// [`BackedPipe::write_chunk`].
    ///
    /// # Errors
    ///
    /// As [`BackedPipe::write_chunk`].
    ///
    /// # Cancel safety
    ///
    /// As [`BackedPipe::write_chunk`].
    pub async fn write_chunk(&mut self, chunk: Bytes) -> Result<(), Error> {
        self.handle.shared.write_chunk(chunk).await
    }

    /// Takes as much of the front of `chunk` as there is room for; see
    /// [`BackedPipe::poll_write_chunk`].
    ///
    /// # Errors
    ///
    /// As [`BackedPipe::write_chunk`].
    pub fn poll_write_chunk(&mut self, cx: &mut Context<'_>, chunk: &Bytes) -> Poll<Result<usize, Error>> {
        self.handle.shared.poll_write(cx, WriteSource::Chunk(chunk))
    }
}

impl AsyncRead for OwnedReadHalf {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.handle.shared.poll_read(cx, buf)
    }
}

impl AsyncWrite for OwnedWriteHalf {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.handle.shared.poll_write(cx, WriteSource::Borrowed(buf)).map_err(io::Error::from)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.handle.shared.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.handle.shared.poll_shutdown(cx)
    }
}

/// Status, statistics and control of a pipe, from any task; see
/// [`BackedPipe::control`].
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub struct PipeControl {
    shared: Arc<Shared>,
}

impl Clone for PipeControl {
    fn clone(&self) -> Self {
        PipeControl { shared: Arc::clone(&self.shared) }
    }
}

impl std::fmt::Debug for PipeControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeControl").field("status", &*self.shared.status.borrow()).finish_non_exhaustive()
    }
}

impl PipeControl {
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
    pub fn resume(&self, conn: impl Transport) -> Result<Generation, Error> {
        self.resume_inner(conn, None)
    }

    /// Passive side: hands the pipe a new connection whose HELLO was read;
    /// see [`BackedPipe::resume_with_hello`].
    ///
    /// # Errors
    ///
    /// As [`BackedPipe::resume`].
    pub fn resume_with_hello(&self, conn: impl Transport, hello: Hello) -> Result<Generation, Error> {
        self.resume_inner(conn, Some(hello))
    }

    fn resume_inner(&self, conn: impl Transport, hello: Option<Hello>) -> Result<Generation, Error> {
        let shared = &self.shared;
        let _span = shared.span.enter();
        let mut inner = shared.lock();
        let now = now();
        let generation = match hello {
            Some(hello) => inner.core.accept_with_hello(now, Nonce::random(), hello)?,
            None => inner.core.accept(now, Nonce::random())?,
        };
        inner.add_conn(generation, halves(conn));
        inner.process_events(now, &shared.hub, Party::Other);
        drop(inner);
        shared.hub.wake_driver();
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
            buffer_bytes: inner.core.allocated_bytes() + self.shared.copies_held.load(Ordering::Relaxed),
            independent_halves: inner.independent_halves,
            shared_halves: inner.shared_halves,
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
                    self.shared.hub.wake_driver();
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
        self.shared.hub.wake_driver();
        Ok(())
    }
}

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
    /// Memory held by the send and receive buffers and by the storage
    /// written bytes are copied into. It follows what they hold, and drops
    /// to 0 when an idle pipe has nothing unacknowledged.
    pub buffer_bytes: usize,
    /// Connections whose transport split into halves that read and write
    /// at the same time (sockets, a child's stdio; see [`Transport`]).
    pub independent_halves: u64,
    /// Connections whose transport split into halves sharing one lock
    /// ([`Joined`](crate::Joined)): reading and writing take turns.
    pub shared_halves: u64,
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

// ----- internals ---------------------------------------------------------------------

/// Closes the pipe when the last application handle goes away. Closing
/// makes one attempt to tell the peer at once, which is all a pipe
/// dropped just before its runtime ends gets.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.close();
    }
}

/// The shell's clock: tokio's, so that tests with paused time control it.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}
