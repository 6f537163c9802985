//! The repaint: bytes that make a terminal show what the emulator shows.
//!
//! In order:
//!
//! 1. A prelude that puts the receiving terminal in a known state: the
//!    primary screen, no scrolling region, no origin mode, autowrap on,
//!    replace mode, the ASCII character set, default attributes.
//! 2. For an attach, the primary screen's history lines, written one after
//!    the other from the bottom line of the terminal, so that they scroll
//!    into the terminal's own scrollback (soft-wrapped lines are left to
//!    wrap, so that the terminal can reflow them).
//! 3. The primary screen, line by line, with colours and attributes: on a
//!    terminal of the screen's height it simply follows the history; on
//!    another, the history is scrolled off first and the screen drawn from
//!    the top, as the program addresses it. Then, if the alternate screen
//!    is active, the primary cursor, `?1049h` (which saves it) and the
//!    alternate screen.
//! 4. The scrolling region, origin mode, the cursor (position, a pending
//!    wrap, attributes in effect, shape, visibility), the input modes
//!    (cursor keys, keypad, mouse reporting and encoding, bracketed paste,
//!    focus events, alternate scroll), autowrap, insert and new-line
//!    modes, and the window title.
//!
//! Every mode is set explicitly, on or off, so that the result does not
//! depend on what the terminal held before. Nothing in a repaint asks the
//! terminal anything. Not restored: character sets other than ASCII in G0,
//! tab stops, the cursor saved with `DECSC` on the active screen, palette
//! changes, hyperlinks, the kitty keyboard protocol, and a wrap recorded on
//! the bottom line (possible only when a scrolling region leaves it out),
//! and a cursor outside the scrolling region in origin mode (it lands at
//! the region's edge).

use std::fmt::Write as _;

use alacritty_terminal::grid::{Dimensions, Grid, GridCell};
use alacritty_terminal::index::{Column, Line};
use alacritty_terminal::term::cell::{Cell, Flags};
use alacritty_terminal::term::{Term, TermMode};
use alacritty_terminal::vte::ansi::{Color, CursorShape, CursorStyle, NamedColor};

use super::Listener;

/// What a repaint includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// For a client that just attached: history lines first, into the
    /// terminal's scrollback, `rows` lines tall.
    Attach {
        /// The rows of the receiving terminal (its scrollback is fed from
        /// its bottom line).
        rows: usize,
    },
    /// For a client that fell behind: the screen only.
    Resync,
}

/// The attributes a cell is drawn with.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Pen {
    fg: Color,
    bg: Color,
    flags: Flags,
    underline: Option<Color>,
}

const DRAWN_FLAGS: Flags = Flags::INVERSE
    .union(Flags::BOLD)
    .union(Flags::ITALIC)
    .union(Flags::DIM)
    .union(Flags::HIDDEN)
    .union(Flags::STRIKEOUT)
    .union(Flags::ALL_UNDERLINES);

impl Pen {
    const DEFAULT: Pen = Pen {
        fg: Color::Named(NamedColor::Foreground),
        bg: Color::Named(NamedColor::Background),
        flags: Flags::empty(),
        underline: None,
    };

    fn of(cell: &Cell) -> Self {
        // An underline colour shows only with an underline.
        let underline = cell.underline_color().filter(|_| cell.flags.intersects(Flags::ALL_UNDERLINES));
        Self { fg: cell.fg, bg: cell.bg, flags: cell.flags & DRAWN_FLAGS, underline }
    }

    /// The SGR sequence that sets exactly this pen.
    fn write(&self, out: &mut String) {
        out.push_str("\x1b[0");
        let flags = self.flags;
        for (flag, code) in [
            (Flags::BOLD, "1"),
            (Flags::DIM, "2"),
            (Flags::ITALIC, "3"),
            (Flags::UNDERLINE, "4"),
            (Flags::DOUBLE_UNDERLINE, "4:2"),
            (Flags::UNDERCURL, "4:3"),
            (Flags::DOTTED_UNDERLINE, "4:4"),
            (Flags::DASHED_UNDERLINE, "4:5"),
            (Flags::INVERSE, "7"),
            (Flags::HIDDEN, "8"),
            (Flags::STRIKEOUT, "9"),
        ] {
            if flags.contains(flag) {
                out.push(';');
                out.push_str(code);
            }
        }
        write_color(out, self.fg, 30, 90, 38);
        write_color(out, self.bg, 40, 100, 48);
        if let Some(color) = self.underline {
            write_color(out, color, 58, 58, 58);
        }
        out.push('m');
    }
}

/// `;code` for a colour: `base + n` for the eight colours, `bright + n` for
/// the bright ones, `extended;5;n` and `extended;2;r;g;b` otherwise;
/// nothing for the default colours.
fn write_color(out: &mut String, color: Color, base: u8, bright: u8, extended: u8) {
    match color {
        Color::Named(named) => {
            let index = named as usize;
            match index {
                0..8 if base != extended => {
                    let _ = write!(out, ";{}", usize::from(base) + index);
                }
                8..16 if base != extended => {
                    let _ = write!(out, ";{}", usize::from(bright) + index - 8);
                }
                0..16 => {
                    let _ = write!(out, ";{extended};5;{index}");
                }
                // The default colours, and the dim and bright variants a
                // terminal derives for display (never stored from output).
                _ => {}
            }
        }
        Color::Indexed(index) => {
            let _ = write!(out, ";{extended};5;{index}");
        }
        Color::Spec(rgb) => {
            let _ = write!(out, ";{extended};2;{};{};{}", rgb.r, rgb.g, rgb.b);
        }
    }
}

/// Writes `lines` of `grid` one after the other from the cursor's line:
/// a line that wrapped is written to its last column and left to wrap,
/// any other ends with CR LF (except the last). Trailing blank cells are
/// not written, except up to the grid's cursor on its line (so that a
/// prompt's trailing space is drawn as the program drew it). Returns with
/// the default pen.
fn write_lines(out: &mut String, grid: &Grid<Cell>, lines: std::ops::Range<i32>) {
    let cursor = grid.cursor.point;
    let cols = grid.columns();
    let mut pen = Pen::DEFAULT;
    let last = lines.end - 1;
    let mut continued = false;
    for line in lines {
        let row = &grid[Line(line)];
        let wrapped = row[Column(cols - 1)].flags.contains(Flags::WRAPLINE);
        let used = (0..cols).rev().find(|&col| !blank(&row[Column(col)])).map_or(0, |col| col + 1);
        // A wrapped line is written to its end; the line it wrapped into
        // gets at least one cell, so that the wrap happens.
        let to_cursor = if line == cursor.line.0 { cursor.column.0.min(cols) } else { 0 };
        let end = if wrapped { cols } else { used.max(usize::from(continued)).max(to_cursor) };
        let was_continued = std::mem::replace(&mut continued, wrapped);
        let mut after_wide = false;
        for col in 0..end {
            let cell = &row[Column(col)];
            // The blank after a wide character is covered by it (marked as
            // its spacer or not, as erasing may leave it); a character
            // written over it (which the emulator lets through) is drawn. A leading spacer
            // (a wide character that did not fit here starts the next line)
            // and an orphan spacer (left by editing) are drawn as blanks,
            // in their own colours.
            let covered = after_wide && (cell.flags.contains(Flags::WIDE_CHAR_SPACER) || cell.c == ' ');
            after_wide = cell.flags.contains(Flags::WIDE_CHAR);
            if covered {
                continue;
            }
            // A wide character whose second half was written over without
            // clearing it (the emulator lets erasing leave it so) is half
            // gone: drawn as a blank, as a terminal drawing over it shows.
            let broken = after_wide
                && col + 1 < cols
                && !row[Column(col + 1)].flags.contains(Flags::WIDE_CHAR_SPACER)
                && row[Column(col + 1)].c != ' ';
            if broken {
                after_wide = false;
            }
            let cell_pen = Pen::of(cell);
            if cell_pen != pen {
                cell_pen.write(out);
                pen = cell_pen;
            }
            if broken || (cell.flags.contains(Flags::WIDE_CHAR) && col == cols - 1) {
                // Half a wide character (pushed there by inserting): no
                // terminal draws it there; a blank keeps the line in place.
                out.push(' ');
                continue;
            }
            write_char(out, cell);
        }
        if pen != Pen::DEFAULT {
            out.push_str("\x1b[0m");
            pen = Pen::DEFAULT;
        }
        // Lines are written on blank ones (scrolled in after a reset, or
        // cleared), except a line scrolled in by a wrap, which takes the
        // colour in effect then: the rest of it is cleared with the default.
        if was_continued && !wrapped && end < cols {
            out.push_str("\x1b[K");
        }
        if !wrapped && line != last {
            out.push_str("\r\n");
        }
    }
}

/// Whether a cell is what erasing leaves.
fn blank(cell: &Cell) -> bool {
    cell.is_empty() && !cell.flags.intersects(DRAWN_FLAGS)
}

/// A cell's character and its combining characters; a tab (kept in the
/// cell for copying) is drawn as the space it is.
fn write_char(out: &mut String, cell: &Cell) {
    out.push(if cell.c == '\t' || cell.c.is_control() { ' ' } else { cell.c });
    if let Some(zerowidth) = cell.zerowidth() {
        out.extend(zerowidth.iter().filter(|c| !c.is_control()));
    }
}

fn set_mode(out: &mut String, code: &str, on: bool) {
    let _ = write!(out, "\x1b[{code}{}", if on { 'h' } else { 'l' });
}

/// Moves the cursor where `grid` has it (`offset` rows above the top of
/// the region in origin mode), waiting to wrap if it is.
fn place_cursor(out: &mut String, grid: &Grid<Cell>, offset: i32) {
    let cursor = &grid.cursor;
    let cols = grid.columns();
    if cursor.input_needs_wrap {
        // Drawing the last cell again leaves the cursor waiting to wrap.
        let row = &grid[cursor.point.line];
        let mut column = Column(cols - 1);
        let last = &row[Column(cols - 1)];
        let covered = last.flags.contains(Flags::WIDE_CHAR_SPACER) || last.c == ' ';
        if cols >= 2 && row[Column(cols - 2)].flags.contains(Flags::WIDE_CHAR) && covered {
            column = Column(cols - 2);
        }
        cursor_to(out, cursor.point.line.0 - offset, column.0);
        let cell = &row[column];
        Pen::of(cell).write(out);
        write_char(out, cell);
    } else {
        cursor_to(out, cursor.point.line.0 - offset, cursor.point.column.0);
    }
}

fn cursor_to(out: &mut String, line: i32, column: usize) {
    let _ = write!(out, "\x1b[{};{}H", line + 1, column + 1);
}

/// The repaint of `term`; `primary` is the hidden primary screen while the
/// alternate one shows, `scroll_region` the region set (1-based inclusive).
pub(super) fn repaint(
    term: &Term<Listener>,
    primary: Option<&Grid<Cell>>,
    scroll_region: Option<(usize, usize)>,
    title: Option<&str>,
    kind: Kind,
) -> Vec<u8> {
    let mode = *term.mode();
    let active = term.grid();
    let alternate = mode.contains(TermMode::ALT_SCREEN);
    let primary = if alternate { primary.unwrap_or(active) } else { active };
    let rows = active.screen_lines() as i32;
    let mut out = String::with_capacity(primary.columns() * (primary.history_size() + 2 * rows as usize) * 2);

    // 1. A known state: primary screen, whole-screen region, no origin
    //    mode, autowrap, replace mode, LF without CR, ASCII, default pen.
    out.push_str("\x1b[?1049l\x1b[r\x1b[?6l\x1b[?7h\x1b[4l\x1b[20l\x1b(B\x0f\x1b[0m");

    // 2 and 3. History into the terminal's scrollback, then the primary
    //    screen. On a terminal of the screen's height, both are written
    //    from its bottom line in one run, so a line that wrapped from the
    //    history into the screen stays one line; on another height, the
    //    history is scrolled off first and the screen drawn from the top.
    match kind {
        Kind::Attach { rows: terminal_rows } if terminal_rows == rows as usize => {
            let history = primary.history_size() as i32;
            let _ = write!(out, "\x1b[{terminal_rows};1H\r\n");
            write_lines(&mut out, primary, -history..rows);
        }
        Kind::Attach { rows: terminal_rows } => {
            let history = primary.history_size() as i32;
            let _ = write!(out, "\x1b[{terminal_rows};1H");
            if history > 0 {
                out.push_str("\r\n");
                write_lines(&mut out, primary, -history..0);
            }
            out.push_str(&"\r\n".repeat(terminal_rows));
            out.push_str("\x1b[H");
            write_lines(&mut out, primary, 0..rows);
        }
        Kind::Resync => {
            out.push_str("\x1b[H\x1b[J");
            write_lines(&mut out, primary, 0..rows);
        }
    }
    if alternate {
        place_cursor(&mut out, primary, 0);
        Pen::of(&primary.cursor.template).write(&mut out);
        out.push_str("\x1b[?1049h\x1b[0m\x1b[H\x1b[J");
        write_lines(&mut out, active, 0..rows);
    }

    // 4. Region, cursor, modes, title.
    if let Some((top, bottom)) = scroll_region {
        let _ = write!(out, "\x1b[{top};{bottom}r");
    }
    let origin = mode.contains(TermMode::ORIGIN);
    set_mode(&mut out, "?6", origin);
    let offset = match (origin, scroll_region) {
        (true, Some((top, _))) => top as i32 - 1,
        _ => 0,
    };
    let line = active.cursor.point.line.0;
    let addressable = match (origin, scroll_region) {
        (true, Some((top, bottom))) => (top as i32 - 1..bottom as i32).contains(&line),
        _ => true,
    };
    if addressable {
        place_cursor(&mut out, active, offset);
    } else {
        cursor_to(&mut out, line - offset, active.cursor.point.column.0);
    }
    Pen::of(&active.cursor.template).write(&mut out);

    set_mode(&mut out, "?7", mode.contains(TermMode::LINE_WRAP));
    set_mode(&mut out, "4", mode.contains(TermMode::INSERT));
    set_mode(&mut out, "20", mode.contains(TermMode::LINE_FEED_NEW_LINE));
    set_mode(&mut out, "?1", mode.contains(TermMode::APP_CURSOR));
    out.push_str(if mode.contains(TermMode::APP_KEYPAD) { "\x1b=" } else { "\x1b>" });
    out.push_str("\x1b[?1003l\x1b[?1002l\x1b[?1000l");
    for (flag, code) in
        [(TermMode::MOUSE_REPORT_CLICK, "?1000"), (TermMode::MOUSE_DRAG, "?1002"), (TermMode::MOUSE_MOTION, "?1003")]
    {
        if mode.contains(flag) {
            set_mode(&mut out, code, true);
        }
    }
    out.push_str("\x1b[?1006l\x1b[?1005l");
    for (flag, code) in [(TermMode::SGR_MOUSE, "?1006"), (TermMode::UTF8_MOUSE, "?1005")] {
        if mode.contains(flag) {
            set_mode(&mut out, code, true);
        }
    }
    set_mode(&mut out, "?2004", mode.contains(TermMode::BRACKETED_PASTE));
    set_mode(&mut out, "?1004", mode.contains(TermMode::FOCUS_IN_OUT));
    set_mode(&mut out, "?1007", mode.contains(TermMode::ALTERNATE_SCROLL));
    let style = term.cursor_style();
    let shape = match (style.shape, style.blinking) {
        _ if style == CursorStyle::default() => 0,
        (CursorShape::Underline, true) => 3,
        (CursorShape::Underline, false) => 4,
        (CursorShape::Beam, true) => 5,
        (CursorShape::Beam, false) => 6,
        (_, true) => 1,
        (_, false) => 2,
    };
    let _ = write!(out, "\x1b[{shape} q");
    set_mode(&mut out, "?25", mode.contains(TermMode::SHOW_CURSOR));
    if let Some(title) = title {
        out.push_str("\x1b]2;");
        out.extend(title.chars().filter(|c| !c.is_control()));
        out.push('\x07');
    }
    out.into_bytes()
}

/// The lines of `grid` as text for [`Session::capture`](crate::Session::capture):
/// up to `history` lines of history, then every line of the screen, each
/// ended by a newline, without trailing blanks; with `escapes`, each
/// line's colours and attributes as SGR sequences, reset at its end.
pub(super) fn capture(grid: &Grid<Cell>, history: usize, escapes: bool) -> String {
    let history = history.min(grid.history_size());
    let rows = grid.screen_lines();
    let cols = grid.columns();
    let mut out = String::new();
    for line in -(history as i32)..rows as i32 {
        let row = &grid[Line(line)];
        let used = (0..cols).rev().find(|&col| !blank(&row[Column(col)])).map_or(0, |col| col + 1);
        let mut pen = Pen::DEFAULT;
        let start = out.len();
        for col in 0..used {
            let cell = &row[Column(col)];
            // The second half of a wide character, and a wide character
            // that did not fit at the end of the line, show nothing.
            if cell.flags.intersects(Flags::WIDE_CHAR_SPACER | Flags::LEADING_WIDE_CHAR_SPACER) {
                continue;
            }
            if escapes {
                let cell_pen = Pen::of(cell);
                if cell_pen != pen {
                    cell_pen.write(&mut out);
                    pen = cell_pen;
                }
            }
            write_char(&mut out, cell);
        }
        if pen != Pen::DEFAULT {
            out.push_str("\x1b[0m");
        } else {
            // Blanks drawn with the default pen are trailing spaces all
            // the same.
            let kept = out[start..].trim_end_matches(' ').len();
            out.truncate(start + kept);
        }
        out.push('\n');
    }
    out
}
