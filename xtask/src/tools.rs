//! Installing the cargo tools CI needs, at pinned versions, when missing.

use crate::run;

/// cargo-fuzz, pinned: its command line is part of our CI.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// cargo-deny, pinned: newer versions change configuration keys.
const CARGO_DENY_VERSION: &str = "0.20.2";
/// cargo-hack, pinned: its feature walk is part of our CI.
const CARGO_HACK_VERSION: &str = "0.6.46";

/// Installs cargo-fuzz unless the pinned version is already present.
pub(crate) fn ensure_cargo_fuzz() -> Result<(), String> {
    ensure("cargo-fuzz", "fuzz", CARGO_FUZZ_VERSION)
}

/// Installs cargo-deny unless the pinned version is already present.
pub(crate) fn ensure_cargo_deny() -> Result<(), String> {
    ensure("cargo-deny", "deny", CARGO_DENY_VERSION)
}

/// Installs cargo-hack unless the pinned version is already present.
pub(crate) fn ensure_cargo_hack() -> Result<(), String> {
    ensure("cargo-hack", "hack", CARGO_HACK_VERSION)
}

/// Installs a Debian package with apt-get, as CI's machines run as root.
pub(crate) fn ensure_debian_package(package: &str) -> Result<(), String> {
    println!("xtask: installing the Debian package {package}");
    run::status(std::process::Command::new("apt-get").args(["update", "-qq"]))?;
    run::status(std::process::Command::new("apt-get").args(["install", "-y", "-qq", package]))
}

/// Installs the Debian package of each `(program, package)` whose program
/// is not on the `PATH`.
pub(crate) fn ensure_programs(programs: &[(&str, &str)]) -> Result<(), String> {
    for (program, package) in programs {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .output()
            .is_ok_and(|output| output.status.success());
        if !found {
            ensure_debian_package(package)?;
        }
    }
    Ok(())
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
