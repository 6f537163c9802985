//! Exit watching: a pidfd registered with tokio (or, without pidfd support,
//! a thread blocked in `waitid`) reaps each child as soon as it exits, and
//! enforces the execution timeout. A watcher dropped with its runtime hands
//! the child to a thread, so every child is reaped.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::runtime::Handle;
use tokio::time::Instant;
use tracing::Instrument;

use crate::options::KillPlan;
use crate::run::Run;

/// Set once `pidfd_open` reports `ENOSYS` (kernels before 5.3).
static PIDFD_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// Stack size of reaper threads: they only call `waitid`.
const REAPER_STACK_BYTES: usize = 64 * 1024;

/// Opens a pidfd for `pid`, or `None` where the kernel has none (or it
/// cannot be opened; exits are then watched by a thread).
pub(crate) fn open_pidfd(pid: Pid, use_pidfd: bool) -> Option<Arc<OwnedFd>> {
    if !use_pidfd || PIDFD_UNSUPPORTED.load(Ordering::Relaxed) {
        return None;
    }
    match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
        Ok(pidfd) => Some(Arc::new(pidfd)),
        Err(Errno::NOSYS) => {
            PIDFD_UNSUPPORTED.store(true, Ordering::Relaxed);
            None
        }
        Err(errno) => {
            tracing::debug!(%errno, "pidfd_open failed; waiting on a thread");
            None
        }
    }
}

/// Starts watching `run` for its exit (and its execution timeout).
///
/// Must be called inside the runtime `runtime` belongs to.
pub(crate) fn watch(
    run: &Arc<Run>,
    pidfd: Option<Arc<OwnedFd>>,
    runtime: &Handle,
    execution_timeout: Option<Duration>,
    plan: KillPlan,
) -> io::Result<()> {
    let deadline = execution_timeout.map(|timeout| (Instant::now() + timeout, timeout));
    if let Some(pidfd) = pidfd {
        // SAFETY: the `Arc<OwnedFd>` owns an open pidfd; the `AsyncFd` keeps
        // a strong reference, so the descriptor stays open and unchanged for
        // the whole life of the registration (`OwnedFd` cannot be replaced).
        match unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) } {
            Ok(pidfd) => {
                // The guard is made here, not in the task, so that it also
                // covers a task dropped before its first poll.
                let abandon = Abandon { run: Some(Arc::clone(run)) };
                runtime.spawn(watch_pidfd(Arc::clone(run), abandon, pidfd, deadline, plan).instrument(run.span()));
                return Ok(());
            }
            Err(err) => tracing::debug!(%err, "registering the pidfd failed; waiting on a thread"),
        }
    }
    spawn_reaper_thread(Arc::clone(run))?;
    if let Some((at, timeout)) = deadline {
        runtime.spawn(watch_deadline(Arc::clone(run), at, timeout, plan).instrument(run.span()));
    }
    Ok(())
}

/// Reaps on a thread of its own: blocks until the exit, then reaps.
pub(crate) fn spawn_reaper_thread(run: Arc<Run>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("childproc-reaper".into())
        .stack_size(REAPER_STACK_BYTES)
        .spawn(move || run.span().in_scope(|| reap_blocking(&run)))
        .map(drop)
}

/// Blocks until the run is reaped.
pub(crate) fn reap_blocking(run: &Run) {
    while !run.try_reap() {
        run.wait_exit_blocking();
    }
}

/// Hands the run to a reaper thread if the watcher ends without reaping it
/// (its runtime shut down, or readiness failed).
struct Abandon {
    run: Option<Arc<Run>>,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if let Some(run) = self.run.take()
            && !run.try_reap()
            && let Err(err) = spawn_reaper_thread(run)
        {
            tracing::warn!(%err, "cannot start a reaper thread; the child stays unreaped");
        }
    }
}

/// Waits for the pidfd to become readable (the process exited) and reaps;
/// kills the child when the deadline passes first.
async fn watch_pidfd(
    run: Arc<Run>,
    mut abandon: Abandon,
    pidfd: AsyncFd<Arc<OwnedFd>>,
    mut deadline: Option<(Instant, Duration)>,
    plan: KillPlan,
) {
    loop {
        let ready = match deadline {
            Some((at, timeout)) => match tokio::time::timeout_at(at, pidfd.readable()).await {
                Ok(ready) => ready,
                Err(_elapsed) => {
                    deadline = None;
                    run.mark_timed_out(timeout, plan);
                    continue;
                }
            },
            None => pidfd.readable().await,
        };
        match ready {
            Ok(mut ready) => {
                if run.try_reap() {
                    abandon.run = None;
                    return;
                }
                ready.clear_ready();
            }
            Err(err) => {
                tracing::debug!(%err, "pidfd readiness failed; reaping on a thread");
                return;
            }
        }
    }
}

/// The execution timeout for a run watched by a thread.
async fn watch_deadline(run: Arc<Run>, at: Instant, timeout: Duration, plan: KillPlan) {
    if tokio::time::timeout_at(at, run.finished()).await.is_err() {
        run.mark_timed_out(timeout, plan);
    }
}
