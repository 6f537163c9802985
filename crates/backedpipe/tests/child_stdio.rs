//! A pipe whose transport is a child process's stdin/stdout: the child (a
//! small bridge program) connects to the server's Unix socket, as `ssh
//! host agent` would. Killing the child breaks the connection; the pipe
//! starts a new child, resumes, and no byte is lost.

#![cfg(feature = "child-stdio")]

mod common;

use std::process::Command;
use std::time::Duration;

use backedpipe::dial::ChildDialer;
use backedpipe::server::{Listener, ServerOptions};
use backedpipe::{BackedPipe, PipeState};
use common::net::{TempDir, expect_pattern, send_pattern};
use common::within;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipe_over_a_child_process_survives_killing_the_child() {
    let dir = TempDir::new("stdio");
    let path = dir.0.join("server.sock");
    let options = ServerOptions::new().pipe(common::options());
    let listener = Listener::unix(UnixListener::bind(&path).unwrap(), options);

    let bridge = env!("CARGO_BIN_EXE_backedpipe-bridge-probe");
    let socket = path.clone();
    let dialer = ChildDialer::new(move || {
        let mut command = Command::new(bridge);
        command.arg(&socket);
        command
    });
    let client = BackedPipe::connect(dialer.clone(), common::options());
    within(20, "first connection", client.connected()).await.expect("connected through the child");
    let session = within(10, "accept", listener.accept()).await.unwrap();

    let total: u64 = 8 << 20;
    let control = client.control();
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = session.into_split();
    let streams = tokio::spawn(async move {
        let up = async {
            for part in 0..32u64 {
                send_pattern(&mut client_write, part, total / 32, 16 << 10).await?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            client_write.shutdown().await
        };
        let down = async {
            for part in 0..32u64 {
                send_pattern(&mut server_write, 100 + part, total / 32, 16 << 10).await?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            server_write.shutdown().await
        };
        let check_up = async {
            for part in 0..32u64 {
                expect_pattern(&mut server_read, part, total / 32).await?;
            }
            Ok(())
        };
        let check_down = async {
            for part in 0..32u64 {
                expect_pattern(&mut client_read, 100 + part, total / 32).await?;
            }
            Ok(())
        };
        tokio::try_join!(up, down, check_up, check_down)?;
        std::io::Result::Ok((client_read, client_write, server_read, server_write))
    });

    let kills = 5;
    let mut killed = Vec::new();
    for _ in 0..kills {
        within(20, "connected", control.connected()).await.expect("connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let child = dialer.last_child().expect("a child");
        let pid = child.pid().expect("a running child");
        assert!(!killed.contains(&pid), "a new child each time");
        let target = rustix::process::Pid::from_raw(pid as i32).expect("pid");
        rustix::process::kill_process(target, rustix::process::Signal::KILL).expect("kill the bridge");
        killed.push(pid);
        within(20, "the pipe notices", async {
            let mut status = control.watch_status();
            status.wait_for(|status| status.state != PipeState::Connected).await.unwrap();
        })
        .await;
    }
    let halves = within(120, "streams", streams).await.unwrap().expect("both directions intact");
    assert!(control.stats().reconnects >= kills, "{:?}", control.stats());
    assert!(listener.stats().resumes_routed >= kills);
    drop(halves);
    control.close();
    // The last child ends with the pipe (its stdin closes, the bridge exits).
    if let Some(child) = dialer.last_child() {
        within(10, "last child ends", child.close()).await.expect("reaped");
    }
}
