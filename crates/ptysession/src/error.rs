//! The crate's error type.
//!
//! A message never repeats its cause: the error behind a variant is its
//! [`source`](std::error::Error::source), so that a report of the whole
//! chain (anyhow's `{:#}`, tracing's error fields) says each cause once.

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
    #[error("pseudo-terminal setup failed while {op}")]
    Pty {
        /// What was being done.
        op: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The command could not be started.
    #[error("starting the command failed")]
    Spawn(#[source] childproc::Error),
    /// The session is closing or closed: it accepts no client and no input.
    #[error("the session is closed")]
    Closed,
    /// This client is no longer attached.
    #[error("the client is not attached")]
    Detached,
    /// Setting the window size failed.
    #[error("resizing the terminal failed")]
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
    /// The session keeps no screen model (turned off in its options, or
    /// the feature `screen` is not enabled), so it has no screen to show.
    #[error("the session keeps no screen model")]
    NoScreenModel,
    /// Reading or writing a client connection failed.
    #[error("reading or writing the client connection failed")]
    Connection(#[source] io::Error),
    /// The peer sent a frame that breaks the framing (see
    /// [`framing`](crate::framing)).
    #[error("malformed frame: {reason}")]
    Frame {
        /// What was wrong with it.
        reason: String,
    },
}

#[cfg(test)]
mod tests {

    use super::*;

    /// The number of variants, kept honest by the exhaustive match below.
    const VARIANTS: usize = 11;

    fn variant_index(error: &Error) -> usize {
        match error {
            Error::Pty { .. } => 0,
            Error::Spawn(_) => 1,
            Error::Closed => 2,
            Error::Detached => 3,
            Error::Resize(_) => 4,
            Error::NotFound { .. } => 5,
            Error::AlreadyExists { .. } => 6,
            Error::TooManySessions { .. } => 7,
            Error::Connection(_) => 8,
            Error::Frame { .. } => 9,
            Error::NoScreenModel => 10,
        }
    }

    fn cause() -> io::Error {
        io::Error::new(io::ErrorKind::NotFound, "the cause itself (os error 2)")
    }

    /// Each error of the chain from `error` down, as `{:#}` would list them.
    fn chain<'a>(error: &'a (dyn std::error::Error + 'static)) -> Vec<&'a (dyn std::error::Error + 'static)> {
        std::iter::successors(Some(error), |error| (*error).source()).collect()
    }

    #[tokio::test]
    async fn no_message_repeats_its_source() {
        let missing = std::process::Command::new("/nonexistent/shell");
        let spawn = childproc::Child::spawn(missing, childproc::Options::new()).unwrap_err();
        let every_variant = [
            Error::Pty { op: "opening the terminal", source: cause() },
            Error::Spawn(spawn),
            Error::Closed,
            Error::Detached,
            Error::Resize(cause()),
            Error::NotFound { id: "build".into() },
            Error::AlreadyExists { id: "build".into() },
            Error::TooManySessions { limit: 8 },
            Error::Connection(cause()),
            Error::Frame { reason: "unknown frame type 9".into() },
            Error::NoScreenModel,
        ];
        let mut covered: Vec<usize> = every_variant.iter().map(variant_index).collect();
        covered.sort_unstable();
        assert_eq!(covered, (0..VARIANTS).collect::<Vec<_>>(), "one sample per variant");
        for error in &every_variant {
            for pair in chain(error).windows(2) {
                let (message, cause) = (pair[0].to_string(), pair[1].to_string());
                assert!(!message.contains(&cause), "{message:?} repeats its source {cause:?}");
            }
        }
        // The spawn error's chain: ours, childproc's, the operating system's.
        let spawn_chain: Vec<String> = chain(&every_variant[1]).iter().map(ToString::to_string).collect();
        assert_eq!(spawn_chain[..2], ["starting the command failed", "cannot spawn `/nonexistent/shell`"]);
        assert_eq!(spawn_chain.len(), 3, "{spawn_chain:?}");
    }
}
