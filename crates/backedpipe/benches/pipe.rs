//! Criterion benches of `BackedPipe` against a raw `AF_UNIX` socket pair, in
//! the same groups: one way (64 KiB writes, 64 KiB read buffer), both ways
//! at once, one way with the connection cut every 64 MiB, and the reconnect
//! latency (cut, write one byte, time until the peer has read it; with
//! HMAC authentication).
//!
//! The one-way group also has `raw_copy_ring_2mib`: the raw pair with the
//! writer copying every chunk into a 2 MiB ring first (the size the pipe's
//! replay buffer reaches in this workload), the least any replay buffer
//! costs.
//!
//! The groups move 64–128 MiB per iteration so that a run stays short;
//! `cargo run --release -p backedpipe --example bench_report` measures the
//! same workloads at 1 GiB, plus peak RSS and idle-pipe memory.

#[path = "support/links.rs"]
#[allow(dead_code)] // each target uses part of it
mod links;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use backedpipe::{Options, Secret};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use links::{Cutter, cut, read_n, timed_resume, unix_pipes};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::runtime::Runtime;

const CHUNK: usize = 64 << 10;
const ONE_WAY: u64 = 64 << 20;
const BOTH_WAYS: u64 = 32 << 20;
const CUT_EVERY: u64 = 64 << 20;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

async fn write_n<W: AsyncWrite + Unpin>(writer: &mut W, bytes: u64, cutter: Option<&Cutter>) {
    let chunk = vec![0x5Au8; CHUNK];
    let mut written = 0;
    while written < bytes {
        writer.write_all(black_box(&chunk)).await.expect("write");
        written += CHUNK as u64;
        if let Some(current) = cutter
            && written % CUT_EVERY == 0
        {
            cut(current);
        }
    }
}

/// Like `write_n`, copying each chunk into a ring first, as a replay
/// buffer must.
async fn write_n_copying<W: AsyncWrite + Unpin>(writer: &mut W, bytes: u64, ring: &mut [u8]) {
    let chunk = vec![0x5Au8; CHUNK];
    let mut written = 0;
    let mut at = 0;
    while written < bytes {
        ring[at..at + CHUNK].copy_from_slice(black_box(&chunk));
        writer.write_all(&ring[at..at + CHUNK]).await.expect("write");
        at = (at + CHUNK) % ring.len();
        written += CHUNK as u64;
    }
}

fn one_way_group(c: &mut Criterion, name: &str, bytes: u64, cuts: bool) {
    let rt = runtime();
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(bytes));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));

    let mut raw = Some(rt.block_on(async { UnixStream::pair().expect("pair") }));
    group.bench_function("raw_socketpair", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (mut a, mut z) = raw.take().expect("pair");
                let writer = tokio::spawn(async move {
                    write_n(&mut a, bytes, None).await;
                    a
                });
                let reader = tokio::spawn(async move {
                    read_n(&mut z, bytes).await;
                    z
                });
                raw = Some((writer.await.expect("writer"), reader.await.expect("reader")));
            })
        })
    });
    if !cuts {
        let mut ring = Some(vec![0u8; 2 << 20]);
        group.bench_function("raw_copy_ring_2mib", |b| {
            b.iter(|| {
                rt.block_on(async {
                    let (mut a, mut z) = raw.take().expect("pair");
                    let mut copy_into = ring.take().expect("ring");
                    let writer = tokio::spawn(async move {
                        write_n_copying(&mut a, bytes, &mut copy_into).await;
                        (a, copy_into)
                    });
                    let reader = tokio::spawn(async move {
                        read_n(&mut z, bytes).await;
                        z
                    });
                    let (a, copy_into) = writer.await.expect("writer");
                    ring = Some(copy_into);
                    raw = Some((a, reader.await.expect("reader")));
                })
            })
        });
    }

    let (client, server, current) = rt.block_on(unix_pipes(Options::new()));
    let mut pair = Some((client, server));
    group.bench_function("backedpipe", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (mut client, mut server) = pair.take().expect("pipes");
                let cutter = cuts.then(|| Arc::clone(&current));
                let writer = tokio::spawn(async move {
                    write_n(&mut client, bytes, cutter.as_ref()).await;
                    client
                });
                let reader = tokio::spawn(async move {
                    read_n(&mut server, bytes).await;
                    server
                });
                pair = Some((writer.await.expect("writer"), reader.await.expect("reader")));
            })
        })
    });
    group.finish();
    if cuts {
        let (client, _) = pair.as_ref().expect("pipes");
        // Unless a filter left the group out: then nothing was written.
        let ran = client.stats().bytes_sent > 0;
        assert!(!ran || client.stats().reconnects > 0, "the cut group did not cut");
    }
}

fn one_way(c: &mut Criterion) {
    one_way_group(c, "one_way_64mib", ONE_WAY, false);
}

fn cut_every_64mib(c: &mut Criterion) {
    one_way_group(c, "one_way_128mib_cut_every_64mib", 2 * CUT_EVERY, true);
}

fn both_ways(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("both_ways_32mib_each");
    group.throughput(Throughput::Bytes(2 * BOTH_WAYS));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));

    let (a, z) = rt.block_on(async { UnixStream::pair().expect("pair") });
    let mut raw = Some((a.into_split(), z.into_split()));
    group.bench_function("raw_socketpair", |b| {
        b.iter(|| {
            rt.block_on(async {
                let ((mut ar, mut aw), (mut zr, mut zw)) = raw.take().expect("pair");
                let w1 = tokio::spawn(async move {
                    write_n(&mut aw, BOTH_WAYS, None).await;
                    aw
                });
                let w2 = tokio::spawn(async move {
                    write_n(&mut zw, BOTH_WAYS, None).await;
                    zw
                });
                let r1 = tokio::spawn(async move {
                    read_n(&mut ar, BOTH_WAYS).await;
                    ar
                });
                let r2 = tokio::spawn(async move {
                    read_n(&mut zr, BOTH_WAYS).await;
                    zr
                });
                let (aw, zw) = (w1.await.expect("w1"), w2.await.expect("w2"));
                let (ar, zr) = (r1.await.expect("r1"), r2.await.expect("r2"));
                raw = Some(((ar, aw), (zr, zw)));
            })
        })
    });

    let (client, server, _) = rt.block_on(unix_pipes(Options::new()));
    let mut halves = Some((client.into_split(), server.into_split()));
    group.bench_function("backedpipe", |b| {
        b.iter(|| {
            rt.block_on(async {
                let ((mut cr, mut cw), (mut sr, mut sw)) = halves.take().expect("pipes");
                let w1 = tokio::spawn(async move {
                    write_n(&mut cw, BOTH_WAYS, None).await;
                    cw
                });
                let w2 = tokio::spawn(async move {
                    write_n(&mut sw, BOTH_WAYS, None).await;
                    sw
                });
                let r1 = tokio::spawn(async move {
                    read_n(&mut cr, BOTH_WAYS).await;
                    cr
                });
                let r2 = tokio::spawn(async move {
                    read_n(&mut sr, BOTH_WAYS).await;
                    sr
                });
                let (cw, sw) = (w1.await.expect("w1"), w2.await.expect("w2"));
                let (cr, sr) = (r1.await.expect("r1"), r2.await.expect("r2"));
                halves = Some(((cr, cw), (sr, sw)));
            })
        })
    });
    group.finish();
}

fn reconnect(c: &mut Criterion) {
    let rt = runtime();
    let options = Options::new().secret(Some(Secret::new(b"benchmark shared secret".to_vec())));
    let (mut client, mut server, current) = rt.block_on(unix_pipes(options));
    let mut group = c.benchmark_group("reconnect");
    group.sample_size(100);
    group.bench_function("cut_write_1_byte_until_read_hmac", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += timed_resume(&mut client, &mut server, &current).await;
                }
                total
            })
        })
    });
    group.finish();
}

criterion_group!(benches, one_way, both_ways, cut_every_64mib, reconnect);
criterion_main!(benches);
