//! Helpers shared by the integration tests: bounded waits, shell commands,
//! and /proc inspection (children, zombies, open descriptors).

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::future::Future;
use std::process::Command;
use std::time::{Duration, Instant};

use rustix::process::{Pid, WaitId, WaitIdOptions, WaitIdStatus};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::unix::pipe;

/// The longest any single wait in a test may take before the test fails.
pub(crate) const LIMIT: Duration = Duration::from_secs(20);

/// Runs `future`, failing the test if it takes longer than [`LIMIT`].
pub(crate) async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(LIMIT, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: no result within {LIMIT:?}"),
    }
}

/// `sh -c script`.
pub(crate) fn sh(script: &str) -> Command {
    let mut command = Command::new("sh");
    command.args(["-c", script]);
    command
}

/// Line reader over a child's stdout.
pub(crate) struct Lines(tokio::io::Lines<BufReader<pipe::Receiver>>);

impl Lines {
    pub(crate) fn new(receiver: pipe::Receiver) -> Self {
        Self(BufReader::new(receiver).lines())
    }

    /// The next line; fails the test at the end of the stream or after
    /// [`LIMIT`].
    pub(crate) async fn next(&mut self) -> String {
        bounded("reading a line", self.0.next_line()).await.expect("read a line").expect("a line before the end")
    }
}

/// Makes this process the reaper of orphaned descendants, so that a killed
/// grandchild becomes our zombie and its death can be observed by reaping it.
pub(crate) fn become_subreaper() {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).expect("PR_SET_CHILD_SUBREAPER");
}

/// Waits (bounded) until `pid`, a descendant re-parented to this subreaper,
/// has died, reaps it and returns its status: proof that it is dead.
pub(crate) async fn reap_orphan(pid: i32) -> WaitIdStatus {
    let pid = Pid::from_raw(pid).expect("a valid pid");
    let deadline = Instant::now() + LIMIT;
    loop {
        // Until its parent has been reaped the orphan is not ours yet: ECHILD.
        match rustix::process::waitid(WaitId::Pid(pid), WaitIdOptions::EXITED | WaitIdOptions::NOHANG) {
            Ok(Some(status)) => return status,
            Ok(None) | Err(rustix::io::Errno::CHILD) => {}
            Err(errno) => panic!("waitid({pid:?}): {errno}"),
        }
        assert!(Instant::now() < deadline, "process {pid:?} still alive after {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether process group `group` still has members.
pub(crate) fn group_exists(group: u32) -> bool {
    let group = Pid::from_raw(i32::try_from(group).expect("pid")).expect("pid");
    match rustix::process::test_kill_process_group(group) {
        Ok(()) => true,
        Err(rustix::io::Errno::SRCH) => false,
        Err(errno) => panic!("kill(-{group:?}, 0): {errno}"),
    }
}

/// The state letter and parent pid of a process from /proc, if it exists.
pub(crate) fn proc_state(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((state, parent))
}

/// The process group and session of a process, from /proc.
pub(crate) fn group_and_session(pid: u32) -> (u32, u32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let rest = &stat[stat.rfind(')').expect("stat") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    (fields[2].parse().expect("pgrp"), fields[3].parse().expect("session"))
}

/// Whether `pid` is a process that has not died (absent or zombie = dead).
pub(crate) fn is_alive(pid: u32) -> bool {
    proc_state(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// This process's children, as (pid, state) pairs.
pub(crate) fn children() -> Vec<(u32, char)> {
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        if let Some((state, parent)) = proc_state(pid)
            && parent == me
        {
            found.push((pid, state));
        }
    }
    found
}

/// The descriptors this process has open, with what they point to.
pub(crate) fn open_fds() -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .flatten()
        .map(|entry| {
            let target = std::fs::read_link(entry.path()).map(|path| path.display().to_string()).unwrap_or_default();
            format!("{} -> {target}", entry.file_name().to_string_lossy())
        })
        .collect();
    fds.sort();
    fds
}

/// Polls `condition` every 10 ms until it holds, failing after [`LIMIT`]
/// with `what` and the last value `describe` gives.
pub(crate) async fn eventually<D: std::fmt::Debug>(what: &str, mut condition: impl FnMut() -> Result<(), D>) {
    let deadline = Instant::now() + LIMIT;
    loop {
        match condition() {
            Ok(()) => return,
            Err(last) if Instant::now() >= deadline => panic!("{what} did not happen within {LIMIT:?}: {last:?}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}
