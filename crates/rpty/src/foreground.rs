//! The terminal lent to a `--via` process: while it connects, its process
//! group becomes the terminal's foreground group, so that what it asks
//! (ssh's host-key question, a password) is shown and answered in the
//! terminal's ordinary (cooked) mode, as a shell's job control would; then
//! the terminal is taken back ([`Lent`]).
//!
//! Taking it back is `tcsetpgrp` from a background group, which the kernel
//! answers with `SIGTTOU` unless the calling thread blocks that signal: it
//! is done on a short-lived thread of its own that blocks it, so no other
//! thread's signal mask changes.

use std::io::{self, IsTerminal};
use std::os::fd::{AsFd, OwnedFd};

use rustix::process::Pid;
use rustix::termios;

/// The terminal on standard input, given to another process group; given
/// back when dropped (or by [`Lent::take_back`]).
#[derive(Debug)]
pub(crate) struct Lent {
    tty: OwnedFd,
    ours: Pid,
}

/// Makes process group `group` the foreground of the terminal on standard
/// input, when that terminal is this process's controlling terminal and
/// this process's group is its foreground; `None` otherwise (no terminal,
/// or running in the background), and nothing changes then.
pub(crate) fn lend(group: u32) -> Option<Lent> {
    let stdin = io::stdin();
    if !stdin.is_terminal() {
        return None;
    }
    let ours = rustix::process::getpgrp();
    let foreground = termios::tcgetpgrp(stdin.as_fd()).ok()?;
    if foreground != ours {
        return None;
    }
    let group = Pid::from_raw(i32::try_from(group).ok()?)?;
    let tty = stdin.as_fd().try_clone_to_owned().ok()?;
    match termios::tcsetpgrp(&tty, group) {
        Ok(()) => {
            tracing::debug!(group = group.as_raw_nonzero().get(), "terminal lent to the transport");
            Some(Lent { tty, ours })
        }
        Err(err) => {
            tracing::info!(error = %err, "cannot lend the terminal to the transport");
            None
        }
    }
}

impl Lent {
    /// Makes this process's group the terminal's foreground again.
    pub(crate) fn take_back(self) {
        // The work is in `drop`.
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let (tty, ours) = (&self.tty, self.ours);
        let result =
            std::thread::scope(|scope| scope.spawn(|| with_sigttou_blocked(|| termios::tcsetpgrp(tty, ours))).join());
        match result {
            Ok(Ok(Ok(()))) => tracing::debug!("terminal taken back from the transport"),
            Ok(Ok(Err(err))) => tracing::warn!(error = %err, "cannot take the terminal back"),
            Ok(Err(err)) => tracing::warn!(error = %err, "cannot take the terminal back"),
            Err(_) => tracing::warn!("taking the terminal back panicked"),
        }
    }
}

/// Runs `work` with `SIGTTOU` blocked in the calling thread, then puts the
/// thread's mask back.
fn with_sigttou_blocked<T>(work: impl FnOnce() -> T) -> io::Result<T> {
    let mut block = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    let mut previous = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: `sigemptyset` and `sigaddset` initialise the local set before
    // `pthread_sigmask` reads it; `pthread_sigmask` writes the thread's
    // previous mask into `previous`, which is read only after it succeeded.
    // Only the calling thread's mask changes.
    let blocked = unsafe {
        libc::sigemptyset(block.as_mut_ptr()) == 0
            && libc::sigaddset(block.as_mut_ptr(), libc::SIGTTOU) == 0
            && libc::pthread_sigmask(libc::SIG_BLOCK, block.as_ptr(), previous.as_mut_ptr()) == 0
    };
    if !blocked {
        return Err(io::Error::other("cannot block SIGTTOU"));
    }
    let result = work();
    // SAFETY: `previous` was initialised by the successful call above; only
    // the calling thread's mask changes back.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, previous.as_ptr(), std::ptr::null_mut());
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sigttou_blocked() -> bool {
        let mut current = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: the set is initialised by `sigemptyset`, then filled with
        // this thread's mask by `pthread_sigmask` (no new mask given).
        unsafe {
            libc::sigemptyset(current.as_mut_ptr());
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), current.as_mut_ptr());
            libc::sigismember(current.as_ptr(), libc::SIGTTOU) == 1
        }
    }

    #[test]
    fn sigttou_is_blocked_during_the_work_only() {
        let before = sigttou_blocked();
        assert!(with_sigttou_blocked(sigttou_blocked).unwrap());
        assert_eq!(sigttou_blocked(), before);
        let other = std::thread::spawn(sigttou_blocked).join().unwrap();
        assert!(!other, "other threads are untouched");
    }
}
