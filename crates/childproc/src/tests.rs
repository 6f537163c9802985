//! Unit tests of internals the public API cannot reach: the thread-based
//! exit watcher used without pidfds, signals forwarded while a child is
//! being spawned, and the span every line about a run is logged in.

use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::{Child, Error, Options, Signal};

/// Bound for every wait in these tests.
const LIMIT: Duration = Duration::from_secs(10);

fn sh(script: &str) -> Command {
    let mut command = Command::new("sh");
    command.args(["-c", script]);
    command
}

async fn bounded<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, future).await.expect("timed out")
}

#[tokio::test]
async fn without_pidfd_a_thread_reaps_and_latches_the_status() {
    logged();
    let options = Options { without_pidfd: true, ..Options::new() };
    let child = Child::spawn(sh("exit 5"), options).expect("spawn");
    let status = bounded(child.wait()).await.expect("status");
    assert_eq!(status.code(), Some(5));
    assert_eq!(child.try_status().expect("latched"), Some(status));
    child.signal(Signal::TERM).expect("signal after exit is a no-op");
}

#[tokio::test]
async fn without_pidfd_the_kill_ladder_and_the_timeout_still_work() {
    logged();
    let options = Options { without_pidfd: true, ..Options::new() }.kill_timeout(Duration::from_millis(300));
    let mut command = sh("trap '' TERM; echo ready; exec sleep 30");
    command.stdout(std::process::Stdio::piped());
    let child = Child::spawn(command, options.clone()).expect("spawn");
    // Once it has said "ready", its trap is set: SIGTERM is ignored (a
    // fixed sleep instead could lose that race on a loaded machine).
    let mut ready = String::new();
    let mut stdout = tokio::io::BufReader::new(child.take_stdout().expect("stdout"));
    bounded(tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut ready)).await.expect("read");
    assert_eq!(ready, "ready\n");
    let status = bounded(child.kill()).await.expect("killed");
    assert_eq!(status.shell_code(), 137);

    let timed = options.execution_timeout(Some(Duration::from_millis(200)));
    let child = Child::spawn(sh("exec sleep 30"), timed).expect("spawn");
    let started = Instant::now();
    match bounded(child.wait()).await {
        Err(Error::TimedOut { status, .. }) => assert_eq!(status.signal(), Some(Signal::TERM.as_raw())),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn a_signal_forwarded_during_the_spawn_is_delivered_once_the_pid_is_known() {
    logged();
    let child = Child::new(sh("exec sleep 30"), Options::new());
    // What the forwarding thread does when a signal arrives between the
    // handler installation and the end of the spawn.
    child.current_run().forward(Signal::USR1);
    child.start().expect("start");
    let status = bounded(child.wait()).await.expect("status");
    assert_eq!(status.signal(), Some(Signal::USR1.as_raw()));
}

#[test]
fn a_run_dropped_with_its_runtime_is_reaped_by_a_thread() {
    logged();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (child, exit) = runtime.block_on(async {
        let child = Child::spawn(sh("sleep 0.2"), Options::new()).expect("spawn");
        let exit = child.exit_handle();
        (child, exit)
    });
    // The exit watcher task dies with the runtime; a thread takes over.
    drop(runtime);
    let deadline = Instant::now() + LIMIT;
    while exit.try_status().expect("status").is_none() {
        assert!(Instant::now() < deadline, "never reaped");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(exit.try_status().expect("status").is_some_and(|status| status.success()));
    drop(child);
}

/// The log every test of this binary writes to, installed as the global
/// subscriber (not per thread: the lines of reaper threads and of the
/// signal forwarding thread must be caught too) by whichever test comes
/// first. Every test that spawns calls this first: a span created before
/// the subscriber is installed would stay disabled while the lines in it
/// are logged, and those lines would name no run.
fn logged() -> &'static Log {
    static LOG: std::sync::OnceLock<Log> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber of this binary");
        log
    })
}

/// A log the test reads back.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner).clone();
        String::from_utf8_lossy(&bytes).lines().map(str::to_owned).collect()
    }
}

#[test]
fn every_line_about_a_run_names_its_pid_and_program() {
    // Other tests of this binary log here meanwhile; their lines must name
    // their runs as well.
    let log = logged();

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (watched, threaded, forwarded) = runtime.block_on(async {
        let watched = Child::spawn(sh("exit 3"), Options::new()).expect("spawn");
        let threaded = Child::spawn(sh("exit 4"), Options { without_pidfd: true, ..Options::new() }).expect("spawn");
        let forwarded = Child::spawn(sh("exec sleep 30"), Options::new()).expect("spawn");
        // What the forwarding thread does when a signal arrives.
        let run = forwarded.current_run();
        std::thread::spawn(move || run.forward(Signal::TERM)).join().expect("forwarding thread");
        bounded(watched.wait()).await.expect("status");
        bounded(threaded.wait()).await.expect("status");
        let status = bounded(forwarded.wait()).await.expect("status");
        assert_eq!(status.signal(), Some(Signal::TERM.as_raw()));
        (watched.pid(), threaded.pid(), forwarded.pid())
    });

    let lines = log.lines();
    let expected = [
        (watched, &["child spawned", "child reaped"][..]),
        (threaded, &["child spawned", "child reaped"][..]),
        (forwarded, &["child spawned", "forwarding a signal", "child reaped"][..]),
    ];
    for (pid, messages) in expected {
        let span = format!("child{{pid={} program=sh}}", pid.expect("pid"));
        for message in messages {
            assert!(
                lines.iter().any(|line| line.contains(&span) && line.contains(message)),
                "no {message:?} line in {span}: {lines:#?}"
            );
        }
    }
    assert!(lines.iter().all(|line| line.contains("child{pid=")), "a line outside a run's span: {lines:#?}");
}
