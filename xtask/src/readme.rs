//! The README's quick-start commands, run literally as a new user runs them.
//!
//! The first `sh` block of README.md is read line by line. Each line runs
//! through `sh -c` exactly as written (its comment included), in a runtime
//! directory of its own (`RPTY_RUNTIME_DIR`), so nothing touches the
//! sessions of whoever runs CI. Commands that attach run under a
//! pseudo-terminal made by util-linux's `script`, and are driven like a
//! person would: type a line, read its output, press the detach key, or end
//! the shell. A line this step does not know how to check fails the step,
//! so README and CI cannot drift apart.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::run;

/// How long one command may take to show what is expected of it.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// What a line of the quick start asks for.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// `cargo run ... -- new NAME`: a session that is attached at once.
    New { name: String },
    /// `cargo run ... -- ls`: the listing.
    List,
    /// `cargo run ... -- attach NAME`: back into a session.
    Attach { name: String },
    /// `cargo xtask ci`: what is running this step.
    Ci,
}

/// The prefix every rpty line of the quick start has: the release binary
/// built from the `rpty` package alone.
const RPTY_PREFIX: &str = "cargo run --release -p rpty -- ";

/// Runs the quick start of README.md against the binary a user gets.
pub(crate) fn quick_start() -> Result<(), String> {
    let root = run::workspace_root();
    let text = std::fs::read_to_string(root.join("README.md")).map_err(|err| format!("reading README.md: {err}"))?;
    let commands = first_sh_block(&text).ok_or("README.md has no ```sh block")?;
    let lines: Vec<(String, Line)> =
        commands.iter().map(|command| Ok((command.clone(), classify(command)?))).collect::<Result<_, String>>()?;
    if !lines.iter().any(|(_, line)| matches!(line, Line::New { .. })) {
        return Err("README's quick start never starts a session (`rpty new`)".into());
    }
    if !lines.iter().any(|(_, line)| *line == Line::Ci) {
        return Err("README's quick start does not show the test command `cargo xtask ci`".into());
    }

    let runtime = std::env::temp_dir().join(format!("rpty-readme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&runtime);
    let result = run_lines(&root, &runtime, &lines);
    let cleanup = stop_server(&runtime);
    let _ = std::fs::remove_dir_all(&runtime);
    result.and(cleanup)
}

/// Runs each line in order; the last attach ends its session's shell.
fn run_lines(root: &Path, runtime: &Path, lines: &[(String, Line)]) -> Result<(), String> {
    let marker = format!("readme-{}", std::process::id());
    let last_attach = lines.iter().rposition(|(_, line)| matches!(line, Line::Attach { .. }));
    let mut sessions: Vec<String> = Vec::new();
    for (index, (command, line)) in lines.iter().enumerate() {
        println!("xtask: README: {command}");
        match line {
            Line::Ci => println!("xtask: README: (this is the command running now)"),
            Line::New { name } => {
                let mut terminal = Terminal::spawn(root, runtime, command)?;
                // The shell computes the number, so only its output matches.
                terminal.type_text(&format!("echo {marker}-{name}-$((6*7))\r"))?;
                terminal.expect(&format!("{marker}-{name}-42"))?;
                terminal.type_text("\x1c")?; // the default detach key, Ctrl-\
                terminal.expect_exit_success()?;
                sessions.push(name.clone());
            }
            Line::List => {
                let output = shell(root, runtime, command)?;
                for name in &sessions {
                    if !output.lines().any(|row| row.split_whitespace().next() == Some(name)) {
                        return Err(format!("`{command}` does not list session {name}:\n{output}"));
                    }
                }
            }
            Line::Attach { name } => {
                if !sessions.contains(name) {
                    return Err(format!("`{command}` attaches to {name}, which no earlier line started"));
                }
                let mut terminal = Terminal::spawn(root, runtime, command)?;
                // What the session printed before the detach comes back.
                terminal.expect(&format!("{marker}-{name}-42"))?;
                if Some(index) == last_attach {
                    // Ending the shell ends the session, the server with its
                    // last session, and the client with the shell's status.
                    terminal.type_text("exit\r")?;
                    sessions.retain(|session| session != name);
                } else {
                    terminal.type_text("\x1c")?;
                }
                terminal.expect_exit_success()?;
            }
        }
    }
    Ok(())
}

/// The lines of the first ```sh block, without comment-only lines.
fn first_sh_block(text: &str) -> Option<Vec<String>> {
    let mut lines = text.lines().skip_while(|line| line.trim() != "```sh").skip(1);
    let mut commands = Vec::new();
    for line in lines.by_ref() {
        let line = line.trim();
        if line == "```" {
            return Some(commands);
        }
        if !line.is_empty() && !line.starts_with('#') {
            commands.push(line.to_owned());
        }
    }
    None
}

/// What `command` asks for, or why this step cannot check it.
fn classify(command: &str) -> Result<Line, String> {
    let words: Vec<&str> = command.split('#').next().unwrap_or_default().split_whitespace().collect();
    if words == ["cargo", "xtask", "ci"] {
        return Ok(Line::Ci);
    }
    let prefix: Vec<&str> = RPTY_PREFIX.split_whitespace().collect();
    let unknown = || format!("README command `{command}` is not one the quick-start check knows (xtask/src/readme.rs)");
    let Some(args) = words.strip_prefix(prefix.as_slice()) else {
        return Err(unknown());
    };
    match args {
        ["new", name] => Ok(Line::New { name: (*name).to_owned() }),
        ["ls"] => Ok(Line::List),
        ["attach", name] => Ok(Line::Attach { name: (*name).to_owned() }),
        _ => Err(unknown()),
    }
}

/// The environment every command runs in.
fn environment(command: &mut Command, runtime: &Path) {
    command.env("RPTY_RUNTIME_DIR", runtime).env("SHELL", "/bin/sh").env("TERM", "xterm-256color");
}

/// Runs `command` through `sh -c` without a terminal and returns its
/// standard output; fails unless it exits successfully in time.
fn shell(root: &Path, runtime: &Path, command: &str) -> Result<String, String> {
    let mut shell = Command::new("sh");
    shell.args(["-c", command]).current_dir(root).stdin(Stdio::null()).stdout(Stdio::piped());
    environment(&mut shell, runtime);
    let child = shell.spawn().map_err(|err| format!("cannot run sh: {err}"))?;
    let output = wait_output(child)?;
    if !output.status.success() {
        return Err(format!("`{command}` failed ({})", output.status));
    }
    String::from_utf8(output.stdout).map_err(|_| format!("`{command}` printed invalid UTF-8"))
}

/// Waits for `child` with [`STEP_TIMEOUT`], killing it when it overruns.
fn wait_output(mut child: Child) -> Result<std::process::Output, String> {
    let mut stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(stdout) = stdout.as_mut() {
            let _ = stdout.read_to_end(&mut bytes);
        }
        bytes
    });
    let status = wait_with_deadline(&mut child, Instant::now() + STEP_TIMEOUT)?;
    let stdout = reader.join().map_err(|_| "output reader panicked".to_owned())?;
    Ok(std::process::Output { status, stdout, stderr: Vec::new() })
}

/// Waits for `child` until `deadline`; past it, kills it and fails.
fn wait_with_deadline(child: &mut Child, deadline: Instant) -> Result<ExitStatus, String> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("did not finish within {STEP_TIMEOUT:?}"));
            }
            Err(err) => return Err(format!("waiting: {err}")),
        }
    }
}

/// A command running under a pseudo-terminal (util-linux `script`), its
/// output collected by a thread.
struct Terminal {
    command: String,
    child: Child,
    stdin: Option<ChildStdin>,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Terminal {
    /// Starts `command` on a fresh 24x80 terminal.
    fn spawn(root: &Path, runtime: &Path, command: &str) -> Result<Terminal, String> {
        let inner = format!("stty rows 24 cols 80; {command}");
        let mut script = Command::new(script_program()?);
        script
            .args(["--quiet", "--flush", "--return", "--command", &inner, "/dev/null"])
            .current_dir(root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        environment(&mut script, runtime);
        let mut child = script.spawn().map_err(|err| format!("cannot run script: {err}"))?;
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().ok_or("script has no stdout")?;
        let output = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&output);
        std::thread::spawn(move || {
            let mut buffer = [0; 8192];
            while let Ok(count @ 1..) = stdout.read(&mut buffer) {
                sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(&buffer[..count]);
            }
        });
        Ok(Terminal { command: command.to_owned(), child, stdin, output })
    }

    /// Types `text` into the terminal.
    fn type_text(&mut self, text: &str) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("the terminal's input is closed")?;
        stdin.write_all(text.as_bytes()).and_then(|()| stdin.flush()).map_err(|err| format!("typing: {err}"))
    }

    /// Waits until the terminal has shown `needle`.
    fn expect(&mut self, needle: &str) -> Result<(), String> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let shown = self.shown();
            if shown.contains(needle) {
                return Ok(());
            }
            if Instant::now() >= deadline || matches!(self.child.try_wait(), Ok(Some(_))) {
                self.end();
                return Err(format!(
                    "`{}` never showed {needle:?}; the terminal showed:\n{}",
                    self.command,
                    tail(&shown, 2000)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the command exits, and fails unless it succeeded.
    fn expect_exit_success(&mut self) -> Result<(), String> {
        let status = wait_with_deadline(&mut self.child, Instant::now() + STEP_TIMEOUT)
            .map_err(|err| format!("`{}` {err}; it showed:\n{}", self.command, tail(&self.shown(), 2000)))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("`{}` exited with {status}; it showed:\n{}", self.command, tail(&self.shown(), 2000)))
        }
    }

    fn shown(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap_or_else(std::sync::PoisonError::into_inner)).into_owned()
    }

    fn end(&mut self) {
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.end();
        }
    }
}

/// util-linux's `script`, installed from Debian's packages when missing.
fn script_program() -> Result<PathBuf, String> {
    let found = || ["/usr/bin/script", "/bin/script"].iter().map(PathBuf::from).find(|path| path.exists());
    if let Some(path) = found() {
        return Ok(path);
    }
    crate::tools::ensure_debian_package("bsdutils")?;
    found().ok_or_else(|| "util-linux `script` is still missing after installing bsdutils".to_owned())
}

/// The last `limit` characters of `text`.
fn tail(text: &str, limit: usize) -> &str {
    let start = text.len().saturating_sub(limit);
    let start = (start..=text.len()).find(|&index| text.is_char_boundary(index)).unwrap_or(text.len());
    &text[start..]
}

/// Waits for the server started in `runtime` to end with its last session;
/// a server still running after that is stopped (it was started by this
/// step, in its own runtime directory) and the step fails.
fn stop_server(runtime: &Path) -> Result<(), String> {
    let Ok(text) = std::fs::read_to_string(runtime.join("server.pid")) else {
        return Ok(());
    };
    let Ok(pid) = text.trim().parse::<u32>() else {
        return Ok(());
    };
    let alive = || Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid);
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if !alive() {
        return Ok(());
    }
    let _ = Command::new("kill").arg(pid.to_string()).status();
    Err(format!("the rpty server (pid {pid}) was still running after its last session ended; it was stopped"))
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::{Line, classify, first_sh_block};

    #[test]
    fn reads_the_first_sh_block_without_comment_lines() {
        let text = "# title\n\n```sh\ncargo run --release -p rpty -- new demo  # start\n#   a note\n\ncargo xtask ci\n```\n\n```sh\nother\n```\n";
        let block = first_sh_block(text).expect("a block");
        assert_eq!(block, ["cargo run --release -p rpty -- new demo  # start", "cargo xtask ci"]);
        assert_eq!(first_sh_block("```sh\nunterminated\n"), None);
    }

    #[test]
    fn classifies_the_quick_start_lines_and_refuses_the_rest() {
        assert_eq!(
            classify("cargo run --release -p rpty -- new demo   # a shell"),
            Ok(Line::New { name: "demo".into() })
        );
        assert_eq!(classify("cargo run --release -p rpty -- ls"), Ok(Line::List));
        assert_eq!(classify("cargo run --release -p rpty -- attach x"), Ok(Line::Attach { name: "x".into() }));
        assert_eq!(classify("cargo xtask ci   # everything"), Ok(Line::Ci));
        assert!(classify("cargo run -p rpty -- new demo").is_err(), "a debug build is not what the README promises");
        assert!(classify("cargo run --release -p rpty -- frobnicate").is_err());
    }
}
