//! Terminal safety: text from outside (heartbeats, commit subjects, manifest values,
//! events, Redis) reaches the operator's terminal with its control characters made
//! visible, so it cannot move the cursor, rewrite earlier lines, set the window title or
//! send anything to the terminal.
//! Must not know: what the text means.

use std::borrow::Cow;

/// `text` with every control character but newline and tab shown as an escape (`\x1b`,
/// `\r`, `\u{9b}`). With `allow_sgr`, the colour sequences celeroot itself writes
/// (`ESC [ digits;… m`, SGR only) are kept: they can change colours, nothing else.
pub fn terminal_safe(text: &str, allow_sgr: bool) -> Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '\x1b' && allow_sgr {
            if let Some(len) = sgr_len(rest) {
                out.push_str(&rest[..len]);
                rest = &rest[len..];
                continue;
            }
        }
        if unsafe_char(c) {
            match c {
                '\r' => out.push_str("\\r"),
                c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
                c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            }
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    Cow::Owned(out)
}

/// A writer that passes everything through [`terminal_safe`] on its way to `inner`,
/// piece by piece, so a large output is never copied whole. celeroot's own colour
/// sequences arrive whole within one piece (`Style::paint` formats them as one string).
pub struct SafeWriter<W: std::io::Write> {
    pub inner: W,
    allow_sgr: bool,
}

impl<W: std::io::Write> SafeWriter<W> {
    pub fn new(inner: W, allow_sgr: bool) -> Self {
        SafeWriter { inner, allow_sgr }
    }
}

impl<W: std::io::Write> std::fmt::Write for SafeWriter<W> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.inner
            .write_all(terminal_safe(s, self.allow_sgr).as_bytes())
            .map_err(|_| std::fmt::Error)
    }
}

/// The length of an SGR sequence (`ESC [ [0-9;]* m`) at the start of `s`.
fn sgr_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if b.len() < 3 || b[0] != 0x1b || b[1] != b'[' {
        return None;
    }
    let mut i = 2;
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b';') {
        i += 1;
    }
    (i < b.len() && b[i] == b'm').then_some(i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_made_visible() {
        assert_eq!(terminal_safe("plain\ttext\n", false), "plain\ttext\n");
        assert_eq!(
            terminal_safe("a\x1b]0;owned\x07b\rc\u{9b}2J", false),
            "a\\x1b]0;owned\\x07b\\rc\\u{9b}2J"
        );
        // celeroot's own colours survive when colour is on, and nothing else does.
        assert_eq!(
            terminal_safe("\x1b[1;31merror\x1b[0m \x1b[2J", true),
            "\x1b[1;31merror\x1b[0m \\x1b[2J"
        );
        assert_eq!(terminal_safe("\x1b[31m", false), "\\x1b[31m");
    }

    #[test]
    fn the_writer_filters_every_piece() {
        use std::fmt::Write as _;
        let mut w = SafeWriter::new(Vec::new(), false);
        let outside = "a\x1b[2J";
        let _ = write!(w, "{outside} and {}", 5);
        assert_eq!(String::from_utf8_lossy(&w.inner), "a\\x1b[2J and 5");
    }
}
