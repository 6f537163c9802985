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
///
/// A variant that carries another error either says it in its message or
/// returns it from [`source`](std::error::Error::source), never both, so
/// that a report of the whole chain (`anyhow`'s `{:#}`, say) names each
/// cause once.
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
    /// The peer broke the protocol in a way that ends the pipe. The
    /// message says how; [`source`](std::error::Error::source) is `None`.
    #[error("protocol violation: {0}")]
    Protocol(DecodeError),
    /// The peer ended the pipe with an error frame.
    #[error("the peer reported {code}: {reason}")]
    Remote {
        /// What the peer reported.
        code: ErrorCode,
        /// The peer's short explanation.
        reason: String,
    },
    /// Reconnecting was given up: the configured deadline passed without a
    /// successful handshake. The last dial error, if any, is the
    /// [`source`](std::error::Error::source), not part of the message.
    #[error("gave up reconnecting after {attempts} failed attempts")]
    GaveUp {
        /// Failed attempts since the connection was lost.
        attempts: u64,
        /// The last dial error, if the last attempt failed while dialling.
        #[source]
        last_error: Option<Arc<io::Error>>,
    },
    /// An I/O error outside any one connection (e.g. from a `Reconnector`
    /// used by a forced reconnect). Message and source are the I/O
    /// error's own.
    #[error(transparent)]
    Io(Arc<io::Error>),
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

impl From<DecodeError> for Error {
    fn from(err: DecodeError) -> Self {
        Error::Protocol(err)
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> Self {
        io::Error::new(err.io_kind(), err)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// Whether the variant carries another error; a new variant must be
    /// added here (and to `with_inner_errors` if it carries one).
    fn carries_an_error(err: &Error) -> bool {
        match err {
            Error::Protocol(_) | Error::GaveUp { .. } | Error::Io(_) => true,
            Error::Closed
            | Error::PeerClosed
            | Error::WriteAfterShutdown
            | Error::InvalidSequence { .. }
            | Error::DataLoss { .. }
            | Error::AuthenticationFailed
            | Error::UnsupportedVersion { .. }
            | Error::Remote { .. } => false,
        }
    }

    /// An error that has a source of its own, as some I/O errors do.
    #[derive(Debug, thiserror::Error)]
    #[error("the dialer's command failed")]
    struct Wrapper(#[source] io::Error);

    fn with_inner_errors() -> Vec<Error> {
        let refused = || Arc::new(io::Error::new(io::ErrorKind::ConnectionRefused, "nobody home"));
        let mut errors = vec![
            Error::GaveUp { attempts: 3, last_error: Some(refused()) },
            Error::GaveUp { attempts: 3, last_error: None },
            Error::Io(refused()),
            Error::Io(Arc::new(io::Error::other(Wrapper(io::Error::from(io::ErrorKind::NotFound))))),
        ];
        let decode_errors = [
            DecodeError::Incomplete { needed: 5 },
            DecodeError::UnknownFrameType(0x99),
            DecodeError::BadLength { kind: crate::proto::FrameKind::Hello, len: 1 << 20 },
            DecodeError::BadMagic,
            DecodeError::UnknownAuthMethod(7),
            DecodeError::Unexpected { kind: crate::proto::FrameKind::Data, context: "after end of stream" },
            DecodeError::BadValue("session id"),
        ];
        errors.extend(decode_errors.into_iter().map(Error::Protocol));
        errors
    }

    /// The messages of `err` and its sources, outermost first.
    fn chain(err: &(dyn std::error::Error + 'static)) -> Vec<String> {
        let mut messages = vec![err.to_string()];
        let mut current = err;
        while let Some(source) = current.source() {
            messages.push(source.to_string());
            current = source;
        }
        messages
    }

    #[test]
    fn no_message_repeats_its_source() {
        for err in with_inner_errors() {
            assert!(carries_an_error(&err));
            let as_io = io::Error::from(err.clone());
            for messages in [chain(&err), chain(&as_io)] {
                for pair in messages.windows(2) {
                    assert!(!pair[0].contains(&pair[1]), "{:?} repeats its source {:?}", pair[0], pair[1]);
                }
            }
        }
    }

    #[test]
    fn every_inner_error_is_reported_once() {
        let decode = DecodeError::UnknownFrameType(0x99);
        let err = Error::Protocol(decode.clone());
        assert!(err.source().is_none());
        assert_eq!(err.to_string(), format!("protocol violation: {decode}"));

        let last = io::Error::new(io::ErrorKind::ConnectionRefused, "nobody home");
        let err = Error::GaveUp { attempts: 3, last_error: Some(Arc::new(last)) };
        assert_eq!(chain(&err), ["gave up reconnecting after 3 failed attempts", "nobody home"]);

        let wrapped = io::Error::other(Wrapper(io::Error::from(io::ErrorKind::NotFound)));
        let err = Error::Io(Arc::new(wrapped));
        assert_eq!(chain(&err), ["the dialer's command failed", "entity not found"]);
        assert_eq!(err.io_kind(), io::ErrorKind::Other);
    }
}
