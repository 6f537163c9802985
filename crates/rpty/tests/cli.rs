//! The command line as a person meets it: `--help` everywhere, one-line
//! errors with the right exit code for every usual mistake, never a panic
//! or a debug dump.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{Sandbox, Term};

/// `rpty ARGS` on a terminal must fail with one line that says `needle`.
fn assert_one_line_error_on_terminal(sandbox: &Sandbox, args: &[&str], needle: &str) {
    let (status, text) = Term::run(sandbox, args);
    assert_eq!(status.code(), Some(1), "{args:?}: {text:?}");
    let lines: Vec<&str> = text.lines().filter(|line| !line.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: one line: {text:?}");
    assert!(lines[0].starts_with("rpty: ") && lines[0].contains(needle), "{args:?}: {needle:?} not in {text:?}");
}

fn assert_one_line_error(output: &std::process::Output, needle: &str) {
    assert_eq!(output.status.code(), Some(1), "{}", common::describe(output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.starts_with("rpty: "), "{stderr:?}");
    assert!(stderr.contains(needle), "{needle:?} not in {stderr:?}");
    assert!(!stderr.contains("panicked") && !stderr.contains("{ ") && !stderr.contains("Os {"), "{stderr:?}");
}

#[test]
fn every_subcommand_has_help() {
    let sandbox = Sandbox::new("help");
    let all = ["new", "attach", "ls", "kill", "rename", "send", "completions", "man", "serve", "bridge"];
    for subcommand in all {
        let output = sandbox.run(&[subcommand, "--help"]);
        assert!(output.status.success(), "{subcommand}: {}", common::describe(&output));
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains(&format!("Usage: rpty {subcommand}")), "{subcommand}: {text}");
    }
    let output = sandbox.run(&["--help"]);
    let text = String::from_utf8_lossy(&output.stdout);
    for subcommand in all {
        assert!(text.contains(subcommand), "{text}");
    }
    let attach = String::from_utf8_lossy(&sandbox.run(&["attach", "--help"]).stdout).into_owned();
    assert!(attach.contains("--via") && attach.contains("--detach-key"), "{attach}");
    let version = sandbox.run(&["--version"]);
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("rpty "), "{}", common::describe(&version));
}

#[test]
fn usage_mistakes_exit_2_and_point_to_help() {
    let sandbox = Sandbox::new("usage");
    let mistakes = [
        &["frobnicate"][..],
        &["kill"],
        &["new", "--detach-key", "ctrl-1"],
        &["ls", "--secret-file", "x"],
        &["send", "x"],
        &["completions", "tcsh"],
    ];
    for args in mistakes {
        let output = sandbox.run(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", common::describe(&output));
        assert!(String::from_utf8_lossy(&output.stderr).contains("--help"), "{args:?}: {}", common::describe(&output));
    }
}

#[test]
fn missing_sessions_and_servers_are_one_line_errors() {
    let sandbox = Sandbox::new("missing");
    assert_one_line_error_on_terminal(&sandbox, &["attach", "nope"], "no server is running");
    assert_one_line_error_on_terminal(&sandbox, &["attach"], "no session to attach to");
    assert_one_line_error(&sandbox.run(&["kill", "nope"]), "no server is running");
    assert_one_line_error(&sandbox.run(&["rename", "nope", "other"]), "no server is running");
    assert_one_line_error(&sandbox.run(&["send", "nope", "x"]), "no server is running");
    assert!(sandbox.run(&["kill", "--all"]).status.success(), "kill --all with nothing to kill");
    assert_eq!(sandbox.ls().trim(), "no sessions", "ls with no server");

    let started = sandbox.run(&["new", "-d", "present", "--", "sleep", "60"]);
    assert!(started.status.success(), "{}", common::describe(&started));
    assert_one_line_error_on_terminal(&sandbox, &["attach", "nope"], "no session named \"nope\"");
    assert_one_line_error(&sandbox.run(&["kill", "nope"]), "no session named \"nope\"");
    assert_one_line_error(&sandbox.run(&["rename", "nope", "other"]), "no session named \"nope\"");
    assert_one_line_error(&sandbox.run(&["rename", "present", "a b"]), "cannot name a session");
    assert_one_line_error(&sandbox.run(&["send", "nope", "x"]), "no session named \"nope\"");
    assert_one_line_error(&sandbox.run(&["new", "-d", "present"]), "already exists");
    assert_one_line_error(&sandbox.run(&["new", "-d", "a b"]), "cannot name a session");
    assert_one_line_error(&sandbox.run(&["new", "-d", "broken", "--", "/nonexistent/program"]), "/nonexistent/program");
    let mut bogus = sandbox.command(&["ls"]);
    bogus.env("RPTY_LINK_TIMEOUT", "soon").stdin(std::process::Stdio::null());
    assert_one_line_error(&bogus.output().unwrap(), "RPTY_LINK_TIMEOUT: \"soon\" is not a duration");
    let killed = sandbox.run(&["kill", "present"]);
    assert!(killed.status.success(), "{}", common::describe(&killed));
}

#[test]
fn a_dead_server_and_a_foreign_runtime_directory_are_explained() {
    let sandbox = Sandbox::new("dead");
    // A socket file with nobody listening: a server that died.
    let socket = sandbox.dir.join("server.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert_one_line_error_on_terminal(&sandbox, &["attach", "x"], "no server is running");

    let open = Sandbox::new("open");
    std::fs::set_permissions(&open.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_one_line_error(&open.run(&["ls"]), "chmod 700");
}

#[test]
fn unnamed_sessions_get_the_lowest_free_number() {
    let sandbox = Sandbox::new("numbers");
    for expected in ["\"0\"", "\"1\""] {
        let output = sandbox.run(&["new", "-d", "--", "sleep", "60"]);
        assert!(output.status.success(), "{}", common::describe(&output));
        assert!(String::from_utf8_lossy(&output.stderr).contains(expected), "{}", common::describe(&output));
    }
    let names: Vec<String> =
        sandbox.ls().lines().skip(1).filter_map(|line| line.split_whitespace().next().map(str::to_owned)).collect();
    assert_eq!(names, ["0", "1"]);
    for name in ["0", "1"] {
        assert!(sandbox.run(&["kill", name]).status.success());
    }
}

#[test]
fn attach_and_new_refuse_a_standard_input_that_is_not_a_terminal_at_once() {
    let sandbox = Sandbox::new("notty");
    for args in [&["attach", "x"][..], &["attach"], &["new", "x"], &["new", "-A", "x"]] {
        let started = std::time::Instant::now();
        let output = sandbox.run(args);
        assert_one_line_error(&output, "not a terminal");
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{args:?} took {:?}", started.elapsed());
    }
    assert!(sandbox.server_pid().is_none(), "no server was started for a refused client");
    // Detached, nothing needs a terminal.
    let started = sandbox.run(&["new", "-d", "fine", "--", "sleep", "60"]);
    assert!(started.status.success(), "{}", common::describe(&started));
    assert!(sandbox.run(&["kill", "fine"]).status.success());
}

#[test]
fn detach_keys_that_other_keys_send_are_refused_in_one_line() {
    let sandbox = Sandbox::new("keys");
    for key in ["ctrl-[", "^[", "ctrl-m", "ctrl-i"] {
        let output = sandbox.run(&["new", "--detach-key", key, "x"]);
        assert_eq!(output.status.code(), Some(2), "{key}: {}", common::describe(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        let line = stderr.lines().next().unwrap_or_default();
        assert!(line.contains("cannot detach: it is"), "{key}: {stderr:?}");
    }
    let mut refused = sandbox.command(&["attach", "x"]);
    refused.env("RPTY_DETACH_KEY", "ctrl-[").stdin(std::process::Stdio::null());
    let output = refused.output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", common::describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("Escape"), "{}", common::describe(&output));
}

#[test]
fn completions_and_the_manual_page_are_printed() {
    let sandbox = Sandbox::new("completions");
    for (shell, marker) in [("bash", "complete -F"), ("zsh", "#compdef rpty"), ("fish", "complete -c rpty")] {
        let output = sandbox.run(&["completions", shell]);
        assert!(output.status.success(), "{shell}: {}", common::describe(&output));
        let script = String::from_utf8_lossy(&output.stdout);
        assert!(script.contains(marker), "{shell}: no {marker:?}");
        for subcommand in ["attach", "rename", "send"] {
            assert!(script.contains(subcommand), "{shell}: no {subcommand}");
        }
    }
    let output = sandbox.run(&["man"]);
    assert!(output.status.success(), "{}", common::describe(&output));
    let page = String::from_utf8_lossy(&output.stdout);
    assert!(page.starts_with(".ie") || page.contains(".TH rpty"), "{page}");
    assert!(page.contains("attach") && page.contains("detach"), "{page}");
}
