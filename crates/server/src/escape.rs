//! Escaping of strings a peer controls before they reach a log or a terminal.
//!
//! Owns: the one rule for which characters are dangerous to show (C0 and C1
//! controls, DEL, bidirectional overrides/isolates/marks, line and paragraph
//! separators, zero-width and other invisible format characters) and how they are
//! written instead (`\n`, `\r`, `\t`, `\0`, else `\u{hex}`, as Rust's `Debug` does).
//! A peer's device name, key comment, key type, Origin or close reason can then
//! neither forge a log line, move a cursor, recolour a terminal nor reorder what an
//! operator reads. Must not: know where a string came from (callers decide what is
//! peer data; `logging` applies this to every log field).

use std::fmt::Write as _;

/// Whether `c` must never reach a log or a terminal as itself.
pub fn is_dangerous(c: char) -> bool {
    c.is_control() // C0, DEL, C1
        || matches!(
            c,
            '\u{061C}'              // Arabic letter mark
            | '\u{180E}'            // Mongolian vowel separator (invisible)
            | '\u{200B}'..='\u{200F}' // zero-width space/joiners, LRM, RLM
            | '\u{2028}' | '\u{2029}' // line / paragraph separator
            | '\u{202A}'..='\u{202E}' // bidi embeddings and overrides
            | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
            | '\u{2066}'..='\u{2069}' // bidi isolates
            | '\u{206A}'..='\u{206F}' // deprecated format characters
            | '\u{FEFF}'            // zero-width no-break space / BOM
            | '\u{FFF9}'..='\u{FFFB}' // interlinear annotation controls
        )
}

/// Append the escaped form of one dangerous character.
fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\0' => out.push_str("\\0"),
        c => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}

/// `s` on one line with every dangerous character escaped; everything else
/// (including backslashes and quotes) is kept, so ordinary text reads as it is.
pub fn line(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(is_dangerous) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if is_dangerous(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `s` as a double-quoted string: like [`line`], and also `"` and `\` escaped, so
/// the value's end cannot be forged (`key="value"` in the pretty log format).
pub fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if is_dangerous(c) => push_escaped(&mut out, c),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Multi-line text for a terminal (agent output): newlines kept, tabs kept, every
/// other dangerous character escaped visibly.
pub fn text(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| c != '\n' && c != '\t' && is_dangerous(c)) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if c != '\n' && c != '\t' && is_dangerous(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A `Display` wrapper applying [`line`], for log fields: `device = %Escaped(name)`.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&line(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes_controls_newlines_and_bidi() {
        assert_eq!(line("phone\n\x1b[31mroot"), "phone\\n\\u{1b}[31mroot");
        assert_eq!(line("a\u{202E}b\u{2066}c"), "a\\u{202e}b\\u{2066}c");
        assert_eq!(line("\u{9b}31m\u{7f}"), "\\u{9b}31m\\u{7f}");
        assert_eq!(line("tab\there\r\0"), "tab\\there\\r\\0");
        assert_eq!(line("x\u{2028}y\u{feff}"), "x\\u{2028}y\\u{feff}");
    }

    #[test]
    fn ordinary_text_is_untouched_and_borrowed() {
        for s in ["laptop", "Zoë's phone", "C:\\path \"q\"", "日本語 ✓ 🚀", ""] {
            assert!(matches!(line(s), std::borrow::Cow::Borrowed(_)), "{s}");
            assert_eq!(line(s), s);
        }
    }

    #[test]
    fn quoted_escapes_quotes_and_backslashes() {
        assert_eq!(quoted("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
        assert_eq!(quoted("plain"), "\"plain\"");
    }

    #[test]
    fn text_keeps_newlines_and_tabs_only() {
        assert_eq!(text("a\n\tb\x1b[2Jc\r"), "a\n\tb\\u{1b}[2Jc\\r");
        assert!(matches!(text("a\nb"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn escaped_display_wrapper() {
        assert_eq!(format!("{}", Escaped("x\ny")), "x\\ny");
    }

    proptest! {
        #[test]
        fn line_output_has_no_dangerous_character(s in any::<String>()) {
            let out = line(&s);
            prop_assert!(!out.chars().any(is_dangerous), "{out:?}");
        }

        #[test]
        fn quoted_output_is_one_safe_token(s in any::<String>()) {
            let out = quoted(&s);
            prop_assert!(!out.chars().any(is_dangerous));
            // The only unescaped quotes are the two delimiters.
            let inner = &out[1..out.len() - 1];
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    prop_assert!(chars.next().is_some());
                } else {
                    prop_assert!(c != '"');
                }
            }
        }

        #[test]
        fn text_output_keeps_only_newline_and_tab(s in any::<String>()) {
            let out = text(&s);
            prop_assert!(!out.chars().any(|c| c != '\n' && c != '\t' && is_dangerous(c)));
            prop_assert_eq!(out.matches('\n').count(), s.matches('\n').count());
        }

        #[test]
        fn safe_strings_pass_through(s in "[a-zA-Z0-9 _.:/@'\"\\\\-]{0,40}") {
            prop_assert_eq!(line(&s), s.as_str());
        }
    }
}
