//! The session's command as a `childproc` child: spawned as the leader of a
//! new session (the caller's `pre_exec` hook calls `setsid`), reaped by
//! childproc, its whole group hung up and killed on close.

use std::future::Future;
use std::process::Command;
use std::time::Duration;

use crate::{Error, ExitStatus};

/// The command of a session.
#[derive(Debug)]
pub(crate) struct Child {
    inner: childproc::Child,
}

impl Child {
    /// Spawns `command`, whose own `pre_exec` hook makes it a session
    /// leader. The command (and every descriptor it holds) is dropped right
    /// after the spawn.
    pub(crate) fn spawn(command: Command, kill_timeout: Duration) -> Result<Self, Error> {
        let options = childproc::Options::new()
            .isolation(childproc::Isolation::SessionByCaller)
            // A terminal's hang-up: what interactive shells (which ignore
            // SIGTERM) and full-screen programs expect when their terminal
            // goes away.
            .kill_signal(Some(childproc::Signal::HUP))
            .kill_timeout(kill_timeout)
            // Dropped only when the runtime shuts down under a running
            // session: then `Drop` below sends SIGKILL to the group at once
            // (no ladder can run any more) and childproc reaps the child.
            .kill_on_drop(false)
            .restartable(false);
        let inner = childproc::Child::spawn(command, options).map_err(Error::Spawn)?;
        Ok(Self { inner })
    }

    /// The process id of the command.
    pub(crate) fn pid(&self) -> u32 {
        self.inner.pid().unwrap_or_default()
    }

    /// A future that resolves when the command has exited and been reaped;
    /// `None` if its status cannot be had.
    pub(crate) fn exit_waiter(&self) -> impl Future<Output = Option<ExitStatus>> + Send + 'static {
        let exit = self.inner.exit_handle();
        async move { convert(exit.wait().await) }
    }

    /// Ends the command's whole process group (hang-up, then `SIGKILL` after
    /// the kill timeout) and returns once it is reaped.
    pub(crate) async fn kill(&mut self) -> Option<ExitStatus> {
        convert(self.inner.kill().await)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if matches!(self.inner.try_status(), Ok(None)) {
            // childproc signals the group only while its leader is unreaped.
            let _ = self.inner.signal(childproc::Signal::KILL);
        }
    }
}

fn convert(result: Result<childproc::ExitStatus, childproc::Error>) -> Option<ExitStatus> {
    match result {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => Some(ExitStatus::Code(code)),
            (None, Some(signal)) => Some(ExitStatus::Signal(signal)),
            (None, None) => None,
        },
        Err(err) => {
            let err: &(dyn std::error::Error + 'static) = &err;
            tracing::warn!(error = err, "the session's command could not be waited for");
            None
        }
    }
}
