//! Behaviour of the proxy over loopback: forwarding, cuts, black holes,
//! refusals, delays, and what dropping or shutting it down leaves behind.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use faultproxy::{Cut, CutStyle, Proxy, Stats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

/// Upper bound for any single step of a test.
const STEP: Duration = Duration::from_secs(20);

async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match timeout(STEP, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out: {what}"),
    }
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut bytes = vec![0; len];
    rng.fill(&mut bytes);
    bytes
}

/// An echo server; counts every byte it receives in `received`.
async fn echo_server() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut buf = vec![0; 64 * 1024];
                loop {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            counter.fetch_add(n as u64, Ordering::Relaxed);
                            if socket.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = socket.shutdown().await;
            });
        }
    });
    (addr, received)
}

/// A server that sends bytes to every connection until writing fails, then
/// reports how many it wrote.
async fn source_server() -> (SocketAddr, mpsc::UnboundedReceiver<u64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let done_tx = done_tx.clone();
            tokio::spawn(async move {
                let chunk = random_bytes(64 * 1024, 1);
                let mut written = 0;
                while socket.write_all(&chunk).await.is_ok() {
                    written += chunk.len() as u64;
                }
                let _ = done_tx.send(written);
            });
        }
    });
    (addr, done_rx)
}

/// A server that reads every connection to its end, then reports how many
/// bytes it read and whether the stream ended cleanly (EOF) or with an error.
async fn sink_server() -> (SocketAddr, mpsc::UnboundedReceiver<(u64, bool)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let done_tx = done_tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0; 64 * 1024];
                let mut read = 0;
                let clean = loop {
                    match socket.read(&mut buf).await {
                        Ok(0) => break true,
                        Ok(n) => read += n as u64,
                        Err(_) => break false,
                    }
                };
                let _ = done_tx.send((read, clean));
            });
        }
    });
    (addr, done_rx)
}

/// Sends `message` and reads the same number of bytes back.
async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(message).await?;
    let mut reply = vec![0; message.len()];
    stream.read_exact(&mut reply).await?;
    Ok(reply)
}

/// Reads until the stream ends by EOF or error; returns the bytes read.
async fn read_until_closed(stream: &mut TcpStream) -> u64 {
    let mut buf = vec![0; 64 * 1024];
    let mut total = 0;
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return total,
            Ok(n) => total += n as u64,
        }
    }
}

/// Polls the proxy's stats until `done` holds.
async fn wait_for_stats(proxy: &Proxy, what: &str, done: impl Fn(&Stats) -> bool) -> Stats {
    within(what, async {
        loop {
            let stats = proxy.stats();
            if done(&stats) {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current().metrics().num_alive_tasks()
}

async fn wait_for_alive_tasks(count: usize) {
    within("tasks to end", async {
        while alive_tasks() > count {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[test]
fn public_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Proxy>();
    assert_send_sync::<Cut>();
    assert_send_sync::<CutStyle>();
    assert_send_sync::<Stats>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_pass_through_unchanged_both_ways() {
    const LEN: usize = 16 << 20;
    let (upstream, _) = echo_server().await;
    let proxy = Proxy::start(upstream).await.unwrap();
    let stream = within("connect", TcpStream::connect(proxy.addr())).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let sent = random_bytes(LEN, 99);
    let to_send = sent.clone();
    let writing = tokio::spawn(async move {
        writer.write_all(&to_send).await?;
        writer.shutdown().await
    });
    let mut received = Vec::with_capacity(LEN);
    within("echo of 16 MiB", reader.read_to_end(&mut received)).await.unwrap();
    within("writer", writing).await.unwrap().unwrap();
    assert_eq!(received.len(), LEN);
    assert!(received == sent, "bytes changed in transit");

    let stats = wait_for_stats(&proxy, "connection to close", |s| s.open == 0).await;
    assert_eq!((stats.bytes_up, stats.bytes_down), (LEN as u64, LEN as u64));
    assert_eq!((stats.accepted, stats.refused, stats.cuts), (1, 0, 0));
}

#[tokio::test]
async fn open_counts_live_connections_and_returns_to_zero() {
    let (upstream, _) = echo_server().await;
    let proxy = Proxy::start(upstream).await.unwrap();
    let mut first = within("connect", TcpStream::connect(proxy.addr())).await.unwrap();
    let mut second = within("connect", TcpStream::connect(proxy.addr())).await.unwrap();
    within("round trip", round_trip(&mut first, b"one")).await.unwrap();
    within("round trip", round_trip(&mut second, b"two")).await.unwrap();
    assert_eq!(proxy.stats().open, 2);

    // A half-close travels through: the echo server sees EOF and closes.
    first.shutdown().await.unwrap();
    assert_eq!(within("EOF after half-close", read_until_closed(&mut first)).await, 0);
    drop(second);
    let stats = wait_for_stats(&proxy, "connections to close", |s| s.open == 0).await;
    assert_eq!((stats.accepted, stats.cuts), (2, 0));
}

#[tokio::test]
async fn after_bytes_delivers_exactly_the_allowance_then_eof() {
    const LIMIT: u64 = 123_457;
    let (upstream, mut source_done) = source_server().await;
    let proxy = Proxy::start(upstream).await.unwrap();
    proxy.set_cut_style(CutStyle::Close);
    proxy.set_cut(Cut::AfterBytes(LIMIT));

    let mut client = within("connect", TcpStream::connect(proxy.addr())).await.unwrap();
    let mut received = Vec::new();
    within("read to EOF", client.read_to_end(&mut received)).await.unwrap();
    assert_eq!(received.len() as u64, LIMIT);
    assert!(received[..] == random_bytes(64 * 1024, 1).repeat(2)[..LIMIT as usize], "bytes changed in transit");

    // The upstream side was closed too: the source's writes fail.
    within("upstream side to close", source_done.recv()).await.unwrap();
    let stats = wait_for_stats(&proxy, "connection to close", |s| s.open == 0).await;
    assert_eq!((stats.cuts, stats.bytes_down, stats.bytes_up), (1, LIMIT, 0));
}

#[tokio::test]
async fn after_bytes_with_reset_ends_both_sides_within_the_allowance() {
    const LIMIT: u64 = 300_001;
    let (upstream, mut sink_done) = sink_server().await;
    let proxy = Proxy::start(upstream).await.unwrap();
    proxy.set_cut(Cut::AfterBytes(LIMIT));

    let mut client = within("connect", TcpStream::connect(proxy.addr())).await.unwrap();
    let chunk = random_bytes(64 * 1024, 2);
    let write_failed = within("client writes to fail", async {
        loop {
            if client.write_all(&chunk).await.is_err() {
                return true;
            }
        }
    })
    .await;
    assert!(write_failed);
    let (read, _) = within("sink to see the end", sink_done.recv()).await.unwrap();
    assert!(read <= LIMIT, "sink read {read} bytes, more than the allowance {LIMIT}");
    let stats = wait_for_stats(&proxy, "connection to close", |s| s.open == 0).await;
    assert_eq!((stats.cuts, stats.bytes_up), (1, LIMIT));
}

#[tokio::test]
async fn random_bytes_draws_repeat_with_the_seed() {
    let (upstream, _) = source_server().await;
    let mut runs = Vec::new();
    for _ in 0..2 {
        let proxy = Proxy::start_seeded(upstream, 7).await.unwrap();
        proxy.set_cut_style(CutStyle::Close);
        proxy.set_cut(Cut::RandomBytes { min: 10_000, max: 200_000 });
        let mut lengths = Vec::new();
        for _ in 0..5 {
            let mut client = within("connect", TcpStream::connect(proxy.addr())).await.unwrap();
            let mut received = Vec::new();
            within("read to EOF", client.read_to_end(&mut received)).await.unwrap();
            lengths.push(received.len() as u64);
        }
        assert_eq!(proxy.stats().cuts, 5);
        runs.push(lengths);
    }
    assert_eq!(runs[0], runs[1], "same seed, different cut points");
    assert!(runs[0].iter().all(|len| (10_000..=200_000).contains(len)), "{:?}", runs[0]);
    assert!(runs[0].iter().any(|len| *len != runs[0][0]), "every draw equal: {:?}", runs[0]);
}

#[tokio::test]
async fn random_time_cuts_every_connection_and_counts_them() {
    let (upstream, _) = echo_server().await;
    let proxy = Proxy::start_seeded(upstream, 3).await.unwrap();
    let min = Duration::from_millis(5);
    proxy.set_cut(Cut::RandomTime { min, max: Duration::from_millis(40) });
    let mut lifetimes = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..4 {
        let started = Instant::now();
        clients.push((started, within("connect", TcpStream::connect(proxy.addr())).await.unwrap()));
    }
    for (started, client) in &mut clients {
        let _ = round_trip(client, b"ping").await;
        within("time cut", read_until_closed(client)).await;
        lifetimes.push(started.elapsed());
    }
    assert!(lifetimes.iter().all(|lived| *lived >= min), "{lifetimes:?}");
    let stats = wait_for_stats(&proxy, "connections to close", |s| s.open == 0).await;
    assert_eq!(stats.cuts, 4);
}

#[tokio::test]
async fn cut_all_cuts_every_current_connection() {
    let (upstream, _) = echo_server().await;
    let proxy = Proxy::start(upstream).await.unwrap();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = within("connect", TcpStream::connect(proxy.addr())).await.unwrap();
        within("round trip", round_trip(&mut client, b"hello")).await.unwrap();
        clients.push(client);
    }
    assert_eq!(proxy.cut_all(), 3);
    assert_eq!(proxy.cut_all(), 0, "connections being cut are not cut twice");
    for client in &mut clients {
        assert_eq!(within("cut", read_until_closed(client)).await, 0);
    }
    let stats = wait_for_stats(&proxy, "connections to close", |s| s.open == 0).await;
    assert_eq!(stats.cuts, 3);

    let mut fresh = within("connect", TcpStream::connect(proxy.addr())).await.unwrap();
    assert_eq!(within("round trip", round_trip(&mut fresh, b"again")).await.unwrap(), b"again");
}

#[tokio::test]
async fn set_cut_applies_to_current_connections_from_their_start() {
    let (upstream, _) = echo_server().await;
    let proxy = Proxy::start(upstream).await.unwrap();
    let mut client = within("connect", TcpStream::connect(proxy.addr())).await.unwrap();
    within("round trip", round_trip(&mut client, &[1; 1000])).await.unwrap();
    // 2000 bytes already forwarded, past the new limit.
    proxy.set_cut(Cut::AfterBytes(500));
    assert_eq!(within("cut", read_until_closed(&mut client)).await, 0);
    assert_eq!(wait_for_stats(&proxy, "cut", |s| s.open == 0).await.cuts, 1);

    // A time limit already exceeded cuts at once as well.
    proxy.set_cut(Cut::Never);
    let mut client = within("connect", TcpStream::connect(proxy.addr())).await.unwrap();
    within("round trip", round_trip(&mut client, b"x")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    proxy.set_cut(Cut::AfterTime(Duration::from_millis(10)));
    within("cut", read_until_closed(&mut client)).await;
    assert_eq!(wait_for_stats(&proxy, "cut", |s| s.open == 0).await.cuts, 2);
}

/// True if nothing (no byte, EOF or error) arrives within `quiet`.
async fn stays_silent(stream: &mut TcpStream, quiet: Duration) -> bool {
    let mut buf = [0; 16];
    timeout(quiet, stream.read(&mut buf)).await.is_err()
}

#[tokio::test]
async fn black_hole_swallows_bytes_and_keeps_sockets_open() {
    let quiet = Duration::from_millis(300);
    let (upstream, received) = echo_server().await;
    let proxy = Proxy::start(upstream).await.unwrap();
    let mut old = within("connect", TcpStream::connect(proxy.addr())).await.unwrap();
    within("round trip", round_trip(&mut old, b"before")).await.unwrap();

    proxy.set_black_hole(true);
    old.write_all(b"lost").await.unwrap();
    assert!(stays_silent(&mut old, quiet).await, "black-holed connection answered or closed");
    let mut new = within("connect", TcpStream::connect(proxy.addr())).await.unwrap();
    new.write_all(b"lost too").await.unwrap();
    new.shutdown().await.unwrap();
    assert!(stays_silent(&mut new, quiet).await, "black-holed connection answered or closed");
    assert_eq!(received.load(Ordering::Relaxed), 6, "bytes reached the upstream through the black hole");

    proxy.set_black_hole(false);
    let mut fresh = within("connect", TcpStream::connect(proxy.addr())).await.unwrap();
    assert_eq!(within("round trip", round_trip(&mut fresh, b"after")).await.unwrap(), b"after");
    // The old connections stay black-holed.
    old.write_all(b"still lost").await.unwrap();
    assert!(stays_silent(&mut old, quiet).await);
    assert_eq!(received.load(Ordering::Relaxed), 11);
    assert_eq!(proxy.stats().cuts, 0);

    // A cut still closes a black-holed connection.
    proxy.cut_all();
    within("cut", read_until_closed(&mut old)).await;
    within("cut", read_until_closed(&mut new)).await;
}

/// True if the connection through the proxy was refused: reset or closed
/// before any reply.
async fn is_refused(addr: SocketAddr) -> bool {
    let Ok(mut client) = TcpStream::connect(addr).await else { return true };
    round_trip(&mut client, b"anyone?").await.is_err()
}

#[tokio::test]
async fn refuse_for_refuses_during_the_window_then_recovers() {
    let window = Duration::from_millis(400);
    let (upstream, received) = echo_server().await;
    let proxy = Proxy::start(upstream).await.unwrap();
    let started = Instant::now();
    proxy.refuse_for(window);
    assert!(within("refused connect", is_refused(proxy.addr())).await);
    assert!(within("refused connect", is_refused(proxy.addr())).await);
    let stats = proxy.stats();
    assert_eq!((stats.accepted, stats.refused, stats.open), (2, 2, 0));
    assert_eq!(received.load(Ordering::Relaxed), 0, "a refused connection reached the upstream");
    assert!(started.elapsed() < window, "machine too slow to test inside the window");

    tokio::time::sleep_until(started + window).await;
    let mut client = within("connect", TcpStream::connect(proxy.addr())).await.unwrap();
    assert_eq!(within("round trip", round_trip(&mut client, b"back")).await.unwrap(), b"back");
    assert_eq!(proxy.stats().refused, 2);
}

#[tokio::test]
async fn failed_upstream_connect_counts_as_refused() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = closed.local_addr().unwrap();
    drop(closed);
    let proxy = Proxy::start(upstream).await.unwrap();
    assert!(within("refused connect", is_refused(proxy.addr())).await);
    let stats = wait_for_stats(&proxy, "connection to close", |s| s.open == 0).await;
    assert_eq!((stats.accepted, stats.refused), (1, 1));
}

#[tokio::test]
async fn delay_holds_back_each_direction() {
    let delay = Duration::from_millis(50);
    let (upstream, _) = echo_server().await;
    let proxy = Proxy::start(upstream).await.unwrap();
    proxy.set_delay(delay);
    let mut client = within("connect", TcpStream::connect(proxy.addr())).await.unwrap();
    for _ in 0..3 {
        let started = Instant::now();
        within("round trip", round_trip(&mut client, b"tick")).await.unwrap();
        assert!(started.elapsed() >= 2 * delay, "round trip took {:?}", started.elapsed());
    }
    proxy.set_delay(Duration::ZERO);
    let started = Instant::now();
    within("round trip", round_trip(&mut client, b"tock")).await.unwrap();
    assert!(started.elapsed() < 2 * delay, "delay still applied: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_does_not_serialise_throughput() {
    const LEN: usize = 64 << 20;
    let delay = Duration::from_millis(5);
    let (upstream, mut sink_done) = sink_server().await;
    let proxy = Proxy::start(upstream).await.unwrap();
    proxy.set_delay(delay);
    let mut client = within("connect", TcpStream::connect(proxy.addr())).await.unwrap();
    let data = vec![5; LEN];
    let started = Instant::now();
    within("bulk write", client.write_all(&data)).await.unwrap();
    client.shutdown().await.unwrap();
    let (read, clean) = within("sink to finish", sink_done.recv()).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!((read, clean), (LEN as u64, true));
    // Delivering one 64 KiB chunk per delay would take 1024 × 5 ms ≈ 5.1 s;
    // require at least twice that rate.
    let serialised = delay * (LEN / (64 << 10)) as u32;
    assert!(elapsed < serialised / 2, "64 MiB took {elapsed:?} with a {delay:?} delay");
}

#[tokio::test]
async fn drop_closes_every_connection_and_ends_every_task() {
    let (upstream, _) = echo_server().await;
    let baseline = alive_tasks();
    let proxy = Proxy::start(upstream).await.unwrap();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = within("connect", TcpStream::connect(proxy.addr())).await.unwrap();
        within("round trip", round_trip(&mut client, b"hi")).await.unwrap();
        clients.push(client);
    }
    let addr = proxy.addr();
    drop(proxy);
    for client in &mut clients {
        assert_eq!(within("close on drop", read_until_closed(client)).await, 0);
    }
    // The proxy's tasks and the echo tasks of its upstream sockets all end.
    wait_for_alive_tasks(baseline).await;
    assert!(TcpStream::connect(addr).await.is_err(), "port still accepting after drop");
}

#[tokio::test]
async fn shutdown_waits_until_everything_is_closed() {
    let (upstream, _) = echo_server().await;
    let baseline = alive_tasks();
    let proxy = Proxy::start(upstream).await.unwrap();
    proxy.set_cut_style(CutStyle::Close);
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = within("connect", TcpStream::connect(proxy.addr())).await.unwrap();
        within("round trip", round_trip(&mut client, b"hi")).await.unwrap();
        clients.push(client);
    }
    let addr = proxy.addr();
    within("shutdown", proxy.shutdown()).await;
    // The listener is gone the moment shutdown returns.
    assert!(TcpStream::connect(addr).await.is_err(), "port still accepting after shutdown");
    for client in &mut clients {
        assert_eq!(within("close on shutdown", read_until_closed(client)).await, 0);
    }
    wait_for_alive_tasks(baseline).await;
}
