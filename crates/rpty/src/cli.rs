//! The command line: the subcommands and their options (clap), and
//! [`run`], which carries one out and turns every failure into a one-line
//! message and an exit code.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{ArgGroup, Args, CommandFactory, Parser, Subcommand};

use crate::autostart::NoServer;
use crate::client::{self, AttachOptions, Redraw};
use crate::keys::DetachKey;
use crate::paths::RuntimeDir;
use crate::protocol::{self, ClientHello, NewSession, Request, Response, Restore};
use crate::server::{self, ServeConfig};
use crate::transport::Target;
use crate::{logging, secret, terminal};

/// Terminal sessions that survive detaching and broken connections.
///
/// `rpty new demo` starts a session and attaches to it; the detach key
/// (Ctrl-\ by default) leaves it running; `rpty attach demo` comes back.
/// The server starts on demand and ends with its last session. A broken
/// connection resumes by itself, with nothing lost or repeated.
#[derive(Debug, Parser)]
#[command(
    name = "rpty",
    version,
    propagate_version = true,
    after_help = "Environment:\n  \
        RPTY_DETACH_KEY    the default detach key (ctrl-\\)\n  \
        RPTY_LINK_TIMEOUT  how soon a dead link is seen, e.g. 3s (the default) or 10s\n  \
        RPTY_RUNTIME_DIR   where the server's socket, lock and logs are\n  \
        RPTY_LOG           what the logs in the runtime directory keep, e.g. debug"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a session and attach to it (the server starts on demand)
    New(NewArgs),
    /// Attach to a session: its scrollback, then the live session
    Attach(AttachArgs),
    /// List the sessions: name, command, clients, age, state, exit status
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// End a session: its processes get SIGHUP, then SIGKILL
    Kill(KillArgs),
    /// Give a session another name
    Rename(RenameArgs),
    /// Type into a session without attaching: TEXT as written, or standard input with -
    Send(SendArgs),
    /// Print a session's screen as text without attaching
    Capture(CaptureArgs),
    /// Print a completion script for a shell (bash, zsh, fish, elvish, powershell)
    Completions(CompletionsArgs),
    /// Print the manual page (roff), e.g. rpty man | man -l -
    Man,
    /// Run the server in the foreground, until interrupted
    ///
    /// The server also starts by itself when a client needs it, and then ends
    /// with its last session. SIGTERM or Ctrl-C ends the server and its
    /// sessions. SIGUSR1 drops every client connection; the clients resume
    /// at once, with nothing lost (a way to watch resumption work).
    Serve(ServeArgs),
    /// Join standard input and output to the local server (the far end of --via)
    Bridge,
}

/// How to reach the server (default: the local one).
#[derive(Debug, Clone, Args)]
struct ConnectArgs {
    /// Reach the server through COMMAND's stdin and stdout, e.g. 'ssh host rpty bridge'
    #[arg(long, value_name = "COMMAND", conflicts_with = "connect")]
    via: Option<String>,
    /// Reach a server listening on TCP (rpty serve --listen)
    #[arg(long, value_name = "HOST:PORT")]
    connect: Option<String>,
    /// A copy of that server's secret file, for --connect
    #[arg(long, value_name = "FILE", requires = "connect")]
    secret_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
struct KeyArgs {
    /// The key that detaches: ctrl-X, ^X or none
    #[arg(long, value_name = "KEY", env = "RPTY_DETACH_KEY", default_value = "ctrl-\\")]
    detach_key: DetachKey,
}

#[derive(Debug, Args)]
struct NewArgs {
    /// The session's name (default: the lowest free number)
    name: Option<String>,
    /// The command to run, after `--` (default: $SHELL, else /bin/sh)
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
    /// Start the session without attaching to it
    #[arg(short, long)]
    detached: bool,
    /// Attach to the session NAME if it exists already, else start it
    #[arg(short = 'A', long, requires = "name", conflicts_with = "detached")]
    attach_existing: bool,
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Args)]
struct AttachArgs {
    /// The session's name (see rpty ls; default: the one created, attached to or detached from last)
    name: Option<String>,
    /// Show the session, but do not send it what is typed (the detach key still works)
    #[arg(short, long)]
    read_only: bool,
    /// Detach every other client of the session
    #[arg(short, long)]
    detach_others: bool,
    /// What to show on attaching: `screen` redraws the session's screen
    /// (with its history in this terminal's scrollback, and the modes the
    /// program set); `raw` replays the output kept, as it was written
    #[arg(long, value_enum, default_value_t = RestoreArg::Screen)]
    restore: RestoreArg,
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// `--restore`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RestoreArg {
    Screen,
    Raw,
}

#[derive(Debug, Args)]
struct LsArgs {
    /// Print a JSON array: name, command, clients (connected, disconnected), created, state, exit_status
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["name", "all"])))]
struct KillArgs {
    /// The session's name
    name: Option<String>,
    /// End every session
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Args)]
struct RenameArgs {
    /// The session's name now
    old: String,
    /// Its new name
    new: String,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Args)]
struct SendArgs {
    /// The session's name
    name: String,
    /// What to type, the words joined by spaces, no newline added (write $'ls\r' for Enter); - reads standard input
    #[arg(required = true, num_args = 1.., allow_hyphen_values = true)]
    text: Vec<String>,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Args)]
struct CaptureArgs {
    /// The session's name
    name: String,
    /// Print up to N lines of history before the screen
    #[arg(short = 'S', long, value_name = "N", default_value_t = 0)]
    scrollback: usize,
    /// Keep colours and attributes as escape sequences
    #[arg(short = 'e', long)]
    escapes: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Args)]
struct CompletionsArgs {
    /// The shell
    shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Also listen on TCP, e.g. 127.0.0.1:7890; clients must have the secret
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// The secret for TCP clients (generated, mode 0600, when missing; default: in the runtime directory)
    #[arg(long, value_name = "FILE", requires = "listen")]
    secret_file: Option<PathBuf>,
    /// How long a client whose connection is down stays attached, e.g. 90s, 10m, 1h
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    client_expiry: Duration,
    /// Exit when no session is left and no client is connected
    #[arg(long, hide = true)]
    exit_when_idle: bool,
}

/// A duration as a person writes it: `90`, `90s`, `500ms`, `10m`, `1h`.
pub(crate) fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let error = || format!("{text:?} is not a duration: write e.g. 30s, 10m or 1h");
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| error())?;
    let duration = match unit {
        "ms" => Duration::from_millis(number),
        "" | "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number.saturating_mul(60)),
        "h" => Duration::from_secs(number.saturating_mul(3600)),
        _ => return Err(error()),
    };
    if duration.is_zero() || duration > crate::transport::MAX_RESUME_WINDOW {
        return Err(format!("{text:?} is out of range: from 1ms to 24h"));
    }
    Ok(duration)
}

/// Runs the `rpty` command line and returns the process's exit code:
/// that of the session's command when it exits while attached, 0 after a
/// detach, 1 with a one-line message on standard error for any failure, 2
/// for a usage error.
pub fn run() -> ExitCode {
    install_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    match execute(cli) {
        Ok(code) => code,
        Err(err) => {
            terminal::restore_saved();
            let message = format!("{err:#}").replace('\n', "; ");
            tracing::info!(%message, "failed");
            eprintln!("rpty: {message}");
            ExitCode::from(1)
        }
    }
}

/// An error and its causes on one line, each said once, as `{:#}` prints
/// an anyhow chain: for errors that are passed on as text.
pub(crate) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        line.push_str(": ");
        line.push_str(&next.to_string());
        cause = next.source();
    }
    line
}

/// A panic restores the terminal and says one line, never a dump.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        terminal::restore_saved();
        let payload = info.payload();
        let what = payload
            .downcast_ref::<&str>()
            .map(|text| (*text).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".to_owned());
        let location = info.location().map(|location| location.to_string()).unwrap_or_default();
        tracing::error!(%what, %location, "panic");
        eprintln!("rpty: internal error: {what}");
    }));
}

fn execute(cli: Cli) -> Result<ExitCode> {
    let serving = matches!(cli.command, Command::Serve(_));
    let runtime = RuntimeDir::locate();
    if let Ok(runtime) = &runtime {
        if serving {
            logging::init(&runtime.server_log(), true);
        } else {
            logging::init(&runtime.client_log(), false);
        }
    }
    // One thread for the server too, as for the client: a keystroke then
    // goes from the client's socket to the terminal, and its echo back,
    // without waking a second worker thread (measured: `cargo xtask
    // echo-latency`, docs/benchmarks.md). The sessions' screen models
    // parse on threads of their own.
    let tokio =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    let result = tokio.block_on(dispatch(cli.command, runtime));
    tokio.shutdown_timeout(Duration::from_millis(200));
    result
}

async fn dispatch(command: Command, runtime: std::io::Result<RuntimeDir>) -> Result<ExitCode> {
    match command {
        Command::New(args) => new(args, runtime).await,
        Command::Attach(args) => attach(args, runtime).await,
        Command::Ls(args) => ls(args, runtime).await,
        Command::Kill(args) => kill(args, runtime).await,
        Command::Rename(args) => rename(args, runtime).await,
        Command::Send(args) => send(args, runtime).await,
        Command::Capture(args) => capture(args, runtime).await,
        Command::Completions(args) => {
            let mut out = std::io::stdout().lock();
            clap_complete::generate(args.shell, &mut Cli::command(), "rpty", &mut out);
            out.flush().context("cannot write the completion script")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut page).context("cannot render the manual page")?;
            let mut out = std::io::stdout().lock();
            out.write_all(&page).and_then(|()| out.flush()).context("cannot write the manual page")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => {
            let config = ServeConfig {
                listen: args.listen,
                secret_file: args.secret_file,
                exit_when_idle: args.exit_when_idle,
                client_expiry: args.client_expiry,
            };
            server::run(runtime?, config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bridge => client::bridge(&runtime?).await,
    }
}

/// Where the server is, from the options.
fn target(args: &ConnectArgs, runtime: std::io::Result<RuntimeDir>, autostart: bool) -> Result<Target> {
    if let Some(command) = &args.via {
        if command.trim().is_empty() {
            bail!("--via needs a command, e.g. --via 'ssh host rpty bridge'");
        }
        return Ok(Target::Via { command: command.clone() });
    }
    if let Some(addr) = &args.connect {
        let secret = args.secret_file.as_deref().map(secret::load).transpose()?;
        return Ok(Target::Tcp { addr: addr.clone(), secret });
    }
    Ok(Target::Local { runtime: runtime?, autostart })
}

/// The command line that reaches the same server, for messages.
fn command_hint(args: &ConnectArgs, subcommand: &str, name: &str) -> String {
    let mut hint = format!("{} {subcommand}", program_name());
    if let Some(via) = &args.via {
        hint.push_str(&format!(" --via {}", shell_quote(via)));
    }
    if let Some(addr) = &args.connect {
        hint.push_str(&format!(" --connect {}", shell_quote(addr)));
        if let Some(file) = &args.secret_file {
            hint.push_str(&format!(" --secret-file {}", shell_quote(&file.to_string_lossy())));
        }
    }
    hint.push(' ');
    hint.push_str(&shell_quote(name));
    hint
}

/// How the user runs this program: `rpty` when that is what the shell
/// finds on `PATH`, else the program's full path.
fn program_name() -> String {
    let Ok(exe) = std::env::current_exe().and_then(|exe| exe.canonicalize()) else { return "rpty".to_owned() };
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join("rpty").canonicalize().is_ok_and(|found| found == exe))
    });
    if on_path { "rpty".to_owned() } else { shell_quote(&exe.to_string_lossy()) }
}

/// `text` quoted for a POSIX shell when it needs it.
fn shell_quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/' | b':' | b'@' | b','));
    if plain { text.to_owned() } else { format!("'{}'", text.replace('\'', "'\\''")) }
}

/// Whether the target is this machine's server.
fn is_local(target: &Target) -> bool {
    matches!(target, Target::Local { .. })
}

async fn new(args: NewArgs, runtime: std::io::Result<RuntimeDir>) -> Result<ExitCode> {
    if let Some(name) = &args.name
        && !protocol::valid_name(name)
    {
        bail!("{name:?} cannot name a session: use 1 to 64 letters, digits, '-', '_' or '.'");
    }
    if !args.detached {
        require_terminal("new")?;
    }
    let target = target(&args.connect, runtime, true)?;
    let size = terminal::window_size();
    let mut new = NewSession::new(args.command.clone());
    new.name = args.name.clone();
    new.cwd = is_local(&target)
        .then(std::env::current_dir)
        .and_then(Result::ok)
        .map(|cwd| cwd.to_string_lossy().into_owned());
    new.term = std::env::var("TERM").ok();
    new.size = size;
    new.attach = !args.detached;
    new.attach_existing = args.attach_existing;
    let offer = if args.detached { client::Offer::none() } else { client::Offer::make(&target, args.key.detach_key) };
    let hello =
        ClientHello::new(Request::New(new)).with_resume_window(target.resume_window()).with_terminal(offer.terminal());
    let (connection, response) = client::request(&target, hello).await?;
    match client::expect_ok(response)? {
        Response::Attached { name, direct, .. } => {
            let options = AttachOptions {
                detach_key: args.key.detach_key,
                // `new -A` may have found a session with a past, which
                // the server then restores from its screen.
                redraw: if args.attach_existing { Redraw::Nudge } else { Redraw::None },
                restore: Restore::Screen,
                read_only: false,
                reattach_hint: command_hint(&args.connect, "attach", &name),
            };
            client::attach(connection, &name, &options, offer, direct).await
        }
        Response::Created { name } => {
            connection.finish().await;
            eprintln!("rpty: started session {name:?}; attach with: {}", command_hint(&args.connect, "attach", &name));
            Ok(ExitCode::SUCCESS)
        }
        _ => bail!("the server gave an unexpected answer"),
    }
}

/// Refuses to attach without a terminal: raw mode, the window size and the
/// detach key all need one.
fn require_terminal(subcommand: &str) -> Result<()> {
    if std::io::stdin().is_terminal() {
        return Ok(());
    }
    let hint = if subcommand == "new" { "; start it detached with rpty new -d" } else { "" };
    bail!(
        "standard input is not a terminal: rpty {subcommand} needs one to attach (type into a session with rpty send{hint})"
    )
}

async fn attach(args: AttachArgs, runtime: std::io::Result<RuntimeDir>) -> Result<ExitCode> {
    require_terminal("attach")?;
    let target = target(&args.connect, runtime, false)?;
    if let Some(name) = &args.name
        && is_local(&target)
        && std::env::var("RPTY_SESSION").is_ok_and(|inside| inside == *name)
    {
        bail!("this terminal is session {name:?} itself: attaching it to itself would loop");
    }
    let restore = match args.restore {
        RestoreArg::Screen => Restore::Screen,
        RestoreArg::Raw => Restore::Raw,
    };
    // Inside a session, "the last one" means another one.
    let inside = std::env::var("RPTY_SESSION").ok().filter(|_| is_local(&target));
    let request = Request::Attach {
        name: args.name.clone(),
        size: terminal::window_size(),
        restore,
        read_only: args.read_only,
        detach_others: args.detach_others,
        not: inside,
    };
    let offer = client::Offer::make(&target, args.key.detach_key);
    let hello = ClientHello::new(request).with_resume_window(target.resume_window()).with_terminal(offer.terminal());
    let (connection, response) = match client::request(&target, hello).await {
        Err(err) if err.is::<NoServer>() => match &args.name {
            Some(name) => bail!("no server is running, so there is no session named {name:?}"),
            None => bail!("no server is running, so there is no session to attach to (start one with: rpty new)"),
        },
        other => other?,
    };
    match client::expect_ok(response)? {
        Response::Attached { name, direct, .. } => {
            let options = AttachOptions {
                detach_key: args.key.detach_key,
                redraw: match restore {
                    Restore::Screen => Redraw::Nudge,
                    Restore::Raw => Redraw::ClearAndNudge,
                },
                restore,
                read_only: args.read_only,
                reattach_hint: command_hint(&args.connect, "attach", &name),
            };
            client::attach(connection, &name, &options, offer, direct).await
        }
        _ => bail!("the server gave an unexpected answer"),
    }
}

async fn ls(args: LsArgs, runtime: std::io::Result<RuntimeDir>) -> Result<ExitCode> {
    let print = |sessions: &[protocol::SessionEntry]| {
        if args.json { client::print_sessions_json(sessions) } else { client::print_sessions(sessions) }
    };
    let target = target(&args.connect, runtime, false)?;
    let hello = ClientHello::new(Request::List).with_resume_window(target.resume_window());
    let (connection, response) = match client::request(&target, hello).await {
        Err(err) if err.is::<NoServer>() => {
            print(&[])?;
            return Ok(ExitCode::SUCCESS);
        }
        other => other?,
    };
    connection.finish().await;
    match client::expect_ok(response)? {
        Response::Sessions { sessions } => {
            print(&sessions)?;
            Ok(ExitCode::SUCCESS)
        }
        _ => bail!("the server gave an unexpected answer"),
    }
}

/// Sends one request that needs a running server and gets a short answer.
async fn ask(
    connect: &ConnectArgs,
    runtime: std::io::Result<RuntimeDir>,
    request: Request,
    absent: &str,
) -> Result<Response> {
    let target = target(connect, runtime, false)?;
    let hello = ClientHello::new(request).with_resume_window(target.resume_window());
    let (connection, response) = match client::request(&target, hello).await {
        Err(err) if err.is::<NoServer>() => bail!("no server is running, so {absent}"),
        other => other?,
    };
    connection.finish().await;
    client::expect_ok(response)
}

async fn kill(args: KillArgs, runtime: std::io::Result<RuntimeDir>) -> Result<ExitCode> {
    let (request, absent) = match &args.name {
        Some(name) if !args.all => {
            (Request::Kill { name: name.clone() }, format!("there is no session named {name:?}"))
        }
        _ => (Request::KillAll, String::new()),
    };
    let target = target(&args.connect, runtime, false)?;
    let hello = ClientHello::new(request).with_resume_window(target.resume_window());
    let (connection, response) = match client::request(&target, hello).await {
        // No server, no session: `kill --all` has nothing to do.
        Err(err) if err.is::<NoServer>() && absent.is_empty() => return Ok(ExitCode::SUCCESS),
        Err(err) if err.is::<NoServer>() => bail!("no server is running, so {absent}"),
        other => other?,
    };
    connection.finish().await;
    match client::expect_ok(response)? {
        Response::Killed { .. } | Response::KilledAll { .. } => Ok(ExitCode::SUCCESS),
        _ => bail!("the server gave an unexpected answer"),
    }
}

async fn rename(args: RenameArgs, runtime: std::io::Result<RuntimeDir>) -> Result<ExitCode> {
    if !protocol::valid_name(&args.new) {
        bail!("{:?} cannot name a session: use 1 to 64 letters, digits, '-', '_' or '.'", args.new);
    }
    let request = Request::Rename { from: args.old.clone(), to: args.new.clone() };
    let absent = format!("there is no session named {:?}", args.old);
    match ask(&args.connect, runtime, request, &absent).await? {
        Response::Renamed { .. } => Ok(ExitCode::SUCCESS),
        _ => bail!("the server gave an unexpected answer"),
    }
}

async fn send(args: SendArgs, runtime: std::io::Result<RuntimeDir>) -> Result<ExitCode> {
    let input = if args.text == ["-"] {
        let mut input = Vec::new();
        std::io::stdin().lock().read_to_end(&mut input).context("cannot read standard input")?;
        input
    } else {
        args.text.join(" ").into_bytes()
    };
    let absent = format!("there is no session named {:?}", args.name);
    let target = target(&args.connect, runtime, false)?;
    // One connection per chunk: each answer says the chunk is written
    // before the next one goes.
    for chunk in input.chunks(protocol::MAX_SEND_BYTES) {
        let request = Request::Send { name: args.name.clone(), input: chunk.to_vec() };
        let hello = ClientHello::new(request).with_resume_window(target.resume_window());
        let (connection, response) = match client::request(&target, hello).await {
            Err(err) if err.is::<NoServer>() => bail!("no server is running, so {absent}"),
            other => other?,
        };
        connection.finish().await;
        match client::expect_ok(response)? {
            Response::Sent { .. } => {}
            _ => bail!("the server gave an unexpected answer"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn capture(args: CaptureArgs, runtime: std::io::Result<RuntimeDir>) -> Result<ExitCode> {
    let request = Request::Capture { name: args.name.clone(), history_lines: args.scrollback, escapes: args.escapes };
    let absent = format!("there is no session named {:?}", args.name);
    match ask(&args.connect, runtime, request, &absent).await? {
        Response::Captured { text } => {
            let mut stdout = std::io::stdout().lock();
            match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
                // A reader that stopped early (`| head`) is no failure.
                Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(err).context("cannot write to standard output")
                }
                _ => Ok(ExitCode::SUCCESS),
            }
        }
        _ => bail!("the server gave an unexpected answer"),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn new_takes_a_name_and_a_command_after_the_double_dash() {
        let cli = Cli::try_parse_from(["rpty", "new", "demo", "--", "sh", "-c", "echo hi"]).unwrap();
        let Command::New(args) = cli.command else { panic!("not new") };
        assert_eq!(args.name.as_deref(), Some("demo"));
        assert_eq!(args.command, ["sh", "-c", "echo hi"]);
        assert_eq!(args.key.detach_key, DetachKey::default());
    }

    #[test]
    fn a_secret_file_without_connect_and_via_with_connect_are_refused() {
        assert!(Cli::try_parse_from(["rpty", "ls", "--secret-file", "x"]).is_err());
        assert!(Cli::try_parse_from(["rpty", "ls", "--via", "x", "--connect", "h:1"]).is_err());
        assert!(Cli::try_parse_from(["rpty", "attach", "x", "--detach-key", "ctrl-1"]).is_err());
        assert!(Cli::try_parse_from(["rpty", "kill"]).is_err(), "kill needs a name or --all");
        assert!(Cli::try_parse_from(["rpty", "new", "-A"]).is_err(), "-A needs a name");
        assert!(Cli::try_parse_from(["rpty", "new", "-A", "-d", "x"]).is_err());
        assert!(Cli::try_parse_from(["rpty", "send", "x"]).is_err(), "send needs text");
    }

    #[test]
    fn send_takes_its_words_literally() {
        let cli = Cli::try_parse_from(["rpty", "send", "x", "-n", "--help", "a"]).unwrap();
        let Command::Send(args) = cli.command else { panic!("not send") };
        assert_eq!(args.text, ["-n", "--help", "a"]);
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "s", "1d", "-1s", "0s", "25h", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hints_quote_what_the_shell_would_split() {
        let args = ConnectArgs { via: Some("ssh host rpty bridge".into()), connect: None, secret_file: None };
        let hint = command_hint(&args, "attach", "demo");
        assert!(hint.ends_with(" attach --via 'ssh host rpty bridge' demo"), "{hint}");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote("127.0.0.1:80"), "127.0.0.1:80");
    }
}
