//! Internals reached by the fuzz targets (built with `cfg(fuzzing)` only).

/// How the replay scanner justified its choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// The bytes were the stream from its first byte.
    StreamStart,
    /// Clean whatever the terminal's state at the first byte.
    Proven,
    /// Clean unless the first byte was inside a DCS, SOS, PM or APC string.
    OutsideDcs,
    /// Clean unless the first byte was inside a control string.
    OutsideStrings,
    /// Clean unless the first byte was inside a control string or an
    /// escape sequence (the start follows a line end).
    LineBoundary,
    /// Nothing can be replayed safely.
    Nothing,
}

/// The offset in `first ++ second` at which a replay may begin, and why.
pub fn clean_start(first: &[u8], second: &[u8], at_stream_start: bool) -> (usize, Proof) {
    let (offset, proof) = crate::boundary::find_clean_start(first, second, at_stream_start);
    let proof = match proof {
        crate::boundary::Proof::StreamStart => Proof::StreamStart,
        crate::boundary::Proof::Proven => Proof::Proven,
        crate::boundary::Proof::OutsideDcs => Proof::OutsideDcs,
        crate::boundary::Proof::OutsideStrings => Proof::OutsideStrings,
        crate::boundary::Proof::LineBoundary => Proof::LineBoundary,
        crate::boundary::Proof::Nothing => Proof::Nothing,
    };
    (offset, proof)
}

/// Feeds `output` (split at `cuts`) to a screen model, draws its repaint on
/// a fresh one, and compares what both show: cells, attributes, cursor,
/// modes, title and history; then again after leaving the alternate screen,
/// and after a resynchronising repaint. `Err` says what differs.
#[cfg(feature = "screen")]
pub fn screen_round_trip(output: &[u8], cuts: &[usize]) -> Result<(), String> {
    crate::screen::compare::round_trip(output, cuts)
}
