//! Criterion benchmarks: a child writing 256 MiB read through a session
//! (one client, eight clients) against a plain read loop on a raw PTY
//! master, in the same group; and the latency of attaching to a session
//! with a full 64 KiB scrollback.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ptysession::{Event, Options, Session};
use rustix::fs::{Mode, OFlags};
use rustix::pty::OpenptFlags;

const OUTPUT_BYTES: u64 = 256 << 20;
/// The terminal's echo of the line that starts the writer.
const ECHO: &[u8] = b"go\r\n";

/// A child that waits for a line of input, then writes `OUTPUT_BYTES`; the
/// reader is in place before the first byte.
fn writer_command() -> Command {
    let mut command = Command::new("sh");
    command.args(["-c", &format!("read go; exec head -c {OUTPUT_BYTES} /dev/zero")]);
    command
}

/// The baseline: the same child on a raw PTY, its master read in a plain
/// blocking loop until the end of output.
fn raw_master_read() -> u64 {
    let master = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
    rustix::pty::grantpt(&master).unwrap();
    rustix::pty::unlockpt(&master).unwrap();
    let name = rustix::pty::ptsname(&master, Vec::new()).unwrap();
    let slave =
        rustix::fs::open(name.as_c_str(), OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC, Mode::empty()).unwrap();
    let mut command = writer_command();
    command.stdin(Stdio::null()).stdout(Stdio::from(slave)).stderr(Stdio::null());
    let mut child = command.spawn().unwrap();
    // The command holds the slave; drop it so that the end of output shows.
    drop(command);
    let mut master = std::fs::File::from(master);
    std::io::Write::write_all(&mut master, b"go\n").unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        match master.read(&mut buf) {
            Ok(0) => break,
            Ok(count) => total += count as u64,
            Err(err) if err.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => break,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => panic!("reading the master: {err}"),
        }
    }
    child.wait().unwrap();
    total - ECHO.len() as u64
}

/// The same child in a session with `clients` attached clients, each read by
/// its own task until the exit status; returns the bytes one client got.
async fn session_read(clients: usize) -> u64 {
    // Queues large enough that no client lags: this measures throughput.
    let options = Options::new().client_queue_bytes(64 << 20).first_attach_timeout(None);
    let session = Session::spawn(writer_command(), options).unwrap();
    let readers: Vec<_> = (0..clients)
        .map(|_| {
            let mut client = session.attach(None).unwrap();
            tokio::spawn(async move {
                let mut total = client.replay().len() as u64;
                loop {
                    match client.next().await {
                        Some(Event::Output(data)) => total += data.len() as u64,
                        Some(Event::Exited(_)) => return total,
                        other => panic!("unexpected {other:?}"),
                    }
                }
            })
        })
        .collect();
    session.attach(None).unwrap().write("go\n").await.unwrap();
    let mut totals = Vec::new();
    for reader in readers {
        totals.push(reader.await.unwrap());
    }
    session.close().await;
    assert!(totals.iter().all(|total| *total == totals[0]));
    totals[0] - ECHO.len() as u64
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn output(c: &mut Criterion) {
    let runtime = runtime();
    let mut group = c.benchmark_group("output_256mib");
    group.throughput(Throughput::Bytes(OUTPUT_BYTES)).sample_size(10).measurement_time(Duration::from_secs(15));
    group.bench_function("raw_master_read_loop", |b| b.iter(|| assert_eq!(raw_master_read(), OUTPUT_BYTES)));
    group.bench_function("session_1_client", |b| {
        b.iter(|| assert_eq!(runtime.block_on(session_read(1)), OUTPUT_BYTES));
    });
    group.bench_function("session_8_clients", |b| {
        b.iter(|| assert_eq!(runtime.block_on(session_read(8)), OUTPUT_BYTES));
    });
    group.finish();
}

fn attach(c: &mut Criterion) {
    let runtime = runtime();
    let _guard = runtime.enter();
    // Fill the 64 KiB scrollback with coloured, multi-byte lines, then wait.
    let mut command = Command::new("sh");
    command.args([
        "-c",
        "i=0; while [ $i -lt 4000 ]; do printf '\\033[3%dmline %d — ünïcödé ✓\\033[0m\\n' $((i % 8)) $i; \
         i=$((i + 1)); done; exec sleep 1000",
    ]);
    let session = Session::spawn(command, Options::new().first_attach_timeout(None)).unwrap();
    runtime.block_on(async {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while session.stats().bytes_out < 100_000 {
            assert!(std::time::Instant::now() < deadline, "the scrollback did not fill");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let mut group = c.benchmark_group("attach_full_64kib_scrollback");
    group.bench_function("attach_and_detach", |b| {
        b.iter(|| {
            let client = session.attach(None).unwrap();
            assert!(client.replay().len() > 60_000);
            client
        });
    });
    let scrollback = vec![1u8; 64 * 1024];
    group.bench_function("baseline_copy_64kib", |b| b.iter(|| scrollback.clone()));
    group.finish();
    runtime.block_on(session.close());
}

criterion_group!(benches, output, attach);
criterion_main!(benches);
