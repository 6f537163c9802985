//! A generator of random coloured, multi-byte terminal output, shared by the
//! tests of the replay boundary.

#![allow(dead_code, unreachable_pub)]

/// Random terminal output of about `len` bytes: words in several scripts
/// (2-, 3- and 4-byte UTF-8), SGR colour changes (16, 256 and true colour,
/// with `;` and `:`), cursor movement, private modes, window titles ended by
/// `BEL` or `ST`, charset selection, short DCS strings, tabs and line ends.
pub fn coloured_output(rng: &mut fastrand::Rng, len: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "hello",
        "wörld",
        "café",
        "naïve",
        "Ελληνικά",
        "русский",
        "日本語",
        "한국어",
        "中文字符",
        "emoji😀",
        "🚀🌍",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
        "ascii",
        "a",
        "—",
        "€100",
        "§",
        "tab\there",
    ];
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        match rng.u8(..20) {
            0..=7 => out.extend_from_slice(WORDS[rng.usize(..WORDS.len())].as_bytes()),
            8 => out.extend_from_slice(format!("\x1b[{}m", rng.u8(30..38)).as_bytes()),
            9 => out.extend_from_slice(format!("\x1b[38;5;{}m", rng.u8(..)).as_bytes()),
            10 => out.extend_from_slice(format!("\x1b[48:2::{}:{}:{}m", rng.u8(..), rng.u8(..), rng.u8(..)).as_bytes()),
            11 => out.extend_from_slice(b"\x1b[0m"),
            12 => out.extend_from_slice(format!("\x1b[{};{}H", rng.u8(1..50), rng.u8(1..200)).as_bytes()),
            13 => out.extend_from_slice(if rng.bool() { b"\x1b[?25l" } else { b"\x1b[?1049h" }),
            14 => out.extend_from_slice(format!("\x1b]0;title {} — ☃\x07", rng.u16(..)).as_bytes()),
            15 => out.extend_from_slice(format!("\x1b]2;ST title {}\x1b\\", rng.u16(..)).as_bytes()),
            16 => out.extend_from_slice(if rng.bool() { b"\x1b(B" } else { b"\x1b)0" }),
            17 => out.extend_from_slice(b"\x1bP1$r0m\x1b\\"),
            18 => out.extend_from_slice(b"\r\n"),
            _ => out.push(b' '),
        }
    }
    out
}
