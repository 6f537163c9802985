//! [`Tracked`]: the session's emulator as the parser's handler. Every
//! action goes to [`Term`]; the few that change what a repaint needs and
//! that `Term` keeps to itself (the primary screen behind the alternate
//! one, the scrolling region) are also recorded in [`Extra`].

use alacritty_terminal::grid::{Dimensions, Grid};
use alacritty_terminal::term::cell::Cell;
use alacritty_terminal::term::{Term, TermMode};
use alacritty_terminal::vte::ansi::cursor_icon::CursorIcon;
use alacritty_terminal::vte::ansi::{
    Attr, CharsetIndex, ClearMode, CursorShape, CursorStyle, Handler, Hyperlink, KeyboardModes,
    KeyboardModesApplyBehavior, LineClearMode, Mode, ModifyOtherKeys, NamedPrivateMode, PrivateMode, Rgb, ScpCharPath,
    ScpUpdateMode, StandardCharset, TabulationClearMode,
};

use super::Listener;

/// What a repaint needs beyond what [`Term`] shows.
#[derive(Debug, Default)]
pub(super) struct Extra {
    /// A copy of the primary screen (with its history) taken when the
    /// alternate screen was entered; the primary screen does not change
    /// while it is hidden, except by resizing, which is applied here too.
    pub(super) primary: Option<Grid<Cell>>,
    /// The scrolling region as 1-based inclusive rows, when one is set.
    pub(super) scroll_region: Option<(usize, usize)>,
}

/// The handler the parser drives: the terminal plus [`Extra`].
pub(super) struct Tracked<'a> {
    pub(super) term: &'a mut Term<Listener>,
    pub(super) extra: &'a mut Extra,
}

impl Tracked<'_> {
    fn alternate(&self) -> bool {
        self.term.mode().contains(TermMode::ALT_SCREEN)
    }
}

impl Handler for Tracked<'_> {
    fn set_private_mode(&mut self, mode: PrivateMode) {
        if mode == PrivateMode::Named(NamedPrivateMode::SwapScreenAndSetRestoreCursor) && !self.alternate() {
            self.extra.primary = Some(self.term.grid().clone());
        }
        self.term.set_private_mode(mode);
    }

    fn unset_private_mode(&mut self, mode: PrivateMode) {
        self.term.unset_private_mode(mode);
        if !self.alternate() {
            self.extra.primary = None;
        }
    }

    fn set_scrolling_region(&mut self, top: usize, bottom: Option<usize>) {
        let lines = self.term.grid().screen_lines();
        let bottom = bottom.unwrap_or(lines);
        // The same validation as the terminal's: an empty region is ignored.
        if top < bottom {
            let top = top.max(1).min(lines);
            let bottom = bottom.min(lines);
            self.extra.scroll_region = (top > 1 || bottom < lines).then_some((top, bottom));
        }
        self.term.set_scrolling_region(top, Some(bottom));
    }

    fn reset_state(&mut self) {
        self.term.reset_state();
        self.extra.primary = None;
        self.extra.scroll_region = None;
    }

    fn set_title(&mut self, arg0: Option<String>) {
        self.term.set_title(arg0);
    }

    fn set_cursor_style(&mut self, arg0: Option<CursorStyle>) {
        self.term.set_cursor_style(arg0);
    }

    fn set_cursor_shape(&mut self, shape: CursorShape) {
        self.term.set_cursor_shape(shape);
    }

    fn input(&mut self, c: char) {
        self.term.input(c);
    }

    fn goto(&mut self, line: i32, col: usize) {
        self.term.goto(line, col);
    }

    fn goto_line(&mut self, line: i32) {
        self.term.goto_line(line);
    }

    fn goto_col(&mut self, col: usize) {
        self.term.goto_col(col);
    }

    fn insert_blank(&mut self, arg0: usize) {
        self.term.insert_blank(arg0);
    }

    fn move_up(&mut self, arg0: usize) {
        self.term.move_up(arg0);
    }

    fn move_down(&mut self, arg0: usize) {
        self.term.move_down(arg0);
    }

    fn identify_terminal(&mut self, intermediate: Option<char>) {
        self.term.identify_terminal(intermediate);
    }

    fn device_status(&mut self, arg0: usize) {
        self.term.device_status(arg0);
    }

    fn move_forward(&mut self, col: usize) {
        self.term.move_forward(col);
    }

    fn move_backward(&mut self, col: usize) {
        self.term.move_backward(col);
    }

    fn move_down_and_cr(&mut self, row: usize) {
        self.term.move_down_and_cr(row);
    }

    fn move_up_and_cr(&mut self, row: usize) {
        self.term.move_up_and_cr(row);
    }

    fn put_tab(&mut self, count: u16) {
        self.term.put_tab(count);
    }

    fn backspace(&mut self) {
        self.term.backspace();
    }

    fn carriage_return(&mut self) {
        self.term.carriage_return();
    }

    fn linefeed(&mut self) {
        self.term.linefeed();
    }

    fn bell(&mut self) {
        self.term.bell();
    }

    fn substitute(&mut self) {
        self.term.substitute();
    }

    fn newline(&mut self) {
        self.term.newline();
    }

    fn set_horizontal_tabstop(&mut self) {
        self.term.set_horizontal_tabstop();
    }

    fn scroll_up(&mut self, arg0: usize) {
        self.term.scroll_up(arg0);
    }

    fn scroll_down(&mut self, arg0: usize) {
        self.term.scroll_down(arg0);
    }

    fn insert_blank_lines(&mut self, arg0: usize) {
        self.term.insert_blank_lines(arg0);
    }

    fn delete_lines(&mut self, arg0: usize) {
        self.term.delete_lines(arg0);
    }

    fn erase_chars(&mut self, arg0: usize) {
        self.term.erase_chars(arg0);
    }

    fn delete_chars(&mut self, arg0: usize) {
        self.term.delete_chars(arg0);
    }

    fn move_backward_tabs(&mut self, count: u16) {
        self.term.move_backward_tabs(count);
    }

    fn move_forward_tabs(&mut self, count: u16) {
        self.term.move_forward_tabs(count);
    }

    fn save_cursor_position(&mut self) {
        self.term.save_cursor_position();
    }

    fn restore_cursor_position(&mut self) {
        self.term.restore_cursor_position();
    }

    fn clear_line(&mut self, mode: LineClearMode) {
        self.term.clear_line(mode);
    }

    fn clear_screen(&mut self, mode: ClearMode) {
        self.term.clear_screen(mode);
    }

    fn clear_tabs(&mut self, mode: TabulationClearMode) {
        self.term.clear_tabs(mode);
    }

    fn set_tabs(&mut self, interval: u16) {
        self.term.set_tabs(interval);
    }

    fn reverse_index(&mut self) {
        self.term.reverse_index();
    }

    fn terminal_attribute(&mut self, attr: Attr) {
        self.term.terminal_attribute(attr);
    }

    fn set_mode(&mut self, mode: Mode) {
        self.term.set_mode(mode);
    }

    fn unset_mode(&mut self, mode: Mode) {
        self.term.unset_mode(mode);
    }

    fn report_mode(&mut self, mode: Mode) {
        self.term.report_mode(mode);
    }

    fn report_private_mode(&mut self, mode: PrivateMode) {
        self.term.report_private_mode(mode);
    }

    fn set_keypad_application_mode(&mut self) {
        self.term.set_keypad_application_mode();
    }

    fn unset_keypad_application_mode(&mut self) {
        self.term.unset_keypad_application_mode();
    }

    fn set_active_charset(&mut self, arg0: CharsetIndex) {
        self.term.set_active_charset(arg0);
    }

    fn configure_charset(&mut self, arg0: CharsetIndex, arg1: StandardCharset) {
        self.term.configure_charset(arg0, arg1);
    }

    fn set_color(&mut self, arg0: usize, arg1: Rgb) {
        self.term.set_color(arg0, arg1);
    }

    fn dynamic_color_sequence(&mut self, arg0: String, arg1: usize, arg2: &str) {
        self.term.dynamic_color_sequence(arg0, arg1, arg2);
    }

    fn reset_color(&mut self, arg0: usize) {
        self.term.reset_color(arg0);
    }

    fn clipboard_store(&mut self, arg0: u8, arg1: &[u8]) {
        self.term.clipboard_store(arg0, arg1);
    }

    fn clipboard_load(&mut self, arg0: u8, arg1: &str) {
        self.term.clipboard_load(arg0, arg1);
    }

    fn decaln(&mut self) {
        self.term.decaln();
    }

    fn push_title(&mut self) {
        self.term.push_title();
    }

    fn pop_title(&mut self) {
        self.term.pop_title();
    }

    fn text_area_size_pixels(&mut self) {
        self.term.text_area_size_pixels();
    }

    fn text_area_size_chars(&mut self) {
        self.term.text_area_size_chars();
    }

    fn set_hyperlink(&mut self, arg0: Option<Hyperlink>) {
        self.term.set_hyperlink(arg0);
    }

    fn set_mouse_cursor_icon(&mut self, arg0: CursorIcon) {
        self.term.set_mouse_cursor_icon(arg0);
    }

    fn report_keyboard_mode(&mut self) {
        self.term.report_keyboard_mode();
    }

    fn push_keyboard_mode(&mut self, mode: KeyboardModes) {
        self.term.push_keyboard_mode(mode);
    }

    fn pop_keyboard_modes(&mut self, to_pop: u16) {
        self.term.pop_keyboard_modes(to_pop);
    }

    fn set_keyboard_mode(&mut self, mode: KeyboardModes, behavior: KeyboardModesApplyBehavior) {
        self.term.set_keyboard_mode(mode, behavior);
    }

    fn set_modify_other_keys(&mut self, mode: ModifyOtherKeys) {
        self.term.set_modify_other_keys(mode);
    }

    fn report_modify_other_keys(&mut self) {
        self.term.report_modify_other_keys();
    }

    fn set_scp(&mut self, char_path: ScpCharPath, update_mode: ScpUpdateMode) {
        self.term.set_scp(char_path, update_mode);
    }
}
