//! One lifetime of a child process ([`Run`]): its state behind one lock that
//! both signalling and reaping take (so no signal is ever sent after the
//! reaping), the latched outcome every waiter reads, and the kill ladder.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use rustix::io::Errno;
use rustix::process::{Pid, WaitId, WaitIdOptions, WaitIdStatus};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tracing::{Instrument, Span};

use crate::options::{KillPlan, draw_splay};
use crate::{Error, ExitStatus, Signal};

/// How a run ended, as latched for its waiters.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Outcome {
    /// The process ended and was reaped.
    Exited(ExitStatus),
    /// The execution timeout expired and the process was killed.
    TimedOut { timeout: Duration, status: ExitStatus },
    /// The child was stopped before this run was reaped.
    Stopped,
    /// The run was never started.
    NotStarted,
    /// Reaping failed with this errno (the status was taken by someone else).
    WaitFailed(i32),
}

impl Outcome {
    /// The outcome as the public API reports it.
    pub(crate) fn into_result(self) -> Result<ExitStatus, Error> {
        match self {
            Outcome::Exited(status) => Ok(status),
            Outcome::TimedOut { timeout, status } => Err(Error::TimedOut { timeout, status }),
            Outcome::Stopped => Err(Error::Stopped),
            Outcome::NotStarted => Err(Error::NotStarted),
            Outcome::WaitFailed(errno) => Err(Error::io(
                "cannot reap the child (did something else in this process reap it?)",
                io::Error::from_raw_os_error(errno),
            )),
        }
    }
}

/// Where a run is in its life.
enum State {
    /// Not spawned yet; forwarded signals that arrive meanwhile wait here.
    NotStarted { pending: Vec<Signal> },
    /// Spawned and not yet reaped: the pid (and group) cannot be reused.
    Running(Process),
    /// Reaped (or abandoned before start); the outcome is latched.
    Finished,
}

/// A spawned, not yet reaped process.
struct Process {
    pid: Pid,
    /// Present where the kernel supports pidfds.
    pidfd: Option<Arc<OwnedFd>>,
    /// The process group the process leads, if any.
    group: Option<Pid>,
    /// The runtime that ladders and timers run on.
    runtime: Handle,
    /// The child was stopped: report `Stopped`, not the status.
    stop_requested: bool,
    /// The execution timeout expired: report `TimedOut`.
    timed_out: Option<Duration>,
    /// A kill ladder has been started for this run.
    ladder_started: bool,
    /// Send `SIGKILL` to the group when the leader has exited, before reaping.
    sweep_group: bool,
}

impl Process {
    /// Sends `signal` to the group or the process. A process that has exited
    /// but is not yet reaped is not an error.
    fn send(&self, signal: Signal) -> Result<(), Errno> {
        let sent = match (self.group, &self.pidfd) {
            (Some(group), _) => rustix::process::kill_process_group(group, signal),
            (None, Some(pidfd)) => rustix::process::pidfd_send_signal(pidfd.as_fd(), signal),
            (None, None) => rustix::process::kill_process(self.pid, signal),
        };
        match sent {
            Err(Errno::SRCH) => Ok(()),
            other => other,
        }
    }

    /// `waitid` on this process only (through its pidfd where there is one).
    fn waitid(&self, options: WaitIdOptions) -> Result<Option<WaitIdStatus>, Errno> {
        if let Some(pidfd) = &self.pidfd {
            match rustix::process::waitid(WaitId::PidFd(pidfd.as_fd()), options) {
                // Kernels that have pidfds but not `P_PIDFD` (5.3).
                Err(Errno::INVAL) => {}
                other => return other,
            }
        }
        rustix::process::waitid(WaitId::Pid(self.pid), options)
    }

    /// Reaps the process if it has exited, first sweeping its group with
    /// `SIGKILL` when a kill was requested (the unreaped leader still holds
    /// the group id, so the sweep cannot reach a recycled group).
    fn reap(&self) -> Result<Option<ExitStatus>, Errno> {
        let exited = WaitIdOptions::EXITED | WaitIdOptions::NOHANG;
        if let (true, Some(group)) = (self.sweep_group, self.group) {
            if self.waitid(exited | WaitIdOptions::NOWAIT)?.is_none() {
                return Ok(None);
            }
            let _ = rustix::process::kill_process_group(group, Signal::KILL);
        }
        Ok(self.waitid(exited)?.map(|info| ExitStatus::from_waitid(&info)))
    }

    /// What the waiters are told about a reaped process.
    fn outcome(&self, status: ExitStatus) -> Outcome {
        match (self.stop_requested, self.timed_out) {
            (true, _) => Outcome::Stopped,
            (false, Some(timeout)) => Outcome::TimedOut { timeout, status },
            (false, None) => Outcome::Exited(status),
        }
    }
}

/// One lifetime of a child process, shared by the [`Child`](crate::Child),
/// its exit handles, the exit watcher and any kill ladder.
pub(crate) struct Run {
    state: Mutex<State>,
    /// The latched outcome: `None` until the run ends, then never changes.
    outcome: watch::Sender<Option<Outcome>>,
    /// Set to cut a kill ladder's splay short.
    hurry: watch::Sender<bool>,
    /// The errno of a `SIGKILL` the ladder could not deliver.
    kill_failure: watch::Sender<Option<i32>>,
    /// The pid once spawned (0 before).
    pid: AtomicU32,
    /// The run's span (its pid and program) once spawned: its tasks run in
    /// it, and threads enter it before they log.
    span: OnceLock<Span>,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run").field("pid", &self.pid()).field("outcome", &*self.outcome.borrow()).finish()
    }
}

impl Run {
    /// A run that has not started.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::NotStarted { pending: Vec::new() }),
            outcome: watch::Sender::new(None),
            hurry: watch::Sender::new(false),
            kill_failure: watch::Sender::new(None),
            pid: AtomicU32::new(0),
            span: OnceLock::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Latches `outcome` and leaves the state for good. Called with the
    /// state locked, so no signal can slip in after a reaping.
    fn finish(&self, state: &mut State, outcome: Outcome) {
        *state = State::Finished;
        self.outcome.send_replace(Some(outcome));
    }

    /// The pid, once spawned (kept after the exit, when it may be reused).
    pub(crate) fn pid(&self) -> Option<u32> {
        match self.pid.load(Ordering::Acquire) {
            0 => None,
            pid => Some(pid),
        }
    }

    /// The run's span once spawned (a disabled span before).
    pub(crate) fn span(&self) -> Span {
        self.span.get().cloned().unwrap_or_else(Span::none)
    }

    /// The latched outcome, if the run has ended.
    pub(crate) fn outcome(&self) -> Option<Outcome> {
        *self.outcome.borrow()
    }

    /// Whether the run has not been started yet.
    pub(crate) fn is_unstarted(&self) -> bool {
        matches!(*self.lock(), State::NotStarted { .. })
    }

    /// Waits until the outcome is latched.
    ///
    /// Cancel safe: nothing is consumed.
    pub(crate) async fn finished(&self) -> Outcome {
        let mut receiver = self.outcome.subscribe();
        let latched = receiver.wait_for(Option::is_some).await.ok().and_then(|latched| *latched);
        // The sender lives in `self`, so the channel cannot close meanwhile.
        latched.unwrap_or(Outcome::NotStarted)
    }

    /// Waits until the outcome is latched, or fails if the kill ladder could
    /// not deliver `SIGKILL`.
    pub(crate) async fn finished_after_kill(&self) -> Result<Outcome, Error> {
        let mut failure = self.kill_failure.subscribe();
        tokio::select! {
            biased;
            outcome = self.finished() => Ok(outcome),
            errno = async { failure.wait_for(Option::is_some).await.ok().and_then(|errno| *errno) } => {
                let errno = errno.unwrap_or(libc_eio());
                Err(Error::io("cannot send SIGKILL to the child", io::Error::from_raw_os_error(errno)))
            }
        }
    }

    /// Records the spawned process and its span, and delivers forwarded
    /// signals that arrived while it was being spawned. Returns `false` (and
    /// leaves the process alone) if the run is no longer waiting to start.
    pub(crate) fn set_running(
        &self,
        pid: Pid,
        pidfd: Option<Arc<OwnedFd>>,
        group: Option<Pid>,
        runtime: Handle,
        span: Span,
    ) -> bool {
        let mut state = self.lock();
        let State::NotStarted { pending } = &mut *state else {
            return false;
        };
        let pending = std::mem::take(pending);
        let _ = self.span.set(span);
        let process = Process {
            pid,
            pidfd,
            group,
            runtime,
            stop_requested: false,
            timed_out: None,
            ladder_started: false,
            sweep_group: false,
        };
        for signal in pending {
            if let Err(errno) = process.send(signal) {
                tracing::debug!(?signal, %errno, "forwarding a signal failed");
            }
        }
        self.pid.store(pid.as_raw_nonzero().get().unsigned_abs(), Ordering::Release);
        *state = State::Running(process);
        true
    }

    /// Drops forwarded signals queued for a start that failed.
    pub(crate) fn clear_pending(&self) {
        if let State::NotStarted { pending } = &mut *self.lock() {
            pending.clear();
        }
    }

    /// Sends `signal` to the process (or its group); `Ok` once it has ended.
    pub(crate) fn signal(&self, signal: Signal) -> Result<(), Error> {
        match &*self.lock() {
            State::NotStarted { .. } => Err(Error::NotStarted),
            State::Running(process) => {
                process.send(signal).map_err(|errno| Error::io("cannot send a signal to the child", errno))
            }
            State::Finished => Ok(()),
        }
    }

    /// Relays a signal this process received: queued if the process is being
    /// spawned, sent if it runs, dropped once it has ended.
    pub(crate) fn forward(&self, signal: Signal) {
        match &mut *self.lock() {
            State::NotStarted { pending } => pending.push(signal),
            State::Running(process) => {
                let _entered = self.span.get().map(Span::enter);
                tracing::debug!(?signal, "forwarding a signal");
                if let Err(errno) = process.send(signal) {
                    tracing::debug!(?signal, %errno, "forwarding a signal failed");
                }
            }
            State::Finished => {}
        }
    }

    /// Sends a ladder step's signal if the process still runs.
    fn signal_running(&self, signal: Signal) -> Result<(), Errno> {
        match &*self.lock() {
            State::Running(process) => process.send(signal),
            State::NotStarted { .. } | State::Finished => Ok(()),
        }
    }

    /// Reaps the process if it has exited. Returns whether the run has ended.
    pub(crate) fn try_reap(&self) -> bool {
        let mut state = self.lock();
        let State::Running(process) = &*state else {
            return true;
        };
        let outcome = loop {
            match process.reap() {
                Ok(None) => return false,
                Ok(Some(status)) => break process.outcome(status),
                Err(Errno::INTR) => continue,
                Err(errno) => break Outcome::WaitFailed(errno.raw_os_error()),
            }
        };
        tracing::debug!(?outcome, "child reaped");
        self.finish(&mut state, outcome);
        true
    }

    /// Blocks (outside the lock) until the process has exited, without
    /// reaping it. Returns at once if it is not running or on any error.
    pub(crate) fn wait_exit_blocking(&self) {
        let (pid, pidfd) = match &*self.lock() {
            State::Running(process) => (process.pid, process.pidfd.clone()),
            State::NotStarted { .. } | State::Finished => return,
        };
        let options = WaitIdOptions::EXITED | WaitIdOptions::NOWAIT;
        let waited = match &pidfd {
            Some(pidfd) => rustix::process::waitid(WaitId::PidFd(pidfd.as_fd()), options),
            None => rustix::process::waitid(WaitId::Pid(pid), options),
        };
        if let (Err(Errno::INVAL), Some(_)) = (waited, &pidfd) {
            let _ = rustix::process::waitid(WaitId::Pid(pid), options);
        }
    }

    /// Starts the kill ladder unless one already runs (then a plan without
    /// splay cuts its splay short).
    pub(crate) fn begin_kill(self: &Arc<Self>, plan: KillPlan) -> Result<(), Error> {
        let mut state = self.lock();
        let ladder = match &mut *state {
            State::NotStarted { .. } => return Err(Error::NotStarted),
            State::Running(process) => self.start_ladder(process, plan),
            State::Finished => None,
        };
        drop(state);
        spawn_ladder(ladder);
        Ok(())
    }

    /// Marks the run stopped (its exit is reported as `Stopped`) and starts
    /// the kill ladder, or cuts a running ladder's splay short. A run that
    /// has not started ends at once.
    pub(crate) fn request_stop(self: &Arc<Self>, plan: KillPlan) {
        let mut state = self.lock();
        let ladder = match &mut *state {
            State::NotStarted { .. } => {
                self.finish(&mut state, Outcome::Stopped);
                None
            }
            State::Running(process) => {
                process.stop_requested = true;
                if process.ladder_started {
                    self.hurry.send_replace(true);
                    None
                } else {
                    self.start_ladder(process, plan)
                }
            }
            State::Finished => None,
        };
        drop(state);
        spawn_ladder(ladder);
    }

    /// Cuts the splay of a running ladder short.
    pub(crate) fn hurry(&self) {
        self.hurry.send_replace(true);
    }

    /// The execution timeout expired: report `TimedOut` and kill.
    pub(crate) fn mark_timed_out(self: &Arc<Self>, timeout: Duration, plan: KillPlan) {
        let mut state = self.lock();
        let mut ladder = None;
        if let State::Running(process) = &mut *state {
            tracing::debug!(?timeout, "execution timeout expired");
            process.timed_out = Some(timeout);
            ladder = self.start_ladder(process, plan);
        }
        drop(state);
        spawn_ladder(ladder);
    }

    /// The [`Child`](crate::Child) was dropped: an unstarted run ends; a
    /// running one is killed if `kill` says so, and is reaped either way.
    pub(crate) fn child_dropped(self: &Arc<Self>, kill: Option<KillPlan>) {
        let mut state = self.lock();
        let ladder = match &mut *state {
            State::NotStarted { .. } => {
                self.finish(&mut state, Outcome::NotStarted);
                None
            }
            State::Running(process) => kill.and_then(|plan| self.start_ladder(process, plan)),
            State::Finished => None,
        };
        drop(state);
        spawn_ladder(ladder);
    }

    /// Prepares the kill ladder, once per run (a later plan without splay
    /// cuts the running ladder's splay short). The caller spawns it with
    /// [`spawn_ladder`] after releasing the state lock: a runtime that is
    /// shutting down drops the task inside `spawn`, and the task's
    /// [`Escalation`] guard then takes that lock.
    #[must_use]
    fn start_ladder(self: &Arc<Self>, process: &mut Process, plan: KillPlan) -> Option<PendingLadder> {
        if process.ladder_started {
            if plan.splay.is_zero() {
                self.hurry.send_replace(true);
            }
            return None;
        }
        process.ladder_started = true;
        process.sweep_group = process.group.is_some();
        // The guard is made here, not in the task, so that it also covers
        // a task dropped before its first poll (its runtime shut down).
        let escalation = Escalation { run: Arc::clone(self), armed: true };
        Some(PendingLadder { runtime: process.runtime.clone(), escalation, plan, span: self.span() })
    }
}

/// A kill ladder prepared under the state lock, to be spawned after it.
struct PendingLadder {
    runtime: Handle,
    escalation: Escalation,
    plan: KillPlan,
    span: Span,
}

/// Spawns a prepared ladder; call it with the state lock released.
fn spawn_ladder(ladder: Option<PendingLadder>) {
    if let Some(PendingLadder { runtime, escalation, plan, span }) = ladder {
        runtime.spawn(ladder_task(escalation, plan).instrument(span));
    }
}

/// `EIO`, for a failure whose errno was lost.
fn libc_eio() -> i32 {
    Errno::IO.raw_os_error()
}

/// Sends `SIGKILL` if a ladder is dropped before it finished (its runtime
/// shut down): the process was meant to end, and nothing else will end it.
struct Escalation {
    run: Arc<Run>,
    armed: bool,
}

impl Drop for Escalation {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.run.signal_running(Signal::KILL);
        }
    }
}

/// The kill ladder: splay (cut short by a stop, a timeout or the exit), the
/// kill signal, up to the kill timeout for the exit, then `SIGKILL`. The exit
/// watcher reaps; waiters wait for the latched outcome.
async fn ladder_task(mut escalation: Escalation, plan: KillPlan) {
    let run = Arc::clone(&escalation.run);
    let mut outcome = run.outcome.subscribe();
    let mut hurry = run.hurry.subscribe();
    if !plan.splay.is_zero() {
        let delay = draw_splay(plan.splay);
        tracing::debug!(?delay, "waiting the splay before signalling");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = hurry.wait_for(|hurry| *hurry) => {}
            _ = outcome.wait_for(Option::is_some) => {}
        }
    }
    let mut escalate = true;
    if let Some(signal) = plan.signal.filter(|signal| *signal != Signal::KILL) {
        match run.signal_running(signal) {
            Ok(()) => {
                let exited = tokio::time::timeout(plan.kill_timeout, outcome.wait_for(Option::is_some)).await;
                escalate = exited.is_err();
            }
            Err(errno) => tracing::debug!(?signal, %errno, "kill signal failed; escalating"),
        }
    }
    if escalate && run.outcome().is_none() {
        tracing::debug!("sending SIGKILL");
        if let Err(errno) = run.signal_running(Signal::KILL) {
            tracing::warn!(%errno, "SIGKILL failed");
            run.kill_failure.send_replace(Some(errno.raw_os_error()));
        }
    }
    escalation.armed = false;
}
