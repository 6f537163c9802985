//! The signal mask children start with: empty, whatever the spawning thread
//! blocks. std passes the spawning thread's mask on (on both its
//! `posix_spawn` and its fork paths), so the mask is checked before each
//! spawn and, only when it is not empty, emptied in the child by a
//! `pre_exec` hook.

use std::io;
use std::mem::MaybeUninit;

/// The highest signal number Linux has (`_NSIG - 1`).
const MAX_SIGNAL: i32 = 64;

/// Whether the calling thread blocks any signal (`true` if that cannot be
/// read, so that the child's mask is reset in doubt).
pub(crate) fn current_thread_blocks_signals() -> bool {
    let mut current = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: `sigemptyset` initialises the local set; `pthread_sigmask`
    // with a null new set only copies this thread's mask into it; the set is
    // read (`assume_init`, `sigismember`) only after both succeeded.
    unsafe {
        if libc::sigemptyset(current.as_mut_ptr()) != 0
            || libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), current.as_mut_ptr()) != 0
        {
            return true;
        }
        let current = current.assume_init();
        (1..=MAX_SIGNAL).any(|signal| libc::sigismember(&current, signal) == 1)
    }
}

/// Unblocks every signal in the calling thread. Async-signal-safe (no
/// allocation, no lock), for use in a `pre_exec` hook.
pub(crate) fn unblock_all() -> io::Result<()> {
    let mut empty = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: `sigemptyset` initialises the local set before
    // `pthread_sigmask` reads it; only this thread's mask changes.
    let result = unsafe {
        libc::sigemptyset(empty.as_mut_ptr());
        libc::pthread_sigmask(libc::SIG_SETMASK, empty.as_ptr(), std::ptr::null_mut())
    };
    if result == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(result)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_signal_is_seen_and_unblock_all_clears_it() {
        std::thread::spawn(|| {
            assert!(!current_thread_blocks_signals(), "a fresh test thread blocks nothing");
            let mut set = MaybeUninit::<libc::sigset_t>::uninit();
            // SAFETY: the set is initialised by `sigemptyset` before use;
            // only this thread's mask changes.
            unsafe {
                libc::sigemptyset(set.as_mut_ptr());
                libc::sigaddset(set.as_mut_ptr(), libc::SIGWINCH);
                assert_eq!(libc::pthread_sigmask(libc::SIG_BLOCK, set.as_ptr(), std::ptr::null_mut()), 0);
            }
            assert!(current_thread_blocks_signals());
            unblock_all().expect("unblock");
            assert!(!current_thread_blocks_signals());
        })
        .join()
        .expect("thread");
    }
}
