//! Where a scrollback replay may begin: never inside a UTF-8 sequence and
//! never inside a terminal escape sequence.
//!
//! The scrollback ring forgets its oldest bytes, so its first retained byte
//! can be anywhere: the middle of a multi-byte character, the parameters of a
//! colour change (`ESC [ 38;5;` ... `m`), or the payload of a window title
//! (`ESC ] 0;` ... `BEL`). Replaying from there would show garbage or leave
//! the client's terminal in a state the program never asked for.
//!
//! The scanner knows the state machine of a terminal's input parser (the DEC
//! ANSI parser for 7-bit controls, with UTF-8 text in the ground state) but
//! not the state it was in at the first retained byte. So it runs the machine
//! from *every* state at once and picks the first offset at which all of them
//! agree that the parser is in the ground state, between two characters.
//! From there on a client's terminal, starting fresh, reads the bytes exactly
//! as the original one did.
//!
//! Control strings (OSC, DCS, SOS/PM/APC) end only at their terminator, so
//! plain text gives no such proof: the first retained byte could be part of
//! an enormous unterminated string. Any `ESC` (which ends every string) gives
//! the proof soon after it. The scanner therefore also computes the first
//! offset that is clean when the first retained byte is not inside a DCS,
//! SOS, PM or APC string (OSC strings, such as window titles, also end at
//! `BEL`), and the first that is clean when it is inside no control string
//! at all. It takes the most certain of the three that throws away at most
//! [`PROOF_SLACK_BYTES`] more scrollback than the least certain.

/// The number of states of the parser model.
const STATE_COUNT: usize = 17;

// The parser model's states. `GROUND_n`: the ground state with `n` UTF-8
// continuation bytes still expected.
const GROUND_0: u8 = 0;
const GROUND_1: u8 = 1;
const GROUND_2: u8 = 2;
const GROUND_3: u8 = 3;
const ESCAPE: u8 = 4;
const ESCAPE_INTERMEDIATE: u8 = 5;
const CSI_ENTRY: u8 = 6;
const CSI_PARAM: u8 = 7;
const CSI_INTERMEDIATE: u8 = 8;
const CSI_IGNORE: u8 = 9;
const OSC_STRING: u8 = 10;
const DCS_ENTRY: u8 = 11;
const DCS_PARAM: u8 = 12;
const DCS_INTERMEDIATE: u8 = 13;
const DCS_PASSTHROUGH: u8 = 14;
const DCS_IGNORE: u8 = 15;
const SOS_PM_APC_STRING: u8 = 16;

/// A set of parser states, one bit per state.
type StateSet = u32;

/// Every state.
const ALL_STATES: StateSet = (1 << STATE_COUNT) - 1;
/// The ground state, whatever the UTF-8 decoder is waiting for.
const GROUND_ANY: StateSet = 0b1111;
/// The ground state between two characters.
const GROUND_CLEAN: StateSet = 1 << GROUND_0;
/// Control strings and the DCS states that lead into one: states that only a
/// terminator (or `ESC`, `CAN`, `SUB`) leaves.
const STRING_STATES: StateSet = (1 << OSC_STRING)
    | (1 << DCS_ENTRY)
    | (1 << DCS_PARAM)
    | (1 << DCS_INTERMEDIATE)
    | (1 << DCS_PASSTHROUGH)
    | (1 << DCS_IGNORE)
    | (1 << SOS_PM_APC_STRING);

/// How much scrollback the scanner gives up, at most, to start at an offset
/// that is proven clean rather than one that is clean unless the oldest
/// retained byte sits inside a control string.
pub(crate) const PROOF_SLACK_BYTES: usize = 4096;

/// The transition of the parser model on one byte.
const fn transition(state: u8, byte: u8) -> u8 {
    // "Anywhere" transitions: CAN and SUB abort any sequence, ESC starts one
    // (and so ends any control string).
    match byte {
        0x18 | 0x1a => return GROUND_0,
        0x1b => return ESCAPE,
        _ => {}
    }
    match state {
        GROUND_0..=GROUND_3 => match byte {
            // C0 controls, printable ASCII and DEL; an unfinished UTF-8
            // sequence is abandoned.
            0x00..=0x7f => GROUND_0,
            0x80..=0xbf if state > GROUND_0 => state - 1,
            0xc2..=0xdf => GROUND_1,
            0xe0..=0xef => GROUND_2,
            0xf0..=0xf4 => GROUND_3,
            // A stray continuation byte or a byte that never occurs in UTF-8.
            _ => GROUND_0,
        },
        ESCAPE => match byte {
            0x20..=0x2f => ESCAPE_INTERMEDIATE,
            b'[' => CSI_ENTRY,
            b']' => OSC_STRING,
            b'P' => DCS_ENTRY,
            b'X' | b'^' | b'_' => SOS_PM_APC_STRING,
            0x30..=0x7e => GROUND_0,
            _ => ESCAPE,
        },
        ESCAPE_INTERMEDIATE => match byte {
            0x30..=0x7e => GROUND_0,
            _ => ESCAPE_INTERMEDIATE,
        },
        CSI_ENTRY | CSI_PARAM => match byte {
            0x20..=0x2f => CSI_INTERMEDIATE,
            0x30..=0x3b => CSI_PARAM,
            0x3c..=0x3f if state == CSI_ENTRY => CSI_PARAM,
            0x3c..=0x3f => CSI_IGNORE,
            0x40..=0x7e => GROUND_0,
            _ => state,
        },
        CSI_INTERMEDIATE => match byte {
            0x20..=0x2f => CSI_INTERMEDIATE,
            0x30..=0x3f => CSI_IGNORE,
            0x40..=0x7e => GROUND_0,
            _ => CSI_INTERMEDIATE,
        },
        CSI_IGNORE => match byte {
            0x40..=0x7e => GROUND_0,
            _ => CSI_IGNORE,
        },
        OSC_STRING => match byte {
            0x07 => GROUND_0,
            _ => OSC_STRING,
        },
        DCS_ENTRY | DCS_PARAM => match byte {
            0x20..=0x2f => DCS_INTERMEDIATE,
            0x30..=0x39 | 0x3b => DCS_PARAM,
            0x3c..=0x3f if state == DCS_ENTRY => DCS_PARAM,
            0x3a..=0x3f => DCS_IGNORE,
            0x40..=0x7e => DCS_PASSTHROUGH,
            _ => state,
        },
        DCS_INTERMEDIATE => match byte {
            0x20..=0x2f => DCS_INTERMEDIATE,
            0x30..=0x3f => DCS_IGNORE,
            0x40..=0x7e => DCS_PASSTHROUGH,
            _ => DCS_INTERMEDIATE,
        },
        // Passthrough, ignore and SOS/PM/APC strings end only at ESC, CAN or
        // SUB, handled above.
        _ => state,
    }
}

/// `TRANSITIONS[state][byte]`: the parser model as a table.
static TRANSITIONS: [[u8; 256]; STATE_COUNT] = {
    let mut table = [[0u8; 256]; STATE_COUNT];
    let mut state = 0;
    while state < STATE_COUNT {
        let mut byte = 0;
        while byte < 256 {
            table[state][byte] = transition(state as u8, byte as u8);
            byte += 1;
        }
        state += 1;
    }
    table
};

/// Every state the parser may be in after `byte`, from any state in `set`.
fn step(set: StateSet, byte: u8) -> StateSet {
    let mut next = 0;
    let mut rest = set;
    while rest != 0 {
        let state = rest.trailing_zeros() as usize;
        rest &= rest - 1;
        next |= 1 << TRANSITIONS[state][usize::from(byte)];
    }
    next
}

fn is_utf8_continuation(byte: u8) -> bool {
    byte & 0b1100_0000 == 0b1000_0000
}

/// Why the chosen start is clean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proof {
    /// The bytes are the stream from its very first byte.
    StreamStart,
    /// Clean whatever state the parser was in at the first byte.
    Proven,
    /// Clean unless the first byte was inside a DCS, SOS, PM or APC string.
    OutsideDcs,
    /// Clean unless the first byte was inside a control string (OSC, DCS,
    /// SOS, PM, APC).
    OutsideStrings,
    /// No start within [`PROOF_SLACK_BYTES`] is clean on the assumptions
    /// above (output such as `seq`'s, digits and line ends, could all be
    /// the parameters of one endless CSI sequence): the start follows the
    /// first line feed at which a parser that began in the ground state is
    /// clean. Clean unless the first byte was inside a control string or an
    /// escape sequence, which no program keeps open across lines.
    LineBoundary,
    /// Nothing retained can be shown safely: the start is the end.
    Nothing,
}

/// The first offset in `first ++ second`, scanning at most `limit` bytes, at
/// which a parser started in any state of `initial` is certainly in the
/// ground state between two characters.
///
/// An offset `p` before the end also counts when the only doubt is an
/// unfinished UTF-8 sequence and byte `p` begins a new character: in valid
/// UTF-8 nothing can be unfinished there.
fn first_clean(first: &[u8], second: &[u8], initial: StateSet, limit: usize) -> Option<usize> {
    let mut set = initial;
    for (offset, &byte) in first.iter().chain(second).enumerate().take(limit) {
        if set & !GROUND_ANY == 0 && (set == GROUND_CLEAN || !is_utf8_continuation(byte)) {
            return Some(offset);
        }
        set = step(set, byte);
    }
    let total = first.len() + second.len();
    (total <= limit && set == GROUND_CLEAN).then_some(total)
}

/// The first offset just after a line feed at which a parser that began
/// in the ground state (with any UTF-8 sequence pending) is clean.
fn first_line_start(first: &[u8], second: &[u8]) -> Option<usize> {
    let mut set = GROUND_ANY;
    for (offset, &byte) in first.iter().chain(second).enumerate() {
        set = step(set, byte);
        if byte == b'\n' && set == GROUND_CLEAN {
            return Some(offset + 1);
        }
    }
    None
}

/// The offset in the concatenation `first ++ second` at which a replay of
/// those bytes may begin, and why it is clean. `at_stream_start` says that
/// the bytes are the stream from its first byte (nothing was evicted).
///
/// Three candidates, each no earlier than the next: clean from any state;
/// clean unless the first byte is inside a DCS, SOS, PM or APC string; clean
/// unless it is inside any control string (OSC included). The first that
/// costs at most [`PROOF_SLACK_BYTES`] more than the last is chosen. When
/// even the last gives up more than [`PROOF_SLACK_BYTES`] (or there is
/// none), the start follows the first line end instead if that is earlier
/// ([`Proof::LineBoundary`]): the replay is never empty while a line ends
/// in it.
pub(crate) fn find_clean_start(first: &[u8], second: &[u8], at_stream_start: bool) -> (usize, Proof) {
    if at_stream_start {
        return (0, Proof::StreamStart);
    }
    let total = first.len() + second.len();
    let outside_strings = first_clean(first, second, ALL_STATES & !STRING_STATES, usize::MAX);
    if outside_strings.is_none_or(|offset| offset > PROOF_SLACK_BYTES)
        && let Some(line) = first_line_start(first, second)
        && outside_strings.is_none_or(|offset| line < offset)
    {
        return (line, Proof::LineBoundary);
    }
    let Some(outside_strings) = outside_strings else {
        return (total, Proof::Nothing);
    };
    // A candidate from more states is never earlier, so it only needs
    // looking for within the slack.
    let limit = outside_strings.saturating_add(PROOF_SLACK_BYTES);
    if let Some(proven) = first_clean(first, second, ALL_STATES, limit) {
        return (proven, Proof::Proven);
    }
    let outside_dcs = ALL_STATES & !(STRING_STATES & !(1 << OSC_STRING));
    if let Some(offset) = first_clean(first, second, outside_dcs, limit) {
        return (offset, Proof::OutsideDcs);
    }
    (outside_strings, Proof::OutsideStrings)
}

/// The offset in the concatenation `first ++ second` at which a replay of
/// those bytes may begin; see [`find_clean_start`].
pub(crate) fn clean_start(first: &[u8], second: &[u8], at_stream_start: bool) -> usize {
    find_clean_start(first, second, at_stream_start).0
}

#[cfg(test)]
#[path = "../tests/support/vt_model.rs"]
mod vt_model;

#[cfg(test)]
#[path = "../tests/support/coloured.rs"]
mod coloured;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boundary::coloured::coloured_output;
    use crate::boundary::vt_model::Terminal;

    /// Whether the model terminal, fed `stream[..offset]`, is clean at `offset`.
    fn model_clean_at(stream: &[u8], offset: usize) -> bool {
        let mut terminal = Terminal::default();
        terminal.feed(&stream[..offset]);
        terminal.is_clean()
    }

    #[test]
    fn table_agrees_with_the_model_terminal_from_ground() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..200 {
            let stream = coloured_output(&mut rng, 2000);
            let mut terminal = Terminal::default();
            let mut set = GROUND_CLEAN;
            for &byte in &stream {
                terminal.feed(&[byte]);
                set = step(set, byte);
                assert_eq!(set.count_ones(), 1);
                assert_eq!(set == GROUND_CLEAN, terminal.is_clean(), "after {byte:#04x}");
            }
        }
    }

    #[test]
    fn random_coloured_output_replays_from_a_clean_point() {
        let mut rng = fastrand::Rng::with_seed(42);
        for round in 0..2000 {
            let stream = coloured_output(&mut rng, 3000);
            let window_start = rng.usize(..stream.len());
            let split = rng.usize(window_start..=stream.len());
            let (first, second) = (&stream[window_start..split], &stream[split..]);
            let (offset, proof) = find_clean_start(first, second, false);
            assert!(offset <= stream.len() - window_start);
            assert!(
                model_clean_at(&stream, window_start + offset),
                "round {round}: start {offset} ({proof:?}) of window at {window_start} is not clean"
            );
        }
    }

    #[test]
    fn proven_starts_are_clean_from_any_state() {
        // Whatever precedes the window, including an unterminated string.
        let prefixes: [&[u8]; 6] =
            [b"", b"\x1b]0;a title that never", b"\x1bP1;2q#0;2;0", b"\x1b[38;5", b"\xf0\x9f", b"\x1b_G payload"];
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..500 {
            let window = coloured_output(&mut rng, 500);
            for prefix in prefixes {
                let (offset, proof) = find_clean_start(&window, &[], false);
                if proof == Proof::Proven {
                    let stream = [prefix, &window[..]].concat();
                    assert!(model_clean_at(&stream, prefix.len() + offset));
                }
            }
        }
    }

    #[test]
    fn stream_start_is_always_clean() {
        assert_eq!(find_clean_start(b"\x80abc", b"", true), (0, Proof::StreamStart));
    }

    #[test]
    fn skips_the_rest_of_a_character() {
        // "€" is e2 82 ac; the window starts at its second byte. The first
        // byte that proves the ground state is the `x`.
        let window = b"\x82\xacx euro";
        let (offset, _) = find_clean_start(window, b"", false);
        assert_eq!(&window[offset..], b" euro");
    }

    #[test]
    fn skips_the_rest_of_a_colour_sequence() {
        // The window starts inside `ESC [ 38;5;196 m`.
        let window = b";5;196mred\x1b[0m plain";
        let (offset, proof) = find_clean_start(window, b"", false);
        assert!(model_clean_at(&[b"\x1b[38".as_slice(), window].concat(), 4 + offset));
        assert_eq!(proof, Proof::Proven);
        assert_eq!(&window[offset..], b" plain");
    }

    #[test]
    fn a_window_inside_a_title_starts_after_its_terminator() {
        let window = b"tle\x07prompt$ ";
        assert_eq!(find_clean_start(window, b"", false), (4, Proof::OutsideDcs));
        let window = b"tle\x1b\\prompt$ ";
        assert_eq!(find_clean_start(window, b"", false), (5, Proof::Proven));
    }

    #[test]
    fn plain_text_is_kept_when_no_proof_is_near() {
        let mut window = vec![b'x'; 3 * PROOF_SLACK_BYTES];
        window.extend_from_slice(b"\x1b[0m");
        let (offset, proof) = find_clean_start(&window, b"", false);
        // One byte is given up: it might have ended a CSI sequence.
        assert_eq!((offset, proof), (1, Proof::OutsideStrings));
    }

    #[test]
    fn digits_and_line_ends_start_after_the_first_line_end() {
        // All of it could be the parameters of one CSI sequence.
        let window: Vec<u8> = (1..20_000).flat_map(|n| format!("{n}\r\n").into_bytes()).collect();
        let (offset, proof) = find_clean_start(&window[3..], b"", false);
        assert_eq!(proof, Proof::LineBoundary);
        assert!(window[3..][offset..].starts_with(b"2\r\n") || window[3..][offset..].starts_with(b"3\r\n"));
        assert!(offset <= 8);
    }

    #[test]
    fn the_split_between_the_two_slices_does_not_matter() {
        let mut rng = fastrand::Rng::with_seed(9);
        for _ in 0..300 {
            let window = coloured_output(&mut rng, 400);
            let whole = find_clean_start(&window, &[], false);
            for split in [0, 1, window.len() / 2, window.len()] {
                assert_eq!(find_clean_start(&window[..split], &window[split..], false), whole);
            }
        }
    }

    #[test]
    fn nothing_is_replayed_from_inside_an_endless_string() {
        let window = b"\x1bPq#0;2;0;0;0#0~~~~~~~~";
        assert_eq!(find_clean_start(window, b"", false), (window.len(), Proof::Nothing));
        // An empty window is clean only at its end.
        assert_eq!(find_clean_start(b"", b"", false).0, 0);
        assert_eq!(clean_start(b"ab", b"c", false), 1);
    }
}
