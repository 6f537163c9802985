//! Criterion benchmarks: a child writing 256 MiB read through a session
//! (one client, eight clients; with and without the screen model) against
//! a plain read loop on a raw PTY master, in the same group, for zeros and
//! for lines of text; a 16 MiB burst of text the same way; and the latency
//! of attaching to a session with a full 64 KiB scrollback, raw and with a
//! repaint of a full screen and 1000 history lines.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ptysession::{Event, Options, Session};
use rustix::fs::{Mode, OFlags};
use rustix::pty::OpenptFlags;

const OUTPUT_BYTES: u64 = 256 << 20;
const BURST_BYTES: u64 = 16 << 20;
/// The terminal's echo of the line that starts the writer.
const ECHO: &[u8] = b"go\r\n";

/// What the child writes.
#[derive(Debug, Clone, Copy)]
enum Workload {
    /// `bytes` zero bytes (which a terminal ignores).
    Zeros(u64),
    /// `bytes` of 79-character lines of text (every byte drawn, every line
    /// scrolled).
    Text(u64),
}

impl Workload {
    fn bytes(self) -> u64 {
        match self {
            Workload::Zeros(bytes) | Workload::Text(bytes) => bytes,
        }
    }
}

/// A child that waits for a line of input, then writes its workload; the
/// reader is in place before the first byte. Text lines end in `\n`, which
/// the terminal makes `\r\n`: the `head` counts bytes before that.
fn writer_command(workload: Workload) -> Command {
    let mut command = Command::new("sh");
    let script = match workload {
        Workload::Zeros(bytes) => format!("read go; exec head -c {bytes} /dev/zero"),
        Workload::Text(bytes) => format!("read go; yes \"$(printf '%079d' 7)\" | head -c {}", bytes / 81 * 80),
    };
    command.args(["-c", &script]);
    command
}

/// The bytes a session sees for `workload` (the terminal adds a CR per line).
fn expected(workload: Workload) -> u64 {
    match workload {
        Workload::Zeros(bytes) => bytes,
        Workload::Text(bytes) => bytes / 81 * 81,
    }
}

/// The baseline: the same child on a raw PTY, its master read in a plain
/// blocking loop until the end of output.
fn raw_master_read(workload: Workload) -> u64 {
    let master = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
    rustix::pty::grantpt(&master).unwrap();
    rustix::pty::unlockpt(&master).unwrap();
    let name = rustix::pty::ptsname(&master, Vec::new()).unwrap();
    let slave =
        rustix::fs::open(name.as_c_str(), OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC, Mode::empty()).unwrap();
    let mut command = writer_command(workload);
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
async fn session_read(workload: Workload, clients: usize, model: Model) -> u64 {
    // Queues large enough that no client lags: this measures throughput.
    let options =
        Options::new().client_queue_bytes(64 << 20).first_attach_timeout(None).screen_model(model == Model::With);
    let session = Session::spawn(writer_command(workload), options).unwrap();
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

/// Whether the session keeps a screen model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Model {
    With,
    Without,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn output(c: &mut Criterion) {
    let runtime = runtime();
    for (group, workload) in [
        ("output_256mib", Workload::Zeros(OUTPUT_BYTES)),
        ("text_256mib", Workload::Text(OUTPUT_BYTES)),
        ("text_burst_16mib", Workload::Text(BURST_BYTES)),
    ] {
        let mut group = c.benchmark_group(group);
        group.throughput(Throughput::Bytes(workload.bytes())).sample_size(10);
        group.measurement_time(Duration::from_secs(if workload.bytes() > BURST_BYTES { 15 } else { 5 }));
        let bytes = expected(workload);
        group.bench_function("raw_master_read_loop", |b| b.iter(|| assert_eq!(raw_master_read(workload), bytes)));
        for (name, clients, model) in [
            ("session_1_client", 1, Model::With),
            ("session_1_client_no_screen_model", 1, Model::Without),
            ("session_8_clients", 8, Model::With),
        ] {
            group.bench_function(name, |b| {
                b.iter(|| assert_eq!(runtime.block_on(session_read(workload, clients, model)), bytes));
            });
        }
        group.finish();
    }
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
    group.bench_function("attach_screen_until_repaint", |b| {
        b.iter(|| {
            let mut client = session.attach_screen(Some(ptysession::WindowSize::new(24, 80))).unwrap();
            match runtime.block_on(client.next()) {
                Some(Event::Repaint(repaint)) => assert!(repaint.len() > 40_000, "1000 history lines and a screen"),
                other => panic!("expected a repaint, got {other:?}"),
            }
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
