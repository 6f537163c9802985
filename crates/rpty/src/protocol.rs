//! The control exchange between a client and the server: the first message
//! of every connection ([`ClientHello`] with a [`Request`]) and the server's
//! [`Response`].
//!
//! Each message is a 4-byte big-endian length followed by that many bytes
//! of JSON (at most [`MAX_MESSAGE_BYTES`]). A connection carries exactly
//! one request and one response; after [`Response::Attached`] the same
//! connection carries the terminal with [`ptysession::framing`] (the server
//! sends the replay at once, so the client reads the response with
//! [`read_message`], which never reads past it). A client that offered its
//! terminal ([`LocalTerminal`]) and was answered with `direct` gets on the
//! connection only `ReplayEnd` and the final frame: the output goes to
//! its terminal.
//!
//! Nothing here depends on what carries the bytes: a Unix socket, a TCP
//! connection, a child process's stdio, or a [`backedpipe::BackedPipe`] over
//! any of them.
//!
//! ```
//! use rpty::protocol::{self, ClientHello, Request};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), protocol::Error> {
//! let (mut a, mut b) = tokio::io::duplex(1024);
//! let hello = ClientHello::new(Request::Kill { name: "build".into() });
//! protocol::write_message(&mut a, &hello).await?;
//! let received: ClientHello = protocol::read_message(&mut b).await?;
//! assert_eq!(received, hello);
//! # Ok(())
//! # }
//! ```

use std::io;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The version of the control exchange this build speaks.
pub const VERSION: u32 = 1;

/// The largest message, in bytes of JSON.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Longest session name.
pub const MAX_NAME_LEN: usize = 64;

/// What can go wrong reading or writing a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The connection ended before a whole message arrived.
    #[error("the connection ended before the answer arrived")]
    Ended,
    /// The length prefix announces more than [`MAX_MESSAGE_BYTES`].
    #[error("a message of {len} bytes is over the limit of {MAX_MESSAGE_BYTES}")]
    TooLarge {
        /// The announced length.
        len: usize,
    },
    /// The bytes are not a message of the expected kind.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Size {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

impl From<Size> for ptysession::WindowSize {
    fn from(size: Size) -> Self {
        ptysession::WindowSize::new(size.rows, size.cols)
    }
}

/// The first message of every connection: the client's protocol version,
/// how long the server should keep its connection while it is away, and
/// what it wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ClientHello {
    /// The client's [`VERSION`].
    pub version: u32,
    /// How long the server keeps this connection (and the client attached)
    /// while the transport is broken, waiting for the client to resume.
    pub resume_window_ms: u64,
    /// What the client asks for.
    pub request: Request,
    /// The client's own terminal, offered to a server on the same machine:
    /// when the request attaches, the server may read and write it itself
    /// (see [`LocalTerminal`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal: Option<LocalTerminal>,
}

impl ClientHello {
    /// A hello at this build's [`VERSION`], with a 30 s resume window.
    ///
    /// ```
    /// let hello = rpty::protocol::ClientHello::new(rpty::protocol::Request::List);
    /// assert_eq!(hello.version, rpty::protocol::VERSION);
    /// ```
    pub fn new(request: Request) -> ClientHello {
        ClientHello { version: VERSION, resume_window_ms: 30_000, request, terminal: None }
    }

    /// The same hello offering the client's terminal.
    pub fn with_terminal(mut self, terminal: Option<LocalTerminal>) -> ClientHello {
        self.terminal = terminal;
        self
    }

    /// The same hello with another resume window.
    pub fn with_resume_window(mut self, window: Duration) -> ClientHello {
        self.resume_window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        self
    }
}

/// A local client's terminal, offered to the server in its hello.
///
/// A server that takes it ([`Response::Attached`] with `direct`) opens the
/// terminal itself and reads the keys and writes the session's output
/// there, as tmux's server does: a keystroke's echo then wakes the server
/// and the program only, not the client as well. The connection still
/// carries the client's window size and detach requests one way, the
/// replay's end and the final frame (exit status or detach reason) the
/// other. The server gives the terminal back (stops reading and writing
/// it) when the client detaches, when the session ends, and at once when
/// the process `pid` exits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LocalTerminal {
    /// The terminal's device (`/dev/pts/3`); the server opens it only if
    /// it is a terminal owned by the server's user, and the same file as
    /// the client's (`device` and `inode`: a server that sees another
    /// `/dev/pts`, in another mount namespace, refuses it).
    pub path: String,
    /// The device of the file system holding the terminal (`st_dev`).
    pub device: u64,
    /// The terminal's inode on it (`st_ino`).
    pub inode: u64,
    /// The client's process id.
    pub pid: u32,
    /// The byte of the detach key; `None` when detaching by key is off.
    pub detach_key: Option<u8>,
}

impl LocalTerminal {
    /// The terminal at `path` (the file `inode` on `device`), of the
    /// client process `pid`, with the detach key `detach_key`.
    pub fn new(path: String, device: u64, inode: u64, pid: u32, detach_key: Option<u8>) -> LocalTerminal {
        LocalTerminal { path, device, inode, pid, detach_key }
    }
}

/// What a client that attaches is shown first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Restore {
    /// The session's screen, redrawn from its screen model: history lines
    /// into the terminal's scrollback, the screen, cursor, modes and title.
    #[default]
    Screen,
    /// The raw output kept in the session's scrollback, as it was written.
    Raw,
}

/// What a client asks the server for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Request {
    /// Start a session (and attach to it, if asked).
    New(NewSession),
    /// Attach to a session.
    Attach {
        /// The session's name; `None` for the most recently used session
        /// (the one created, attached to or detached from last).
        name: Option<String>,
        /// The client's terminal size, if it has a terminal.
        size: Option<Size>,
        /// What the client is shown first (absent: the screen).
        #[serde(default)]
        restore: Restore,
        /// Show the output but deliver no input (the client may still
        /// detach).
        #[serde(default)]
        read_only: bool,
        /// Detach every other client of the session first.
        #[serde(default)]
        detach_others: bool,
        /// With no name, a session never to take: the one the client runs
        /// inside.
        #[serde(default)]
        not: Option<String>,
    },
    /// List the sessions.
    List,
    /// End a session.
    Kill {
        /// The session's name.
        name: String,
    },
    /// End every session.
    KillAll,
    /// Give a session another name.
    Rename {
        /// Its name now.
        from: String,
        /// Its new name.
        to: String,
    },
    /// Write bytes to a session's input, as if typed.
    Send {
        /// The session's name.
        name: String,
        /// The bytes, at most [`MAX_SEND_BYTES`].
        input: Vec<u8>,
    },
    /// The session's screen as text, without attaching.
    Capture {
        /// The session's name.
        name: String,
        /// Up to this many lines of history before the screen.
        #[serde(default)]
        history_lines: usize,
        /// Keep colours and attributes as escape sequences.
        #[serde(default)]
        escapes: bool,
    },
}

/// The most input one [`Request::Send`] carries (its JSON stays under
/// [`MAX_MESSAGE_BYTES`]); more is sent as several requests.
pub const MAX_SEND_BYTES: usize = 128 * 1024;

/// How to start a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NewSession {
    /// The name; the server picks the lowest free number when `None`.
    pub name: Option<String>,
    /// The program and its arguments; empty for the server's `$SHELL`
    /// (else `/bin/sh`).
    pub command: Vec<String>,
    /// The working directory; the server's home directory when `None` or
    /// missing.
    pub cwd: Option<String>,
    /// `TERM` for the session, from the client's terminal.
    pub term: Option<String>,
    /// The client's terminal size, if it has a terminal.
    pub size: Option<Size>,
    /// Attach to the new session on this connection.
    pub attach: bool,
    /// When a session of that name exists, attach to it instead of
    /// failing (`rpty new -A`).
    #[serde(default)]
    pub attach_existing: bool,
}

impl NewSession {
    /// A detached session running `command` (empty: the shell), with no
    /// name, directory, `TERM` or size given.
    pub fn new(command: Vec<String>) -> NewSession {
        NewSession { name: None, command, cwd: None, term: None, size: None, attach: false, attach_existing: false }
    }
}

/// The server's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Response {
    /// Attached; the terminal framing follows on this connection.
    Attached {
        /// The session's name.
        name: String,
        /// The session's command line.
        command: String,
        /// The server took the terminal the client offered
        /// ([`ClientHello::terminal`]): the output goes there, not into
        /// this connection.
        #[serde(default)]
        direct: bool,
    },
    /// A detached session was started.
    Created {
        /// Its name.
        name: String,
    },
    /// The sessions, by name.
    Sessions {
        /// One entry per session.
        sessions: Vec<SessionEntry>,
    },
    /// The session was ended.
    Killed {
        /// Its name.
        name: String,
    },
    /// Every session was ended.
    KilledAll {
        /// Their names.
        names: Vec<String>,
    },
    /// The session was renamed.
    Renamed {
        /// Its new name.
        name: String,
    },
    /// The input was written to the session.
    Sent {
        /// How many bytes.
        bytes: usize,
    },
    /// The session's screen, as [`Request::Capture`] asked; when its
    /// message would be longer than [`MAX_MESSAGE_BYTES`], the oldest
    /// lines are left out.
    Captured {
        /// The lines, each ended by a newline.
        text: String,
    },
    /// The request failed.
    Error {
        /// What kind of failure.
        kind: ErrorKind,
        /// A one-line explanation for the user.
        message: String,
    },
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// No session of that name.
    NotFound,
    /// A session of that name exists already.
    AlreadyExists,
    /// The name is not usable.
    InvalidName,
    /// The command could not be started.
    SpawnFailed,
    /// The server holds as many sessions as it may.
    TooManySessions,
    /// The client and the server speak different versions.
    Version,
    /// Anything else.
    Other,
}

/// One session in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SessionEntry {
    /// Its name.
    pub name: String,
    /// Its command line.
    pub command: String,
    /// Clients attached now, connected or not.
    pub clients: usize,
    /// Of those, the ones whose connection is down: they come back when it
    /// resumes, or are dropped after the server's client expiry.
    #[serde(default)]
    pub clients_disconnected: usize,
    /// When it started, in seconds since the Unix epoch.
    #[serde(default)]
    pub created_unix_secs: u64,
    /// Seconds since it started.
    pub age_secs: u64,
    /// Where it is in its life.
    pub state: SessionState,
    /// How its command ended, once it has.
    pub exit: Option<Exit>,
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SessionState {
    /// The command runs.
    Running,
    /// The command has exited; the session stays a while so that its
    /// scrollback and exit status can still be seen.
    Exited,
    /// The session is closing.
    Closing,
}

impl std::fmt::Display for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SessionState::Running => "running",
            SessionState::Exited => "exited",
            SessionState::Closing => "closing",
        })
    }
}

/// How a session's command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

impl From<ptysession::ExitStatus> for Exit {
    fn from(status: ptysession::ExitStatus) -> Self {
        match status {
            ptysession::ExitStatus::Code(code) => Exit::Code(code),
            ptysession::ExitStatus::Signal(signal) => Exit::Signal(signal),
        }
    }
}

/// Writes one message: its length, then its JSON.
///
/// # Errors
///
/// [`Error::Io`] when writing fails, [`Error::TooLarge`] for a message over
/// [`MAX_MESSAGE_BYTES`] (nothing is written then).
///
/// # Cancel safety
///
/// Not cancel safe: a dropped future may leave part of a message written.
pub async fn write_message<W, M>(writer: &mut W, message: &M) -> Result<(), Error>
where
    W: AsyncWrite + Unpin,
    M: Serialize,
{
    let json = serde_json::to_vec(message)?;
    if json.len() > MAX_MESSAGE_BYTES {
        return Err(Error::TooLarge { len: json.len() });
    }
    let mut frame = Vec::with_capacity(4 + json.len());
    frame.extend_from_slice(&(json.len() as u32).to_be_bytes());
    frame.extend_from_slice(&json);
    writer.write_all(&frame).await?;
    writer.flush().await?;
    Ok(())
}

/// Reads one message, and not a byte more.
///
/// # Errors
///
/// [`Error::Ended`] when the connection ends first, [`Error::TooLarge`]
/// when the length is over [`MAX_MESSAGE_BYTES`] (the body is not read),
/// [`Error::Malformed`] when the JSON is not a message of type `M`,
/// [`Error::Io`] when reading fails.
///
/// # Cancel safety
///
/// Not cancel safe: bytes read before the future is dropped are lost.
pub async fn read_message<R, M>(reader: &mut R) -> Result<M, Error>
where
    R: AsyncRead + Unpin,
    M: DeserializeOwned,
{
    let ended = |err: io::Error| match err.kind() {
        io::ErrorKind::UnexpectedEof => Error::Ended,
        _ => Error::Io(err),
    };
    let mut len = [0u8; 4];
    reader.read_exact(&mut len).await.map_err(ended)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MESSAGE_BYTES {
        return Err(Error::TooLarge { len });
    }
    let mut json = vec![0u8; len];
    reader.read_exact(&mut json).await.map_err(ended)?;
    Ok(serde_json::from_slice(&json)?)
}

/// Whether `name` can name a session: 1 to [`MAX_NAME_LEN`] ASCII letters,
/// digits, `-`, `_` or `.`, not starting with `-` or `.`.
///
/// ```
/// use rpty::protocol::valid_name;
/// assert!(valid_name("demo") && valid_name("build-2.x_y"));
/// assert!(!valid_name("") && !valid_name("-x") && !valid_name("a b") && !valid_name("../x"));
/// ```
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with(['-', '.'])
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raw_restore_is_named_on_the_wire() {
        let raw = Request::Attach {
            name: Some("x".into()),
            size: None,
            restore: Restore::Raw,
            read_only: false,
            detach_others: false,
            not: None,
        };
        let raw = serde_json::to_string(&raw).unwrap();
        assert!(raw.contains(r#""restore":"raw""#), "{raw}");
    }

    #[tokio::test]
    async fn every_message_survives_a_round_trip() {
        let mut new = NewSession::new(vec!["sh".into(), "-c".into(), "echo 'é'".into()]);
        new.name = Some("x".into());
        new.size = Some(Size { rows: 40, cols: 100 });
        new.attach = true;
        let hellos = [
            ClientHello::new(Request::New(new)),
            ClientHello::new(Request::Attach {
                name: Some("x".into()),
                size: None,
                restore: Restore::Raw,
                read_only: true,
                detach_others: false,
                not: None,
            }),
            ClientHello::new(Request::Attach {
                name: None,
                size: None,
                restore: Restore::Screen,
                read_only: false,
                detach_others: true,
                not: Some("y".into()),
            }),
            ClientHello::new(Request::KillAll),
            ClientHello::new(Request::Rename { from: "x".into(), to: "y".into() }),
            ClientHello::new(Request::Send { name: "x".into(), input: b"\x00\xffhi".to_vec() }),
            ClientHello::new(Request::Capture { name: "x".into(), history_lines: 10, escapes: true }),
            ClientHello::new(Request::List).with_resume_window(Duration::from_secs(3600)),
            ClientHello::new(Request::Attach {
                name: None,
                size: None,
                restore: Restore::Screen,
                read_only: false,
                detach_others: false,
                not: None,
            })
            .with_terminal(Some(LocalTerminal::new("/dev/pts/3".into(), 25, 6, 4242, Some(0x1c)))),
            ClientHello::new(Request::Kill { name: "x".into() }),
        ];
        let responses = [
            Response::Attached { name: "x".into(), command: "sh".into(), direct: false },
            Response::Attached { name: "x".into(), command: "sh".into(), direct: true },
            Response::Created { name: "0".into() },
            Response::Sessions {
                sessions: vec![SessionEntry {
                    name: "x".into(),
                    command: "sh".into(),
                    clients: 2,
                    clients_disconnected: 1,
                    created_unix_secs: 1_700_000_000,
                    age_secs: 61,
                    state: SessionState::Exited,
                    exit: Some(Exit::Signal(9)),
                }],
            },
            Response::Killed { name: "x".into() },
            Response::KilledAll { names: vec!["x".into(), "y".into()] },
            Response::Renamed { name: "y".into() },
            Response::Sent { bytes: 3 },
            Response::Captured { text: "\x1b[0;1mbold\x1b[0m\n".into() },
            Response::Error { kind: ErrorKind::NotFound, message: "no session named \"x\"".into() },
        ];
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        for hello in &hellos {
            write_message(&mut a, hello).await.unwrap();
            assert_eq!(&read_message::<_, ClientHello>(&mut b).await.unwrap(), hello);
        }
        for response in &responses {
            write_message(&mut b, response).await.unwrap();
            assert_eq!(&read_message::<_, Response>(&mut a).await.unwrap(), response);
        }
    }

    #[test]
    fn an_attach_from_an_older_client_still_reads() {
        let old = br#"{"version":1,"resume_window_ms":30000,"request":{"op":"attach","name":"x","size":null}}"#;
        let hello: ClientHello = serde_json::from_slice(old).unwrap();
        let expected = Request::Attach {
            name: Some("x".into()),
            size: None,
            restore: Restore::Screen,
            read_only: false,
            detach_others: false,
            not: None,
        };
        assert_eq!(hello.request, expected, "no restore field: the screen");
    }

    #[tokio::test]
    async fn a_read_takes_one_message_and_leaves_what_follows() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write_message(&mut a, &Response::Killed { name: "x".into() }).await.unwrap();
        a.write_all(b"\x01next").await.unwrap();
        let _: Response = read_message(&mut b).await.unwrap();
        let mut rest = [0u8; 5];
        b.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"\x01next");
    }

    #[tokio::test]
    async fn bad_input_is_an_error_never_a_panic() {
        type Check = fn(&Error) -> bool;
        let cases: [(&[u8], Check); 4] = [
            (b"\xff\xff\xff\xff", |e| matches!(e, Error::TooLarge { .. })),
            (b"\x00\x00\x00\x02{}", |e| matches!(e, Error::Malformed(_))),
            (b"\x00\x00\x00\x09not json!", |e| matches!(e, Error::Malformed(_))),
            (b"\x00\x00\x00\x10{\"op\":", |e| matches!(e, Error::Ended)),
        ];
        for (bytes, expected) in cases {
            let (mut a, mut b) = tokio::io::duplex(1 << 16);
            a.write_all(bytes).await.unwrap();
            drop(a);
            let err = read_message::<_, ClientHello>(&mut b).await.unwrap_err();
            assert!(expected(&err), "{bytes:?}: {err:?}");
        }
    }
}
