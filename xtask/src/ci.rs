//! `cargo xtask ci`: the steps CI runs, in order, with their durations, and
//! the fuzz runner they share with `cargo xtask fuzz`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::run::{self, Tally};
use crate::{readme, tools};

/// Seconds each fuzz target runs in CI's smoke run.
const CI_FUZZ_SECONDS: u64 = 20;

/// One CI step: its name and what it does.
type Step = (&'static str, fn(&mut Tally) -> Result<(), String>);

const STEPS: &[Step] = &[
    ("fmt", |_| run::status(&mut run::cargo(&["fmt", "--all", "--check"]))),
    // Every feature on, so that opt-in code (backedpipe's `child-stdio`)
    // is linted, tested and documented too.
    ("clippy", |_| {
        let args = ["clippy", "--workspace", "--all-targets", "--all-features", "--locked", "--", "-D", "warnings"];
        run::status(&mut run::cargo(&args))
    }),
    ("test", |tally| {
        // ptysession's screen tests run real full-screen programs.
        tools::ensure_programs(&[("vim", "vim"), ("less", "less")])?;
        run::tests(&mut run::cargo(&["test", "--workspace", "--all-features", "--locked", "--no-fail-fast"]), tally)
    }),
    // backedpipe's sans-IO core, with its tokio shell switched off.
    ("core-only", |tally| {
        core_has_no_runtime()?;
        let no_shell = ["-p", "backedpipe", "--no-default-features", "--locked"];
        run::status(&mut run::cargo(
            &[&["clippy", "--all-targets"], &no_shell[..], &["--", "-D", "warnings"]].concat(),
        ))?;
        run::tests(&mut run::cargo(&[&["test"], &no_shell[..]].concat()), tally)?;
        let mut doc = run::cargo(&[&["doc", "--no-deps"], &no_shell[..]].concat());
        doc.env("RUSTDOCFLAGS", "-D warnings");
        run::status(&mut doc)
    }),
    ("doc", |_| {
        let mut command = run::cargo(&["doc", "--workspace", "--all-features", "--no-deps", "--locked"]);
        command.env("RUSTDOCFLAGS", "-D warnings");
        run::status(&mut command)
    }),
    ("alone", |_| alone()),
    ("release", |_| run::status(&mut run::cargo(&["build", "--release", "--package", "rpty", "--locked"]))),
    ("readme", |_| readme::quick_start()),
    ("package", |_| {
        // Each product crate as crates.io would get it. The workspace's
        // unpublished crates resolve to the ones packaged in the same run.
        run::status(&mut run::cargo(&[
            "package",
            "--workspace",
            "--exclude",
            "faultproxy",
            "--exclude",
            "xtask",
            "--no-verify",
            "--locked",
        ]))
    }),
    ("deny", |_| deny()),
    ("fuzz", |_| {
        tools::ensure_cargo_fuzz()?;
        for target in fuzz_targets()? {
            fuzz_target(&target, CI_FUZZ_SECONDS)?;
        }
        Ok(())
    }),
    ("bench-build", |_| run::status(&mut run::cargo(&["bench", "--workspace", "--no-run", "--locked"]))),
];

/// Runs every step, or only those named in `only` (in CI's order); prints
/// durations and, last, the test tally.
pub(crate) fn ci(only: &[String]) -> ExitCode {
    if let Some(unknown) = only.iter().find(|name| !STEPS.iter().any(|(step, _)| step == name)) {
        let names: Vec<&str> = STEPS.iter().map(|(name, _)| *name).collect();
        eprintln!("xtask: no CI step named {unknown:?}; the steps are {}", names.join(", "));
        return ExitCode::FAILURE;
    }
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut timings: Vec<(&str, Duration)> = Vec::new();
    let mut failure = None;
    for (name, step) in STEPS.iter().filter(|(name, _)| only.is_empty() || only.iter().any(|wanted| wanted == name)) {
        println!("\nxtask ci: ==> {name}");
        let step_started = Instant::now();
        let result = step(&mut tally);
        timings.push((name, step_started.elapsed()));
        println!("xtask ci: <== {name} ({:.1} s)", step_started.elapsed().as_secs_f64());
        if let Err(message) = result {
            failure = Some(format!("step `{name}` failed: {message}"));
            break;
        }
    }
    println!("\nxtask ci: step durations");
    for (name, duration) in &timings {
        println!("  {name:<12} {:>7.1} s", duration.as_secs_f64());
    }
    println!("  {:<12} {:>7.1} s", "total", started.elapsed().as_secs_f64());
    let code = match &failure {
        Some(message) => {
            println!("xtask ci: FAILED: {message}");
            ExitCode::FAILURE
        }
        None => {
            println!("xtask ci: all steps passed");
            ExitCode::SUCCESS
        }
    };
    println!("{} passed, {} failed", tally.passed, tally.failed);
    code
}

/// Every package checked by itself, as a dependent or `cargo install`
/// builds it: without dev-dependencies, with its default features, with
/// none, and with each feature alone. Nothing a sibling or a test switches
/// on can hide a feature a library forgot to declare.
fn alone() -> Result<(), String> {
    tools::ensure_cargo_hack()?;
    run::status(&mut run::cargo(&[
        "hack",
        "check",
        "--workspace",
        "--exclude",
        "xtask",
        "--each-feature",
        "--no-dev-deps",
        "--keep-going",
    ]))
}

/// backedpipe without default features depends on no async runtime and no
/// system-call crate: the sans-IO core must stay usable with any runtime.
fn core_has_no_runtime() -> Result<(), String> {
    let output = run::cargo(&["tree", "-p", "backedpipe", "--no-default-features", "-e", "normal", "--prefix", "none"])
        .output()
        .map_err(|err| format!("cannot run cargo tree: {err}"))?;
    if !output.status.success() {
        return Err(format!("cargo tree failed: {}", String::from_utf8_lossy(&output.stderr)));
    }
    let tree = String::from_utf8_lossy(&output.stdout);
    let banned = ["tokio", "rustix", "mio", "futures"];
    let found: Vec<&str> =
        tree.lines().filter(|line| banned.iter().any(|name| line.split_whitespace().next() == Some(name))).collect();
    if found.is_empty() { Ok(()) } else { Err(format!("backedpipe's core pulls in {}", found.join(", "))) }
}

/// `cargo deny`: the checks that work offline always, advisories only when
/// the advisory database can be fetched.
fn deny() -> Result<(), String> {
    tools::ensure_cargo_deny()?;
    run::status(&mut run::cargo(&["deny", "--locked", "check", "bans", "licenses", "sources"]))?;
    let fetched = run::succeeds_within(&mut run::cargo(&["deny", "fetch", "db"]), Duration::from_secs(60));
    if fetched {
        run::status(&mut run::cargo(&["deny", "--locked", "check", "advisories"]))
    } else {
        println!("xtask ci: advisory database unreachable; `cargo deny check advisories` skipped");
        Ok(())
    }
}

/// The names of the targets in `fuzz/fuzz_targets`, sorted.
pub(crate) fn fuzz_targets() -> Result<Vec<String>, String> {
    let dir = run::workspace_root().join("fuzz").join("fuzz_targets");
    let entries = std::fs::read_dir(&dir).map_err(|err| format!("reading {}: {err}", dir.display()))?;
    let mut targets: Vec<String> =
        entries.filter_map(|entry| entry.ok()?.path().file_stem()?.to_str().map(String::from)).collect();
    targets.sort();
    Ok(targets)
}

/// Runs one fuzz target for `seconds`. AddressSanitizer needs a nightly-only
/// flag, which `RUSTC_BOOTSTRAP=1` allows on the stable toolchain; it is set
/// for the fuzz build alone.
pub(crate) fn fuzz_target(target: &str, seconds: u64) -> Result<(), String> {
    println!("xtask: fuzzing {target} for {seconds} s");
    let max_time = format!("-max_total_time={seconds}");
    let mut command = run::cargo(&["fuzz", "run", target, "--", &max_time, "-print_final_stats=1"]);
    command.env("RUSTC_BOOTSTRAP", "1");
    run::status(&mut command)
}
