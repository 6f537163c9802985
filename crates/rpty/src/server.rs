//! The server: [`Server`] keeps the sessions and answers one request per
//! connection over any byte stream; [`run`] is the `rpty serve` process
//! around it (lock, sockets, signals, exit when idle).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use backedpipe::server::Listener;
use backedpipe::{BackedPipe, PipeControl, PipeState};
use bytes::Bytes;
use ptysession::framing::{FrameSink, ServeOutcome, WriteSink};
use ptysession::{DetachReason, Session, SessionManager, State};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;

use crate::attached::{self, InputPolicy, Registry};
use crate::cli::with_causes;
use crate::direct;
use crate::paths::RuntimeDir;
use crate::protocol::{
    self, ClientHello, ErrorKind, Exit, LocalTerminal, NewSession, Request, Response, Restore, SessionEntry,
    SessionState, Size, VERSION,
};
use crate::secret;
use crate::transport;

/// How long a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the server waits for a client to end its side of a finished
/// connection (after an answer, or after the client left).
const FINISH_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a server started on demand waits for its first session.
const STARTUP_GRACE: Duration = Duration::from_secs(10);

/// How a [`Server`] runs its sessions. Built with chained setters from the
/// defaults:
///
/// ```
/// use std::time::Duration;
///
/// let options = rpty::ServerOptions::new()
///     .max_sessions(16)
///     .scrollback_bytes(1 << 20)
///     .client_queue_bytes(8 << 20)
///     .linger(Duration::from_secs(60))
///     .kill_timeout(Duration::from_secs(5));
/// let server = rpty::Server::new(options);
/// # drop(server);
/// ```
#[derive(Debug, Clone)]
pub struct ServerOptions {
    max_sessions: usize,
    scrollback_bytes: usize,
    client_queue_bytes: usize,
    linger: Duration,
    kill_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerOptions {
    /// The defaults: at most 256 sessions, 256 KiB of scrollback, 4 MiB per
    /// client queue, a 5 min linger after exit and a 2 s kill timeout.
    pub fn new() -> Self {
        ServerOptions {
            max_sessions: 256,
            scrollback_bytes: 256 * 1024,
            client_queue_bytes: 4 << 20,
            linger: Duration::from_secs(300),
            kill_timeout: Duration::from_secs(2),
        }
    }

    /// The most sessions at once. Default 256.
    pub fn max_sessions(mut self, max_sessions: usize) -> Self {
        self.max_sessions = max_sessions;
        self
    }

    /// Output kept per session and replayed on attach. Default 256 KiB.
    pub fn scrollback_bytes(mut self, bytes: usize) -> Self {
        self.scrollback_bytes = bytes;
        self
    }

    /// Output that may wait for one client, also while its connection is
    /// down; a client that misses more is detached as lagging and
    /// re-attaches to the scrollback. Default 4 MiB.
    pub fn client_queue_bytes(mut self, bytes: usize) -> Self {
        self.client_queue_bytes = bytes;
        self
    }

    /// How long a session whose command exited with no client attached
    /// stays, so that a later `attach` still shows its output and exit
    /// status. A session whose exit status reached an attached client ends
    /// at once. Default 5 min.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// After `SIGHUP` to a killed session's process group, how long before
    /// `SIGKILL`. Default 2 s.
    pub fn kill_timeout(mut self, timeout: Duration) -> Self {
        self.kill_timeout = timeout;
        self
    }
}

/// The sessions of one server, and the handling of client connections.
///
/// A cheap handle (`Clone`). See the [crate documentation](crate) for an
/// example.
#[derive(Debug, Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    manager: SessionManager,
    options: ServerOptions,
    connections: AtomicUsize,
    had_session: AtomicBool,
    /// Woken when a connection ends or a session is done.
    changed: Notify,
    /// The attached clients, and which session was used last.
    registry: Arc<Registry>,
}

/// Counts a connection while it is served.
struct Active<'a>(&'a Shared);

impl<'a> Active<'a> {
    fn new(shared: &'a Shared) -> Self {
        shared.connections.fetch_add(1, Ordering::SeqCst);
        Active(shared)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
    Response::Error { kind, message: message.into() }
}

impl Server {
    /// A server with no sessions.
    pub fn new(options: ServerOptions) -> Server {
        Server {
            shared: Arc::new(Shared {
                manager: SessionManager::new(options.max_sessions),
                options,
                connections: AtomicUsize::new(0),
                had_session: AtomicBool::new(false),
                changed: Notify::new(),
                registry: Arc::new(Registry::default()),
            }),
        }
    }

    /// The sessions that are not done.
    pub fn session_count(&self) -> usize {
        self.shared.manager.len()
    }

    /// The connections being served.
    pub fn connection_count(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Serves one client connection: reads its [`ClientHello`], answers,
    /// and for an attach carries the terminal until the client detaches,
    /// the session ends or the connection fails. Failures are logged, never
    /// returned: they concern that client only.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the connection; an attached client is
    /// detached.
    pub async fn serve_connection<C>(self, connection: C)
    where
        C: AsyncRead + AsyncWrite + Unpin + Send,
    {
        self.serve_with::<_, _, AnyStream>(connection, None, Some(FINISH_TIMEOUT), |_| {}).await;
    }

    /// As [`serve_connection`](Self::serve_connection); `link` is the pipe
    /// under `conn` (to list its client as disconnected while it is down),
    /// `on_hello` sees the hello first (for the resume window), and the end
    /// of the stream is waited for up to `finish_timeout` (`None`: until the
    /// client has it, for connections that something else closes when the
    /// client stays away).
    pub(crate) async fn serve_with<C, F, M>(
        self,
        mut conn: C,
        link: Option<PipeControl>,
        finish_timeout: Option<Duration>,
        on_hello: F,
    ) where
        C: AsyncRead + AsyncWrite + Unpin + Send,
        F: FnOnce(&ClientHello) + Send,
        M: Framing<C>,
    {
        let shared = &*self.shared;
        let _active = Active::new(shared);
        let hello =
            match tokio::time::timeout(REQUEST_TIMEOUT, protocol::read_message::<_, ClientHello>(&mut conn)).await {
                Ok(Ok(hello)) => hello,
                Ok(Err(err)) => {
                    tracing::info!(error = %err, "a client sent no usable request");
                    return;
                }
                Err(_) => {
                    tracing::info!("a client sent no request in time");
                    return;
                }
            };
        on_hello(&hello);
        if hello.version != VERSION {
            let message = format!(
                "this server speaks protocol version {VERSION} and the client version {}: use the same rpty on both sides",
                hello.version
            );
            let _ = protocol::write_message(&mut conn, &error(ErrorKind::Version, message)).await;
            return finish(conn, Some(FINISH_TIMEOUT)).await;
        }
        let terminal = hello.terminal;
        let response = match hello.request {
            Request::New(new) => {
                let attach = new.attach.then_some(new.size);
                let existing =
                    new.name.as_deref().filter(|_| new.attach_existing).and_then(|name| shared.manager.get(name));
                if let (Some(session), Some(size), Some(name)) = (existing, attach, new.name.clone()) {
                    let how = Attach {
                        size,
                        restore: Restore::Screen,
                        input: InputPolicy::Deliver,
                        detach_others: false,
                        clear_first: false,
                        terminal,
                    };
                    return self.attach_and_serve::<C, M>(name, session, how, conn, link, finish_timeout).await;
                }
                match (self.new_session(new), attach) {
                    // A new session has no past to restore: its raw output
                    // from the first byte is exact.
                    (Ok((name, session)), Some(size)) => {
                        let how = Attach {
                            size,
                            restore: Restore::Raw,
                            input: InputPolicy::Deliver,
                            detach_others: false,
                            clear_first: false,
                            terminal,
                        };
                        return self.attach_and_serve::<C, M>(name, session, how, conn, link, finish_timeout).await;
                    }
                    (Ok((name, _)), None) => Response::Created { name },
                    (Err(response), _) => response,
                }
            }
            Request::Attach { name, size, restore, read_only, detach_others, not } => {
                let input = if read_only { InputPolicy::Drop } else { InputPolicy::Deliver };
                // A raw replay of a session with a past starts on a clear
                // screen (a repaint draws the whole screen itself).
                let clear_first = restore == Restore::Raw;
                let how = Attach { size, restore, input, detach_others, clear_first, terminal };
                match self.find(name.as_deref(), not.as_deref()) {
                    Ok((name, session)) => {
                        return self.attach_and_serve::<C, M>(name, session, how, conn, link, finish_timeout).await;
                    }
                    Err(response) => response,
                }
            }
            Request::List => Response::Sessions { sessions: self.list() },
            Request::Kill { name } => match shared.manager.close(&name).await {
                Ok(()) => {
                    tracing::info!(name, "session killed");
                    Response::Killed { name }
                }
                Err(_) => error(ErrorKind::NotFound, format!("no session named {name:?}")),
            },
            Request::KillAll => {
                let names: Vec<String> = shared.manager.list().into_iter().map(|(name, _)| name).collect();
                shared.manager.close_all().await;
                tracing::info!(?names, "every session killed");
                Response::KilledAll { names }
            }
            Request::Rename { from, to } => self.rename(&from, &to),
            Request::Send { name, input } => self.send_input(&name, input).await,
            Request::Capture { name, history_lines, escapes } => self.capture(&name, history_lines, escapes).await,
        };
        if let Err(err) = protocol::write_message(&mut conn, &response).await {
            tracing::info!(error = %err, "answering a client failed");
        }
        finish(conn, Some(FINISH_TIMEOUT)).await;
    }

    /// Starts a session; returns its name and handle, or the answer that
    /// explains why not.
    fn new_session(&self, new: NewSession) -> Result<(String, Session), Response> {
        let shared = &*self.shared;
        if let Some(name) = &new.name
            && !protocol::valid_name(name)
        {
            return Err(error(
                ErrorKind::InvalidName,
                format!("{name:?} cannot name a session: use 1 to 64 letters, digits, '-', '_' or '.'"),
            ));
        }
        let size = new.size.map(ptysession::WindowSize::from).unwrap_or_default();
        let options = ptysession::Options::new()
            .scrollback_bytes(shared.options.scrollback_bytes)
            .client_queue_bytes(shared.options.client_queue_bytes)
            .initial_size(size)
            .first_attach_timeout(None)
            .inactivity_timeout(None)
            .linger(shared.options.linger)
            .kill_timeout(shared.options.kill_timeout);
        loop {
            let name = new.name.clone().unwrap_or_else(|| self.free_name());
            let command = build_command(&new, &name);
            match shared.manager.spawn(name.clone(), command, options.clone()) {
                Ok(session) => {
                    tracing::info!(name, command = %session.info().command, pid = session.pid(), "session started");
                    shared.had_session.store(true, Ordering::SeqCst);
                    self.shared.registry.touch(session.pid());
                    self.watch_session(session.clone());
                    return Ok((name, session));
                }
                // Another client took the free name first: pick again.
                Err(ptysession::Error::AlreadyExists { .. }) if new.name.is_none() => continue,
                Err(ptysession::Error::AlreadyExists { id }) => {
                    return Err(error(
                        ErrorKind::AlreadyExists,
                        format!("a session named {id:?} already exists (attach with: rpty attach {id})"),
                    ));
                }
                Err(ptysession::Error::TooManySessions { limit }) => {
                    return Err(error(ErrorKind::TooManySessions, format!("too many sessions (the limit is {limit})")));
                }
                Err(ptysession::Error::Spawn(err)) => {
                    return Err(error(ErrorKind::SpawnFailed, with_causes(&err)));
                }
                Err(err) => {
                    return Err(error(ErrorKind::Other, format!("cannot start the session: {}", with_causes(&err))));
                }
            }
        }
    }

    /// The lowest number that names no session.
    fn free_name(&self) -> String {
        (0u64..).map(|n| n.to_string()).find(|name| self.shared.manager.get(name).is_none()).unwrap_or_default()
    }

    /// Wakes the idle check when the session is done.
    fn watch_session(&self, session: Session) {
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let mut state = session.watch_state();
            let _ = state.wait_for(|state| *state == State::Done).await;
            shared.registry.forget(session.pid());
            shared.changed.notify_waiters();
        });
    }

    /// The session named `name`, or the most recently used one that is not
    /// named `not`.
    fn find(&self, name: Option<&str>, not: Option<&str>) -> Result<(String, Session), Response> {
        let manager = &self.shared.manager;
        match name {
            Some(name) => match manager.get(name) {
                Some(session) => Ok((name.to_owned(), session)),
                None => Err(error(ErrorKind::NotFound, format!("no session named {name:?}"))),
            },
            None => {
                let mut sessions = manager.list();
                sessions.retain(|(name, _)| Some(name.as_str()) != not);
                let recent = self.shared.registry.most_recent(sessions.iter().map(|(_, info)| info.pid));
                recent
                    .and_then(|pid| sessions.into_iter().find(|(_, info)| info.pid == pid))
                    .and_then(|(name, _)| manager.get(&name).map(|session| (name, session)))
                    .ok_or_else(|| {
                        error(ErrorKind::NotFound, "there is no session to attach to (start one with: rpty new)")
                    })
            }
        }
    }

    fn rename(&self, from: &str, to: &str) -> Response {
        if !protocol::valid_name(to) {
            return error(
                ErrorKind::InvalidName,
                format!("{to:?} cannot name a session: use 1 to 64 letters, digits, '-', '_' or '.'"),
            );
        }
        match self.shared.manager.rename(from, to) {
            Ok(()) => {
                tracing::info!(from, to, "session renamed");
                Response::Renamed { name: to.to_owned() }
            }
            Err(ptysession::Error::AlreadyExists { id }) => {
                error(ErrorKind::AlreadyExists, format!("a session named {id:?} already exists"))
            }
            Err(_) => error(ErrorKind::NotFound, format!("no session named {from:?}")),
        }
    }

    /// Writes `input` to the session as a short-lived client that shows
    /// nothing.
    async fn send_input(&self, name: &str, input: Vec<u8>) -> Response {
        let not_found = || error(ErrorKind::NotFound, format!("no session named {name:?}"));
        let Some(session) = self.shared.manager.get(name) else { return not_found() };
        if session.exit_status().is_some() {
            return error(ErrorKind::Other, format!("session {name:?} has exited: it takes no more input"));
        }
        let bytes = input.len();
        let written = match session.attach(None) {
            Ok(attachment) => attachment.write(input).await,
            Err(err) => Err(err),
        };
        match written {
            Ok(()) => Response::Sent { bytes },
            Err(ptysession::Error::Closed) => not_found(),
            Err(err) => error(ErrorKind::Other, format!("cannot write to {name:?}: {}", with_causes(&err))),
        }
    }

    /// The session's screen as text, from its screen model.
    async fn capture(&self, name: &str, history_lines: usize, escapes: bool) -> Response {
        let not_found = || error(ErrorKind::NotFound, format!("no session named {name:?}"));
        let Some(session) = self.shared.manager.get(name) else { return not_found() };
        let options = ptysession::CaptureOptions::new().history_lines(history_lines).escapes(escapes);
        match session.capture(options).await {
            Ok(text) => Response::Captured { text: fit_message(text) },
            Err(ptysession::Error::Closed) => not_found(),
            Err(err) => error(ErrorKind::Other, format!("cannot capture {name:?}: {}", with_causes(&err))),
        }
    }

    async fn attach_and_serve<C, M>(
        &self,
        name: String,
        session: Session,
        how: Attach,
        mut conn: C,
        link: Option<PipeControl>,
        finish_timeout: Option<Duration>,
    ) where
        C: AsyncRead + AsyncWrite + Unpin + Send,
        M: Framing<C>,
    {
        let size = how.size.map(Into::into);
        let attached = match how.restore {
            Restore::Screen => session.attach_screen(size),
            Restore::Raw => session.attach(size),
        };
        let attachment = match attached {
            Ok(attachment) => attachment,
            Err(ptysession::Error::Closed) => {
                let response = error(ErrorKind::NotFound, format!("no session named {name:?}"));
                let _ = protocol::write_message(&mut conn, &response).await;
                return finish(conn, Some(FINISH_TIMEOUT)).await;
            }
            Err(err) => {
                let response = error(ErrorKind::Other, format!("cannot attach to {name:?}: {}", with_causes(&err)));
                let _ = protocol::write_message(&mut conn, &response).await;
                return finish(conn, Some(FINISH_TIMEOUT)).await;
            }
        };
        let client = attachment.id();
        let registration = self.shared.registry.register(session.pid(), link);
        let terminal = how.terminal.as_ref().and_then(|offer| match direct::Terminal::open(offer) {
            Ok(terminal) => Some(terminal),
            Err(err) => {
                tracing::info!(name, path = offer.path, error = %err, "serving through the connection instead");
                None
            }
        });
        let response =
            Response::Attached { name: name.clone(), command: session.info().command, direct: terminal.is_some() };
        if let Err(err) = protocol::write_message(&mut conn, &response).await {
            tracing::info!(name, error = %err, "answering a client failed");
            return;
        }
        let read_only = how.input == InputPolicy::Drop;
        tracing::info!(name, %client, read_only, direct = terminal.is_some(), "client attached");
        if how.detach_others {
            let others = self.shared.registry.displace_others(&registration);
            tracing::info!(name, %client, others, "detaching the other clients");
        }
        let (reader, sink) = M::split(&mut conn);
        let displaced = &registration.displaced;
        let served = match terminal {
            Some(terminal) => {
                let options = direct::Options { read_only, clear_first: how.clear_first };
                direct::serve(attachment, terminal, reader, sink, options, displaced).await
            }
            None => attached::serve(attachment, reader, sink, how.input, displaced).await,
        };
        drop(registration);
        let last_words = match served {
            Ok(ServeOutcome::Exited(status)) => {
                tracing::info!(name, %client, %status, "the command exited; the session ends");
                // The exit status reached a client: nothing is left to see.
                tokio::spawn(async move { session.close().await });
                true
            }
            Ok(outcome @ ServeOutcome::Detached(DetachReason::Displaced)) => {
                tracing::info!(name, %client, ?outcome, "client detached by another client");
                true
            }
            Ok(outcome @ ServeOutcome::Detached(DetachReason::Requested)) => {
                tracing::info!(name, %client, ?outcome, "client detached with its detach key");
                true
            }
            Ok(outcome @ ServeOutcome::Detached(_)) => {
                tracing::info!(name, %client, ?outcome, "client detached by the session");
                true
            }
            Ok(outcome) => {
                tracing::info!(name, %client, ?outcome, "client left");
                false
            }
            Err(err) => {
                tracing::info!(name, %client, error = %err, "client connection ended");
                false
            }
        };
        // After the last frame the connection may be down: the client still
        // gets the last output and the reason when it resumes.
        finish(conn, if last_words { finish_timeout } else { Some(FINISH_TIMEOUT) }).await;
    }

    fn list(&self) -> Vec<SessionEntry> {
        self.shared
            .manager
            .list()
            .into_iter()
            .map(|(name, info)| {
                let state = match (info.state, info.exit_status) {
                    (State::Closing | State::Done, _) => SessionState::Closing,
                    (_, Some(_)) => SessionState::Exited,
                    (_, None) => SessionState::Running,
                };
                let created_unix_secs =
                    info.started_at.duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_secs());
                SessionEntry {
                    name,
                    command: info.command,
                    clients: info.clients,
                    clients_disconnected: self.shared.registry.count(info.pid).disconnected,
                    created_unix_secs,
                    age_secs: info.age.as_secs(),
                    state,
                    exit: info.exit_status.map(Exit::from),
                }
            })
            .collect()
    }

    /// Closes every session and waits until all are done.
    ///
    /// # Cancel safety
    ///
    /// Every close is requested before the first wait; dropping the future
    /// stops only the waiting.
    pub async fn close_all(&self) {
        self.shared.manager.close_all().await;
    }

    /// Returns once the server has no session and serves no connection
    /// (and, if it never had a session, once `grace` has passed).
    pub(crate) async fn wait_until_idle(&self, grace: Duration) {
        let started = Instant::now();
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let idle = self.session_count() == 0 && self.connection_count() == 0;
            let waited = started.elapsed();
            if idle && (self.shared.had_session.load(Ordering::SeqCst) || waited >= grace) {
                return;
            }
            // Sessions leave the manager on their own; look again now and then.
            let recheck = if idle { grace.saturating_sub(waited) } else { Duration::from_secs(1) };
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep(recheck) => {}
            }
        }
    }
}

/// How a client attaches.
#[derive(Debug, Clone)]
struct Attach {
    size: Option<Size>,
    restore: Restore,
    input: InputPolicy,
    detach_others: bool,
    /// Clear the screen before the replay (served on the client's terminal;
    /// a client served through its connection does it itself).
    clear_first: bool,
    /// The client's terminal, if it offers it.
    terminal: Option<LocalTerminal>,
}

/// `text` without as many of its first lines as it takes for its answer to
/// fit in one message.
fn fit_message(text: String) -> String {
    // Room for the rest of the answer.
    const LIMIT: usize = protocol::MAX_MESSAGE_BYTES - 256;
    let encoded = |line: &str| serde_json::to_string(line).map_or(usize::MAX, |json| json.len() - 2);
    let mut total: usize = encoded(&text);
    if total <= LIMIT {
        return text;
    }
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        if total <= LIMIT {
            break;
        }
        total = total.saturating_sub(encoded(line));
        start += line.len();
    }
    text[start..].to_owned()
}

/// The command for a new session: its program (the server's `$SHELL`, else
/// `/bin/sh`), `TERM`, working directory and `RPTY_SESSION`.
fn build_command(new: &NewSession, name: &str) -> Command {
    let shell = || std::env::var("SHELL").ok().filter(|shell| !shell.is_empty()).unwrap_or_else(|| "/bin/sh".into());
    let (program, args) = match new.command.split_first() {
        Some((program, args)) => (program.clone(), args.to_vec()),
        None => (shell(), Vec::new()),
    };
    let mut command = Command::new(program);
    command.args(args).env("RPTY_SESSION", name);
    if let Some(term) = new.term.as_deref().filter(|term| !term.is_empty()) {
        command.env("TERM", term);
    }
    let home = || std::env::var_os("HOME").map(PathBuf::from).filter(|home| home.is_dir());
    let cwd = new.cwd.as_deref().map(PathBuf::from).filter(|cwd| cwd.is_dir()).or_else(home);
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    command
}

/// Ends a served connection: queues our end of stream, then waits until the
/// client is done with the connection (it ends its stream or closes),
/// within `timeout` if given. The client reads what it needs before it
/// closes, so waiting for that, not for acknowledgements, proves the
/// delivery.
async fn finish<C: AsyncRead + AsyncWrite + Unpin>(mut conn: C, timeout: Option<Duration>) {
    let started = Instant::now();
    // The first poll queues the end of stream (and sends it, if connected).
    let _ = tokio::time::timeout(Duration::from_millis(20), conn.shutdown()).await;
    let client_done = async {
        let mut rest = [0u8; 1024];
        while matches!(conn.read(&mut rest).await, Ok(1..)) {}
    };
    let done = match timeout {
        Some(timeout) => tokio::time::timeout(timeout, client_done).await.is_ok(),
        None => {
            client_done.await;
            true
        }
    };
    tracing::trace!(done, took = ?started.elapsed(), "connection finished");
}

/// Closes a client's pipe when the client stays away longer than it asked
/// the server to wait.
async fn expire_when_away(control: PipeControl, window: Duration) {
    let mut status = control.watch_status();
    loop {
        let away = status.wait_for(|status| status.state != PipeState::Connected).await.map(|s| s.state);
        match away {
            Ok(PipeState::Closed) | Err(_) => return,
            Ok(_) => {}
        }
        let back = tokio::time::timeout(
            window,
            status.wait_for(|status| matches!(status.state, PipeState::Connected | PipeState::Closed)),
        )
        .await;
        if back.is_err() {
            tracing::info!(window_secs = window.as_secs(), "a client stayed away too long; dropping its connection");
            control.close();
            return;
        }
    }
}

/// The exclusive lock a running server holds on its runtime directory.
#[derive(Debug)]
struct ServerLock {
    _file: fs::File,
}

/// Takes the server lock; `Ok(None)` while another server holds it.
fn try_lock(runtime: &RuntimeDir) -> Result<Option<ServerLock>> {
    let path = runtime.lock_file();
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(ServerLock { _file: file })),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(err) => Err(err).with_context(|| format!("cannot lock {}", path.display())),
    }
}

/// What `rpty serve` was asked to do.
#[derive(Debug, Clone)]
pub(crate) struct ServeConfig {
    /// Also listen on TCP at this address.
    pub(crate) listen: Option<String>,
    /// The secret file for TCP (default: in the runtime directory).
    pub(crate) secret_file: Option<PathBuf>,
    /// Exit when no session is left and no client connected (the server
    /// started on demand).
    pub(crate) exit_when_idle: bool,
    /// The longest a client whose connection is down stays attached (and
    /// its connection kept for it to resume), whatever it asks for.
    pub(crate) client_expiry: Duration,
}

/// Runs the server until it is told to stop (or, started on demand, until
/// it is idle).
pub(crate) async fn run(runtime: RuntimeDir, config: ServeConfig) -> Result<()> {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let lock = match try_lock(&runtime)? {
        Some(lock) => lock,
        None if config.exit_when_idle => {
            // A server that is just exiting may still hold the lock.
            let deadline = Instant::now() + Duration::from_secs(3);
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if let Some(lock) = try_lock(&runtime)? {
                    break lock;
                }
                if Instant::now() > deadline {
                    tracing::info!("another server is running; not starting");
                    return Ok(());
                }
            }
        }
        None => {
            let pid = fs::read_to_string(runtime.pid_file()).unwrap_or_default();
            bail!(
                "a server is already running for {} (pid {}); stop it first, or use another RPTY_RUNTIME_DIR",
                runtime.path().display(),
                pid.trim()
            );
        }
    };
    let socket = runtime.socket();
    let _ = fs::remove_file(&socket);
    let unix = UnixListener::bind(&socket).with_context(|| format!("cannot listen on {}", socket.display()))?;
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make {} private", socket.display()))?;
    write_pid_file(&runtime.pid_file())?;
    let local = Listener::new(transport::server_config(None));
    local.listen(unix);
    // TCP clients get a listener of their own, so that a session begun on
    // one kind of transport is never resumed through the other.
    let mut remote: Option<Listener> = None;
    tracing::info!(socket = %socket.display(), pid = std::process::id(), "server listening");
    if let Some(addr) = &config.listen {
        let path = config.secret_file.clone().unwrap_or_else(|| runtime.secret_file());
        let (secret, generated) = secret::load_or_generate(&path)?;
        let tcp = TcpListener::bind(addr.as_str()).await.with_context(|| format!("cannot listen on {addr}"))?;
        let local = tcp.local_addr().context("cannot read the TCP address")?;
        let listener = Listener::new(transport::server_config(Some(secret)));
        // backedpipe's TCP source sets `TCP_NODELAY` on every connection.
        listener.listen(tcp);
        remote = Some(listener);
        tracing::info!(%local, secret = %path.display(), generated, "listening on TCP");
        say(&format!(
            "rpty: listening on {local} and {}; TCP clients need a copy of the secret in {} (--secret-file){}",
            socket.display(),
            path.display(),
            if generated { ", generated now" } else { "" }
        ));
    } else if !config.exit_when_idle {
        say(&format!("rpty: serving on {}; stop with Ctrl-C", socket.display()));
    }

    let server = Server::new(ServerOptions::new());
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut cut = signal(SignalKind::user_defined1())?;
    let idle = server.wait_until_idle(STARTUP_GRACE);
    tokio::pin!(idle);
    loop {
        tokio::select! {
            accepted = local.accept() => {
                let Some(pipe) = accepted else { break };
                tokio::spawn(serve_pipe(server.clone(), pipe, config.client_expiry));
            }
            accepted = accept_from(remote.as_ref()) => {
                let Some(pipe) = accepted else { break };
                tokio::spawn(serve_pipe(server.clone(), pipe, config.client_expiry));
            }
            () = &mut idle, if config.exit_when_idle => {
                tracing::info!("no session left; exiting");
                break;
            }
            _ = terminate.recv() => { tracing::info!("terminated"); break; }
            _ = interrupt.recv() => { tracing::info!("interrupted"); break; }
            _ = hangup.recv(), if !config.exit_when_idle => { tracing::info!("hung up"); break; }
            _ = cut.recv() => cut_all(&local, remote.as_ref()),
        }
    }
    // Stop accepting; the pipes already handed out keep serving until their
    // sessions close below.
    drop(local);
    drop(remote);
    let _ = fs::remove_file(&socket);
    let _ = fs::remove_file(runtime.pid_file());
    if tokio::time::timeout(Duration::from_secs(10), server.close_all()).await.is_err() {
        tracing::warn!("some sessions did not close in time");
    }
    drop(lock);
    tracing::info!("server stopped");
    Ok(())
}

/// The next new client of `listener`; pending for ever without one.
async fn accept_from(listener: Option<&Listener>) -> Option<BackedPipe> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Drops every client's current connection; the clients resume on new ones
/// (`SIGUSR1`, for trying out resumption).
fn cut_all(local: &Listener, remote: Option<&Listener>) {
    let controls: Vec<PipeControl> =
        local.sessions().into_iter().chain(remote.into_iter().flat_map(Listener::sessions)).collect();
    tracing::info!(pipes = controls.len(), "cutting every client connection");
    for control in controls {
        tokio::spawn(async move {
            let _ = control.force_reconnect().await;
        });
    }
}

/// Serves one accepted pipe, closing it when the client stays away longer
/// than its resume window or the server's `client_expiry`.
async fn serve_pipe(server: Server, pipe: BackedPipe, client_expiry: Duration) {
    let control = pipe.control();
    tracing::info!(session = %control.session_id(), stats = ?control.stats(), "client connected");
    let expiry = control.clone();
    let mut watcher = None;
    server
        .serve_with::<_, _, PipeChunks>(pipe, Some(control.clone()), None, |hello| {
            let window = Duration::from_millis(hello.resume_window_ms).min(client_expiry);
            watcher = Some(tokio::spawn(expire_when_away(expiry, window)));
        })
        .await;
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    control.close();
}

/// One line for the person who ran `rpty serve` (not a log line).
fn say(line: &str) {
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

fn write_pid_file(path: &Path) -> Result<()> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(file, "{}", std::process::id()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// How an attached client's frames reach its connection: the connection
/// split into a reader of the client's frames and a sink for the
/// server's.
pub(crate) trait Framing<C> {
    /// The reading side of a split connection.
    type Reader<'a>: AsyncRead + Unpin
    where
        C: 'a;
    /// The writing side of a split connection.
    type Sink<'a>: FrameSink
    where
        C: 'a;

    /// Splits `conn` for one attached client.
    fn split(conn: &mut C) -> (Self::Reader<'_>, Self::Sink<'_>);
}

/// Any byte stream: the frames are written (copied) into it.
pub(crate) struct AnyStream;

impl<C: AsyncRead + AsyncWrite + Unpin + Send> Framing<C> for AnyStream {
    type Reader<'a>
        = tokio::io::ReadHalf<&'a mut C>
    where
        C: 'a;
    type Sink<'a>
        = WriteSink<tokio::io::WriteHalf<&'a mut C>>
    where
        C: 'a;

    fn split(conn: &mut C) -> (Self::Reader<'_>, Self::Sink<'_>) {
        let (reader, writer) = tokio::io::split(conn);
        (reader, WriteSink(writer))
    }
}

/// A pipe: each batch of output frames goes into its send buffer as it
/// is, without a copy ([`backedpipe::WriteHalf::write_chunk`]), and its
/// halves work without a lock between them.
pub(crate) struct PipeChunks;

impl Framing<BackedPipe> for PipeChunks {
    type Reader<'a> = backedpipe::ReadHalf<'a>;
    type Sink<'a> = ChunkSink<'a>;

    fn split(pipe: &mut BackedPipe) -> (Self::Reader<'_>, Self::Sink<'_>) {
        let (reader, writer) = pipe.split();
        (reader, ChunkSink(writer))
    }
}

/// The writing half of a pipe as a frame sink.
pub(crate) struct ChunkSink<'a>(backedpipe::WriteHalf<'a>);

impl FrameSink for ChunkSink<'_> {
    async fn send(&mut self, frames: Bytes) -> std::io::Result<()> {
        self.0.write_chunk(frames).await?;
        self.0.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capture_too_long_for_a_message_loses_its_oldest_lines() {
        let short = "one\ntwo\n".to_owned();
        assert_eq!(fit_message(short.clone()), short);
        let line = format!("{}\n", "\x1b[0;7m#".repeat(20));
        let long: String = (0..10_000).map(|n| format!("{n}{line}")).collect();
        let fitted = fit_message(long.clone());
        let answer = serde_json::to_vec(&Response::Captured { text: fitted.clone() }).unwrap();
        assert!(answer.len() <= protocol::MAX_MESSAGE_BYTES, "{} bytes", answer.len());
        assert!(long.ends_with(&fitted), "the newest lines");
        assert!(fitted.starts_with(|c: char| c.is_ascii_digit()), "whole lines");
        assert!(fitted.len() > protocol::MAX_MESSAGE_BYTES / 4, "no more is dropped than needed");
    }
}
