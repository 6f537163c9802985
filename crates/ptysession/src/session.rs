//! [`Session`]: a command under a pseudo-terminal, its scrollback, its
//! attached clients and the three tasks that run it (output reader, input
//! writer, lifecycle supervisor).
//!
//! Locks: `inner` (scrollback, clients, size, lifecycle), then a client
//! queue's lock or the screen model's work queue (see
//! `screen::worker`). `input_gate` (who may write input to the terminal
//! now: the task that has it, or the writer task with what is queued) is
//! taken alone.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use seqring::Ring;
use tokio::io::unix::AsyncFd;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::attach::{Attachment, ClientId};
use crate::child::Child;
use crate::queue::{ClientQueue, End, OnLag, Pushed};
#[cfg(feature = "screen")]
use crate::screen::{Kind, worker::Feed};
use crate::stats::Counters;
use crate::{
    CloseReason, DetachReason, Error, ExitStatus, Options, ResizePolicy, State, Stats, WindowSize, boundary, pty,
};

/// How many input chunks may wait for the terminal before writers wait.
const INPUT_QUEUE_CHUNKS: usize = 64;

/// A command running under a pseudo-terminal, with a scrollback and any
/// number of attached clients.
///
/// `Session` is a cheap handle (`Clone`); the session runs on its own tasks
/// whether or not any handle exists, until it closes: on
/// [`close`](Self::close), on a timeout, or after the command exits and the
/// linger time passes (see [`Options`]).
///
/// See the [crate documentation](crate) for an example.
#[derive(Debug, Clone)]
pub struct Session {
    shared: Arc<Shared>,
}

/// A snapshot of a session for listings, from [`Session::info`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The lifecycle state.
    pub state: State,
    /// The process id of the command (the leader of its process group).
    pub pid: u32,
    /// The command line, for display.
    pub command: String,
    /// The number of clients attached.
    pub clients: usize,
    /// When the session started, as wall-clock time.
    pub started_at: SystemTime,
    /// How long ago the session started.
    pub age: Duration,
    /// The terminal's window size.
    pub size: WindowSize,
    /// How the command ended, once it has and its output is complete.
    pub exit_status: Option<ExitStatus>,
    /// Why the session closed, once it is closing.
    pub close_reason: Option<CloseReason>,
}

/// State shared by the handles and the tasks of one session.
#[derive(Debug)]
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    state: watch::Sender<State>,
    exit: watch::Sender<Option<ExitStatus>>,
    /// Wakes the supervisor to recompute its deadline.
    wake: Notify,
    input: mpsc::Sender<Bytes>,
    /// Who may write input to the terminal now; see [`Shared::send_input`].
    input_gate: Mutex<InputGate>,
    pub(crate) counters: Counters,
    options: Options,
    /// The screen model; see [`crate::screen::worker`] for how it keeps
    /// step with the clients.
    /// `None` when [`Options::screen_model`] turned it off.
    #[cfg(feature = "screen")]
    screen: Option<Arc<Feed>>,
    /// The session's span (its id, when a manager named it, and the pid):
    /// its tasks run in it, so that every line it logs says whose it is.
    span: tracing::Span,
    pid: u32,
    command: String,
    started_at: SystemTime,
    started: Instant,
}

/// Input's way to the terminal: written at once by the task that has it
/// when nothing is queued ahead of it, else queued for the writer task.
#[derive(Debug)]
struct InputGate {
    /// Chunks queued for the writer task and not yet written by it.
    queued: usize,
    /// The terminal, until the session stops taking input.
    master: Option<Arc<AsyncFd<OwnedFd>>>,
}

#[derive(Debug)]
struct Inner {
    ring: Ring,
    clients: Vec<Client>,
    next_client: u64,
    ever_attached: bool,
    last_detach: Option<Instant>,
    size: WindowSize,
    /// Size requests so far, for [`Client::size_stamp`].
    size_requests: u64,
    /// The terminal; taken when the session is done so that it closes.
    master: Option<Arc<AsyncFd<OwnedFd>>>,
    /// Set once the command exited *and* its output ended.
    exit_status: Option<ExitStatus>,
    exited_at: Option<Instant>,
    close_requested: bool,
    /// Set when closing begins; no client attaches after it.
    close_reason: Option<CloseReason>,
}

#[derive(Debug)]
struct Client {
    id: ClientId,
    queue: Arc<ClientQueue>,
    size: Option<WindowSize>,
    /// When this client last gave a size (a count of size requests), for
    /// [`ResizePolicy::MostRecent`] when the latest requester leaves.
    size_stamp: u64,
    on_lag: OnLag,
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Session {
    /// Starts `command` under a new pseudo-terminal and returns its session,
    /// in the [`State::Ready`] state.
    ///
    /// The command becomes a session leader with the terminal as its
    /// controlling terminal and standard input, output and error. `TERM` is
    /// set to `xterm-256color` unless the command sets it, and `LC_CTYPE` to
    /// `C.UTF-8` when neither the command nor this process's environment
    /// selects a UTF-8 locale (and `LC_ALL` is unset). The command must not
    /// have its own `pre_exec` hook calling `setsid` or `process_group`.
    ///
    /// # Errors
    ///
    /// [`Error::Pty`] when the terminal cannot be opened or set up,
    /// [`Error::Spawn`] when the command cannot be started.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with I/O and time enabled.
    pub fn spawn(command: Command, options: Options) -> Result<Session, Error> {
        Self::spawn_named(command, options, None)
    }

    /// [`spawn`](Self::spawn) for a session named `id` (by a
    /// [`SessionManager`](crate::SessionManager)), whose logs carry the id.
    pub(crate) fn spawn_named(mut command: Command, options: Options, id: Option<&str>) -> Result<Session, Error> {
        let span = tracing::info_span!("session", id = tracing::field::Empty, pid = tracing::field::Empty);
        if let Some(id) = id {
            span.record("id", tracing::field::display(id));
        }
        // Entered while the command starts, so that childproc's span of the
        // command (and every line about it) is a child of this one.
        let _entered = span.enter();
        let pty_error = |op| move |source| Error::Pty { op, source };
        #[cfg(feature = "screen")]
        let screen = match options.screen_model {
            true => Some(
                Feed::start(options.initial_size, options.history_lines, options.screen_backlog_bytes)
                    .map_err(pty_error("starting the screen model's thread"))?,
            ),
            false => None,
        };
        let pair = pty::open(options.initial_size).map_err(pty_error("opening the terminal"))?;
        let master = Arc::new(pty::register(pair.master).map_err(pty_error("registering the terminal"))?);
        let duplicate = || pair.slave.try_clone().map_err(pty_error("duplicating the terminal"));
        let controlling = duplicate()?;
        command.stdin(Stdio::from(duplicate()?)).stdout(Stdio::from(duplicate()?)).stderr(Stdio::from(pair.slave));
        set_terminal_environment(&mut command);
        // SAFETY: the hook runs in the forked child before exec and only makes
        // two system calls (`setsid`, `ioctl(TIOCSCTTY)`), both async-signal-
        // safe; it allocates nothing and touches no lock.
        unsafe {
            command.pre_exec(move || {
                rustix::process::setsid()?;
                rustix::process::ioctl_tiocsctty(&controlling)?;
                Ok(())
            });
        }
        let description = describe(&command);
        // The command, and with it every copy of the slave, is dropped by the
        // spawn: from then on only the child holds the terminal, so the end
        // of its output is seen.
        let child = Child::spawn(command, options.kill_timeout)?;
        span.record("pid", child.pid());

        let (input, input_rx) = mpsc::channel(INPUT_QUEUE_CHUNKS);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                ring: Ring::with_capacity(options.scrollback_bytes),
                clients: Vec::new(),
                next_client: 0,
                ever_attached: false,
                last_detach: None,
                size: options.initial_size,
                size_requests: 0,
                master: Some(master.clone()),
                exit_status: None,
                exited_at: None,
                close_requested: false,
                close_reason: None,
            }),
            state: watch::Sender::new(State::Starting),
            exit: watch::Sender::new(None),
            wake: Notify::new(),
            input,
            input_gate: Mutex::new(InputGate { queued: 0, master: Some(master.clone()) }),
            counters: Counters::default(),
            options,
            #[cfg(feature = "screen")]
            screen,
            span: span.clone(),
            pid: child.pid(),
            command: description,
            started_at: SystemTime::now(),
            started: Instant::now(),
        });
        let (exited_tx, exited_rx) = watch::channel(false);
        let (stop_tx, stop_rx) = watch::channel(false);
        let reader = tokio::spawn(read_output(shared.clone(), master.clone(), exited_rx).instrument(span.clone()));
        let writer = tokio::spawn(write_input(shared.clone(), master, input_rx, stop_rx).instrument(span.clone()));
        let tasks = Tasks { reader, writer, exited: exited_tx, stop: stop_tx };
        tokio::spawn(supervise(shared.clone(), child, tasks).instrument(span.clone()));
        tracing::debug!(command = %shared.command, "session started");
        shared.state.send_replace(State::Ready);
        Ok(Session { shared })
    }

    /// Attaches a new client, with its window size if it has one, and
    /// gives it the raw scrollback.
    ///
    /// The returned [`Attachment`] holds the replay (the scrollback from a
    /// clean boundary: never inside a UTF-8 sequence or an escape sequence;
    /// see [`Attachment::replay`]) and then yields the live output that
    /// follows it, with no gap and no duplicate, then the exit status. A
    /// client attaching after the command exited (within the linger time)
    /// gets the replay and the exit status. A client that falls further
    /// behind than [`Options::client_queue_bytes`] is detached with
    /// [`DetachReason::Lagged`](crate::DetachReason::Lagged).
    ///
    /// This is for consumers that run their own terminal emulator on the
    /// byte stream; a terminal shown to a person is better served by
    /// `attach_screen` (feature `screen`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] once the session is closing. [`Error::Resize`] when
    /// `size` cannot be applied (the client is not attached then).
    pub fn attach(&self, size: Option<WindowSize>) -> Result<Attachment, Error> {
        self.attach_as(size, Restore::Raw)
    }

    /// Attaches a new client, with its window size if it has one, and
    /// restores the screen: the first event is an
    /// [`Event::Repaint`](crate::Event::Repaint) synthesised from the
    /// session's screen model (history lines into the terminal's
    /// scrollback, the screen with its colours and attributes, the cursor,
    /// the alternate screen, the input modes and the title; never a
    /// terminal query), then the live output continues exactly after it.
    ///
    /// The size policy is applied first, so the repaint is drawn at the
    /// size the terminal has from then on; a client whose window is larger
    /// than the session's (with [`ResizePolicy::Smallest`]) sees the screen
    /// in its top-left corner. A client that falls behind by more than
    /// [`Options::client_queue_bytes`] is not detached: its backlog is
    /// dropped and it gets a fresh repaint ([`Stats::resyncs`]). The raw
    /// scrollback is still in [`Attachment::replay`], unused.
    ///
    /// The repaint is rendered by the screen model's thread once it has
    /// applied all output up to this point (at most
    /// [`Options::screen_backlog_bytes`]); the session never waits for it.
    /// A session started without a screen model
    /// ([`Options::screen_model`]) attaches the client as
    /// [`attach`](Self::attach) does ([`Attachment::restores_screen`] is
    /// `false`).
    ///
    /// # Errors
    ///
    /// As [`attach`](Self::attach).
    #[cfg(feature = "screen")]
    pub fn attach_screen(&self, size: Option<WindowSize>) -> Result<Attachment, Error> {
        self.attach_as(size, Restore::Screen)
    }

    /// The session's screen as it is after the output so far: its lines
    /// as text, each ended by a newline and without trailing blanks,
    /// after up to [`CaptureOptions::history_lines`](crate::CaptureOptions::history_lines) lines of history;
    /// with [`CaptureOptions::escapes`](crate::CaptureOptions::escapes), the colours and attributes as
    /// escape sequences. The alternate screen, when a program shows it, is
    /// the screen (it has no history). Nothing attaches: the size policy
    /// and the clients are left alone.
    ///
    /// The text is rendered by the screen model's thread once it has
    /// applied all output read before the call, so it is consistent with
    /// what an attaching client would be shown at that point.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), ptysession::Error> {
    /// use ptysession::{CaptureOptions, Options, Session};
    /// use std::process::Command;
    ///
    /// let session = Session::spawn(Command::new("top"), Options::new())?;
    /// let screen = session.capture(CaptureOptions::new()).await?;
    /// println!("{screen}");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::NoScreenModel`] when the session was started without one
    /// ([`Options::screen_model`]); [`Error::Closed`] once the session is
    /// done.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future abandons the capture.
    #[cfg(feature = "screen")]
    pub async fn capture(&self, options: crate::CaptureOptions) -> Result<String, Error> {
        let shared = &self.shared;
        let Some(screen) = &shared.screen else { return Err(Error::NoScreenModel) };
        let answer = {
            // Under the session's lock, so that the capture enters the
            // model's work queue after exactly the output read so far.
            let _inner = lock(&shared.inner);
            screen.push_capture(options.history_lines, options.escapes)
        };
        answer.ok_or(Error::Closed)?.await.map_err(|_| Error::Closed)
    }

    fn attach_as(&self, size: Option<WindowSize>, restore: Restore) -> Result<Attachment, Error> {
        let shared = &self.shared;
        #[cfg(feature = "screen")]
        let restore = if shared.screen.is_some() { restore } else { Restore::Raw };
        let mut inner = lock(&shared.inner);
        if inner.close_reason.is_some() {
            return Err(Error::Closed);
        }
        let id = ClientId(inner.next_client);
        inner.next_client += 1;
        let queue = Arc::new(ClientQueue::default());
        let on_lag = match restore {
            Restore::Raw => OnLag::Detach,
            #[cfg(feature = "screen")]
            Restore::Screen => OnLag::Resync,
        };
        if inner.exit_status.is_none() {
            inner.size_requests += 1;
            let size_stamp = inner.size_requests;
            inner.clients.push(Client { id, queue: queue.clone(), size, size_stamp, on_lag });
            if let Some(size) = size
                && let Err(err) = shared.apply_size(&mut inner, size)
            {
                inner.clients.pop();
                return Err(err);
            }
        }
        // After the size is applied, so that the screen is drawn at it.
        let (replay, replay_seq) = raw_replay(&inner.ring);
        #[cfg(feature = "screen")]
        if restore == Restore::Screen {
            let generation = queue.await_repaint();
            let rows = usize::from(size.unwrap_or(inner.size).rows.max(1));
            if let Some(screen) = &shared.screen {
                screen.push_repaint(queue.clone(), generation, Kind::Attach { rows });
            }
        }
        if let Some(status) = inner.exit_status {
            queue.close(End::Exited(status));
        }
        inner.ever_attached = true;
        drop(inner);
        Counters::add(&shared.counters.attaches, 1);
        shared.wake.notify_one();
        #[cfg(feature = "screen")]
        let restores_screen = restore == Restore::Screen;
        #[cfg(not(feature = "screen"))]
        let restores_screen = false;
        Ok(Attachment::new(shared.clone(), id, queue, replay, replay_seq, restores_screen))
    }

    /// The current lifecycle state.
    ///
    /// ```no_run
    /// # fn example(session: ptysession::Session) {
    /// if session.state() >= ptysession::State::Closing {
    ///     println!("gone");
    /// }
    /// # }
    /// ```
    pub fn state(&self) -> State {
        *self.shared.state.borrow()
    }

    /// A receiver that sees every state change (states never move
    /// backwards).
    ///
    /// ```no_run
    /// # async fn example(session: ptysession::Session) {
    /// let mut states = session.watch_state();
    /// let _ = states.wait_for(|state| *state == ptysession::State::Done).await;
    /// # }
    /// ```
    pub fn watch_state(&self) -> watch::Receiver<State> {
        self.shared.state.subscribe()
    }

    /// Waits until the command has exited and all its output has been read,
    /// and returns its status; `None` if the session finished without one
    /// (its command could not be waited for).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes.
    pub async fn wait(&self) -> Option<ExitStatus> {
        let mut exit = self.shared.exit.subscribe();
        let mut state = self.shared.state.subscribe();
        tokio::select! {
            status = exit.wait_for(Option::is_some) => status.ok().and_then(|status| *status),
            _ = state.wait_for(|state| *state == State::Done) => *self.shared.exit.borrow(),
        }
    }

    /// The command's exit status, once it has exited and its output ended.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        *self.shared.exit.borrow()
    }

    /// Closes the session and waits until it is [`State::Done`]: a command
    /// still running has its whole process group hung up (`SIGHUP`, then
    /// `SIGKILL` after the kill timeout) and is reaped, attached clients get
    /// the exit status (or are detached), every descriptor is closed and
    /// every task ended. Closing a closed session just waits.
    ///
    /// # Cancel safety
    ///
    /// The close is requested when the future is first polled; dropping it
    /// afterwards does not stop the close, only the waiting.
    pub async fn close(&self) {
        self.request_close();
        let mut state = self.shared.state.subscribe();
        let _ = state.wait_for(|state| *state == State::Done).await;
    }

    /// Asks the session to close without waiting; see [`close`](Self::close).
    pub fn request_close(&self) {
        lock(&self.shared.inner).close_requested = true;
        self.shared.wake.notify_one();
    }

    /// Counters of the session's activity.
    pub fn stats(&self) -> Stats {
        let clients = lock(&self.shared.inner).clients.len();
        self.shared.counters.snapshot(clients)
    }

    /// The process id of the command.
    pub fn pid(&self) -> u32 {
        self.shared.pid
    }

    /// The number of clients attached.
    pub fn clients(&self) -> usize {
        lock(&self.shared.inner).clients.len()
    }

    /// The terminal's window size.
    pub fn size(&self) -> WindowSize {
        lock(&self.shared.inner).size
    }

    /// A snapshot of the session for listings.
    pub fn info(&self) -> SessionInfo {
        let inner = lock(&self.shared.inner);
        SessionInfo {
            state: self.state(),
            pid: self.shared.pid,
            command: self.shared.command.clone(),
            clients: inner.clients.len(),
            started_at: self.shared.started_at,
            age: self.shared.started.elapsed(),
            size: inner.size,
            exit_status: inner.exit_status,
            close_reason: inner.close_reason,
        }
    }

    /// Whether two handles refer to the same session.
    pub(crate) fn same(&self, other: &Session) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// The session's span, for tasks that work for it.
    pub(crate) fn span(&self) -> tracing::Span {
        self.shared.span.clone()
    }
}

impl Shared {
    /// Queues a repaint of the screen at this point of the output for
    /// client `id`, after the output it has queued.
    #[cfg(feature = "screen")]
    pub(crate) fn request_repaint(&self, id: ClientId) -> Result<(), Error> {
        let Some(screen) = &self.screen else { return Err(Error::NoScreenModel) };
        // Under the session's lock: the request enters the model's work
        // queue exactly where the client's queue now starts.
        let inner = lock(&self.inner);
        let Some(client) = inner.clients.iter().find(|client| client.id == id) else { return Err(Error::Detached) };
        if let Some(generation) = client.queue.repaint_after_queued().map_err(|()| Error::Detached)? {
            screen.push_repaint(client.queue.clone(), generation, Kind::Resync);
        }
        drop(inner);
        tracing::debug!(client = %id, "a client asked for a repaint");
        Ok(())
    }

    /// Records `size` as client `id`'s and applies the policy.
    pub(crate) fn resize_client(&self, id: ClientId, size: WindowSize) -> Result<(), Error> {
        let mut inner = lock(&self.inner);
        inner.size_requests += 1;
        let stamp = inner.size_requests;
        let Some(client) = inner.clients.iter_mut().find(|client| client.id == id) else {
            return Err(if inner.close_reason.is_some() { Error::Closed } else { Error::Detached });
        };
        client.size = Some(size);
        client.size_stamp = stamp;
        self.apply_size(&mut inner, size)
    }

    /// Sets the terminal's size for a request of `requested`, following the
    /// resize policy (the requester is already in `inner.clients`).
    fn apply_size(&self, inner: &mut Inner, requested: WindowSize) -> Result<(), Error> {
        let size = match self.options.resize_policy {
            ResizePolicy::MostRecent => requested,
            _ => smallest(&inner.clients).unwrap_or(requested),
        };
        self.set_size(inner, size)
    }

    fn set_size(&self, inner: &mut Inner, size: WindowSize) -> Result<(), Error> {
        if size == inner.size {
            return Ok(());
        }
        let Some(master) = &inner.master else { return Err(Error::Closed) };
        match pty::set_size(master.as_ref(), size) {
            Ok(()) => {
                inner.size = size;
                #[cfg(feature = "screen")]
                if let Some(screen) = &self.screen {
                    screen.push_resize(size);
                }
                Counters::add(&self.counters.resizes, 1);
                Ok(())
            }
            Err(err) => {
                Counters::add(&self.counters.resize_errors, 1);
                Err(Error::Resize(err))
            }
        }
    }

    /// Removes client `id` (it left).
    pub(crate) fn detach(&self, id: ClientId) {
        let mut inner = lock(&self.inner);
        if let Some(index) = inner.clients.iter().position(|client| client.id == id) {
            let client = inner.clients.swap_remove(index);
            client.queue.abandon();
            self.after_detach(&mut inner);
            drop(inner);
            self.wake.notify_one();
        }
    }

    /// Bookkeeping after clients left: the size policy is applied to the
    /// clients that remain.
    fn after_detach(&self, inner: &mut Inner) {
        inner.last_detach = Some(Instant::now());
        let size = match self.options.resize_policy {
            ResizePolicy::MostRecent => most_recent(&inner.clients),
            _ => smallest(&inner.clients),
        };
        if let Some(size) = size {
            // A refused size is counted; the terminal keeps the old one.
            let _ = self.set_size(inner, size);
        }
    }

    /// Appends a chunk of output to the scrollback and every client's queue.
    fn publish(&self, chunk: Bytes) {
        Counters::add(&self.counters.bytes_out, chunk.len() as u64);
        let limit = self.options.client_queue_bytes;
        let mut inner = lock(&self.inner);
        inner.ring.write(&chunk);
        #[cfg(feature = "screen")]
        if let Some(screen) = &self.screen {
            screen.push_output(chunk.clone());
        }
        let before = inner.clients.len();
        inner.clients.retain(|client| match client.queue.push(chunk.clone(), limit, client.on_lag) {
            Pushed::Queued => true,
            Pushed::Ended => false,
            #[cfg(feature = "screen")]
            Pushed::Resync(generation) => {
                if let Some(screen) = &self.screen {
                    screen.push_repaint(client.queue.clone(), generation, Kind::Resync);
                }
                Counters::add(&self.counters.resyncs, 1);
                tracing::debug!(client = %client.id, "a client that fell behind gets a repaint");
                true
            }
            #[cfg(not(feature = "screen"))]
            Pushed::Resync(_) => unreachable!("clients resynchronise only with the screen model"),
        });
        let lagged = before - inner.clients.len();
        if lagged > 0 {
            Counters::add(&self.counters.clients_lagged, lagged as u64);
            self.after_detach(&mut inner);
            drop(inner);
            tracing::debug!(lagged, "clients detached for falling behind");
            self.wake.notify_one();
        }
    }

    /// The command exited and its output ended: every client gets the
    /// status after its last byte, and later clients get it after the
    /// replay.
    fn deliver_exit(&self, status: ExitStatus) {
        let mut inner = lock(&self.inner);
        if inner.exit_status.is_some() {
            return;
        }
        inner.exit_status = Some(status);
        inner.exited_at = Some(Instant::now());
        // Published before any client hears of it, so that a client that
        // has seen the status finds it in `Session::exit_status` too.
        self.exit.send_replace(Some(status));
        for client in inner.clients.drain(..) {
            client.queue.close(End::Exited(status));
        }
        drop(inner);
        tracing::debug!(%status, "command exited");
    }

    /// When the supervisor must act next without being woken, and why.
    fn deadline(&self) -> Option<(Instant, CloseReason)> {
        let inner = lock(&self.inner);
        let options = &self.options;
        if inner.close_requested {
            return Some((Instant::now(), CloseReason::Requested));
        }
        if let Some(exited_at) = inner.exited_at {
            return Some((exited_at + options.linger, CloseReason::Exited));
        }
        if !inner.clients.is_empty() {
            return None;
        }
        match inner.last_detach {
            _ if !inner.ever_attached => {
                options.first_attach_timeout.map(|timeout| (self.started + timeout, CloseReason::FirstAttachTimeout))
            }
            Some(left) => options.inactivity_timeout.map(|timeout| (left + timeout, CloseReason::InactivityTimeout)),
            None => None,
        }
    }

    /// Writes one chunk of input, whole, before any other.
    ///
    /// With nothing queued ahead, the chunk is written here and now (a
    /// keystroke reaches the terminal without waking another task); what
    /// the terminal does not take at once is queued for the writer task,
    /// ahead of anything else.
    pub(crate) async fn send_input(&self, chunk: Bytes) -> Result<(), Error> {
        if chunk.is_empty() {
            return Ok(());
        }
        let Some(chunk) = self.write_input_now(chunk)? else { return Ok(()) };
        let permit = self.input.reserve().await.map_err(|_| Error::Closed)?;
        self.input_gate().queued += 1;
        permit.send(chunk);
        Ok(())
    }

    /// Queues one chunk of input if there is room now.
    pub(crate) fn try_send_input(&self, chunk: Bytes) -> Result<bool, Error> {
        if chunk.is_empty() {
            return Ok(true);
        }
        let Some(chunk) = self.write_input_now(chunk)? else { return Ok(true) };
        let mut gate = self.input_gate();
        match self.input.try_send(chunk) {
            Ok(()) => {
                gate.queued += 1;
                Ok(true)
            }
            Err(mpsc::error::TrySendError::Full(_)) => Ok(false),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Error::Closed),
        }
    }

    fn input_gate(&self) -> MutexGuard<'_, InputGate> {
        self.input_gate.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `chunk` to the terminal now if nothing is queued ahead of it.
    /// Returns what is left for the queue: the whole chunk when others are
    /// ahead or the terminal takes nothing, `None` when it is written.
    /// What the terminal takes only in part is queued here, under the
    /// gate, so that nothing can come between its two parts.
    fn write_input_now(&self, chunk: Bytes) -> Result<Option<Bytes>, Error> {
        let mut gate = self.input_gate();
        if gate.queued > 0 {
            return Ok(Some(chunk));
        }
        let Some(master) = gate.master.as_ref() else { return Err(Error::Closed) };
        let written = match pty::write_now(master.get_ref(), &chunk) {
            Ok(written) => written,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return Ok(Some(chunk)),
            Err(err) => {
                Counters::add(&self.counters.write_errors, 1);
                tracing::debug!(error = %err, "writing input to the terminal failed");
                return Ok(None);
            }
        };
        Counters::add(&self.counters.bytes_in, written as u64);
        if written == chunk.len() {
            return Ok(None);
        }
        // The rest goes first: nothing is queued, so there is room.
        match self.input.try_send(chunk.slice(written..)) {
            Ok(()) => {
                gate.queued += 1;
                Ok(None)
            }
            Err(mpsc::error::TrySendError::Full(rest) | mpsc::error::TrySendError::Closed(rest)) => {
                tracing::debug!(lost = rest.len(), "the terminal stopped taking input");
                Err(Error::Closed)
            }
        }
    }

    /// The writer task is done with one queued chunk.
    fn input_written(&self) {
        let mut gate = self.input_gate();
        gate.queued = gate.queued.saturating_sub(1);
    }

    /// The session takes no more input: the terminal is let go.
    fn stop_input(&self) {
        self.input_gate().master = None;
    }
}

/// The size of the client that asked for one last.
fn most_recent(clients: &[Client]) -> Option<WindowSize> {
    clients.iter().filter(|client| client.size.is_some()).max_by_key(|client| client.size_stamp)?.size
}

/// The raw scrollback from a clean boundary, and the sequence number of
/// its first byte.
fn raw_replay(ring: &Ring) -> (Bytes, u64) {
    let start_seq = ring.start();
    let (first, second) = ring.slices_from(start_seq).unwrap_or_default();
    let offset = boundary::clean_start(first, second, start_seq == 0);
    let mut replay = BytesMut::with_capacity(first.len() + second.len() - offset);
    if offset < first.len() {
        replay.extend_from_slice(&first[offset..]);
        replay.extend_from_slice(second);
    } else {
        replay.extend_from_slice(&second[offset - first.len()..]);
    }
    (replay.freeze(), start_seq + offset as u64)
}

/// What a client gets on attaching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restore {
    /// The raw scrollback; detached when it lags.
    Raw,
    /// A repaint from the screen model; resynchronised when it lags.
    #[cfg(feature = "screen")]
    Screen,
}

/// The smallest size over the clients that gave one.
fn smallest(clients: &[Client]) -> Option<WindowSize> {
    clients
        .iter()
        .filter_map(|client| client.size)
        .reduce(|a, b| WindowSize::new(a.rows.min(b.rows), a.cols.min(b.cols)))
}

/// `TERM` and a UTF-8 `LC_CTYPE`, unless the command or the environment
/// already say otherwise.
fn set_terminal_environment(command: &mut Command) {
    let explicit = |name: &str| {
        command.get_envs().find(|(key, _)| *key == OsStr::new(name)).map(|(_, value)| value.map(OsStr::to_owned))
    };
    let effective = |name: &str| explicit(name).unwrap_or_else(|| std::env::var_os(name)).filter(|v| !v.is_empty());
    let term_set = explicit("TERM").flatten().is_some_and(|value| !value.is_empty());
    let lc_all = effective("LC_ALL");
    let locale = lc_all.clone().or_else(|| effective("LC_CTYPE")).or_else(|| effective("LANG"));
    let utf8 = locale.is_some_and(|locale| {
        let locale = locale.to_string_lossy().to_ascii_lowercase();
        locale.contains("utf-8") || locale.contains("utf8")
    });
    if !term_set {
        command.env("TERM", "xterm-256color");
    }
    if !utf8 && lc_all.is_none() {
        command.env("LC_CTYPE", "C.UTF-8");
    }
}

/// The command line, for display.
fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(feature = "screen")]
impl Drop for Shared {
    /// The screen model's thread stops with the session, also when the
    /// runtime went away before the supervisor could close it.
    fn drop(&mut self) {
        if let Some(screen) = &self.screen {
            screen.close();
        }
    }
}

/// The handles the supervisor uses to end the other two tasks.
#[derive(Debug)]
struct Tasks {
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
    /// Tells the reader that the command exited (start the drain timeout).
    exited: watch::Sender<bool>,
    /// Tells the writer to stop.
    stop: watch::Sender<bool>,
}

/// Reads the terminal until the end of output: `EIO` once every copy of the
/// slave is closed, or, after the command exited, no output for the drain
/// timeout.
async fn read_output(shared: Arc<Shared>, master: Arc<AsyncFd<OwnedFd>>, mut exited: watch::Receiver<bool>) {
    let drain = shared.options.exit_drain_timeout;
    let mut buf = BytesMut::new();
    let mut command_exited = false;
    loop {
        let outcome = if command_exited {
            match tokio::time::timeout(drain, pty::read_into(&master, &mut buf)).await {
                Ok(outcome) => outcome,
                // Quiet for the whole drain time: one last look, then stop.
                Err(_elapsed) => match pty::read_now(master.get_ref(), &mut buf) {
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                    outcome => outcome,
                },
            }
        } else {
            tokio::select! {
                outcome = pty::read_into(&master, &mut buf) => outcome,
                changed = exited.changed() => {
                    command_exited = changed.is_err() || *exited.borrow_and_update();
                    continue;
                }
            }
        };
        let mut ended = match outcome {
            Ok(pty::ReadOutcome::Data) => false,
            Ok(pty::ReadOutcome::End) => true,
            Err(err) => {
                read_failed(&shared, &err);
                true
            }
        };
        // Take what else is ready right now into the same buffer (never
        // growing it, which would copy), so that a fast command's output is
        // published, queued and woken for in chunks of up to a buffer rather
        // than of one terminal read.
        while !ended && pty::has_read_space(&buf) {
            match pty::read_now(master.get_ref(), &mut buf) {
                Ok(pty::ReadOutcome::Data) => {}
                Ok(pty::ReadOutcome::End) => ended = true,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(err) => {
                    read_failed(&shared, &err);
                    ended = true;
                }
            }
        }
        if !buf.is_empty() {
            shared.publish(buf.split().freeze());
            #[cfg(feature = "screen")]
            if let Some(screen) = &shared.screen {
                // The clients this output woke run first; then the model
                // is woken for it (see `Feed::announce`).
                tokio::task::yield_now().await;
                screen.announce();
                // The only place the reader waits for the screen model:
                // when its backlog is full (sustained output), not for
                // bursts.
                screen.wait_for_room().await;
            }
        }
        if ended {
            break;
        }
        // Waiting for readiness costs no budget, so while the command
        // writes faster than this reads, nothing here would ever yield: a
        // client woken on this worker (in its slot that the other worker
        // cannot steal from) would fall behind by its whole queue. Take
        // part in the budget, as tokio's own readers do.
        tokio::task::coop::consume_budget().await;
    }
}

fn read_failed(shared: &Shared, err: &std::io::Error) {
    Counters::add(&shared.counters.read_errors, 1);
    tracing::warn!(error = %err, "reading the terminal failed; output ends");
}

/// Writes input chunks to the terminal one after the other, each whole.
async fn write_input(
    shared: Arc<Shared>,
    master: Arc<AsyncFd<OwnedFd>>,
    mut chunks: mpsc::Receiver<Bytes>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let chunk = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => break,
            chunk = chunks.recv() => match chunk {
                Some(chunk) => chunk,
                None => break,
            },
        };
        tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => break,
            written = pty::write_all(&master, &chunk) => match written {
                Ok(()) => Counters::add(&shared.counters.bytes_in, chunk.len() as u64),
                Err(err) => {
                    Counters::add(&shared.counters.write_errors, 1);
                    tracing::debug!(error = %err, "writing input to the terminal failed");
                }
            },
        }
        shared.input_written();
    }
}

/// Runs the lifecycle: waits for the command's exit, the end of its output,
/// timeouts and close requests; then closes everything in order.
async fn supervise(shared: Arc<Shared>, mut child: Child, mut tasks: Tasks) {
    let exit = child.exit_waiter();
    tokio::pin!(exit);
    let mut status: Option<Option<ExitStatus>> = None;
    let mut output_ended = false;
    let reason = loop {
        if let (Some(Some(exit_status)), true) = (status, output_ended) {
            shared.deliver_exit(exit_status);
        }
        let deadline = shared.deadline();
        if let Some((at, reason)) = deadline
            && at <= Instant::now()
        {
            break reason;
        }
        let sleep = async move {
            match deadline {
                Some((at, _)) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = &mut exit, if status.is_none() => {
                status = Some(result);
                let _ = tasks.exited.send(true);
            }
            _ = &mut tasks.reader, if !output_ended => output_ended = true,
            () = sleep => {}
            _ = shared.wake.notified() => {}
        }
    };

    // Closing: no client attaches from here on.
    lock(&shared.inner).close_reason = Some(reason);
    shared.state.send_replace(State::Closing);
    tracing::debug!(%reason, "session closing");
    let status = match status {
        Some(status) => status,
        None => child.kill().await,
    };
    let _ = tasks.exited.send(true);
    if !output_ended {
        let _ = (&mut tasks.reader).await;
    }
    match status {
        Some(status) => shared.deliver_exit(status),
        None => {
            let mut inner = lock(&shared.inner);
            for client in inner.clients.drain(..) {
                client.queue.close(End::Detached(DetachReason::Closed));
            }
        }
    }
    shared.stop_input();
    let _ = tasks.stop.send(true);
    let _ = tasks.writer.await;
    let master = lock(&shared.inner).master.take();
    drop(master);
    drop(child);
    #[cfg(feature = "screen")]
    if let Some(screen) = &shared.screen {
        screen.close();
    }
    shared.state.send_replace(State::Done);
    tracing::debug!("session done");
}
