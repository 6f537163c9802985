//! Reaping: a thousand short-lived children (some dropped without waiting)
//! leave no zombie and no descriptor behind, and a missing binary is a spawn
//! error that leaves no child. The tests count this process's children and
//! descriptors, so they run one at a time, against a baseline that nothing
//! else moves (see [`baseline`]).

mod support;

use std::process::Command;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use childproc::{Child, Error, Isolation, Options};
use support::{LIMIT, bounded, children, eventually, open_fds};

/// Serializes the tests of this binary, runtimes included: each counts
/// process-wide resources, and a runtime owns descriptors of its own.
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `test` alone, on a runtime of its own made after taking the lock.
fn serially(flavor_multi_thread: bool, test: impl Future<Output = ()>) {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let runtime = if flavor_multi_thread {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
    } else {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    };
    runtime.expect("runtime").block_on(test);
}

/// This process's descriptors, without the one that lists them (whose
/// number is only the lowest free one at the time).
fn descriptors() -> Vec<String> {
    let listing = format!(" -> /proc/{}/fd", std::process::id());
    open_fds().into_iter().filter(|fd| !fd.ends_with(&listing)).collect()
}

/// The descriptors a test compares with at its end, once nothing but the
/// test can change them:
///
/// - what is made lazily, once per process or runtime, on a first spawn
///   (std's and childproc's, the pidfd's registration with this runtime,
///   on the fast and the fork path) is made first, by a warm-up child of
///   each kind;
/// - what the previous test, or the warm-up, left to be closed elsewhere
///   (a watcher task finishing on another worker after its waiter woke,
///   a runtime's last descriptors) is closed by then: the set is taken
///   once it has stayed the same for [`QUIET`] (bounded by [`LIMIT`]).
async fn baseline() -> Vec<String> {
    /// How long the descriptors must stay unchanged to count as settled.
    const QUIET: Duration = Duration::from_millis(100);
    for isolation in [Isolation::ProcessGroup, Isolation::Session] {
        let child = Child::spawn(Command::new("true"), Options::new().isolation(isolation)).expect("spawn");
        assert!(bounded("warm-up wait", child.wait()).await.expect("status").success());
    }
    let deadline = Instant::now() + LIMIT;
    let mut last = descriptors();
    loop {
        tokio::time::sleep(QUIET).await;
        let now = descriptors();
        if now == last && children().is_empty() {
            return now;
        }
        assert!(Instant::now() < deadline, "descriptors still changing after {LIMIT:?}: {now:?}");
        last = now;
    }
}

/// Waits until this process has no children left and exactly the
/// descriptors of `baseline` open.
async fn settled(baseline: &[String]) {
    eventually("all children reaped", || {
        let left = children();
        if left.is_empty() { Ok(()) } else { Err(left) }
    })
    .await;
    eventually("descriptors back to the baseline", || {
        let now = descriptors();
        if now == baseline {
            return Ok(());
        }
        let opened: Vec<&String> = now.iter().filter(|fd| !baseline.contains(fd)).collect();
        let closed: Vec<&String> = baseline.iter().filter(|fd| !now.contains(fd)).collect();
        Err(format!("opened since the baseline {opened:?}, closed since {closed:?}"))
    })
    .await;
}

#[test]
fn a_thousand_short_lived_children_leave_no_zombie_and_no_descriptor() {
    serially(true, thousand_children());
}

async fn thousand_children() {
    let baseline = baseline().await;

    // 500 one after the other; every fifth handle is dropped unwaited, half
    // of those with kill_on_drop and half without.
    for index in 0..500 {
        let options = Options::new().kill_on_drop(index % 10 == 0);
        let child = Child::spawn(Command::new("true"), options).expect("spawn");
        if index % 5 == 0 {
            drop(child);
        } else {
            assert!(bounded("wait", child.wait()).await.expect("status").success());
        }
    }

    // 500 more, 100 at a time.
    for batch in 0..5 {
        let mut running = Vec::new();
        for index in 0..100 {
            let options = Options::new().kill_on_drop(index % 2 == 0);
            let child = Child::spawn(Command::new("true"), options).expect("spawn");
            if (batch + index) % 5 == 0 {
                drop(child);
            } else {
                running.push(child);
            }
        }
        for child in running {
            assert!(bounded("wait", child.wait()).await.expect("status").success());
        }
    }

    settled(&baseline).await;
}

#[test]
fn a_missing_binary_is_a_spawn_error_naming_it_and_leaves_no_child() {
    serially(false, missing_binary());
}

async fn missing_binary() {
    let baseline = baseline().await;
    let missing = "/nonexistent/childproc-no-such-program";
    // The fast path (posix_spawn) and the fork path (a pre_exec hook).
    for isolation in [Isolation::ProcessGroup, Isolation::Session] {
        let child = Child::new(Command::new(missing), Options::new().isolation(isolation));
        let exit = child.exit_handle();
        let error = child.start().expect_err("a missing binary cannot start");
        assert!(error.to_string().contains(missing), "{error}");
        match error {
            Error::Spawn { program, source } => {
                assert_eq!(program, missing);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("expected a spawn error, got {other:?}"),
        }
        assert_eq!(child.pid(), None);
        assert_eq!(exit.try_status().expect("not started"), None);
        drop(child);
        assert!(matches!(bounded("wait", exit.wait()).await, Err(Error::NotStarted)));
    }
    settled(&baseline).await;
}
