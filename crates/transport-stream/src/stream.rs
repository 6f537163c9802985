//! [`Stream`], its owned halves, and the [`Handle`] that closes it: the pipe
//! ends live in shared slots so that `close` can drop them (and wake whoever
//! waits on them) whichever task owns a half.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use childproc::{Child, ExitHandle, ExitStatus, IntoCommand, Isolation, Signal};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::unix::pipe;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{Error, ReuniteError};
use crate::options::Options;
use crate::stderr::{self, Capture};

/// How long a read that reached the end of the child's stdout waits for the
/// child's exit, to tell "the child failed" from a plain end-of-file.
const EXIT_GRACE: Duration = Duration::from_millis(250);
/// How long `close` lets the stderr task drain what an exited child wrote.
const STDERR_DRAIN: Duration = Duration::from_millis(250);

/// An async byte stream over a child's stdout (read) and stdin (write).
///
/// See the [crate documentation](crate) for the termination ladder and an
/// example.
#[derive(Debug)]
pub struct Stream {
    read: OwnedReadHalf,
    write: OwnedWriteHalf,
}

/// The reading half of a [`Stream`] (the child's stdout), from
/// [`Stream::into_split`]; [`reunite`](Self::reunite) puts the stream back
/// together.
pub struct OwnedReadHalf {
    shared: Arc<Shared>,
    /// Set once the end of stdout was seen and reported.
    finished: bool,
    /// While deciding whether the end of stdout is a failure. Only ever
    /// used through `&mut self` (`Mutex::get_mut`, no locking): the mutex
    /// only makes the half `Sync`.
    end_check: Mutex<Option<EndCheck>>,
}

/// The future that decides whether the end of stdout is a failure.
type EndCheck = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

/// The writing half of a [`Stream`] (the child's stdin), from
/// [`Stream::into_split`]; [`reunite`](Self::reunite) puts the stream back
/// together.
#[derive(Debug)]
pub struct OwnedWriteHalf {
    shared: Arc<Shared>,
}

/// Closes a [`Stream`] and reads its state, from any task; cheap to clone.
#[derive(Debug, Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

/// A pipe end in a slot that `close` can empty, with the waker of whoever
/// last waited on it.
#[derive(Debug)]
struct Slot<P> {
    pipe: Option<P>,
    waker: Option<Waker>,
}

impl<P> Slot<P> {
    fn remember(&mut self, waker: &Waker) {
        if !self.waker.as_ref().is_some_and(|known| known.will_wake(waker)) {
            self.waker = Some(waker.clone());
        }
    }
}

#[derive(Debug)]
struct Shared {
    program: String,
    pid: Option<u32>,
    child: Child,
    exit: ExitHandle,
    stdout: Mutex<Slot<pipe::Receiver>>,
    stdin: Mutex<Slot<pipe::Sender>>,
    capture: Arc<Capture>,
    stderr_task: Mutex<Option<JoinHandle<()>>>,
    ladder: Mutex<Ladder>,
    /// Wakes a ladder waiting out the termination delay when it changes.
    delay_changed: Notify,
    /// Set when the first `close` starts the ladder.
    closing: AtomicBool,
    /// `true` once the ladder has finished.
    closed: watch::Sender<bool>,
}

/// The durations of the termination ladder.
#[derive(Debug, Clone, Copy)]
struct Ladder {
    termination_delay: Duration,
    stdin_close_timeout: Duration,
    terminate_timeout: Duration,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Stream {
    /// Starts `command` with piped stdin and stdout (and stderr, unless
    /// [`Options::inherit_stderr`]) in a process group of its own.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] naming the program when it cannot be started (a
    /// missing binary, no permission); [`Error::Process`] when its pipes
    /// cannot be set up.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with I/O and time enabled.
    pub fn spawn(command: impl IntoCommand, options: Options) -> Result<Self, Error> {
        let mut command: Command = command.into_command();
        command.stdin(Stdio::piped()).stdout(Stdio::piped());
        if options.inherit_stderr {
            command.stderr(Stdio::inherit());
        } else {
            command.stderr(Stdio::piped());
        }
        let child_options = childproc::Options::new()
            .isolation(Isolation::ProcessGroup)
            .kill_signal(Some(Signal::TERM))
            .kill_timeout(options.terminate_timeout)
            .kill_on_drop(true)
            .restartable(false);
        let program = command.get_program().to_string_lossy().into_owned();
        let child = Child::new(command, child_options);
        let exit = child.exit_handle();
        child.start()?;
        let capture = Capture::new(options.capture_stderr_bytes);
        let stderr_task =
            child.take_stderr().map(|stderr| stderr::spawn_drain(stderr, options.forward_stderr, capture.clone()));
        let shared = Arc::new(Shared {
            program,
            pid: child.pid(),
            stdout: Mutex::new(Slot { pipe: child.take_stdout(), waker: None }),
            stdin: Mutex::new(Slot { pipe: child.take_stdin(), waker: None }),
            child,
            exit,
            capture,
            stderr_task: Mutex::new(stderr_task),
            ladder: Mutex::new(Ladder {
                termination_delay: options.termination_delay,
                stdin_close_timeout: options.stdin_close_timeout,
                terminate_timeout: options.terminate_timeout,
            }),
            delay_changed: Notify::new(),
            closing: AtomicBool::new(false),
            closed: watch::Sender::new(false),
        });
        Ok(Self {
            read: OwnedReadHalf { shared: shared.clone(), finished: false, end_check: Mutex::new(None) },
            write: OwnedWriteHalf { shared },
        })
    }

    /// A handle that closes this stream and reads its state from any task.
    pub fn handle(&self) -> Handle {
        Handle { shared: self.read.shared.clone() }
    }

    /// Splits the stream into halves that can live on different tasks.
    /// Either half's [`handle`](OwnedReadHalf::handle) closes the whole
    /// stream; [`OwnedReadHalf::reunite`] puts the halves back together.
    ///
    /// ```
    /// use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// use transport_stream::{Options, Stream};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let stream = Stream::spawn(std::process::Command::new("cat"), Options::new())?;
    /// let (mut reader, mut writer) = stream.into_split();
    /// let echo = tokio::spawn(async move {
    ///     let mut reply = [0; 4];
    ///     reader.read_exact(&mut reply).await.map(|_| (reader, reply))
    /// });
    /// writer.write_all(b"ping").await?;
    /// let (reader, reply) = echo.await??;
    /// assert_eq!(&reply, b"ping");
    ///
    /// let stream = reader.reunite(writer)?;
    /// assert!(stream.close().await?.success());
    /// # Ok(())
    /// # }
    /// ```
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        (self.read, self.write)
    }

    /// Runs the termination ladder and returns the child's exit status; see
    /// [`Handle::close`].
    ///
    /// # Errors
    ///
    /// As [`Handle::close`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the ladder runs in a task of its own and goes on when
    /// this future is dropped; call `close` again to wait for it.
    pub async fn close(&self) -> Result<ExitStatus, Error> {
        self.handle().close().await
    }
}

impl Handle {
    /// Runs the termination ladder (see the [crate documentation](crate))
    /// once, however many tasks call this, and returns the child's exit
    /// status. When it returns, the child has been reaped, every pipe end
    /// of ours is closed, and pending reads and writes have been woken.
    ///
    /// # Errors
    ///
    /// [`Error::Process`] when the child's status cannot be had (for
    /// example, something else in this process reaped it).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the ladder runs in a task of its own and goes on when
    /// this future is dropped; call `close` again to wait for it.
    pub async fn close(&self) -> Result<ExitStatus, Error> {
        if !self.shared.closing.swap(true, Ordering::SeqCst) {
            tokio::spawn(run_ladder(self.shared.clone()));
        }
        let mut closed = self.shared.closed.subscribe();
        // The sender lives in `shared`, which we hold: this cannot fail.
        let _ = closed.wait_for(|closed| *closed).await;
        Ok(self.shared.exit.wait().await?)
    }

    /// Changes how long `close` first waits for the child to exit by itself.
    /// Takes effect also for a `close` already waiting out the old delay.
    pub fn set_termination_delay(&self, delay: Duration) {
        lock(&self.shared.ladder).termination_delay = delay;
        self.shared.delay_changed.notify_waiters();
    }

    /// The child's process id (it may name another process once the child
    /// has been reaped).
    pub fn pid(&self) -> Option<u32> {
        self.shared.pid
    }

    /// The child's exit status, if it has exited.
    ///
    /// # Errors
    ///
    /// [`Error::Process`] when the status cannot be had.
    pub fn try_status(&self) -> Result<Option<ExitStatus>, Error> {
        Ok(self.shared.exit.try_status()?)
    }

    /// What is captured of the child's stderr so far (its last bytes, up to
    /// [`Options::capture_stderr`]).
    pub fn stderr(&self) -> Vec<u8> {
        self.shared.capture.snapshot()
    }

    /// Whether `close` has been called.
    pub fn is_closing(&self) -> bool {
        self.shared.closing.load(Ordering::SeqCst)
    }
}

impl Shared {
    /// Waits up to `timeout` for the child to exit; `true` if it did.
    async fn exited_within(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.exit.wait()).await.is_ok()
    }

    /// Waits out the termination delay, re-reading it when it changes.
    async fn exited_within_delay(&self) -> bool {
        let started = Instant::now();
        loop {
            let changed = self.delay_changed.notified();
            let deadline = started + lock(&self.ladder).termination_delay;
            tokio::select! {
                _ = self.exit.wait() => return true,
                _ = tokio::time::sleep_until(deadline) => return false,
                _ = changed => {}
            }
        }
    }

    fn close_stdin(&self) {
        let mut slot = lock(&self.stdin);
        slot.pipe = None;
        if let Some(waker) = slot.waker.take() {
            waker.wake();
        }
    }

    fn close_stdout(&self) {
        let mut slot = lock(&self.stdout);
        slot.pipe = None;
        if let Some(waker) = slot.waker.take() {
            waker.wake();
        }
    }

    /// Waits up to `timeout` for the stderr task to reach the end of stderr,
    /// then stops it (closing our end of the pipe).
    async fn finish_stderr(&self, timeout: Duration) {
        let task = lock(&self.stderr_task).take();
        if let Some(mut task) = task
            && tokio::time::timeout(timeout, &mut task).await.is_err()
        {
            task.abort();
            let _ = task.await;
        }
    }

    /// The error a read reports when stdout ended because the child failed.
    async fn end_of_output(self: Arc<Self>) -> io::Result<()> {
        let Ok(Ok(status)) = tokio::time::timeout(EXIT_GRACE, self.exit.wait()).await else {
            return Ok(());
        };
        if status.success() || self.closing.load(Ordering::SeqCst) {
            return Ok(());
        }
        // Let the stderr task catch up with what the child wrote last.
        let task = lock(&self.stderr_task).take();
        if let Some(mut task) = task
            && tokio::time::timeout(STDERR_DRAIN, &mut task).await.is_err()
        {
            *lock(&self.stderr_task) = Some(task);
        }
        let stderr = String::from_utf8_lossy(&self.capture.snapshot()).into_owned();
        Err(Error::Exited { program: self.program.clone(), status, stderr }.into())
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.stderr_task).take() {
            task.abort();
        }
    }
}

/// The termination ladder; see the crate documentation.
async fn run_ladder(shared: Arc<Shared>) {
    let ladder = *lock(&shared.ladder);
    if !shared.exited_within_delay().await {
        shared.close_stdin();
        if !shared.exited_within(ladder.stdin_close_timeout).await {
            let _ = shared.child.signal(Signal::TERM);
            if !shared.exited_within(ladder.terminate_timeout).await {
                let _ = shared.child.signal(Signal::KILL);
                let _ = shared.exit.wait().await;
            }
        }
    }
    shared.close_stdin();
    shared.finish_stderr(STDERR_DRAIN).await;
    shared.close_stdout();
    shared.closed.send_replace(true);
}

impl OwnedReadHalf {
    /// A handle that closes the stream this half belongs to.
    pub fn handle(&self) -> Handle {
        Handle { shared: self.shared.clone() }
    }

    /// Puts the halves of one stream back together into the [`Stream`]
    /// they were split from.
    ///
    /// ```
    /// use std::process::Command;
    /// use transport_stream::{Options, ReuniteError, Stream};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let (reader, writer) = Stream::spawn(Command::new("cat"), Options::new())?.into_split();
    /// let (other_reader, other_writer) = Stream::spawn(Command::new("cat"), Options::new())?.into_split();
    ///
    /// // Halves of different streams are handed back unchanged.
    /// let ReuniteError(reader, other_writer) = reader.reunite(other_writer).unwrap_err();
    ///
    /// let stream = reader.reunite(writer)?;
    /// let other = other_writer.reunite(other_reader)?;
    /// assert!(stream.close().await?.success());
    /// assert!(other.close().await?.success());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ReuniteError`], holding both halves unchanged, when they come from
    /// different streams.
    pub fn reunite(self, other: OwnedWriteHalf) -> Result<Stream, ReuniteError> {
        if Arc::ptr_eq(&self.shared, &other.shared) {
            Ok(Stream { read: self, write: other })
        } else {
            Err(ReuniteError(self, other))
        }
    }
}

impl OwnedWriteHalf {
    /// A handle that closes the stream this half belongs to.
    pub fn handle(&self) -> Handle {
        Handle { shared: self.shared.clone() }
    }

    /// Puts the halves of one stream back together; see
    /// [`OwnedReadHalf::reunite`].
    ///
    /// # Errors
    ///
    /// [`ReuniteError`], holding both halves unchanged, when they come from
    /// different streams.
    pub fn reunite(self, other: OwnedReadHalf) -> Result<Stream, ReuniteError> {
        other.reunite(self)
    }
}

impl std::fmt::Debug for OwnedReadHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedReadHalf")
            .field("shared", &self.shared)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for OwnedReadHalf {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.finished {
                return Poll::Ready(Ok(()));
            }
            let end_check = this.end_check.get_mut().unwrap_or_else(PoisonError::into_inner);
            if let Some(check) = end_check.as_mut() {
                let result = std::task::ready!(check.as_mut().poll(cx));
                *end_check = None;
                this.finished = true;
                return Poll::Ready(result);
            }
            let mut slot = lock(&this.shared.stdout);
            let Some(stdout) = slot.pipe.as_mut() else {
                // Closed by `close`: end of file.
                return Poll::Ready(Ok(()));
            };
            let before = buf.filled().len();
            match Pin::new(stdout).poll_read(cx, buf) {
                Poll::Pending => {
                    slot.remember(cx.waker());
                    return Poll::Pending;
                }
                Poll::Ready(Ok(())) if buf.filled().len() == before && buf.remaining() > 0 => {
                    drop(slot);
                    let check: EndCheck = Box::pin(this.shared.clone().end_of_output());
                    *this.end_check.get_mut().unwrap_or_else(PoisonError::into_inner) = Some(check);
                }
                other => return other,
            }
        }
    }
}

impl AsyncWrite for OwnedWriteHalf {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let mut slot = lock(&self.shared.stdin);
        let Some(stdin) = slot.pipe.as_mut() else {
            return Poll::Ready(Err(closed_error()));
        };
        let result = Pin::new(stdin).poll_write(cx, data);
        if result.is_pending() {
            slot.remember(cx.waker());
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut slot = lock(&self.shared.stdin);
        let Some(stdin) = slot.pipe.as_mut() else {
            return Poll::Ready(Err(closed_error()));
        };
        let result = Pin::new(stdin).poll_write_vectored(cx, bufs);
        if result.is_pending() {
            slot.remember(cx.waker());
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Closes the child's stdin: the child reads end-of-file.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shared.close_stdin();
        Poll::Ready(Ok(()))
    }
}

fn closed_error() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the child's stdin is closed")
}

impl AsyncRead for Stream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.write).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.write).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_shutdown(cx)
    }
}
