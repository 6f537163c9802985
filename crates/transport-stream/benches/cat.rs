//! Throughput through `cat`: 64 KiB writes with a concurrent reader, via
//! [`transport_stream::Stream`] against raw `tokio::process` pipes, in the
//! same criterion group.

use std::process::Stdio;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use transport_stream::{Options, Stream};

/// Bytes moved per iteration.
const PER_ITER: usize = 8 << 20;
const CHUNK: usize = 64 << 10;

/// Writes `iters * PER_ITER` bytes on one task while reading them back on
/// this one; returns the elapsed time.
async fn pump<W, R>(mut writer: W, mut reader: R, iters: u64) -> (Duration, W, R)
where
    W: AsyncWrite + Unpin + Send + 'static,
    R: AsyncRead + Unpin,
{
    let total = PER_ITER as u64 * iters;
    let started = Instant::now();
    let write = tokio::spawn(async move {
        let chunk = vec![0x42; CHUNK];
        let mut sent = 0;
        while sent < total {
            writer.write_all(&chunk).await.expect("write");
            sent += CHUNK as u64;
        }
        writer
    });
    let mut buf = vec![0; CHUNK];
    let mut received = 0;
    while received < total {
        let count = reader.read(&mut buf).await.expect("read");
        assert!(count > 0, "cat ended early");
        received += count as u64;
    }
    let writer = write.await.expect("writer task");
    (started.elapsed(), writer, reader)
}

fn through_cat(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let mut group = c.benchmark_group("cat_64k");
    group.throughput(Throughput::Bytes(PER_ITER as u64));

    group.bench_function("tokio_process_baseline", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut child = tokio::process::Command::new("cat")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .expect("spawn cat");
                let stdin = child.stdin.take().expect("stdin");
                let stdout = child.stdout.take().expect("stdout");
                let (elapsed, stdin, _stdout) = pump(stdin, stdout, iters).await;
                drop(stdin);
                child.wait().await.expect("wait");
                elapsed
            })
        })
    });

    group.bench_function("transport_stream", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let stream = Stream::spawn(std::process::Command::new("cat"), Options::new()).expect("spawn cat");
                let handle = stream.handle();
                let (reader, writer) = stream.into_split();
                let (elapsed, _writer, _reader) = pump(writer, reader, iters).await;
                handle.close().await.expect("close");
                elapsed
            })
        })
    });
    group.finish();
}

criterion_group!(benches, through_cat);
criterion_main!(benches);
