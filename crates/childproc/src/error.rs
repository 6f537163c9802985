//! The crate's [`Error`] type.
//!
//! A variant's message says what this crate was doing; the operating
//! system's error behind it is its [`source`](std::error::Error::source),
//! never repeated in the message, so that a report of the whole chain
//! (anyhow's `{:#}`, tracing's error fields) says each cause once.

use std::io;
use std::time::Duration;

use crate::ExitStatus;

/// Everything that can go wrong starting, waiting for or ending a child.
///
/// The message does not repeat the cause; print the
/// [`source`](std::error::Error::source) chain to see it:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::error::Error as _;
///
/// let missing = std::process::Command::new("/nonexistent/program");
/// let error = childproc::Child::spawn(missing, childproc::Options::new()).unwrap_err();
/// assert_eq!(error.to_string(), "cannot spawn `/nonexistent/program`");
/// let cause = error.source().expect("the operating system's error");
/// assert_eq!(cause.downcast_ref::<std::io::Error>().map(|io| io.kind()), Some(std::io::ErrorKind::NotFound));
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The program could not be started (missing binary, permissions, ...).
    #[error("cannot spawn `{program}`")]
    Spawn {
        /// The program that was to be run, as given to the command.
        program: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The execution timeout expired; the child (and its group) was killed.
    #[error("the child did not finish within {timeout:?} and was killed ({status})")]
    TimedOut {
        /// The execution timeout that expired.
        timeout: Duration,
        /// How the killed child ended.
        status: ExitStatus,
    },
    /// The child was stopped ([`Child::stop`](crate::Child::stop)): its exit
    /// is not reported, and it cannot be started or restarted any more.
    #[error("the child was stopped")]
    Stopped,
    /// [`Child::start`](crate::Child::start) was called on a child that is
    /// already running or has run.
    #[error("the child has already been started")]
    AlreadyStarted,
    /// The child was never started: it was signalled, killed or waited for
    /// after its [`Child`](crate::Child) was dropped without starting it, or
    /// signalled or killed before [`Child::start`](crate::Child::start).
    #[error("the child was never started")]
    NotStarted,
    /// [`Child::restart`](crate::Child::restart) on a child whose command was
    /// released after the first spawn ([`Options::restartable`](crate::Options::restartable)).
    #[error("the child cannot be restarted: its command was released after the first spawn")]
    NotRestartable,
    /// A signal in [`Options::forward_signals`](crate::Options::forward_signals)
    /// cannot be forwarded: `SIGKILL`, `SIGSTOP`, `SIGCHLD` and the signals
    /// the kernel raises synchronously in a faulting thread are refused.
    #[error("signal {signal} cannot be forwarded")]
    UnforwardableSignal {
        /// The raw signal number.
        signal: i32,
    },
    /// A system call failed.
    #[error("{context}")]
    Io {
        /// What could not be done.
        context: &'static str,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with what could not be done.
    pub(crate) fn io(context: &'static str, source: impl Into<io::Error>) -> Self {
        Self::Io { context, source: source.into() }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// The number of variants, kept honest by the exhaustive match below.
    const VARIANTS: usize = 8;

    fn variant_index(error: &Error) -> usize {
        match error {
            Error::Spawn { .. } => 0,
            Error::TimedOut { .. } => 1,
            Error::Stopped => 2,
            Error::AlreadyStarted => 3,
            Error::NotStarted => 4,
            Error::NotRestartable => 5,
            Error::UnforwardableSignal { .. } => 6,
            Error::Io { .. } => 7,
        }
    }

    fn cause() -> io::Error {
        io::Error::new(io::ErrorKind::NotFound, "the cause itself (os error 2)")
    }

    #[test]
    fn no_message_repeats_its_source() {
        let status = ExitStatus::exited_with(1);
        let every_variant = [
            Error::Spawn { program: "agent".into(), source: cause() },
            Error::TimedOut { timeout: Duration::from_secs(1), status },
            Error::Stopped,
            Error::AlreadyStarted,
            Error::NotStarted,
            Error::NotRestartable,
            Error::UnforwardableSignal { signal: 9 },
            Error::io("cannot send a signal to the child", cause()),
        ];
        let mut covered: Vec<usize> = every_variant.iter().map(variant_index).collect();
        covered.sort_unstable();
        assert_eq!(covered, (0..VARIANTS).collect::<Vec<_>>(), "one sample per variant");
        for error in &every_variant {
            let message = error.to_string();
            assert!(!message.is_empty(), "{error:?}");
            if let Some(source) = error.source() {
                let cause = source.to_string();
                assert!(!message.contains(&cause), "{message:?} repeats its source {cause:?}");
            }
        }
        assert_eq!(every_variant[0].to_string(), "cannot spawn `agent`");
        assert!(every_variant[0].source().is_some() && every_variant[7].source().is_some());
    }
}
