//! Fuzzes the screen model's repaint: for any output, split anywhere, a
//! fresh emulator fed the repaint shows what the session's model shows
//! (cells, attributes, cursor, modes, title, history), also behind the
//! alternate screen and after a resynchronising repaint.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use ptysession::fuzzing::screen_round_trip;

#[derive(Arbitrary, Debug)]
struct Case {
    /// Output, mostly made of the pieces below so that the fuzzer reaches
    /// modes and screens quickly, with raw bytes in between.
    pieces: Vec<Piece>,
    /// Where the output is split between reads.
    cuts: Vec<u16>,
}

#[derive(Arbitrary, Debug)]
enum Piece {
    Bytes(Vec<u8>),
    Text(String),
    Known(u8),
    Goto(u8, u8),
    Sgr(u8, u8, u8),
    Region(u8, u8),
}

/// Sequences programs use, indexed by `Piece::Known`.
const KNOWN: &[&str] = &[
    "\r\n", "\x1b[?1049h", "\x1b[?1049l", "\x1b[?1h", "\x1b[?1l", "\x1b=", "\x1b>", "\x1b[?1000h", "\x1b[?1002h",
    "\x1b[?1003h", "\x1b[?1006h", "\x1b[?1005h", "\x1b[?1000l", "\x1b[?2004h", "\x1b[?2004l", "\x1b[?1004h",
    "\x1b[?7l", "\x1b[?7h", "\x1b[?25l", "\x1b[?25h", "\x1b[?6h", "\x1b[?6l", "\x1b[20h", "\x1b[20l", "\x1b]2;title\x07",
    "\x1b[6n", "\x1b[c", "\x1b]11;?\x07", "\x1b[K", "\x1b[2J", "\x1b[J", "\x1b[L", "\x1b[M", "\x1b[P", "\x1b[@",
    "\x1b[S", "\x1b[T", "\x1bM", "\x1b7", "\x1b8", "\x1b[r", "\x1b[5 q", "漢字", "e\u{301}", "\t", "\x08",
];

fuzz_target!(|case: Case| {
    let mut output = Vec::new();
    for piece in case.pieces {
        match piece {
            Piece::Bytes(bytes) => output.extend_from_slice(&bytes),
            Piece::Text(text) => output.extend_from_slice(text.as_bytes()),
            Piece::Known(index) => output.extend_from_slice(KNOWN[usize::from(index) % KNOWN.len()].as_bytes()),
            Piece::Goto(row, col) => output.extend_from_slice(format!("\x1b[{};{}H", row % 9, col % 15).as_bytes()),
            Piece::Sgr(attr, fg, bg) => {
                output.extend_from_slice(format!("\x1b[{};3{};4{}m", attr % 10, fg % 8, bg % 8).as_bytes())
            }
            Piece::Region(top, bottom) => {
                output.extend_from_slice(format!("\x1b[{};{}r", top % 7, bottom % 7).as_bytes())
            }
        }
    }
    let mut cuts: Vec<usize> = case.cuts.into_iter().map(usize::from).collect();
    cuts.sort_unstable();
    if let Err(difference) = screen_round_trip(&output, &cuts) {
        panic!("{difference}");
    }
});
