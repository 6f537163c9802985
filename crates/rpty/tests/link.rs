//! End to end, the connection as a person sees it, through a fake `ssh`
//! (a script that can ask for a password on the terminal, refuse to
//! connect like an unreachable host, or bridge to the server): the
//! transport gets the terminal to ask, a dead link is seen within seconds,
//! the status line says why and for how long, and a client that leaves
//! while its link is down is not left behind as a ghost.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{BIN, Sandbox, Term};
use rustix::process::{Pid, Signal};

/// A fake `ssh` in the sandbox: with the file `ask` present it asks for a
/// password on the terminal first (and removes `ask`); with `refuse`
/// present it fails as ssh does for a host that refuses; otherwise it
/// notes its pid in `bridges` and runs `rpty bridge`.
struct FakeSsh {
    dir: PathBuf,
    path: PathBuf,
}

impl FakeSsh {
    fn new(sandbox: &Sandbox) -> FakeSsh {
        let dir = sandbox.dir.clone();
        let path = dir.join("ssh");
        let script = format!(
            "#!/bin/sh\n\
             cd {dir}\n\
             if [ -e refuse ]; then echo 'ssh: connect to host example port 22: Connection refused' >&2; exit 255; fi\n\
             if [ -e ask ]; then\n\
               rm -f ask\n\
               printf 'password: ' > /dev/tty\n\
               IFS= read -r answer < /dev/tty || exit 254\n\
               [ \"$answer\" = sesame ] || {{ echo 'Permission denied' >&2; exit 255; }}\n\
             fi\n\
             echo $$ >> bridges\n\
             exec {BIN} bridge\n",
            dir = dir.display()
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        FakeSsh { dir, path }
    }

    /// The `--via` command.
    fn via(&self) -> String {
        format!("{} example rpty bridge", self.path.display())
    }

    fn set(&self, flag: &str, on: bool) {
        let path = self.dir.join(flag);
        if on {
            std::fs::write(path, "").unwrap();
        } else {
            let _ = std::fs::remove_file(path);
        }
    }

    /// The pid of the `count`-th bridge, once it runs.
    fn bridge(&self, count: usize) -> Pid {
        let line = common::wait_lines(&self.dir.join("bridges"), count);
        let text = std::fs::read_to_string(self.dir.join("bridges")).unwrap();
        let line = text.lines().nth(count - 1).unwrap_or(&line);
        Pid::from_raw(line.trim().parse().unwrap()).unwrap()
    }
}

#[test]
fn the_transport_asks_on_the_terminal_before_the_first_connection() {
    let sandbox = Sandbox::new("ask");
    let ssh = FakeSsh::new(&sandbox);
    ssh.set("ask", true);
    let via = ssh.via();
    let mut term = Term::spawn_controlling(&sandbox, &["new", "--via", &via, "asked"]);
    term.wait_for("password: ");
    assert!(
        term.termios().local_modes.contains(rustix::termios::LocalModes::ICANON),
        "the question is asked in the terminal's ordinary mode"
    );
    term.send("sesame\r");
    term.wait_raw();
    term.send("echo in-$((6*7))\r");
    term.wait_for("in-42");
    term.send("\x1c");
    assert!(term.wait_exit().success(), "{}", term.text());
    term.assert_restored();
    assert!(sandbox.run(&["kill", "asked"]).status.success());
}

#[test]
fn a_reconnect_that_asks_gets_the_terminal_and_an_answer() {
    let sandbox = Sandbox::new("ask-again");
    let ssh = FakeSsh::new(&sandbox);
    let via = ssh.via();
    let mut term = Term::spawn_controlling(&sandbox, &["new", "--via", &via, "again"]);
    term.wait_raw();
    term.send("echo first-$((6*7))\r");
    let first = term.wait_for("first-42");
    ssh.set("ask", true);
    let _ = rustix::process::kill_process(ssh.bridge(1), Signal::KILL);
    let asked = term.wait_for_after("rpty: the transport asks for input while reconnecting:", first);
    assert!(term.text()[first..].contains("password: "), "{}", term.text());
    let deadline = Instant::now() + common::STEP_TIMEOUT;
    while !term.termios().local_modes.contains(rustix::termios::LocalModes::ICANON) {
        assert!(Instant::now() < deadline, "the terminal never left raw mode for the question");
        std::thread::sleep(Duration::from_millis(10));
    }
    term.send("sesame\r");
    ssh.bridge(2);
    term.wait_raw();
    term.send("echo second-$((6*7))\r");
    term.wait_for_after("second-42", asked);
    term.send("\x1c");
    assert!(term.wait_exit().success(), "{}", term.text());
    term.assert_restored();
    assert!(sandbox.run(&["kill", "again"]).status.success());
}

#[test]
fn a_wrong_answer_to_the_transport_is_a_one_line_error() {
    let sandbox = Sandbox::new("ask-wrong");
    let ssh = FakeSsh::new(&sandbox);
    ssh.set("ask", true);
    let via = ssh.via();
    let mut term = Term::spawn_controlling(&sandbox, &["ls", "--via", &via]);
    term.wait_for("password: ");
    term.send("wrong\r");
    let status = term.wait_exit();
    assert_eq!(status.code(), Some(1), "{}", term.text());
    term.wait_for("rpty: the --via command");
    term.wait_for("Permission denied");
}

#[test]
fn the_status_line_says_why_and_for_how_long_and_goes_when_the_link_is_back() {
    let sandbox = Sandbox::new("status");
    let ssh = FakeSsh::new(&sandbox);
    let via = ssh.via();
    let mut term = Term::spawn_controlling(&sandbox, &["new", "--via", &via, "linked"]);
    term.wait_raw();
    // A full screen: the bottom row holds the prompt.
    term.send("seq 1 40; echo before-$((6*7))\r");
    let before = term.wait_for("before-42");

    // Wide enough for the whole line (narrower ones get it shortened).
    term.resize(common::ROWS, 120);
    let resized = term.output().len();
    ssh.set("refuse", true);
    let _ = rustix::process::kill_process(ssh.bridge(1), Signal::KILL);
    let lost = term.wait_for_after("rpty: connection lost ", before);
    term.wait_for_after("(ssh exited 255: Connection refused); retrying in ", lost);
    term.wait_for_after("s — Ctrl-\\ detaches", lost);
    // Updated every second.
    term.wait_for_after("connection lost 2s ago", lost);

    ssh.set("refuse", false);
    let back = ssh.bridge(2);
    assert!(common::alive(back.as_raw_nonzero().get()));
    // The status line goes, and the server's screen model repaints the
    // screen: it shows exactly what the session's screen holds, the
    // prompt on the bottom row included.
    let cleared = term.wait_for_after("\x1b7\x1b[1;1H\x1bM\x1b8\x1b[B", lost);
    term.wait_for_after("\x1b[H\x1b[J", cleared);
    let sizes = [(0, common::ROWS, common::COLS), (resized, common::ROWS, 120)];
    let captured = sandbox.run(&["capture", "linked"]);
    assert!(captured.status.success(), "{}", common::describe(&captured));
    let expected: Vec<String> = String::from_utf8(captured.stdout).unwrap().lines().map(str::to_owned).collect();
    assert_eq!(expected.len(), usize::from(common::ROWS));
    assert!(expected[22].ends_with("before-42") && !expected[23].is_empty(), "{expected:#?}");
    let deadline = std::time::Instant::now() + common::STEP_TIMEOUT;
    loop {
        let shown = common::screen_rows(&term.output(), &sizes);
        if shown == expected {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "shown {shown:#?}, the session's screen {expected:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    term.send("echo after-$((6*7))\r");
    term.wait_for_after("after-42", cleared);
    term.send("\x1c");
    assert!(term.wait_exit().success(), "{}", term.text());
    assert!(sandbox.run(&["kill", "linked"]).status.success());
}

#[test]
fn a_hung_link_is_seen_within_seconds() {
    let sandbox = Sandbox::new("hung");
    let ssh = FakeSsh::new(&sandbox);
    let via = ssh.via();
    let mut term = Term::spawn_controlling(&sandbox, &["new", "--via", &via, "hung"]);
    term.wait_raw();
    term.send("echo up-$((6*7))\r");
    let up = term.wait_for("up-42");
    // The bridge stops: nothing arrives, nothing is refused.
    let bridge = ssh.bridge(1);
    let stopped = Instant::now();
    let _ = rustix::process::kill_process(bridge, Signal::STOP);
    term.wait_for_after("rpty: connection lost", up);
    let seen = stopped.elapsed();
    let _ = rustix::process::kill_process(bridge, Signal::CONT);
    // The default link timeout is 3 s; allow for a loaded machine.
    assert!(seen < Duration::from_millis(4500), "a hung link took {seen:?} to be seen");
    ssh.bridge(2);
    term.send("echo back-$((6*7))\r");
    term.wait_for_after("back-42", up);
    term.send("\x1c");
    assert!(term.wait_exit().success(), "{}", term.text());
    assert!(sandbox.run(&["kill", "hung"]).status.success());
}

#[test]
fn a_client_that_leaves_while_disconnected_is_listed_as_such_then_expires() {
    let sandbox = Sandbox::new("ghost");
    let _served = common::serve_local(&sandbox, &["--client-expiry", "2s"]);
    let started = sandbox.run(&["new", "-d", "haunted"]);
    assert!(started.status.success(), "{}", common::describe(&started));
    let ssh = FakeSsh::new(&sandbox);
    let via = ssh.via();
    let mut term = Term::spawn_controlling(&sandbox, &["attach", "--via", &via, "haunted"]);
    term.wait_raw();
    sandbox.wait_ls("one connected client", |listing| listing.contains("haunted") && listing.contains(" 1 "));

    ssh.set("refuse", true);
    let _ = rustix::process::kill_process(ssh.bridge(1), Signal::KILL);
    term.wait_for("rpty: connection lost");
    term.send("\x1c");
    assert!(term.wait_exit().success(), "{}", term.text());
    let left = Instant::now();
    let listing = sandbox.wait_ls("the client as disconnected", |listing| listing.contains("1 (1 disconnected)"));
    assert!(left.elapsed() < Duration::from_secs(2), "shown as disconnected meanwhile: {listing}");
    let gone = sandbox.wait_ls("the client gone", |listing| {
        listing.lines().any(|line| line.starts_with("haunted") && line.split_whitespace().nth(2) == Some("0"))
    });
    let expired = left.elapsed();
    assert!(expired < Duration::from_secs(10), "took {expired:?}: {gone}");
    assert!(sandbox.run(&["kill", "haunted"]).status.success());
}
