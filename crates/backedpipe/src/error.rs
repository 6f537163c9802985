//! The crate's one error type, [`Error`], and its conversion to
//! [`std::io::Error`] for the `AsyncRead`/`AsyncWrite` methods.

use std::io;
use std::sync::Arc;

use crate::proto::{DecodeError, ErrorCode};

/// Everything that can go wrong with a pipe.
///
/// Errors that end the pipe for good ("terminal") are reported by
/// [`BackedPipe::failure`](crate::BackedPipe::failure), by
/// [`BackedPipe::connected`](crate::BackedPipe::connected), and by every
/// later read and write (inside an [`io::Error`], see [`Error::from_io`]).
/// Trouble with one connection (a reset, a malformed frame, a failed dial)
/// is not an error of the pipe: the pipe reconnects and counts it in
/// [`Stats`](crate::Stats).
///
/// `Error` is `Clone` so that the one result of a shared reconnect attempt
/// can be handed to every caller waiting on it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The pipe was closed on this side with `close()` (or dropped).
    #[error("the pipe is closed")]
    Closed,
    /// The peer closed the pipe without ending its stream first.
    #[error("the peer closed the pipe")]
    PeerClosed,
    /// Writing after `shutdown` (end of stream) was requested.
    #[error("the stream was shut down for writing")]
    WriteAfterShutdown,
    /// The peer says it has read more bytes than this side ever wrote. The
    /// two sides disagree about the stream; nothing can be resumed.
    #[error("the peer has read {remote_seq} bytes but only {written} were written here")]
    InvalidSequence {
        /// The peer's reader sequence number (bytes it says it read).
        remote_seq: u64,
        /// The bytes this side has written.
        written: u64,
    },
    /// The peer has read fewer bytes than this side still holds: the bytes
    /// in between were acknowledged earlier and dropped, so they cannot be
    /// replayed. Usually the peer lost its state (e.g. it restarted).
    #[error("the peer has read {remote_seq} bytes but the oldest byte still held is {retained_start}")]
    DataLoss {
        /// The peer's reader sequence number.
        remote_seq: u64,
        /// The sequence number of the oldest byte still held for replay.
        retained_start: u64,
    },
    /// The peer failed to prove knowledge of the shared secret, or the two
    /// sides are configured with different authentication methods.
    #[error("authentication failed")]
    AuthenticationFailed,
    /// The peer does not speak a protocol version this side speaks.
    #[error("unsupported protocol version {version}")]
    UnsupportedVersion {
        /// The version the peer offered or chose.
        version: u16,
    },
    /// The peer broke the protocol in a way that ends the pipe.
    #[error("protocol violation: {0}")]
    Protocol(#[from] DecodeError),
    /// The peer ended the pipe with an error frame.
    #[error("the peer reported {code}: {reason}")]
    Remote {
        /// What the peer reported.
        code: ErrorCode,
        /// The peer's short explanation.
        reason: String,
    },
    /// Reconnecting was given up: the configured deadline passed without a
    /// successful handshake.
    #[error("gave up reconnecting after {attempts} failed attempts")]
    GaveUp {
        /// Failed attempts since the connection was lost.
        attempts: u64,
        /// The last dial error, if the last attempt failed while dialling.
        #[source]
        last_error: Option<Arc<io::Error>>,
    },
    /// An I/O error outside any one connection (e.g. from a `Reconnector`
    /// used by a forced reconnect).
    #[error("I/O error: {0}")]
    Io(#[source] Arc<io::Error>),
}

impl Error {
    /// The [`std::io::ErrorKind`] this error is reported with by the
    /// `AsyncRead`/`AsyncWrite` methods.
    ///
    /// ```
    /// use backedpipe::Error;
    /// assert_eq!(Error::Closed.io_kind(), std::io::ErrorKind::NotConnected);
    /// ```
    pub fn io_kind(&self) -> io::ErrorKind {
        match self {
            Error::Closed => io::ErrorKind::NotConnected,
            Error::PeerClosed | Error::Remote { .. } => io::ErrorKind::ConnectionAborted,
            Error::WriteAfterShutdown => io::ErrorKind::BrokenPipe,
            Error::InvalidSequence { .. } | Error::DataLoss { .. } | Error::Protocol(_) => io::ErrorKind::InvalidData,
            Error::AuthenticationFailed => io::ErrorKind::PermissionDenied,
            Error::UnsupportedVersion { .. } => io::ErrorKind::Unsupported,
            Error::GaveUp { .. } => io::ErrorKind::TimedOut,
            Error::Io(err) => err.kind(),
        }
    }

    /// Whether the server no longer knows the session: it expired, was
    /// evicted, or the server restarted. Nothing can be resumed; the
    /// client's pipe has failed with [`Error::Remote`] and code
    /// [`ErrorCode::SessionUnknown`]. Start a new session instead.
    ///
    /// ```
    /// use backedpipe::Error;
    /// use backedpipe::proto::ErrorCode;
    /// let gone = Error::Remote { code: ErrorCode::SessionUnknown, reason: "unknown session".into() };
    /// assert!(gone.is_session_gone());
    /// assert!(!Error::Closed.is_session_gone());
    /// ```
    pub fn is_session_gone(&self) -> bool {
        matches!(self, Error::Remote { code: ErrorCode::SessionUnknown, .. })
    }

    /// The pipe's `Error` inside an [`io::Error`] returned by a read or a
    /// write, if it came from the pipe.
    ///
    /// ```
    /// use backedpipe::Error;
    /// let io: std::io::Error = Error::Closed.into();
    /// assert!(matches!(Error::from_io(&io), Some(Error::Closed)));
    /// ```
    pub fn from_io(err: &io::Error) -> Option<&Error> {
        err.get_ref()?.downcast_ref::<Error>()
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> Self {
        io::Error::new(err.io_kind(), err)
    }
}
