//! The command line as a person meets it: `--help` everywhere, one-line
//! errors with the right exit code for every usual mistake, never a panic
//! or a debug dump.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::Sandbox;

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
    for subcommand in ["new", "attach", "ls", "kill", "serve", "bridge"] {
        let output = sandbox.run(&[subcommand, "--help"]);
        assert!(output.status.success(), "{subcommand}: {}", common::describe(&output));
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains(&format!("Usage: rpty {subcommand}")), "{subcommand}: {text}");
    }
    let output = sandbox.run(&["--help"]);
    let text = String::from_utf8_lossy(&output.stdout);
    for subcommand in ["new", "attach", "ls", "kill", "serve", "bridge"] {
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
    for args in [&["frobnicate"][..], &["attach"], &["new", "--detach-key", "ctrl-1"], &["ls", "--secret-file", "x"]] {
        let output = sandbox.run(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", common::describe(&output));
        assert!(String::from_utf8_lossy(&output.stderr).contains("--help"), "{args:?}: {}", common::describe(&output));
    }
}

#[test]
fn missing_sessions_and_servers_are_one_line_errors() {
    let sandbox = Sandbox::new("missing");
    assert_one_line_error(&sandbox.run(&["attach", "nope"]), "no server is running");
    assert_one_line_error(&sandbox.run(&["kill", "nope"]), "no server is running");
    assert_eq!(sandbox.ls().trim(), "no sessions", "ls with no server");

    let started = sandbox.run(&["new", "-d", "present", "--", "sleep", "60"]);
    assert!(started.status.success(), "{}", common::describe(&started));
    assert_one_line_error(&sandbox.run(&["attach", "nope"]), "no session named \"nope\"");
    assert_one_line_error(&sandbox.run(&["kill", "nope"]), "no session named \"nope\"");
    assert_one_line_error(&sandbox.run(&["new", "-d", "present"]), "already exists");
    assert_one_line_error(&sandbox.run(&["new", "-d", "a b"]), "cannot name a session");
    assert_one_line_error(&sandbox.run(&["new", "-d", "broken", "--", "/nonexistent/program"]), "/nonexistent/program");
    let killed = sandbox.run(&["kill", "present"]);
    assert!(killed.status.success(), "{}", common::describe(&killed));
}

#[test]
fn a_dead_server_and_a_foreign_runtime_directory_are_explained() {
    let sandbox = Sandbox::new("dead");
    // A socket file with nobody listening: a server that died.
    let socket = sandbox.dir.join("server.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert_one_line_error(&sandbox.run(&["attach", "x"]), "no server is running");

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
