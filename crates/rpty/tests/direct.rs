//! End to end: a local client hands its terminal to the server, which
//! reads the keys and writes the output there itself; the terminal's modes
//! are put back when the client leaves, and a killed client's terminal is
//! given back at once (its keys go to whoever reads it next, never to the
//! session).

mod common;

use std::time::{Duration, Instant};

use common::{Sandbox, Term};

/// Waits until the server's log has `needle`.
fn wait_log(sandbox: &Sandbox, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = sandbox.server_log();
        if log.contains(needle) {
            return log;
        }
        assert!(Instant::now() < deadline, "the server never logged {needle:?}:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_server_serves_the_terminal_and_puts_its_modes_back_on_detach() {
    let sandbox = Sandbox::new("direct-modes");
    let mut client = Term::spawn(&sandbox, &["new", "modes"]);
    client.wait_raw();
    client.wait_for("$ ");
    wait_log(&sandbox, "direct=true");

    // Bracketed paste and the application cursor keys switched on by the
    // program; then detach.
    client.send("printf '\\033[?2004h\\033[?1hon\\n'\r");
    let on = client.wait_for("on\r\n");
    client.send([0x1c]);
    let status = client.wait_exit();
    assert_eq!(status.code(), Some(0), "it shows:\n{}", client.text());
    let output = client.output();
    let after = &output[on..];
    let detached = common::find(after, b"detached from \"modes\"").expect("the detach message");
    let reset = common::find(after, b"\x1b[?2004l").expect("bracketed paste switched off");
    assert!(reset < detached, "the modes were put back before the message");
    assert!(common::find(after, b"\x1b[?1l").is_some_and(|at| at < detached), "cursor keys put back");
    client.assert_restored();
    wait_log(&sandbox, "client detached with its detach key");

    // Attached again, the session goes on; typed input reaches it.
    let mut again = Term::spawn(&sandbox, &["attach", "modes"]);
    again.wait_raw();
    let mark = again.output().len();
    again.send("echo back-$((20+1))\r");
    again.wait_for_after("back-21\r\n", mark);
    again.send("exit 3\r");
    assert_eq!(again.wait_exit().code(), Some(3), "it shows:\n{}", again.text());
    again.assert_restored();
}

#[test]
fn a_killed_client_gets_its_terminal_back_at_once() {
    let sandbox = Sandbox::new("direct-kill");
    let client = Term::spawn(&sandbox, &["new", "kept"]);
    client.wait_raw();
    client.wait_for("$ ");
    wait_log(&sandbox, "direct=true");
    client.send("echo one-$((1+1))\r");
    client.wait_for("one-2\r\n");

    let pid = rustix::process::Pid::from_raw(client.pid()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    // The server sees the client's process end, not a connection timing out.
    let log = wait_log(&sandbox, "ClientDisconnected");
    assert!(log.contains("client left"), "{log}");

    // Keys typed now are not the session's.
    client.send("echo leaked-$((3+4))\r");
    std::thread::sleep(Duration::from_millis(300));
    let captured = sandbox.run(&["capture", "kept"]);
    assert!(captured.status.success(), "{}", common::describe(&captured));
    let screen = String::from_utf8_lossy(&captured.stdout);
    assert!(screen.contains("one-2"), "{screen}");
    assert!(!screen.contains("leaked"), "the server read the killed client's terminal:\n{screen}");

    let killed = sandbox.run(&["kill", "kept"]);
    assert!(killed.status.success(), "{}", common::describe(&killed));
}
