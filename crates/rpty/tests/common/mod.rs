//! Helpers shared by the end-to-end tests: a [`Sandbox`] (an isolated
//! runtime directory whose server is stopped at the end), a foreground
//! server listening on TCP too ([`serve`]) and a [`Term`]
//! (a pseudo-terminal running the real `rpty` binary, typed into and read
//! as a person would).

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};
use rustix::pty::OpenptFlags;
use rustix::termios::{self, LocalModes, Termios, Winsize};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_rpty");

/// The longest any single step may take (a loaded 2-core machine runs
/// several test binaries at once).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Rows and columns of every test terminal.
pub const ROWS: u16 = 24;
pub const COLS: u16 = 80;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// An isolated runtime directory. Dropping it stops its server (if one
/// runs) and removes the directory.
pub struct Sandbox {
    pub dir: PathBuf,
}

impl Sandbox {
    pub fn new(name: &str) -> Sandbox {
        let unique = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("rpty-t-{}-{unique}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        Sandbox { dir }
    }

    /// `rpty ARGS` with this sandbox's environment.
    pub fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env("RPTY_RUNTIME_DIR", &self.dir)
            .env("SHELL", "/bin/sh")
            .env("PS1", "$ ")
            .env("TERM", "xterm-256color")
            .env("RPTY_LOG", "debug")
            .env_remove("RPTY_SESSION")
            .env_remove("ENV");
        command
    }

    /// Runs `rpty ARGS` to completion (bounded) and returns its output.
    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Output {
        let mut command = self.command(args);
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            if child.try_wait().unwrap().is_some() {
                return child.wait_with_output().unwrap();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let output = child.wait_with_output().unwrap();
                panic!("rpty {:?} did not finish: {}", command.get_args().collect::<Vec<_>>(), describe(&output));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `rpty ls`'s standard output.
    pub fn ls(&self) -> String {
        let output = self.run(&["ls"]);
        assert!(output.status.success(), "rpty ls failed: {}", describe(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Waits until `rpty ls` satisfies `check`.
    pub fn wait_ls(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let listing = self.ls();
            if check(&listing) {
                return listing;
            }
            assert!(Instant::now() < deadline, "rpty ls never showed {what}; last:\n{listing}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The running server's pid, from its pid file.
    pub fn server_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("server.pid")).ok()?.trim().parse().ok()
    }

    /// Waits until the process `pid` is gone (or a zombie).
    pub fn wait_gone(pid: i32, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !alive(pid) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Sends `signal` to the server.
    pub fn signal_server(&self, signal: rustix::process::Signal) {
        let pid = self.server_pid().expect("a server is running");
        let _ = rustix::process::kill_process(rustix::process::Pid::from_raw(pid).unwrap(), signal);
    }

    /// The server's log, for failure messages.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(pid) = self.server_pid().and_then(rustix::process::Pid::from_raw) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            if !Sandbox::wait_gone(pid.as_raw_nonzero().get(), Duration::from_secs(10)) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A foreground `rpty serve`, stopped with SIGTERM when dropped.
pub struct Served {
    child: Child,
}

impl Drop for Served {
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        for _ in 0..500 {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `rpty serve --listen 127.0.0.1:0` in `sandbox` and returns it
/// with the address it listens on.
pub fn serve(sandbox: &Sandbox) -> (Served, String) {
    let mut command = sandbox.command(&["serve", "--listen", "127.0.0.1:0"]);
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let served = Served { child };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(STEP_TIMEOUT).expect("rpty serve says where it listens");
    let addr = line
        .split_whitespace()
        .find(|word| word.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .trim_end_matches(';')
        .to_owned();
    (served, addr)
}

/// Starts `rpty serve ARGS` in `sandbox` and waits until it listens on
/// its socket.
pub fn serve_local(sandbox: &Sandbox, args: &[&str]) -> Served {
    let mut all = vec!["serve"];
    all.extend_from_slice(args);
    let mut command = sandbox.command(&all);
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let served = Served { child: command.spawn().unwrap() };
    let deadline = Instant::now() + STEP_TIMEOUT;
    while sandbox.server_pid().is_none() || !sandbox.dir.join("server.sock").exists() {
        assert!(Instant::now() < deadline, "rpty serve never listened");
        std::thread::sleep(Duration::from_millis(10));
    }
    served
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

pub fn describe(output: &Output) -> String {
    format!(
        "{}; stdout: {:?}; stderr: {:?}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A pseudo-terminal with the real `rpty` binary on it, as a person at a
/// terminal would run it.
pub struct Term {
    master: Arc<OwnedFd>,
    child: Child,
    screen: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    /// The terminal's settings before rpty touched them.
    pub original: Termios,
}

impl Term {
    /// Runs `rpty ARGS` on a new 24×80 terminal.
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(sandbox: &Sandbox, args: &[S]) -> Term {
        Term::spawn_command(sandbox.command(args), &[])
    }

    fn spawn_command(mut command: Command, env: &[(&str, &str)]) -> Term {
        let master = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
        rustix::pty::grantpt(&master).unwrap();
        rustix::pty::unlockpt(&master).unwrap();
        let name = rustix::pty::ptsname(&master, Vec::new()).unwrap();
        let slave =
            rustix::fs::open(name.as_c_str(), OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC, Mode::empty()).unwrap();
        termios::tcsetwinsize(&master, Winsize { ws_row: ROWS, ws_col: COLS, ws_xpixel: 0, ws_ypixel: 0 }).unwrap();
        let original = termios::tcgetattr(&slave).unwrap();
        assert!(original.local_modes.contains(LocalModes::ICANON), "a new terminal starts in canonical mode");
        command.envs(env.iter().copied());
        command
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        let child = command.spawn().unwrap();
        // The command holds copies of the terminal: drop them now so that
        // the end of output is seen.
        drop(command);
        let master = Arc::new(master);
        let screen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let reader = {
            let (master, screen, stop, paused) = (master.clone(), screen.clone(), stop.clone(), paused.clone());
            std::thread::spawn(move || read_terminal(&master, &screen, &stop, &paused))
        };
        Term { master, child, screen, stop, paused, reader: Some(reader), original }
    }

    /// Runs `rpty ARGS` on a terminal to its end; returns its status and
    /// everything it showed.
    pub fn run<S: AsRef<std::ffi::OsStr>>(sandbox: &Sandbox, args: &[S]) -> (ExitStatus, String) {
        let mut term = Term::spawn(sandbox, args);
        let status = term.wait_exit();
        (status, term.text())
    }

    /// As [`Term::spawn`], with `name=value` added to the environment.
    pub fn spawn_with_env<S: AsRef<std::ffi::OsStr>>(sandbox: &Sandbox, args: &[S], env: &[(&str, &str)]) -> Term {
        Term::spawn_command(sandbox.command(args), env)
    }

    /// As [`Term::spawn`], with the terminal as rpty's controlling
    /// terminal (rpty leads a new session), as in a person's terminal
    /// window: `/dev/tty` is the terminal then, for programs that ask.
    pub fn spawn_controlling<S: AsRef<std::ffi::OsStr>>(sandbox: &Sandbox, args: &[S]) -> Term {
        use std::os::unix::process::CommandExt;
        let mut command = sandbox.command(args);
        // SAFETY: the hook runs in the child between fork and exec and
        // only makes two system calls (no allocation, no lock), which is
        // async-signal-safe; standard input is the terminal by then.
        unsafe {
            command.pre_exec(|| {
                rustix::process::setsid()?;
                rustix::process::ioctl_tiocsctty(std::io::stdin())?;
                Ok(())
            });
        }
        Term::spawn_command(command, &[])
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Types `text`.
    pub fn send(&self, text: impl AsRef<[u8]>) {
        let mut data = text.as_ref();
        while !data.is_empty() {
            match rustix::io::write(self.master.as_fd(), data) {
                Ok(written) => data = &data[written..],
                Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => std::thread::sleep(Duration::from_millis(1)),
                Err(err) => panic!("typing failed: {err}"),
            }
        }
    }

    /// Stops or resumes reading the terminal (a terminal that cannot keep
    /// up with the output).
    pub fn pause_reading(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    /// Changes the terminal's size (as a window manager would; the kernel
    /// signals only a controlling process, so tests send `SIGWINCH`
    /// themselves).
    pub fn resize(&self, rows: u16, cols: u16) {
        termios::tcsetwinsize(self.master.as_fd(), Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 })
            .unwrap();
    }

    /// Everything written to the terminal so far.
    pub fn output(&self) -> Vec<u8> {
        self.screen.lock().unwrap().clone()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output()).into_owned()
    }

    /// Waits until `needle` appears in the output after byte `from`;
    /// returns where it ends.
    pub fn wait_for_after(&self, needle: &str, from: usize) -> usize {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let output = self.output();
            if let Some(at) = find(&output[from.min(output.len())..], needle.as_bytes()) {
                return from + at + needle.len();
            }
            assert!(Instant::now() < deadline, "{needle:?} never appeared; the terminal shows:\n{}", self.text());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn wait_for(&self, needle: &str) -> usize {
        self.wait_for_after(needle, 0)
    }

    /// The terminal's current settings.
    pub fn termios(&self) -> Termios {
        termios::tcgetattr(self.master.as_fd()).unwrap()
    }

    /// Waits until rpty has put the terminal in raw mode.
    pub fn wait_raw(&self) {
        let deadline = Instant::now() + STEP_TIMEOUT;
        while self.termios().local_modes.contains(LocalModes::ICANON) {
            assert!(Instant::now() < deadline, "the terminal never went raw; it shows:\n{}", self.text());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the settings are back to what they were before rpty ran.
    pub fn assert_restored(&self) {
        let now = self.termios();
        let before = &self.original;
        assert_eq!(now.local_modes, before.local_modes, "local modes not restored");
        assert_eq!(now.input_modes, before.input_modes, "input modes not restored");
        assert_eq!(now.output_modes, before.output_modes, "output modes not restored");
        assert_eq!(now.control_modes, before.control_modes, "control modes not restored");
    }

    /// Waits for rpty to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader take the last bytes.
                std::thread::sleep(Duration::from_millis(50));
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("rpty did not exit; the terminal shows:\n{}", self.text());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.stop.store(true, Ordering::SeqCst);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn read_terminal(master: &OwnedFd, screen: &Mutex<Vec<u8>>, stop: &AtomicBool, paused: &AtomicBool) {
    let mut buf = [0u8; 16 * 1024];
    let mut file = std::fs::File::from(master.try_clone().unwrap());
    while !stop.load(Ordering::SeqCst) {
        if paused.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let mut fds = [rustix::event::PollFd::new(&file, rustix::event::PollFlags::IN)];
        let timeout = rustix::event::Timespec { tv_sec: 0, tv_nsec: 50_000_000 };
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => {}
            Err(_) => return,
        }
        match file.read(&mut buf) {
            Ok(0) => return,
            Ok(count) => screen.lock().unwrap().extend_from_slice(&buf[..count]),
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            // EIO: every copy of the terminal is closed. Keep polling
            // quietly until told to stop (a new process cannot appear).
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// Waits until `path` exists and holds at least `lines` lines; returns
/// its last line.
pub fn wait_lines(path: &Path, lines: usize) -> String {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= lines {
            return text.lines().last().unwrap_or_default().to_owned();
        }
        assert!(Instant::now() < deadline, "{} never had {lines} lines", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What a terminal shows after `output`: its rows as text, trailing blanks
/// trimmed. `sizes` lists where in the output the terminal took a size
/// (the first at 0).
pub fn screen_rows(output: &[u8], sizes: &[(usize, u16, u16)]) -> Vec<String> {
    use alacritty_terminal::event::VoidListener;
    use alacritty_terminal::grid::Dimensions;
    use alacritty_terminal::index::{Column, Line};
    use alacritty_terminal::term::cell::Flags;
    use alacritty_terminal::term::{Config, Term};
    use alacritty_terminal::vte::ansi::Processor;

    struct Size(u16, u16);
    impl Dimensions for Size {
        fn total_lines(&self) -> usize {
            usize::from(self.0)
        }
        fn screen_lines(&self) -> usize {
            usize::from(self.0)
        }
        fn columns(&self) -> usize {
            usize::from(self.1)
        }
    }

    let (_, rows, cols) = sizes[0];
    let mut term = Term::new(Config::default(), &Size(rows, cols), VoidListener);
    let mut parser: Processor = Processor::new();
    let mut fed = 0;
    for &(at, rows, cols) in &sizes[1..] {
        parser.advance(&mut term, &output[fed..at]);
        term.resize(Size(rows, cols));
        fed = at;
    }
    parser.advance(&mut term, &output[fed..]);
    let grid = term.grid();
    (0..grid.screen_lines() as i32)
        .map(|line| {
            let row = &grid[Line(line)];
            let text: String = (0..grid.columns())
                .filter(|&col| !row[Column(col)].flags.contains(Flags::WIDE_CHAR_SPACER))
                .map(|col| row[Column(col)].c)
                .collect();
            text.trim_end().to_owned()
        })
        .collect()
}
