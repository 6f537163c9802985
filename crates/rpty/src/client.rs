//! The client side: one request and its answer ([`request`]), the attached
//! terminal ([`attach`]: raw mode, bytes through unchanged, window size,
//! the detach key, the status line while reconnecting, the exit status),
//! the session listing, and `rpty bridge`.

use std::io::{self, IsTerminal, Read, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bytes::Bytes;
use ptysession::framing::{ClientFrame, ClientReader, ClientWriter, ServerFrame};
use ptysession::{DetachReason, ExitStatus, WindowSize};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, watch};

use crate::keys::DetachKey;
use crate::paths::RuntimeDir;
use crate::protocol::{self, ClientHello, LocalTerminal, Request, Response, Restore, SessionEntry, Size};
use crate::terminal::{self, ModeTracker, RawMode};
use crate::transport::{self, Connection, Target};

/// How long the server has to answer a request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the client waits for the server to confirm a detach.
const DETACH_TIMEOUT: Duration = Duration::from_secs(3);

/// Sends `hello` and reads the answer.
pub(crate) async fn request(target: &Target, hello: ClientHello) -> Result<(Connection, Response)> {
    let mut connection = transport::connect(target).await?;
    let exchange = async {
        protocol::write_message(connection.stream(), &hello).await?;
        protocol::read_message::<_, Response>(connection.stream()).await
    };
    match tokio::time::timeout(ANSWER_TIMEOUT, exchange).await {
        Ok(Ok(response)) => Ok((connection, response)),
        Ok(Err(protocol::Error::Io(err))) => bail!("{}", transport::describe_io_error(&err, target)),
        Ok(Err(protocol::Error::Ended)) => bail!("the server closed the connection without answering"),
        Ok(Err(err)) => bail!("the server's answer is unusable: {err}"),
        Err(_) => bail!("the server did not answer within {}s", ANSWER_TIMEOUT.as_secs()),
    }
}

/// Turns an error answer into an error; any other answer is returned.
pub(crate) fn expect_ok(response: Response) -> Result<Response> {
    match response {
        Response::Error { message, .. } => bail!("{message}"),
        other => Ok(other),
    }
}

/// Prints the session table.
pub(crate) fn print_sessions(sessions: &[SessionEntry]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    if sessions.is_empty() {
        writeln!(out, "no sessions")?;
        return out.flush();
    }
    let header = ["NAME", "COMMAND", "CLIENTS", "AGE", "STATE", "EXIT"];
    let rows: Vec<[String; 6]> = sessions
        .iter()
        .map(|session| {
            let exit = match session.exit {
                Some(protocol::Exit::Code(code)) => code.to_string(),
                Some(protocol::Exit::Signal(signal)) => format!("signal {signal}"),
                None => "-".to_owned(),
            };
            [
                session.name.clone(),
                shorten(&session.command, 40),
                format_clients(session),
                format_age(session.age_secs),
                session.state.to_string(),
                exit,
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut text = String::new();
        for (index, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if index + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        text
    };
    writeln!(out, "{}", line(header))?;
    for row in &rows {
        writeln!(out, "{}", line(row.each_ref().map(String::as_str)))?;
    }
    out.flush()
}

/// Prints the sessions as a JSON array, one object per session.
pub(crate) fn print_sessions_json(sessions: &[SessionEntry]) -> io::Result<()> {
    let entries: Vec<serde_json::Value> = sessions
        .iter()
        .map(|session| {
            let exit_status = match session.exit {
                Some(protocol::Exit::Code(code)) => serde_json::json!({ "code": code }),
                Some(protocol::Exit::Signal(signal)) => serde_json::json!({ "signal": signal }),
                None => serde_json::Value::Null,
            };
            let disconnected = session.clients_disconnected.min(session.clients);
            serde_json::json!({
                "name": session.name,
                "command": session.command,
                "clients": { "connected": session.clients - disconnected, "disconnected": disconnected },
                "created": session.created_unix_secs,
                "age_secs": session.age_secs,
                "state": session.state.to_string(),
                "exit_status": exit_status,
            })
        })
        .collect();
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &entries).map_err(io::Error::other)?;
    writeln!(out)?;
    out.flush()
}

/// The clients column: all of them, and how many are disconnected.
fn format_clients(session: &SessionEntry) -> String {
    match session.clients_disconnected.min(session.clients) {
        0 => session.clients.to_string(),
        away => format!("{} ({away} disconnected)", session.clients),
    }
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut short: String = text.chars().take(max - 1).collect();
        short.push('…');
        short
    }
}

/// An age as a person reads it: `42s`, `5m`, `3h07m`, `2d4h`.
pub(crate) fn format_age(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{}h", secs / 86400, secs % 86400 / 3600),
    }
}

/// This process's terminal as offered to a local server in the hello
/// ([`ClientHello::terminal`]).
pub(crate) struct Offer {
    terminal: Option<LocalTerminal>,
}

impl Offer {
    /// Offers the terminal when `target` is this machine's server and
    /// standard input and output are the same terminal; nothing otherwise.
    /// (A server that takes it waits for the client's first frame, sent
    /// once the terminal is raw, before it touches the terminal.)
    pub(crate) fn make(target: &Target, detach_key: DetachKey) -> Offer {
        let terminal = match target {
            Target::Local { .. } => own_terminal().map(|(path, device, inode)| {
                LocalTerminal::new(path, device, inode, std::process::id(), detach_key.byte())
            }),
            Target::Tcp { .. } | Target::Via { .. } => None,
        };
        Offer { terminal }
    }

    /// No terminal offered (a client that does not attach).
    pub(crate) fn none() -> Offer {
        Offer { terminal: None }
    }

    /// What the hello carries.
    pub(crate) fn terminal(&self) -> Option<LocalTerminal> {
        self.terminal.clone()
    }
}

/// The terminal on standard input (its path, file system device and
/// inode), when standard output is the same terminal.
fn own_terminal() -> Option<(String, u64, u64)> {
    let (stdin, stdout) = (io::stdin(), io::stdout());
    if !stdin.is_terminal() || !stdout.is_terminal() {
        return None;
    }
    let (input, output) = (rustix::fs::fstat(&stdin).ok()?, rustix::fs::fstat(&stdout).ok()?);
    if (input.st_dev, input.st_ino) != (output.st_dev, output.st_ino) {
        return None;
    }
    let path = rustix::termios::ttyname(&stdin, Vec::new()).ok()?;
    Some((path.to_string_lossy().into_owned(), input.st_dev, input.st_ino))
}

/// How an attached client behaves.
#[derive(Debug, Clone)]
pub(crate) struct AttachOptions {
    /// The key that detaches.
    pub(crate) detach_key: DetachKey,
    /// What to do around the replay.
    pub(crate) redraw: Redraw,
    /// What the server is asked to show first when attaching again.
    pub(crate) restore: Restore,
    /// Attached read-only (the server drops the input); kept when the
    /// client attaches again.
    pub(crate) read_only: bool,
    /// The command that comes back to the session, for messages.
    pub(crate) reattach_hint: String,
}

/// What the client does around the replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Redraw {
    /// Nothing: a new session has no past.
    None,
    /// The replay is a repaint of the screen; afterwards the size is
    /// nudged (to another size and back), a courtesy to programs that keep
    /// more than the screen model shows.
    Nudge,
    /// The replay is raw output: the screen is cleared before it and the
    /// size nudged afterwards, so that a full-screen program redraws.
    ClearAndNudge,
}

/// How the output side ended.
#[derive(Debug)]
enum OutputEnd {
    Exited(ExitStatus),
    Detached(DetachReason),
    /// The server ended the stream without a final frame (after a detach).
    Ended,
    Failed(ptysession::Error),
    Stdout(io::Error),
}

/// Why the input side stopped.
#[derive(Debug)]
enum Stop {
    Output(OutputEnd),
    DetachKey,
    Signal(i32),
}

/// What the output task shares with the rest of the client.
#[derive(Debug, Default)]
struct Screen {
    modes: ModeTracker,
    status_line_rows: Option<u16>,
    /// The terminal is lent to the transport: no status line meanwhile.
    lent: bool,
}

fn lock(screen: &Mutex<Screen>) -> std::sync::MutexGuard<'_, Screen> {
    screen.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The local terminal's side of an attached client, kept across
/// connections: signals, input, size, and what the session did to the
/// screen.
struct Local {
    winch: Signal,
    terminate: Signal,
    hangup: Signal,
    interrupt: Signal,
    input: Option<Input>,
    /// Stops the input thread while the terminal is lent.
    gate: Arc<InputGate>,
    /// The terminal's raw mode, suspended while the terminal is lent.
    raw: Option<RawMode>,
    size: Option<Size>,
    screen: Arc<Mutex<Screen>>,
}

/// Runs an attached session on this terminal until the command exits, the
/// user detaches, a signal arrives or the connection is lost for good.
/// Returns the exit code for this process.
///
/// A terminal that falls behind the output (the session writes faster than
/// it displays) is attached again at once: it skips to the scrollback, as
/// a person would want, instead of being left behind.
///
/// When the server took the terminal offered (`direct`, see
/// [`LocalTerminal`]) this client reads no input and writes no output while
/// attached: it forwards its window size and signals, and waits for the
/// end.
pub(crate) async fn attach(
    connection: Connection,
    name: &str,
    options: &AttachOptions,
    offer: Offer,
    direct: bool,
) -> Result<ExitCode> {
    let target = connection.target().clone();
    // Signals first: from here on they detach instead of killing us.
    let mut local = Local {
        winch: signal(SignalKind::window_change())?,
        terminate: signal(SignalKind::terminate())?,
        hangup: signal(SignalKind::hangup())?,
        interrupt: signal(SignalKind::interrupt())?,
        input: None,
        gate: Arc::new(InputGate::default()),
        raw: None,
        size: terminal::window_size(),
        screen: Arc::new(Mutex::new(Screen::default())),
    };
    local.raw = RawMode::enter()?;

    let mut connection = connection;
    let mut direct = direct;
    let mut redraw = options.redraw;
    let redraw_again = match options.restore {
        Restore::Screen => Redraw::Nudge,
        Restore::Raw => Redraw::ClearAndNudge,
    };
    let (stop, end, server_gone) = loop {
        // One reader of the keys at a time: the server, or this client.
        if direct {
            local.input = None;
        } else if local.input.is_none() {
            local.input = Some(open_input(&local.gate));
        }
        let (stop, end, server_gone) = run_connection(connection, &mut local, options, redraw, direct).await;
        if let (Stop::Output(_), Some(OutputEnd::Detached(DetachReason::Lagged { .. }))) = (&stop, &end) {
            tracing::info!(name, "the terminal fell behind the output; attaching again");
            let again = Request::Attach {
                name: Some(name.to_owned()),
                size: local.size,
                restore: options.restore,
                read_only: options.read_only,
                detach_others: false,
                not: None,
            };
            let hello = ClientHello::new(again)
                .with_resume_window(target.resume_window())
                .with_terminal(offer.terminal.clone());
            match request(&target, hello).await {
                Ok((next, Response::Attached { direct: taken, .. })) => {
                    connection = next;
                    redraw = redraw_again;
                    direct = taken;
                    continue;
                }
                Ok((next, _)) => next.finish().await,
                Err(err) => tracing::info!(error = %err, "attaching again failed"),
            }
        }
        break (stop, end, server_gone);
    };

    // Put the terminal back: the session's modes, the status line, then the
    // settings.
    if io::stdout().is_terminal() {
        let screen = lock(&local.screen);
        let mut restore = Vec::new();
        if screen.status_line_rows.is_some() {
            restore.extend_from_slice(terminal::REMOVE_STATUS_LINE);
        }
        restore.extend(screen.modes.reset_sequence());
        let mut stdout = io::stdout().lock();
        let _ = stdout.write_all(&restore);
        let _ = stdout.flush();
    }
    drop(local.raw.take());

    let hint = &options.reattach_hint;
    let (message, code) = match (stop, end) {
        (Stop::DetachKey, _) | (Stop::Output(_), Some(OutputEnd::Detached(DetachReason::Requested))) => {
            (format!("detached from {name:?}; reattach with: {hint}"), 0)
        }
        (Stop::Signal(number), _) => {
            (format!("detached from {name:?} (signal {number}); reattach with: {hint}"), 128 + number)
        }
        (Stop::Output(_), Some(OutputEnd::Exited(status))) => {
            let text = match status {
                ExitStatus::Code(code) => format!("session {name:?} exited with code {code}"),
                ExitStatus::Signal(signal) => format!("session {name:?} was killed by signal {signal}"),
            };
            (text, status.shell_code())
        }
        (Stop::Output(_), Some(OutputEnd::Detached(DetachReason::Lagged { .. }))) => {
            (format!("detached from {name:?}: this terminal fell behind the output; reattach with: {hint}"), 1)
        }
        (Stop::Output(_), Some(OutputEnd::Detached(DetachReason::Displaced))) => {
            (format!("detached from {name:?} by another client; reattach with: {hint}"), 0)
        }
        (Stop::Output(_), Some(OutputEnd::Detached(_))) => (format!("session {name:?} was closed"), 1),
        (Stop::Output(_), Some(OutputEnd::Failed(_))) if server_gone => {
            ("lost the connection: the server is no longer running, and its sessions ended with it".to_owned(), 1)
        }
        (Stop::Output(_), Some(OutputEnd::Failed(err))) => {
            let reason = match &err {
                ptysession::Error::Connection(io) => transport::describe_io_error(io, &target),
                other => other.to_string(),
            };
            (format!("lost the connection to the server: {reason}; the session may still run: {hint}"), 1)
        }
        (Stop::Output(_), Some(OutputEnd::Stdout(err))) => (format!("cannot write to the terminal: {err}"), 1),
        (Stop::Output(_), Some(OutputEnd::Ended) | None) => {
            (format!("the server ended the connection; the session may still run: {hint}"), 1)
        }
    };
    tracing::info!(name, code, message, "client done");
    let mut stderr = io::stderr().lock();
    let _ = writeln!(stderr, "rpty: {message}");
    let _ = stderr.flush();
    Ok(ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1)))
}

/// Where the typed input is read: the terminal itself, else standard input
/// on a thread.
fn open_input(gate: &Arc<InputGate>) -> Input {
    match TerminalInput::open() {
        Ok(terminal) => Input::Terminal(terminal),
        Err(err) => {
            tracing::info!(error = %err, "reading standard input on a thread");
            Input::Thread(spawn_stdin_reader(gate.clone()))
        }
    }
}

/// Carries the terminal over one connection until it ends (with `direct`,
/// the server serves the terminal itself: only signals, the window size
/// and the end pass here); returns why, how the output ended, and whether
/// the local server turned out to be gone. The connection is closed on
/// return.
async fn run_connection(
    connection: Connection,
    local: &mut Local,
    options: &AttachOptions,
    redraw: Redraw,
    direct: bool,
) -> (Stop, Option<OutputEnd>, bool) {
    let (read, write, link, control, transports) = connection.split();
    let frames = ClientReader::new(read);
    // Sends wait while the connection is down: they run on a task of their
    // own so that the detach key and signals are always seen at once.
    let (to_server, outbox) = mpsc::unbounded_channel();
    if direct {
        // The terminal is raw and the signals are handled: the server may
        // take the terminal now (this first frame says so).
        let ready = match local.size {
            Some(size) => ClientFrame::Resize(WindowSize::from(size)),
            None => ClientFrame::Repaint,
        };
        let _ = to_server.send(ready);
    }
    let mut sender = tokio::spawn(send_frames(ClientWriter::new(write), outbox));
    let (nudge_tx, mut nudge_rx) = mpsc::channel(4);
    let connected = link.clone();
    let mut asking_link = link.clone();
    let mut asking = tokio::time::interval(Duration::from_secs(1));
    asking.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let status =
        LinkStatus { transports: transports.clone(), control: control.clone(), detach_key: options.detach_key };
    let restores_screen = options.restore == Restore::Screen;
    let mut output = tokio::spawn(pump_output(
        frames,
        link,
        nudge_tx,
        local.screen.clone(),
        OutputSettings { redraw, restores_screen, status, direct },
    ));

    let stop = loop {
        tokio::select! {
            end = &mut output => break Stop::Output(end.unwrap_or(OutputEnd::Ended)),
            chunk = recv_input(&mut local.input) => match chunk {
                Some(chunk) => match options.detach_key.find(&chunk) {
                    Some(at) => {
                        if at > 0 {
                            let _ = to_server.send(ClientFrame::Input(Bytes::copy_from_slice(&chunk[..at])));
                        }
                        break Stop::DetachKey;
                    }
                    // A failed send means a failed connection: the output
                    // side reports it.
                    None => { let _ = to_server.send(ClientFrame::Input(Bytes::from(chunk))); }
                },
                None => local.input = None,
            },
            _ = local.winch.recv() => {
                if let Some(new) = terminal::window_size() {
                    local.size = Some(new);
                    let _ = to_server.send(ClientFrame::Resize(WindowSize::from(new)));
                }
            }
            Some(ask) = nudge_rx.recv() => {
                if ask == Ask::Repaint {
                    let _ = to_server.send(ClientFrame::Repaint);
                } else if let Some(size) = local.size {
                    // A resize away and back: the kernel signals only a change.
                    let rows = if size.rows > 1 { size.rows - 1 } else { size.rows + 1 };
                    let _ = to_server.send(ClientFrame::Resize(WindowSize::new(rows, size.cols)));
                    let _ = to_server.send(ClientFrame::Resize(WindowSize::from(size)));
                }
            }
            // Looked at every second (a condition here would be evaluated
            // only when another branch wakes the loop).
            _ = asking.tick() => {
                if !*connected.borrow() && local.raw.is_some()
                    && let Some(group) = transports.asking_group()
                {
                    lend_terminal(local, group, &mut asking_link, &transports).await;
                }
            }
            _ = local.terminate.recv() => break Stop::Signal(libc_signal::TERM),
            _ = local.hangup.recv() => break Stop::Signal(libc_signal::HUP),
            _ = local.interrupt.recv() => break Stop::Signal(libc_signal::INT),
        }
    };

    let (stop, end) = match stop {
        Stop::Output(end) => (Stop::Output(OutputEnd::Ended), Some(end)),
        stop @ (Stop::DetachKey | Stop::Signal(_)) => {
            let _ = to_server.send(ClientFrame::Detach);
            // Connected, the server confirms by ending its stream; while the
            // connection is down there is nobody to wait for.
            let wait = if *connected.borrow() { DETACH_TIMEOUT } else { Duration::ZERO };
            let end = match tokio::time::timeout(wait, &mut output).await {
                Ok(end) => end.ok(),
                Err(_) => {
                    output.abort();
                    None
                }
            };
            (stop, end)
        }
    };
    drop(to_server);
    let wait = if *connected.borrow() { Duration::from_secs(1) } else { Duration::ZERO };
    if tokio::time::timeout(wait, &mut sender).await.is_err() {
        sender.abort();
    }
    control.close_gracefully(transport::END_OF_STREAM_WAIT).await;
    transports.close().await;
    (stop, end, transports.server_gone())
}

/// Signal numbers, for exit codes and messages.
mod libc_signal {
    pub(super) const HUP: i32 = 1;
    pub(super) const INT: i32 = 2;
    pub(super) const TERM: i32 = 15;
}

/// Where the typed input comes from.
enum Input {
    /// The terminal itself, read on the runtime's thread (no hop per key).
    Terminal(TerminalInput),
    /// Standard input, read on a thread of its own.
    Thread(mpsc::Receiver<Vec<u8>>),
}

/// The terminal on standard input, opened once more, non-blocking: the new
/// open file description is this reader's alone, so standard output (the
/// same terminal) and the shell after us keep blocking I/O.
struct TerminalInput {
    fd: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
    buf: Vec<u8>,
}

impl TerminalInput {
    fn open() -> io::Result<TerminalInput> {
        use rustix::fs::{Mode, OFlags};
        let path = rustix::termios::ttyname(io::stdin(), Vec::new())?;
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let fd = rustix::fs::open(path.as_c_str(), flags, Mode::empty())?;
        let fd = crate::fd::register(fd, tokio::io::Interest::READABLE)?;
        Ok(TerminalInput { fd, buf: vec![0u8; 16 * 1024] })
    }

    /// The next chunk; `None` at the end (the terminal hung up).
    ///
    /// Cancel safe: nothing is read until the terminal is readable, and a
    /// read completes without awaiting.
    async fn next(&mut self) -> Option<Vec<u8>> {
        loop {
            let mut ready = self.fd.readable().await.ok()?;
            let buf = &mut self.buf;
            match ready.try_io(|fd| rustix::io::read(fd, &mut buf[..]).map_err(io::Error::from)) {
                Ok(Ok(0)) => return None,
                Ok(Ok(count)) => return Some(buf[..count].to_vec()),
                Ok(Err(err)) if err.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(_)) => return None,
                Err(_would_block) => {}
            }
        }
    }
}

/// The next chunk of input; pending for ever once input has ended.
async fn recv_input(input: &mut Option<Input>) -> Option<Vec<u8>> {
    match input {
        Some(Input::Terminal(terminal)) => terminal.next().await,
        Some(Input::Thread(receiver)) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// Sends the frames from `outbox` in order until it closes or the
/// connection fails, then ends this side's stream: the server waits for
/// that end before it lets the connection go.
async fn send_frames<W: AsyncWrite + Unpin>(
    mut writer: ClientWriter<W>,
    mut outbox: mpsc::UnboundedReceiver<ClientFrame>,
) {
    while let Some(frame) = outbox.recv().await {
        if writer.send(&frame).await.is_err() {
            return;
        }
    }
    let _ = tokio::time::timeout(transport::END_OF_STREAM_WAIT, writer.into_inner().shutdown()).await;
}

/// Lets the input thread be stopped: it reads only while it holds the
/// lock and the gate is open, so whoever closes the gate under the lock
/// knows that no further byte is taken from the terminal.
#[derive(Debug, Default)]
struct InputGate {
    closed: Mutex<bool>,
}

impl InputGate {
    fn set_closed(&self, closed: bool) {
        *self.closed.lock().unwrap_or_else(PoisonError::into_inner) = closed;
    }
}

/// Reads standard input on a thread of its own (a blocked read must never
/// hold up the runtime's shutdown), while `gate` is open.
fn spawn_stdin_reader(gate: Arc<InputGate>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(16);
    let spawned = std::thread::Builder::new().name("rpty-stdin".into()).spawn(move || {
        let mut stdin = io::stdin();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let read = {
                let closed = gate.closed.lock().unwrap_or_else(PoisonError::into_inner);
                if *closed {
                    None
                } else {
                    // Wait for input a little at a time, so that closing
                    // the gate never waits long.
                    let mut fds = [rustix::event::PollFd::new(&stdin, rustix::event::PollFlags::IN)];
                    let timeout = rustix::event::Timespec { tv_sec: 0, tv_nsec: 50_000_000 };
                    match rustix::event::poll(&mut fds, Some(&timeout)) {
                        Ok(0) | Err(rustix::io::Errno::INTR) => None,
                        Ok(_) => Some(stdin.read(&mut buf)),
                        Err(err) => Some(Err(err.into())),
                    }
                }
            };
            match read {
                None => {
                    if tx.is_closed() {
                        break;
                    }
                    if *gate.closed.lock().unwrap_or_else(PoisonError::into_inner) {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                Some(Ok(0)) => break,
                Some(Ok(count)) => {
                    if tx.blocking_send(buf[..count].to_vec()).is_err() {
                        break;
                    }
                }
                Some(Err(err)) if err.kind() == io::ErrorKind::Interrupted => continue,
                Some(Err(_)) => break,
            }
        }
    });
    if let Err(err) = spawned {
        tracing::warn!(error = %err, "cannot read the terminal's input");
    }
    rx
}

/// Lends the terminal to the transport process group `group`, which is
/// stopped because it wants to ask the user something (a reconnecting
/// ssh's password): input stops being read, the terminal goes back to its
/// ordinary mode, the group gets the foreground and is continued; once the
/// link is back (or the transport ended, or `LEND_TIMEOUT` passed) the
/// terminal is taken back and raw again.
async fn lend_terminal(
    local: &mut Local,
    group: u32,
    link: &mut watch::Receiver<bool>,
    transports: &transport::Transports,
) {
    tracing::info!(group, "the transport asks for input; lending it the terminal");
    local.gate.set_closed(true);
    {
        let mut out = io::stdout().lock();
        let mut screen = lock(&local.screen);
        screen.lent = true;
        if screen.status_line_rows.take().is_some() {
            let _ = out.write_all(terminal::REMOVE_STATUS_LINE);
        }
        drop(screen);
        let _ = out.write_all(b"\r\nrpty: the transport asks for input while reconnecting:\r\n");
        let _ = out.flush();
    }
    if let Some(raw) = &local.raw {
        raw.suspend();
    }
    let lent = crate::foreground::lend(group);
    transport::continue_group(group);
    let answered = async {
        loop {
            if *link.borrow_and_update() || !transports.is_running(group) {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), link.changed()).await;
        }
    };
    let _ = tokio::time::timeout(LEND_TIMEOUT, answered).await;
    drop(lent);
    if let Some(raw) = &local.raw {
        raw.resume();
    }
    lock(&local.screen).lent = false;
    local.gate.set_closed(false);
    tracing::info!(group, "terminal taken back from the transport");
}

/// The longest the terminal is lent to a transport that asks.
const LEND_TIMEOUT: Duration = Duration::from_secs(120);

/// What the status line says while the link is down.
struct LinkStatus {
    transports: transport::Transports,
    control: backedpipe::PipeControl,
    detach_key: DetachKey,
}

/// Follows a period without a link: since when, and the failed attempts
/// to get it back.
struct Outage {
    since: Instant,
    failures_before: u64,
    failures_seen: u64,
    last_failure: Option<Instant>,
}

impl LinkStatus {
    fn start(&self) -> Outage {
        let failures = self.control.stats().failed_attempts;
        Outage { since: Instant::now(), failures_before: failures, failures_seen: failures, last_failure: None }
    }

    /// The status line's text now, at most `width` characters: how long
    /// the link has been down, why (shortened to fit), when the next
    /// attempt comes, and how to leave.
    fn text(&self, outage: &mut Outage, width: usize) -> String {
        let now = Instant::now();
        let failures = self.control.stats().failed_attempts;
        if failures != outage.failures_seen {
            outage.failures_seen = failures;
            outage.last_failure = Some(now);
        }
        let lost = now.duration_since(outage.since);
        let consecutive = u32::try_from(failures - outage.failures_before).unwrap_or(u32::MAX);
        let retry = match outage.last_failure {
            Some(failed) => {
                let wait = (failed + transport::retry_delay(consecutive)).saturating_duration_since(now);
                if wait.is_zero() {
                    "retrying now".to_owned()
                } else {
                    format!("retrying in {}s", wait.as_secs_f64().ceil() as u64)
                }
            }
            None => "reconnecting".to_owned(),
        };
        status_text(lost, self.transports.down_reason().as_deref(), &retry, self.detach_key, width)
    }
}

/// `rpty: connection lost 12s ago (ssh exited 255: Connection refused);
/// retrying in 2s — Ctrl-\ detaches`, made to fit `width` characters: the
/// detach hint goes first, then the reason is shortened.
fn status_text(lost: Duration, reason: Option<&str>, retry: &str, key: DetachKey, width: usize) -> String {
    let head = format!("rpty: connection lost {}s ago", lost.as_secs());
    let hint = if key.byte().is_some() { format!(" — {key} detaches") } else { String::new() };
    let with = |reason: Option<&str>, hint: &str| match reason {
        Some(reason) => format!("{head} ({reason}); {retry}{hint}"),
        None => format!("{head}; {retry}{hint}"),
    };
    let full = with(reason, &hint);
    if full.chars().count() <= width {
        return full;
    }
    let without_hint = with(reason, "");
    if without_hint.chars().count() <= width {
        return without_hint;
    }
    let room = width.saturating_sub(with(None, "").chars().count() + 3);
    match reason {
        Some(reason) if room >= 12 => with(Some(&shorten(reason, room)), ""),
        _ => shorten(&with(None, ""), width.max(1)),
    }
}

/// What the output side asks of the input side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    /// A resize away and back, so that the program redraws.
    Nudge,
    /// A repaint of the screen from the server's model.
    Repaint,
}

/// How [`pump_output`] treats the screen.
struct OutputSettings {
    /// What to do around the replay.
    redraw: Redraw,
    /// The server restores the screen (it can repaint it on request).
    restores_screen: bool,
    /// What the status line says.
    status: LinkStatus,
    /// The server writes to the terminal itself: no status line (the
    /// output does not pass through the link).
    direct: bool,
}

/// Copies the session's output to standard output, follows the terminal
/// modes it sets, and shows the status line while the connection is down
/// (updated every second).
async fn pump_output<R: AsyncRead + Unpin>(
    mut frames: ClientReader<R>,
    mut link: watch::Receiver<bool>,
    nudge: mpsc::Sender<Ask>,
    screen: Arc<Mutex<Screen>>,
    settings: OutputSettings,
) -> OutputEnd {
    let OutputSettings { redraw, restores_screen, status, direct } = settings;
    let mut stdout = tokio::io::stdout();
    let is_terminal = io::stdout().is_terminal() && !direct;
    let mut first_frame = true;
    let mut link_open = true;
    let mut outage: Option<Outage> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let update = tokio::select! {
            frame = frames.next() => {
                let frame = match frame {
                    Ok(Some(frame)) => frame,
                    Ok(None) => return OutputEnd::Ended,
                    Err(err) => return OutputEnd::Failed(err),
                };
                let starts = std::mem::replace(&mut first_frame, false);
                match frame {
                    ServerFrame::Replay(data) | ServerFrame::Output(data) => {
                        let mut out = Vec::with_capacity(data.len() + 8);
                        if starts && redraw == Redraw::ClearAndNudge && is_terminal {
                            out.extend_from_slice(terminal::CLEAR_SCREEN);
                        }
                        out.extend_from_slice(&data);
                        lock(&screen).modes.observe(&data);
                        if let Err(err) = write_out(&mut stdout, &out).await {
                            return OutputEnd::Stdout(err);
                        }
                    }
                    ServerFrame::ReplayEnd if redraw != Redraw::None => {
                        let _ = nudge.try_send(Ask::Nudge);
                    }
                    ServerFrame::Exited(status) => return OutputEnd::Exited(status),
                    ServerFrame::Detached(reason) => return OutputEnd::Detached(reason),
                    _ => {}
                }
                None
            }
            changed = link.changed(), if link_open => {
                if changed.is_err() {
                    link_open = false;
                    continue;
                }
                let connected = *link.borrow_and_update();
                tracing::info!(connected, "connection state");
                match (connected, outage.is_some()) {
                    (false, false) => {
                        let mut started = status.start();
                        let update = show_status(&screen, |width| status.text(&mut started, width));
                        outage = Some(started);
                        tick.reset();
                        update.filter(|_| is_terminal)
                    }
                    (true, true) => {
                        outage = None;
                        let shown = lock(&screen).status_line_rows.take();
                        shown.map(|_| {
                            // The server's screen model redraws the whole
                            // screen as it is now; a raw client can only
                            // have the program redraw.
                            let _ = nudge.try_send(if restores_screen { Ask::Repaint } else { Ask::Nudge });
                            terminal::REMOVE_STATUS_LINE.to_vec()
                        })
                    }
                    _ => None,
                }
            }
            _ = tick.tick(), if outage.is_some() && is_terminal => {
                outage.as_mut().and_then(|outage| show_status(&screen, |width| status.text(outage, width)))
            }
        };
        if let Some(update) = update
            && let Err(err) = write_out(&mut stdout, &update).await
        {
            return OutputEnd::Stdout(err);
        }
    }
}

/// The bytes that show the status line, its text made for the width: the
/// first time, the screen moves up a row to make room, so that nothing on
/// it is lost.
fn show_status(screen: &Mutex<Screen>, text: impl FnOnce(usize) -> String) -> Option<Vec<u8>> {
    let size = terminal::window_size()?;
    let text = text(usize::from(size.cols).saturating_sub(2));
    let text = text.as_str();
    let mut screen = lock(screen);
    if screen.lent {
        return None;
    }
    let mut out = Vec::new();
    if screen.status_line_rows.is_none() {
        out.extend(terminal::make_room_for_status_line(size.rows));
    }
    screen.status_line_rows = Some(size.rows);
    out.extend(terminal::status_line(size, text));
    Some(out)
}

/// Output up to this size is written on the runtime's own thread when the
/// terminal can take it at once: keystroke echo then costs no hop to
/// tokio's blocking pool and back.
const DIRECT_WRITE_BYTES: usize = 4096;

/// Writes `data` to standard output. A small write to a terminal that has
/// room now is made directly (it cannot block long); anything else goes
/// through tokio's `Stdout`, so that a terminal that stops reading never
/// blocks the client (the detach key still works).
async fn write_out(stdout: &mut tokio::io::Stdout, data: &[u8]) -> io::Result<()> {
    if data.len() <= DIRECT_WRITE_BYTES && writable_now(&io::stdout()) {
        let mut out = io::stdout().lock();
        out.write_all(data)?;
        return out.flush();
    }
    stdout.write_all(data).await?;
    stdout.flush().await
}

/// Whether a write to `fd` would not block now.
fn writable_now(fd: &impl std::os::fd::AsFd) -> bool {
    let mut fds = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::OUT)];
    let now = rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 };
    matches!(rustix::event::poll(&mut fds, Some(&now)), Ok(1..))
        && fds[0].revents().contains(rustix::event::PollFlags::OUT)
}

/// `rpty bridge`: standard input and output joined to the local server's
/// socket, for `--via` on the other end.
pub(crate) async fn bridge(runtime: &RuntimeDir) -> Result<ExitCode> {
    let stream = crate::autostart::ensure_server(runtime).await?;
    let (mut from_server, mut to_server) = stream.into_split();
    let upstream = async {
        let mut stdin = tokio::io::stdin();
        let _ = tokio::io::copy(&mut stdin, &mut to_server).await;
        let _ = to_server.shutdown().await;
        std::future::pending::<()>().await;
    };
    let downstream = async {
        let mut stdout = tokio::io::stdout();
        let copied = tokio::io::copy(&mut from_server, &mut stdout).await;
        let _ = stdout.flush().await;
        copied
    };
    tokio::select! {
        () = upstream => {}
        copied = downstream => {
            if let Err(err) = copied {
                tracing::info!(error = %err, "bridge ended");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_naturally() {
        assert_eq!(format_age(0), "0s");
        assert_eq!(format_age(59), "59s");
        assert_eq!(format_age(60), "1m");
        assert_eq!(format_age(3599), "59m");
        assert_eq!(format_age(3600 + 7 * 60), "1h07m");
        assert_eq!(format_age(2 * 86400 + 4 * 3600 + 5), "2d4h");
    }

    #[test]
    fn the_status_line_fits_its_width_keeping_what_matters_most() {
        let key = DetachKey::default();
        let lost = Duration::from_secs(12);
        let reason = Some("ssh exited 255: Connection refused");
        assert_eq!(
            status_text(lost, reason, "retrying in 2s", key, 200),
            "rpty: connection lost 12s ago (ssh exited 255: Connection refused); retrying in 2s — Ctrl-\\ detaches"
        );
        assert_eq!(
            status_text(lost, reason, "retrying in 2s", key, 90),
            "rpty: connection lost 12s ago (ssh exited 255: Connection refused); retrying in 2s"
        );
        let narrow = status_text(lost, reason, "retrying in 2s", key, 70);
        assert_eq!(narrow, "rpty: connection lost 12s ago (ssh exited 255: Conne…); retrying in 2s");
        assert_eq!(narrow.chars().count(), 70);
        assert!(status_text(lost, reason, "retrying in 2s", key, 20).chars().count() <= 20);
        assert_eq!(
            status_text(lost, None, "reconnecting", "none".parse().unwrap(), 80),
            "rpty: connection lost 12s ago; reconnecting"
        );
    }

    #[test]
    fn long_commands_are_shortened_on_a_character_boundary() {
        assert_eq!(shorten("vim", 40), "vim");
        let long = "é".repeat(50);
        let short = shorten(&long, 40);
        assert_eq!(short.chars().count(), 40);
        assert!(short.ends_with('…'));
    }
}
