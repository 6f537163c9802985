//! Ending children: the kill ladder (kill signal, kill timeout, SIGKILL),
//! the whole group and its stragglers, the execution timeout, the splay,
//! and kill on drop.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use childproc::{Child, Error, Options, Signal};
use std::process::Stdio;
use support::{Lines, bounded, group_exists, is_alive, reap_orphan, sh};

#[tokio::test]
async fn a_child_ignoring_sigterm_is_killed_with_sigkill_after_the_kill_timeout() {
    let mut command = sh("trap '' TERM; echo ready; exec sleep 30");
    command.stdout(Stdio::piped());
    let options = Options::new().kill_timeout(Duration::from_millis(500));
    let child = Child::spawn(command, options).expect("spawn");
    let pid = child.pid().expect("pid");
    // Once it has said "ready", SIGTERM is ignored.
    assert_eq!(Lines::new(child.take_stdout().expect("stdout")).next().await, "ready");

    let started = Instant::now();
    let status = bounded("kill", child.kill()).await.expect("killed");
    let elapsed = started.elapsed();

    assert!(elapsed >= Duration::from_millis(500), "SIGKILL came before the kill timeout: {elapsed:?}");
    assert!(elapsed <= Duration::from_millis(750), "kill took {elapsed:?}");
    assert_eq!(status.signal(), Some(Signal::KILL.as_raw()));
    assert_eq!(status.shell_code(), 137);
    assert!(std::fs::metadata(format!("/proc/{pid}")).is_err(), "/proc/{pid} still exists after kill");
    assert!(!group_exists(pid));
}

#[tokio::test]
async fn kill_ends_the_whole_group_including_background_grandchildren() {
    support::become_subreaper();
    // One grandchild that dies on SIGTERM, one that ignores it: the second
    // must be swept with SIGKILL when the leader exits.
    let mut command = sh("sleep 30 & echo $!; (trap '' TERM; exec sleep 30) & echo $!; wait");
    command.stdout(Stdio::piped());
    let child = Child::spawn(command, Options::new().kill_timeout(Duration::from_secs(10))).expect("spawn");
    let leader = child.pid().expect("pid");
    let mut lines = Lines::new(child.take_stdout().expect("stdout"));
    let plain: i32 = lines.next().await.parse().expect("pid of the first grandchild");
    let stubborn: i32 = lines.next().await.parse().expect("pid of the second grandchild");
    // The second grandchild has run its trap once `sleep` is exec'd.
    support::eventually("the stubborn grandchild to exec sleep", || {
        let comm = std::fs::read_to_string(format!("/proc/{stubborn}/comm")).unwrap_or_default();
        if comm.trim() == "sleep" { Ok(()) } else { Err(comm) }
    })
    .await;

    let started = Instant::now();
    let status = bounded("kill", child.kill()).await.expect("killed");
    // The leader died of SIGTERM; nobody waited for the kill timeout.
    assert_eq!(status.signal(), Some(Signal::TERM.as_raw()));
    assert!(started.elapsed() < Duration::from_secs(5), "kill took {:?}", started.elapsed());

    let plain_status = reap_orphan(plain).await;
    assert!(plain_status.killed(), "first grandchild: {plain_status:?}");
    let stubborn_status = reap_orphan(stubborn).await;
    assert_eq!(stubborn_status.terminating_signal(), Some(Signal::KILL.as_raw()), "{stubborn_status:?}");
    assert!(!group_exists(leader), "the group of {leader} still has members");
}

#[tokio::test]
async fn without_a_kill_signal_kill_sends_sigkill_at_once() {
    let options = Options::new().kill_signal(None).kill_timeout(Duration::from_secs(30));
    let child = Child::spawn(sh("exec sleep 30"), options).expect("spawn");
    let started = Instant::now();
    let status = bounded("kill", child.kill()).await.expect("killed");
    assert_eq!(status.signal(), Some(Signal::KILL.as_raw()));
    assert!(started.elapsed() < Duration::from_secs(5), "kill took {:?}", started.elapsed());
}

#[tokio::test]
async fn the_execution_timeout_kills_the_group_and_reports_timed_out() {
    support::become_subreaper();
    let mut command = sh("sleep 30 & echo $!; exec sleep 30");
    command.stdout(Stdio::piped());
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let child = Child::spawn(command, Options::new().execution_timeout(Some(timeout))).expect("spawn");
    let leader = child.pid().expect("pid");
    let grandchild: i32 =
        Lines::new(child.take_stdout().expect("stdout")).next().await.parse().expect("grandchild pid");

    let result = bounded("wait", child.wait()).await;
    let elapsed = started.elapsed();
    match result {
        Err(Error::TimedOut { timeout: reported, status }) => {
            assert_eq!(reported, timeout);
            assert_eq!(status.signal(), Some(Signal::TERM.as_raw()));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(elapsed >= timeout, "ended after {elapsed:?}, before the timeout");
    // The kill path is a SIGTERM the child obeys at once.
    assert!(elapsed < timeout + Duration::from_millis(700), "timed out only after {elapsed:?}");
    // Every later waiter gets the same error.
    assert!(matches!(child.try_status(), Err(Error::TimedOut { .. })));
    assert!(matches!(child.kill().await, Err(Error::TimedOut { .. })));

    assert!(reap_orphan(grandchild).await.killed());
    assert!(!group_exists(leader), "the group of {leader} still has members");
}

#[tokio::test]
async fn splay_delays_fall_within_the_splay_and_vary() {
    const CHILDREN: usize = 8;
    let splay = Duration::from_millis(400);
    let options = Options::new().splay(splay);
    let mut kills = tokio::task::JoinSet::new();
    for _ in 0..CHILDREN {
        let child = Arc::new(Child::spawn(sh("exec sleep 30"), options.clone()).expect("spawn"));
        kills.spawn(async move {
            let asked = Instant::now();
            let status = child.kill().await.expect("killed");
            status.exit_instant().duration_since(asked)
        });
    }
    let mut delays = Vec::new();
    while let Some(delay) = bounded("kills", kills.join_next()).await {
        delays.push(delay.expect("kill task"));
    }
    delays.sort();
    // Each delay is the splay draw plus signal delivery and reaping.
    let slack = Duration::from_millis(200);
    assert!(delays.iter().all(|delay| *delay < splay + slack), "delays {delays:?}");
    // Eight uniform draws in [0, 400 ms) all within 50 ms of each other has
    // a probability below 1e-5; without a splay they would be.
    let spread = delays[CHILDREN - 1] - delays[0];
    assert!(spread > Duration::from_millis(50), "delays do not vary: {delays:?}");
}

#[tokio::test]
async fn dropping_a_child_kills_it_in_the_background_and_reaps_it() {
    let child = Child::spawn(sh("exec sleep 30"), Options::new()).expect("spawn");
    let exit = child.exit_handle();
    drop(child);
    let status = bounded("exit after drop", exit.wait()).await.expect("status");
    assert_eq!(status.signal(), Some(Signal::TERM.as_raw()));
}

#[tokio::test]
async fn dropping_a_child_without_kill_on_drop_leaves_it_running_and_still_reaps_it() {
    let child = Child::spawn(sh("exec sleep 30"), Options::new().kill_on_drop(false)).expect("spawn");
    let exit = child.exit_handle();
    let pid = child.pid().expect("pid");
    drop(child);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(exit.try_status().expect("status"), None);
    assert!(is_alive(pid));
    // Unreaped (no status yet), so the pid is still this child's.
    let raw = rustix::process::Pid::from_raw(i32::try_from(pid).expect("pid")).expect("pid");
    rustix::process::kill_process(raw, Signal::KILL).expect("kill");
    let status = bounded("exit", exit.wait()).await.expect("status");
    assert_eq!(status.signal(), Some(Signal::KILL.as_raw()));
}
