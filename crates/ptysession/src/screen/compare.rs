//! Comparing two screens as a terminal shows them, for the repaint round
//! trip (tests and the fuzz target): a fresh emulator fed a screen's
//! repaint must show the same cells, attributes, cursor, modes, title and
//! history.
//!
//! Differences no terminal shows are not compared: the foreground and
//! attributes of a blank, the cell covered by a wide character, wrap marks
//! that editing moved off the last column, and the few cases listed in
//! [`super::render`] that a repaint cannot reproduce.

use alacritty_terminal::grid::Dimensions;
use alacritty_terminal::index::{Column, Line};
use alacritty_terminal::term::TermMode;
use alacritty_terminal::term::cell::{Cell, Flags};

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
pub(crate) struct Shown {
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
            let raw = &row[Column(col)];
            let mut cell = shown(raw);
            // The cell after a wide character is covered by it whether or
            // not it is marked as its spacer (erasing can drop the mark, or
            // leave one with no wide character before it: a blank).
            cell.flags.remove(Flags::WIDE_CHAR_SPACER);
            if after_wide && (raw.flags.contains(Flags::WIDE_CHAR_SPACER) || cell.c == ' ') {
                cell = shown(&Cell::default());
            }
            after_wide = cell.flags.contains(Flags::WIDE_CHAR);
            // A wide character whose second half was written over without
            // clearing it (erasing can leave it so) is half gone; a
            // terminal drawing the same clears it: compared as a blank.
            if after_wide && col < last {
                let next = &row[Column(col + 1)];
                if !next.flags.contains(Flags::WIDE_CHAR_SPACER) && next.c != ' ' {
                    cell.c = ' ';
                    cell.flags.remove(Flags::WIDE_CHAR);
                    cell.zerowidth.clear();
                    blank_shows_background(&mut cell);
                    after_wide = false;
                }
            }
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
#[allow(dead_code)]
pub(crate) struct State {
    modes: TermMode,
    cursor: (i32, usize, bool),
    pen: (alacritty_terminal::vte::ansi::Color, alacritty_terminal::vte::ansi::Color, Flags),
    cursor_style: alacritty_terminal::vte::ansi::CursorStyle,
    title: Option<String>,
    rows: Vec<Vec<Shown>>,
}

pub(crate) fn state(screen: &Screen) -> State {
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
        cursor: if unaddressable {
            (-1, 0, false)
        } else {
            (cursor.point.line.0, cursor.point.column.0, cursor.input_needs_wrap)
        },
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
pub(crate) fn text(screen: &Screen) -> Vec<String> {
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
pub(crate) fn difference(left: &State, right: &State) -> Option<String> {
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

pub(crate) fn history(screen: &Screen) -> Vec<Vec<Shown>> {
    let grid = screen.hidden_primary().unwrap_or(screen.term().grid());
    (1..=grid.history_size() as i32).rev().map(|back| row_of(grid, -back)).collect()
}

/// The size of the screens compared.
const SIZE: WindowSize = WindowSize { rows: 6, cols: 12 };
/// The history lines of the model.
const HISTORY: usize = 20;

/// Feeds `output` in `pieces`, repaints into a fresh screen, and checks
/// that both agree; then leaves the alternate screen in both and checks
/// the primary screens.
pub(crate) fn round_trip(output: &[u8], cuts: &[usize]) -> Result<(), String> {
    let mut model = Screen::new(SIZE, HISTORY);
    let check = |same: bool, what: &str, context: &dyn Fn() -> String| {
        if same { Ok(()) } else { Err(format!("{what} differs; {}", context())) }
    };
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
    let context =
        || format!("output {:?}\nrepaint {:?}", String::from_utf8_lossy(output), String::from_utf8_lossy(&repaint));
    check(text(&fresh) == text(&model), &format!("text {:?} / {:?}", text(&fresh), text(&model)), &context)?;
    if let Some(difference) = difference(&state(&fresh), &state(&model)) {
        return check(false, &difference, &context);
    }
    let model_history = history(&model);
    let fresh_history = history(&fresh);
    check(fresh_history.len() >= model_history.len(), "history length", &context)?;
    check(fresh_history[fresh_history.len() - model_history.len()..] == model_history[..], "history", &context)?;

    // The screen behind the alternate one comes back too.
    if model.term().mode().contains(TermMode::ALT_SCREEN) {
        model.feed(b"\x1b[?1049l");
        fresh.feed(b"\x1b[?1049l");
        check(text(&fresh) == text(&model), "primary text", &context)?;
        if let Some(difference) = difference(&state(&fresh), &state(&model)) {
            return check(false, &format!("primary: {difference}"), &context);
        }
    }

    // A resync repaint over the fresh screen gives the same again.
    let resync = model.repaint(Kind::Resync);
    fresh.feed(&resync);
    check(text(&fresh) == text(&model), "resync text", &context)?;
    if let Some(difference) = difference(&state(&fresh), &state(&model)) {
        return check(false, &format!("resync: {difference}"), &context);
    }
    Ok(())
}
