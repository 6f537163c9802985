//! Resources stay bounded: a hundred attach/detach cycles leak no
//! descriptor and no task, closing releases every descriptor, and a client
//! that never reads costs bounded memory while another reads 50 MB.
//!
//! These tests count this process's descriptors and memory, so they run one
//! at a time (and alone in this test binary), each on a runtime of its own
//! that exists only while it holds the lock.

mod support;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ptysession::framing::{self, ServeOutcome, ServerFrame};
use ptysession::{DetachReason, Event, ExitStatus, Session, WindowSize};
use support::{WAIT, close, contains, next_event, open_descriptors, read_to_end, read_until, sh};
/// Serializes the tests of this binary, runtimes included: a runtime owns
/// descriptors (its drivers') and worker threads of its own, so one made
/// or dropped while another test counts would move that test's figures.
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `test` alone, on a two-worker runtime made after taking the lock
/// and dropped (its workers joined, its descriptors closed) before letting
/// it go.
fn serially(test: impl Future<Output = ()>) {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(test);
    drop(runtime);
}

/// This process's resident memory, in bytes.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Waits until `condition` holds, polling; fails after [`WAIT`].
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "{what} did not happen within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Spawns and closes one session, so that anything created once per
/// process (runtime drivers, childproc's machinery) exists before counting.
async fn warm_up() {
    let session = Session::spawn(sh("exit 0"), support::options()).unwrap();
    let _ = session.attach(None).unwrap();
    support::wait_exit(&session).await;
    close(&session).await;
}

#[test]
fn a_hundred_attach_detach_cycles_leak_no_descriptor_or_task() {
    serially(hundred_cycles());
}

async fn hundred_cycles() {
    warm_up().await;
    let descriptors_without_session = open_descriptors();

    // `cat` with echo off sends every input line straight back.
    let session = Session::spawn(sh("stty -echo; printf R; exec cat"), support::options()).unwrap();
    let mut first = session.attach(None).unwrap();
    let mut received = first.replay().to_vec();
    read_until(&mut first, &mut received, b"R").await;
    drop(first);
    let runtime = tokio::runtime::Handle::current().metrics();
    let tasks = runtime.num_alive_tasks();
    let descriptors = open_descriptors();

    for cycle in 0..100 {
        let line = format!("cycle {cycle}\n");
        if cycle % 2 == 0 {
            // Directly.
            let mut client = session.attach(Some(WindowSize::new(24 + cycle % 5, 80))).unwrap();
            client.write(line.clone()).await.unwrap();
            let mut received = Vec::new();
            read_until(&mut client, &mut received, line.trim_end().as_bytes()).await;
            client.detach();
        } else {
            // Through the framing, over a socket pair.
            let (server_side, client_side) = tokio::net::UnixStream::pair().unwrap();
            let served = tokio::spawn(framing::serve_client(session.attach(None).unwrap(), server_side));
            let (mut frames, mut writer) = framing::client(client_side);
            writer.input(line.as_bytes()).await.unwrap();
            let mut received = Vec::new();
            while !contains(&received, line.trim_end().as_bytes()) {
                match tokio::time::timeout(WAIT, frames.next()).await.unwrap().unwrap() {
                    Some(ServerFrame::Output(data) | ServerFrame::Replay(data)) => received.extend_from_slice(&data),
                    Some(ServerFrame::ReplayEnd) => {}
                    other => panic!("unexpected frame {other:?}"),
                }
            }
            writer.detach().await.unwrap();
            let outcome = tokio::time::timeout(WAIT, served).await.unwrap().unwrap().unwrap();
            assert_eq!(outcome, ServeOutcome::ClientDetached);
        }
    }

    assert_eq!(session.clients(), 0);
    assert_eq!(session.stats().attaches, 101);
    assert_eq!(open_descriptors(), descriptors, "descriptors leaked by the cycles");
    eventually("every per-client task ending", || runtime.num_alive_tasks() <= tasks).await;

    close(&session).await;
    eventually("every session task ending", || runtime.num_alive_tasks() < tasks).await;
    // The last descriptors (the PTY master, the child's pidfd) are closed by
    // tasks finishing on the other worker thread: wait for them, boundedly.
    eventually("every descriptor of the session closing", || open_descriptors() == descriptors_without_session).await;
    assert_eq!(open_descriptors(), descriptors_without_session, "descriptors left after closing");
}

#[test]
fn a_stalled_client_is_detached_as_lagged_never_slows_the_other_and_memory_stays_bounded() {
    serially(stalled_client());
}

async fn stalled_client() {
    const TOTAL: u64 = 50_000_000;
    const QUEUE: usize = 16 << 20;
    warm_up().await;

    let script = format!("stty -opost -echo; printf R; read go; head -c {TOTAL} /dev/zero; printf E; exit 0");
    let session = Session::spawn(sh(&script), support::options().client_queue_bytes(QUEUE)).unwrap();
    let mut reader = session.attach(None).unwrap();
    let mut stalled = session.attach(None).unwrap();
    let mut received = reader.replay().to_vec();
    read_until(&mut reader, &mut received, b"R").await;

    // Sample the resident memory while the output flows.
    let baseline = resident_bytes();
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = std::thread::spawn({
        let (peak, sampling) = (peak.clone(), sampling.clone());
        move || {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(resident_bytes(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    });

    let started = Instant::now();
    reader.write("go\n").await.unwrap();
    let mut zeros = 0u64;
    let last = loop {
        match next_event(&mut reader).await {
            Some(Event::Output(data)) => {
                let (body, tail) = data.split_at(data.iter().position(|byte| *byte != 0).unwrap_or(data.len()));
                zeros += body.len() as u64;
                if !tail.is_empty() {
                    assert_eq!(tail, b"E", "after {zeros} zeros");
                }
            }
            last => break last,
        }
    };
    let elapsed = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!(zeros, TOTAL);
    assert_eq!(last, Some(Event::Exited(ExitStatus::Code(0))));

    // The stalled client gets the reason, not the backlog: it was dropped
    // when the client lagged.
    let (stalled_output, stalled_last) = read_to_end(&mut stalled).await;
    assert_eq!(stalled_last, Some(Event::Detached(DetachReason::Lagged { queue_bytes: QUEUE })));
    assert!(stalled_output.is_empty(), "{} bytes kept for a lagged client", stalled_output.len());
    assert_eq!(session.stats().clients_lagged, 1);

    let growth = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    println!("50 MB read in {elapsed:?} with a stalled client attached; resident memory grew by {growth} bytes");
    assert!(growth < 32 << 20, "resident memory grew by {growth} bytes while 50 MB passed");
    close(&session).await;
}
