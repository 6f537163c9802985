//! Reconnecting PTY sessions: a command under a pseudo-terminal, a
//! scrollback ring, a screen model, and any number of clients attached at
//! once.
//!
//! A [`Session`] runs a command as the leader of a new session whose
//! controlling terminal is a fresh PTY. One task reads the terminal's output
//! continuously into a scrollback ring ([`seqring::Ring`], 64 KiB by
//! default) and fans every chunk out to the attached clients without
//! copying it per client ([`bytes::Bytes`]). A client that attaches gets:
//!
//! - the **replay**: the scrollback, starting at a clean boundary (never
//!   inside a UTF-8 sequence, never inside an escape sequence);
//! - then the **live output**, continuing exactly where the replay ends: no
//!   gap, no duplicate;
//! - then the command's **exit status**, after every byte it wrote.
//!
//! That is [`Session::attach`]: the raw byte stream, for consumers that run
//! their own terminal emulator (a web terminal). A terminal shown to a
//! person attaches with `Session::attach_screen` (feature `screen`, on by
//! default): each session also feeds its output through a headless
//! terminal emulator (`alacritty_terminal`), one per session on a thread of
//! its own, and such a client first gets an [`Event::Repaint`] synthesised
//! from it — the history lines (into the terminal's own scrollback), the
//! screen with its colours and attributes, the cursor, the alternate screen,
//! the input modes (cursor keys, keypad, mouse reporting and encoding,
//! bracketed paste, focus events, autowrap) and the window title — then the
//! live output that follows, with no gap and no duplicate. Terminal queries
//! (cursor position, device attributes, colour queries) are never part of
//! a repaint, so the user's terminal never answers a program that asked
//! long ago.
//!
//! Clients write input (each chunk written whole, never interleaved with
//! another client's) and set the window size (the command gets `SIGWINCH`;
//! with several clients the [`ResizePolicy`] decides, again whenever a
//! client attaches, resizes or leaves).
//!
//! **No client can slow the others or the command.** Each client has a
//! bounded queue. A raw client that falls further behind is detached with
//! [`DetachReason::Lagged`] and can attach again to get the scrollback; a
//! screen client has its backlog dropped and gets a fresh repaint instead
//! (like mosh, it skips output it could not show anyway).
//!
//! **Lifecycle.** [`State`]s move only forward, `Starting → Ready → Closing
//! → Done`, observable with [`Session::watch_state`]. A session closes when
//! asked ([`Session::close`]), when no client attached within the
//! first-attach timeout, when no client was attached for the inactivity
//! timeout, or when its command has exited and the linger time has passed
//! (until then a late client still gets the scrollback and the exit status;
//! after it, attaching through a [`SessionManager`] is
//! [`Error::NotFound`], never a new process). Closing hangs up the
//! command's whole process group (`SIGHUP`, then `SIGKILL`), reaps it, and
//! releases every descriptor and task. See [`Options`] for the timeouts.
//!
//! [`framing`] serves one attached client over any
//! `AsyncRead + AsyncWrite` connection with a small documented framing, and
//! gives the matching client side. [`Session::stats`] counts bytes, clients,
//! lagging clients and errors.
//!
//! # Example
//!
//! ```
//! use std::process::Command;
//! use std::time::Duration;
//! use ptysession::{Event, Options, Session, WindowSize};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ptysession::Error> {
//! let session = Session::spawn(Command::new("sh"), Options::new())?;
//!
//! // Attach, type a command, read until its output shows up.
//! let mut client = session.attach(Some(WindowSize::new(24, 80)))?;
//! client.write("echo hi\n").await?;
//! let mut screen = String::from_utf8_lossy(client.replay()).into_owned();
//! // The terminal echoes the typed line, then sh prints `hi`: two lines ending in "hi".
//! while screen.matches("hi\r\n").count() < 2 {
//!     let next = tokio::time::timeout(Duration::from_secs(10), client.next()).await;
//!     match next.expect("output within 10 s") {
//!         Some(Event::Output(data)) => screen.push_str(&String::from_utf8_lossy(&data)),
//!         other => panic!("unexpected {other:?}"),
//!     }
//! }
//! client.detach();
//! assert_eq!(session.clients(), 0);
//!
//! // Attach again: the replay shows what happened meanwhile.
//! let again = session.attach(None)?;
//! assert_eq!(String::from_utf8_lossy(again.replay()).matches("hi\r\n").count(), 2);
//! drop(again);
//!
//! session.close().await;
//! assert_eq!(session.state(), ptysession::State::Done);
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! - `screen` (default): the screen model, `Session::attach_screen`,
//!   [`Event::Repaint`] resynchronisation, and the `Options` that tune it.
//!   Without it the crate is the raw byte ring alone, with no emulator
//!   dependency.
//!
//! # Runtime
//!
//! Sessions need a tokio runtime with I/O and time enabled; each runs three
//! tasks (output reader, input writer, lifecycle supervisor) and childproc's
//! exit watcher, and, with the screen model, one thread of its own.
//!
//! # Logs
//!
//! The session's tasks log through `tracing` inside an `info` span named
//! `session`, with the session's `id` (when a [`SessionManager`] named it)
//! and its command's `pid`; childproc's lines about the command sit in a
//! `child` span inside it. The lines of many sessions in one log can so be
//! told apart.
//!
//! # Caveats
//!
//! - **What the raw replay restores.** [`Attachment::replay`] is the last
//!   bytes of output, not the screen. A line-oriented program (a shell, a
//!   build) looks as it did. A full-screen program has its screen state
//!   built from escape sequences that were probably evicted long ago: the
//!   replay shows fragments of recent redraws, modes set earlier are not
//!   restored, and queries in it are asked again. Restoring the screen is
//!   what `attach_screen` is for.
//! - **What a repaint restores.** Everything listed above; not restored:
//!   character sets other than ASCII, tab stops, a cursor saved with
//!   `DECSC`, palette changes, hyperlinks, the kitty keyboard protocol,
//!   and a few shapes no terminal can be made to show (half a wide
//!   character on the last column). A program's own state (what `vim`
//!   keeps beyond the screen) is the program's.
//! - **Sizes.** The size policy is applied before a client's repaint is
//!   rendered, and the screen model is resized in step with the terminal
//!   (it reflows as a terminal does), so a client whose window differs
//!   gets the screen at the session's new size; the program also gets
//!   `SIGWINCH` and redraws what it likes, which the client then sees live.
//!   A program that never redraws keeps its drawing, top-left. A client
//!   larger than the session (with [`ResizePolicy::Smallest`]) sees the
//!   screen in its top-left corner.
//! - **Clean boundary.** The raw replay starts where every terminal parser
//!   state leads to the ground state between two characters; it gives up at
//!   most 4 KiB of scrollback for that proof, and otherwise assumes the
//!   oldest retained byte is not inside an OSC/DCS/APC control string. When
//!   even that would give up more than 4 KiB (output of digits and line
//!   ends, such as `seq`'s, could all be one escape sequence's
//!   parameters), it starts after the first line end instead, assuming no
//!   escape sequence spans lines. Output that is not valid UTF-8 is not
//!   corrected.
//! - **The screen model's cost.** It parses every byte of output on its
//!   own thread, at 70–100 MB/s on text (see the repository's
//!   `docs/benchmarks.md`); bursts up to `Options::screen_backlog_bytes`
//!   (16 MiB) cost the output path nothing, and sustained output beyond
//!   that runs at the emulator's pace. Memory: 24 bytes a cell, about
//!   2 MiB for 1000 history lines of 80 columns
//!   (`Options::history_lines`), doubled while the alternate screen
//!   shows. `Options::screen_model(false)` turns it off for a session.
//! - **End of output.** Output ends when the last copy of the terminal
//!   closes (Linux reports `EIO`). A background process that keeps the
//!   terminal open after the command exits would delay that for ever, so
//!   output also ends once none has arrived for
//!   [`Options::exit_drain_timeout`] after the exit; later output of that
//!   process is not read.
//! - **Process group.** Closing signals the command's process group. A
//!   process that left it (`setsid`, `setpgid`, a daemon) is not signalled;
//!   it gets a hang-up on its terminal when the session releases it. Once
//!   the command has exited and been reaped, its group is no longer
//!   signalled. Processes killed with the group are reaped by init (or a
//!   subreaper), not by this crate.
//! - **Handles and drop.** A session runs until it closes, whether or not
//!   any [`Session`] handle exists; with no timeouts set, call
//!   [`Session::close`]. If the runtime shuts down first, the tasks stop,
//!   the command's process group gets `SIGKILL` at once (no graceful
//!   hang-up is possible any more) and childproc reaps the command.
//! - **Environment.** `TERM` is set to `xterm-256color` unless the command
//!   sets it (this process's own `TERM` describes its terminal, not the
//!   session's); `LC_CTYPE=C.UTF-8` is added when neither the command nor
//!   this process's environment names a UTF-8 locale and `LC_ALL` is unset.
//!   The check cannot see `Command::env_clear`.

#[cfg(not(target_os = "linux"))]
compile_error!("ptysession supports Linux only (PTYs through /dev/ptmx, pidfd through childproc); see its README");

mod attach;
mod boundary;
mod child;
mod error;
pub mod framing;
mod manager;
mod options;
mod pty;
mod queue;
#[cfg(feature = "screen")]
mod screen;
mod session;
mod stats;
mod status;

#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod fuzzing;

pub use attach::{Attachment, ClientId, Events, Input};
pub use error::Error;
pub use manager::SessionManager;
pub use options::{Options, ResizePolicy};
pub use pty::WindowSize;
pub use queue::Event;
#[cfg(feature = "screen")]
pub use screen::CaptureOptions;
pub use session::{Session, SessionInfo};
pub use stats::Stats;
pub use status::{CloseReason, DetachReason, ExitStatus, State};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
