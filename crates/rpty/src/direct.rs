//! The server's side of a terminal handed over by a local client
//! ([`LocalTerminal`]): the server opens the client's terminal, writes the
//! session's output there and reads the keys from it itself, as tmux's
//! server does. A keystroke's echo then wakes two processes (the server
//! and the program) instead of three (the client too, on the way in and
//! out); the client only forwards its window size and signals, and waits
//! for the end.
//!
//! The connection carries, from the client, its frames as usual (`Resize`,
//! `Repaint`, `Detach`; `Input` is taken too, though a client that handed
//! its terminal over sends none), and to the client `ReplayEnd` (after the
//! replay is on the terminal, so that the client can have the program
//! redraw) and the final frame: `Exited`, or `Detached` with its reason,
//! [`DetachReason::Requested`] when the server saw the detach key. The
//! server touches the terminal only after the client's first frame (its
//! window size, sent once the terminal is raw and the client handles its
//! signals), so no output is written to a terminal still in its ordinary
//! mode and no key is taken before the client is ready to be detached.
//!
//! The terminal is given back (no longer read or written) when serving
//! ends: the session exits, the client is detached, asks to detach, or
//! hangs up, and at once when the client's process exits (watched through
//! a pidfd), so that a killed client never leaves the server reading the
//! keys meant for the shell.

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ptysession::framing::{ClientFrame, FrameSink, ServeOutcome, ServerFrame};
use ptysession::{Attachment, DetachReason, Event, Input};
use rustix::fs::{FileType, Mode, OFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, Interest};
use tokio::sync::Notify;

use crate::fd::{self, Writer};
use crate::keys::DetachKey;
use crate::protocol::LocalTerminal;
use crate::terminal::{self, ModeTracker};

/// Output gathered into one write to the terminal, at most.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// How long the server tries to write the rest of the output and put the
/// terminal's modes back at the end (a terminal that stopped reading is
/// left as it is).
const RESET_TIMEOUT: Duration = Duration::from_secs(1);

/// A client's terminal, opened by the server, and the client's process.
#[derive(Debug)]
pub(crate) struct Terminal {
    tty: AsyncFd<OwnedFd>,
    client: AsyncFd<OwnedFd>,
    detach_key: DetachKey,
}

impl Terminal {
    /// Opens the terminal `offer` names, if it is a terminal that belongs
    /// to this process's user and the very file the client has (the same
    /// device and inode: another mount namespace may show another terminal
    /// under the same path), and watches the client's process.
    ///
    /// # Errors
    ///
    /// When the device cannot be opened, is not a terminal, is another
    /// file than the client's, belongs to another user, or the client's
    /// process cannot be watched (it is gone, or the kernel has no pidfds);
    /// the caller then serves the client through its connection instead.
    pub(crate) fn open(offer: &LocalTerminal) -> io::Result<Terminal> {
        let flags = OFlags::RDWR | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let tty = rustix::fs::open(offer.path.as_str(), flags, Mode::empty())?;
        let stat = rustix::fs::fstat(&tty)?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::CharacterDevice || !rustix::termios::isatty(&tty) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a terminal", offer.path)));
        }
        if (stat.st_dev, stat.st_ino) != (offer.device, offer.inode) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} here is not the client's terminal", offer.path),
            ));
        }
        if stat.st_uid != rustix::process::getuid().as_raw() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} belongs to another user", offer.path),
            ));
        }
        let pid = i32::try_from(offer.pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no such client process"))?;
        let client = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())?;
        Ok(Terminal {
            tty: fd::register(tty, Interest::READABLE)?,
            client: fd::register(client, Interest::READABLE)?,
            detach_key: DetachKey::from_byte(offer.detach_key),
        })
    }
}

/// How a client served on its own terminal is treated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    /// Keys are read (for the detach key) but not delivered.
    pub(crate) read_only: bool,
    /// Clear the screen before the replay (a raw replay of a session with
    /// a past).
    pub(crate) clear_first: bool,
}

/// How serving ended, before the last words are said.
enum End {
    Exited(ptysession::ExitStatus),
    Detached(DetachReason),
    /// The detach key was typed.
    Key,
    /// The client sent `Detach`.
    ClientAsked,
    /// The client's process exited or its connection ended.
    ClientGone,
    /// The terminal hung up or failed.
    TerminalGone(io::Error),
}

/// Serves an attached client on its own `terminal`, its connection being
/// `reader` (the client's frames) and `sink` (the server's frames); see
/// the module's description. When `displaced` is notified the client is
/// detached with [`DetachReason::Displaced`].
///
/// # Errors
///
/// [`ptysession::Error::Connection`] when the connection fails,
/// [`ptysession::Error::Frame`] when the client breaks the framing.
pub(crate) async fn serve<R, S>(
    attachment: Attachment,
    terminal: Terminal,
    mut reader: R,
    mut sink: S,
    options: Options,
    displaced: &Notify,
) -> Result<ServeOutcome, ptysession::Error>
where
    R: AsyncRead + Unpin,
    S: FrameSink,
{
    let input = attachment.input();
    let mut received = BytesMut::new();
    let ready = tokio::select! {
        frame = next_frame(&mut reader, &mut received) => frame?,
        _ = terminal.client.readable() => None,
    };
    match ready {
        None => return Ok(ServeOutcome::ClientDisconnected),
        Some(ClientFrame::Detach) => return Ok(ServeOutcome::ClientDetached),
        Some(frame) => carry_out(frame, &input, options.read_only).await,
    }
    let mut writer = Writer::default();
    let mut modes = ModeTracker::default();
    let tty = terminal.tty.get_ref();

    // A client restoring the screen gets the repaint as its replay.
    let (replay, first, mut events, _) = attachment.into_view().await;
    // Output taken from the session and not yet on the terminal, the replay
    // first: kept here when serving ends in the middle of a write, so that
    // the last words do not land inside an escape sequence.
    let mut batch = BytesMut::with_capacity(replay.len() + terminal::CLEAR_SCREEN.len());
    if options.clear_first {
        batch.extend_from_slice(terminal::CLEAR_SCREEN);
    }
    batch.extend_from_slice(&replay);
    modes.observe(&replay);

    let end = {
        // The keys, the client's frames and its exit are watched from the
        // start, the replay's writing included.
        let outgoing = async {
            if let Err(err) = writer.drain(tty, &mut batch).await {
                return Ok(End::TerminalGone(err));
            }
            send(&mut sink, ServerFrame::ReplayEnd).await?;
            let mut detach = std::pin::pin!(displaced.notified());
            let mut pending = first;
            loop {
                let mut event = match pending.take() {
                    Some(event) => Some(event),
                    None => tokio::select! {
                        event = events.next() => event,
                        () = &mut detach => Some(Event::Detached(DetachReason::Displaced)),
                    },
                };
                let mut end = None;
                loop {
                    match event {
                        None => {
                            end = Some(End::Detached(DetachReason::Closed));
                            break;
                        }
                        Some(Event::Output(data) | Event::Repaint(data)) => {
                            modes.observe(&data);
                            batch.extend_from_slice(&data);
                        }
                        Some(Event::Exited(status)) => {
                            end = Some(End::Exited(status));
                            break;
                        }
                        Some(Event::Detached(reason)) => {
                            end = Some(End::Detached(reason));
                            break;
                        }
                        // Events of later versions concern other clients.
                        Some(_) => {}
                    }
                    if batch.len() >= WRITE_BATCH_BYTES {
                        break;
                    }
                    match events.try_next() {
                        Some(next) => event = Some(next),
                        None => break,
                    }
                }
                if let Err(err) = writer.drain(tty, &mut batch).await {
                    return Ok(End::TerminalGone(err));
                }
                if let Some(end) = end {
                    return Ok(end);
                }
            }
        };
        let keys = read_keys(&terminal, &input, options.read_only);
        let frames = read_frames(&mut reader, received, &input, options.read_only);
        tokio::select! {
            end = outgoing => end?,
            end = keys => end,
            end = frames => end?,
            _ = terminal.client.readable() => End::ClientGone,
        }
    };

    // Last words: the rest of the output and the session's modes put back
    // on the terminal before the client hears the end (it then restores
    // its settings and speaks).
    let outcome = match end {
        End::Exited(status) => {
            put_back(&mut writer, tty, &mut batch, &modes).await;
            send(&mut sink, ServerFrame::Exited(status)).await?;
            ServeOutcome::Exited(status)
        }
        // The client attaches again at once: its screen goes on.
        End::Detached(reason @ DetachReason::Lagged { .. }) => {
            send(&mut sink, ServerFrame::Detached(reason)).await?;
            ServeOutcome::Detached(reason)
        }
        End::Detached(reason) => {
            put_back(&mut writer, tty, &mut batch, &modes).await;
            send(&mut sink, ServerFrame::Detached(reason)).await?;
            ServeOutcome::Detached(reason)
        }
        End::Key => {
            put_back(&mut writer, tty, &mut batch, &modes).await;
            send(&mut sink, ServerFrame::Detached(DetachReason::Requested)).await?;
            ServeOutcome::Detached(DetachReason::Requested)
        }
        End::ClientAsked => {
            put_back(&mut writer, tty, &mut batch, &modes).await;
            ServeOutcome::ClientDetached
        }
        End::ClientGone => ServeOutcome::ClientDisconnected,
        End::TerminalGone(err) => {
            tracing::info!(error = %err, "the client's terminal is gone");
            ServeOutcome::ClientDisconnected
        }
    };
    Ok(outcome)
}

/// Writes the rest of the output (`rest`) and the reset of the modes the
/// session switched on, unless the terminal does not take them within
/// [`RESET_TIMEOUT`].
async fn put_back(writer: &mut Writer, tty: &OwnedFd, rest: &mut BytesMut, modes: &ModeTracker) {
    rest.extend_from_slice(&modes.reset_sequence());
    let _ = tokio::time::timeout(RESET_TIMEOUT, writer.drain(tty, rest)).await;
}

/// Reads the keys typed on the terminal and delivers them (unless
/// `read_only`) until the detach key, which ends serving; what follows the
/// key in the same read is left alone, as the client does.
async fn read_keys(terminal: &Terminal, input: &Input, read_only: bool) -> End {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let mut ready = match terminal.tty.readable().await {
            Ok(ready) => ready,
            Err(err) => return End::TerminalGone(err),
        };
        let read = ready.try_io(|fd| {
            loop {
                match rustix::io::read(fd.get_ref(), &mut buf[..]) {
                    Err(rustix::io::Errno::INTR) => continue,
                    result => return result.map_err(io::Error::from),
                }
            }
        });
        let count = match read {
            Ok(Ok(0)) => return End::TerminalGone(io::ErrorKind::UnexpectedEof.into()),
            Ok(Ok(count)) => count,
            Ok(Err(err)) => return End::TerminalGone(err),
            Err(_would_block) => continue,
        };
        let keys = &buf[..count];
        let (keys, detach) = match terminal.detach_key.find(keys) {
            Some(at) => (&keys[..at], true),
            None => (keys, false),
        };
        if !read_only && !keys.is_empty() {
            // A closed session ends the output side with its status.
            let _ = input.write(Bytes::copy_from_slice(keys)).await;
        }
        if detach {
            return End::Key;
        }
    }
}

/// Reads the client's frames (after what `buf` holds) and carries them
/// out until it detaches or its connection ends.
async fn read_frames<R: AsyncRead + Unpin>(
    reader: &mut R,
    mut buf: BytesMut,
    input: &Input,
    read_only: bool,
) -> Result<End, ptysession::Error> {
    loop {
        match next_frame(reader, &mut buf).await? {
            None => return Ok(End::ClientGone),
            Some(ClientFrame::Detach) => return Ok(End::ClientAsked),
            Some(frame) => carry_out(frame, input, read_only).await,
        }
    }
}

/// The client's next frame, `None` at the end of its stream.
///
/// # Cancel safety
///
/// Cancel safe: what was read stays in `buf`.
async fn next_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
) -> Result<Option<ClientFrame>, ptysession::Error> {
    loop {
        if let Some(frame) = ClientFrame::decode(buf)? {
            return Ok(Some(frame));
        }
        if reader.read_buf(buf).await.map_err(ptysession::Error::Connection)? == 0 {
            return Ok(None);
        }
    }
}

/// Carries out a client's frame other than `Detach`.
async fn carry_out(frame: ClientFrame, input: &Input, read_only: bool) {
    match frame {
        ClientFrame::Input(data) if !read_only => {
            let _ = input.write(data).await;
        }
        // Refusals are counted in the session's stats.
        ClientFrame::Resize(size) => {
            let _ = input.resize(size);
        }
        ClientFrame::Repaint => {
            let _ = input.request_repaint();
        }
        _ => {}
    }
}

/// Encodes `frame` and sends it.
async fn send<S: FrameSink>(sink: &mut S, frame: ServerFrame) -> Result<(), ptysession::Error> {
    let mut out = BytesMut::new();
    frame.encode(&mut out);
    sink.send(out.freeze()).await.map_err(ptysession::Error::Connection)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new pseudo-terminal: its master, and its other end's path and
    /// descriptor.
    fn pty() -> (OwnedFd, String, OwnedFd) {
        use rustix::pty::OpenptFlags;
        let master = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
        rustix::pty::grantpt(&master).unwrap();
        rustix::pty::unlockpt(&master).unwrap();
        let name = rustix::pty::ptsname(&master, Vec::new()).unwrap();
        let flags = OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC;
        let slave = rustix::fs::open(name.as_c_str(), flags, Mode::empty()).unwrap();
        (master, name.to_string_lossy().into_owned(), slave)
    }

    fn offer_for(path: &str, file: &impl std::os::fd::AsFd, pid: u32) -> LocalTerminal {
        let stat = rustix::fs::fstat(file).unwrap();
        LocalTerminal::new(path.into(), stat.st_dev, stat.st_ino, pid, Some(0x1c))
    }

    #[tokio::test]
    async fn only_the_clients_own_terminal_is_taken() {
        let (_master, path, slave) = pty();
        let me = std::process::id();
        let terminal = Terminal::open(&offer_for(&path, &slave, me)).expect("the client's terminal is taken");
        assert_eq!(terminal.detach_key, DetachKey::default());

        // The same path showing another file (another mount namespace's
        // /dev/pts).
        let mut elsewhere = offer_for(&path, &slave, me);
        elsewhere.inode += 1;
        assert_eq!(Terminal::open(&elsewhere).unwrap_err().kind(), io::ErrorKind::NotFound);

        // A device that is not a terminal.
        let null = rustix::fs::open("/dev/null", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).unwrap();
        let not_a_terminal = offer_for("/dev/null", &null, me);
        assert_eq!(Terminal::open(&not_a_terminal).unwrap_err().kind(), io::ErrorKind::InvalidInput);

        // A client process that is gone.
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let pid = gone.id();
        gone.wait().unwrap();
        assert!(Terminal::open(&offer_for(&path, &slave, pid)).is_err(), "a gone client's terminal is not taken");
    }
}
