//! The crate's [`Error`] type, and [`ReuniteError`] for halves of
//! different streams.
//!
//! A message never repeats its cause: the error behind a variant is its
//! [`source`](std::error::Error::source), so that a report of the whole
//! chain (anyhow's `{:#}`) says each cause once.

use std::io;

use childproc::ExitStatus;

use crate::{OwnedReadHalf, OwnedWriteHalf};

/// What can go wrong with a child-process stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The child could not be started.
    #[error("cannot start `{program}`")]
    Spawn {
        /// The program that was to be run.
        program: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The child's output ended because the child exited with a failure.
    #[error("`{program}` exited with {status}{}", stderr_suffix(.stderr))]
    Exited {
        /// The program that ran.
        program: String,
        /// How it ended.
        status: ExitStatus,
        /// The end of what it wrote to stderr (lossily decoded), if captured.
        stderr: String,
    },
    /// Supervising the child failed (see [`childproc::Error`]).
    #[error(transparent)]
    Process(childproc::Error),
}

fn stderr_suffix(stderr: &str) -> String {
    let trimmed = stderr.trim_end();
    if trimmed.is_empty() { String::new() } else { format!(": {trimmed}") }
}

impl From<childproc::Error> for Error {
    fn from(error: childproc::Error) -> Self {
        match error {
            childproc::Error::Spawn { program, source } => Self::Spawn { program, source },
            other => Self::Process(other),
        }
    }
}

impl From<Error> for io::Error {
    fn from(error: Error) -> Self {
        let kind = match &error {
            Error::Spawn { source, .. } => source.kind(),
            Error::Exited { .. } => io::ErrorKind::UnexpectedEof,
            Error::Process(_) => io::ErrorKind::Other,
        };
        io::Error::new(kind, error)
    }
}

/// The halves given to [`OwnedReadHalf::reunite`] or
/// [`OwnedWriteHalf::reunite`] come from different streams; both are handed
/// back unchanged.
#[derive(Debug, thiserror::Error)]
#[error("the halves do not come from the same stream")]
pub struct ReuniteError(pub OwnedReadHalf, pub OwnedWriteHalf);

#[cfg(test)]
mod tests {

    use super::*;

    /// The number of variants, kept honest by the exhaustive match below.
    const VARIANTS: usize = 3;

    fn variant_index(error: &Error) -> usize {
        match error {
            Error::Spawn { .. } => 0,
            Error::Exited { .. } => 1,
            Error::Process(_) => 2,
        }
    }

    fn cause() -> io::Error {
        io::Error::new(io::ErrorKind::NotFound, "the cause itself (os error 2)")
    }

    /// Each error of the chain from `error` down, as `{:#}` would list them.
    fn chain<'a>(error: &'a (dyn std::error::Error + 'static)) -> Vec<&'a (dyn std::error::Error + 'static)> {
        std::iter::successors(Some(error), |error| (*error).source()).collect()
    }

    /// Fails if any error of the chain from `error` repeats its source.
    fn assert_each_cause_said_once(error: &(dyn std::error::Error + 'static)) {
        for pair in chain(error).windows(2) {
            let (message, cause) = (pair[0].to_string(), pair[1].to_string());
            assert!(!message.contains(&cause), "{message:?} repeats its source {cause:?}");
        }
    }

    #[tokio::test]
    async fn no_message_repeats_its_source() {
        let missing = std::process::Command::new("/nonexistent/agent");
        let spawn = childproc::Child::spawn(missing, childproc::Options::new()).unwrap_err();
        let failing = childproc::Child::spawn(std::process::Command::new("false"), childproc::Options::new()).unwrap();
        let failed = tokio::time::timeout(std::time::Duration::from_secs(10), failing.wait()).await.unwrap().unwrap();
        let every_variant = vec![
            Error::Spawn { program: "agent".into(), source: cause() },
            Error::from(spawn),
            Error::Exited { program: "agent".into(), status: failed, stderr: "agent: bad version\n".into() },
            Error::Process(childproc::Error::Io { context: "cannot send a signal to the child", source: cause() }),
            Error::Process(childproc::Error::Stopped),
        ];
        let mut covered: Vec<usize> = every_variant.iter().map(variant_index).collect();
        covered.sort_unstable();
        covered.dedup();
        assert_eq!(covered, (0..VARIANTS).collect::<Vec<_>>(), "a sample of every variant");
        assert_eq!(every_variant[1].to_string(), "cannot start `/nonexistent/agent`");
        assert_eq!(chain(&every_variant[1]).len(), 2, "the spawn error's cause is its source");
        for error in every_variant {
            assert_each_cause_said_once(&error);
            // Reads and writes report these errors inside an `io::Error`.
            assert_each_cause_said_once(&io::Error::from(error));
        }
    }
}
