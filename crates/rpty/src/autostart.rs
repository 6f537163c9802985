//! Reaching the local server's socket, and starting the server in the
//! background when none is running: a new session of its own, stdio on
//! `/dev/null`, logs in the runtime directory.

use std::io;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use tokio::net::UnixStream;

use crate::paths::{RUNTIME_DIR_ENV, RuntimeDir};

/// How long a freshly started server has to open its socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a connect error means "no server is listening there".
fn no_server(err: &io::Error) -> bool {
    matches!(err.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused)
}

fn connect_error(err: io::Error, runtime: &RuntimeDir) -> anyhow::Error {
    match err.kind() {
        io::ErrorKind::PermissionDenied => anyhow!(
            "permission denied on the server socket {}: it belongs to another user, or the directory is not yours",
            runtime.socket().display()
        ),
        _ => anyhow!("cannot connect to the server socket {}: {err}", runtime.socket().display()),
    }
}

/// Connects to the running server; an error saying so when none runs.
pub(crate) async fn connect_existing(runtime: &RuntimeDir) -> Result<UnixStream> {
    match UnixStream::connect(runtime.socket()).await {
        Ok(stream) => Ok(stream),
        Err(err) if no_server(&err) => Err(NoServer.into()),
        Err(err) => Err(connect_error(err, runtime)),
    }
}

/// No server is running (for commands that do not start one).
#[derive(Debug, thiserror::Error)]
#[error("no server is running")]
pub(crate) struct NoServer;

/// Connects to the running server, starting one first when none runs.
pub(crate) async fn ensure_server(runtime: &RuntimeDir) -> Result<UnixStream> {
    match UnixStream::connect(runtime.socket()).await {
        Ok(stream) => return Ok(stream),
        Err(err) if no_server(&err) => {}
        Err(err) => return Err(connect_error(err, runtime)),
    }
    let exe = std::env::current_exe().context("cannot find the rpty program to start the server")?;
    let mut command = Command::new(exe);
    command
        .args(["serve", "--exit-when-idle"])
        .env(RUNTIME_DIR_ENV, runtime.path())
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let options = childproc::Options::new().isolation(childproc::Isolation::Session).kill_on_drop(false);
    let server = childproc::Child::spawn(command, options).context("cannot start the server")?;
    tracing::info!(pid = server.pid(), "started a server");
    let exit = server.exit_handle();
    let started = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        match UnixStream::connect(runtime.socket()).await {
            Ok(stream) => return Ok(stream),
            Err(err) if no_server(&err) => {}
            Err(err) => return Err(connect_error(err, runtime)),
        }
        if let Ok(Some(status)) = exit.try_status() {
            // Another server may have won the race to start; it is fine
            // then if its socket answers.
            if let Ok(stream) = UnixStream::connect(runtime.socket()).await {
                return Ok(stream);
            }
            bail!("the server exited at once ({status}); see {}", runtime.server_log().display());
        }
        if started.elapsed() > START_TIMEOUT {
            bail!(
                "the server did not open its socket within {}s; see {}",
                START_TIMEOUT.as_secs(),
                runtime.server_log().display()
            );
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}
