//! [`Child`] (a supervised child process: start, signal, kill, stop,
//! restart) and [`ExitHandle`] (a cloneable reader of one run's latched exit).

use std::fmt;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rustix::process::Pid;
use tokio::net::unix::pipe;
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::options::draw_splay;
use crate::run::{Outcome, Run};
use crate::{Error, ExitStatus, Isolation, Options, Signal, forward, reaper, sigmask};

/// A command that childproc can spawn: a [`std::process::Command`] or a
/// [`tokio::process::Command`] (whose `kill_on_drop` setting is not carried
/// over; use [`Options::kill_on_drop`]).
pub trait IntoCommand {
    /// The command as a [`std::process::Command`].
    fn into_command(self) -> Command;
}

impl IntoCommand for Command {
    fn into_command(self) -> Command {
        self
    }
}

impl IntoCommand for tokio::process::Command {
    fn into_command(self) -> Command {
        self.into_std()
    }
}

/// A supervised child process.
///
/// A `Child` owns a command and runs it: once ([`start`](Self::start) or
/// [`spawn`](Self::spawn)), and again after [`restart`](Self::restart). Each
/// run has its own latched exit, read through [`ExitHandle`]s that can be
/// taken before the run starts. All methods take `&self`, so a `Child` can be
/// shared (for example in an `Arc`) between a task that waits and one that
/// kills.
///
/// See the [crate documentation](crate) for an example and the caveats.
pub struct Child {
    options: Options,
    program: String,
    /// The span current when the child was made: each run's span is its
    /// child (a session's span, say).
    parent_span: tracing::Span,
    slot: Mutex<Slot>,
    /// Set once stopped; wakes splays waiting in [`reload`](Self::reload).
    stopped: watch::Sender<bool>,
}

/// What changes from run to run.
struct Slot {
    /// `None` once released ([`Options::restartable`]`(false)`).
    command: Option<Command>,
    /// The command has a hook that empties the child's signal mask.
    resets_mask: bool,
    run: Arc<Run>,
    stdin: Option<pipe::Sender>,
    stdout: Option<pipe::Receiver>,
    stderr: Option<pipe::Receiver>,
}

impl fmt::Debug for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Child")
            .field("program", &self.program)
            .field("pid", &self.pid())
            .field("stopped", &self.is_stopped())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Child {
    /// Prepares a child without starting it, so that
    /// [`exit_handle`](Self::exit_handle) can be taken first.
    ///
    /// [`Isolation::ProcessGroup`] calls `process_group(0)` on the command;
    /// [`Isolation::Session`] adds a `pre_exec` hook calling `setsid`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), childproc::Error> {
    /// let child = childproc::Child::new(std::process::Command::new("true"), childproc::Options::new());
    /// let exit = child.exit_handle(); // exists before the process does
    /// child.start()?;
    /// assert!(exit.wait().await?.success());
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(command: impl IntoCommand, options: Options) -> Self {
        let mut command = command.into_command();
        let program = command.get_program().to_string_lossy().into_owned();
        match options.isolation {
            Isolation::ProcessGroup => {
                command.process_group(0);
            }
            Isolation::Session => {
                // SAFETY: the hook runs in the forked child before exec; it
                // only makes the `setsid` and `pthread_sigmask` calls and
                // converts their errors, which neither allocate nor lock.
                unsafe {
                    command.pre_exec(|| {
                        rustix::process::setsid().map_err(std::io::Error::from)?;
                        sigmask::unblock_all()
                    });
                }
            }
            Isolation::SessionByCaller | Isolation::None => {}
        }
        let resets_mask = options.isolation == Isolation::Session;
        let slot =
            Slot { command: Some(command), resets_mask, run: Run::new(), stdin: None, stdout: None, stderr: None };
        Self {
            options,
            program,
            parent_span: tracing::Span::current(),
            slot: Mutex::new(slot),
            stopped: watch::Sender::new(false),
        }
    }

    /// Prepares and starts a child: [`new`](Self::new) then
    /// [`start`](Self::start).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), childproc::Error> {
    /// let mut command = tokio::process::Command::new("sh");
    /// command.args(["-c", "exit 3"]);
    /// let child = childproc::Child::spawn(command, childproc::Options::new())?;
    /// assert_eq!(child.wait().await?.code(), Some(3));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn spawn(command: impl IntoCommand, options: Options) -> Result<Self, Error> {
        let child = Self::new(command, options);
        child.start()?;
        Ok(child)
    }

    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the process. Forwarded signals' handlers are installed first;
    /// the exit watcher (and the execution timeout) starts with the process.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyStarted`] if it was started before,
    /// [`Error::Stopped`] after [`stop`](Self::stop),
    /// [`Error::UnforwardableSignal`] for a refused forwarded signal,
    /// [`Error::Spawn`] (naming the program) if the process cannot be
    /// spawned, [`Error::Io`] if its stdio cannot be registered with tokio
    /// (the process is then killed) or forwarding cannot be set up.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime. The runtime needs its I/O and time drivers.
    pub fn start(&self) -> Result<(), Error> {
        let mut slot = self.lock();
        if *self.stopped.borrow() {
            return Err(Error::Stopped);
        }
        if !slot.run.is_unstarted() {
            return Err(Error::AlreadyStarted);
        }
        self.start_locked(&mut slot)
    }

    /// Spawns the slot's (unstarted) run.
    fn start_locked(&self, slot: &mut Slot) -> Result<(), Error> {
        let runtime = Handle::current();
        let run = Arc::clone(&slot.run);
        let Some(command) = slot.command.as_mut() else {
            return Err(Error::NotRestartable);
        };
        // The child inherits this thread's signal mask: when it is not
        // empty, empty it in the child (which costs the `posix_spawn` path).
        if !slot.resets_mask && sigmask::current_thread_blocks_signals() {
            // SAFETY: the hook runs in the forked child before exec; it only
            // makes the `pthread_sigmask` call, which neither allocates nor
            // takes locks.
            unsafe {
                command.pre_exec(sigmask::unblock_all);
            }
            slot.resets_mask = true;
        }
        // Handlers first: a signal arriving from here on is queued in the
        // run and delivered as soon as the pid is known.
        let subscription = forward::subscribe(&self.options.forward_signals, Arc::downgrade(&run))?;
        let mut spawned = match command.spawn() {
            Ok(spawned) => spawned,
            Err(source) => {
                if let Some(id) = subscription {
                    forward::unsubscribe(id);
                }
                run.clear_pending();
                return Err(Error::Spawn { program: self.program.clone(), source });
            }
        };
        if !self.options.restartable {
            // Release the descriptors the command holds (a PTY slave, say).
            slot.command = None;
        }
        let stdin = spawned.stdin.take().map(OwnedFd::from);
        let stdout = spawned.stdout.take().map(OwnedFd::from);
        let stderr = spawned.stderr.take().map(OwnedFd::from);
        let pid = Pid::from_raw(i32::try_from(spawned.id()).unwrap_or(0))
            .ok_or_else(|| Error::io("cannot read the spawned child's pid", std::io::ErrorKind::InvalidData))?;
        drop(spawned);
        // Every line about this run, from any task or thread, names it.
        let span = tracing::info_span!(
            parent: &self.parent_span,
            "child",
            pid = pid.as_raw_nonzero().get(),
            program = %self.program,
        );
        let _entered = span.enter();
        #[cfg(test)]
        let use_pidfd = !self.options.without_pidfd;
        #[cfg(not(test))]
        let use_pidfd = true;
        let pidfd = reaper::open_pidfd(pid, use_pidfd);
        let group = self.options.isolation.leads_group().then_some(pid);
        if !run.set_running(pid, pidfd.clone(), group, runtime.clone(), span.clone()) {
            // Unreachable while `start` holds the slot: nothing else leaves
            // the unstarted state then. Never leave a process unwatched.
            let _ = rustix::process::kill_process(pid, Signal::KILL);
            let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
            return Err(Error::Stopped);
        }
        tracing::debug!("child spawned");
        let plan = self.options.kill_plan(false);
        if let Err(err) = reaper::watch(&run, pidfd, &runtime, self.options.execution_timeout, plan) {
            let _ = run.signal(Signal::KILL);
            reaper::reap_blocking(&run);
            return Err(Error::io("cannot start the exit watcher", err));
        }
        let stdio = (|| {
            Ok::<_, std::io::Error>((
                stdin.map(pipe::Sender::from_owned_fd).transpose()?,
                stdout.map(pipe::Receiver::from_owned_fd).transpose()?,
                stderr.map(pipe::Receiver::from_owned_fd).transpose()?,
            ))
        })();
        match stdio {
            Ok((stdin, stdout, stderr)) => {
                (slot.stdin, slot.stdout, slot.stderr) = (stdin, stdout, stderr);
                Ok(())
            }
            Err(err) => {
                let _ = run.begin_kill(self.options.kill_plan(false).immediate());
                Err(Error::io("cannot register the child's stdio with tokio", err))
            }
        }
    }

    /// The pid of the current run's process, once started. It stays readable
    /// after the exit, when the pid may already name another process.
    pub fn pid(&self) -> Option<u32> {
        self.lock().run.pid()
    }

    /// A handle on the current run's exit, usable before the run starts and
    /// long after it ended. After a [`restart`](Self::restart) this returns
    /// the new run's handle; earlier handles keep reporting their own run.
    pub fn exit_handle(&self) -> ExitHandle {
        ExitHandle { run: Arc::clone(&self.lock().run) }
    }

    /// Takes the write side of the child's stdin (when the command had
    /// `Stdio::piped()`); `None` if there is none or it was taken. Each run
    /// has its own pipes.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::process::{Command, Stdio};
    /// use tokio::io::{AsyncReadExt, AsyncWriteExt};
    ///
    /// let mut command = Command::new("cat");
    /// command.stdin(Stdio::piped()).stdout(Stdio::piped());
    /// let child = childproc::Child::spawn(command, childproc::Options::new())?;
    /// let mut stdin = child.take_stdin().expect("piped");
    /// let mut stdout = child.take_stdout().expect("piped");
    /// stdin.write_all(b"hello").await?;
    /// drop(stdin); // end of input: cat exits
    /// let mut echoed = String::new();
    /// stdout.read_to_string(&mut echoed).await?;
    /// assert_eq!(echoed, "hello");
    /// assert!(child.wait().await?.success());
    /// # Ok(())
    /// # }
    /// ```
    pub fn take_stdin(&self) -> Option<pipe::Sender> {
        self.lock().stdin.take()
    }

    /// Takes the read side of the child's stdout (when the command had
    /// `Stdio::piped()`); `None` if there is none or it was taken.
    pub fn take_stdout(&self) -> Option<pipe::Receiver> {
        self.lock().stdout.take()
    }

    /// Takes the read side of the child's stderr (when the command had
    /// `Stdio::piped()`); `None` if there is none or it was taken.
    pub fn take_stderr(&self) -> Option<pipe::Receiver> {
        self.lock().stderr.take()
    }

    /// Waits for the current run to end; see [`ExitHandle::wait`].
    ///
    /// # Errors
    ///
    /// As [`ExitHandle::wait`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the status stays latched for the next call.
    pub async fn wait(&self) -> Result<ExitStatus, Error> {
        self.exit_handle().wait().await
    }

    /// The current run's status if it has ended; see
    /// [`ExitHandle::try_status`].
    ///
    /// # Errors
    ///
    /// As [`ExitHandle::try_status`].
    pub fn try_status(&self) -> Result<Option<ExitStatus>, Error> {
        self.exit_handle().try_status()
    }

    /// Sends `signal` to the process, or to its group when it leads one.
    ///
    /// The process is reached through its pidfd (where the kernel has
    /// pidfds), the group only while its leader is known not to be reaped,
    /// so a signal never reaches a recycled pid. A signal to a process that
    /// has ended is `Ok` and does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::NotStarted`] before the first start; [`Error::Io`] if the
    /// kernel refuses (for example `EPERM`).
    pub fn signal(&self, signal: Signal) -> Result<(), Error> {
        self.lock().run.signal(signal)
    }

    /// Kills the current run: the splay (cut short by
    /// [`stop`](Self::stop)), the kill signal to the group, up to the kill
    /// timeout for the exit, then `SIGKILL` to the group. Once the leader has
    /// exited, what is left of its group gets `SIGKILL` before the leader is
    /// reaped. Returns only when the process is dead and reaped, with its
    /// outcome (as [`wait`](Self::wait) reports it). Without a kill signal,
    /// `SIGKILL` is sent at once. Killing a run that has ended only returns
    /// its outcome.
    ///
    /// # Errors
    ///
    /// [`Error::NotStarted`] before the first start; [`Error::Stopped`] or
    /// [`Error::TimedOut`] when the run ended so; [`Error::Io`] if `SIGKILL`
    /// could not be delivered.
    ///
    /// # Cancel safety
    ///
    /// The kill runs as a background task: dropping the future does not stop
    /// it. Wait for its end with [`wait`](Self::wait).
    pub async fn kill(&self) -> Result<ExitStatus, Error> {
        let run = Arc::clone(&self.lock().run);
        run.begin_kill(self.options.kill_plan(true))?;
        run.finished_after_kill().await?.into_result()
    }

    /// Stops the child for good: kills it as [`kill`](Self::kill) does (a
    /// kill in its splay signals at once), reports [`Error::Stopped`] to
    /// waiters instead of the exit status, and refuses later starts and
    /// restarts. A run that has already been reaped keeps its reported
    /// status. A second call sends nothing and returns once the run has
    /// ended.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if `SIGKILL` could not be delivered.
    ///
    /// # Cancel safety
    ///
    /// The stop takes effect at the first poll and its kill runs as a
    /// background task: dropping the future stops neither.
    pub async fn stop(&self) -> Result<(), Error> {
        self.stop_with(true).await
    }

    /// [`stop`](Self::stop) without the splay.
    ///
    /// # Errors
    ///
    /// As [`stop`](Self::stop).
    ///
    /// # Cancel safety
    ///
    /// As [`stop`](Self::stop).
    pub async fn stop_immediately(&self) -> Result<(), Error> {
        self.stop_with(false).await
    }

    async fn stop_with(&self, with_splay: bool) -> Result<(), Error> {
        let (run, first) = {
            let mut slot = self.lock();
            let first = !self.stopped.send_replace(true);
            // A stopped child never starts again: release what it holds.
            slot.command = None;
            (Arc::clone(&slot.run), first)
        };
        if first {
            run.request_stop(self.options.kill_plan(with_splay));
        } else if !with_splay {
            // A later `stop_immediately` still cuts a splay short; a second
            // `stop` changes nothing.
            run.hurry();
        }
        run.finished_after_kill().await.map(drop)
    }

    /// Whether [`stop`](Self::stop) or
    /// [`stop_immediately`](Self::stop_immediately) was called.
    pub fn is_stopped(&self) -> bool {
        *self.stopped.borrow()
    }

    /// Kills the current run (as [`kill`](Self::kill), with the splay) and
    /// starts the command again, returning the new run's exit handle. A
    /// child that was never started is just started.
    ///
    /// # Errors
    ///
    /// [`Error::Stopped`] once stopped (also when the stop comes during the
    /// kill), [`Error::NotRestartable`] if the command was released, the
    /// errors of [`kill`](Self::kill)'s `SIGKILL` and of
    /// [`start`](Self::start).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped during the kill, the old run still ends (in
    /// the background) but no new one starts.
    pub async fn restart(&self) -> Result<ExitHandle, Error> {
        let run = {
            let slot = self.lock();
            if *self.stopped.borrow() {
                return Err(Error::Stopped);
            }
            if slot.command.is_none() {
                return Err(Error::NotRestartable);
            }
            Arc::clone(&slot.run)
        };
        if !run.is_unstarted() {
            run.begin_kill(self.options.kill_plan(true))?;
            run.finished_after_kill().await?;
        }
        let mut slot = self.lock();
        if *self.stopped.borrow() {
            return Err(Error::Stopped);
        }
        if !Arc::ptr_eq(&slot.run, &run) {
            // A concurrent restart already replaced the run.
            return Ok(ExitHandle { run: Arc::clone(&slot.run) });
        }
        if !run.is_unstarted() {
            slot.run = Run::new();
            (slot.stdin, slot.stdout, slot.stderr) = (None, None, None);
        }
        self.start_locked(&mut slot)?;
        Ok(ExitHandle { run: Arc::clone(&slot.run) })
    }

    /// Reloads the child: with a [reload signal](Options::reload_signal),
    /// waits the splay (cut short by [`stop`](Self::stop)) and sends it;
    /// without one, [`restart`](Self::restart)s.
    ///
    /// # Errors
    ///
    /// [`Error::Stopped`] once stopped; otherwise as
    /// [`signal`](Self::signal) or [`restart`](Self::restart).
    ///
    /// # Cancel safety
    ///
    /// With a reload signal, dropping the future during the splay sends
    /// nothing. Without one, as [`restart`](Self::restart).
    pub async fn reload(&self) -> Result<(), Error> {
        let Some(signal) = self.options.reload_signal else {
            return self.restart().await.map(drop);
        };
        let mut stopped = self.stopped.subscribe();
        if *stopped.borrow_and_update() {
            return Err(Error::Stopped);
        }
        let delay = draw_splay(self.options.splay);
        if !delay.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = stopped.wait_for(|stopped| *stopped) => return Err(Error::Stopped),
            }
        }
        self.signal(signal)
    }

    /// The current run, for the crate's unit tests.
    #[cfg(test)]
    pub(crate) fn current_run(&self) -> Arc<Run> {
        Arc::clone(&self.lock().run)
    }

    /// The options the child was created with.
    pub fn options(&self) -> &Options {
        &self.options
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let slot = self.slot.get_mut().unwrap_or_else(PoisonError::into_inner);
        let kill = self.options.kill_on_drop.then(|| self.options.kill_plan(false));
        slot.run.child_dropped(kill);
    }
}

/// A handle on one run's exit: cheap to clone, `Send + Sync`, usable before
/// the run starts and long after it ended. Any number of handles read the
/// same latched outcome; reading never consumes it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), childproc::Error> {
/// let mut command = std::process::Command::new("sh");
/// command.args(["-c", "exit 7"]);
/// let child = childproc::Child::new(command, childproc::Options::new());
/// let early = child.exit_handle();
/// child.start()?;
/// assert_eq!(early.wait().await?.code(), Some(7));
/// assert_eq!(early.clone().wait().await?.code(), Some(7)); // and again
/// assert_eq!(child.try_status()?.and_then(|status| status.code()), Some(7));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ExitHandle {
    run: Arc<Run>,
}

impl fmt::Debug for ExitHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExitHandle").field("pid", &self.run.pid()).field("outcome", &self.run.outcome()).finish()
    }
}

impl ExitHandle {
    /// Waits until the run has ended (and been reaped), then returns how:
    /// the same answer for every caller, however late.
    ///
    /// # Errors
    ///
    /// [`Error::Stopped`] if the child was stopped before this run was
    /// reaped; [`Error::TimedOut`] (with the status) if the execution timeout
    /// killed it; [`Error::NotStarted`] if its [`Child`] was dropped before
    /// starting it; [`Error::Io`] if the status was taken by someone else
    /// (see the crate's `# Caveats`).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is consumed; the status stays latched.
    pub async fn wait(&self) -> Result<ExitStatus, Error> {
        self.run.finished().await.into_result()
    }

    /// The outcome if the run has ended, `Ok(None)` while it has not started
    /// or runs. Never blocks, never consumes the status.
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait), once the run has ended.
    pub fn try_status(&self) -> Result<Option<ExitStatus>, Error> {
        self.run.outcome().map(Outcome::into_result).transpose()
    }

    /// The run's pid once started (kept after the exit, when it may name
    /// another process).
    pub fn pid(&self) -> Option<u32> {
        self.run.pid()
    }
}
