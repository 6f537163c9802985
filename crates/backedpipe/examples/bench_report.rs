//! One-shot measurements at full size, as recorded in docs/benchmarks.md:
//! 1 GiB one way and 512 MiB each way at once over an `AF_UNIX` socket pair
//! (raw vs `BackedPipe`, 64 KiB writes, 64 KiB read buffer), 1 GiB with the
//! connection cut every 64 MiB, reconnect latency (median of 100), peak RSS
//! of a process streaming 1 GiB, and the resident memory of idle pipes.
//!
//! ```sh
//! cargo run --release -p backedpipe --example bench_report
//! ```
//!
//! The runtime has two worker threads; `BP_BENCH_THREADS=1` runs it all on
//! one thread, as rpty's client and server do.
//!
//! The criterion benches (`cargo bench -p backedpipe`) measure the same
//! workloads at smaller sizes with statistics.

#[path = "../benches/support/links.rs"]
#[allow(dead_code)] // each target uses part of it
mod links;

use std::time::{Duration, Instant};

use backedpipe::{BackedPipe, Options};
use bytes::Bytes;
use links::{Cutter, cut, read_n, timed_resume, unix_pipes};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

/// Prints a line of the report; when the reader has gone away (`| head
/// -1`), the report ends quietly instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout().lock(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

const CHUNK: usize = 64 << 10;
const GIB: u64 = 1 << 30;

/// Two worker threads, as the Go peer runs with `GOMAXPROCS=2`; with
/// `BP_BENCH_THREADS=1`, one thread, as rpty's client and server run.
fn runtime() -> tokio::runtime::Runtime {
    if std::env::var("BP_BENCH_THREADS").is_ok_and(|threads| threads == "1") {
        return tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    }
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// Writes `bytes` in 64 KiB writes; calls `cut` at every multiple of
/// `cut_every`.
async fn write_n<W: AsyncWrite + Unpin>(writer: &mut W, bytes: u64, cut_every: u64, cut: &(dyn Fn() + Sync)) {
    let chunk = vec![0xA5u8; CHUNK];
    let mut written = 0;
    while written < bytes {
        writer.write_all(&chunk).await.expect("write");
        written += CHUNK as u64;
        if cut_every > 0 && written % cut_every == 0 && written < bytes {
            cut();
        }
    }
}

/// A pipe or write half that takes whole chunks (`write_chunk`).
trait ChunkWriter {
    async fn put(&mut self, chunk: Bytes);
}

impl ChunkWriter for BackedPipe {
    async fn put(&mut self, chunk: Bytes) {
        self.write_chunk(chunk).await.expect("write_chunk");
    }
}

impl ChunkWriter for backedpipe::OwnedWriteHalf {
    async fn put(&mut self, chunk: Bytes) {
        self.write_chunk(chunk).await.expect("write_chunk");
    }
}

/// As [`write_n`], through `write_chunk`: the caller's 64 KiB chunk is
/// handed over (a reference count), not copied, as a producer that reads
/// into a fresh buffer (rpty's terminal reader) does.
async fn write_chunks<W: ChunkWriter>(writer: &mut W, bytes: u64, cut_every: u64, cut: &(dyn Fn() + Sync)) {
    let chunk = Bytes::from(vec![0xA5u8; CHUNK]);
    let mut written = 0;
    while written < bytes {
        writer.put(chunk.clone()).await;
        written += CHUNK as u64;
        if cut_every > 0 && written % cut_every == 0 && written < bytes {
            cut();
        }
    }
}

/// How the pipe workloads write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writes {
    /// `AsyncWrite::write_all` from one reused buffer (copied into the
    /// send buffer), as the Go peer writes.
    Copied,
    /// `write_chunk` of a shared chunk: no copy.
    Chunks,
}

/// A connected pair of pipes over Unix socket pairs, and a way to cut the
/// client's current connection.
#[allow(missing_debug_implementations)]
struct Pipes {
    client: BackedPipe,
    server: BackedPipe,
    current: Cutter,
}

impl Pipes {
    async fn new() -> Pipes {
        Pipes::with_options(Options::new()).await
    }

    async fn with_options(options: Options) -> Pipes {
        let (client, server, current) = unix_pipes(options).await;
        Pipes { client, server, current }
    }
}

async fn raw_one_way(bytes: u64) -> Duration {
    let (mut a, mut b) = UnixStream::pair().expect("pair");
    let started = Instant::now();
    let writer = tokio::spawn(async move { write_n(&mut a, bytes, 0, &|| {}).await });
    let reader = tokio::spawn(async move { read_n(&mut b, bytes).await });
    reader.await.expect("reader");
    writer.await.expect("writer");
    started.elapsed()
}

async fn pipe_one_way(bytes: u64, cut_every: u64, writes: Writes) -> Duration {
    let pipes = Pipes::new().await;
    let Pipes { mut client, mut server, current } = pipes;
    let cutter = move || cut(&current);
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        match writes {
            Writes::Copied => write_n(&mut client, bytes, cut_every, &cutter).await,
            Writes::Chunks => write_chunks(&mut client, bytes, cut_every, &cutter).await,
        }
        client
    });
    let reader = tokio::spawn(async move {
        read_n(&mut server, bytes).await;
        server
    });
    let server = reader.await.expect("reader");
    let client = writer.await.expect("writer");
    if std::env::var_os("BP_DEBUG").is_some() {
        say!("client {:?} server {:?}", client.stats().buffer_bytes, server.stats().buffer_bytes);
    }
    drop(server);
    let elapsed = started.elapsed();
    if let Some(cuts) = bytes.checked_div(cut_every) {
        let stats = client.stats();
        assert!(stats.reconnects + 1 >= cuts, "{stats:?}");
    }
    elapsed
}

async fn raw_both_ways(bytes: u64) -> Duration {
    let (a, b) = UnixStream::pair().expect("pair");
    let (mut ar, mut aw) = a.into_split();
    let (mut br, mut bw) = b.into_split();
    let started = Instant::now();
    let tasks = [
        tokio::spawn(async move { write_n(&mut aw, bytes, 0, &|| {}).await }),
        tokio::spawn(async move { write_n(&mut bw, bytes, 0, &|| {}).await }),
        tokio::spawn(async move { read_n(&mut ar, bytes).await }),
        tokio::spawn(async move { read_n(&mut br, bytes).await }),
    ];
    for task in tasks {
        task.await.expect("task");
    }
    started.elapsed()
}

async fn pipe_both_ways(bytes: u64, writes: Writes) -> Duration {
    let Pipes { client, server, .. } = Pipes::new().await;
    let (mut cr, cw) = client.into_split();
    let (mut sr, sw) = server.into_split();
    let started = Instant::now();
    let writer = |mut half: backedpipe::OwnedWriteHalf| {
        tokio::spawn(async move {
            match writes {
                Writes::Copied => write_n(&mut half, bytes, 0, &|| {}).await,
                Writes::Chunks => write_chunks(&mut half, bytes, 0, &|| {}).await,
            }
            half
        })
    };
    let writers = [writer(cw), writer(sw)];
    let readers = [
        tokio::spawn(async move {
            read_n(&mut cr, bytes).await;
            cr
        }),
        tokio::spawn(async move {
            read_n(&mut sr, bytes).await;
            sr
        }),
    ];
    // Keep every half until both streams have been read whole.
    let mut halves = Vec::new();
    for task in readers {
        halves.push(task.await.expect("reader"));
    }
    let elapsed = started.elapsed();
    for task in writers {
        drop(task.await.expect("writer"));
    }
    drop(halves);
    elapsed
}

async fn reconnect_latency(rounds: usize, authenticated: bool) -> Vec<Duration> {
    let options = if authenticated {
        Options::new().secret(Some(backedpipe::Secret::new(b"benchmark shared secret".to_vec())))
    } else {
        Options::new()
    };
    let Pipes { mut client, mut server, current } = Pipes::with_options(options).await;
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        samples.push(timed_resume(&mut client, &mut server, &current).await);
    }
    samples.sort();
    samples
}

fn vm_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or(0)
}

/// Child process: stream 1 GiB one way (raw or through pipes) and print
/// the peak RSS in KiB.
fn child_stream(pipe: bool) {
    let rt = runtime();
    rt.block_on(async {
        if pipe {
            pipe_one_way(GIB, 0, Writes::Copied).await;
        } else {
            raw_one_way(GIB).await;
        }
    });
    say!("{}", vm_kib("VmHWM:"));
}

/// Child process: `count` connected, idle pipe pairs; print the RSS growth
/// per pipe in bytes.
fn child_idle(count: usize) {
    let rt = runtime();
    rt.block_on(async {
        // Warm up the runtime and allocator with one pair.
        let warm = Pipes::new().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = vm_kib("VmRSS:");
        let mut all = Vec::with_capacity(count);
        for _ in 0..count {
            let mut pipes = Pipes::new().await;
            pipes.client.write_all(b"hello").await.expect("write");
            let mut buf = [0; 5];
            pipes.server.read_exact(&mut buf).await.expect("read");
            all.push(pipes);
        }
        // Until acknowledged and the buffers are given back.
        let deadline = Instant::now() + Duration::from_secs(20);
        while all.iter().any(|p| p.client.stats().buffer_bytes + p.server.stats().buffer_bytes > 0) {
            assert!(Instant::now() < deadline, "buffers not released");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let after = vm_kib("VmRSS:");
        say!("{}", (after.saturating_sub(before)) * 1024 / (2 * count as u64));
        drop(warm);
    });
}

fn run_child(args: &[&str]) -> u64 {
    let exe = std::env::current_exe().expect("current exe");
    let output = std::process::Command::new(exe).args(args).output().expect("child");
    assert!(output.status.success(), "child {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().parse().expect("child output")
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

/// Prints the median throughputs of alternating runs and their ratio.
fn line(what: &str, bytes: u64, raw_runs: &[Duration], pipe_runs: &[Duration]) {
    let (raw, pipe) = (median(raw_runs), median(pipe_runs));
    say!(
        "{what:<26} raw {:.2} GiB/s, pipe {:.2} GiB/s: {:.2}x (median of {} alternating runs)",
        gib_per_s(bytes, raw),
        gib_per_s(bytes, pipe),
        raw.as_secs_f64() / pipe.as_secs_f64(),
        raw_runs.len(),
    );
}

fn gib_per_s(bytes: u64, time: Duration) -> f64 {
    bytes as f64 / time.as_secs_f64() / GIB as f64
}

/// Runs one workload alone, in the lines the Go peer (`../shared/peer`)
/// prints for the same workload, then the process's peak RSS:
/// `only one-way|both-ways|cut`, the same through `write_chunk`
/// (`one-way-chunk|both-ways-chunk|cut-chunk`: the caller's chunks are
/// kept, not copied; the Go pipe has no such call), the raw baselines
/// `raw-one-way|raw-both-ways`, `raw-copy` (the raw socket pair with the
/// writer copying every chunk into a 2 MiB ring first, the least a replay
/// buffer costs), and `reconnect` (with HMAC authentication) or
/// `reconnect-noauth` (as the Go peer, which has no handshake): median,
/// p90 and max of `BP_BENCH_ROUNDS` (default 100) resumes.
fn only(workload: &str) {
    let rt = runtime();
    if let Some(auth) = match workload {
        "reconnect" => Some(true),
        "reconnect-noauth" => Some(false),
        _ => None,
    } {
        let rounds = std::env::var("BP_BENCH_ROUNDS").ok().and_then(|text| text.parse().ok()).unwrap_or(100);
        // Timed from a task of the runtime's own, as the throughput
        // workloads and the Go peer (a goroutine) are: the thread of
        // `block_on` is outside the worker pool, so every wake between it
        // and the pipes' tasks would cross threads and unpark one.
        let samples = rt.block_on(async move { tokio::spawn(reconnect_latency(rounds, auth)).await.expect("task") });
        print_reconnect(&samples, if auth { "HMAC auth" } else { "no auth" });
        say!("peak RSS (VmHWM): {} KiB", vm_kib("VmHWM:"));
        return;
    }
    let elapsed = rt.block_on(async {
        match workload {
            "one-way" => pipe_one_way(GIB, 0, Writes::Copied).await,
            "both-ways" => pipe_both_ways(GIB / 2, Writes::Copied).await,
            "cut" => pipe_one_way(GIB, 64 << 20, Writes::Copied).await,
            "one-way-chunk" => pipe_one_way(GIB, 0, Writes::Chunks).await,
            "both-ways-chunk" => pipe_both_ways(GIB / 2, Writes::Chunks).await,
            "cut-chunk" => pipe_one_way(GIB, 64 << 20, Writes::Chunks).await,
            "raw-one-way" => raw_one_way(GIB).await,
            "raw-copy" => {
                let (mut a, mut b) = UnixStream::pair().expect("pair");
                let started = Instant::now();
                let writer = tokio::spawn(async move {
                    let chunk = vec![0xA5u8; CHUNK];
                    let mut ring = vec![0u8; 2 << 20];
                    let mut pos = 0;
                    let mut written = 0u64;
                    while written < GIB {
                        ring[pos..pos + CHUNK].copy_from_slice(&chunk);
                        a.write_all(&ring[pos..pos + CHUNK]).await.unwrap();
                        pos = (pos + CHUNK) % ring.len();
                        written += CHUNK as u64;
                    }
                });
                let reader = tokio::spawn(async move { read_n(&mut b, GIB).await });
                reader.await.expect("reader");
                writer.await.expect("writer");
                started.elapsed()
            }
            "raw-both-ways" => raw_both_ways(GIB / 2).await,
            other => panic!("unknown workload {other:?}"),
        }
    });
    say!("{workload}: {:.2} GiB/s", gib_per_s(GIB, elapsed));
    say!("peak RSS (VmHWM): {} KiB", vm_kib("VmHWM:"));
}

/// Prints sorted reconnect samples as the Go peer does.
fn print_reconnect(samples: &[Duration], auth: &str) {
    say!(
        "reconnect (cut, write 1 byte, peer reads it; {auth}): median {:?}, p90 {:?}, max {:?}",
        samples[samples.len() / 2],
        samples[samples.len() * 9 / 10],
        samples[samples.len() - 1]
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("stream-pipe") => return child_stream(true),
        Some("stream-raw") => return child_stream(false),
        Some("idle") => return child_idle(args.get(1).and_then(|n| n.parse().ok()).unwrap_or(1000)),
        Some("only") => return only(args.get(1).map_or("", String::as_str)),
        _ => {}
    }
    let rt = runtime();
    rt.block_on(async {
        // Warm-up.
        raw_one_way(64 << 20).await;
        pipe_one_way(64 << 20, 0, Writes::Copied).await;

        let runs = 3;
        let (mut raw, mut pipe) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            raw.push(raw_one_way(GIB).await);
            pipe.push(pipe_one_way(GIB, 0, Writes::Copied).await);
        }
        line("one way, 1 GiB", GIB, &raw, &pipe);
        let half = GIB / 2;
        let (mut raw, mut pipe) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            raw.push(raw_both_ways(half).await);
            pipe.push(pipe_both_ways(half, Writes::Copied).await);
        }
        line("both ways, 512 MiB each", GIB, &raw, &pipe);
        let (mut raw, mut pipe) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            raw.push(raw_one_way(GIB).await);
            pipe.push(pipe_one_way(GIB, 64 << 20, Writes::Copied).await);
        }
        line("cut every 64 MiB, 1 GiB", GIB, &raw, &pipe);
        // In a task of the runtime's own, as in `only reconnect`.
        let samples = tokio::spawn(reconnect_latency(100, true)).await.expect("task");
        print_reconnect(&samples, "HMAC auth");
    });
    drop(rt);
    let raw_hwm = run_child(&["stream-raw"]);
    let pipe_hwm = run_child(&["stream-pipe"]);
    say!("peak RSS streaming 1 GiB: raw {} KiB, pipe {} KiB", raw_hwm, pipe_hwm);
    let idle = run_child(&["idle", "1000"]);
    say!("idle pipe resident memory: {idle} bytes per pipe (2000 pipes)");
}
