//! `rpty`: terminal sessions that survive the client going away and the
//! connection breaking.
//!
//! A person runs `rpty new demo`, works in the session, presses the detach
//! key (Ctrl-\ by default) and is back in their shell while the session
//! keeps running; `rpty attach demo` brings it back with its scrollback.
//! The client talks to a local server over a [`backedpipe`] connection, so
//! when that connection breaks (the socket is cut, or the `--via` transport
//! process dies) the client shows "reconnecting…", resumes, and the session
//! continues with no byte lost or repeated.
//!
//! The pieces:
//!
//! - the **server** ([`Server`]) keeps sessions in a
//!   [`ptysession::SessionManager`] and answers one request per connection;
//!   it is started on demand in the background, listens on a Unix socket
//!   (mode 0600) in the [`RuntimeDir`], and exits when its last session
//!   ends;
//! - the **control exchange** ([`protocol`]) is the first message of every
//!   connection (new, attach, list or kill) and the server's answer; for an
//!   attach, [`ptysession::framing`] then carries the terminal over the same
//!   connection. Both only need `AsyncRead + AsyncWrite`, whatever carries
//!   the bytes;
//! - the **transport** turns a Unix socket, a TCP connection (with a secret)
//!   or a child process's stdin/stdout (`--via`, [`transport_stream`]) into
//!   that connection, as a [`backedpipe::BackedPipe`] that resumes after a
//!   break;
//! - the **client** puts the terminal in raw mode (always restored, also on
//!   errors and signals), passes bytes through unchanged, forwards window
//!   size changes, and watches for the [`DetachKey`]. A client of this
//!   machine's server hands its terminal over instead
//!   ([`protocol::LocalTerminal`]): the server writes the output and reads
//!   the keys there itself, as tmux's does, and a keystroke's echo costs
//!   no trip through the client.
//!
//! # Example
//!
//! A server in this process, asked over an in-memory connection to start a
//! detached session, to list the sessions, and to end it.
//!
//! ```
//! use rpty::protocol::{self, ClientHello, NewSession, Request, Response};
//! use rpty::{Server, ServerOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::new(ServerOptions::default());
//!
//! // One request per connection: its answer comes back on the same one.
//! async fn ask(server: &Server, request: Request) -> Result<Response, protocol::Error> {
//!     let (mut client, connection) = tokio::io::duplex(64 * 1024);
//!     tokio::spawn(server.clone().serve_connection(connection));
//!     protocol::write_message(&mut client, &ClientHello::new(request)).await?;
//!     protocol::read_message(&mut client).await
//! }
//!
//! let mut new = NewSession::new(vec!["sleep".into(), "30".into()]);
//! new.name = Some("build".into());
//! let created = ask(&server, Request::New(new)).await?;
//! assert_eq!(created, Response::Created { name: "build".into() });
//!
//! let Response::Sessions { sessions } = ask(&server, Request::List).await? else { panic!("no listing") };
//! assert_eq!(sessions.len(), 1);
//! assert_eq!((sessions[0].name.as_str(), sessions[0].command.as_str()), ("build", "sleep 30"));
//!
//! let killed = ask(&server, Request::Kill { name: "build".into() }).await?;
//! assert_eq!(killed, Response::Killed { name: "build".into() });
//! assert_eq!(server.session_count(), 0);
//! # Ok(())
//! # }
//! ```
//!
//! # Caveats
//!
//! - **What a re-attach shows.** The session's screen, redrawn from its
//!   screen model: the recent history lines land in this terminal's
//!   scrollback, then the screen with its colours, the cursor, the
//!   alternate screen of a full-screen program, the modes it set (cursor
//!   keys, keypad, mouse reporting, bracketed paste, focus events) and the
//!   title. Afterwards the size is nudged (to another size and back) as a
//!   courtesy, so that a program redraws what it keeps beyond the screen.
//!   `rpty attach --restore raw` replays the raw scrollback instead (the
//!   screen cleared first), as earlier versions did.
//! - **A terminal that cannot keep up.** A session never waits for a slow
//!   client. When more than 4 MiB of output waits for one (a huge `cat` on
//!   a slow terminal), the output it missed is replaced by a repaint of the
//!   screen as it is then (with `--restore raw`: it attaches again and
//!   shows the scrollback). Output is byte-exact across broken connections,
//!   not across such a skip.
//! - **Terminal modes.** When the client leaves, it (or the server, on a
//!   terminal handed over) switches off the modes
//!   the session turned on in the local terminal (alternate screen, mouse
//!   reporting, bracketed paste, hidden cursor, application keys); other
//!   state a program set (colours, scroll regions, character sets) is not
//!   tracked.
//! - **Processes.** Killing a session hangs up its process group; a process
//!   that left the group (a daemon) is not signalled. A session's processes
//!   are children of the server, which runs in a session of its own.
//! - **Security.** The Unix socket is reachable only by its owner (a 0700
//!   directory, a 0600 socket, and a check of the peer's uid). TCP needs
//!   the secret, which proves who connects but does not encrypt: carry TCP
//!   over a trusted network or a tunnel (`--via 'ssh host rpty bridge'` is
//!   the usual way).

#[cfg(not(target_os = "linux"))]
compile_error!("rpty supports Linux only (PTYs, SO_PEERCRED, pidfd)");

mod attached;
mod autostart;
mod cli;
mod client;
mod direct;
mod fd;
mod foreground;
mod keys;
mod logging;
mod paths;
pub mod protocol;
mod secret;
mod server;
mod terminal;
mod transport;

pub use cli::run;
pub use keys::{DetachKey, ParseKeyError};
pub use paths::{RUNTIME_DIR_ENV, RuntimeDir};
pub use server::{Server, ServerOptions};
