//! Small value types that describe a session: its lifecycle [`State`], why it
//! closed, how its command ended, and why a client was detached.

use std::fmt;

/// Where a session is in its life. States only ever move forward:
/// `Starting → Ready → Closing → Done`.
///
/// ```
/// use ptysession::State;
///
/// assert!(State::Starting < State::Ready && State::Closing < State::Done);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    /// The terminal and the command are being set up. [`Session::spawn`](crate::Session::spawn)
    /// returns once this is over, so handles see it only in spirit.
    Starting,
    /// The command runs (or has exited and the session lingers): clients may
    /// attach.
    Ready,
    /// The session is shutting down: its process group is being ended and
    /// its clients detached. Attaching fails.
    Closing,
    /// Everything is released: the command is reaped, every descriptor
    /// closed, every task ended.
    Done,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Closing => "closing",
            Self::Done => "done",
        })
    }
}

/// Why a session closed.
///
/// ```
/// use ptysession::CloseReason;
///
/// assert_eq!(CloseReason::InactivityTimeout.to_string(), "no client for the inactivity timeout");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// [`Session::close`](crate::Session::close) was called.
    Requested,
    /// No client attached within the first-attach timeout.
    FirstAttachTimeout,
    /// No client was attached for the inactivity timeout.
    InactivityTimeout,
    /// The command exited and the linger time passed.
    Exited,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Requested => "closed on request",
            Self::FirstAttachTimeout => "no client attached within the first-attach timeout",
            Self::InactivityTimeout => "no client for the inactivity timeout",
            Self::Exited => "the command exited",
        })
    }
}

/// How the session's command ended: an exit code, or the signal that killed
/// it.
///
/// ```
/// use ptysession::ExitStatus;
///
/// assert_eq!(ExitStatus::Code(3).shell_code(), 3);
/// assert_eq!(ExitStatus::Signal(9).shell_code(), 137);
/// assert!(ExitStatus::Code(0).success());
/// assert_eq!(ExitStatus::Signal(15).to_string(), "killed by signal 15");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// The command exited with this code.
    Code(i32),
    /// The command was killed by this signal number.
    Signal(i32),
}

impl ExitStatus {
    /// Whether the command exited with code 0.
    pub fn success(self) -> bool {
        self == Self::Code(0)
    }

    /// The exit code, if the command exited normally.
    pub fn code(self) -> Option<i32> {
        match self {
            Self::Code(code) => Some(code),
            Self::Signal(_) => None,
        }
    }

    /// The signal that killed the command, if one did.
    pub fn signal(self) -> Option<i32> {
        match self {
            Self::Code(_) => None,
            Self::Signal(signal) => Some(signal),
        }
    }

    /// The status as a shell reports it in `$?`: the code, or 128 + N for
    /// death by signal N.
    pub fn shell_code(self) -> i32 {
        match self {
            Self::Code(code) => code,
            Self::Signal(signal) => 128 + signal,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Code(code) => write!(f, "exit code {code}"),
            Self::Signal(signal) => write!(f, "killed by signal {signal}"),
        }
    }
}

/// Why a client stopped receiving output before the command's exit status.
///
/// ```
/// use ptysession::DetachReason;
///
/// let reason = DetachReason::Lagged { queue_bytes: 1 << 20 };
/// assert!(reason.to_string().contains("fell behind"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DetachReason {
    /// The client fell behind the output by more than its queue holds. The
    /// queued output was dropped; attaching again replays the scrollback.
    Lagged {
        /// The size of the client's queue, in bytes.
        queue_bytes: usize,
    },
    /// The session closed without an exit status to report.
    Closed,
    /// Another client asked to be the only one attached; the session goes
    /// on. Sent by servers that offer that (ptysession itself never
    /// detaches a client for this reason).
    Displaced,
    /// The client's own request, carried out by the server: sent by
    /// servers that read the client's terminal themselves and so see its
    /// detach key first (ptysession's `serve_client` ends without a frame
    /// when the client asks).
    Requested,
}

impl fmt::Display for DetachReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Lagged { queue_bytes } => {
                write!(f, "detached: the client fell behind the output by more than {queue_bytes} bytes")
            }
            Self::Closed => f.write_str("detached: the session closed"),
            Self::Displaced => f.write_str("detached by another client"),
            Self::Requested => f.write_str("detached as the client asked"),
        }
    }
}
