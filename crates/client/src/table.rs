//! Text tables of what the server lists: sessions (`ccrelay sessions`, the
//! `:sessions` command of `attach`) and past conversations (`sessions --resume`),
//! with relative times ("3m ago").
//!
//! Owns: how those lists look on a terminal. Every string from the server passes
//! through [`cell`] ([`ccrelay_server::escape::line`]: controls, bidi and
//! invisible characters shown escaped) before it is measured or printed. Pure:
//! the caller passes the current time.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use ccrelay_protocol::{ConversationEntry, SessionSummary};

/// Widest name and title columns (longer ones are cut with an ellipsis).
const NAME_CHARS: usize = 24;
const TITLE_CHARS: usize = 40;
/// Widest pending-tools cell.
const PENDING_CHARS: usize = 32;
/// Shown for a value an older server does not send.
const NONE: &str = "-";

/// A string from the server made safe for one terminal cell: escaped, then cut
/// at `max` characters (an ellipsis marks the cut).
pub fn cell(text: &str, max: usize) -> String {
    let safe = ccrelay_server::escape::line(text);
    if safe.chars().count() <= max {
        safe.into_owned()
    } else {
        let mut cut: String = safe.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// "just now", "42s ago", "3m ago", "5h ago", "2d ago" for an RFC 3339 time; a
/// time that does not parse is shown as "-" (a time ahead of `now`, clock skew,
/// as "just now").
pub fn relative(rfc3339: &str, now: OffsetDateTime) -> String {
    let Ok(then) = OffsetDateTime::parse(rfc3339, &Rfc3339) else {
        return NONE.into();
    };
    let secs = (now - then).whole_seconds();
    match secs {
        i64::MIN..5 => "just now".into(),
        5..60 => format!("{secs}s ago"),
        60..3_600 => format!("{}m ago", secs / 60),
        3_600..86_400 => format!("{}h ago", secs / 3_600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// A session's cost so far.
fn cost(usd: f64) -> String {
    if usd.is_finite() && usd >= 0.0 {
        format!("${usd:.2}")
    } else {
        NONE.into()
    }
}

/// Lay out rows under a header: columns padded to their widest cell, two spaces
/// apart, the last one not padded.
fn layout(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let head: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&head).chain(rows) {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (i, (c, w)) in row.iter().zip(&widths).enumerate() {
            line.push_str(c);
            if i < last {
                let pad = w.saturating_sub(c.chars().count()) + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The `session.list` entries as a table: name, title, state, last activity,
/// clients, cost, pending (count and tool names).
pub fn sessions(entries: &[SessionSummary], now: OffsetDateTime) -> String {
    if entries.is_empty() {
        return "no sessions\n".into();
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let d = e.details.as_deref();
            let pending = match d.map(|d| &d.pending) {
                None => NONE.to_string(),
                Some(p) if p.is_empty() => "0".into(),
                Some(p) => {
                    let mut tools: Vec<&str> = p.iter().map(|p| p.tool.as_str()).collect();
                    tools.dedup();
                    cell(
                        &format!("{} ({})", p.len(), tools.join(", ")),
                        PENDING_CHARS,
                    )
                }
            };
            vec![
                cell(&e.session, NAME_CHARS),
                d.map_or_else(|| NONE.into(), |d| cell(&d.title, TITLE_CHARS)),
                cell(&e.state, 24),
                d.map_or_else(|| NONE.into(), |d| relative(&d.last_activity, now)),
                e.clients.map_or_else(|| NONE.into(), |c| c.to_string()),
                d.map_or_else(|| NONE.into(), |d| cost(d.cost_usd)),
                pending,
            ]
        })
        .collect();
    layout(
        &[
            "NAME", "TITLE", "STATE", "ACTIVITY", "CLIENTS", "COST", "PENDING",
        ],
        &rows,
    )
}

/// Past conversations, numbered from 1 (newest first, as the server lists them).
pub fn conversations(entries: &[ConversationEntry], now: OffsetDateTime) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .enumerate()
        .map(|(i, c)| {
            vec![
                format!("{}.", i + 1),
                cell(&c.title, 60),
                relative(&c.updated_at, now),
                c.in_use_by.as_deref().map_or_else(String::new, |s| {
                    format!("in use by {}", cell(s, NAME_CHARS))
                }),
            ]
        })
        .collect();
    layout(&["#", "TITLE", "UPDATED", ""], &rows)
}

/// JSON text with every character [`ccrelay_server::escape::is_dangerous`] names
/// written as a `\uXXXX` escape: the same JSON value, safe on a terminal (such
/// characters can only occur inside strings, where the escape means the same).
/// Newlines are kept: serde_json writes them only between tokens (pretty
/// printing), never raw inside a string.
pub fn terminal_safe_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c != '\n' && ccrelay_server::escape::is_dangerous(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> OffsetDateTime {
        OffsetDateTime::parse("2026-12-01T10:00:00Z", &Rfc3339).unwrap()
    }

    fn entry(v: serde_json::Value) -> SessionSummary {
        serde_json::from_value(v).unwrap()
    }

    fn full(name: &str, title: &str, pending: serde_json::Value) -> SessionSummary {
        entry(
            json!({"session":name,"state":"idle","head":3,"clients":2,"uid":"u1","title":title,
            "created":"client","created_at":"2026-12-01T09:00:00Z","last_activity":"2026-12-01T09:57:00Z",
            "cost_usd":0.4213,"settings":{"permission_mode":"default","model":null,"effort":null,"thinking":null,"auto_continue":false},
            "closable":true,"pending":pending}),
        )
    }

    #[test]
    fn relative_times() {
        let n = now();
        assert_eq!(relative("2026-12-01T10:00:00Z", n), "just now");
        assert_eq!(relative("2026-12-01T10:05:00Z", n), "just now");
        assert_eq!(relative("2026-12-01T09:59:18Z", n), "42s ago");
        assert_eq!(relative("2026-12-01T09:57:00Z", n), "3m ago");
        assert_eq!(relative("2026-12-01T11:00:00+02:00", n), "1h ago");
        assert_eq!(relative("2026-11-29T10:00:00Z", n), "2d ago");
        assert_eq!(relative("yesterday", n), "-");
    }

    #[test]
    fn columns_line_up_and_every_field_is_shown() {
        let rows = [
            full("api", "Login bug", json!([])),
            full(
                "a-much-longer-name",
                "t",
                json!([{"request_id":"r1","tool":"Bash","summary":"ls"},{"request_id":"r2","tool":"Edit","summary":"x"}]),
            ),
            entry(json!({"session":"default","state":"busy","head":1,"clients":0})),
        ];
        let text = sessions(&rows, now());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("NAME  "), "{text}");
        // Every column starts at the same offset on every line.
        let col = |l: &str, word: &str| l.find(word).unwrap();
        let title_at = col(lines[0], "TITLE");
        assert_eq!(col(lines[1], "Login bug"), title_at);
        assert_eq!(title_at, "a-much-longer-name".len() + 2);
        let state_at = col(lines[0], "STATE");
        assert_eq!(col(lines[3], "busy"), state_at);
        assert!(
            lines[1].contains("3m ago") && lines[1].contains("$0.42"),
            "{text}"
        );
        assert!(lines[1].trim_end().ends_with('0'), "{text}");
        assert!(lines[2].ends_with("2 (Bash, Edit)"), "{text}");
        // An older server's entry: the fields it does not send are "-".
        assert_eq!(
            lines[3][title_at..].split_whitespace().next(),
            Some("-"),
            "{text}"
        );
        assert!(
            lines[3].ends_with("busy   -         0        -      -"),
            "{text}"
        );
        assert_eq!(sessions(&[], now()), "no sessions\n");
    }

    #[test]
    fn hostile_titles_are_escaped_and_cut() {
        let hostile = "evil\u{1b}[2J\u{1b}]0;pwned\u{7}\u{202e}txt.exe\u{2066}\n";
        let rows = [full(
            "x\u{1b}[31m",
            hostile,
            json!([{"request_id":"r","tool":"Ba\u{202e}sh","summary":""}]),
        )];
        let text = sessions(&rows, now());
        assert!(
            !text
                .chars()
                .any(|c| c != '\n' && ccrelay_server::escape::is_dangerous(c)),
            "{text:?}"
        );
        assert!(text.contains("evil\\u{1b}[2J"), "{text}");
        assert!(text.contains("x\\u{1b}[31m"), "{text}");
        assert!(text.contains("Ba\\u{202e}sh"), "{text}");
        assert_eq!(text.lines().count(), 2, "{text}");
        let long = "t".repeat(200);
        let text = sessions(&[full("n", &long, json!([]))], now());
        assert!(
            text.contains(&format!("{}…", "t".repeat(TITLE_CHARS - 1))),
            "{text}"
        );
        assert!(!text.contains(&"t".repeat(TITLE_CHARS + 1)), "{text}");
    }

    #[test]
    fn conversations_are_numbered_newest_first() {
        let list: Vec<ConversationEntry> = serde_json::from_value(json!([
            {"conversation":"c1","title":"Fix \u{202e}login","updated_at":"2026-12-01T09:00:00Z","in_use_by":null},
            {"conversation":"c2","title":"Older","updated_at":"2026-11-30T10:00:00Z","in_use_by":"api"},
        ]))
        .unwrap();
        let text = conversations(&list, now());
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("1.  Fix \\u{202e}login"), "{text}");
        assert!(lines[1].contains("1h ago"), "{text}");
        assert!(
            lines[2].starts_with("2.  Older") && lines[2].ends_with("in use by api"),
            "{text}"
        );
    }

    #[test]
    fn json_keeps_its_value_and_loses_dangerous_characters() {
        let v = json!([{"title":"a\u{202e}b\u{1b}c\u{85}d\u{7f}\ne"}]);
        let text = terminal_safe_json(&v.to_string());
        assert!(
            !text.chars().any(ccrelay_server::escape::is_dangerous),
            "{text:?}"
        );
        assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap(), v);
        // Pretty-printed: its lines stay lines, the value the same.
        let pretty = serde_json::to_string_pretty(&v).unwrap();
        let text = terminal_safe_json(&pretty);
        assert_eq!(text.lines().count(), pretty.lines().count());
        let dangerous = |c: char| c != '\n' && ccrelay_server::escape::is_dangerous(c);
        assert!(!text.chars().any(dangerous), "{text:?}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap(), v);
    }
}
