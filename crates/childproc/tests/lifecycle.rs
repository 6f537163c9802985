//! A child's life: the latched exit status and its waiters, start, stop,
//! restart and reload, isolation modes, stdio pipes, and the public types'
//! thread safety.

mod support;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use childproc::{Child, Error, ExitHandle, ExitStatus, Isolation, Options, Signal};
use support::{Lines, bounded, group_and_session, sh};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Child>();
    send_sync::<ExitHandle>();
    send_sync::<ExitStatus>();
    send_sync::<Options>();
    send_sync::<Isolation>();
    send_sync::<Error>();
    fn future_is_send<F: std::future::Future + Send>(_: F) {}
    let child = Child::new(Command::new("true"), Options::new());
    future_is_send(child.wait());
    future_is_send(child.kill());
    future_is_send(child.stop());
    future_is_send(child.restart());
    future_is_send(child.reload());
}

#[tokio::test]
async fn an_exit_before_anyone_waits_is_latched_for_every_waiter() {
    let child = Child::new(sh("exit 7"), Options::new());
    let early = child.exit_handle();
    child.start().expect("start");
    // Until the exit is latched, without waiting for it (a fixed sleep
    // instead could end before the shell did, and the TERM below would
    // then kill it).
    support::eventually("the exit latched", || match child.try_status() {
        Ok(Some(_)) => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .await;

    // Neither a signal nor a status check consumes or changes the status.
    child.signal(Signal::TERM).expect("signal to an exited child is Ok");
    assert_eq!(child.try_status().expect("status").and_then(|status| status.code()), Some(7));
    let first = bounded("first waiter", early.wait()).await.expect("status");
    assert_eq!(first.code(), Some(7));
    child.signal(Signal::KILL).expect("signal to an exited child is Ok");
    assert_eq!(early.try_status().expect("status"), Some(first));
    let second = bounded("second waiter", child.exit_handle().wait()).await.expect("status");
    assert_eq!(second, first);
    assert_eq!(bounded("third waiter", child.wait()).await.expect("status"), first);
    assert!(first.exit_instant() <= Instant::now());
}

#[tokio::test]
async fn waiters_before_during_and_after_the_run_agree() {
    let child = Child::new(sh("sleep 0.2; exit 4"), Options::new());
    let before = child.exit_handle();
    let waiting = tokio::spawn(async move { before.wait().await });
    child.start().expect("start");
    let during = child.exit_handle();
    assert_eq!(during.try_status().expect("running"), None);
    let status = bounded("wait", during.wait()).await.expect("status");
    assert_eq!(status.code(), Some(4));
    assert_eq!(bounded("early waiter", waiting).await.expect("task").expect("status"), status);
    assert_eq!(child.exit_handle().try_status().expect("status"), Some(status));
}

#[tokio::test]
async fn start_twice_is_already_started_and_signal_before_start_is_not_started() {
    let child = Child::new(sh("exit 0"), Options::new());
    assert!(matches!(child.signal(Signal::TERM), Err(Error::NotStarted)));
    assert!(matches!(child.kill().await, Err(Error::NotStarted)));
    assert_eq!(child.pid(), None);
    child.start().expect("start");
    assert!(matches!(child.start(), Err(Error::AlreadyStarted)));
    assert!(bounded("wait", child.wait()).await.expect("status").success());
    assert!(matches!(child.start(), Err(Error::AlreadyStarted)));
}

#[tokio::test]
async fn dropping_an_unstarted_child_tells_its_waiters() {
    let child = Child::new(sh("exit 0"), Options::new());
    let exit = child.exit_handle();
    drop(child);
    assert!(matches!(bounded("wait", exit.wait()).await, Err(Error::NotStarted)));
}

#[tokio::test]
async fn stop_reports_stopped_refuses_restarts_and_is_idempotent() {
    let child = Arc::new(Child::spawn(sh("exec sleep 30"), Options::new()).expect("spawn"));
    let early = child.exit_handle();
    let early_waiter = tokio::spawn(async move { early.wait().await });
    let pid = child.pid().expect("pid");

    bounded("stop", child.stop()).await.expect("stop");
    assert!(child.is_stopped());
    assert!(!support::is_alive(pid), "still alive after stop");
    assert!(matches!(bounded("early waiter", early_waiter).await.expect("task"), Err(Error::Stopped)));
    assert!(matches!(child.wait().await, Err(Error::Stopped)));
    assert!(matches!(child.try_status(), Err(Error::Stopped)));
    assert!(matches!(child.restart().await, Err(Error::Stopped)));
    assert!(matches!(child.reload().await, Err(Error::Stopped)));
    assert!(matches!(child.start(), Err(Error::Stopped)));

    let started = Instant::now();
    bounded("second stop", child.stop()).await.expect("second stop");
    bounded("stop_immediately after stop", child.stop_immediately()).await.expect("third stop");
    assert!(started.elapsed() < Duration::from_millis(500), "repeated stops took {:?}", started.elapsed());
    assert!(matches!(child.wait().await, Err(Error::Stopped)));
    assert_eq!(child.pid(), Some(pid), "no new process was started");
}

#[tokio::test]
async fn stop_immediately_skips_a_long_splay_and_cuts_a_kill_in_its_splay_short() {
    let options = Options::new().splay(Duration::from_secs(100));
    let child = Arc::new(Child::spawn(sh("exec sleep 30"), options).expect("spawn"));
    // A kill waiting out its (up to 100 s) splay ...
    let killing = {
        let child = Arc::clone(&child);
        tokio::spawn(async move { child.kill().await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(child.try_status().expect("status"), None, "the splay should still be running");

    // ... is cut short by the stop, which waits for no splay of its own.
    let started = Instant::now();
    bounded("stop_immediately", child.stop_immediately()).await.expect("stop");
    assert!(started.elapsed() < Duration::from_secs(2), "stop_immediately took {:?}", started.elapsed());
    assert!(matches!(bounded("kill", killing).await.expect("task"), Err(Error::Stopped)));
}

#[tokio::test]
async fn stopping_an_unstarted_child_ends_its_waiters_and_forbids_start() {
    let child = Child::new(sh("exit 0"), Options::new().splay(Duration::from_secs(100)));
    let exit = child.exit_handle();
    bounded("stop", child.stop()).await.expect("stop");
    assert!(matches!(exit.wait().await, Err(Error::Stopped)));
    assert!(matches!(child.start(), Err(Error::Stopped)));
    assert_eq!(child.pid(), None);
}

#[tokio::test]
async fn restart_kills_and_starts_again_with_a_fresh_exit_handle() {
    let child = Child::spawn(sh("exec sleep 30"), Options::new()).expect("spawn");
    let first_pid = child.pid().expect("pid");
    let first = child.exit_handle();

    let second = bounded("restart", child.restart()).await.expect("restart");
    let first_status = first.try_status().expect("first run").expect("first run ended");
    assert_eq!(first_status.signal(), Some(Signal::TERM.as_raw()));
    assert_eq!(second.try_status().expect("second run"), None);
    let second_pid = child.pid().expect("pid");
    assert_ne!(first_pid, second_pid);
    assert_eq!(second.pid(), Some(second_pid));
    assert_eq!(first.pid(), Some(first_pid));
    assert!(support::is_alive(second_pid));

    // The old handle keeps its run's status; the new one follows the new run.
    let status = bounded("kill", child.kill()).await.expect("kill");
    assert_eq!(bounded("second waiter", second.wait()).await.expect("status"), status);
    assert_eq!(bounded("first waiter", first.wait()).await.expect("status"), first_status);
}

#[tokio::test]
async fn a_child_that_keeps_no_command_cannot_restart() {
    let child = Child::spawn(sh("exit 0"), Options::new().restartable(false)).expect("spawn");
    assert!(bounded("wait", child.wait()).await.expect("status").success());
    assert!(matches!(child.restart().await, Err(Error::NotRestartable)));
}

#[tokio::test]
async fn reload_sends_the_reload_signal_or_restarts() {
    let mut command = sh("trap 'exit 9' HUP; echo ready; while :; do sleep 0.05; done");
    command.stdout(Stdio::piped());
    let options = Options::new().reload_signal(Some(Signal::HUP)).splay(Duration::from_millis(50));
    let child = Child::spawn(command, options).expect("spawn");
    assert_eq!(Lines::new(child.take_stdout().expect("stdout")).next().await, "ready");
    bounded("reload", child.reload()).await.expect("reload");
    assert_eq!(bounded("wait", child.wait()).await.expect("status").code(), Some(9));

    // Without a reload signal, reload restarts.
    let child = Child::spawn(sh("exec sleep 30"), Options::new()).expect("spawn");
    let first = child.exit_handle();
    bounded("reload", child.reload()).await.expect("reload");
    assert!(first.try_status().expect("first run").is_some());
    assert_eq!(child.try_status().expect("second run"), None);
    bounded("kill", child.kill()).await.expect("kill");
}

#[tokio::test]
async fn isolation_modes_place_the_child_and_direct_signals() {
    let (my_group, my_session) = group_and_session(std::process::id());

    let child = Child::spawn(sh("exec sleep 30"), Options::new()).expect("spawn");
    let pid = child.pid().expect("pid");
    assert_eq!(group_and_session(pid), (pid, my_session), "process group");
    bounded("kill", child.kill()).await.expect("kill");

    let child = Child::spawn(sh("exec sleep 30"), Options::new().isolation(Isolation::Session)).expect("spawn");
    let pid = child.pid().expect("pid");
    assert_eq!(group_and_session(pid), (pid, pid), "session");
    bounded("kill", child.kill()).await.expect("kill");

    let mut command = sh("exec sleep 30");
    // SAFETY: the hook only makes the `setsid` system call, which neither
    // allocates nor takes locks, in the child between fork and exec.
    unsafe {
        command.pre_exec(|| rustix::process::setsid().map(drop).map_err(std::io::Error::from));
    }
    let child = Child::spawn(command, Options::new().isolation(Isolation::SessionByCaller)).expect("spawn");
    let pid = child.pid().expect("pid");
    assert_eq!(group_and_session(pid), (pid, pid), "session made by the caller");
    let status = bounded("kill", child.kill()).await.expect("kill");
    assert_eq!(status.signal(), Some(Signal::TERM.as_raw()));

    let child = Child::spawn(sh("exec sleep 30"), Options::new().isolation(Isolation::None)).expect("spawn");
    let pid = child.pid().expect("pid");
    assert_eq!(group_and_session(pid), (my_group, my_session), "no isolation");
    // Signals go to the child alone (a group signal would reach this test).
    child.signal(Signal::USR1).expect("signal");
    let status = bounded("wait", child.wait()).await.expect("status");
    assert_eq!(status.signal(), Some(Signal::USR1.as_raw()));
}

#[tokio::test]
async fn stdio_is_exposed_as_async_pipes() {
    let mut command = sh("cat; echo oops >&2; exit 2");
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = Child::spawn(command, Options::new()).expect("spawn");
    let mut stdin = child.take_stdin().expect("stdin");
    let mut stdout = child.take_stdout().expect("stdout");
    let mut stderr = child.take_stderr().expect("stderr");
    assert!(child.take_stdout().is_none(), "taken once");

    bounded("write", stdin.write_all(b"through the pipe")).await.expect("write");
    drop(stdin);
    let mut out = String::new();
    bounded("read stdout", stdout.read_to_string(&mut out)).await.expect("read");
    let mut err = String::new();
    bounded("read stderr", stderr.read_to_string(&mut err)).await.expect("read");
    assert_eq!((out.as_str(), err.as_str()), ("through the pipe", "oops\n"));
    assert_eq!(bounded("wait", child.wait()).await.expect("status").code(), Some(2));
}

#[tokio::test]
async fn a_tokio_command_is_accepted() {
    let mut command = tokio::process::Command::new("sh");
    command.args(["-c", "exit 6"]);
    let child = Child::spawn(command, Options::new()).expect("spawn");
    assert_eq!(bounded("wait", child.wait()).await.expect("status").code(), Some(6));
}

#[tokio::test]
async fn forwarding_sigchld_or_a_synchronous_signal_is_refused() {
    for signal in [Signal::CHILD, Signal::SEGV, Signal::KILL] {
        let child = Child::new(sh("exit 0"), Options::new().forward_signals([Signal::HUP, signal]));
        match child.start() {
            Err(Error::UnforwardableSignal { signal: raw }) => assert_eq!(raw, signal.as_raw()),
            other => panic!("expected a refusal for {signal:?}, got {other:?}"),
        }
        assert_eq!(child.pid(), None, "nothing was spawned");
    }
}

#[test]
fn a_runtime_shutting_down_with_a_running_child_in_a_task_neither_hangs_nor_leaks_it() {
    // The child is dropped while the runtime shuts down (its task is
    // dropped), so its kill ladder is spawned on a runtime that refuses new
    // tasks: the ladder's guard must escalate to SIGKILL, not deadlock.
    let (sender, receiver) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let (pid_sender, pid_receiver) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            let child = Child::spawn(sh("exec sleep 1000"), Options::new().kill_on_drop(true)).unwrap();
            pid_sender.send(child.pid().unwrap()).unwrap();
            std::future::pending::<()>().await;
            drop(child);
        });
        let pid = pid_receiver.recv_timeout(Duration::from_secs(10)).unwrap();
        drop(runtime);
        sender.send(pid).unwrap();
    });
    let pid = receiver.recv_timeout(Duration::from_secs(10)).expect("dropping the runtime hung");
    worker.join().unwrap();
    let started = Instant::now();
    while support::is_alive(pid) {
        assert!(started.elapsed() < Duration::from_secs(10), "the child outlived its runtime");
        std::thread::sleep(Duration::from_millis(10));
    }
}
