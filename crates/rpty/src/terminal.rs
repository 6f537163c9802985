//! The local terminal: raw mode that is always restored ([`RawMode`], also
//! from the panic hook), its window size, the terminal modes a session
//! switched on ([`ModeTracker`]), and the status line shown while
//! reconnecting.

use std::io::{self, IsTerminal};
use std::os::fd::AsFd;
use std::sync::{Mutex, PoisonError};

use rustix::termios::{self, OptionalActions, Termios};

use crate::protocol::Size;

/// The settings to put back, for the panic hook (a `Drop` may not run).
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);

/// The local terminal in raw mode; the original settings come back when
/// this is dropped.
#[derive(Debug)]
pub(crate) struct RawMode {
    stdin: io::Stdin,
    original: Termios,
}

impl RawMode {
    /// Puts standard input's terminal in raw mode; `None` when standard
    /// input is not a terminal.
    pub(crate) fn enter() -> io::Result<Option<RawMode>> {
        let stdin = io::stdin();
        if !stdin.is_terminal() {
            return Ok(None);
        }
        let original = termios::tcgetattr(stdin.as_fd())?;
        let mut raw = original.clone();
        raw.make_raw();
        *SAVED.lock().unwrap_or_else(PoisonError::into_inner) = Some(original.clone());
        termios::tcsetattr(stdin.as_fd(), OptionalActions::Now, &raw)?;
        Ok(Some(RawMode { stdin, original }))
    }
}

impl RawMode {
    /// Puts the original settings back for a while (the terminal is lent
    /// to another program).
    pub(crate) fn suspend(&self) {
        let _ = termios::tcsetattr(self.stdin.as_fd(), OptionalActions::Now, &self.original);
    }

    /// Raw mode again after [`suspend`](Self::suspend).
    pub(crate) fn resume(&self) {
        let mut raw = self.original.clone();
        raw.make_raw();
        let _ = termios::tcsetattr(self.stdin.as_fd(), OptionalActions::Now, &raw);
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // Nothing else to do if the terminal is gone (a hang-up).
        let _ = termios::tcsetattr(self.stdin.as_fd(), OptionalActions::Now, &self.original);
        *SAVED.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// Puts back the settings saved by a [`RawMode`] still in force (for the
/// panic hook).
pub(crate) fn restore_saved() {
    let saved = SAVED.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some(original) = saved {
        let _ = termios::tcsetattr(io::stdin().as_fd(), OptionalActions::Now, &original);
    }
}

/// The window size of the terminal on standard input (or output), if
/// there is one.
pub(crate) fn window_size() -> Option<Size> {
    let size = |fd: std::os::fd::BorrowedFd<'_>| {
        termios::tcgetwinsize(fd).ok().filter(|size| size.ws_row > 0 && size.ws_col > 0)
    };
    let size = size(io::stdin().as_fd()).or_else(|| size(io::stdout().as_fd()))?;
    Some(Size { rows: size.ws_row, cols: size.ws_col })
}

/// The status line shown on the bottom row while reconnecting: saves the
/// cursor, writes `text` (cut to the width) in reverse video, restores the
/// cursor.
pub(crate) fn status_line(size: Size, text: &str) -> Vec<u8> {
    let width = usize::from(size.cols).saturating_sub(2);
    let text: String = text.chars().take(width).collect();
    format!("\x1b7\x1b[{};1H\x1b[0;7m {text} \x1b[0m\x1b[K\x1b8", size.rows).into_bytes()
}

/// Moves the screen up one row, the cursor with it, so that the bottom row
/// is free for the status line and nothing on the screen is lost: a line
/// feed on the bottom row, then the cursor back one row above where it
/// was.
pub(crate) fn make_room_for_status_line(rows: u16) -> Vec<u8> {
    format!("\x1b7\x1b[{rows};1H\n\x1b8\x1b[A").into_bytes()
}

/// Takes the status line away by moving the screen back down the row
/// that [`make_room_for_status_line`] moved it up: the status line goes
/// off the bottom, the bottom row shows what it showed before, the cursor
/// is where it was, and the top row is left empty (the line that was there
/// is in the terminal's history).
pub(crate) const REMOVE_STATUS_LINE: &[u8] = b"\x1b7\x1b[1;1H\x1bM\x1b8\x1b[B";

/// Clears the screen and homes the cursor.
pub(crate) const CLEAR_SCREEN: &[u8] = b"\x1b[H\x1b[2J";

/// Mode numbers (DEC private modes) a session may switch on that would
/// leave the local terminal unusable after the client leaves.
const TRACKED_MODES: &[u16] = &[1, 47, 1047, 1049, 1000, 1001, 1002, 1003, 1004, 1005, 1006, 1015, 2004];

/// Largest number of parameters kept from one control sequence.
const MAX_PARAMS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum ParseState {
    #[default]
    Ground,
    Escape,
    /// Inside `ESC [`: whether it is private (`?`), and whether an
    /// intermediate byte made it something else.
    Csi {
        private: bool,
        other: bool,
    },
}

/// Follows the output of a session to know which terminal modes it left
/// switched on, so that they can be switched off when the client leaves:
/// the alternate screen, mouse reporting, focus events, bracketed paste,
/// application cursor keys and keypad, a hidden cursor. It also knows
/// whether the cursor is at the start of a line.
///
/// The parser survives sequences split across chunks; it looks only at
/// `ESC [ ? Pm h|l`, `ESC =` and `ESC >`.
#[derive(Debug, Clone, Default)]
pub(crate) struct ModeTracker {
    state: ParseState,
    params: Vec<u16>,
    current: Option<u16>,
    set: Vec<u16>,
    cursor_hidden: bool,
    keypad_application: bool,
    at_line_start: bool,
    seen_output: bool,
}

impl ModeTracker {
    /// Looks at a chunk of output.
    pub(crate) fn observe(&mut self, data: &[u8]) {
        if let Some(&last) = data.last() {
            self.seen_output = true;
            self.at_line_start = last == b'\n';
        }
        for &byte in data {
            self.step(byte);
        }
    }

    fn step(&mut self, byte: u8) {
        self.state = match (self.state, byte) {
            (_, 0x1b) => ParseState::Escape,
            (ParseState::Ground, _) => ParseState::Ground,
            (ParseState::Escape, b'[') => {
                self.params.clear();
                self.current = None;
                ParseState::Csi { private: false, other: false }
            }
            (ParseState::Escape, b'=') => {
                self.keypad_application = true;
                ParseState::Ground
            }
            (ParseState::Escape, b'>') => {
                self.keypad_application = false;
                ParseState::Ground
            }
            (ParseState::Escape, _) => ParseState::Ground,
            (ParseState::Csi { private, other }, b'?') => {
                let first = self.params.is_empty() && self.current.is_none();
                ParseState::Csi { private: private || first, other: other || !first }
            }
            (state @ ParseState::Csi { .. }, b'0'..=b'9') => {
                let digit = u16::from(byte - b'0');
                self.current = Some(self.current.unwrap_or(0).saturating_mul(10).saturating_add(digit));
                state
            }
            (state @ ParseState::Csi { .. }, b';') => {
                self.push_param();
                state
            }
            (ParseState::Csi { private, other }, 0x40..=0x7e) => {
                self.push_param();
                if private && !other && matches!(byte, b'h' | b'l') {
                    let params = std::mem::take(&mut self.params);
                    for &mode in &params {
                        self.apply(mode, byte == b'h');
                    }
                    self.params = params;
                }
                ParseState::Ground
            }
            (ParseState::Csi { private, .. }, 0x20..=0x3f) => ParseState::Csi { private, other: true },
            // Control characters inside a sequence are executed, not part
            // of it.
            (state @ ParseState::Csi { .. }, _) => state,
        };
    }

    fn push_param(&mut self) {
        if self.params.len() < MAX_PARAMS {
            self.params.push(self.current.take().unwrap_or(0));
        }
        self.current = None;
    }

    fn apply(&mut self, mode: u16, on: bool) {
        if mode == 25 {
            self.cursor_hidden = !on;
        } else if TRACKED_MODES.contains(&mode) {
            self.set.retain(|&set| set != mode);
            if on {
                self.set.push(mode);
            }
        }
    }

    /// What to write to switch off every mode the session left on (in
    /// reverse order of switching on), show the cursor, reset attributes,
    /// and start a fresh line if the cursor is not at the start of one.
    pub(crate) fn reset_sequence(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for mode in self.set.iter().rev() {
            out.extend_from_slice(format!("\x1b[?{mode}l").as_bytes());
        }
        if self.keypad_application {
            out.extend_from_slice(b"\x1b>");
        }
        if self.cursor_hidden {
            out.extend_from_slice(b"\x1b[?25h");
        }
        if self.seen_output {
            out.extend_from_slice(b"\x1b[0m");
            if !self.at_line_start {
                out.extend_from_slice(b"\r\n");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_switched_on_are_switched_off_in_reverse_order() {
        let mut tracker = ModeTracker::default();
        tracker.observe(b"\x1b[?1049h\x1b[?1;2004h\x1b[?25lhello\r\n");
        assert_eq!(tracker.reset_sequence(), b"\x1b[?2004l\x1b[?1l\x1b[?1049l\x1b[?25h\x1b[0m".to_vec());
    }

    #[test]
    fn modes_switched_off_again_are_left_alone() {
        let mut tracker = ModeTracker::default();
        tracker.observe(b"\x1b[?1049h\x1b[?1000h\x1b=vim\x1b[?1000l\x1b[?1049l\x1b>$ ");
        assert_eq!(tracker.reset_sequence(), b"\x1b[0m\r\n".to_vec());
    }

    #[test]
    fn a_sequence_split_anywhere_is_still_seen() {
        let stream = b"ab\x1b[?1049h\x1b[?2004h\x1b[?25lcd";
        for split in 0..stream.len() {
            let mut tracker = ModeTracker::default();
            tracker.observe(&stream[..split]);
            tracker.observe(&stream[split..]);
            assert_eq!(tracker.reset_sequence(), b"\x1b[?2004l\x1b[?1049l\x1b[?25h\x1b[0m\r\n".to_vec(), "{split}");
        }
    }

    #[test]
    fn other_sequences_and_garbage_change_nothing() {
        let mut tracker = ModeTracker::default();
        tracker.observe(b"\x1b[1049h\x1b[>1049h\x1b[?1049$h\x1b[31m\x1b]0;title\x07\x1b[?999999999999h\n");
        assert_eq!(tracker.reset_sequence(), b"\x1b[0m".to_vec());
        let empty = ModeTracker::default();
        assert!(empty.reset_sequence().is_empty());
    }

    #[test]
    fn status_line_keeps_the_cursor() {
        let line = String::from_utf8(status_line(Size { rows: 24, cols: 80 }, "reconnecting…")).unwrap();
        assert!(line.starts_with("\x1b7\x1b[24;1H") && line.ends_with("\x1b8") && line.contains("reconnecting…"));
        let cut = String::from_utf8(status_line(Size { rows: 5, cols: 12 }, "0123456789abcdef")).unwrap();
        assert!(cut.contains(" 0123456789 ") && !cut.contains('a'), "cut to the width: {cut:?}");
        assert_eq!(make_room_for_status_line(5), b"\x1b7\x1b[5;1H\n\x1b8\x1b[A".to_vec());
        assert_eq!(REMOVE_STATUS_LINE, b"\x1b7\x1b[1;1H\x1bM\x1b8\x1b[B");
    }
}
