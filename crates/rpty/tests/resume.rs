//! End to end: the connection breaks while output streams (the `--via`
//! transport process killed, or the server's side of the socket cut) and
//! the client resumes with nothing lost or repeated; the status line while
//! it reconnects; `rpty bridge` as the far end of `--via`.

mod common;

use std::path::Path;

use common::{BIN, ROWS, Sandbox, Term};

/// Lines the streaming command prints.
const LINES: usize = 3000;

/// A command that prints `line 0` .. `line {LINES-1}`, pausing now and
/// then so that the output is still streaming when the connection breaks,
/// then exits 7.
fn counter() -> String {
    format!(
        "i=0; while [ $i -lt {LINES} ]; do echo line $i; i=$((i+1)); \
         if [ $((i % 100)) -eq 0 ]; then sleep 0.05; fi; done; exit 7"
    )
}

/// A `--via` command that records its pid and becomes `rpty bridge`.
fn via(dir: &Path) -> String {
    format!("echo $$ >> {}/via.pids; exec {BIN} bridge", dir.display())
}

/// The start of the status line, as the client draws it on the bottom row.
fn status_line_shown() -> String {
    format!("\x1b7\x1b[{ROWS};1H\x1b[0;7m rpty: connection lost ")
}

/// The status line's removal: the screen moves back down the row it was
/// moved up to make room.
fn status_line_cleared() -> String {
    "\x1b7\x1b[1;1H\x1bM\x1b8\x1b[B".to_owned()
}

/// `data` without what the client drew between saving and restoring the
/// cursor (the status line, the room made for it, its removal) and the
/// cursor moves that follow making room and taking it back; the sessions here never save the
/// cursor themselves.
fn without_status_line(data: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut rest = &data[..];
    while let Some(at) = common::find(rest, b"\x1b7") {
        out.extend_from_slice(&rest[..at]);
        let end = common::find(&rest[at..], b"\x1b8").map_or(rest.len(), |end| at + end + 2);
        rest = &rest[end..];
        if let Some(after) = rest.strip_prefix(b"\x1b[A").or_else(|| rest.strip_prefix(b"\x1b[B")) {
            rest = after;
        }
    }
    out.extend_from_slice(rest);
    out
}

/// `data` without the repaints the server sends when the link is back
/// (they redraw the screen, which holds lines already shown): from their
/// prelude to the cursor's visibility, their last mode (these sessions set
/// no title).
fn without_repaints(data: Vec<u8>) -> Vec<u8> {
    const PRELUDE: &[u8] = b"\x1b[?1049l\x1b[r\x1b[?6l";
    let mut out = Vec::with_capacity(data.len());
    let mut rest = &data[..];
    while let Some(at) = common::find(rest, PRELUDE) {
        out.extend_from_slice(&rest[..at]);
        let end = common::find(&rest[at..], b" q\x1b[?25").map_or(rest.len(), |end| at + end + 8);
        rest = &rest[end.min(rest.len())..];
    }
    out.extend_from_slice(rest);
    out
}

/// Checks that the output holds `line 0` .. `line {LINES-1}` once each, in
/// order, with nothing else on those lines (apart from the client's status
/// line and the repaints when the link is back).
fn assert_every_line_once(output: Vec<u8>) {
    let output = without_repaints(without_status_line(output));
    let text = String::from_utf8_lossy(&output);
    let numbers: Vec<usize> = text
        .split("\r\n")
        .filter_map(|line| line.strip_prefix("line "))
        .map(|number| number.parse().unwrap_or_else(|_| panic!("a damaged line: {number:?}")))
        .collect();
    let expected: Vec<usize> = (0..LINES).collect();
    if numbers != expected {
        let first_bad = numbers.iter().zip(&expected).position(|(got, want)| got != want);
        panic!("{} numbered lines, first difference at index {first_bad:?}", numbers.len());
    }
}

fn kill(pid: i32) {
    let pid = rustix::process::Pid::from_raw(pid).unwrap();
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
}

#[test]
fn killing_the_via_transport_while_output_streams_loses_and_repeats_nothing() {
    let sandbox = Sandbox::new("via-cut");
    let pids = sandbox.dir.join("via.pids");
    let mut client =
        Term::spawn(&sandbox, &["new", "--via", &via(&sandbox.dir), "counter", "--", "sh", "-c", &counter()]);
    let mut cuts = 0;
    for (at, transports) in [("line 400\r\n", 1), ("line 1200\r\n", 2), ("line 2000\r\n", 3)] {
        client.wait_for(at);
        // The transport in use is the newest one.
        let pid: i32 = common::wait_lines(&pids, transports).parse().unwrap();
        kill(pid);
        cuts += 1;
    }
    let status = client.wait_exit();
    assert_eq!(status.code(), Some(7), "it shows:\n{}", client.text());
    assert!(
        std::fs::read_to_string(&pids).unwrap().lines().count() > cuts,
        "every cut was followed by a new transport"
    );
    assert_every_line_once(client.output());
    client.assert_restored();
}

#[test]
fn cutting_the_servers_side_of_the_socket_while_output_streams_loses_and_repeats_nothing() {
    let sandbox = Sandbox::new("server-cut");
    let mut client = Term::spawn(&sandbox, &["new", "counter", "--", "sh", "-c", &counter()]);
    for at in ["line 300\r\n", "line 1100\r\n", "line 1900\r\n", "line 2600\r\n"] {
        client.wait_for(at);
        // SIGUSR1: the server drops every client connection.
        sandbox.signal_server(rustix::process::Signal::USR1);
    }
    let status = client.wait_exit();
    assert_eq!(status.code(), Some(7), "it shows:\n{}", client.text());
    assert_every_line_once(client.output());
    let log = std::fs::read_to_string(sandbox.dir.join("client.log")).unwrap_or_default();
    assert!(log.contains("connected=false"), "the client saw the connection break:\n{log}");
}

#[test]
fn the_status_line_shows_while_reconnecting_and_goes_when_resumed() {
    let sandbox = Sandbox::new("status");
    let started = sandbox.run(&["new", "-d", "steady"]);
    assert!(started.status.success(), "{}", common::describe(&started));
    let block = sandbox.dir.join("block");
    let pids = sandbox.dir.join("via.pids");
    let via = format!("test -e {} && exit 1; {}", block.display(), via(&sandbox.dir));
    let mut client = Term::spawn(&sandbox, &["attach", "--via", &via, "steady"]);
    client.wait_raw();
    client.wait_for("$ ");

    // Break the transport and keep it broken for a while.
    std::fs::write(&block, b"").unwrap();
    kill(common::wait_lines(&pids, 1).parse().unwrap());
    let shown_at = client.wait_for(&status_line_shown());
    // It says what happened and how to leave, and counts the seconds.
    client.wait_for_after("(the --via command exited 1); ", shown_at);
    client.wait_for_after("rpty: connection lost 1s ago", shown_at);
    std::fs::remove_file(&block).unwrap();
    let cleared_at = client.wait_for_after(&status_line_cleared(), shown_at);

    // The session works as before.
    client.send("echo back'_'again\r");
    client.wait_for_after("back_again\r\n", cleared_at);
    client.send([0x1c]);
    assert_eq!(client.wait_exit().code(), Some(0), "{}", client.text());
    client.assert_restored();
    let text = client.text();
    assert!(text.contains(&format!("rpty attach --via '{via}' steady")), "the hint keeps --via: {text}");
    let killed = sandbox.run(&["kill", "steady"]);
    assert!(killed.status.success(), "{}", common::describe(&killed));
}

#[test]
fn ls_and_kill_work_through_a_bridge() {
    let sandbox = Sandbox::new("bridge");
    let started = sandbox.run(&["new", "-d", "far", "--", "sleep", "60"]);
    assert!(started.status.success(), "{}", common::describe(&started));
    let bridge = format!("exec {BIN} bridge");
    let listed = sandbox.run(&["ls", "--via", &bridge]);
    assert!(listed.status.success(), "{}", common::describe(&listed));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("sleep 60"), "{}", common::describe(&listed));
    let killed = sandbox.run(&["kill", "--via", &bridge, "far"]);
    assert!(killed.status.success(), "{}", common::describe(&killed));
    sandbox.wait_ls("no sessions", |listing| listing.trim() == "no sessions");
}

#[test]
fn a_via_command_that_fails_is_reported_in_one_line() {
    let sandbox = Sandbox::new("via-fail");
    let output = sandbox.run(&["ls", "--via", "echo no route to host >&2; exit 255"]);
    assert_eq!(output.status.code(), Some(1), "{}", common::describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no route to host"), "{stderr}");
}

#[test]
fn a_server_that_dies_ends_its_clients_at_once_with_a_clear_message() {
    let sandbox = Sandbox::new("dead-server");
    let mut client = Term::spawn(&sandbox, &["new", "doomed", "--", "sh"]);
    client.wait_raw();
    client.wait_for("$ ");
    sandbox.signal_server(rustix::process::Signal::KILL);
    let started = std::time::Instant::now();
    assert_eq!(client.wait_exit().code(), Some(1), "{}", client.text());
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "no long retrying for a dead server");
    assert!(client.text().contains("the server is no longer running"), "{}", client.text());
    client.assert_restored();
}

#[test]
fn a_command_that_exits_while_the_connection_is_down_still_reaches_the_client() {
    let sandbox = Sandbox::new("exit-away");
    let go = sandbox.dir.join("go");
    let program =
        format!("echo waiting; while [ ! -e {} ]; do sleep 0.02; done; echo last'-'words; exit 6", go.display());
    let started = sandbox.run(&["new", "-d", "away", "--", "sh", "-c", &program]);
    assert!(started.status.success(), "{}", common::describe(&started));
    let block = sandbox.dir.join("block");
    let pids = sandbox.dir.join("via.pids");
    let via = format!("test -e {} && exit 1; {}", block.display(), via(&sandbox.dir));
    let mut client = Term::spawn(&sandbox, &["attach", "--via", &via, "away"]);
    client.wait_for("waiting");

    // The connection goes down and stays down while the command finishes.
    std::fs::write(&block, b"").unwrap();
    kill(common::wait_lines(&pids, 1).parse().unwrap());
    client.wait_for(&status_line_shown());
    std::fs::write(&go, b"").unwrap();
    sandbox.wait_ls("the exit", |listing| listing.contains("exited"));
    // The server holds the rest for the client's resume window, not for a
    // moment: stay away a while longer.
    std::thread::sleep(std::time::Duration::from_secs(3));
    std::fs::remove_file(&block).unwrap();

    assert_eq!(client.wait_exit().code(), Some(6), "{}", client.text());
    let text = client.text();
    assert!(text.contains("last-words") && text.contains("exited with code 6"), "{text}");
    client.assert_restored();
    sandbox.wait_ls("the session gone once its status was delivered", |listing| listing.trim() == "no sessions");
}

#[test]
fn the_detach_key_and_signals_work_while_reconnecting() {
    let sandbox = Sandbox::new("detach-away");
    let started = sandbox.run(&["new", "-d", "stuck"]);
    assert!(started.status.success(), "{}", common::describe(&started));
    let block = sandbox.dir.join("block");
    let pids = sandbox.dir.join("via.pids");
    let via = format!("test -e {} && exit 1; {}", block.display(), via(&sandbox.dir));
    let shown = status_line_shown();
    for (round, leave) in [(1, None), (2, Some(rustix::process::Signal::TERM))] {
        let mut client = Term::spawn(&sandbox, &["attach", "--via", &via, "stuck"]);
        client.wait_raw();
        client.wait_for("$ ");
        std::fs::write(&block, b"").unwrap();
        kill(common::wait_lines(&pids, round).parse().unwrap());
        client.wait_for(&shown);
        // Typing while the connection is down must not hold anything up.
        client.send("echo typed-while-away");
        let asked = std::time::Instant::now();
        match leave {
            None => client.send([0x1c]),
            Some(signal) => {
                rustix::process::kill_process(rustix::process::Pid::from_raw(client.pid()).unwrap(), signal).unwrap()
            }
        }
        let status = client.wait_exit();
        assert!(asked.elapsed() < std::time::Duration::from_secs(10), "leaving took {:?}", asked.elapsed());
        let expected = if leave.is_some() { 128 + 15 } else { 0 };
        assert_eq!(status.code(), Some(expected), "{}", client.text());
        assert!(client.text().contains("detached from \"stuck\""), "{}", client.text());
        client.assert_restored();
        std::fs::remove_file(&block).unwrap();
    }
    let killed = sandbox.run(&["kill", "stuck"]);
    assert!(killed.status.success(), "{}", common::describe(&killed));
}
