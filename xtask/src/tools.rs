//! Installing the cargo tools CI needs, at pinned versions, when missing.

use crate::run;

/// cargo-fuzz, pinned: its command line is part of our CI.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// cargo-deny, pinned: newer versions change configuration keys.
const CARGO_DENY_VERSION: &str = "0.20.2";

/// Installs cargo-fuzz unless the pinned version is already present.
pub(crate) fn ensure_cargo_fuzz() -> Result<(), String> {
    ensure("cargo-fuzz", "fuzz", CARGO_FUZZ_VERSION)
}

/// Installs cargo-deny unless the pinned version is already present.
pub(crate) fn ensure_cargo_deny() -> Result<(), String> {
    ensure("cargo-deny", "deny", CARGO_DENY_VERSION)
}

fn ensure(crate_name: &str, subcommand: &str, version: &str) -> Result<(), String> {
    let installed = run::cargo(&[subcommand, "--version"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned());
    if installed.as_deref().is_some_and(|text| text.split_whitespace().any(|word| word == version)) {
        return Ok(());
    }
    println!("xtask: installing {crate_name} {version} (was: {})", installed.as_deref().unwrap_or("missing").trim());
    run::status(&mut run::cargo(&["install", "--locked", "--version", version, crate_name]))
}
