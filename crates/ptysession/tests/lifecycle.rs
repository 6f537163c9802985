//! Lifecycle: states only move forward; attach after exit within the linger
//! time gets the replay and the status, after it "not found"; the
//! first-attach and inactivity timeouts close the session, attached clients
//! keep it open; closing ends the whole process group.

mod support;

use std::time::{Duration, Instant};

use ptysession::{CloseReason, Error, Event, ExitStatus, Session, SessionManager, State};
use support::{WAIT, close, group_members, is_gone, next_event, read_to_end, sh, wait_exit, wait_for_state};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_after_exit_replays_and_reports_within_the_linger_then_not_found() {
    let manager = SessionManager::new(4);
    let options = support::options().linger(Duration::from_millis(1500));
    let session = manager.spawn("short", sh("printf 'bye\\n'; exit 5"), options).unwrap();
    assert_eq!(wait_exit(&session).await, Some(ExitStatus::Code(5)));
    let exited = Instant::now();

    let mut late = manager.attach("short", None).unwrap();
    assert_eq!(late.replay().as_ref(), b"bye\r\n");
    assert_eq!(next_event(&mut late).await, Some(Event::Exited(ExitStatus::Code(5))));
    assert_eq!(next_event(&mut late).await, None);
    assert_eq!(manager.list()[0].1.exit_status, Some(ExitStatus::Code(5)));

    wait_for_state(&session, State::Done).await;
    assert!(exited.elapsed() >= Duration::from_millis(1000), "closed after {:?}", exited.elapsed());
    assert_eq!(session.info().close_reason, Some(CloseReason::Exited));
    assert!(matches!(manager.attach("short", None), Err(Error::NotFound { .. })));
    assert!(matches!(session.attach(None), Err(Error::Closed)));
    assert!(manager.get("short").is_none());
    assert!(manager.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_only_move_forward() {
    let session = Session::spawn(sh("exit 0"), support::options().linger(Duration::from_millis(100))).unwrap();
    let mut states = session.watch_state();
    let mut seen = vec![*states.borrow_and_update()];
    while *seen.last().unwrap() != State::Done {
        tokio::time::timeout(WAIT, states.changed()).await.unwrap().unwrap();
        seen.push(*states.borrow_and_update());
    }
    assert!(seen.windows(2).all(|pair| pair[0] < pair[1]), "{seen:?}");
    assert_eq!(seen.first(), Some(&State::Ready));
    assert_eq!(session.wait().await, Some(ExitStatus::Code(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_attach_closes_after_the_first_attach_timeout_and_not_before() {
    let timeout = Duration::from_millis(600);
    let started = Instant::now();
    let session =
        Session::spawn(sh("exec sleep 1000"), support::options().first_attach_timeout(Some(timeout))).unwrap();
    wait_for_state(&session, State::Closing).await;
    assert!(started.elapsed() >= timeout, "closed after {:?}", started.elapsed());
    assert_eq!(session.info().close_reason, Some(CloseReason::FirstAttachTimeout));
    wait_for_state(&session, State::Done).await;
    // The command was hung up.
    assert_eq!(session.exit_status(), Some(ExitStatus::Signal(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attached_clients_keep_the_session_then_it_closes_after_the_inactivity_timeout() {
    let timeout = Duration::from_millis(600);
    let options = support::options().first_attach_timeout(Some(timeout)).inactivity_timeout(Some(timeout));
    let session = Session::spawn(sh("exec sleep 1000"), options).unwrap();
    let first = session.attach(None).unwrap();
    let second = session.attach(None).unwrap();
    tokio::time::sleep(timeout * 3).await;
    assert_eq!(session.state(), State::Ready, "an attached client keeps the session");
    drop(first);
    tokio::time::sleep(timeout * 2).await;
    assert_eq!(session.state(), State::Ready, "one client is still attached");

    let left = Instant::now();
    drop(second);
    tokio::time::sleep(timeout / 3).await;
    assert_eq!(session.state(), State::Ready, "closed before the inactivity timeout");
    wait_for_state(&session, State::Closing).await;
    assert!(left.elapsed() >= timeout, "closed {:?} after the last client left", left.elapsed());
    assert_eq!(session.info().close_reason, Some(CloseReason::InactivityTimeout));
    wait_for_state(&session, State::Done).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_coming_back_within_the_inactivity_timeout_keeps_the_session() {
    let timeout = Duration::from_millis(800);
    let session = Session::spawn(sh("exec sleep 1000"), support::options().inactivity_timeout(Some(timeout))).unwrap();
    for _ in 0..4 {
        drop(session.attach(None).unwrap());
        tokio::time::sleep(timeout / 4).await;
    }
    assert_eq!(session.state(), State::Ready);
    close(&session).await;
    assert_eq!(session.info().close_reason, Some(CloseReason::Requested));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_ends_the_whole_process_group() {
    let session = Session::spawn(sh("sleep 1000 & sleep 1000"), support::options()).unwrap();
    let pgid = session.pid();
    let deadline = Instant::now() + WAIT;
    let members = loop {
        let members = group_members(pgid);
        let sleeps = members
            .iter()
            .filter(|(pid, _)| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm == "sleep\n"))
            .count();
        if sleeps == 2 {
            break members;
        }
        assert!(Instant::now() < deadline, "the two sleeps did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let mut client = session.attach(None).unwrap();
    close(&session).await;
    // Signals are delivered asynchronously: a member sent SIGKILL just
    // before its leader was reaped may take a moment to die.
    let deadline = Instant::now() + WAIT;
    for (pid, start_time) in members {
        while !is_gone(pid, start_time) {
            assert!(Instant::now() < deadline, "process {pid} of the group survived the close");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let (_, last) = read_to_end(&mut client).await;
    assert!(matches!(last, Some(Event::Exited(ExitStatus::Signal(_)))), "{last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_ignores_the_hang_up_is_killed() {
    let options = support::options().kill_timeout(Duration::from_millis(300));
    let session = Session::spawn(sh("trap '' HUP; printf R; while :; do sleep 1; done"), options).unwrap();
    let mut client = session.attach(None).unwrap();
    let mut received = client.replay().to_vec();
    support::read_until(&mut client, &mut received, b"R").await;
    close(&session).await;
    assert_eq!(session.exit_status(), Some(ExitStatus::Signal(9)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn death_by_signal_is_reported_as_the_signal() {
    let session = Session::spawn(sh("kill -TERM $$"), support::options()).unwrap();
    let mut client = session.attach(None).unwrap();
    let (_, last) = read_to_end(&mut client).await;
    assert_eq!(last, Some(Event::Exited(ExitStatus::Signal(15))));
    assert_eq!(session.exit_status().map(ExitStatus::shell_code), Some(143));
    close(&session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_program_is_a_spawn_error() {
    let result = Session::spawn(std::process::Command::new("/nonexistent/program"), support::options());
    assert!(matches!(result, Err(Error::Spawn(_))), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manager_caps_lists_and_finds_sessions() {
    let manager = SessionManager::new(2);
    manager.spawn("a", sh("exec sleep 1000"), support::options()).unwrap();
    manager.spawn("b", sh("exec sleep 1000"), support::options()).unwrap();
    assert!(matches!(
        manager.spawn("c", sh("exec sleep 1000"), support::options()),
        Err(Error::TooManySessions { limit: 2 })
    ));
    assert!(matches!(manager.spawn("a", sh("exec sleep 1000"), support::options()), Err(Error::AlreadyExists { .. })));
    let listed: Vec<String> = manager.list().into_iter().map(|(id, _)| id).collect();
    assert_eq!(listed, ["a", "b"]);
    assert_eq!(manager.list()[0].1.command, "sh -c exec sleep 1000");
    let attachment = manager.attach("b", None).unwrap();
    assert_eq!(manager.list()[1].1.clients, 1);
    drop(attachment);

    tokio::time::timeout(WAIT, manager.close("a")).await.unwrap().unwrap();
    assert!(matches!(manager.attach("a", None), Err(Error::NotFound { .. })));
    assert_eq!(manager.len(), 1);
    // The freed place can be used again.
    manager.spawn("c", sh("exec sleep 1000"), support::options()).unwrap();
    tokio::time::timeout(WAIT, manager.close_all()).await.unwrap();
    assert!(manager.is_empty());
}

#[test]
fn a_runtime_shutting_down_under_a_live_session_kills_its_command() {
    let (shut_down, shut_down_rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let pid = runtime.block_on(async {
            let session = Session::spawn(sh("exec sleep 1000"), support::options()).unwrap();
            session.pid()
        });
        let (_, start_time) = support::process_stat(pid).expect("the command runs");
        drop(runtime);
        shut_down.send((pid, start_time)).unwrap();
    });
    let (pid, start_time) = shut_down_rx.recv_timeout(WAIT).expect("the runtime shut down without hanging");
    worker.join().unwrap();
    let deadline = Instant::now() + WAIT;
    while !is_gone(pid, start_time) {
        assert!(Instant::now() < deadline, "the command outlived its runtime");
        std::thread::sleep(Duration::from_millis(10));
    }
}
