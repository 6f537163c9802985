//! Fuzzes where a scrollback replay may begin: for any bytes before and in
//! the retained window, however the window is split in two, the chosen start
//! puts a model terminal in the ground state between characters, as far as
//! the scanner claims to know.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use ptysession::fuzzing::{Proof, clean_start};

#[path = "../../crates/ptysession/tests/support/vt_model.rs"]
mod vt_model;

#[derive(Arbitrary, Debug)]
struct Case {
    /// The evicted bytes before the window: the terminal's unknown state.
    evicted: Vec<u8>,
    /// The retained window.
    window: Vec<u8>,
    /// Where the ring splits the window into two slices.
    split: u16,
}

fuzz_target!(|case: Case| {
    let Case { evicted, window, split } = case;
    let split = usize::from(split) % (window.len() + 1);
    let (offset, proof) = clean_start(&window[..split], &window[split..], false);
    assert!(offset <= window.len());
    assert_eq!(clean_start(&window, &[], false), (offset, proof), "the split changed the answer");
    assert_eq!(clean_start(&window[..split], &window[split..], true).0, 0);

    let mut terminal = vt_model::Terminal::default();
    terminal.feed(&evicted);
    let at_window_start = terminal;
    terminal.feed(&window[..offset]);
    // Clean: the ground state, and no character left unfinished (in valid
    // UTF-8 none can be when the next byte begins a new one).
    let next_begins_a_character = window.get(offset).is_some_and(|byte| byte & 0xc0 != 0x80);
    let clean = terminal.mode == vt_model::Mode::Ground && (terminal.utf8_needed == 0 || next_begins_a_character);
    match proof {
        Proof::Proven => assert!(clean, "{terminal:?} at {offset}"),
        Proof::OutsideDcs => assert!(clean || at_window_start.in_dcs_like_string(), "{terminal:?} at {offset}"),
        Proof::OutsideStrings => assert!(clean || at_window_start.in_string(), "{terminal:?} at {offset}"),
        Proof::LineBoundary => {
            assert_eq!(window[offset - 1], b'\n');
            assert!(clean || at_window_start.mode != vt_model::Mode::Ground, "{terminal:?} at {offset}");
        }
        Proof::Nothing => assert_eq!(offset, window.len()),
        Proof::StreamStart => panic!("the window was not the stream's start"),
    }
});
