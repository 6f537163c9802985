//! A model of a terminal's input parser (the DEC ANSI parser for 7-bit
//! controls, UTF-8 text in the ground state), shared by the tests and the
//! fuzz target of the replay boundary.
//!
//! Written independently of the scanner's transition table, as a plain state
//! machine, so that the two check each other.

#![allow(dead_code, unreachable_pub)]

/// What the parser is in the middle of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Printing text and executing C0 controls.
    #[default]
    Ground,
    /// After `ESC`.
    Escape,
    /// After `ESC` and an intermediate byte.
    EscapeIntermediate,
    /// After `ESC [`.
    CsiEntry,
    /// Collecting CSI parameters.
    CsiParam,
    /// Collecting CSI intermediates.
    CsiIntermediate,
    /// A malformed CSI sequence, skipped to its final byte.
    CsiIgnore,
    /// After `ESC ]`, up to `BEL` or `ESC \`.
    Osc,
    /// After `ESC P`.
    DcsEntry,
    /// Collecting DCS parameters.
    DcsParam,
    /// Collecting DCS intermediates.
    DcsIntermediate,
    /// DCS payload, up to `ESC \`.
    DcsPassthrough,
    /// A malformed DCS, skipped to `ESC \`.
    DcsIgnore,
    /// After `ESC X`, `ESC ^` or `ESC _`, up to `ESC \`.
    SosPmApc,
}

/// The parser: its mode and, in the ground state, how many UTF-8
/// continuation bytes the current character still needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Terminal {
    pub mode: Mode,
    pub utf8_needed: u8,
}

impl Terminal {
    /// Feeds bytes through the parser.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.feed_byte(byte);
        }
    }

    /// Whether the parser is in the ground state between two characters.
    pub fn is_clean(&self) -> bool {
        self.mode == Mode::Ground && self.utf8_needed == 0
    }

    /// Whether the parser is inside a control string (or a DCS header).
    pub fn in_string(&self) -> bool {
        matches!(
            self.mode,
            Mode::Osc
                | Mode::DcsEntry
                | Mode::DcsParam
                | Mode::DcsIntermediate
                | Mode::DcsPassthrough
                | Mode::DcsIgnore
                | Mode::SosPmApc
        )
    }

    /// Whether the parser is inside a DCS, SOS, PM or APC string (or a DCS
    /// header): a control string that `BEL` does not end.
    pub fn in_dcs_like_string(&self) -> bool {
        self.in_string() && self.mode != Mode::Osc
    }

    fn feed_byte(&mut self, byte: u8) {
        if byte == 0x1b {
            self.utf8_needed = 0;
            self.mode = Mode::Escape;
            return;
        }
        if byte == 0x18 || byte == 0x1a {
            self.utf8_needed = 0;
            self.mode = Mode::Ground;
            return;
        }
        let is_final = (0x40..=0x7e).contains(&byte);
        let is_intermediate = (0x20..=0x2f).contains(&byte);
        self.mode = match self.mode {
            Mode::Ground => {
                self.decode_utf8(byte);
                Mode::Ground
            }
            Mode::Escape if is_intermediate => Mode::EscapeIntermediate,
            Mode::Escape => match byte {
                b'[' => Mode::CsiEntry,
                b']' => Mode::Osc,
                b'P' => Mode::DcsEntry,
                b'X' | b'^' | b'_' => Mode::SosPmApc,
                0x30..=0x7e => Mode::Ground,
                _ => Mode::Escape,
            },
            Mode::EscapeIntermediate if (0x30..=0x7e).contains(&byte) => Mode::Ground,
            Mode::EscapeIntermediate => Mode::EscapeIntermediate,
            Mode::CsiEntry | Mode::CsiParam | Mode::CsiIntermediate | Mode::CsiIgnore if is_final => Mode::Ground,
            Mode::CsiEntry => match byte {
                0x20..=0x2f => Mode::CsiIntermediate,
                0x30..=0x3f => Mode::CsiParam,
                _ => Mode::CsiEntry,
            },
            Mode::CsiParam => match byte {
                0x20..=0x2f => Mode::CsiIntermediate,
                b'0'..=b'9' | b':' | b';' => Mode::CsiParam,
                b'<'..=b'?' => Mode::CsiIgnore,
                _ => Mode::CsiParam,
            },
            Mode::CsiIntermediate => match byte {
                0x20..=0x2f => Mode::CsiIntermediate,
                0x30..=0x3f => Mode::CsiIgnore,
                _ => Mode::CsiIntermediate,
            },
            Mode::CsiIgnore => Mode::CsiIgnore,
            Mode::Osc if byte == 0x07 => Mode::Ground,
            Mode::Osc => Mode::Osc,
            Mode::DcsEntry | Mode::DcsParam | Mode::DcsIntermediate if is_final => Mode::DcsPassthrough,
            Mode::DcsEntry => match byte {
                0x20..=0x2f => Mode::DcsIntermediate,
                b':' => Mode::DcsIgnore,
                0x30..=0x3f => Mode::DcsParam,
                _ => Mode::DcsEntry,
            },
            Mode::DcsParam => match byte {
                0x20..=0x2f => Mode::DcsIntermediate,
                b'0'..=b'9' | b';' => Mode::DcsParam,
                b':' | b'<'..=b'?' => Mode::DcsIgnore,
                _ => Mode::DcsParam,
            },
            Mode::DcsIntermediate => match byte {
                0x20..=0x2f => Mode::DcsIntermediate,
                0x30..=0x3f => Mode::DcsIgnore,
                _ => Mode::DcsIntermediate,
            },
            mode @ (Mode::DcsPassthrough | Mode::DcsIgnore | Mode::SosPmApc) => mode,
        };
    }

    /// The UTF-8 decoder of the ground state: tracks how many continuation
    /// bytes the current character still needs.
    fn decode_utf8(&mut self, byte: u8) {
        self.utf8_needed = match byte.leading_ones() {
            // ASCII, including C0 controls: any unfinished character is dropped.
            0 => 0,
            // A continuation byte: one fewer needed (a stray one is dropped).
            1 => self.utf8_needed.saturating_sub(1),
            2 if byte >= 0xc2 => 1,
            3 => 2,
            4 if byte <= 0xf4 => 3,
            _ => 0,
        };
    }
}
