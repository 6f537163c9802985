//! End to end, on a real pseudo-terminal: starting a session, detaching,
//! listing, re-attaching with the scrollback, the exit status, two clients
//! on one session, and the terminal's settings restored however the client
//! ends.

mod common;

use std::time::Duration;

use common::{Sandbox, Term};

#[test]
fn new_detach_list_attach_and_exit_with_the_status() {
    let sandbox = Sandbox::new("story");

    let mut first = Term::spawn(&sandbox, &["new", "story"]);
    first.wait_raw();
    first.wait_for("$ ");
    first.send("echo hel'l'o\r");
    first.wait_for("hello\r\n");
    first.send([0x1c]); // Ctrl-\, the default detach key
    let status = first.wait_exit();
    assert_eq!(status.code(), Some(0), "detaching exits 0; the terminal shows:\n{}", first.text());
    let text = first.text();
    assert!(text.contains("detached from \"story\""), "{text}");
    assert!(text.contains("rpty attach story"), "the message says how to come back: {text}");
    first.assert_restored();

    let listing = sandbox.ls();
    let row = listing.lines().find(|line| line.starts_with("story ")).unwrap_or_else(|| panic!("{listing}"));
    assert!(row.contains("/bin/sh") && row.contains("running"), "{row}");
    assert!(listing.starts_with("NAME"), "{listing}");

    let mut second = Term::spawn(&sandbox, &["attach", "story"]);
    second.wait_raw();
    let replayed = second.wait_for("hello\r\n");
    second.send("exit 5\r");
    let status = second.wait_exit();
    assert_eq!(status.code(), Some(5), "the client exits with the command's code; it shows:\n{}", second.text());
    let text = second.text();
    assert!(text[..replayed.min(text.len())].contains("echo hel'l'o"), "the replay has the typed line: {text}");
    assert!(text.contains("session \"story\" exited with code 5"), "{text}");
    second.assert_restored();

    // The session is gone, and with it the server.
    sandbox.wait_ls("no sessions", |listing| listing.trim() == "no sessions");
    let socket = sandbox.dir.join("server.sock");
    // Nothing is left to wait for: the server goes at once, not after a
    // client's resume window.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while socket.exists() {
        assert!(std::time::Instant::now() < deadline, "the server did not exit:\n{}", sandbox.server_log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn two_clients_see_each_others_input_and_both_get_the_end() {
    let sandbox = Sandbox::new("shared");
    let started = sandbox.run(&["new", "--detached", "shared"]);
    assert!(started.status.success(), "{}", common::describe(&started));

    let mut a = Term::spawn(&sandbox, &["attach", "shared"]);
    a.wait_raw();
    a.wait_for("$ ");
    let mut b = Term::spawn(&sandbox, &["attach", "shared"]);
    b.wait_raw();
    b.wait_for("$ ");
    sandbox.wait_ls("two clients", |listing| {
        listing.lines().any(|line| line.starts_with("shared ") && line.split_whitespace().nth(2) == Some("2"))
    });

    let a_mark = a.output().len();
    let b_mark = b.output().len();
    a.send("echo from-a-$((40+2))\r");
    a.wait_for_after("from-a-42\r\n", a_mark);
    b.wait_for_after("echo from-a-$((40+2))", b_mark);
    b.wait_for_after("from-a-42\r\n", b_mark);

    let a_mark = a.output().len();
    let b_mark = b.output().len();
    b.send("echo from-b-$((6*7))\r");
    b.wait_for_after("from-b-42\r\n", b_mark);
    a.wait_for_after("echo from-b-$((6*7))", a_mark);
    a.wait_for_after("from-b-42\r\n", a_mark);

    // Killing the session ends both clients with its status (a hang-up).
    let killed = sandbox.run(&["kill", "shared"]);
    assert!(killed.status.success(), "{}", common::describe(&killed));
    for client in [&mut a, &mut b] {
        let status = client.wait_exit();
        assert_eq!(status.code(), Some(128 + 1), "killed by SIGHUP; it shows:\n{}", client.text());
        assert!(client.text().contains("was killed by signal 1"), "{}", client.text());
        client.assert_restored();
    }
}

#[test]
fn sigterm_detaches_and_restores_the_terminal() {
    let sandbox = Sandbox::new("sigterm");
    let mut client = Term::spawn(&sandbox, &["new", "victim", "--", "sh"]);
    client.wait_raw();
    client.wait_for("$ ");
    let pid = rustix::process::Pid::from_raw(client.pid()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = client.wait_exit();
    assert_eq!(status.code(), Some(128 + 15), "it shows:\n{}", client.text());
    client.assert_restored();
    assert!(client.text().contains("detached from \"victim\" (signal 15)"), "{}", client.text());

    // The session outlives its client.
    sandbox.wait_ls("the session detached", |listing| {
        listing.lines().any(|line| line.starts_with("victim ") && line.split_whitespace().nth(2) == Some("0"))
    });
    let killed = sandbox.run(&["kill", "victim"]);
    assert!(killed.status.success(), "{}", common::describe(&killed));
    sandbox.wait_ls("no sessions", |listing| listing.trim() == "no sessions");
}

#[test]
fn a_configured_detach_key_detaches_and_the_default_one_passes_through() {
    let sandbox = Sandbox::new("key");
    let command = ["new", "keyed", "--detach-key", "^b", "--", "sh", "-c", "stty -isig -echo; echo ready; cat -v"];
    let mut client = Term::spawn(&sandbox, &command);
    client.wait_raw();
    client.wait_for("ready");
    // Ctrl-\ is now an ordinary byte for the program: cat -v shows it.
    client.send(b"x\x1cy\r");
    client.wait_for("x^\\y");
    client.send([0x02]);
    let status = client.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", client.text());
    client.assert_restored();
    assert!(client.text().contains("detached from \"keyed\""), "{}", client.text());
    let killed = sandbox.run(&["kill", "keyed"]);
    assert!(killed.status.success(), "{}", common::describe(&killed));
}

#[test]
fn a_session_that_exits_while_detached_shows_its_status_to_the_next_attach() {
    let sandbox = Sandbox::new("late");
    let started = sandbox.run(&["new", "-d", "late", "--", "sh", "-c", "echo bye'-'bye; exit 3"]);
    assert!(started.status.success(), "{}", common::describe(&started));
    let listing = sandbox.wait_ls("the exit", |listing| listing.contains("exited"));
    let row = listing.lines().find(|line| line.starts_with("late ")).unwrap();
    assert!(row.trim_end().ends_with('3'), "the exit status column: {row}");

    let mut client = Term::spawn(&sandbox, &["attach", "late"]);
    client.wait_for("bye-bye");
    assert_eq!(client.wait_exit().code(), Some(3), "{}", client.text());
    client.assert_restored();
    sandbox.wait_ls("no sessions", |listing| listing.trim() == "no sessions");
}

#[test]
fn window_size_changes_reach_the_session_and_attach_nudges_a_redraw() {
    let sandbox = Sandbox::new("winch");
    let program = "trap 'echo got-winch; stty size' WINCH; echo ready; while :; do sleep 0.05; done";
    let started = sandbox.run(&["new", "-d", "sized", "--", "sh", "-c", program]);
    assert!(started.status.success(), "{}", common::describe(&started));

    // Attaching asks the program to redraw (a resize away and back), and
    // the session takes this terminal's size.
    let mut client = Term::spawn(&sandbox, &["attach", "sized"]);
    client.wait_raw();
    let nudged = client.wait_for("got-winch");
    client.wait_for_after(&format!("{} {}", common::ROWS, common::COLS), nudged);

    // The terminal changes size: the client forwards it.
    let mark = client.output().len();
    client.resize(40, 100);
    let pid = rustix::process::Pid::from_raw(client.pid()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::WINCH).unwrap();
    client.wait_for_after("40 100", mark);

    client.send([0x1c]);
    assert_eq!(client.wait_exit().code(), Some(0), "{}", client.text());
    client.assert_restored();
    let killed = sandbox.run(&["kill", "sized"]);
    assert!(killed.status.success(), "{}", common::describe(&killed));
}

#[test]
fn a_terminal_that_falls_behind_skips_ahead_and_stays_attached() {
    let sandbox = Sandbox::new("lag");
    let mut client = Term::spawn(&sandbox, &["new", "flood", "--", "sh"]);
    client.wait_raw();
    client.wait_for("$ ");
    // The terminal stops displaying while the session writes far more than
    // a client may have waiting (4 MiB).
    client.pause_reading(true);
    client.send("head -c 20000000 /dev/zero | tr '\\0' x | fold -w 100; echo; echo end-of-fl''ood\r");
    let deadline = std::time::Instant::now() + common::STEP_TIMEOUT;
    while !sandbox.server_log().contains("falling behind") {
        assert!(std::time::Instant::now() < deadline, "the client never fell behind:\n{}", sandbox.server_log());
        std::thread::sleep(Duration::from_millis(20));
    }
    client.pause_reading(false);
    client.wait_for("end-of-flood");
    let log = std::fs::read_to_string(sandbox.dir.join("client.log")).unwrap_or_default();
    assert!(log.contains("fell behind the output; attaching again"), "{log}");
    client.send("exit 4\r");
    assert_eq!(client.wait_exit().code(), Some(4), "still attached after skipping ahead");
    client.assert_restored();
}
