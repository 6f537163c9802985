//! End to end over TCP on loopback: `rpty serve --listen` generates a
//! private secret; a client without it, or with a wrong one, is refused
//! with a clear message; with it, sessions work as over the local socket.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{Sandbox, Term, serve};

#[test]
fn tcp_without_the_secret_is_refused_and_with_it_works() {
    let sandbox = Sandbox::new("tcp");
    let (_served, addr) = serve(&sandbox);
    let secret = sandbox.dir.join("secret");
    assert_eq!(std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o600, "the secret is private");

    let refused = sandbox.run(&["ls", "--connect", &addr]);
    assert_eq!(refused.status.code(), Some(1), "{}", common::describe(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("requires a secret") && stderr.contains("--secret-file"), "{stderr}");

    let wrong = sandbox.dir.join("wrong");
    std::fs::write(&wrong, "not-the-secret-at-all-0123456789\n").unwrap();
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let refused = sandbox.run(&["ls", "--connect", &addr, "--secret-file", wrong.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1), "{}", common::describe(&refused));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("does not match"), "{}", common::describe(&refused));

    let secret_arg = secret.to_str().unwrap();
    let listed = sandbox.run(&["ls", "--connect", &addr, "--secret-file", secret_arg]);
    assert!(listed.status.success(), "{}", common::describe(&listed));
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "no sessions");

    let mut client = Term::spawn(&sandbox, &["new", "--connect", &addr, "--secret-file", secret_arg, "remote"]);
    client.wait_raw();
    client.wait_for("$ ");
    client.send("echo over'-'tcp\r");
    client.wait_for("over-tcp\r\n");
    client.send([0x1c]);
    assert_eq!(client.wait_exit().code(), Some(0), "{}", client.text());
    client.assert_restored();
    assert!(client.text().contains("rpty attach --connect"), "{}", client.text());

    // The same session is on the local socket too.
    assert!(sandbox.ls().contains("remote"));
    let killed = sandbox.run(&["kill", "--connect", &addr, "--secret-file", secret_arg, "remote"]);
    assert!(killed.status.success(), "{}", common::describe(&killed));
    sandbox.wait_ls("no sessions", |listing| listing.trim() == "no sessions");
}

#[test]
fn a_second_server_for_the_same_directory_is_refused() {
    let sandbox = Sandbox::new("twice");
    let (_served, _addr) = serve(&sandbox);
    let second = sandbox.run(&["serve"]);
    assert_eq!(second.status.code(), Some(1), "{}", common::describe(&second));
    assert!(String::from_utf8_lossy(&second.stderr).contains("already running"), "{}", common::describe(&second));
}
