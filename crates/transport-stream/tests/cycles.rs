//! A hundred open/close cycles, and failed spawns of a missing program,
//! leave no zombie and no leaked descriptor.
//! A binary of its own, so that no other test opens descriptors meanwhile.

mod util;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use transport_stream::{Options, Stream};
use util::{open_fds, sh, within, zombie_children};

async fn cycle(index: usize) {
    let mut stream = Stream::spawn(sh("head -c 5; echo ' oops' >&2"), Options::new()).unwrap();
    stream.write_all(b"hello world").await.unwrap();
    let mut reply = String::new();
    within(Duration::from_secs(10), "reply", stream.read_to_string(&mut reply)).await.unwrap();
    assert_eq!(reply, "hello", "cycle {index}");
    let status = within(Duration::from_secs(10), "close", stream.close()).await.unwrap();
    assert!(status.success(), "cycle {index}: {status}");
}

/// The descriptor count once it has stopped changing (background tasks of an
/// earlier cycle may still be closing theirs).
async fn settled_fds() -> usize {
    let mut last = open_fds();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = open_fds();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_cycles_leak_nothing() {
    let baseline = settled_fds().await;
    // A first cycle may open descriptors the runtime keeps for good.
    cycle(0).await;
    let baseline = baseline.max(settled_fds().await);
    for index in 1..=100 {
        cycle(index).await;
    }
    for _ in 0..10 {
        let error = Stream::spawn(std::process::Command::new("/nonexistent/agent-binary"), Options::new()).unwrap_err();
        assert!(matches!(error, transport_stream::Error::Spawn { .. }), "{error:?}");
    }
    // Background reaping and task teardown may trail the last close briefly.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while (open_fds() > baseline || !zombie_children().is_empty()) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("descriptors: {} before, {} after", baseline, open_fds());
    assert!(open_fds() <= baseline, "descriptors leaked: {} open, {baseline} before", open_fds());
    assert_eq!(zombie_children(), Vec::<u32>::new(), "zombies left");
}
