//! An async byte stream over a child process's stdin and stdout whose close
//! always ends and reaps the child.
//!
//! Tools that reach a remote agent through a command (`ssh host agent`,
//! `docker exec -i box agent`, `kubectl exec ...`) use that command's stdin
//! and stdout as the connection. [`Stream`] makes such a child a plain
//! [`AsyncRead`](tokio::io::AsyncRead) (the child's stdout) and
//! [`AsyncWrite`](tokio::io::AsyncWrite) (its stdin), splittable into owned
//! halves for separate tasks ([`OwnedReadHalf`], [`OwnedWriteHalf`], named
//! and reunited as tokio's sockets' are), and takes care of the part that
//! is easy to get wrong: ending it.
//!
//! # The termination ladder
//!
//! [`Stream::close`] (or [`Handle::close`]) ends the child in steps, each
//! only if the child is still running, and returns its exit status:
//!
//! 1. wait up to the *termination delay* (default 0) for it to exit by
//!    itself;
//! 2. close its stdin and wait up to 1 s (a well-behaved agent exits on
//!    end of input);
//! 3. send `SIGTERM` to its process group and wait up to 1 s;
//! 4. send `SIGKILL` to its process group and wait until it is reaped.
//!
//! Every duration is configurable ([`Options`]); the termination delay can
//! also be changed while a close is under way ([`Handle::set_termination_delay`]).
//!
//! When `close` returns, the child has been reaped (through [`childproc`],
//! which never signals a recycled pid) and every descriptor this crate held
//! for it is closed. Reads and writes pending on the stream or its halves are
//! woken then and return end-of-file or an error: a grandchild that still
//! holds stdout open cannot keep them waiting. `close` is idempotent and can
//! be called from any number of tasks; dropping the stream without closing
//! it kills and reaps the child in the background.
//!
//! # Errors and stderr
//!
//! By default the child's stderr is captured into a bounded buffer (the last
//! 64 KiB), available through [`Handle::stderr`]; it can instead or as well
//! be forwarded to any [`AsyncWrite`](tokio::io::AsyncWrite) by a separate
//! task, which never blocks the stream. When the child's stdout ends because
//! the child exited with a failure, the read reports [`Error::Exited`] with
//! the status and the captured stderr instead of a bare end-of-file: that is
//! how an agent that failed to start explains itself.
//!
//! # Example
//!
//! ```
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use transport_stream::{Options, Stream};
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let mut stream = Stream::spawn(std::process::Command::new("cat"), Options::new())?;
//!     stream.write_all(b"ping").await?;
//!     let mut reply = [0; 4];
//!     stream.read_exact(&mut reply).await?;
//!     assert_eq!(&reply, b"ping");
//!
//!     // `cat` exits when its stdin closes: the ladder's second step.
//!     let status = stream.close().await?;
//!     assert!(status.success());
//!     Ok(())
//! }
//! ```
//!
//! # Caveats
//!
//! - **Grandchildren.** The child runs in a process group of its own and the
//!   ladder's signals go to the whole group. A grandchild that outlives the
//!   child (one the ladder did not have to signal because the child exited
//!   first, or one that left the group) is not killed; it only loses the
//!   other end of the pipes.
//! - **Drop.** Dropping every part of a stream without `close` starts
//!   childproc's kill (`SIGTERM`, then `SIGKILL` after the terminate wait) in
//!   the background; the child is reaped either way. Bytes written but not yet
//!   read by the child are lost, as with any pipe.
//! - **Runtime.** Spawning needs a tokio runtime with I/O and time enabled.

#[cfg(not(target_os = "linux"))]
compile_error!("transport-stream supports Linux only (through childproc: pidfd, process groups); see its README");

mod error;
mod options;
mod stderr;
mod stream;

pub use childproc::{ExitStatus, Signal};
pub use error::{Error, ReuniteError};
pub use options::Options;
pub use stream::{Handle, OwnedReadHalf, OwnedWriteHalf, Stream};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
