//! A reference terminal for the screen tests: an `alacritty_terminal`
//! emulator standing for the user's terminal, fed what a client receives,
//! read back as text rows, cursor and modes.

use alacritty_terminal::event::VoidListener;
use alacritty_terminal::grid::Dimensions;
use alacritty_terminal::index::{Column, Line};
use alacritty_terminal::term::cell::Flags;
use alacritty_terminal::term::{Config, Term, TermMode};
use alacritty_terminal::vte::ansi::{Color, NamedColor, Processor};
use ptysession::WindowSize;

/// A terminal of a given size with a scrollback.
pub struct Reference {
    term: Term<VoidListener>,
    parser: Processor,
}

struct Size(WindowSize);

impl Dimensions for Size {
    fn total_lines(&self) -> usize {
        self.screen_lines()
    }
    fn screen_lines(&self) -> usize {
        usize::from(self.0.rows)
    }
    fn columns(&self) -> usize {
        usize::from(self.0.cols)
    }
}

impl Reference {
    pub fn new(size: WindowSize) -> Self {
        let config = Config { scrolling_history: 100_000, ..Config::default() };
        Self { term: Term::new(config, &Size(size), VoidListener), parser: Processor::new() }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.parser.advance(&mut self.term, bytes);
    }

    pub fn resize(&mut self, size: WindowSize) {
        self.term.resize(Size(size));
    }

    /// The visible rows as text, trailing blanks trimmed.
    pub fn rows(&self) -> Vec<String> {
        let grid = self.term.grid();
        (0..grid.screen_lines() as i32).map(|line| self.line(line)).collect()
    }

    /// The history lines as text, oldest first.
    pub fn history(&self) -> Vec<String> {
        let history = self.term.grid().history_size() as i32;
        (1..=history).rev().map(|back| self.line(-back)).collect()
    }

    fn line(&self, line: i32) -> String {
        let grid = self.term.grid();
        let row = &grid[Line(line)];
        let text: String = (0..grid.columns())
            .filter(|&col| !row[Column(col)].flags.contains(Flags::WIDE_CHAR_SPACER))
            .map(|col| row[Column(col)].c)
            .collect();
        text.trim_end().to_owned()
    }

    /// The foreground colour of the cell at `row`, `col` as an SGR index
    /// (0–15), if it has one of those.
    pub fn fg_index(&self, row: i32, col: usize) -> Option<usize> {
        match self.term.grid()[Line(row)][Column(col)].fg {
            Color::Named(named) if (named as usize) < 16 => Some(named as usize),
            Color::Named(NamedColor::Foreground) => None,
            _ => None,
        }
    }

    /// Whether the cell at `row`, `col` is bold.
    pub fn bold(&self, row: i32, col: usize) -> bool {
        self.term.grid()[Line(row)][Column(col)].flags.contains(Flags::BOLD)
    }

    /// The cursor as (row, column).
    pub fn cursor(&self) -> (i32, usize) {
        let point = self.term.grid().cursor.point;
        (point.line.0, point.column.0)
    }

    pub fn mode(&self) -> TermMode {
        *self.term.mode()
    }
}
