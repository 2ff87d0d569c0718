//! The session controls as text: context and cost (`session.usage`), a turn's
//! changes (`relay.changes`), `files.status` and `files.diff` (docs/protocol.md §10,
//! §11), the plan of an `ExitPlanMode` request and the questions of an
//! `AskUserQuestion` request, and the answer the CLI expects to those questions
//! (docs/protocol.md §10.1).
//!
//! Owns: how these look and the answer's shape. Pure: every peer string passes
//! through [`clean`] (or one-line escaping) before it reaches the terminal.

use serde_json::{Map, Value};

use ccrelay_protocol::{
    FileChange, FileStatus,
    catalog::{ContextUsage, RateLimit},
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const RESET: &str = "\x1b[0m";
const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const CYAN: &str = "\x1b[36m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";

/// Paths shown of one turn's changes before "and N more".
const CHANGES_SHOWN: usize = 20;

/// Remove control characters, bidi controls and invisible format characters
/// (keeping newlines; tabs become spaces): see [`ccrelay_server::escape::is_dangerous`].
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push('\n'),
            '\t' => out.push_str("    "),
            '\r' => {}
            c if ccrelay_server::escape::is_dangerous(c) => {}
            c => out.push(c),
        }
    }
    out
}

fn paint(color: bool, sgr: &str, text: &str) -> String {
    if color && !text.is_empty() {
        format!("{sgr}{text}{RESET}")
    } else {
        text.to_string()
    }
}

/// A peer string on one line: controls and bidi shown escaped, at most `max` characters.
pub fn one_line(text: &str, max: usize) -> String {
    let cut: String = text.chars().take(max).collect();
    ccrelay_server::escape::line(&cut).into_owned()
}

/// `41k/200k` style token counts.
fn tokens(n: u64) -> String {
    if n >= 1_000_000 {
        format!("{:.1}M", n as f64 / 1_000_000.0)
    } else if n >= 1_000 {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

/// The status text of `session.usage`: "context 41k/200k (20%) · $1.93".
pub fn usage(context: Option<&ContextUsage>, cost_usd: f64) -> String {
    let ctx = match context {
        Some(c) if c.max_tokens > 0 => format!(
            "context {}/{} ({}%)",
            tokens(c.used_tokens),
            tokens(c.max_tokens),
            c.used_tokens.saturating_mul(100) / c.max_tokens
        ),
        Some(c) => format!("context {}", tokens(c.used_tokens)),
        None => "context unknown".to_string(),
    };
    let cost = if cost_usd.is_finite() && cost_usd >= 0.0 {
        format!("${cost_usd:.2}")
    } else {
        "$?".to_string()
    };
    format!("{ctx} · {cost}")
}

/// When the account's usage limit lifts, if `session.usage` says it was reached
/// (`status` `rejected` with a reset time, docs/protocol.md §10).
pub fn limited_until(rate_limit: Option<&RateLimit>) -> Option<OffsetDateTime> {
    let limit = rate_limit?;
    if limit.status.as_deref() != Some("rejected") {
        return None;
    }
    OffsetDateTime::parse(limit.resets_at.as_deref()?, &Rfc3339).ok()
}

/// "usage limit · resets 15:00 UTC (in 2h05m)" while `until` is ahead of `now`;
/// nothing once it passed (the next turn may run).
pub fn limit_text(until: OffsetDateTime, now: OffsetDateTime) -> Option<String> {
    let left = until - now;
    if !left.is_positive() {
        return None;
    }
    let minutes = (left.whole_milliseconds() + 59_999) / 60_000;
    let until = until.to_offset(time::UtcOffset::UTC);
    let hm = format!("{:02}:{:02} UTC", until.hour(), until.minute());
    let when = if left.whole_hours() >= 24 {
        format!("{} {hm}", until.date())
    } else {
        hm
    };
    let left = match minutes {
        m if m >= 60 => format!("{}h{:02}m", m / 60, m % 60),
        m => format!("{m}m"),
    };
    Some(format!("usage limit · resets {when} (in {left})"))
}

fn status_word(status: FileStatus) -> &'static str {
    match status {
        FileStatus::Modified => "M",
        FileStatus::Added => "A",
        FileStatus::Deleted => "D",
        FileStatus::Renamed => "R",
        FileStatus::Untracked => "?",
        FileStatus::Conflicted => "U",
    }
}

/// One changed file: "  M <path> +12 −3".
fn change_line(f: &FileChange, color: bool) -> String {
    let path = match &f.from {
        Some(from) => format!("{} → {}", one_line(from, 200), one_line(&f.path, 200)),
        None => one_line(&f.path, 200),
    };
    let counts = if f.binary {
        "binary".to_string()
    } else {
        format!(
            "{} {}",
            paint(color, GREEN, &format!("+{}", f.insertions)),
            paint(color, RED, &format!("−{}", f.deletions))
        )
    };
    format!("  {} {path} {counts}\n", status_word(f.status))
}

/// A turn's `relay.changes`: a heading and one line per file (at most
/// [`CHANGES_SHOWN`]).
pub fn changes(files: &[FileChange], truncated: bool, color: bool) -> String {
    let noun = if files.len() == 1 { "file" } else { "files" };
    let more = if truncated { " (more not listed)" } else { "" };
    let mut out = paint(
        color,
        DIM,
        &format!(
            "· the turn changed {} {noun}{more} (:diff turn shows them)",
            files.len()
        ),
    );
    out.push('\n');
    for f in files.iter().take(CHANGES_SHOWN) {
        out.push_str(&change_line(f, color));
    }
    if files.len() > CHANGES_SHOWN {
        out.push_str(&format!("  … and {} more\n", files.len() - CHANGES_SHOWN));
    }
    out
}

/// What `files.status` says, for `:changes`.
pub fn status(
    git: bool,
    branch: Option<&str>,
    files: &[FileChange],
    truncated: bool,
    color: bool,
) -> String {
    if !git {
        return "the session's directory is not in a git repository\n".to_string();
    }
    let on = branch.map_or_else(|| "a detached HEAD".to_string(), |b| one_line(b, 100));
    let mut out = if files.is_empty() {
        format!("no changes on {on}\n")
    } else {
        format!("{} changed on {on}:\n", files.len())
    };
    for f in files {
        out.push_str(&change_line(f, color));
    }
    if truncated {
        out.push_str("  … more not listed\n");
    }
    out
}

/// A unified diff, every line cleaned and (with `color`) coloured.
pub fn diff(text: &str, binary: bool, truncated: bool, color: bool) -> String {
    let mut out = String::new();
    if binary {
        out.push_str("(binary content: no text diff)\n");
    }
    for line in text.lines() {
        let line = clean(line);
        let sgr = if line.starts_with("+++") || line.starts_with("---") || line.starts_with("diff ")
        {
            BOLD
        } else if line.starts_with('+') {
            GREEN
        } else if line.starts_with('-') {
            RED
        } else if line.starts_with("@@") {
            CYAN
        } else {
            ""
        };
        if sgr.is_empty() {
            out.push_str(&line);
        } else {
            out.push_str(&paint(color, sgr, &line));
        }
        out.push('\n');
    }
    if text.is_empty() && !binary {
        out.push_str("(no changes)\n");
    }
    if truncated {
        out.push_str("(the diff was cut at the server's limit)\n");
    }
    out
}

/// Plan Markdown made readable: headings bold, bullets as "•", fenced code
/// indented and dim; everything cleaned.
pub fn plan(markdown: &str, color: bool) -> String {
    let mut out = String::new();
    let mut in_code = false;
    for raw in clean(markdown).lines() {
        let trimmed = raw.trim_start();
        if trimmed.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        let line = if in_code {
            paint(color, DIM, &format!("    {raw}"))
        } else if let Some(heading) = heading(trimmed) {
            paint(color, BOLD, heading)
        } else if let Some(item) = trimmed
            .strip_prefix("- ")
            .or_else(|| trimmed.strip_prefix("* "))
        {
            let indent = &raw[..raw.len() - trimmed.len()];
            format!("{indent}  • {item}")
        } else {
            raw.to_string()
        };
        out.push_str("  ");
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn heading(line: &str) -> Option<&str> {
    let text = line.trim_start_matches('#');
    let level = line.len() - text.len();
    ((1..=6).contains(&level) && text.starts_with(' ')).then(|| text.trim())
}

/// One question of an `AskUserQuestion` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The question text exactly as sent (the answer's key).
    pub question: String,
    pub header: String,
    pub multi_select: bool,
    /// Option labels exactly as sent (the answer's values), with descriptions.
    pub options: Vec<(String, String)>,
}

/// The questions of an `AskUserQuestion` input (malformed entries skipped).
pub fn questions(input: &Value) -> Vec<Question> {
    let Some(list) = input.get("questions").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|q| {
            let question = q.get("question")?.as_str()?.to_string();
            let options = q
                .get("options")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|o| {
                    let label = o.get("label")?.as_str()?.to_string();
                    let description = o
                        .get("description")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    Some((label, description))
                })
                .collect();
            Some(Question {
                question,
                header: q
                    .get("header")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                multi_select: q.get("multiSelect").and_then(Value::as_bool) == Some(true),
                options,
            })
        })
        .collect()
}

/// The questions with numbered options, for the screen.
pub fn render_questions(questions: &[Question], color: bool) -> String {
    let mut out = String::new();
    for (i, q) in questions.iter().enumerate() {
        let header = if q.header.is_empty() {
            String::new()
        } else {
            format!("[{}] ", one_line(&q.header, 40))
        };
        let multi = if q.multi_select {
            " (several: type the numbers)"
        } else {
            ""
        };
        let text = format!("  Q{} {header}{}{multi}", i + 1, one_line(&q.question, 300));
        out.push_str(&paint(color, BOLD, &text));
        out.push('\n');
        for (n, (label, description)) in q.options.iter().enumerate() {
            let desc = if description.is_empty() {
                String::new()
            } else {
                paint(color, DIM, &format!(" — {}", one_line(description, 200)))
            };
            out.push_str(&format!("    {}. {}{desc}\n", n + 1, one_line(label, 100)));
        }
    }
    out
}

/// What was chosen for one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Option numbers, 1-based.
    Options(Vec<usize>),
    /// Free text ("other").
    Other(String),
}

/// Read typed digits as option numbers of `q` ("13" or "1 3" or "1,3": options
/// 1 and 3 when several may be chosen). `None` when a number names no option
/// or a single-choice question got several.
pub fn parse_choice(q: &Question, typed: &str) -> Option<Choice> {
    let mut picked: Vec<usize> = Vec::new();
    let digits_only = typed.chars().all(|c| c.is_ascii_digit());
    let numbers: Vec<usize> = if digits_only && q.options.len() < 10 {
        typed
            .chars()
            .filter_map(|c| c.to_digit(10).map(|d| d as usize))
            .collect()
    } else {
        typed
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<usize>().ok())
            .collect::<Option<Vec<_>>>()?
    };
    for n in numbers {
        if n == 0 || n > q.options.len() {
            return None;
        }
        if !picked.contains(&n) {
            picked.push(n);
        }
    }
    if picked.is_empty() || (!q.multi_select && picked.len() > 1) {
        return None;
    }
    Some(Choice::Options(picked))
}

/// The `updatedInput` of the answer: the request's input plus
/// `answers: {"<question>": "<label>"}`, several labels joined with ", "
/// (docs/protocol.md §10.1).
pub fn answered_input(input: &Value, questions: &[Question], choices: &[Choice]) -> Value {
    let mut answers = Map::new();
    for (q, choice) in questions.iter().zip(choices) {
        let text = match choice {
            Choice::Options(numbers) => numbers
                .iter()
                .filter_map(|n| q.options.get(n.wrapping_sub(1)).map(|(l, _)| l.as_str()))
                .collect::<Vec<_>>()
                .join(", "),
            Choice::Other(text) => text.clone(),
        };
        answers.insert(q.question.clone(), Value::String(text));
    }
    let mut out = match input {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    out.insert("answers".into(), Value::Object(answers));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn change(path: &str, status: FileStatus, ins: u64, del: u64) -> FileChange {
        FileChange {
            path: path.into(),
            status,
            from: None,
            insertions: ins,
            deletions: del,
            binary: false,
        }
    }

    const HOSTILE: &str = "evil\u{1b}[2J\u{202e}txt\u{7}";

    fn assert_safe(text: &str) {
        assert!(
            !text
                .chars()
                .any(|c| c != '\n' && ccrelay_server::escape::is_dangerous(c)),
            "raw control or bidi in {text:?}"
        );
    }

    #[test]
    fn a_reached_usage_limit_reads_as_its_reset_until_it_passes() {
        let at = |s: &str| OffsetDateTime::parse(s, &Rfc3339).unwrap();
        let limit = |status: &str, resets: Option<&str>| RateLimit {
            status: Some(status.into()),
            resets_at: resets.map(str::to_string),
        };
        let until = limited_until(Some(&limit("rejected", Some("2026-12-07T15:00:00+01:00"))))
            .expect("a reached limit with a reset");
        assert_eq!(
            limit_text(until, at("2026-12-07T11:55:00Z")).as_deref(),
            Some("usage limit · resets 14:00 UTC (in 2h05m)")
        );
        assert_eq!(
            limit_text(until, at("2026-12-07T13:59:30Z")).as_deref(),
            Some("usage limit · resets 14:00 UTC (in 1m)")
        );
        assert_eq!(limit_text(until, at("2026-12-07T14:00:00Z")), None);
        assert_eq!(
            limit_text(until, at("2026-12-05T14:00:00Z")).as_deref(),
            Some("usage limit · resets 2026-12-07 14:00 UTC (in 48h00m)")
        );
        // Not reached, or no time to wait for: nothing to say.
        assert_eq!(
            limited_until(Some(&limit(
                "allowed_warning",
                Some("2026-12-07T15:00:00Z")
            ))),
            None
        );
        assert_eq!(limited_until(Some(&limit("rejected", None))), None);
        assert_eq!(limited_until(Some(&limit("rejected", Some("soon")))), None);
        assert_eq!(limited_until(None), None);
    }

    #[test]
    fn usage_reads_as_context_and_cost() {
        let ctx = ContextUsage {
            used_tokens: 41_000,
            max_tokens: 200_000,
        };
        assert_eq!(usage(Some(&ctx), 1.934), "context 41k/200k (20%) · $1.93");
        assert_eq!(usage(None, 0.0), "context unknown · $0.00");
        let big = ContextUsage {
            used_tokens: 14_621,
            max_tokens: 1_000_000,
        };
        assert_eq!(usage(Some(&big), f64::NAN), "context 14k/1.0M (1%) · $?");
    }

    #[test]
    fn changes_list_paths_with_status_and_counts_escaped() {
        let files = vec![
            change("src/a.rs", FileStatus::Modified, 12, 3),
            change(HOSTILE, FileStatus::Untracked, 1, 0),
        ];
        let text = changes(&files, false, false);
        assert!(text.starts_with("· the turn changed 2 files"), "{text}");
        assert!(text.contains("  M src/a.rs +12 −3\n"), "{text}");
        assert!(
            text.contains("  ? evil\\u{1b}[2J\\u{202e}txt\\u{7} +1 −0"),
            "{text}"
        );
        assert_safe(&text);
        let many: Vec<_> = (0..25)
            .map(|i| change(&format!("f{i}"), FileStatus::Added, 1, 0))
            .collect();
        let text = changes(&many, true, true);
        assert!(text.contains("more not listed"));
        assert!(text.contains("… and 5 more"));
        assert!(text.contains("\x1b[32m+1\x1b[0m"));
    }

    #[test]
    fn status_names_the_branch_or_says_not_a_repository() {
        let files = vec![change("x", FileStatus::Deleted, 0, 4)];
        let text = status(true, Some("main\u{1b}]0;t\u{7}"), &files, false, false);
        assert!(
            text.starts_with("1 changed on main\\u{1b}]0;t\\u{7}:\n"),
            "{text}"
        );
        assert!(text.contains("  D x +0 −4"));
        assert_safe(&text);
        assert!(status(false, None, &[], false, false).contains("not in a git repository"));
        assert_eq!(
            status(true, None, &[], false, false),
            "no changes on a detached HEAD\n"
        );
    }

    #[test]
    fn diffs_are_coloured_by_line_kind_and_cleaned() {
        let d = "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-old\n+new\u{1b}[31m\u{202e}\n same\n";
        let plain = diff(d, false, false, false);
        assert!(plain.contains("-old\n+new[31m\n same\n"), "{plain}");
        assert_safe(&plain);
        let coloured = diff(d, false, true, true);
        assert!(coloured.contains("\x1b[31m-old\x1b[0m"));
        assert!(coloured.contains("\x1b[32m+new[31m\x1b[0m"));
        assert!(coloured.contains("\x1b[36m@@ -1 +1 @@\x1b[0m"));
        assert!(coloured.contains("cut at the server's limit"));
        assert_eq!(diff("", false, false, false), "(no changes)\n");
    }

    #[test]
    fn plans_show_headings_bullets_and_code() {
        let md = "# Plan\n\n## Steps\n- edit \u{1b}[2Jlogin.rs\n  * nested\n```rust\nfn main() {}\n```\nDone.";
        let text = plan(md, false);
        assert_eq!(
            text,
            "  Plan\n  \n  Steps\n    • edit [2Jlogin.rs\n      • nested\n      fn main() {}\n  Done.\n"
        );
        assert_safe(&text);
        assert!(plan("# H", true).contains("\x1b[1mH\x1b[0m"));
    }

    fn recorded_input() -> Value {
        json!({"questions":[
            {"question":"Which color should the button be?","header":"Color","multiSelect":false,
             "options":[{"label":"Red","description":"warm"},{"label":"Blue","description":"calm"}]},
            {"question":"Which toppings do you want?","header":"Toppings","multiSelect":true,
             "options":[{"label":"Cheese","description":""},{"label":"Basil","description":""},{"label":"Olives","description":""}]}]})
    }

    #[test]
    fn questions_are_numbered_and_answers_take_the_recorded_shape() {
        let input = recorded_input();
        let qs = questions(&input);
        assert_eq!(qs.len(), 2);
        let text = render_questions(&qs, false);
        assert!(text.contains("  Q1 [Color] Which color should the button be?\n    1. Red — warm\n    2. Blue — calm\n"), "{text}");
        assert!(text.contains("Q2 [Toppings] Which toppings do you want? (several"));
        assert_eq!(parse_choice(&qs[0], "2"), Some(Choice::Options(vec![2])));
        assert_eq!(parse_choice(&qs[0], "12"), None, "one choice only");
        assert_eq!(parse_choice(&qs[0], "3"), None, "no option 3");
        assert_eq!(
            parse_choice(&qs[1], "12"),
            Some(Choice::Options(vec![1, 2]))
        );
        assert_eq!(
            parse_choice(&qs[1], "1, 2 1"),
            Some(Choice::Options(vec![1, 2]))
        );
        assert_eq!(parse_choice(&qs[1], "x"), None);
        let answered = answered_input(
            &input,
            &qs,
            &[Choice::Options(vec![2]), Choice::Options(vec![1, 2])],
        );
        let mut expected = input.clone();
        expected["answers"] = json!({"Which color should the button be?":"Blue","Which toppings do you want?":"Cheese, Basil"});
        assert_eq!(answered, expected);
        let other = answered_input(&input, &qs[..1], &[Choice::Other("green".into())]);
        assert_eq!(
            other["answers"],
            json!({"Which color should the button be?":"green"})
        );
    }

    #[test]
    fn hostile_questions_are_escaped() {
        let input = json!({"questions":[{"question":HOSTILE,"header":HOSTILE,"multiSelect":false,
            "options":[{"label":HOSTILE,"description":HOSTILE}]}, {"question":5}]});
        let qs = questions(&input);
        assert_eq!(qs.len(), 1, "malformed entries are skipped");
        let text = render_questions(&qs, true);
        assert_safe(
            &text
                .replace("\x1b[1m", "")
                .replace("\x1b[2m", "")
                .replace(RESET, ""),
        );
        assert!(text.contains("evil\\u{1b}[2J"));
        // The answer keeps the exact strings: they are JSON, never printed.
        let a = answered_input(&input, &qs, &[Choice::Options(vec![1])]);
        assert_eq!(a["answers"][HOSTILE], json!(HOSTILE));
    }
}
