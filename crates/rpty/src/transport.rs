//! What carries the bytes between a client and the server: a
//! [`backedpipe::BackedPipe`] over a Unix socket, a TCP connection (with a
//! secret) or a child process's stdin/stdout (`--via`, with
//! [`transport_stream`]). The client gets a [`Connection`] that resumes by
//! itself after a break; the server gets accepted pipes from a
//! [`backedpipe::server::Listener`] configured by [`server_config`].
//! Everything above this module sees only
//! `AsyncRead + AsyncWrite`.

use std::io;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Result, anyhow};
use backedpipe::server::{PeerUid, ServerOptions};
use backedpipe::{
    BackedPipe, Backoff, Options, OwnedReadHalf, OwnedWriteHalf, PipeControl, PipeState, Reconnector, Secret, Transport,
};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::watch;

use crate::autostart;
use crate::cli::with_causes;
use crate::foreground::{self, Lent};
use crate::paths::RuntimeDir;

/// A transport connection, whatever it is: a Unix socket, a TCP
/// connection or a `--via` process's stdio, each split by the pipe into
/// independent halves.
type Conn = Box<dyn Transport>;

/// How long the first connection (dial and handshake) may take.
const FIRST_CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the first connection through a `--via` process may take,
/// questions to the user included.
const VIA_FIRST_CONNECT_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a client keeps trying to resume a local connection.
const LOCAL_RESUME_WINDOW: Duration = Duration::from_secs(30);

/// How long a client keeps trying to resume a remote (`--via`, TCP)
/// connection.
const REMOTE_RESUME_WINDOW: Duration = Duration::from_secs(600);

/// How long a client waits for the server to acknowledge the end of its
/// stream before it closes anyway (the end itself goes out at once).
pub(crate) const END_OF_STREAM_WAIT: Duration = Duration::from_millis(250);

/// The longest a server keeps a client's pipe while the client is away,
/// whatever resume window the client asks for.
pub(crate) const MAX_RESUME_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// The most client pipes a server holds at once (connected or waiting for
/// their client); when full, the one away longest makes room.
const MAX_PIPES: usize = 512;

/// Unacknowledged bytes a pipe keeps for replay (each way).
const SEND_BUFFER_BYTES: usize = 8 << 20;

/// Where the server is and how to reach it.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// The local server's Unix socket; `autostart` starts the server when
    /// none runs.
    Local { runtime: RuntimeDir, autostart: bool },
    /// A server listening on TCP (`rpty serve --listen`).
    Tcp { addr: String, secret: Option<Secret> },
    /// A command whose stdin/stdout reach a server (`ssh host rpty bridge`).
    Via { command: String },
}

impl Target {
    /// How long the client keeps trying to resume a broken connection, and
    /// so how long the server keeps it.
    pub(crate) fn resume_window(&self) -> Duration {
        match self {
            Target::Local { .. } => LOCAL_RESUME_WINDOW,
            Target::Tcp { .. } | Target::Via { .. } => REMOTE_RESUME_WINDOW,
        }
    }

    /// The kind of transport, for logs: `unix`, `tcp` or `via`.
    fn kind(&self) -> &'static str {
        match self {
            Target::Local { .. } => "unix",
            Target::Tcp { .. } => "tcp",
            Target::Via { .. } => "via",
        }
    }

    fn has_secret(&self) -> bool {
        matches!(self, Target::Tcp { secret: Some(_), .. })
    }
}

/// The environment variable that sets how soon a client sees that its
/// link is dead (`RPTY_LINK_TIMEOUT=5s`; default [`LINK_TIMEOUT`]).
pub(crate) const LINK_TIMEOUT_ENV: &str = "RPTY_LINK_TIMEOUT";

/// How long a client hears nothing before it declares the link dead and
/// reconnects (it pings three times as often).
pub(crate) const LINK_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the client waits after its `failures`-th consecutive failed
/// attempt, at most (the pipe's backoff removes up to a quarter at random).
pub(crate) fn retry_delay(failures: u32) -> Duration {
    backoff(None).delay(failures, 0.0)
}

fn backoff(give_up_after: Option<Duration>) -> Backoff {
    Backoff::new()
        .initial_delay(Duration::from_millis(20))
        .max_delay(Duration::from_secs(2))
        .jitter(0.25)
        .give_up_after(give_up_after)
}

/// The link timeout a client uses: `$RPTY_LINK_TIMEOUT`, else
/// [`LINK_TIMEOUT`].
pub(crate) fn link_timeout() -> Result<Duration> {
    match std::env::var(LINK_TIMEOUT_ENV) {
        Ok(text) if !text.trim().is_empty() => {
            crate::cli::parse_duration(text.trim()).map_err(|err| anyhow!("{LINK_TIMEOUT_ENV}: {err}"))
        }
        _ => Ok(LINK_TIMEOUT),
    }
}

/// The pipe settings of the server's side; `secret` authenticates every
/// handshake.
pub(crate) fn pipe_config(secret: Option<Secret>) -> Options {
    Options::new()
        .secret(secret)
        .send_buffer_bytes(SEND_BUFFER_BYTES)
        .keepalive_interval(Duration::from_secs(5))
        .idle_timeout(Duration::from_secs(15))
        .backoff(backoff(None))
}

/// The pipe settings of a client: a dead link is seen within
/// `link_timeout` (a ping goes out after a third of it without traffic),
/// and the client gives up after `give_up_after`. A `--via` handshake may
/// wait for a person to answer the transport (a password), so it may take
/// as long as `handshake_timeout`.
fn client_pipe_config(
    secret: Option<Secret>,
    give_up_after: Duration,
    link_timeout: Duration,
    handshake_timeout: Duration,
) -> Options {
    Options::new()
        .secret(secret)
        .send_buffer_bytes(SEND_BUFFER_BYTES)
        .keepalive_interval((link_timeout / 3).max(Duration::from_millis(10)))
        .idle_timeout(link_timeout)
        .handshake_timeout(handshake_timeout)
        .backoff(backoff(Some(give_up_after)))
}

/// The settings of a server's listener: on the Unix socket (`secret` is
/// `None`) only processes of this user are admitted; on TCP every client
/// must prove `secret`. Each client's pipe is also closed when the client
/// stays away longer than the window it asked for (see the server).
pub(crate) fn server_config(secret: Option<Secret>) -> ServerOptions {
    ServerOptions::new()
        .pipe(pipe_config(secret))
        .peer_uid(PeerUid::SameAsServer)
        .max_sessions(MAX_PIPES)
        .session_expiry(MAX_RESUME_WINDOW)
}

/// What the dialer knows about its attempts: the `--via` processes it
/// started (to end them while the runtime still runs, and for the last
/// one's stderr and exit status) and the last dial error.
#[derive(Debug, Default)]
struct DialNotes {
    via: Vec<transport_stream::Handle>,
    error: Option<String>,
    /// The local server's socket is gone or refuses: the server (and every
    /// session with it) has ended, so there is nothing to resume.
    server_gone: bool,
    /// The pipe, to close it when there is nothing to resume.
    control: Option<PipeControl>,
    /// Lend the terminal to the next `--via` process (the first one: the
    /// terminal is still in its ordinary mode then).
    lend_terminal: bool,
    /// The terminal, while a `--via` process has it.
    lent: Option<Lent>,
    /// The program a `--via` command runs, for messages (`ssh`).
    via_program: Option<String>,
    /// How the last `--via` process that ended did, once it is forgotten.
    last_via_end: Option<String>,
}

impl DialNotes {
    /// How the newest `--via` process that has ended ended:
    /// `ssh exited 255: Connection refused`.
    fn via_ended(&self) -> Option<String> {
        let program = self.via_program.as_deref().unwrap_or("the --via command");
        let (via, status) =
            self.via.iter().rev().find_map(|via| via.try_status().ok().flatten().map(|status| (via, status)))?;
        let stderr = String::from_utf8_lossy(&via.stderr()).into_owned();
        // `ssh: connect to host h port 22: Connection refused` says it
        // last.
        let said = stderr
            .lines()
            .rev()
            .map(str::trim)
            .find(|line| !line.is_empty())
            .map(|line| line.rsplit(": ").next().unwrap_or(line).trim().to_owned());
        let ended = match (status.code(), status.signal()) {
            (Some(code), _) => format!("{program} exited {code}"),
            (None, Some(signal)) => format!("{program} was killed by signal {signal}"),
            (None, None) => format!("{program} ended"),
        };
        Some(match said {
            Some(line) => format!("{ended}: {line}"),
            None => ended,
        })
    }
}

/// Ends every `--via` process still running, and waits until each is
/// reaped. Called before the runtime shuts down: a transport process must
/// never be left to a drop during the runtime's shutdown.
async fn close_transports(notes: &Mutex<DialNotes>) {
    let handles = {
        let mut notes = lock(notes);
        // The pipe's control would otherwise keep the pipe's state alive.
        notes.control = None;
        std::mem::take(&mut notes.via)
    };
    for handle in handles {
        if let Err(err) = tokio::time::timeout(Duration::from_secs(5), handle.close()).await {
            tracing::warn!(error = %err, "a --via process did not end in time");
        }
    }
}

/// Opens transports to the server: the first one is dialled before the
/// pipe exists (so that "no server" is an answer, not a retry loop).
struct Dialer {
    first: Mutex<Option<Conn>>,
    how: Dial,
    notes: Arc<Mutex<DialNotes>>,
}

#[derive(Debug, Clone)]
enum Dial {
    Unix(PathBuf),
    Tcp(String),
    Via(String),
}

impl Dialer {
    async fn dial(how: &Dial, notes: &Mutex<DialNotes>) -> io::Result<Conn> {
        let result: io::Result<Conn> = match how {
            Dial::Unix(path) => UnixStream::connect(path).await.map(|stream| Box::new(stream) as Conn),
            Dial::Tcp(addr) => {
                let stream = TcpStream::connect(addr.as_str()).await?;
                let _ = stream.set_nodelay(true);
                Ok(Box::new(stream))
            }
            Dial::Via(command) => {
                let mut process = Command::new("sh");
                process.arg("-c").arg(command);
                let options = transport_stream::Options::new()
                    .stdin_close_timeout(Duration::from_millis(500))
                    .terminate_timeout(Duration::from_millis(500));
                match transport_stream::Stream::spawn(process, options) {
                    Ok(stream) => {
                        let mut notes = lock(notes);
                        if let Some(ended) = notes.via_ended() {
                            notes.last_via_end = Some(ended);
                        }
                        notes.via.retain(|handle| matches!(handle.try_status(), Ok(None)));
                        notes.via.push(stream.handle());
                        if std::mem::take(&mut notes.lend_terminal) {
                            // The process leads a group of its own.
                            notes.lent = stream.handle().pid().and_then(foreground::lend);
                        }
                        Ok(Box::new(stream))
                    }
                    Err(err) => Err(io::Error::other(err)),
                }
            }
        };
        match &result {
            Ok(_) => tracing::debug!(?how, "transport opened"),
            Err(err) => {
                tracing::info!(?how, error = %err, "opening a transport failed");
                let mut notes = lock(notes);
                notes.error = Some(with_causes(err));
                let refused = matches!(err.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused);
                if matches!(how, Dial::Unix(_)) && refused {
                    notes.server_gone = true;
                    if let Some(control) = &notes.control {
                        control.close();
                    }
                }
            }
        }
        result
    }
}

impl Reconnector for Dialer {
    async fn reconnect(&self) -> io::Result<impl Transport> {
        let first = lock(&self.first).take();
        match first {
            Some(conn) => Ok(conn),
            None => Dialer::dial(&self.how, &self.notes).await,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A client's connection to the server: a pipe that resumes by itself, and
/// whether it is connected right now.
#[derive(Debug)]
pub(crate) struct Connection {
    pipe: BackedPipe,
    target: Target,
    transports: Transports,
}

/// The transport processes of a connection, to end before the runtime
/// does.
#[derive(Debug, Clone)]
pub(crate) struct Transports(Arc<Mutex<DialNotes>>);

impl Transports {
    /// Ends every `--via` process and waits for it (bounded).
    pub(crate) async fn close(&self) {
        close_transports(&self.0).await;
    }

    /// Whether the connection ended because the local server is gone.
    pub(crate) fn server_gone(&self) -> bool {
        lock(&self.0).server_gone
    }

    /// The process group of a running `--via` process that is stopped
    /// because it tried to read the terminal from the background (a
    /// reconnecting ssh that asks for a password).
    pub(crate) fn asking_group(&self) -> Option<u32> {
        let groups: Vec<u32> = lock(&self.0)
            .via
            .iter()
            .filter(|via| matches!(via.try_status(), Ok(None)))
            .filter_map(transport_stream::Handle::pid)
            .collect();
        groups.into_iter().find(|&group| group_is_stopped(group))
    }

    /// Whether the `--via` process leading `group` still runs.
    pub(crate) fn is_running(&self, group: u32) -> bool {
        lock(&self.0).via.iter().any(|via| via.pid() == Some(group) && matches!(via.try_status(), Ok(None)))
    }

    /// What is known of why the link is down: how the last `--via`
    /// process ended (`ssh exited 255: Connection refused`), else the
    /// last error opening a transport.
    pub(crate) fn down_reason(&self) -> Option<String> {
        let notes = lock(&self.0);
        notes.via_ended().or_else(|| notes.last_via_end.clone()).or_else(|| notes.error.clone())
    }
}

/// Opens a connection to the server at `target` and waits for its first
/// handshake.
pub(crate) async fn connect(target: &Target) -> Result<Connection> {
    let (first, how): (Option<Conn>, Dial) = match target {
        Target::Local { runtime, autostart } => {
            let stream = if *autostart {
                autostart::ensure_server(runtime).await?
            } else {
                autostart::connect_existing(runtime).await?
            };
            (Some(Box::new(stream)), Dial::Unix(runtime.socket()))
        }
        Target::Tcp { addr, .. } => {
            let stream = tokio::time::timeout(FIRST_CONNECT_TIMEOUT, TcpStream::connect(addr.as_str()))
                .await
                .map_err(|_| anyhow!("cannot reach {addr}: no answer within {}s", FIRST_CONNECT_TIMEOUT.as_secs()))?
                .map_err(|err| anyhow!("cannot reach {addr}: {err}"))?;
            let _ = stream.set_nodelay(true);
            (Some(Box::new(stream)), Dial::Tcp(addr.clone()))
        }
        Target::Via { command } => (None, Dial::Via(command.clone())),
    };
    let secret = match target {
        Target::Tcp { secret, .. } => secret.clone(),
        _ => None,
    };
    let via_program = match target {
        // The program's name when the command is one plain command
        // (`ssh host rpty bridge`), else nothing to name.
        Target::Via { command } if !command.contains([';', '&', '|', '$', '`', '(', '<', '>', '\n']) => {
            command.split_whitespace().next().map(|program| program.rsplit('/').next().unwrap_or(program).to_owned())
        }
        _ => None,
    };
    let notes = Arc::new(Mutex::new(DialNotes { lend_terminal: true, via_program, ..DialNotes::default() }));
    let dialer = Dialer { first: Mutex::new(first), how, notes: notes.clone() };
    let handshake_timeout =
        if matches!(target, Target::Via { .. }) { VIA_FIRST_CONNECT_TIMEOUT } else { Duration::from_secs(10) };
    let config = client_pipe_config(secret, target.resume_window(), link_timeout()?, handshake_timeout);
    let pipe = BackedPipe::connect(dialer, config);
    lock(&notes).control = Some(pipe.control());
    // A person may have to answer the transport first (a password).
    let first_timeout =
        if matches!(target, Target::Via { .. }) { VIA_FIRST_CONNECT_TIMEOUT } else { FIRST_CONNECT_TIMEOUT };
    let first = tokio::time::timeout(first_timeout, first_handshake(&pipe)).await;
    if let Some(lent) = lock(&notes).lent.take() {
        lent.take_back();
    }
    match first {
        Ok(Ok(())) => {
            // The counters say, among others, how the transport split
            // (every kind splits into independent halves).
            tracing::info!(transport = target.kind(), stats = ?pipe.stats(), "connected");
            Ok(Connection { pipe, target: target.clone(), transports: Transports(notes) })
        }
        Ok(Err(failure)) => {
            pipe.close();
            let explained = explain_first_failure(target, failure, &notes);
            close_transports(&notes).await;
            Err(anyhow!(explained))
        }
        Err(_) => {
            pipe.close();
            close_transports(&notes).await;
            Err(anyhow!("the server did not answer within {}s", first_timeout.as_secs()))
        }
    }
}

/// Waits for the first successful handshake; the first failed attempt (or
/// the pipe's end) is an error, not a retry.
async fn first_handshake(pipe: &BackedPipe) -> Result<(), Option<backedpipe::Error>> {
    let mut status = pipe.watch_status();
    loop {
        let state = status.borrow_and_update().state;
        match state {
            PipeState::Connected => return Ok(()),
            PipeState::Closed => return Err(Some(pipe.failure().unwrap_or(backedpipe::Error::Closed))),
            _ if pipe.stats().failed_attempts > 0 => return Err(pipe.failure()),
            _ => {}
        }
        // Failed attempts are counted without a status change of their own.
        let _ = tokio::time::timeout(Duration::from_millis(25), status.changed()).await;
    }
}

fn explain_first_failure(target: &Target, failure: Option<backedpipe::Error>, notes: &Mutex<DialNotes>) -> String {
    if let Some(failure) = failure {
        return describe_pipe_error(&failure, target.has_secret());
    }
    let notes = lock(notes);
    match (target, notes.via.last()) {
        (Target::Via { command }, Some(via)) => {
            let stderr = String::from_utf8_lossy(&via.stderr()).into_owned();
            let last = stderr.lines().rev().find(|line| !line.trim().is_empty()).map(str::trim);
            let status = via.try_status().ok().flatten();
            match (last, status) {
                (Some(line), _) => format!("the --via command {command:?} failed: {line}"),
                (None, Some(status)) => format!("the --via command {command:?} ended ({status}) before connecting"),
                (None, None) => format!("the --via command {command:?} did not reach an rpty server"),
            }
        }
        _ => match &notes.error {
            Some(error) => format!("cannot reach the server: {error}"),
            None => "the server closed the connection during the handshake".to_owned(),
        },
    }
}

/// Whether a process of `group` is stopped by a job-control signal.
fn group_is_stopped(group: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else { return false };
    entries.filter_map(Result::ok).any(|entry| {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { return false };
        // After the command's `(name)`: state, ppid, pgrp.
        let mut fields = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace()).into_iter().flatten();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|pgrp| pgrp.parse::<u32>().ok());
        pgrp == Some(group) && state == Some("T")
    })
}

/// Continues every process of `group` (after it was stopped).
pub(crate) fn continue_group(group: u32) {
    if let Some(pid) = i32::try_from(group).ok().and_then(rustix::process::Pid::from_raw) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::CONT);
    }
}

/// A user's explanation of a pipe's failure.
pub(crate) fn describe_pipe_error(error: &backedpipe::Error, has_secret: bool) -> String {
    use backedpipe::Error as E;
    use backedpipe::proto::ErrorCode;
    match error {
        E::AuthenticationFailed if has_secret => {
            "the server refused the connection: the secret does not match the server's".to_owned()
        }
        E::AuthenticationFailed => {
            "the server refused the connection: it requires a secret (pass --secret-file with a copy of the server's secret file)"
                .to_owned()
        }
        E::Remote { code: ErrorCode::ServerFull, .. } => {
            "the server refused the connection: it holds as many clients as it can".to_owned()
        }
        E::Remote { code: ErrorCode::SessionUnknown, .. } => {
            "the server no longer knows this connection (it restarted, or the connection was away too long)".to_owned()
        }
        E::GaveUp { attempts, last_error } => match last_error {
            Some(last) => format!("gave up reconnecting after {attempts} attempts ({})", with_causes(last.as_ref())),
            None => format!("gave up reconnecting after {attempts} attempts"),
        },
        E::PeerClosed => "the server closed the connection".to_owned(),
        other => other.to_string(),
    }
}

/// A user's explanation of an I/O error from a connection.
pub(crate) fn describe_io_error(error: &io::Error, target: &Target) -> String {
    match backedpipe::Error::from_io(error) {
        Some(pipe_error) => describe_pipe_error(pipe_error, target.has_secret()),
        None => error.to_string(),
    }
}

impl Connection {
    /// Where this connection goes.
    pub(crate) fn target(&self) -> &Target {
        &self.target
    }

    /// The connection as one stream (for the control exchange).
    pub(crate) fn stream(&mut self) -> &mut BackedPipe {
        &mut self.pipe
    }

    /// Ends the connection after a request that needs nothing more (the
    /// answer has arrived): ends our stream (what the server waits for),
    /// then closes.
    pub(crate) async fn finish(mut self) {
        let _ = tokio::time::timeout(END_OF_STREAM_WAIT, tokio::io::AsyncWriteExt::shutdown(&mut self.pipe)).await;
        // Tell the server before the process exits (a plain close may
        // never reach it once the runtime ends).
        self.pipe.close_gracefully(END_OF_STREAM_WAIT).await;
        self.transports.close().await;
    }

    /// Splits the connection into its halves, whether it is connected (a
    /// watch that follows every break and resume), and its control.
    pub(crate) fn split(self) -> (OwnedReadHalf, OwnedWriteHalf, watch::Receiver<bool>, PipeControl, Transports) {
        let control = self.pipe.control();
        let mut status = self.pipe.watch_status();
        let (link_tx, link_rx) = watch::channel(true);
        tokio::spawn(async move {
            loop {
                let state = status.borrow_and_update().state;
                if state == PipeState::Closed {
                    return;
                }
                link_tx.send_if_modified(|connected| {
                    let now = state == PipeState::Connected;
                    std::mem::replace(connected, now) != now
                });
                if status.changed().await.is_err() {
                    return;
                }
            }
        });
        let (read, write) = self.pipe.into_split();
        (read, write, link_rx, control, self.transports)
    }
}
