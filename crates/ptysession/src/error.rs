//! The crate's error type.

use std::io;

/// Everything that can go wrong in this crate.
///
/// ```
/// use ptysession::Error;
///
/// let err = Error::NotFound { id: "build".into() };
/// assert_eq!(err.to_string(), "no session named \"build\"");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Opening or configuring the pseudo-terminal failed.
    #[error("pseudo-terminal setup failed while {op}: {source}")]
    Pty {
        /// What was being done.
        op: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The command could not be started.
    #[error("starting the command failed: {0}")]
    Spawn(#[source] childproc::Error),
    /// The session is closing or closed: it accepts no client and no input.
    #[error("the session is closed")]
    Closed,
    /// This client is no longer attached.
    #[error("the client is not attached")]
    Detached,
    /// Setting the window size failed.
    #[error("resizing the terminal failed: {0}")]
    Resize(#[source] io::Error),
    /// No session with this id exists (any more).
    #[error("no session named {id:?}")]
    NotFound {
        /// The id asked for.
        id: String,
    },
    /// A session with this id already exists.
    #[error("a session named {id:?} already exists")]
    AlreadyExists {
        /// The id asked for.
        id: String,
    },
    /// The manager already holds its maximum number of sessions.
    #[error("too many sessions: the limit is {limit}")]
    TooManySessions {
        /// The maximum.
        limit: usize,
    },
    /// Reading or writing a client connection failed.
    #[error("connection error: {0}")]
    Connection(#[source] io::Error),
    /// The peer sent a frame that breaks the framing (see
    /// [`framing`](crate::framing)).
    #[error("malformed frame: {reason}")]
    Frame {
        /// What was wrong with it.
        reason: String,
    },
}
