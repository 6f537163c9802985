//! Signals: never reaching a recycled pid, children starting with an empty
//! signal mask, and forwarding of signals this process receives (run in a
//! probe process, so the test's own signal handlers stay untouched).

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use childproc::{Child, Isolation, Options, Signal};
use support::{Lines, bounded, is_alive, sh};

/// Tries to have the kernel give the next process `pid` (by setting
/// `ns_last_pid`, which needs privileges in the pid namespace). Returns
/// whether the setting was accepted.
fn aim_next_pid_at(pid: u32) -> bool {
    std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).is_ok()
}

/// A child is spawned and reaped; a new process gets the same pid; a signal
/// through the old handle must not reach it.
async fn a_recycled_pid_is_never_signalled(isolation: Isolation) {
    let options = Options::new().isolation(isolation);
    let old = Child::spawn(Command::new("true"), options.clone()).expect("spawn");
    let old_status = bounded("wait", old.wait()).await.expect("status");
    let old_pid = old.pid().expect("pid");

    // Other processes on the machine fork too: try a few times.
    let mut recycled = None;
    for _ in 0..50 {
        if !aim_next_pid_at(old_pid) {
            break;
        }
        let candidate = Child::spawn(sh("exec sleep 30"), options.clone()).expect("spawn");
        if candidate.pid() == Some(old_pid) {
            recycled = Some(candidate);
            break;
        }
        bounded("kill", candidate.kill()).await.expect("kill");
    }
    let reused = recycled.is_some();
    let newcomer = match recycled {
        Some(child) => child,
        None => {
            eprintln!("note: pid {old_pid} could not be recycled here; checking that a new child survives");
            Child::spawn(sh("exec sleep 30"), options.clone()).expect("spawn")
        }
    };
    let newcomer_pid = newcomer.pid().expect("pid");

    // The old handle: signals are no-ops, kill only reports the old status.
    old.signal(Signal::KILL).expect("a signal to a reaped child is Ok");
    old.signal(Signal::TERM).expect("a signal to a reaped child is Ok");
    assert_eq!(bounded("kill of the reaped child", old.kill()).await.expect("old status"), old_status);

    // Give a wrongly delivered SIGKILL ample time to land.
    let survived = tokio::time::timeout(Duration::from_millis(300), newcomer.wait()).await;
    assert!(survived.is_err(), "the process now holding pid {newcomer_pid} was killed (reused: {reused})");
    assert!(is_alive(newcomer_pid));
    assert_eq!(reused, newcomer_pid == old_pid);
    bounded("kill", newcomer.kill()).await.expect("kill");
}

#[tokio::test]
async fn a_signal_through_a_reaped_childs_handle_never_reaches_the_pids_next_owner() {
    // Isolation::None signals through the pidfd, ProcessGroup the group.
    a_recycled_pid_is_never_signalled(Isolation::None).await;
    a_recycled_pid_is_never_signalled(Isolation::ProcessGroup).await;
}

/// The `SigBlk` line of a /proc status file.
fn blocked_mask(status: &str) -> String {
    status.lines().find(|line| line.starts_with("SigBlk:")).expect("SigBlk line").to_owned()
}

#[test]
fn children_start_with_an_empty_signal_mask_whatever_the_parent_blocks() {
    let spawner = std::thread::spawn(|| {
        // SAFETY: `sigset_t` is plain data that `sigemptyset` initialises;
        // the calls only read and write that local set and this thread's
        // signal mask.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR1);
            libc::sigaddset(&mut set, libc::SIGWINCH);
            assert_eq!(libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()), 0);
        }
        let mine = blocked_mask(&std::fs::read_to_string("/proc/thread-self/status").expect("status"));
        assert_ne!(mine, "SigBlk:\t0000000000000000", "the spawning thread should block signals");

        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            // The fast path (posix_spawn) and the fork path (a pre_exec hook).
            for isolation in [Isolation::ProcessGroup, Isolation::Session] {
                let mut command = Command::new("grep");
                command.args(["SigBlk", "/proc/self/status"]).stdout(Stdio::piped());
                let child = Child::spawn(command, Options::new().isolation(isolation)).expect("spawn");
                let line = Lines::new(child.take_stdout().expect("stdout")).next().await;
                assert_eq!(line, "SigBlk:\t0000000000000000", "{isolation:?}");
                assert!(bounded("wait", child.wait()).await.expect("status").success());
            }
        });
    });
    spawner.join().expect("spawning thread");
}

#[tokio::test]
async fn signals_sent_to_the_parent_reach_its_children() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_childproc-forward-probe"));
    command.stdout(Stdio::piped());
    // Isolation::None: `signal` reaches the probe alone, through its pidfd.
    let probe = Child::spawn(command, Options::new().isolation(Isolation::None)).expect("spawn the probe");
    let mut lines = Lines::new(probe.take_stdout().expect("stdout"));
    // The probe raised SIGUSR1 right after spawning a child; it got there.
    assert_eq!(lines.next().await, "after-spawn: ok");
    // The probe runs a child that traps SIGUSR2; signal the probe itself.
    assert_eq!(lines.next().await, "ready");
    probe.signal(Signal::USR2).expect("signal the probe");
    assert_eq!(lines.next().await, "trapped: ok");
    assert!(bounded("probe exit", probe.wait()).await.expect("status").success());
}
