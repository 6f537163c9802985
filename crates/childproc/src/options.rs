//! [`Options`] (how a child is isolated, signalled and ended) and [`Isolation`].

use std::time::Duration;

use crate::Signal;

/// Where a child runs relative to this process's process group and session,
/// and so what [`Child::signal`](crate::Child::signal) and the kill ladder
/// reach.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Isolation {
    /// The child leads a new process group (`Command::process_group(0)`);
    /// signals go to the whole group. Keeps std's fast `posix_spawn` path.
    #[default]
    ProcessGroup,
    /// The child leads a new session (and so a new group), made with
    /// `setsid` in a `pre_exec` hook; signals go to the whole group. The hook
    /// makes std fork and exec instead of using `posix_spawn`. Do not also
    /// call `process_group` on the command: `setsid` fails in a group leader.
    Session,
    /// The caller's own `pre_exec` hook calls `setsid` (for example to take
    /// a PTY as controlling terminal); childproc adds no hook but treats the
    /// child as the leader of its group and signals the group.
    SessionByCaller,
    /// The child stays in this process's group; signals go to the child
    /// alone, and grandchildren are not reached.
    None,
}

impl Isolation {
    /// Whether the child leads its own process group.
    pub(crate) fn leads_group(self) -> bool {
        !matches!(self, Isolation::None)
    }
}

/// How a child is run, signalled and ended. Built with chained setters:
///
/// ```
/// use std::time::Duration;
/// use childproc::{Isolation, Options, Signal};
///
/// let options = Options::new()
///     .isolation(Isolation::ProcessGroup)
///     .kill_signal(Some(Signal::INT))
///     .kill_timeout(Duration::from_secs(2))
///     .splay(Duration::from_millis(500))
///     .execution_timeout(Some(Duration::from_secs(60)))
///     .forward_signals([Signal::HUP, Signal::WINCH])
///     .reload_signal(Some(Signal::HUP));
/// # let _ = options;
/// ```
#[derive(Clone, Debug)]
pub struct Options {
    pub(crate) isolation: Isolation,
    pub(crate) kill_signal: Option<Signal>,
    pub(crate) kill_timeout: Duration,
    pub(crate) splay: Duration,
    pub(crate) execution_timeout: Option<Duration>,
    pub(crate) kill_on_drop: bool,
    pub(crate) forward_signals: Vec<Signal>,
    pub(crate) reload_signal: Option<Signal>,
    pub(crate) restartable: bool,
    /// Test-only: wait for exits on a thread instead of a pidfd, as on
    /// kernels without pidfd support.
    #[cfg(test)]
    pub(crate) without_pidfd: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self::new()
    }
}

impl Options {
    /// The defaults: own process group, `SIGTERM` then `SIGKILL` after 5 s,
    /// no splay, no execution timeout, killed on drop, no forwarded signals,
    /// no reload signal, restartable.
    pub fn new() -> Self {
        Self {
            isolation: Isolation::ProcessGroup,
            kill_signal: Some(Signal::TERM),
            kill_timeout: Duration::from_secs(5),
            splay: Duration::ZERO,
            execution_timeout: None,
            kill_on_drop: true,
            forward_signals: Vec::new(),
            reload_signal: None,
            restartable: true,
            #[cfg(test)]
            without_pidfd: false,
        }
    }

    /// Where the child runs; see [`Isolation`]. Default
    /// [`Isolation::ProcessGroup`].
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = isolation;
        self
    }

    /// The signal that asks the child to end, sent first by the kill ladder.
    /// Default `SIGTERM`; `None` sends `SIGKILL` at once.
    pub fn kill_signal(mut self, signal: Option<Signal>) -> Self {
        self.kill_signal = signal;
        self
    }

    /// How long the kill ladder waits after the kill signal before sending
    /// `SIGKILL`. Default 5 s.
    pub fn kill_timeout(mut self, timeout: Duration) -> Self {
        self.kill_timeout = timeout;
        self
    }

    /// The upper bound of a random delay, uniform in `[0, splay)`, that
    /// [`Child::kill`](crate::Child::kill), [`Child::stop`](crate::Child::stop),
    /// [`Child::restart`](crate::Child::restart) and
    /// [`Child::reload`](crate::Child::reload) wait before signalling, so
    /// that many supervisors reacting to one event do not all signal at the
    /// same instant. Default zero (no delay).
    pub fn splay(mut self, splay: Duration) -> Self {
        self.splay = splay;
        self
    }

    /// How long the child may run; when it expires the child (and its group)
    /// is killed through the kill ladder (without splay) and waiters get
    /// [`Error::TimedOut`](crate::Error::TimedOut). Default none.
    pub fn execution_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.execution_timeout = timeout;
        self
    }

    /// Whether dropping the [`Child`](crate::Child) while its process runs
    /// starts the kill ladder (without splay) in the background. Either way
    /// the process is reaped. Default `true`.
    pub fn kill_on_drop(mut self, kill_on_drop: bool) -> Self {
        self.kill_on_drop = kill_on_drop;
        self
    }

    /// Signals received by this process that are relayed to the child (to
    /// its group when it leads one). Handlers are installed before the child
    /// is spawned, so a signal arriving right after spawn is not lost.
    /// `SIGKILL`, `SIGSTOP`, `SIGCHLD` and synchronous signals (`SIGILL`,
    /// `SIGTRAP`, `SIGABRT`, `SIGBUS`, `SIGFPE`, `SIGSEGV`, `SIGSYS`,
    /// `SIGPIPE`, `SIGXFSZ`) are refused when the child starts. Default none.
    ///
    /// See the crate's `# Caveats` about process-wide handlers.
    pub fn forward_signals(mut self, signals: impl IntoIterator<Item = Signal>) -> Self {
        self.forward_signals = signals.into_iter().collect();
        self.forward_signals.sort_by_key(|signal| signal.as_raw());
        self.forward_signals.dedup();
        self
    }

    /// The signal [`Child::reload`](crate::Child::reload) sends (after the
    /// splay). Without one, `reload` restarts the child. Default none.
    pub fn reload_signal(mut self, signal: Option<Signal>) -> Self {
        self.reload_signal = signal;
        self
    }

    /// Whether the [`Child`](crate::Child) keeps its command after spawning
    /// so that it can be restarted. Default `true`.
    ///
    /// A kept command keeps every descriptor it holds open, for example a
    /// `Stdio::from(fd)` or the slave side of a PTY, so the reader of the
    /// other side never sees the end of the stream. Set this to `false` for
    /// such commands: the command is dropped right after the first spawn,
    /// and [`Child::restart`](crate::Child::restart) then fails with
    /// [`Error::NotRestartable`](crate::Error::NotRestartable).
    pub fn restartable(mut self, restartable: bool) -> Self {
        self.restartable = restartable;
        self
    }
}

/// What the kill ladder does: optional splay, optional kill signal, grace.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KillPlan {
    pub(crate) splay: Duration,
    pub(crate) signal: Option<Signal>,
    pub(crate) kill_timeout: Duration,
}

impl Options {
    /// The ladder for these options, with or without the splay.
    pub(crate) fn kill_plan(&self, with_splay: bool) -> KillPlan {
        KillPlan {
            splay: if with_splay { self.splay } else { Duration::ZERO },
            signal: self.kill_signal,
            kill_timeout: self.kill_timeout,
        }
    }
}

impl KillPlan {
    /// This plan with `SIGKILL` at once.
    pub(crate) fn immediate(self) -> Self {
        Self { splay: Duration::ZERO, signal: None, ..self }
    }
}

/// A random delay uniform in `[0, splay)`; zero for a zero splay.
pub(crate) fn draw_splay(splay: Duration) -> Duration {
    let nanos = u64::try_from(splay.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 { Duration::ZERO } else { Duration::from_nanos(fastrand::u64(0..nanos)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splay_draws_fall_in_the_half_open_range_and_vary() {
        let splay = Duration::from_millis(250);
        let draws: Vec<Duration> = (0..10_000).map(|_| draw_splay(splay)).collect();
        assert!(draws.iter().all(|draw| *draw < splay));
        let min = draws.iter().min().copied().unwrap_or_default();
        let max = draws.iter().max().copied().unwrap_or_default();
        // 10 000 uniform draws cover nearly the whole range.
        assert!(min < Duration::from_millis(5), "smallest draw {min:?}");
        assert!(max > Duration::from_millis(245), "largest draw {max:?}");
        assert_eq!(draw_splay(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn forwarded_signals_are_deduplicated() {
        let options = Options::new().forward_signals([Signal::HUP, Signal::INT, Signal::HUP]);
        assert_eq!(options.forward_signals, vec![Signal::HUP, Signal::INT]);
    }
}
