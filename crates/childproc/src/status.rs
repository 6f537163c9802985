//! [`ExitStatus`]: how a child ended (exit code or signal) and when it was reaped.

use std::fmt;
use std::time::{Instant, SystemTime};

use rustix::process::WaitIdStatus;

/// How a child process ended: its exit code, or the signal that killed it,
/// and when it was reaped.
///
/// A normal exit keeps its code; a death by signal `N` reports `N` through
/// [`signal`](Self::signal) and the shell convention `128 + N` through
/// [`shell_code`](Self::shell_code).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), childproc::Error> {
/// use std::process::Command;
///
/// let mut command = Command::new("sh");
/// command.args(["-c", "exit 7"]);
/// let child = childproc::Child::spawn(command, childproc::Options::new())?;
/// let status = child.wait().await?;
/// assert_eq!(status.code(), Some(7));
/// assert_eq!(status.shell_code(), 7);
/// assert!(!status.success());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    termination: Termination,
    exit_time: SystemTime,
    exit_instant: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Termination {
    Exited(i32),
    Signaled { signal: i32, core_dumped: bool },
}

impl ExitStatus {
    /// Reads the status `waitid` reported, stamping it with the current time.
    pub(crate) fn from_waitid(info: &WaitIdStatus) -> Self {
        let termination = match (info.exit_status(), info.terminating_signal()) {
            (Some(code), _) if info.exited() => Termination::Exited(code),
            (_, Some(signal)) => Termination::Signaled { signal, core_dumped: info.dumped() },
            // `waitid` was asked for exits only; anything else is reported
            // as the raw code so that nothing is lost.
            _ => Termination::Exited(info.raw_code()),
        };
        Self { termination, exit_time: SystemTime::now(), exit_instant: Instant::now() }
    }

    /// A normal exit with `code`, for the crate's unit tests.
    #[cfg(test)]
    pub(crate) fn exited_with(code: i32) -> Self {
        Self { termination: Termination::Exited(code), exit_time: SystemTime::now(), exit_instant: Instant::now() }
    }

    /// The exit code, if the process exited normally.
    pub fn code(&self) -> Option<i32> {
        match self.termination {
            Termination::Exited(code) => Some(code),
            Termination::Signaled { .. } => None,
        }
    }

    /// The number of the signal that killed the process, if one did.
    ///
    /// Compare with [`Signal::as_raw`](crate::Signal::as_raw):
    /// `status.signal() == Some(Signal::KILL.as_raw())`.
    pub fn signal(&self) -> Option<i32> {
        match self.termination {
            Termination::Exited(_) => None,
            Termination::Signaled { signal, .. } => Some(signal),
        }
    }

    /// Whether the process dumped core when a signal killed it.
    pub fn core_dumped(&self) -> bool {
        matches!(self.termination, Termination::Signaled { core_dumped: true, .. })
    }

    /// Whether the process exited normally with code 0.
    pub fn success(&self) -> bool {
        self.termination == Termination::Exited(0)
    }

    /// The status as a shell reports it in `$?`: the exit code, or
    /// `128 + N` for a death by signal `N` (137 for `SIGKILL`).
    pub fn shell_code(&self) -> i32 {
        match self.termination {
            Termination::Exited(code) => code,
            Termination::Signaled { signal, .. } => 128 + signal,
        }
    }

    /// When the exit was observed (the process was reaped), as wall-clock
    /// time.
    pub fn exit_time(&self) -> SystemTime {
        self.exit_time
    }

    /// When the exit was observed, on the monotonic clock (for measuring
    /// durations against [`Instant::now`]).
    pub fn exit_instant(&self) -> Instant {
        self.exit_instant
    }
}

impl fmt::Debug for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("ExitStatus");
        match self.termination {
            Termination::Exited(code) => s.field("code", &code),
            Termination::Signaled { signal, core_dumped } => {
                s.field("signal", &signal).field("core_dumped", &core_dumped)
            }
        };
        s.field("shell_code", &self.shell_code()).field("exit_time", &self.exit_time).finish()
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.termination {
            Termination::Exited(code) => write!(f, "exit code {code}"),
            Termination::Signaled { signal, core_dumped } => {
                match signal_hook::low_level::signal_name(signal) {
                    Some(name) => write!(f, "killed by signal {signal} ({name})")?,
                    None => write!(f, "killed by signal {signal}")?,
                }
                if core_dumped {
                    f.write_str(", core dumped")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(termination: Termination) -> ExitStatus {
        ExitStatus { termination, exit_time: SystemTime::now(), exit_instant: Instant::now() }
    }

    #[test]
    fn exit_code_is_kept_and_signal_death_follows_the_shell_convention() {
        let exited = status(Termination::Exited(7));
        assert_eq!((exited.code(), exited.signal(), exited.shell_code()), (Some(7), None, 7));
        assert!(!exited.success());
        assert_eq!(exited.to_string(), "exit code 7");

        let killed = status(Termination::Signaled { signal: 9, core_dumped: false });
        assert_eq!((killed.code(), killed.signal(), killed.shell_code()), (None, Some(9), 137));
        assert_eq!(killed.to_string(), "killed by signal 9 (SIGKILL)");

        let dumped = status(Termination::Signaled { signal: 11, core_dumped: true });
        assert!(dumped.core_dumped());
        assert_eq!(dumped.shell_code(), 139);
        assert!(status(Termination::Exited(0)).success());
    }
}
