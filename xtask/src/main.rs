//! Project automation, run as `cargo xtask <task>`.
//!
//! - `ci [STEP...]`: everything continuous integration checks, in order,
//!   stopping at the first failing step (or only the steps named); its last
//!   line is the test tally.
//! - `fuzz [TARGET] [--seconds N]`: run one or every cargo-fuzz target.
//! - `bench [CRATE]`: run the criterion benches of one crate or all.
//! - `model [--cases N]`: run the proptest model tests with many cases.
//! - `peer [--rounds N] [WORKLOAD...]`: backedpipe side by side with the Go
//!   pipe it descends from, alternating processes, medians.
//! - `demo`: build rpty and run its demo (a session, a detach, a connection
//!   cut, a resume, the output intact).
//! - `echo-latency [--keys N]`: keystroke echo through a pseudo-terminal,
//!   directly, in tmux (installed when missing) and in rpty, interleaved in
//!   one run; medians.
//!
//! Dependencies are deliberately nil: this builds in a second on any machine
//! that has the Rust toolchain, and installs the cargo tools it needs itself.

mod ci;
mod peer;
mod readme;
mod run;
mod tidy;
mod tools;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  ci [STEP...]                 everything CI runs, or only the steps named:
                               fmt clippy test doc alone release readme package deny fuzz bench-build
  fuzz [TARGET] [--seconds N]  run one fuzz target, or all of them, for N seconds each (default 60)
  bench [CRATE]                run the criterion benches of one crate, or of the workspace
  model [--cases N]            run the proptest model tests with N cases (default 100000)
  demo                         rpty in a few seconds: a session, a detach, a connection cut, a resume
  echo-latency [--keys N]      keystroke echo through a terminal: directly, in tmux, in rpty (default 200 keys)
  peer [--rounds N] [WORKLOAD...]
                               backedpipe beside the Go pipe it descends from (../shared/peer),
                               alternating processes: one-way both-ways cut reconnect
                               one-way-chunk both-ways-chunk cut-chunk (ours through write_chunk)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => return ci::ci(&args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("model") => model(&args[1..]),
        Some("demo") => demo(&args[1..]),
        Some("echo-latency") => echo_latency(&args[1..]),
        Some("peer") => peer::peer(&args[1..]),
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => Err(format!("unknown or missing task\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `fuzz [TARGET] [--seconds N]`.
fn fuzz(args: &[String]) -> Result<(), String> {
    let (positional, seconds) = parse_number_flag(args, "--seconds", 60)?;
    tools::ensure_cargo_fuzz()?;
    let targets = match positional.as_slice() {
        [] => ci::fuzz_targets()?,
        [target] => vec![target.clone()],
        _ => return Err(format!("fuzz takes at most one target\n\n{USAGE}")),
    };
    for target in targets {
        ci::fuzz_target(&target, seconds)?;
    }
    Ok(())
}

/// `bench [CRATE]`.
fn bench(args: &[String]) -> Result<(), String> {
    let mut command = run::cargo(&["bench"]);
    match args {
        [] => command.arg("--workspace"),
        [package] => command.args(["--package", package]),
        _ => return Err(format!("bench takes at most one crate\n\n{USAGE}")),
    };
    run::status(&mut command)
}

/// The proptest model tests: (package, test target arguments, name filter).
const MODEL_TESTS: &[(&str, &[&str], &str)] = &[("seqring", &["--lib"], "model"), ("backedpipe", &["--lib"], "model")];

/// `model [--cases N]`.
fn model(args: &[String]) -> Result<(), String> {
    let (positional, cases) = parse_number_flag(args, "--cases", 100_000)?;
    if !positional.is_empty() {
        return Err(format!("model takes only --cases\n\n{USAGE}"));
    }
    for (package, targets, filter) in MODEL_TESTS {
        let mut command = run::cargo(&["test", "--release", "--package", package]);
        command.args(*targets).args([filter, "--", "--nocapture"]);
        command.env("PROPTEST_CASES", cases.to_string());
        println!("xtask: {package}: {cases} cases");
        run::status(&mut command)?;
    }
    Ok(())
}

/// `demo`: builds the rpty binary and its demo example, then runs the demo
/// (it finds the binary next to itself).
fn demo(args: &[String]) -> Result<(), String> {
    if !args.is_empty() {
        return Err(format!("demo takes no arguments\n\n{USAGE}"));
    }
    run::status(&mut run::cargo(&["build", "--quiet", "--package", "rpty", "--bins", "--examples"]))?;
    run::status(&mut run::cargo(&["run", "--quiet", "--package", "rpty", "--example", "demo"]))
}

/// `echo-latency`: installs tmux when it is missing, builds rpty and the
/// harness in release mode, and measures keystroke echo directly, in tmux
/// and in rpty, in the same run.
fn echo_latency(args: &[String]) -> Result<(), String> {
    let (positional, keys) = parse_number_flag(args, "--keys", 200)?;
    if !positional.is_empty() {
        return Err(format!("echo-latency takes only --keys N\n\n{USAGE}"));
    }
    let has_tmux = std::process::Command::new("tmux").arg("-V").output().is_ok_and(|output| output.status.success());
    if !has_tmux {
        tools::ensure_debian_package("tmux")?;
    }
    let build = ["build", "--quiet", "--release", "--package", "rpty", "--bin", "rpty", "--example", "echo_latency"];
    run::status(&mut run::cargo(&build))?;
    let dir = run::workspace_root().join("target").join("release");
    let mut harness = std::process::Command::new(dir.join("examples").join("echo_latency"));
    harness.arg("--keys").arg(keys.to_string()).arg(dir.join("rpty"));
    run::status(&mut harness)
}

/// Splits `args` into positional arguments and the value of `flag`.
fn parse_number_flag(args: &[String], flag: &str, default: u64) -> Result<(Vec<String>, u64), String> {
    let mut positional = Vec::new();
    let mut value = default;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == flag {
            let text = iter.next().ok_or(format!("{flag} needs a number"))?;
            value = text.parse().map_err(|_| format!("{flag} needs a number, got {text:?}"))?;
        } else if arg.starts_with('-') {
            return Err(format!("unknown option {arg}\n\n{USAGE}"));
        } else {
            positional.push(arg.clone());
        }
    }
    Ok((positional, value))
}
