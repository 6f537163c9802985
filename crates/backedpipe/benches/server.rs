//! Criterion bench of resuming through the server: loopback TCP, the full
//! handshake with HMAC authentication, routed by a [`Listener`] to the
//! session. One sample: cut the client's connection, write one byte, time
//! until the server's session has read it. The baseline in the same group
//! is what any reconnect must pay at least: a fresh TCP connection on
//! loopback that carries one byte to the accepting side.
//!
//! `cargo run --release -p backedpipe --example server_report` prints the
//! median and p99 of the same measurement, and the server's memory per idle
//! session.

#[path = "support/links.rs"]
#[allow(dead_code)] // each target uses part of it
mod links;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backedpipe::server::{Listener, ServerOptions};
use backedpipe::{BackedPipe, Options, Secret};
use criterion::{Criterion, criterion_group, criterion_main};
use links::{CuttableDialer, timed_resume};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn reconnect_through_server(c: &mut Criterion) {
    let rt = runtime();
    let secret = Secret::new(b"benchmark shared secret".to_vec());
    let client_options = Options::new().secret(Some(secret));
    let server_options = ServerOptions::new().pipe(client_options.clone());
    let current = Arc::new(Mutex::new(None));
    let (listener, mut client, mut session, raw_listener) = rt.block_on(async {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = tcp.local_addr().expect("addr");
        let listener = Listener::tcp(tcp, server_options).expect("listener");
        let client = BackedPipe::connect(CuttableDialer { addr, current: Arc::clone(&current) }, client_options);
        client.connected().await.expect("connected");
        let session = listener.accept().await.expect("session");
        let raw = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        (listener, client, session, raw)
    });
    let raw_addr = raw_listener.local_addr().expect("addr");

    let mut group = c.benchmark_group("server_reconnect");
    group.sample_size(100);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("baseline_tcp_connect_1_byte", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                let mut byte = [0u8; 1];
                for _ in 0..iters {
                    let started = Instant::now();
                    let mut conn = TcpStream::connect(raw_addr).await.expect("connect");
                    conn.set_nodelay(true).expect("nodelay");
                    conn.write_all(b"x").await.expect("write");
                    let (mut accepted, _) = raw_listener.accept().await.expect("accept");
                    accepted.read_exact(&mut byte).await.expect("read");
                    total += started.elapsed();
                }
                total
            })
        })
    });
    group.bench_function("cut_resume_hmac_1_byte", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += timed_resume(&mut client, &mut session, &current).await;
                }
                total
            })
        })
    });
    group.finish();
    drop(listener);
}

criterion_group!(benches, reconnect_through_server);
criterion_main!(benches);
