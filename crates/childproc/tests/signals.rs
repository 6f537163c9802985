//! Signals: never reaching a recycled pid, children starting with an empty
//! signal mask, and forwarding of signals this process receives.
//!
//! Forwarding installs process-wide handlers, so it is checked in a probe
//! process that leaves this one's handlers alone: this same test binary,
//! run again with [`PROBE_ENV`] set, whose `main` then acts as the probe
//! (see [`probe`]) instead of running the tests. So the probe is built with
//! the tests and never installed, and a filtered run
//! (`cargo test -p childproc --test signals`) has it. The binary brings its
//! own harness (libtest-mimic: libtest's arguments and lines).

mod support;

use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use childproc::{Child, Isolation, Options, Signal};
use libtest_mimic::{Arguments, Failed, Trial};
use support::{Lines, bounded, is_alive, sh};

/// Set in the environment of this binary when it is to act as the probe.
const PROBE_ENV: &str = "CHILDPROC_SIGNALS_PROBE";

fn main() -> ExitCode {
    if std::env::var_os(PROBE_ENV).is_some() {
        return probe::main();
    }
    let trials = vec![
        Trial::test("a_signal_through_a_reaped_childs_handle_never_reaches_the_pids_next_owner", || {
            on_runtime(async {
                // Isolation::None signals through the pidfd, ProcessGroup the group.
                a_recycled_pid_is_never_signalled(Isolation::None).await;
                a_recycled_pid_is_never_signalled(Isolation::ProcessGroup).await;
            })
        }),
        Trial::test("children_start_with_an_empty_signal_mask_whatever_the_parent_blocks", || {
            children_start_with_an_empty_signal_mask_whatever_the_parent_blocks();
            Ok(())
        }),
        Trial::test("signals_sent_to_the_parent_reach_its_children", || {
            on_runtime(signals_sent_to_the_parent_reach_its_children())
        }),
    ];
    libtest_mimic::run(&Arguments::from_args(), trials).exit_code()
}

/// Runs a test on a current-thread runtime of its own, as `#[tokio::test]`
/// does; the harness reports a panic as the test's failure.
fn on_runtime(test: impl Future<Output = ()>) -> Result<(), Failed> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(test);
    Ok(())
}

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

/// The `SigBlk` line of a /proc status file.
fn blocked_mask(status: &str) -> String {
    status.lines().find(|line| line.starts_with("SigBlk:")).expect("SigBlk line").to_owned()
}

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

async fn signals_sent_to_the_parent_reach_its_children() {
    let mut command = Command::new(std::env::current_exe().expect("this test binary"));
    command.env(PROBE_ENV, "1").stdout(Stdio::piped());
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

/// The probe: it forwards signals to children it spawns and reports on
/// stdout what reached them.
///
/// 1. Spawns `sleep` forwarding `SIGUSR1`, raises `SIGUSR1` at itself right
///    after the spawn, and checks the child died of it: `after-spawn: ok`.
/// 2. Spawns a shell that traps `SIGUSR2`, forwarding `SIGUSR2`; prints
///    `ready` once the trap is set, waits for the test to send `SIGUSR2` to
///    the probe, and checks the trap ran: `trapped: ok`.
///
/// Any failure prints `FAIL: ...` and exits with status 1.
mod probe {
    use std::process::{Command, ExitCode, Stdio};

    use childproc::{Child, Options, Signal};
    use tokio::io::{AsyncBufReadExt, BufReader, Lines};
    use tokio::net::unix::pipe;

    use crate::support::LIMIT;

    /// Runs the probe and says how it went.
    pub(crate) fn main() -> ExitCode {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(err) => {
                println!("FAIL: runtime: {err}");
                return ExitCode::FAILURE;
            }
        };
        match runtime.block_on(probe()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                println!("FAIL: {message}");
                ExitCode::FAILURE
            }
        }
    }

    async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> Result<T, String> {
        tokio::time::timeout(LIMIT, future).await.map_err(|_| format!("{what}: nothing within {LIMIT:?}"))
    }

    async fn probe() -> Result<(), String> {
        let mut command = Command::new("sleep");
        command.arg("30");
        let sleeper = spawn_forwarding(command, Signal::USR1)?;
        rustix::process::kill_process(rustix::process::getpid(), Signal::USR1)
            .map_err(|err| format!("raise: {err}"))?;
        let status = bounded("the sleeper's exit", sleeper.wait()).await?.map_err(|err| err.to_string())?;
        if status.signal() != Some(Signal::USR1.as_raw()) {
            return Err(format!("the sleeper ended with {status}, not SIGUSR1"));
        }
        println!("after-spawn: ok");

        let mut command = Command::new("sh");
        command
            .args(["-c", "trap 'echo trapped; exit 3' USR2; echo ready; while :; do sleep 0.05; done"])
            .stdout(Stdio::piped())
            // The group's `sleep` dies of the signal too, which the shell
            // would report on stderr.
            .stderr(Stdio::null());
        let trapper = spawn_forwarding(command, Signal::USR2)?;
        let mut lines = BufReader::new(trapper.take_stdout().ok_or("no stdout")?).lines();
        expect(&mut lines, "ready").await?;
        println!("ready");
        expect(&mut lines, "trapped").await?;
        let status = bounded("the trapper's exit", trapper.wait()).await?.map_err(|err| err.to_string())?;
        if status.code() != Some(3) {
            return Err(format!("the trapping child ended with {status}, not exit code 3"));
        }
        println!("trapped: ok");
        Ok(())
    }

    /// Spawns `command`, forwarding `signal` to it.
    fn spawn_forwarding(command: Command, signal: Signal) -> Result<Child, String> {
        Child::spawn(command, Options::new().forward_signals([signal])).map_err(|err| err.to_string())
    }

    /// Reads the child's next line and checks it is `wanted`.
    async fn expect(lines: &mut Lines<BufReader<pipe::Receiver>>, wanted: &str) -> Result<(), String> {
        match bounded("a line from the child", lines.next_line()).await? {
            Ok(Some(line)) if line == wanted => Ok(()),
            Ok(Some(line)) => Err(format!("expected {wanted:?} from the child, got {line:?}")),
            Ok(None) => Err(format!("the child's output ended before {wanted:?}")),
            Err(err) => Err(format!("reading the child's output: {err}")),
        }
    }
}
