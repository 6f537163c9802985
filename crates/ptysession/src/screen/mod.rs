//! The screen model: one headless terminal emulator per session
//! (`alacritty_terminal`), fed every byte of output, from which a repaint
//! is synthesised for a client that attaches or falls behind.
//!
//! [`Screen`] is the plain emulator (no I/O, no clock, no lock);
//! [`worker`] runs it beside the session's output path.

mod handler;
mod render;
pub(crate) mod worker;

#[cfg(any(test, fuzzing))]
pub(crate) mod compare;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, PoisonError};

use alacritty_terminal::event::{Event as TermEvent, EventListener};
use alacritty_terminal::grid::Dimensions;
use alacritty_terminal::term::{Config, Term};
use alacritty_terminal::vte::ansi::Processor;

use crate::WindowSize;
use handler::{Extra, Tracked};
pub(crate) use render::Kind;

/// What [`Session::capture`](crate::Session::capture) includes.
///
/// ```
/// use ptysession::CaptureOptions;
///
/// // The screen and up to 100 lines of history above it, with colours.
/// let options = CaptureOptions::new().history_lines(100).escapes(true);
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureOptions {
    pub(crate) history_lines: usize,
    pub(crate) escapes: bool,
}

impl CaptureOptions {
    /// The screen only, as plain text (the default).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Prepends up to `lines` lines of the screen's history (as many as it
    /// keeps, see [`Options::history_lines`](crate::Options::history_lines)).
    #[must_use]
    pub fn history_lines(mut self, lines: usize) -> Self {
        self.history_lines = lines;
        self
    }

    /// Keeps colours and attributes as SGR escape sequences (each line
    /// ends with the default attributes).
    #[must_use]
    pub fn escapes(mut self, escapes: bool) -> Self {
        self.escapes = escapes;
        self
    }
}

/// The default number of history lines kept above the screen.
pub(crate) const DEFAULT_HISTORY_LINES: usize = 1000;

/// A terminal emulator fed a session's output, able to say how to draw
/// what it shows on another terminal.
pub(crate) struct Screen {
    term: Term<Listener>,
    parser: Processor,
    extra: Extra,
    title: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for Screen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let grid = self.term.grid();
        f.debug_struct("Screen")
            .field("rows", &grid.screen_lines())
            .field("cols", &grid.columns())
            .field("history_lines", &grid.history_size())
            .finish_non_exhaustive()
    }
}

/// Receives the emulator's events; only the window title matters here.
/// Answers to queries (`PtyWrite`) are dropped: the terminals of the
/// attached clients answer those, and the command must not hear twice.
#[derive(Debug, Clone)]
pub(crate) struct Listener {
    title: Arc<Mutex<Option<String>>>,
}

impl EventListener for Listener {
    fn send_event(&self, event: TermEvent) {
        let title = match event {
            TermEvent::Title(title) => Some(title),
            TermEvent::ResetTitle => None,
            _ => return,
        };
        *self.title.lock().unwrap_or_else(PoisonError::into_inner) = title;
    }
}

/// A window size as the emulator takes it.
#[derive(Debug, Clone, Copy)]
struct Size {
    rows: usize,
    cols: usize,
}

impl Size {
    fn of(size: WindowSize) -> Self {
        Self { rows: usize::from(size.rows.max(1)), cols: usize::from(size.cols.max(2)) }
    }
}

impl Dimensions for Size {
    fn total_lines(&self) -> usize {
        self.rows
    }

    fn screen_lines(&self) -> usize {
        self.rows
    }

    fn columns(&self) -> usize {
        self.cols
    }
}

impl Screen {
    /// An empty screen of `size` keeping up to `history_lines` lines of
    /// history.
    pub(crate) fn new(size: WindowSize, history_lines: usize) -> Self {
        let title = Arc::new(Mutex::new(None));
        let config = Config { scrolling_history: history_lines, ..Config::default() };
        let listener = Listener { title: title.clone() };
        Self {
            term: Term::new(config, &Size::of(size), listener),
            parser: Processor::new(),
            extra: Extra::default(),
            title,
        }
    }

    /// Applies output.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        let mut handler = Tracked { term: &mut self.term, extra: &mut self.extra };
        self.parser.advance(&mut handler, bytes);
    }

    /// The current window size.
    pub(crate) fn size(&self) -> WindowSize {
        let grid = self.term.grid();
        WindowSize::new(grid.screen_lines() as u16, grid.columns() as u16)
    }

    /// Applies a new window size, as the terminal of the session did.
    pub(crate) fn resize(&mut self, size: WindowSize) {
        let size = Size::of(size);
        let grid = self.term.grid();
        if grid.screen_lines() == size.rows && grid.columns() == size.cols {
            return;
        }
        self.term.resize(size);
        // The terminal resets its scrolling region on resize and reflows
        // the hidden primary screen; the copy follows.
        self.extra.scroll_region = None;
        if let Some(primary) = &mut self.extra.primary {
            primary.resize::<alacritty_terminal::vte::ansi::Color>(true, size.rows, size.cols);
        }
    }

    /// The bytes that draw this screen on a terminal: see [`render`].
    pub(crate) fn repaint(&mut self, kind: Kind) -> Vec<u8> {
        // A synchronised update in progress is applied now: a client gets
        // no byte of it otherwise.
        if self.parser.sync_bytes_count() > 0 {
            let mut handler = Tracked { term: &mut self.term, extra: &mut self.extra };
            self.parser.stop_sync(&mut handler);
        }
        let title = self.title.lock().unwrap_or_else(PoisonError::into_inner).clone();
        render::repaint(&self.term, self.extra.primary.as_ref(), self.extra.scroll_region, title.as_deref(), kind)
    }

    /// The screen as text lines, after up to `history` lines of history:
    /// see [`render::capture`].
    pub(crate) fn capture(&self, history: usize, escapes: bool) -> String {
        render::capture(self.term.grid(), history, escapes)
    }

    /// The emulator, for comparisons in tests.
    #[cfg(any(test, fuzzing))]
    pub(crate) fn term(&self) -> &Term<Listener> {
        &self.term
    }

    /// The window title, for comparisons in tests.
    #[cfg(any(test, fuzzing))]
    pub(crate) fn title(&self) -> Option<String> {
        self.title.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The hidden primary screen while the alternate one shows.
    #[cfg(any(test, fuzzing))]
    pub(crate) fn hidden_primary(
        &self,
    ) -> Option<&alacritty_terminal::grid::Grid<alacritty_terminal::term::cell::Cell>> {
        self.extra.primary.as_ref()
    }
}
