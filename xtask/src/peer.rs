//! `cargo xtask peer [--rounds N] [WORKLOAD...]`: backedpipe side by side
//! with the Go pipe it descends from, in the same run.
//!
//! Both programs run the same workloads and print the same lines
//! (`<workload>: X.XX GiB/s`, `peak RSS (VmHWM): N KiB`, for `reconnect` a
//! median): `bench_report only <workload>` (built in release) and the Go
//! peer's `gopeer only <workload>`. Each round runs, per workload, the raw
//! socket pair and the pipe of each language, alternating which language
//! goes first, each in a fresh process. The table gives medians over the
//! rounds: each pipe against its own raw baseline, and pipe against pipe.
//!
//! The Go peer is `$GOPEER`, else built from `../shared/peer` into
//! `target/gopeer` with Debian's Go (see that folder's README).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::run;

/// The workloads measured by default, in order. A `-chunk` workload is
/// the same as the one it is named after, except that ours writes through
/// `write_chunk` (the caller's chunks kept, not copied); the Go pipe,
/// which has no such call, runs its own workload of that name.
const WORKLOADS: &[&str] =
    &["one-way", "both-ways", "cut", "reconnect", "one-way-chunk", "both-ways-chunk", "cut-chunk"];

/// One program's result for one workload in one round.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    /// GiB/s, or for `reconnect` the median latency in microseconds.
    value: f64,
    /// Peak RSS of the process, KiB.
    rss_kib: u64,
}

/// Runs the comparison.
pub(crate) fn peer(args: &[String]) -> Result<(), String> {
    let (workloads, rounds) = parse(args)?;
    let gopeer = gopeer()?;
    run::status(&mut run::cargo(&["build", "--quiet", "--release", "-p", "backedpipe", "--example", "bench_report"]))?;
    let report = run::workspace_root().join("target/release/examples/bench_report");

    let mut rows = Vec::new();
    for workload in &workloads {
        let raw = raw_of(workload);
        let mut samples: [Vec<Sample>; 4] = Default::default(); // rust raw, rust pipe, go raw, go pipe
        for round in 0..rounds {
            let rust_first = round % 2 == 0;
            for rust in [rust_first, !rust_first] {
                let program: &Path = if rust { &report } else { &gopeer };
                let base = if rust { 0 } else { 2 };
                if let Some(raw) = raw {
                    samples[base].push(measure(program, raw)?);
                }
                if rust && workload == "reconnect" {
                    // The Go pair has no handshake: compare without
                    // authentication, and record the authenticated figure.
                    samples[0].push(measure(program, "reconnect")?);
                    samples[1].push(measure(program, "reconnect-noauth")?);
                } else {
                    let name = if rust { workload.as_str() } else { go_name(workload) };
                    samples[base + 1].push(measure(program, name)?);
                }
            }
            println!("xtask: {workload}: round {} of {rounds} done", round + 1);
        }
        rows.push((workload.clone(), samples.map(|list| median(&list))));
    }

    println!("\nmedians of {rounds} rounds (alternating processes; Go with GOMAXPROCS=2)");
    println!(
        "{:<16} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9} {:>12} {:>12}",
        "workload", "rust raw", "rust pipe", "go raw", "go pipe", "rust/raw", "go/raw", "rust/go", "rust RSS", "go RSS"
    );
    for (workload, [rust_raw, rust_pipe, go_raw, go_pipe]) in rows {
        if workload == "reconnect" {
            println!(
                "{workload:<16} {:>8.0}us {:>8.0}us {:>10} {:>8.0}us {:>9} {:>9} {:>9.2} {:>8} KiB {:>8} KiB",
                rust_raw.value,
                rust_pipe.value,
                "-",
                go_pipe.value,
                "-",
                "-",
                rust_pipe.value / go_pipe.value,
                rust_pipe.rss_kib,
                go_pipe.rss_kib
            );
            continue;
        }
        println!(
            "{workload:<16} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>9.2} {:>9.2} {:>9.2} {:>8} KiB {:>8} KiB",
            rust_raw.value,
            rust_pipe.value,
            go_raw.value,
            go_pipe.value,
            rust_pipe.value / rust_raw.value,
            go_pipe.value / go_raw.value,
            rust_pipe.value / go_pipe.value,
            rust_pipe.rss_kib,
            go_pipe.rss_kib
        );
    }
    println!("(throughput rows: GiB/s, rust/go > 1 means rust is faster;");
    println!(" reconnect row: median latency, rust pipe and go pipe without authentication,");
    println!(" \"rust raw\" column: rust with HMAC authentication; rust/go < 1 means rust is faster)");
    Ok(())
}

/// The workload names and the round count.
fn parse(args: &[String]) -> Result<(Vec<String>, usize), String> {
    let mut workloads = Vec::new();
    let mut rounds = 5;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--rounds" {
            let text = iter.next().ok_or("--rounds needs a number")?;
            rounds = text.parse().map_err(|_| format!("--rounds needs a number, got {text:?}"))?;
        } else if WORKLOADS.contains(&arg.as_str()) {
            workloads.push(arg.clone());
        } else {
            return Err(format!("unknown workload or option {arg:?}; workloads: {}", WORKLOADS.join(" ")));
        }
    }
    if workloads.is_empty() {
        workloads = WORKLOADS.iter().map(|name| (*name).to_owned()).collect();
    }
    if rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    Ok((workloads, rounds))
}

/// The raw baseline of `workload`, if it has one.
fn raw_of(workload: &str) -> Option<&'static str> {
    match go_name(workload) {
        "one-way" | "cut" => Some("raw-one-way"),
        "both-ways" => Some("raw-both-ways"),
        _ => None,
    }
}

/// The Go peer's workload that `workload` is compared with.
fn go_name(workload: &str) -> &str {
    workload.strip_suffix("-chunk").unwrap_or(workload)
}

/// Runs `program only workload` and reads its two lines.
fn measure(program: &Path, workload: &str) -> Result<Sample, String> {
    let output = Command::new(program)
        .args(["only", workload])
        .env("GOMAXPROCS", "2")
        .output()
        .map_err(|err| format!("cannot run {}: {err}", program.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "{} only {workload} failed ({}): {text}{}",
            program.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    parse_sample(&text).ok_or_else(|| format!("{} only {workload} printed no result: {text}", program.display()))
}

/// Reads `<workload>: X GiB/s` (or a reconnect line's median) and the
/// peak RSS line.
fn parse_sample(text: &str) -> Option<Sample> {
    let mut sample = Sample::default();
    let mut found = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("peak RSS (VmHWM): ") {
            sample.rss_kib = rest.trim_end_matches(" KiB").trim().parse().ok()?;
        } else if let Some(rest) = line.split("median ").nth(1) {
            sample.value = micros(rest.split(',').next()?.trim())?;
            found = true;
        } else if let Some(rate) = line.strip_suffix(" GiB/s") {
            sample.value = rate.rsplit(' ').next()?.parse().ok()?;
            found = true;
        }
    }
    found.then_some(sample)
}

/// A duration as Go and Rust's `Debug` print it (`57.4µs`, `1.2ms`,
/// `850ns`), in microseconds.
fn micros(text: &str) -> Option<f64> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit {
        "ns" => 0.001,
        "µs" | "us" => 1.0,
        "ms" => 1000.0,
        "s" => 1_000_000.0,
        _ => return None,
    };
    Some(number * scale)
}

fn median(samples: &[Sample]) -> Sample {
    if samples.is_empty() {
        return Sample::default();
    }
    let mut values: Vec<f64> = samples.iter().map(|sample| sample.value).collect();
    values.sort_by(f64::total_cmp);
    let mut rss: Vec<u64> = samples.iter().map(|sample| sample.rss_kib).collect();
    rss.sort_unstable();
    Sample { value: values[values.len() / 2], rss_kib: rss[rss.len() / 2] }
}

/// The Go peer: `$GOPEER`, or built from `../shared/peer` with `go`.
fn gopeer() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("GOPEER") {
        return Ok(PathBuf::from(path));
    }
    let root = run::workspace_root();
    let built = root.join("target/gopeer");
    if built.exists() {
        return Ok(built);
    }
    let source = root.join("../shared/peer");
    if !source.join("main.go").exists() {
        return Err(format!("no Go peer: set GOPEER, or provide its source at {}", source.display()));
    }
    // The shared folder may be read-only: build from a copy.
    let copy = root.join("target/gopeer-src");
    let _ = std::fs::remove_dir_all(&copy);
    run::status(Command::new("cp").arg("-r").arg(&source).arg(&copy))?;
    run::status(Command::new("chmod").args(["-R", "u+w"]).arg(&copy))?;
    run::status(Command::new("go").args(["build", "-o"]).arg(&built).arg(".").current_dir(&copy))
        .map_err(|err| format!("{err}; install Go (apt-get install golang-go) or set GOPEER"))?;
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::{micros, parse_sample};

    #[test]
    fn reads_both_programs_lines() {
        let go = parse_sample("one-way: 0.19 GiB/s\npeak RSS (VmHWM): 73796 KiB\n").expect("a sample");
        assert_eq!((go.value, go.rss_kib), (0.19, 73796));
        let reconnect = parse_sample(
            "reconnect (cut, write 1 byte, peer reads it; no auth): median 57.418µs, p90 400.518µs, max 1.8ms\n\
             peak RSS (VmHWM): 8380 KiB\n",
        )
        .expect("a sample");
        assert!((reconnect.value - 57.418).abs() < 1e-9);
        assert_eq!(parse_sample("nothing here\n").map(|sample| sample.value), None);
        assert_eq!(micros("1.5ms"), Some(1500.0));
        assert_eq!(micros("850ns"), Some(0.85));
        assert_eq!(micros("3 parsecs"), None);
    }
}
