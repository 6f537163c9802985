//! Feeds the session output workloads through three headless terminal
//! emulators (`alacritty_terminal`, `vt100`, `avt`) in 4 KiB chunks, as a
//! session's reader hands them over, and prints each one's parse
//! throughput and the size of the snapshot it can render.
//!
//! Run with `cargo run --release --manifest-path benches/emulators/Cargo.toml`
//! (add a size in MiB as the first argument; default 64).

use std::hint::black_box;
use std::time::{Duration, Instant};

use alacritty_terminal::event::VoidListener;
use alacritty_terminal::term::test::TermSize;
use alacritty_terminal::term::{Config, Term};
use alacritty_terminal::vte::ansi::Processor;

const ROWS: u16 = 24;
const COLS: u16 = 80;
const SCROLLBACK_LINES: usize = 1000;
const CHUNK_BYTES: usize = 4096;

/// One emulator, fed chunk by chunk.
trait Emulator {
    const NAME: &'static str;
    fn new() -> Self;
    fn feed(&mut self, chunk: &[u8]);
}

struct Alacritty {
    term: Term<VoidListener>,
    parser: Processor,
}

impl Emulator for Alacritty {
    const NAME: &'static str = "alacritty_terminal 0.26";
    fn new() -> Self {
        let config = Config { scrolling_history: SCROLLBACK_LINES, ..Config::default() };
        let size = TermSize::new(COLS.into(), ROWS.into());
        Self { term: Term::new(config, &size, VoidListener), parser: Processor::new() }
    }
    fn feed(&mut self, chunk: &[u8]) {
        self.parser.advance(&mut self.term, chunk);
    }
}

struct Vt100(vt100::Parser);

impl Emulator for Vt100 {
    const NAME: &'static str = "vt100 0.18";
    fn new() -> Self {
        let size = |n: u16| std::num::NonZeroU16::new(n).unwrap();
        Self(vt100::Parser::new(size(ROWS), size(COLS), SCROLLBACK_LINES))
    }
    fn feed(&mut self, chunk: &[u8]) {
        self.0.process(chunk);
    }
}

/// avt takes text: the bytes go through a UTF-8 decoder that carries an
/// incomplete sequence over to the next chunk, as a session would have to.
struct Avt {
    terminal: avt::Terminal,
    pending: Vec<u8>,
}

impl Emulator for Avt {
    const NAME: &'static str = "avt 0.19";
    fn new() -> Self {
        let terminal = avt::Terminal::with_scrollback(COLS.into(), ROWS.into(), Some(SCROLLBACK_LINES)).unwrap();
        Self { terminal, pending: Vec::new() }
    }
    fn feed(&mut self, chunk: &[u8]) {
        self.pending.extend_from_slice(chunk);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(text) => text.len(),
            Err(err) if err.error_len().is_none() => err.valid_up_to(),
            Err(_) => {
                let text = String::from_utf8_lossy(&self.pending).into_owned();
                self.terminal.feed(text.as_str());
                self.pending.clear();
                return;
            }
        };
        let text = std::str::from_utf8(&self.pending[..valid]).unwrap();
        self.terminal.feed(text);
        self.pending.drain(..valid);
    }
}

/// The workloads: the session bench's (`head -c N /dev/zero`), `seq`,
/// coloured text, and `base64` of random bytes, each with the terminal's
/// `\n` → `\r\n`.
fn workloads(bytes: usize) -> Vec<(&'static str, Vec<u8>)> {
    let mut seq = Vec::with_capacity(bytes + 32);
    let mut line = 1u64;
    while seq.len() < bytes {
        seq.extend_from_slice(format!("{line}\r\n").as_bytes());
        line += 1;
    }
    let mut coloured = Vec::with_capacity(bytes + 128);
    let mut index = 0u64;
    while coloured.len() < bytes {
        let text = format!(
            "\x1b[3{}mline {index} \x1b[1m—\x1b[0m ünïcödé ✓ \x1b[38;5;{}m{}\x1b[0m\r\n",
            index % 8,
            index % 256,
            "x".repeat((index % 40) as usize)
        );
        coloured.extend_from_slice(text.as_bytes());
        index += 1;
    }
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut base64 = Vec::with_capacity(bytes + 80);
    while base64.len() < bytes {
        for _ in 0..76 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            base64.push(alphabet[(state % 64) as usize]);
        }
        base64.extend_from_slice(b"\r\n");
    }
    for workload in [&mut seq, &mut coloured, &mut base64] {
        workload.truncate(bytes);
    }
    vec![("zeros (bench)", vec![0; bytes]), ("seq", seq), ("coloured", coloured), ("base64", base64)]
}

fn measure<E: Emulator>(data: &[u8]) -> Duration {
    let mut emulator = E::new();
    let started = Instant::now();
    for chunk in data.chunks(CHUNK_BYTES) {
        emulator.feed(black_box(chunk));
    }
    let elapsed = started.elapsed();
    black_box(&emulator);
    elapsed
}

/// Resident memory of this process, in KiB.
fn rss_kib() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = statm.split_whitespace().nth(1).and_then(|pages| pages.parse().ok()).expect("resident pages");
    pages * 4
}

/// Memory per emulator with a full screen and full history of coloured
/// 80-column lines: the growth of this process's RSS over `COUNT` of them.
fn memory<E: Emulator>() -> usize {
    const COUNT: usize = 20;
    let line = "\x1b[32mcoloured\x1b[0m text to fill a line of eighty columns, with some more words: abcdefghij\r\n";
    let lines: String = (0..(SCROLLBACK_LINES + usize::from(ROWS)) * 2).map(|_| line).collect();
    let before = rss_kib();
    let emulators: Vec<E> = (0..COUNT)
        .map(|_| {
            let mut emulator = E::new();
            emulator.feed(lines.as_bytes());
            emulator
        })
        .collect();
    let grown = rss_kib().saturating_sub(before);
    drop(black_box(emulators));
    grown / COUNT
}

fn main() {
    let mib: usize = std::env::args().nth(1).map_or(64, |arg| arg.parse().expect("a size in MiB"));
    println!(
        "{mib} MiB per workload, {CHUNK_BYTES}-byte chunks, {ROWS}x{COLS}, {SCROLLBACK_LINES} history lines; best of 3"
    );
    println!("| workload | {} | {} | {} |", Alacritty::NAME, Vt100::NAME, Avt::NAME);
    println!("| --- | --- | --- | --- |");
    for (name, data) in workloads(mib << 20) {
        let rate = |time: Duration| format!("{:.0} MB/s", data.len() as f64 / time.as_secs_f64() / 1e6);
        let best = |run: fn(&[u8]) -> Duration| (0..3).map(|_| run(&data)).min().unwrap();
        let alacritty = best(measure::<Alacritty>);
        let vt100 = best(measure::<Vt100>);
        let avt = best(measure::<Avt>);
        println!("| {name} | {} | {} | {} |", rate(alacritty), rate(vt100), rate(avt));
    }
    println!(
        "| memory, full screen and {SCROLLBACK_LINES} history lines | {} KiB | {} KiB | {} KiB |",
        memory::<Alacritty>(),
        memory::<Vt100>(),
        memory::<Avt>()
    );
}
