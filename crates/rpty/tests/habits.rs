//! End to end, the habits of tmux users with the real binary under a
//! pseudo-terminal: attach to the last session, attach-or-create,
//! read-only and detach-others attach, rename, send, capture, `ls --json`,
//! `kill --all`, a detach key from the environment.

mod common;

use std::time::Duration;

use common::{Sandbox, Term};

/// Starts a detached shell session `name`.
fn start(sandbox: &Sandbox, name: &str) {
    let output = sandbox.run(&["new", "-d", name]);
    assert!(output.status.success(), "{}", common::describe(&output));
}

/// Attaches with `args`, asks the shell which session it is, and detaches.
fn which_session(sandbox: &Sandbox, args: &[&str]) -> String {
    let mut term = Term::spawn(sandbox, args);
    term.wait_raw();
    term.send("echo \"in:$RPTY_SESSION:$((6*7))\"\r");
    let end = term.wait_for(":42");
    let text = term.text();
    let start = text[..end].rfind("in:").expect("the answer") + 3;
    let name = text[start..end - 3].to_owned();
    term.send("\x1c");
    assert!(term.wait_exit().success(), "{}", term.text());
    name
}

#[test]
fn attach_without_a_name_takes_the_session_used_last() {
    let sandbox = Sandbox::new("recent");
    start(&sandbox, "first");
    start(&sandbox, "second");
    assert_eq!(which_session(&sandbox, &["attach"]), "second", "the one created last");
    assert_eq!(which_session(&sandbox, &["attach", "first"]), "first");
    assert_eq!(which_session(&sandbox, &["attach"]), "first", "the one detached from last");
    assert!(sandbox.run(&["kill", "--all"]).status.success());
}

#[test]
fn attach_without_a_name_inside_a_session_takes_another_one() {
    let sandbox = Sandbox::new("recent-inside");
    start(&sandbox, "other");
    let mut outer = Term::spawn(&sandbox, &["new", "outer"]);
    outer.wait_raw();
    // `outer` is the session used last; from inside it, the last one
    // means another.
    outer.send(format!("{} attach --detach-key ctrl-b\r", common::BIN));
    outer.send("echo \"in:$RPTY_SESSION:$((6*7))\"\r");
    outer.wait_for("in:other:42");
    outer.send("\x02");
    outer.wait_for("detached from \"other\"");
    outer.send("\x1c");
    assert!(outer.wait_exit().success(), "{}", outer.text());
    assert!(sandbox.run(&["kill", "--all"]).status.success());
}

#[test]
fn new_dash_a_attaches_when_the_session_exists_and_creates_it_otherwise() {
    let sandbox = Sandbox::new("new-a");
    assert_eq!(which_session(&sandbox, &["new", "-A", "work"]), "work");
    let mut again = Term::spawn(&sandbox, &["new", "-A", "work"]);
    again.wait_raw();
    // The same shell: what it printed before comes back.
    again.wait_for("in:work:42");
    again.send("\x1c");
    assert!(again.wait_exit().success(), "{}", again.text());
    let names: Vec<String> =
        sandbox.ls().lines().skip(1).filter_map(|line| line.split_whitespace().next().map(str::to_owned)).collect();
    assert_eq!(names, ["work"]);
    assert!(sandbox.run(&["kill", "work"]).status.success());
}

#[test]
fn a_read_only_client_sees_the_output_but_its_typing_goes_nowhere() {
    let sandbox = Sandbox::new("read-only");
    start(&sandbox, "watched");
    let flag = sandbox.dir.join("typed");
    let mut watcher = Term::spawn(&sandbox, &["attach", "-r", "watched"]);
    watcher.wait_raw();
    watcher.send(format!("touch {}\r", flag.display()));
    // Output still arrives: the session says something through `send`.
    let sent = sandbox.run(&["send", "watched", "echo", "from-send-$((6*7))\r"]);
    assert!(sent.status.success(), "{}", common::describe(&sent));
    watcher.wait_for("from-send-42");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!flag.exists(), "the read-only client's input reached the session");
    watcher.send("\x1c");
    assert!(watcher.wait_exit().success(), "the detach key works read-only: {}", watcher.text());
    assert!(sandbox.run(&["kill", "watched"]).status.success());
}

#[test]
fn detach_others_sends_the_other_clients_home_with_their_message() {
    let sandbox = Sandbox::new("detach-others");
    start(&sandbox, "shared");
    let mut first = Term::spawn(&sandbox, &["attach", "shared"]);
    first.wait_raw();
    sandbox
        .wait_ls("one client", |listing| listing.lines().any(|line| line.contains("shared") && line.contains(" 1 ")));
    let mut second = Term::spawn(&sandbox, &["attach", "-d", "shared"]);
    second.wait_raw();
    let status = first.wait_exit();
    assert!(status.success(), "{status}: {}", first.text());
    first.wait_for("detached from \"shared\" by another client");
    first.assert_restored();
    // The one that asked stays, and works.
    second.send("echo still-$((6*7))\r");
    second.wait_for("still-42");
    second.send("\x1c");
    assert!(second.wait_exit().success(), "{}", second.text());
    assert!(sandbox.run(&["kill", "shared"]).status.success());
}

#[test]
fn a_renamed_session_is_listed_and_attached_by_its_new_name() {
    let sandbox = Sandbox::new("rename");
    start(&sandbox, "old");
    start(&sandbox, "taken");
    let taken = sandbox.run(&["rename", "old", "taken"]);
    assert_eq!(taken.status.code(), Some(1), "{}", common::describe(&taken));
    assert!(String::from_utf8_lossy(&taken.stderr).contains("already exists"), "{}", common::describe(&taken));
    let renamed = sandbox.run(&["rename", "old", "new"]);
    assert!(renamed.status.success(), "{}", common::describe(&renamed));
    let listing = sandbox.ls();
    let names: Vec<&str> = listing.lines().skip(1).filter_map(|line| line.split_whitespace().next()).collect();
    assert_eq!(names, ["new", "taken"], "{listing}");
    // The shell inside still has the name it started with in its
    // environment; what matters is that the session is reached.
    assert_eq!(which_session(&sandbox, &["attach", "new"]), "old");
    let failed = sandbox.run(&["attach", "old"]);
    assert_eq!(failed.status.code(), Some(1));
    assert!(sandbox.run(&["kill", "--all"]).status.success());
}

#[test]
fn send_types_its_words_or_its_standard_input_literally() {
    let sandbox = Sandbox::new("send");
    let file = sandbox.dir.join("received");
    let ready = sandbox.dir.join("ready");
    let script = format!("stty raw -echo; echo > {}; head -c 23 > {}", ready.display(), file.display());
    let output = sandbox.run(&["new", "-d", "typed", "--", "sh", "-c", &script]);
    assert!(output.status.success(), "{}", common::describe(&output));
    // Bytes sent before the raw mode would be cooked.
    common::wait_lines(&ready, 1);
    let words = sandbox.run(&["send", "typed", "-n", "two  spaces", "--help"]);
    assert!(words.status.success(), "{}", common::describe(&words));
    let mut piped = sandbox.command(&["send", "typed", "-"]);
    piped.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
    let mut child = piped.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"\x01\n-x").unwrap();
    assert!(child.wait().unwrap().success());
    let got = common::wait_lines(&file, 1);
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(bytes, b"-n two  spaces --help\x01\n-x"[..23].to_vec(), "{got:?}");
    let _ = sandbox.run(&["kill", "--all"]);
}

#[test]
fn ls_json_describes_every_session_and_kill_all_ends_them() {
    let sandbox = Sandbox::new("json");
    let empty = sandbox.run(&["ls", "--json"]);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&empty.stdout).unwrap(), serde_json::json!([]));
    start(&sandbox, "alive");
    let output = sandbox.run(&["new", "-d", "done", "--", "sh", "-c", "exit 3"]);
    assert!(output.status.success(), "{}", common::describe(&output));
    let mut watcher = Term::spawn(&sandbox, &["attach", "-r", "alive"]);
    watcher.wait_raw();
    let deadline = std::time::Instant::now() + common::STEP_TIMEOUT;
    let sessions = loop {
        let output = sandbox.run(&["ls", "--json"]);
        assert!(output.status.success(), "{}", common::describe(&output));
        let value: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
        let sessions = value.as_array().expect("an array").clone();
        let settled = sessions.iter().any(|s| s["name"] == "done" && !s["exit_status"].is_null())
            && sessions.iter().any(|s| s["name"] == "alive" && s["clients"]["connected"] == 1);
        if settled {
            break sessions;
        }
        assert!(std::time::Instant::now() < deadline, "never settled: {value}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let alive = sessions.iter().find(|s| s["name"] == "alive").unwrap();
    assert_eq!(alive["command"], "/bin/sh");
    assert_eq!(alive["clients"], serde_json::json!({ "connected": 1, "disconnected": 0 }));
    assert_eq!(alive["state"], "running");
    assert!(alive["exit_status"].is_null());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let created = alive["created"].as_u64().expect("created is a number of seconds");
    assert!(created <= now && now - created < 120, "created {created}, now {now}");
    let done = sessions.iter().find(|s| s["name"] == "done").unwrap();
    assert_eq!(done["state"], "exited");
    assert_eq!(done["exit_status"], serde_json::json!({ "code": 3 }));

    let killed = sandbox.run(&["kill", "--all"]);
    assert!(killed.status.success(), "{}", common::describe(&killed));
    watcher.wait_exit();
    watcher.wait_for("session \"alive\" was killed by signal 1");
    assert_eq!(sandbox.ls().trim(), "no sessions");
}

#[test]
fn the_detach_key_can_come_from_the_environment() {
    let sandbox = Sandbox::new("env-key");
    let mut term = Term::spawn_with_env(&sandbox, &["new", "keyed"], &[("RPTY_DETACH_KEY", "ctrl-a")]);
    term.wait_raw();
    term.send("echo ready-$((6*7))\r");
    term.wait_for("ready-42");
    term.send("\x01");
    assert!(term.wait_exit().success(), "{}", term.text());
    term.wait_for("detached from \"keyed\"");
    assert!(sandbox.run(&["kill", "keyed"]).status.success());
}

#[test]
fn capture_prints_the_screen_its_history_and_on_request_its_colours() {
    let sandbox = Sandbox::new("capture");
    let script = "seq 1 40; printf 'last \\033[1mbold\\033[0m  '; sleep 60";
    let output = sandbox.run(&["new", "-d", "shown", "--", "sh", "-c", script]);
    assert!(output.status.success(), "{}", common::describe(&output));
    let capture = |args: &[&str]| {
        let output = sandbox.run(&[&["capture", "shown"], args].concat());
        assert!(output.status.success(), "{}", common::describe(&output));
        String::from_utf8(output.stdout).unwrap()
    };
    // The server reads the output in its own time.
    let deadline = std::time::Instant::now() + common::STEP_TIMEOUT;
    let screen = loop {
        let screen = capture(&[]);
        if screen.contains("bold") {
            break screen;
        }
        assert!(std::time::Instant::now() < deadline, "never captured the last line: {screen:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let lines: Vec<&str> = screen.lines().collect();
    let last = lines.iter().rposition(|line| !line.is_empty()).unwrap();
    assert_eq!(&lines[last - 1..=last], ["40", "last bold"], "{screen}");
    assert!(lines.iter().all(|line| !line.ends_with(' ')), "trailing spaces are trimmed");
    let first: usize = lines[0].parse().expect("a number on the top row");
    let history = capture(&["-S", "3"]);
    let expected = format!("{}\n{}\n{}\n{screen}", first - 3, first - 2, first - 1);
    assert_eq!(history, expected, "three lines of history first");
    assert_eq!(capture(&["--scrollback", "1000"]).lines().next(), Some("1"), "all the history there is");
    let colored = capture(&["-e"]);
    assert!(colored.contains("last \x1b[0;1mbold\x1b[0m\n"), "{colored:?}");
    let missing = sandbox.run(&["capture", "nosuch"]);
    assert_eq!(missing.status.code(), Some(1));
    let message = String::from_utf8_lossy(&missing.stderr);
    assert!(message.contains("no session named \"nosuch\"") && message.lines().count() == 1, "{message}");
    assert!(sandbox.run(&["kill", "--all"]).status.success());
}
