//! The whole rpty story in a few seconds, on pseudo-terminals of its own
//! (a client attaches only from a terminal): a session
//! counts lines; a client attached through a transport process sees the
//! transport killed and resumes; it detaches; the session goes on; a second
//! client attaches and sees everything; every line arrived exactly once.
//!
//! Run it with `cargo xtask demo`, or build the `rpty` binary and run
//! `cargo run -p rpty --example demo [PATH-TO-RPTY]` (by default the binary
//! next to this example's directory, or `$RPTY_BIN`).

use std::error::Error;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "support/pty.rs"]
mod pty;

/// Lines the session prints.
const LINES: usize = 1500;

/// How long any one step may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn main() {
    if let Err(err) = run() {
        eprintln!("demo failed: {err}");
        std::process::exit(1);
    }
}

/// The rpty binary: the first argument, `$RPTY_BIN`, or the one built
/// next to this example.
fn locate_rpty() -> Result<PathBuf> {
    if let Some(path) = std::env::args_os().nth(1).or_else(|| std::env::var_os("RPTY_BIN")) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let beside = exe.parent().and_then(Path::parent).map(|dir| dir.join("rpty"));
    match beside {
        Some(path) if path.exists() => Ok(path),
        _ => Err("cannot find the rpty binary: build it (cargo build -p rpty) or pass its path".into()),
    }
}

/// A client on a pseudo-terminal of its own, whose output is collected by
/// a thread.
struct Client {
    child: Child,
    stdin: std::fs::File,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Client {
    fn spawn(command: &mut Command) -> Result<Client> {
        let (child, master) = pty::spawn(command, 24, 80)?;
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut reader = std::fs::File::from(master.try_clone()?);
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            // EIO once every copy of the terminal is closed.
            while let Ok(count @ 1..) = reader.read(&mut buf) {
                sink.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(&buf[..count]);
            }
        });
        Ok(Client { child, stdin: std::fs::File::from(master), output })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    fn wait_for(&self, needle: &str) -> Result<()> {
        wait_until(&format!("{needle:?} in the client's output"), || self.text().contains(needle))
    }

    fn wait_exit(&mut self) -> Result<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                std::thread::sleep(Duration::from_millis(50));
                return Ok(status);
            }
            if started.elapsed() > STEP_TIMEOUT {
                let _ = self.child.kill();
                return Err("the client did not exit".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Sends `signal` to the process whose pid is in `pid`.
fn signal(pid: &str, signal: rustix::process::Signal) {
    if let Some(pid) = pid.trim().parse().ok().and_then(rustix::process::Pid::from_raw) {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

fn wait_until(what: &str, mut check: impl FnMut() -> bool) -> Result<()> {
    let started = Instant::now();
    while !check() {
        if started.elapsed() > STEP_TIMEOUT {
            return Err(format!("timed out waiting for {what}").into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// `text` without the repaints of the screen the server sends when the
/// connection is back (they redraw lines already shown): from their
/// prelude to the cursor's visibility, their last setting (the session
/// here sets no title). The first repaint, the one that restores the
/// screen on attaching (its history included), is kept.
fn without_repaints(text: &str) -> String {
    const PRELUDE: &str = "\x1b[?1049l\x1b[r\x1b[?6l";
    let first_end = text.find(PRELUDE).map_or(0, |at| at + PRELUDE.len());
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..first_end]);
    let mut rest = &text[first_end..];
    while let Some(at) = rest.find(PRELUDE) {
        out.push_str(&rest[..at]);
        let end = rest[at..].find(" q\x1b[?25").map_or(rest.len(), |end| at + end + " q\x1b[?25h".len());
        rest = &rest[end.min(rest.len())..];
    }
    out.push_str(rest);
    out
}

/// `text` without the terminal's control sequences, without the repaints
/// after a reconnection, and without what the client drew between saving
/// and restoring the cursor (its status line while the connection is down;
/// the session here never does that).
fn plain(text: &str) -> String {
    let text = without_repaints(text);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut saved = false;
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            if !saved {
                out.push(c);
            }
            continue;
        }
        match chars.next() {
            Some('7') => saved = true,
            Some('8') => saved = false,
            // Parameters and intermediates, then the final byte.
            Some('[') => {
                while chars.next_if(|c| !('@'..='~').contains(c)).is_some() {}
                chars.next();
            }
            _ => {}
        }
    }
    out
}

/// The numbers of the `line N` lines in `text`, in order.
fn numbers(text: &str) -> Vec<usize> {
    plain(text).split(['\r', '\n']).filter_map(|line| line.strip_prefix("line ")?.parse().ok()).collect()
}

/// The client's closing message: its last line that starts with `rpty: `.
fn message_of(text: &str) -> String {
    let plain = plain(text);
    plain
        .lines()
        .rev()
        .find_map(|line| line.trim().strip_prefix("rpty: ").map(|rest| format!("rpty: {rest}")))
        .unwrap_or_else(|| "(no message)".to_owned())
}

fn last_line_number(text: &str) -> usize {
    numbers(text).last().copied().unwrap_or(0)
}

fn run() -> Result<()> {
    let rpty = locate_rpty()?;
    let dir = std::env::temp_dir().join(format!("rpty-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let result = story(&rpty, &dir);
    // The server ends with its last session; make sure of it either way.
    if let Ok(pid) = std::fs::read_to_string(dir.join("server.pid")) {
        signal(&pid, rustix::process::Signal::TERM);
    }
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn story(rpty: &Path, dir: &Path) -> Result<()> {
    let started = Instant::now();
    let command = |args: &[&str]| {
        let mut command = Command::new(rpty);
        command.args(args).env("RPTY_RUNTIME_DIR", dir).env("SHELL", "/bin/sh").env_remove("RPTY_SESSION");
        command
    };
    println!("rpty demo, runtime directory {}", dir.display());

    let counter = format!(
        "i=1; while [ $i -le {LINES} ]; do echo line $i; i=$((i+1)); \
         if [ $((i % 10)) -eq 0 ]; then sleep 0.01; fi; done"
    );
    println!("\n$ rpty new -d demo -- sh -c '<print line 1 .. line {LINES}, a few per 10 ms>'");
    let output = command(&["new", "-d", "demo", "--", "sh", "-c", &counter]).output()?;
    if !output.status.success() {
        return Err(format!("rpty new failed: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    print!("  {}", String::from_utf8_lossy(&output.stderr));

    let pids = dir.join("transport.pids");
    let via = format!("echo $$ >> {}; exec {} bridge", pids.display(), rpty.display());
    println!("\n$ rpty attach --via '<a transport process running rpty bridge>' demo");
    let mut first = Client::spawn(&mut command(&["attach", "--via", &via, "demo"]))?;
    first.wait_for("line 150\r\n")?;
    let transport = std::fs::read_to_string(&pids)?.trim().to_owned();
    println!("  receiving output: line 1 .. line {}", last_line_number(&first.text()));

    signal(&transport, rustix::process::Signal::KILL);
    let at_cut = last_line_number(&first.text());
    println!("  connection cut: killed the transport process {transport} at line {at_cut}");
    wait_until("a new transport", || std::fs::read_to_string(&pids).is_ok_and(|text| text.lines().count() >= 2))?;
    let resumed = at_cut + 200;
    first.wait_for(&format!("line {resumed}\r\n"))?;
    let new_transport = std::fs::read_to_string(&pids)?.lines().last().unwrap_or_default().to_owned();
    println!("  resumed over a new transport process {new_transport}; output goes on: line {resumed} arrived");

    first.stdin.write_all(&[0x1c])?;
    first.stdin.flush()?;
    let status = first.wait_exit()?;
    let text = first.text();
    let message = message_of(&text);
    println!("  sent the detach key (Ctrl-\\): exit status {}, {message}", status.code().unwrap_or(-1));
    let seen = numbers(&text);
    let contiguous = seen.iter().copied().eq(1..=seen.len());
    println!(
        "  this client saw line 1 .. line {} across the cut: {}",
        seen.len(),
        if contiguous { "no gap, no repeat" } else { "DAMAGED" }
    );
    if !contiguous || !status.success() {
        return Err("the first client's output is not intact".into());
    }

    println!("\n$ rpty ls");
    let listing = command(&["ls"]).output()?;
    for line in String::from_utf8_lossy(&listing.stdout).lines() {
        println!("  {line}");
    }

    println!("\n$ rpty attach demo");
    let mut second = Client::spawn(&mut command(&["attach", "demo"]))?;
    let status = second.wait_exit()?;
    let text = second.text();
    let seen = numbers(&text);
    let intact = seen.iter().copied().eq(1..=LINES);
    let message = message_of(&text);
    println!("  scrollback, then live output, then: {message} (exit status {})", status.code().unwrap_or(-1));
    println!(
        "  this client saw {} lines: {}",
        seen.len(),
        if intact { format!("line 1 .. line {LINES}, each exactly once, in order") } else { "DAMAGED".into() }
    );
    if !intact || !status.success() {
        return Err("the second client's output is not intact".into());
    }

    wait_until("the server to exit with its last session", || !dir.join("server.sock").exists())?;
    println!("\nthe last session ended, and the server with it; all in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
