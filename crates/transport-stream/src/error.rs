//! The crate's [`Error`] type, and [`ReuniteError`] for halves of
//! different streams.

use std::io;

use childproc::ExitStatus;

use crate::{OwnedReadHalf, OwnedWriteHalf};

/// What can go wrong with a child-process stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The child could not be started.
    #[error("cannot start `{program}`: {source}")]
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
