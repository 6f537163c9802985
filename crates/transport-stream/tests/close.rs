//! The termination ladder: each step reached by the child it is meant for,
//! with its exit status and timing; close waking blocked reads and writes;
//! the termination delay.

mod util;

use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use transport_stream::{Options, Stream};
use util::{is_alive, kill_pid, sh, within};

const LIMIT: Duration = Duration::from_secs(10);
const STEP: Duration = Duration::from_millis(50);

/// Reads one line of the child's stdout (a "ready" marker or a pid).
async fn first_line(stream: &mut Stream) -> String {
    let mut line = Vec::new();
    loop {
        let mut byte = [0];
        let count = within(LIMIT, "a line from the child", stream.read(&mut byte)).await.unwrap();
        if count == 0 || byte[0] == b'\n' {
            return String::from_utf8(line).unwrap();
        }
        line.push(byte[0]);
    }
}

#[tokio::test]
async fn a_child_that_exits_on_stdin_eof_ends_at_the_stdin_step() {
    let stream = Stream::spawn(sh("cat >/dev/null; exit 3"), Options::new()).unwrap();
    let started = Instant::now();
    let status = within(LIMIT, "close", stream.close()).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(status.code(), Some(3));
    assert!(elapsed < Duration::from_millis(500), "took {elapsed:?}");
}

#[tokio::test]
async fn a_child_that_ignores_stdin_eof_ends_with_sigterm() {
    let mut stream = Stream::spawn(sh("echo ready; exec sleep 1000"), Options::new()).unwrap();
    assert_eq!(first_line(&mut stream).await, "ready");
    let started = Instant::now();
    let status = within(LIMIT, "close", stream.close()).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(status.signal(), Some(15));
    assert_eq!(status.shell_code(), 143);
    assert!(elapsed >= Duration::from_millis(950) && elapsed < Duration::from_millis(1800), "took {elapsed:?}");
}

#[tokio::test]
async fn a_child_that_ignores_both_ends_with_sigkill() {
    let mut stream = Stream::spawn(sh("trap '' TERM; echo ready; exec sleep 1000"), Options::new()).unwrap();
    assert_eq!(first_line(&mut stream).await, "ready");
    let pid = stream.handle().pid().unwrap();
    let started = Instant::now();
    let status = within(LIMIT, "close", stream.close()).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(status.signal(), Some(9));
    assert_eq!(status.shell_code(), 137);
    assert!(elapsed >= Duration::from_millis(1950) && elapsed < Duration::from_millis(2800), "took {elapsed:?}");
    assert!(!is_alive(pid), "the child is still there");
}

#[tokio::test]
async fn short_steps_make_a_short_ladder() {
    let options = Options::new().stdin_close_timeout(STEP).terminate_timeout(STEP);
    let mut stream = Stream::spawn(sh("trap '' TERM; echo ready; exec sleep 1000"), options).unwrap();
    assert_eq!(first_line(&mut stream).await, "ready");
    let started = Instant::now();
    let status = within(LIMIT, "close", stream.close()).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(status.shell_code(), 137);
    assert!(elapsed >= 2 * STEP && elapsed < Duration::from_millis(600), "took {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grandchild_holding_stdout_cannot_hold_up_close_or_a_pending_read() {
    let mut stream = Stream::spawn(sh("sleep 1000 & echo $!; read x"), Options::new()).unwrap();
    let grandchild: u32 = first_line(&mut stream).await.parse().unwrap();
    let handle = stream.handle();
    let (mut reader, _writer) = stream.into_split();
    let pending_read = tokio::spawn(async move {
        let mut buf = [0; 16];
        reader.read(&mut buf).await
    });
    tokio::task::yield_now().await;
    let started = Instant::now();
    let status = within(LIMIT, "close", handle.close()).await.unwrap();
    // `read x` sees end of input at the ladder's stdin step, fails, and the
    // shell exits with its status, 1.
    assert!(started.elapsed() < Duration::from_millis(1500), "took {:?}", started.elapsed());
    assert_eq!(status.code(), Some(1));
    let read = within(Duration::from_secs(1), "the pending read", pending_read).await.unwrap();
    assert_eq!(read.unwrap(), 0, "a closed stream reads as end of file");
    assert_eq!(handle.try_status().unwrap(), Some(status), "the direct child is reaped");
    assert!(is_alive(grandchild), "the grandchild was meant to outlive the child");
    kill_pid(grandchild);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_unblocks_a_write_to_a_child_that_never_reads() {
    let options = Options::new().stdin_close_timeout(STEP).terminate_timeout(STEP);
    let stream = Stream::spawn(sh("exec sleep 1000"), options).unwrap();
    let handle = stream.handle();
    let (_reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        let chunk = vec![0; 1 << 20];
        loop {
            if let Err(error) = writer.write_all(&chunk).await {
                return error;
            }
        }
    });
    // The pipe holds far less than a MiB: the writer is blocked by now.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!writing.is_finished(), "the write should be blocked on a full pipe");
    let status = within(LIMIT, "close", handle.close()).await.unwrap();
    assert_eq!(status.shell_code(), 143);
    let error = within(Duration::from_secs(1), "the blocked write", writing).await.unwrap();
    assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe);
}

#[tokio::test]
async fn a_child_exiting_within_the_termination_delay_is_not_signalled() {
    // Exits by itself after 300 ms with code 5; any signal would change that.
    let options = Options::new().termination_delay(Duration::from_secs(3));
    let stream = Stream::spawn(sh("sleep 0.3; exit 5"), options).unwrap();
    let started = Instant::now();
    let status = within(LIMIT, "close", stream.close()).await.unwrap();
    assert_eq!(status.code(), Some(5));
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shortening_the_termination_delay_during_close_takes_effect() {
    let options =
        Options::new().termination_delay(Duration::from_secs(100)).stdin_close_timeout(STEP).terminate_timeout(STEP);
    let stream = Stream::spawn(sh("exec sleep 1000"), options).unwrap();
    let handle = stream.handle();
    let closing = tokio::spawn({
        let handle = handle.clone();
        async move { handle.close().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!closing.is_finished(), "still inside the termination delay");
    handle.set_termination_delay(Duration::ZERO);
    let status = within(LIMIT, "close", closing).await.unwrap().unwrap();
    assert_eq!(status.shell_code(), 143);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_is_idempotent_and_shared_between_callers() {
    let stream = Stream::spawn(sh("cat >/dev/null; exit 9"), Options::new()).unwrap();
    let handle = stream.handle();
    let (a, b) = tokio::join!(handle.close(), stream.close());
    assert_eq!(a.unwrap().code(), Some(9));
    assert_eq!(b.unwrap().code(), Some(9));
    assert_eq!(within(LIMIT, "third close", handle.close()).await.unwrap().code(), Some(9));
    assert!(handle.is_closing());
}

#[tokio::test]
async fn dropping_the_stream_kills_and_reaps_the_child() {
    let mut stream = Stream::spawn(sh("echo ready; exec sleep 1000"), Options::new()).unwrap();
    let mut lines = BufReader::new(&mut stream).lines();
    assert_eq!(within(LIMIT, "ready", lines.next_line()).await.unwrap().as_deref(), Some("ready"));
    let pid = stream.handle().pid().unwrap();
    drop(stream);
    let started = Instant::now();
    while is_alive(pid) {
        assert!(started.elapsed() < LIMIT, "the dropped stream's child is still alive");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
