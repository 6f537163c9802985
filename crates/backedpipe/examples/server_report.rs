//! One-shot figures for the server, as recorded in docs/benchmarks.md:
//! the latency of resuming through a [`Listener`] on loopback TCP with HMAC
//! authentication (cut, write one byte, until the session has read it;
//! median and p99), and the server's resident memory per idle session
//! (1000 sessions whose clients run in a child process).
//!
//! ```sh
//! cargo run --release -p backedpipe --example server_report
//! ```

#[path = "../benches/support/links.rs"]
#[allow(dead_code)] // each target uses part of it
mod links;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backedpipe::dial::TcpDialer;
use backedpipe::server::{Listener, ServerOptions};
use backedpipe::{BackedPipe, Options, Secret};
use links::{CuttableDialer, timed_resume};
use tokio::net::TcpListener;

const SESSIONS: usize = 1000;
const SAMPLES: usize = 300;

fn secret() -> Secret {
    Secret::new(b"benchmark shared secret".to_vec())
}

fn client_options() -> Options {
    Options::new().secret(Some(secret()))
}

fn server_options() -> ServerOptions {
    ServerOptions::new().pipe(client_options()).max_sessions(SESSIONS + 10)
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * fraction).round() as usize]
}

async fn reconnect_latency() {
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let listener = Listener::tcp(tcp, server_options()).expect("listener");
    let current = Arc::new(Mutex::new(None));
    let mut client = BackedPipe::connect(CuttableDialer { addr, current: Arc::clone(&current) }, client_options());
    client.connected().await.expect("connected");
    let mut session = listener.accept().await.expect("session");
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        samples.push(timed_resume(&mut client, &mut session, &current).await);
    }
    samples.sort();
    println!(
        "resume through the server (loopback TCP, HMAC; cut, write 1 byte, session reads it), {SAMPLES} samples: \
         median {:?}, p99 {:?}, max {:?}",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples[samples.len() - 1],
    );
    println!("listener: {:?}", listener.stats());
}

async fn idle_sessions_memory() {
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let listener = Listener::tcp(tcp, server_options()).expect("listener");
    // One session first, so that the runtime and the listener's own
    // allocations are in the baseline.
    let warm = BackedPipe::connect(TcpDialer::new(addr.to_string()), client_options());
    warm.connected().await.expect("warm-up client");
    let mut sessions = vec![listener.accept().await.expect("session")];
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib();

    let mut clients = Command::new(std::env::current_exe().expect("own path"))
        .args(["clients", &addr.to_string(), &SESSIONS.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("client process");
    for _ in 0..SESSIONS {
        sessions.push(listener.accept().await.expect("session"));
    }
    let mut ready = String::new();
    BufReader::new(clients.stdout.take().expect("stdout")).read_line(&mut ready).expect("ready line");
    assert_eq!(ready.trim(), "ready");
    // Let the first exchanges settle and the buffers shrink to idle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib();
    println!(
        "{SESSIONS} idle sessions on the server: RSS {before} KiB -> {after} KiB, {:.1} KiB per session \
         (buffers held: {} bytes in all)",
        (after.saturating_sub(before)) as f64 / SESSIONS as f64,
        sessions.iter().map(|session| session.stats().buffer_bytes).sum::<usize>(),
    );
    drop(clients.stdin.take());
    let _ = clients.wait();
    drop(sessions);
    drop(warm);
}

/// Child process: `count` clients connected to `addr`, idle until stdin
/// closes.
fn run_clients(addr: String, count: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut clients = Vec::with_capacity(count);
        for _ in 0..count {
            let client = BackedPipe::connect(TcpDialer::new(addr.clone()), client_options());
            client.connected().await.expect("client connected");
            clients.push(client);
        }
        println!("ready");
        tokio::task::spawn_blocking(|| {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
        })
        .await
        .expect("stdin");
        drop(clients);
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("clients") {
        return run_clients(args[2].clone(), args[3].parse().expect("count"));
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(reconnect_latency());
    rt.block_on(idle_sessions_memory());
}
