//! Helpers shared by the integration tests: commands, bounded waits on a
//! client's events, temporary directories and process inspection.

#![allow(dead_code, unreachable_pub)]

pub mod coloured;
pub mod reference;
pub mod vt_model;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ptysession::{Attachment, Event, ExitStatus, Options, Session, State};

/// The bound on any single wait in these tests; generous for a loaded
/// two-core machine, and a hang still fails.
pub const WAIT: Duration = Duration::from_secs(60);

/// `sh -c script`.
pub fn sh(script: &str) -> Command {
    let mut command = Command::new("sh");
    command.args(["-c", script]);
    command
}

/// Options for tests: the defaults, without the first-attach and inactivity
/// timeouts (tests close their sessions themselves), and with client queues
/// deep enough that a reading client never lags on a loaded machine (tests
/// about lagging set their own).
pub fn options() -> Options {
    Options::new().first_attach_timeout(None).inactivity_timeout(None).client_queue_bytes(64 << 20)
}

/// The next event, failing the test if none arrives within [`WAIT`].
pub async fn next_event(client: &mut Attachment) -> Option<Event> {
    tokio::time::timeout(WAIT, client.next()).await.expect("an event within the wait bound")
}

/// Reads output until `needle` has appeared in everything received so far
/// (replay included); returns everything received.
pub async fn read_until(client: &mut Attachment, received: &mut Vec<u8>, needle: &[u8]) {
    while !contains(received, needle) {
        match next_event(client).await {
            Some(Event::Output(data)) => received.extend_from_slice(&data),
            other => panic!(
                "waiting for {:?}, got {other:?} after {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(received)
            ),
        }
    }
}

/// Reads output until the final event; returns the output and that event.
pub async fn read_to_end(client: &mut Attachment) -> (Vec<u8>, Option<Event>) {
    let mut received = Vec::new();
    loop {
        match next_event(client).await {
            Some(Event::Output(data)) => received.extend_from_slice(&data),
            last => return (received, last),
        }
    }
}

/// Whether `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|window| window == needle)
}

/// Closes the session within the wait bound.
pub async fn close(session: &Session) {
    tokio::time::timeout(WAIT, session.close()).await.expect("the session closes within the wait bound");
    assert_eq!(session.state(), State::Done);
}

/// Waits until the session reaches `state`.
pub async fn wait_for_state(session: &Session, state: State) {
    let mut states = session.watch_state();
    tokio::time::timeout(WAIT, states.wait_for(|current| *current >= state))
        .await
        .expect("the state is reached within the wait bound")
        .expect("the session's state is observable");
}

/// Waits for the command's exit status.
pub async fn wait_exit(session: &Session) -> Option<ExitStatus> {
    tokio::time::timeout(WAIT, session.wait()).await.expect("the command exits within the wait bound")
}

/// A directory under the system's temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!("ptysession-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The number of open descriptors of this process.
pub fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("list /proc/self/fd").count()
}

/// A process's state letter and start time (from `/proc/PID/stat`), if it
/// exists.
pub fn process_stat(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // Field 22 of stat is the start time; `rest` begins at field 3.
    let start_time = fields.get(19)?.parse().ok()?;
    Some((state, start_time))
}

/// The live (not zombie) processes whose process group is `pgid`.
pub fn group_members(pgid: u32) -> Vec<(u32, u64)> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("list /proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(close) = stat.rfind(')') else { continue };
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        // Fields from 3 on: state, ppid, pgrp, ..., start time at index 19.
        let (Some(state), Some(pgrp), Some(start)) = (fields.first(), fields.get(2), fields.get(19)) else { continue };
        if *state != "Z" && pgrp.parse() == Ok(pgid) {
            members.push((pid, start.parse().unwrap_or_default()));
        }
    }
    members
}

/// Whether the process that had `pid` and `start_time` is gone (or a
/// zombie waiting for init to reap it).
pub fn is_gone(pid: u32, start_time: u64) -> bool {
    match process_stat(pid) {
        None => true,
        Some((state, start)) => start != start_time || state == 'Z',
    }
}
