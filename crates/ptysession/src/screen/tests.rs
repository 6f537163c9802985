//! The repaint round trip: a fresh emulator fed a screen's repaint shows
//! the same cells, attributes, cursor, modes, title and history.

use alacritty_terminal::grid::Dimensions;
use alacritty_terminal::index::{Column, Line};
use alacritty_terminal::term::TermMode;
use alacritty_terminal::term::cell::{Cell, Flags};
use proptest::prelude::*;

use super::{Kind, Screen};
use crate::WindowSize;

/// The modes a repaint restores.
const RESTORED_MODES: TermMode = TermMode::SHOW_CURSOR
    .union(TermMode::APP_CURSOR)
    .union(TermMode::APP_KEYPAD)
    .union(TermMode::MOUSE_MODE)
    .union(TermMode::SGR_MOUSE)
    .union(TermMode::UTF8_MOUSE)
    .union(TermMode::BRACKETED_PASTE)
    .union(TermMode::FOCUS_IN_OUT)
    .union(TermMode::ALTERNATE_SCROLL)
    .union(TermMode::LINE_WRAP)
    .union(TermMode::ORIGIN)
    .union(TermMode::INSERT)
    .union(TermMode::LINE_FEED_NEW_LINE)
    .union(TermMode::ALT_SCREEN);

/// A cell as compared: what it shows.
#[derive(Debug, PartialEq)]
struct Shown {
    c: char,
    fg: alacritty_terminal::vte::ansi::Color,
    bg: alacritty_terminal::vte::ansi::Color,
    flags: Flags,
    zerowidth: Vec<char>,
    underline: Option<alacritty_terminal::vte::ansi::Color>,
}

fn shown(cell: &Cell) -> Shown {
    let mut shown = Shown {
        c: if cell.c == '\t' { ' ' } else { cell.c },
        fg: cell.fg,
        bg: cell.bg,
        flags: cell.flags,
        zerowidth: cell.zerowidth().map(<[char]>::to_vec).unwrap_or_default(),
        // Shown only with an underline.
        underline: cell.underline_color().filter(|_| cell.flags.intersects(Flags::ALL_UNDERLINES)),
    };
    blank_shows_background(&mut shown);
    shown
}

/// A space shows only its background, unless something is drawn over it.
fn blank_shows_background(cell: &mut Shown) {
    let drawn_over = Flags::INVERSE | Flags::ALL_UNDERLINES | Flags::STRIKEOUT;
    if cell.c == ' ' && !cell.flags.intersects(drawn_over) && cell.zerowidth.is_empty() {
        cell.fg = alacritty_terminal::vte::ansi::Color::Named(alacritty_terminal::vte::ansi::NamedColor::Foreground);
        cell.flags &= Flags::WRAPLINE | Flags::WIDE_CHAR_SPACER | Flags::LEADING_WIDE_CHAR_SPACER;
        cell.underline = None;
    }
}

fn row_of(grid: &alacritty_terminal::grid::Grid<Cell>, line: i32) -> Vec<Shown> {
    let row = &grid[Line(line)];
    let last = grid.columns() - 1;
    let mut after_wide = false;
    (0..=last)
        .map(|col| {
            let mut cell = shown(&row[Column(col)]);
            // The cell after a wide character is covered by it whether or
            // not it is marked as its spacer (erasing can drop the mark, or
            // leave one with no wide character before it: a blank).
            cell.flags.remove(Flags::WIDE_CHAR_SPACER);
            if after_wide {
                cell = shown(&Cell::default());
            }
            after_wide = cell.flags.contains(Flags::WIDE_CHAR);
            // Half a wide character on the last column (pushed there by
            // inserting) shows as a blank.
            if col == last && after_wide {
                cell.flags.remove(Flags::WIDE_CHAR);
                cell.c = ' ';
                cell.zerowidth.clear();
                blank_shows_background(&mut cell);
            }
            // Wrap marks mean something on the last column only (editing
            // the line can move them elsewhere, where no terminal shows them).
            if col != last {
                cell.flags.remove(Flags::WRAPLINE);
            }
            // A blank, whether or not a wide character followed it once.
            cell.flags.remove(Flags::LEADING_WIDE_CHAR_SPACER);
            cell
        })
        .collect()
}

/// Everything a repaint promises, as seen in `screen`.
#[derive(Debug, PartialEq)]
struct State {
    modes: TermMode,
    cursor: (i32, usize, bool),
    pen: (alacritty_terminal::vte::ansi::Color, alacritty_terminal::vte::ansi::Color, Flags),
    cursor_style: alacritty_terminal::vte::ansi::CursorStyle,
    title: Option<String>,
    rows: Vec<Vec<Shown>>,
}

fn state(screen: &Screen) -> State {
    let term = screen.term();
    let grid = term.grid();
    let cursor = &grid.cursor;
    // In origin mode, a cursor outside the scrolling region (put there by
    // leaving the alternate screen) cannot be addressed; not compared.
    let unaddressable = term.mode().contains(TermMode::ORIGIN)
        && screen.extra.scroll_region.is_some_and(|(top, bottom)| {
            let row = cursor.point.line.0 + 1;
            row < top as i32 || row > bottom as i32
        });
    State {
        modes: *term.mode() & RESTORED_MODES,
        cursor: if unaddressable { (-1, 0, false) } else { (cursor.point.line.0, cursor.point.column.0, cursor.input_needs_wrap) },
        pen: (cursor.template.fg, cursor.template.bg, cursor.template.flags),
        cursor_style: term.cursor_style(),
        title: screen.title(),
        rows: (0..grid.screen_lines() as i32)
            .map(|line| {
                let mut row = row_of(grid, line);
                // A wrap on the bottom line (possible only when a scrolling
                // region leaves it out) is not reproduced: nothing follows.
                // Nor one on the line where the cursor waits to wrap (drawing
                // the last cell again to make it wait clears the mark).
                if cursor.input_needs_wrap && line == cursor.point.line.0 {
                    row.last_mut().unwrap().flags.remove(Flags::WRAPLINE);
                }
                if line == grid.screen_lines() as i32 - 1 {
                    let last = row.last_mut().unwrap();
                    if last.flags.contains(Flags::LEADING_WIDE_CHAR_SPACER) {
                        *last = shown(&Cell::default());
                    }
                    last.flags.remove(Flags::WRAPLINE);
                }
                row
            })
            .collect(),
    }
}

/// The screen as text, one string a row, `|` for a wrapped row's end.
fn text(screen: &Screen) -> Vec<String> {
    state(screen)
        .rows
        .iter()
        .map(|row| {
            let mut text: String = row.iter().map(|cell| cell.c).collect();
            if row.last().is_some_and(|cell| cell.flags.contains(Flags::WRAPLINE)) {
                text.push('|');
            }
            text
        })
        .collect()
}

/// The first difference between two states, if any.
fn difference(left: &State, right: &State) -> Option<String> {
    for (row, (a, b)) in left.rows.iter().zip(&right.rows).enumerate() {
        for (col, (a, b)) in a.iter().zip(b).enumerate() {
            if a != b {
                return Some(format!("cell {row},{col}: {a:?} != {b:?}"));
            }
        }
    }
    let unaddressable = left.cursor.0 < 0 || right.cursor.0 < 0;
    let strip = |state: &State| {
        let cursor = if unaddressable { None } else { Some(state.cursor) };
        format!("{:?} {:?} {:?} {:?} {:?}", state.modes, cursor, state.pen, state.cursor_style, state.title)
    };
    (strip(left) != strip(right)).then(|| format!("{} != {}", strip(left), strip(right)))
}

fn history(screen: &Screen) -> Vec<Vec<Shown>> {
    let grid = screen.hidden_primary().unwrap_or(screen.term().grid());
    (1..=grid.history_size() as i32).rev().map(|back| row_of(grid, -back)).collect()
}

const SIZE: WindowSize = WindowSize { rows: 6, cols: 12 };
const HISTORY: usize = 20;

/// Feeds `output` in `pieces`, repaints into a fresh screen, and checks
/// that both agree; then leaves the alternate screen in both and checks
/// the primary screens.
fn round_trip(output: &[u8], cuts: &[usize]) -> Result<(), TestCaseError> {
    let mut model = Screen::new(SIZE, HISTORY);
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&output.len())) {
        let cut = cut.clamp(start, output.len());
        model.feed(&output[start..cut]);
        start = cut;
    }
    let repaint = model.repaint(Kind::Attach { rows: usize::from(SIZE.rows) });
    // Room for the history and the blank screen pushed ahead of it.
    let mut fresh = Screen::new(SIZE, HISTORY + usize::from(SIZE.rows) + 1);
    fresh.feed(&repaint);
    let context = || format!("output {:?}\nrepaint {:?}", String::from_utf8_lossy(output), String::from_utf8_lossy(&repaint));
    prop_assert_eq!(text(&fresh), text(&model), "{}", context());
    prop_assert_eq!(difference(&state(&fresh), &state(&model)), None, "{}", context());
    let model_history = history(&model);
    let fresh_history = history(&fresh);
    prop_assert!(fresh_history.len() >= model_history.len());
    prop_assert_eq!(&fresh_history[fresh_history.len() - model_history.len()..], &model_history[..]);

    // The screen behind the alternate one comes back too.
    if model.term().mode().contains(TermMode::ALT_SCREEN) {
        model.feed(b"\x1b[?1049l");
        fresh.feed(b"\x1b[?1049l");
        prop_assert_eq!(text(&fresh), text(&model), "primary; {}", context());
        prop_assert_eq!(difference(&state(&fresh), &state(&model)), None, "primary; {}", context());
    }

    // A resync repaint over the fresh screen gives the same again.
    let resync = model.repaint(Kind::Resync);
    fresh.feed(&resync);
    prop_assert_eq!(text(&fresh), text(&model), "resync; {}", context());
    prop_assert_eq!(difference(&state(&fresh), &state(&model)), None, "resync; {}", context());
    Ok(())
}

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
        round_trip(&output, &cuts)?;
    }
}

#[test]
fn seq_keeps_its_tail_and_history() {
    let mut screen = Screen::new(WindowSize::new(24, 80), 1000);
    let output: String = (1..=100_000).map(|n| format!("{n}\r\n")).collect();
    screen.feed(output.as_bytes());
    screen.feed(b"MARK\r\n$ ");
    let repaint = String::from_utf8(screen.repaint(Kind::Attach { rows: 24 })).unwrap();
    assert!(repaint.contains("99999\x1b[K\r\n100000\x1b[K\r\nMARK\x1b[K\r\n$"), "{repaint}");
    assert!(repaint.contains("\x1b[24;3H"), "the cursor after the prompt");
    assert!(repaint.contains("\r\n99000\x1b[K\r\n"), "history lines come first");
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
