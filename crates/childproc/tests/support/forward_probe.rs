//! A probe process for the forwarding test: it forwards signals to children
//! it spawns and reports on stdout what reached them, so that the test's own
//! process never installs signal handlers.
//!
//! 1. Spawns `sleep` forwarding `SIGUSR1`, raises `SIGUSR1` at itself right
//!    after the spawn, and checks the child died of it: `after-spawn: ok`.
//! 2. Spawns a shell that traps `SIGUSR2`, forwarding `SIGUSR2`; prints
//!    `ready` once the trap is set, waits for the test to send `SIGUSR2` to
//!    the probe, and checks the trap ran: `trapped: ok`.
//!
//! Any failure prints `FAIL: ...` and exits with status 1.

use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use childproc::{Child, Options, Signal};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::net::unix::pipe;

/// Bound on every wait of the probe.
const LIMIT: Duration = Duration::from_secs(20);

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            println!("FAIL: runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(probe()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            println!("FAIL: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(LIMIT, future).await.map_err(|_| format!("{what}: nothing within {LIMIT:?}"))
}

async fn probe() -> Result<(), String> {
    let mut command = Command::new("sleep");
    command.arg("30");
    let sleeper = spawn_forwarding(command, Signal::USR1)?;
    rustix::process::kill_process(rustix::process::getpid(), Signal::USR1).map_err(|err| format!("raise: {err}"))?;
    let status = bounded("the sleeper's exit", sleeper.wait()).await?.map_err(|err| err.to_string())?;
    if status.signal() != Some(Signal::USR1.as_raw()) {
        return Err(format!("the sleeper ended with {status}, not SIGUSR1"));
    }
    println!("after-spawn: ok");

    let mut command = Command::new("sh");
    command
        .args(["-c", "trap 'echo trapped; exit 3' USR2; echo ready; while :; do sleep 0.05; done"])
        .stdout(Stdio::piped());
    let trapper = spawn_forwarding(command, Signal::USR2)?;
    let mut lines = BufReader::new(trapper.take_stdout().ok_or("no stdout")?).lines();
    expect(&mut lines, "ready").await?;
    println!("ready");
    expect(&mut lines, "trapped").await?;
    let status = bounded("the trapper's exit", trapper.wait()).await?.map_err(|err| err.to_string())?;
    if status.code() != Some(3) {
        return Err(format!("the trapping child ended with {status}, not exit code 3"));
    }
    println!("trapped: ok");
    Ok(())
}

/// Spawns `command`, forwarding `signal` to it.
fn spawn_forwarding(command: Command, signal: Signal) -> Result<Child, String> {
    Child::spawn(command, Options::new().forward_signals([signal])).map_err(|err| err.to_string())
}

/// Reads the child's next line and checks it is `wanted`.
async fn expect(lines: &mut Lines<BufReader<pipe::Receiver>>, wanted: &str) -> Result<(), String> {
    match bounded("a line from the child", lines.next_line()).await? {
        Ok(Some(line)) if line == wanted => Ok(()),
        Ok(Some(line)) => Err(format!("expected {wanted:?} from the child, got {line:?}")),
        Ok(None) => Err(format!("the child's output ended before {wanted:?}")),
        Err(err) => Err(format!("reading the child's output: {err}")),
    }
}
