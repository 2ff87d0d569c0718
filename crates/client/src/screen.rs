//! Where rendered text goes: straight to stdout when piped, or — interactive, in
//! raw mode — above the line editor, which is erased before output and drawn
//! again after it, so streamed text and typing never overwrite each other.
//!
//! Owns: the terminal (raw mode on and off, cursor movement). Tracks the output
//! column so a streamed line left open can be continued after the editor is
//! erased.

use std::io::Write;

use crossterm::cursor::{MoveToColumn, MoveUp};
use crossterm::queue;
use crossterm::terminal::{Clear, ClearType};

use super::input::Editor;

/// Terminal width assumed when the size cannot be read.
const FALLBACK_WIDTH: usize = 80;

/// The terminal or the pipe the session is shown on.
pub struct Screen {
    /// Raw mode with an editor area at the bottom.
    interactive: bool,
    color: bool,
    /// Output column (characters) where the next output character goes.
    col: usize,
    /// The editor is drawn and the cursor is `editor_row` rows below its top.
    editor_shown: bool,
    editor_row: usize,
    width: usize,
}

/// Restores the terminal when dropped, even on an early return.
pub struct RawGuard;

impl RawGuard {
    pub fn enable() -> std::io::Result<RawGuard> {
        crossterm::terminal::enable_raw_mode()?;
        // Bracketed paste: a pasted multi-line prompt arrives as one event, not as
        // a series of Enters that would send each line.
        let _ = crossterm::execute!(std::io::stdout(), crossterm::event::EnableBracketedPaste);
        Ok(RawGuard)
    }
}

impl Drop for RawGuard {
    fn drop(&mut self) {
        let _ = crossterm::execute!(std::io::stdout(), crossterm::event::DisableBracketedPaste);
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

impl Screen {
    pub fn new(interactive: bool, color: bool) -> Screen {
        let width = if interactive {
            crossterm::terminal::size()
                .map(|(w, _)| usize::from(w))
                .unwrap_or(FALLBACK_WIDTH)
        } else {
            FALLBACK_WIDTH
        };
        Screen {
            interactive,
            color,
            col: 0,
            editor_shown: false,
            editor_row: 0,
            width: width.max(1),
        }
    }

    pub fn resize(&mut self, width: u16) {
        self.width = usize::from(width).max(1);
    }

    /// Rendered session text (stdout).
    pub fn output(&mut self, text: &str, editor: Option<&Editor>) {
        if text.is_empty() {
            return;
        }
        let mut out = std::io::stdout().lock();
        if !self.interactive {
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
            return;
        }
        let mut buf: Vec<u8> = Vec::new();
        self.hide_editor(&mut buf);
        // Raw mode: the terminal does not return the carriage on a newline.
        let _ = buf.write_all(text.replace('\n', "\r\n").as_bytes());
        self.advance(text);
        if let Some(e) = editor {
            self.show_editor(&mut buf, e);
        }
        let _ = out.write_all(&buf);
        let _ = out.flush();
    }

    /// Human messages: stderr when piped (stdout may be a JSON stream), else the screen.
    pub fn message(&mut self, text: &str, editor: Option<&Editor>) {
        if self.interactive {
            self.output(text, editor);
        } else {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(text.as_bytes());
            let _ = err.flush();
        }
    }

    /// Draw the editor again after it changed.
    pub fn redraw(&mut self, editor: &Editor) {
        if !self.interactive {
            return;
        }
        let mut buf: Vec<u8> = Vec::new();
        self.hide_editor(&mut buf);
        self.show_editor(&mut buf, editor);
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&buf);
        let _ = out.flush();
    }

    /// Erase the editor before exiting, leaving the output as it is.
    pub fn close(&mut self) {
        if !self.interactive {
            return;
        }
        let mut buf: Vec<u8> = Vec::new();
        self.hide_editor(&mut buf);
        if self.col > 0 {
            buf.extend_from_slice(b"\r\n");
            self.col = 0;
        }
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&buf);
        let _ = out.flush();
    }

    /// Track the output column over `text` (SGR sequences take no room).
    fn advance(&mut self, text: &str) {
        let mut in_escape = false;
        for c in text.chars() {
            match c {
                '\x1b' => in_escape = true,
                'm' if in_escape => in_escape = false,
                _ if in_escape => {}
                '\n' | '\r' => self.col = 0,
                _ => self.col += 1,
            }
        }
    }

    fn rows_of(&self, chars: usize) -> usize {
        chars.div_ceil(self.width).max(1)
    }

    fn hide_editor(&mut self, buf: &mut Vec<u8>) {
        if !self.editor_shown {
            return;
        }
        buf.push(b'\r');
        if self.editor_row > 0 {
            let _ = queue!(buf, MoveUp(clamp_u16(self.editor_row)));
        }
        let _ = queue!(buf, Clear(ClearType::FromCursorDown));
        if self.col > 0 {
            if self.col % self.width == 0 {
                // The open line filled its last row exactly: output continues at
                // the start of the (now empty) next row, as wrapping would.
                self.col = 0;
            } else {
                let _ = queue!(
                    buf,
                    MoveUp(1),
                    MoveToColumn(clamp_u16(self.col % self.width))
                );
            }
        }
        self.editor_shown = false;
        self.editor_row = 0;
    }

    fn show_editor(&mut self, buf: &mut Vec<u8>, editor: &Editor) {
        let view = editor.view();
        if self.col > 0 {
            buf.extend_from_slice(b"\r\n");
        }
        let asking = editor.ask().is_some();
        let mut total_rows = 0;
        let mut cursor_row = 0;
        let mut cursor_col = 0;
        for (i, line) in view.lines.iter().enumerate() {
            if i > 0 {
                buf.extend_from_slice(b"\r\n");
            }
            let chars = line.chars().count();
            if asking && self.color {
                let _ = write!(buf, "\x1b[1;35m{line}\x1b[0m");
            } else {
                let _ = buf.write_all(line.as_bytes());
            }
            if i == view.cursor.0 {
                let c = view.cursor.1;
                let rows = self.rows_of(chars);
                cursor_row = total_rows + (c / self.width).min(rows - 1);
                cursor_col = if c / self.width >= rows {
                    self.width - 1
                } else {
                    c % self.width
                };
            }
            total_rows += self.rows_of(chars);
        }
        // From the end of the last row back to the cursor.
        buf.push(b'\r');
        let up = total_rows - 1 - cursor_row;
        if up > 0 {
            let _ = queue!(buf, MoveUp(clamp_u16(up)));
        }
        if cursor_col > 0 {
            let _ = queue!(buf, MoveToColumn(clamp_u16(cursor_col)));
        }
        self.editor_shown = true;
        self.editor_row = cursor_row;
    }
}

fn clamp_u16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_tracking_ignores_colours() {
        let mut s = Screen::new(false, true);
        s.advance("\x1b[32mabc\x1b[0m");
        assert_eq!(s.col, 3);
        s.advance("de\nf");
        assert_eq!(s.col, 1);
    }

    #[test]
    fn rows_wrap_at_the_width() {
        let mut s = Screen::new(false, false);
        s.resize(10);
        assert_eq!(s.rows_of(0), 1);
        assert_eq!(s.rows_of(10), 1);
        assert_eq!(s.rows_of(11), 2);
    }
}
