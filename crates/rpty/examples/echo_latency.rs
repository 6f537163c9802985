//! Keystroke echo latency through a pseudo-terminal, as a person at a
//! terminal feels it: the same program (`cat` on a raw terminal, which
//! writes back each byte it reads) run directly, inside tmux, and inside
//! rpty over its local socket; one byte typed at a time on the client's
//! terminal, the time until it comes back, in interleaved rounds so that
//! the machine's load falls on all alike. Prints the median and the 90th
//! percentile of each.
//!
//! Run it with `cargo xtask echo-latency` (which builds rpty in release
//! mode and installs tmux when it is missing), or
//! `cargo run --release -p rpty --example echo_latency -- [--keys N]
//! [--pause-ms MS] [RPTY]` (`MS`: how long nothing arrives before the next
//! key, default 5).

use std::error::Error;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

#[path = "support/pty.rs"]
mod pty;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// The program each contender runs: echo each byte, no line discipline.
const ECHO: &str = "stty raw -echo; echo ready; exec cat";

/// How long one echo may take before the run fails.
const ECHO_TIMEOUT: Duration = Duration::from_secs(5);

/// Rounds the keys are split into; contenders take turns each round.
const ROUNDS: usize = 10;

fn main() {
    if let Err(err) = run() {
        eprintln!("echo_latency failed: {err}");
        std::process::exit(1);
    }
}

/// A program on a pseudo-terminal of its own.
struct Terminal {
    child: Child,
    master: std::fs::File,
}

impl Terminal {
    fn spawn(command: &mut Command) -> Result<Terminal> {
        let (child, master) = pty::spawn(command, 40, 120)?;
        Ok(Terminal { child, master: std::fs::File::from(master) })
    }

    /// Reads whatever arrives within `wait`; `Ok(None)` when nothing did.
    fn read_within(&mut self, wait: Duration) -> Result<Option<Vec<u8>>> {
        let mut fds = [rustix::event::PollFd::new(&self.master, rustix::event::PollFlags::IN)];
        let timeout = rustix::event::Timespec::try_from(wait)?;
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => Ok(None),
            Ok(_) => {
                let mut buf = [0u8; 4096];
                let count = self.master.read(&mut buf)?;
                Ok(Some(buf[..count].to_vec()))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Waits until `needle` has been shown.
    fn expect(&mut self, needle: &[u8], within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Some(chunk) = self.read_within(Duration::from_millis(50))? {
                seen.extend_from_slice(&chunk);
                if seen.windows(needle.len()).any(|window| window == needle) {
                    return Ok(());
                }
            }
        }
        Err(format!("{:?} never appeared; seen: {:?}", String::from_utf8_lossy(needle), String::from_utf8_lossy(&seen))
            .into())
    }

    /// Reads until nothing more arrives for `quiet`.
    fn drain(&mut self, quiet: Duration) -> Result<()> {
        while self.read_within(quiet)?.is_some() {}
        Ok(())
    }

    /// Types `byte` and returns the time until it is echoed.
    fn echo(&mut self, byte: u8) -> Result<Duration> {
        let started = Instant::now();
        self.master.write_all(&[byte])?;
        loop {
            let left = ECHO_TIMEOUT.checked_sub(started.elapsed()).ok_or("no echo within 5 s")?;
            if let Some(chunk) = self.read_within(left)?
                && chunk.contains(&byte)
            {
                return Ok(started.elapsed());
            }
        }
    }
}

impl Terminal {
    /// Types `key` and waits for the program to exit.
    fn detach(&mut self, key: &[u8]) -> Result<()> {
        self.master.write_all(key)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                return Err("the client did not detach within 5 s".into());
            }
            // Keep reading, so that its last output never blocks it (once
            // it has exited, the terminal reads as an error: EIO).
            if self.read_within(Duration::from_millis(10)).is_err() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One way of running the echoing program, with what its client needs.
struct Contender {
    name: &'static str,
    terminal: Terminal,
    samples: Vec<Duration>,
}

fn locate_rpty() -> Result<PathBuf> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(path) = args.iter().find(|arg| !arg.starts_with("--") && arg.parse::<usize>().is_err()) {
        return Ok(PathBuf::from(path));
    }
    if let Some(path) = std::env::var_os("RPTY_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    match exe.parent().and_then(Path::parent).map(|dir| dir.join("rpty")) {
        Some(path) if path.exists() => Ok(path),
        _ => Err("cannot find the rpty binary: build it (cargo build --release -p rpty) or pass its path".into()),
    }
}

/// The number after `flag` on the command line, else `default`.
fn number_arg(flag: &str, default: u64) -> Result<u64> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().position(|arg| arg == flag) {
        Some(at) => Ok(args.get(at + 1).ok_or(format!("{flag} needs a number"))?.parse()?),
        None => Ok(default),
    }
}

fn run() -> Result<()> {
    let rpty = locate_rpty()?;
    let keys = usize::try_from(number_arg("--keys", 200)?)?;
    let pause = Duration::from_millis(number_arg("--pause-ms", 5)?);
    let dir = std::env::temp_dir().join(format!("rpty-echo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let result = measure(&rpty, &dir, keys, pause);
    let _ = Command::new("tmux").arg("-S").arg(dir.join("tmux.sock")).arg("kill-server").output();
    let _ = Command::new(&rpty).args(["kill", "--all"]).env("RPTY_RUNTIME_DIR", &dir).output();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(rpty: &Path, dir: &Path, keys: usize, pause: Duration) -> Result<()> {
    let tmux_socket = dir.join("tmux.sock");
    let tmux = |args: &[&str]| {
        let mut command = Command::new("tmux");
        command.arg("-S").arg(&tmux_socket).arg("-f").arg("/dev/null").args(args).env("TERM", "xterm-256color");
        command
    };
    let rpty_command = |args: &[&str]| {
        let mut command = Command::new(rpty);
        command.args(args).env("RPTY_RUNTIME_DIR", dir).env("TERM", "xterm-256color").env_remove("RPTY_SESSION");
        command
    };
    let status = tmux(&["new-session", "-d", "-s", "echo", "-x", "120", "-y", "40", "sh", "-c", ECHO]).status()?;
    if !status.success() {
        return Err("tmux new-session failed".into());
    }
    let status = tmux(&["set-option", "-g", "status", "off"]).status()?;
    if !status.success() {
        return Err("tmux set-option failed".into());
    }
    let output = rpty_command(&["new", "-d", "echo", "--", "sh", "-c", ECHO]).output()?;
    if !output.status.success() {
        return Err(format!("rpty new failed: {}", String::from_utf8_lossy(&output.stderr)).into());
    }

    let mut direct = Command::new("sh");
    direct.args(["-c", ECHO]);
    let mut contenders = vec![
        Contender { name: "direct (no multiplexer)", terminal: Terminal::spawn(&mut direct)?, samples: Vec::new() },
        Contender {
            name: "tmux attach",
            terminal: Terminal::spawn(&mut tmux(&["attach", "-t", "echo"]))?,
            samples: Vec::new(),
        },
        Contender {
            name: "rpty attach (local socket)",
            terminal: Terminal::spawn(&mut rpty_command(&["attach", "echo"]))?,
            samples: Vec::new(),
        },
    ];
    for contender in &mut contenders {
        contender.terminal.expect(b"ready", Duration::from_secs(30))?;
        contender.terminal.drain(Duration::from_millis(300))?;
    }
    let per_round = keys.div_ceil(ROUNDS);
    for round in 0..ROUNDS {
        for contender in &mut contenders {
            for key in 0..per_round {
                let byte = b'a' + ((round * per_round + key) % 26) as u8;
                let took = contender.terminal.echo(byte)?;
                contender.samples.push(took);
                // Let everything settle (a screen update, an
                // acknowledgement) before the next key: nothing arrives
                // for `pause` (5 ms, faster than anyone types; a person's
                // keys come 50 ms or more apart).
                contender.terminal.drain(pause)?;
            }
            contender.terminal.master.write_all(b"\r")?;
            contender.terminal.drain(Duration::from_millis(20))?;
        }
    }

    println!(
        "keystroke echo, {keys} keys each, {} ms quiet before each, {ROUNDS} interleaved rounds (ms):",
        pause.as_millis()
    );
    println!("{:<28} {:>8} {:>8} {:>8}", "", "median", "p90", "max");
    let mut medians = Vec::new();
    for contender in &mut contenders {
        contender.samples.sort();
        let at = |fraction: f64| {
            let index = ((contender.samples.len() - 1) as f64 * fraction).round() as usize;
            contender.samples[index].as_secs_f64() * 1000.0
        };
        println!("{:<28} {:>8.3} {:>8.3} {:>8.3}", contender.name, at(0.5), at(0.9), at(1.0));
        medians.push(at(0.5));
    }
    println!("rpty / tmux (medians): {:.2}", medians[2] / medians[1]);
    // Detach rather than kill the rpty client: a client that vanishes
    // keeps its connection open on the server until it expires, and with
    // it the server this run started.
    contenders[2].terminal.detach(b"\x1c")
}
