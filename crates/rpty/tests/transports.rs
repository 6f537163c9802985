//! End to end: every transport rpty carries its pipe over (the local Unix
//! socket, TCP, a `--via` command) splits its connections into halves that
//! read and write at the same time, on the client and on the server, as
//! the pipes' counters say in the logs.

mod common;

use common::{BIN, Sandbox, serve};

/// The number after `name: ` in a `Stats { .. }` log line.
fn counter(line: &str, name: &str) -> u64 {
    let field = format!("{name}: ");
    let at = line.find(&field).unwrap_or_else(|| panic!("no {name} in {line}")) + field.len();
    let digits: String = line[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or_else(|_| panic!("no number after {name} in {line}"))
}

/// Checks that the pipe a log line reports took its connections as
/// independent halves only.
fn assert_independent(line: &str) {
    assert!(counter(line, "independent_halves") >= 1, "{line}");
    assert_eq!(counter(line, "shared_halves"), 0, "{line}");
}

#[test]
fn unix_tcp_and_via_connections_split_into_independent_halves() {
    let sandbox = Sandbox::new("halves");
    let (_served, addr) = serve(&sandbox);
    let secret = sandbox.dir.join("secret");
    let bridge = format!("exec {BIN} bridge");
    let transports: [(&str, Vec<&str>); 3] = [
        ("unix", vec!["ls"]),
        ("tcp", vec!["ls", "--connect", &addr, "--secret-file", secret.to_str().unwrap()]),
        ("via", vec!["ls", "--via", &bridge]),
    ];
    for (_, args) in &transports {
        let listed = sandbox.run(args);
        assert!(listed.status.success(), "rpty {args:?}: {}", common::describe(&listed));
    }

    let client_log = std::fs::read_to_string(sandbox.dir.join("client.log")).unwrap_or_default();
    for (transport, _) in &transports {
        let kind = format!("transport=\"{transport}\"");
        let line = client_log
            .lines()
            .find(|line| line.contains(" connected ") && line.contains(&kind))
            .unwrap_or_else(|| panic!("no connection over {transport} in the client log:\n{client_log}"));
        assert_independent(line);
    }

    // The server took one client pipe per request: two over its Unix
    // socket (directly and through the bridge), one over TCP.
    let server_log = sandbox.server_log();
    let accepted: Vec<&str> = server_log.lines().filter(|line| line.contains("client connected")).collect();
    assert_eq!(accepted.len(), 3, "{server_log}");
    for line in accepted {
        assert_independent(line);
    }
}
