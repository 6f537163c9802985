//! A pipe whose transport is a child process's stdin/stdout: the child (a
//! small bridge) connects to the server's Unix socket, as `ssh host agent`
//! would. Killing the child breaks the connection; the pipe starts a new
//! child, resumes, and no byte is lost.
//!
//! The child is this test binary itself, run again with
//! [`BRIDGE_SOCKET_ENV`] set: `main` looks for it first and bridges
//! instead of running the tests. So the bridge needs no binary target of
//! its own, which `cargo install` would install. The tests run under
//! libtest-mimic, which takes the usual arguments and prints the usual
//! summary. `dial::ChildDialer` needs the `child-stdio` feature; without
//! it the test is reported as ignored, with that reason.

mod common;

use std::ffi::OsStr;
use std::process::ExitCode;

use libtest_mimic::{Arguments, Completion, Trial};

/// Set in the environment of a child of this binary: the socket the child
/// bridges its stdio to.
const BRIDGE_SOCKET_ENV: &str = "BACKEDPIPE_TEST_BRIDGE_SOCKET";

fn main() -> ExitCode {
    if let Some(socket) = std::env::var_os(BRIDGE_SOCKET_ENV) {
        return bridge::run(&socket);
    }
    let name = "a_pipe_over_a_child_process_survives_killing_the_child";
    let trials = vec![Trial::ignorable_test(name, survives_killing_the_child)];
    libtest_mimic::run(&Arguments::from_args(), trials).exit_code()
}

#[cfg(not(feature = "child-stdio"))]
fn survives_killing_the_child() -> Result<Completion, libtest_mimic::Failed> {
    Ok(Completion::ignored_with("needs the `child-stdio` feature"))
}

#[cfg(feature = "child-stdio")]
fn survives_killing_the_child() -> Result<Completion, libtest_mimic::Failed> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(dialer::survives_killing_the_child());
    Ok(Completion::Completed)
}

#[cfg(feature = "child-stdio")]
mod dialer {
    use std::process::Command;
    use std::time::Duration;

    use backedpipe::dial::ChildDialer;
    use backedpipe::server::{Listener, ServerOptions};
    use backedpipe::{BackedPipe, PipeState};
    use tokio::io::AsyncWriteExt;
    use tokio::net::UnixListener;

    use super::BRIDGE_SOCKET_ENV;
    use crate::common::net::{TempDir, expect_pattern, send_pattern};
    use crate::common::{self, within};

    pub(crate) async fn survives_killing_the_child() {
        let dir = TempDir::new("stdio");
        let path = dir.0.join("server.sock");
        let options = ServerOptions::new().pipe(common::options());
        let listener = Listener::unix(UnixListener::bind(&path).unwrap(), options);

        let this_binary = std::env::current_exe().expect("the test binary's path");
        let socket = path.clone();
        let dialer = ChildDialer::new(move || {
            let mut command = Command::new(&this_binary);
            command.env(BRIDGE_SOCKET_ENV, &socket);
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
        let stats = control.stats();
        assert!(stats.reconnects >= kills, "{stats:?}");
        // A child's stdout and stdin are the connection's independent halves.
        assert!(stats.independent_halves > stats.reconnects && stats.shared_halves == 0, "{stats:?}");
        assert!(listener.stats().resumes_routed >= kills);
        drop(halves);
        control.close();
        // The last child ends with the pipe (its stdin closes, the bridge
        // exits).
        if let Some(child) = dialer.last_child() {
            within(10, "last child ends", child.close()).await.expect("reaped");
        }
    }
}

/// The bridge: connects to a Unix socket and copies its stdin to the
/// socket and the socket to its stdout until either side ends.
mod bridge {
    use std::io::{self, Read, Write};
    use std::os::unix::net::UnixStream;
    use std::process::ExitCode;

    use super::OsStr;

    fn copy(mut from: impl Read, mut to: impl Write) -> io::Result<()> {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let count = from.read(&mut buf)?;
            if count == 0 {
                return Ok(());
            }
            to.write_all(&buf[..count])?;
            to.flush()?;
        }
    }

    pub(crate) fn run(path: &OsStr) -> ExitCode {
        let socket = match UnixStream::connect(path) {
            Ok(socket) => socket,
            Err(err) => {
                eprintln!("cannot connect to {}: {err}", path.to_string_lossy());
                return ExitCode::from(1);
            }
        };
        let Ok(reader) = socket.try_clone() else {
            return ExitCode::from(1);
        };
        std::thread::spawn(move || {
            let _ = copy(reader, io::stdout().lock());
            // The server went away: so does the transport.
            std::process::exit(0);
        });
        let _ = copy(io::stdin().lock(), &socket);
        let _ = socket.shutdown(std::net::Shutdown::Write);
        ExitCode::SUCCESS
    }
}
