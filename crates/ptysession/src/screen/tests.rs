//! The repaint round trip as a property, and the cases the issue names.

use alacritty_terminal::term::TermMode;
use proptest::prelude::*;

use super::compare::{round_trip, text};
use super::{Kind, Screen};
use crate::WindowSize;

/// Pieces of output a program might write.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => "[a-z ]{1,15}".prop_map(String::into_bytes),
        1 => "[äöü€✓]{1,4}".prop_map(String::into_bytes),
        1 => "[漢字あ]{1,3}".prop_map(String::into_bytes),
        1 => Just("e\u{301}".as_bytes().to_vec()),
        3 => Just(b"\r\n".to_vec()),
        1 => Just(b"\n".to_vec()),
        1 => Just(b"\r".to_vec()),
        1 => Just(b"\t".to_vec()),
        1 => Just(b"\x08".to_vec()),
        2 => (0u8..8, 0u8..8, prop::sample::select(vec![0u8, 1, 2, 3, 4, 7, 8, 9, 21, 22, 24, 27]))
            .prop_map(|(fg, bg, attr)| format!("\x1b[{attr};3{fg};4{bg}m").into_bytes()),
        1 => (0u8..=255).prop_map(|index| format!("\x1b[38;5;{index}m").into_bytes()),
        1 => (0u8..=255, 0u8..=255, 0u8..=255).prop_map(|(r, g, b)| format!("\x1b[48;2;{r};{g};{b}m").into_bytes()),
        1 => prop::sample::select(vec!["\x1b[4:3m", "\x1b[58;5;3m", "\x1b[90m", "\x1b[107m", "\x1b[0m", "\x1b[2m"])
            .prop_map(|sgr| sgr.as_bytes().to_vec()),
        2 => (1u8..9, 1u8..15).prop_map(|(row, col)| format!("\x1b[{row};{col}H").into_bytes()),
        1 => prop::sample::select(vec!["A", "B", "C", "D", "E", "F", "G", "d"])
            .prop_map(|motion| format!("\x1b[2{motion}").into_bytes()),
        1 => prop::sample::select(vec!["\x1b[K", "\x1b[1K", "\x1b[2K", "\x1b[J", "\x1b[1J", "\x1b[2J", "\x1b[3J"])
            .prop_map(|erase| erase.as_bytes().to_vec()),
        1 => prop::sample::select(vec!["\x1b[2L", "\x1b[M", "\x1b[2P", "\x1b[3@", "\x1b[2X", "\x1b[S", "\x1b[2T", "\x1bM", "\x1bD", "\x1bE"])
            .prop_map(|edit| edit.as_bytes().to_vec()),
        1 => (1u8..5, 3u8..8).prop_map(|(top, bottom)| format!("\x1b[{top};{bottom}r").into_bytes()),
        1 => Just(b"\x1b[r".to_vec()),
        1 => Just(b"\x1b[?1049h".to_vec()),
        1 => Just(b"\x1b[?1049l".to_vec()),
        2 => (
            prop::sample::select(vec![
                // Insert mode ("4") is left out: inserting wide characters
                // can leave one on the last column, which no terminal can be
                // made to show; `insert_mode_is_restored` covers the mode.
                "?1", "?6", "?7", "?25", "?1000", "?1002", "?1003", "?1004", "?1005", "?1006", "?1007", "?2004", "20",
            ]),
            any::<bool>()
        )
            .prop_map(|(mode, on)| format!("\x1b[{mode}{}", if on { 'h' } else { 'l' }).into_bytes()),
        1 => prop::sample::select(vec!["\x1b=", "\x1b>", "\x1b7", "\x1b8", "\x1b[3 q", "\x1b[6 q", "\x1b[0 q"])
            .prop_map(|esc| esc.as_bytes().to_vec()),
        1 => "[a-z ]{0,8}".prop_map(|title| format!("\x1b]2;{title}\x07").into_bytes()),
        // Queries: the model answers none, and they change nothing.
        1 => prop::sample::select(vec!["\x1b[6n", "\x1b[c", "\x1b[>c", "\x1b]11;?\x07", "\x1b[?2004$p", "\x1b[14t"])
            .prop_map(|query| query.as_bytes().to_vec()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn a_repaint_draws_the_same_screen(
        pieces in prop::collection::vec(piece(), 0..120),
        cuts in prop::collection::vec(0usize..4000, 0..8),
    ) {
        let output = pieces.concat();
        let mut cuts = cuts;
        cuts.sort_unstable();
        round_trip(&output, &cuts).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn seq_keeps_its_tail_and_history() {
    let mut screen = Screen::new(WindowSize::new(24, 80), 1000);
    let output: String = (1..=100_000).map(|n| format!("{n}\r\n")).collect();
    screen.feed(output.as_bytes());
    screen.feed(b"MARK\r\n$ ");
    let repaint = String::from_utf8(screen.repaint(Kind::Attach { rows: 24 })).unwrap();
    assert!(repaint.contains("99999\r\n100000\r\nMARK\r\n$"), "{repaint}");
    assert!(repaint.contains("\x1b[24;3H"), "the cursor after the prompt");
    assert!(repaint.contains("\r\n99000\r\n"), "history lines come first");
}

#[test]
fn a_repaint_asks_the_terminal_nothing() {
    let mut screen = Screen::new(WindowSize::new(24, 80), 100);
    screen.feed(b"\x1b[6n\x1b[c\x1b]11;?\x07\x1b[>c\x1b[?1049h\x1b[?1h\x1b[?2004h\x1b[?1000h\x1b[?1006hvim");
    let repaint = screen.repaint(Kind::Attach { rows: 24 });
    let text = String::from_utf8_lossy(&repaint);
    for query in ["\x1b[6n", "\x1b[c", "\x1b[>c", "?\x07", "$p"] {
        assert!(!text.contains(query), "{query:?} in {text:?}");
    }
    for mode in ["\x1b[?1049h", "\x1b[?1h", "\x1b[?2004h", "\x1b[?1000h", "\x1b[?1006h"] {
        assert!(text.contains(mode), "{mode:?} missing from {text:?}");
    }
}

#[test]
fn insert_mode_is_restored() {
    let mut screen = Screen::new(WindowSize::new(24, 80), 100);
    screen.feed(b"abc\x1b[4h");
    let mut fresh = Screen::new(WindowSize::new(24, 80), 200);
    fresh.feed(&screen.repaint(Kind::Attach { rows: 24 }));
    assert!(fresh.term().mode().contains(TermMode::INSERT));
    fresh.feed(b"\x1b[1GX");
    screen.feed(b"\x1b[1GX");
    assert_eq!(text(&fresh), text(&screen));
    assert!(text(&fresh)[0].starts_with("Xabc"));
}

#[test]
fn a_capture_is_the_text_of_the_screen_and_its_history() {
    let mut screen = Screen::new(WindowSize::new(3, 10), 100);
    screen.feed(b"one\r\ntwo  \r\n\x1b[1;31mred\x1b[0m x\r\n\xe6\xbc\xa2\xe5\xad\x97!");
    // The screen scrolled "one" into the history.
    assert_eq!(screen.capture(0, false), "two\nred x\n漢字!\n");
    assert_eq!(screen.capture(1, false), "one\ntwo\nred x\n漢字!\n");
    assert_eq!(screen.capture(50, false), screen.capture(1, false), "only the history there is");
    let colored = screen.capture(0, true);
    assert_eq!(colored, "two\n\x1b[0;1;31mred\x1b[0m x\n漢字!\n");
    // Scrolled into view on a terminal, the escapes draw the same screen.
    let mut shown = Screen::new(WindowSize::new(3, 10), 0);
    shown.feed(colored.trim_end().replace('\n', "\r\n").as_bytes());
    screen.feed(b"\x1b[H");
    shown.feed(b"\x1b[H");
    assert_eq!(text(&shown), text(&screen));
}

#[test]
fn a_capture_shows_the_alternate_screen_while_it_is_up() {
    let mut screen = Screen::new(WindowSize::new(2, 10), 100);
    screen.feed(b"shell\r\n$ \x1b[?1049h\x1b[Hfull");
    assert_eq!(screen.capture(10, false), "full\n\n");
    screen.feed(b"\x1b[?1049l");
    assert_eq!(screen.capture(0, false), "shell\n$\n");
}
