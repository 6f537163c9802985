//! The crate's [`Error`] type.

use std::io;
use std::time::Duration;

use crate::ExitStatus;

/// Everything that can go wrong starting, waiting for or ending a child.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The program could not be started (missing binary, permissions, ...).
    #[error("cannot spawn `{program}`: {source}")]
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
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(context: &'static str, source: impl Into<io::Error>) -> Self {
        Self::Io { context, source: source.into() }
    }
}
