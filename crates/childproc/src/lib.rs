//! Supervised child processes for tokio that always end, and never race
//! their exit.
//!
//! A [`Child`] runs a [`std::process::Command`] or
//! [`tokio::process::Command`] built by the caller and supervises it:
//!
//! - **A latched exit.** Each run's outcome (exit code or signal, the shell's
//!   `128 + N` for a death by signal `N`, the exit time) is latched once and
//!   read by any number of [`ExitHandle`]s: taken before the process starts
//!   (so no fast exit is missed), while it runs, or long after it ended.
//!   Reading never consumes it. [`ExitHandle::wait`] is async,
//!   [`ExitHandle::try_status`] never blocks.
//! - **Signals that never reach a recycled pid.** The process is signalled
//!   through a pidfd, its group only while its leader is known not to be
//!   reaped: signalling and reaping take the same lock. A signal to a child
//!   that has ended is `Ok` and does nothing.
//! - **A kill ladder that ends.** [`Child::kill`]: a random splay, the kill
//!   signal (default `SIGTERM`) to the group, up to the kill timeout, then
//!   `SIGKILL`; what is left of the group when the leader exits gets
//!   `SIGKILL` before the leader is reaped. It returns only once the child is
//!   dead and reaped. [`Child::stop`] kills, reports "stopped" instead of the
//!   exit, and forbids restarts. An [execution timeout] kills the child and
//!   reports [`Error::TimedOut`].
//! - **No zombies.** Every child is reaped as soon as it exits, by a pidfd
//!   registered with tokio, also when its [`Child`] is dropped without
//!   waiting ([`Options::kill_on_drop`], default on, kills it first).
//! - **Restart and reload** ([`Child::restart`], [`Child::reload`]) with a
//!   fresh exit handle per run; **signal forwarding**
//!   ([`Options::forward_signals`]) of signals this process receives.
//!
//! The default [`Isolation::ProcessGroup`] puts the child in a group of its
//! own with `Command::process_group`, which keeps std's fast `posix_spawn`
//! path; only [`Isolation::Session`] needs a `pre_exec` hook.
//!
//! # Example
//!
//! ```
//! use std::process::{Command, Stdio};
//! use std::time::Duration;
//!
//! use childproc::{Child, Error, Options, Signal};
//! use tokio::io::AsyncReadExt;
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // A child that says hello, then ignores SIGTERM and sleeps.
//!     let mut command = Command::new("sh");
//!     command.args(["-c", "trap '' TERM; echo hello; exec sleep 30"]).stdout(Stdio::piped());
//!     let options = Options::new()
//!         .kill_signal(Some(Signal::TERM))
//!         .kill_timeout(Duration::from_millis(200));
//!
//!     let child = Child::new(command, options);
//!     let exit = child.exit_handle(); // before start: no exit can be missed
//!     child.start()?;
//!
//!     let mut stdout = child.take_stdout().expect("stdout is piped");
//!     let mut hello = [0; 6];
//!     stdout.read_exact(&mut hello).await?;
//!     assert_eq!(&hello, b"hello\n");
//!
//!     // SIGTERM is ignored, so the ladder ends with SIGKILL.
//!     let status = child.kill().await?;
//!     assert_eq!(status.signal(), Some(Signal::KILL.as_raw()));
//!     assert_eq!(status.shell_code(), 137);
//!     // Every waiter, however late, sees the same status.
//!     assert_eq!(exit.wait().await?, status);
//!     assert_eq!(child.try_status()?, Some(status));
//!     // A signal to a child that has ended does nothing.
//!     child.signal(Signal::TERM)?;
//!
//!     // Once stopped, waiters see "stopped" and restarts are refused.
//!     child.stop().await?;
//!     assert!(matches!(child.restart().await, Err(Error::Stopped)));
//!     Ok(())
//! }
//! ```
//!
//! # Runtime
//!
//! Starting a child needs a tokio runtime with its I/O and time drivers
//! (`enable_all`); either flavour works. The exit watcher, kill ladders and
//! timeouts run as tasks on the runtime the child was started in.
//!
//! # Logs
//!
//! childproc logs through `tracing` (debug lines, and a warning when
//! `SIGKILL` cannot be delivered). Every line about a run is logged in an
//! `info` span named `child` with the run's `pid` and `program`, whichever
//! task or thread logs it; the span is a child of the span that was current
//! when the [`Child`] was made, so a caller's own span (a session, a
//! connection) shows too.
//!
//! # Caveats
//!
//! - **Grandchildren.** Signals and the kill ladder reach the child's
//!   process group. A grandchild that leaves it (`setsid`, `setpgid`, a
//!   daemonizing double fork) is not signalled or killed, and with
//!   [`Isolation::None`] no grandchild is. Group members are not waited for:
//!   when a kill ends the leader, the rest of the group is sent `SIGKILL`
//!   just before the leader is reaped, and they die shortly after (reaped by
//!   init or a subreaper, not by childproc). Without a kill, an exiting
//!   leader leaves its group alone.
//! - **Drop.** Dropping a [`Child`] whose process runs starts the kill
//!   ladder without splay in the background when [`Options::kill_on_drop`]
//!   is set (the default); otherwise the process keeps running. Either way
//!   it is reaped when it exits, and forwarded signals keep reaching it until
//!   then. If the runtime shuts down first, a ladder under way escalates to
//!   `SIGKILL` at once and a thread takes over the reaping.
//! - **Someone else's reaping.** Do not reap children you do not own in the
//!   same process (`waitpid(-1)`, `SIGCHLD` set to `SIG_IGN`): such a reaper
//!   takes the status, and waiters then get an [`Error::Io`]. Signals stay
//!   safe even then, through the pidfd.
//! - **Kept commands.** A restartable child keeps its command, and with it
//!   every descriptor the command holds (a `Stdio::from(fd)`, a PTY slave):
//!   the other side never sees the end. Use
//!   [`Options::restartable`]`(false)` for such commands.
//! - **Forwarding is process-wide.** [`Options::forward_signals`] installs a
//!   handler for each forwarded signal in this process, and it stays
//!   installed: once a signal has been forwarded, its default action (for
//!   example termination on `SIGINT`) no longer happens in this process, also
//!   after the child ends. Handlers a program installs itself (tokio's,
//!   signal-hook's) keep working alongside.
//! - **Signal mask.** Children start with an empty signal mask. std passes
//!   the spawning thread's mask on, so when that thread blocks signals a
//!   `pre_exec` hook empties the mask in the child, and that command is
//!   spawned by fork and exec from then on instead of `posix_spawn`.
//!   Dispositions are not reset: a signal this process ignores stays ignored
//!   in the child (the kernel resets caught ones at exec).
//! - **Old kernels.** Without pidfd support (Linux before 5.3) each running
//!   child is waited for by a thread of its own, and signals use the pid,
//!   still only before the reaping.
//! - **Pids.** [`Child::pid`] stays readable after the exit, when the pid
//!   may name another process: use [`Child::signal`], never the pid.
//!
//! [execution timeout]: Options::execution_timeout

#[cfg(not(target_os = "linux"))]
compile_error!("childproc supports Linux only (pidfd, process groups, waitid); see its README");

// Everything below is Linux-only: on other targets the error above is the
// only one.
#[cfg(target_os = "linux")]
mod child;
#[cfg(target_os = "linux")]
mod error;
#[cfg(target_os = "linux")]
mod forward;
#[cfg(target_os = "linux")]
mod options;
#[cfg(target_os = "linux")]
mod reaper;
#[cfg(target_os = "linux")]
mod run;
#[cfg(target_os = "linux")]
mod sigmask;
#[cfg(target_os = "linux")]
mod status;

#[cfg(target_os = "linux")]
pub use child::{Child, ExitHandle, IntoCommand};
#[cfg(target_os = "linux")]
pub use error::Error;
#[cfg(target_os = "linux")]
pub use options::{Isolation, Options};
/// A signal number, re-exported from rustix: `Signal::TERM`, `Signal::KILL`,
/// `Signal::HUP`, ...
#[cfg(target_os = "linux")]
pub use rustix::process::Signal;
#[cfg(target_os = "linux")]
pub use status::ExitStatus;

#[cfg(test)]
mod tests;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
