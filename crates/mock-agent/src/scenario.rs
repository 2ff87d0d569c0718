//! Picks a scripted behaviour from a prompt's text: a case-insensitive keyword,
//! as a whole word, anywhere in the text. The list is [`super::HELP`].

/// Default command of `run-bash` / `permission`.
pub const DEFAULT_BASH: &str = "sh -c 'echo relay-ok'";
/// Default file of `write-file`.
pub const DEFAULT_WRITE_PATH: &str = "relay-test.txt";
/// What `write-file` writes.
pub const WRITE_CONTENT: &str = "written by the mock agent\n";
/// Default delta count of `flood`.
pub const DEFAULT_FLOOD: u64 = 2000;
/// Default size of `bigline`.
pub const DEFAULT_BIGLINE: u64 = 1024 * 1024;

/// The main behaviour of a turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// "You said: …" in a few deltas.
    Echo,
    /// A Bash tool_use with this command, asking permission.
    Bash(String),
    /// The same with `run_in_background: true` in its input.
    BashInBackground(String),
    /// A Write tool_use of this path, asking permission.
    Write(String),
    /// 20 deltas, 250 ms apart.
    Slow,
    /// N deltas as fast as possible.
    Flood(u64),
    /// A few deltas, then exit 3.
    Crash,
    /// Stop reading and writing forever.
    Hang,
    /// One assistant line with an N-byte text.
    BigLine(u64),
    /// Quote every earlier prompt of the conversation.
    Recall,
    /// An `ExitPlanMode` tool_use with a short plan, asking for approval.
    ExitPlan,
    /// An `AskUserQuestion` tool_use with two questions (one multi-select).
    AskQuestion,
}

/// A parsed prompt: the behaviour plus modifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// The main behaviour.
    pub kind: Kind,
    /// Write a non-JSON line to stdout mid-turn.
    pub garbage: bool,
    /// Write a few lines to stderr during the turn.
    pub stderr: bool,
}

impl Scenario {
    /// Parses the prompt text.
    pub fn parse(text: &str) -> Self {
        let lower = text.to_ascii_lowercase();
        let find = |kw: &str| find_word(&lower, kw).map(|at| &text[at + kw.len()..]);
        let kind = if find("hang").is_some() {
            Kind::Hang
        } else if find("crash").is_some() {
            Kind::Crash
        } else if let Some(rest) = find("bigline") {
            Kind::BigLine(number(rest).unwrap_or(DEFAULT_BIGLINE))
        } else if let Some(rest) = find("flood") {
            Kind::Flood(number(rest).unwrap_or(DEFAULT_FLOOD))
        } else if let Some(rest) = find("run-bash-background") {
            let cmd = rest.trim();
            Kind::BashInBackground(if cmd.is_empty() { DEFAULT_BASH } else { cmd }.to_string())
        } else if let Some(rest) = find("run-bash") {
            let cmd = rest.trim();
            Kind::Bash(if cmd.is_empty() { DEFAULT_BASH } else { cmd }.to_string())
        } else if find("exit-plan").is_some() {
            Kind::ExitPlan
        } else if find("ask-question").is_some() {
            Kind::AskQuestion
        } else if let Some(rest) = find("write-file") {
            let path = rest.split_whitespace().next().unwrap_or(DEFAULT_WRITE_PATH);
            Kind::Write(path.to_string())
        } else if find("permission").is_some() {
            Kind::Bash(DEFAULT_BASH.to_string())
        } else if find("slow").is_some() {
            Kind::Slow
        } else if find("recall").is_some() {
            Kind::Recall
        } else {
            Kind::Echo
        };
        Scenario {
            kind,
            garbage: find_word(&lower, "garbage").is_some(),
            stderr: find_word(&lower, "stderr").is_some(),
        }
    }
}

/// Where `word` first occurs in `text` as a whole word (not inside a longer
/// word: "change" does not contain the keyword "hang").
fn find_word(text: &str, word: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut from = 0;
    while let Some(rel) = text[from..].find(word) {
        let at = from + rel;
        let end = at + word.len();
        let before_ok = at == 0 || !is_word(bytes[at - 1]);
        let after_ok = end >= bytes.len() || !is_word(bytes[end]);
        if before_ok && after_ok {
            return Some(at);
        }
        from = at + 1;
        while !text.is_char_boundary(from) {
            from += 1;
        }
    }
    None
}

/// The first whitespace-separated token after a keyword, as a number.
fn number(rest: &str) -> Option<u64> {
    rest.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords() {
        assert_eq!(Scenario::parse("hello").kind, Kind::Echo);
        assert_eq!(
            Scenario::parse("please RUN-BASH").kind,
            Kind::Bash(DEFAULT_BASH.into())
        );
        assert_eq!(
            Scenario::parse("run-bash-background sleep 1").kind,
            Kind::BashInBackground("sleep 1".into())
        );
        assert_eq!(
            Scenario::parse("run-bash touch /tmp/x").kind,
            Kind::Bash("touch /tmp/x".into())
        );
        assert_eq!(Scenario::parse("Flood 10").kind, Kind::Flood(10));
        assert_eq!(Scenario::parse("flood").kind, Kind::Flood(DEFAULT_FLOOD));
        assert_eq!(
            Scenario::parse("bigline 10485760").kind,
            Kind::BigLine(10_485_760)
        );
        assert_eq!(
            Scenario::parse("write-file /tmp/a b").kind,
            Kind::Write("/tmp/a".into())
        );
        assert_eq!(Scenario::parse("please exit-plan").kind, Kind::ExitPlan);
        assert_eq!(Scenario::parse("ask-question now").kind, Kind::AskQuestion);
        let s = Scenario::parse("slow with garbage and stderr");
        assert_eq!(s.kind, Kind::Slow);
        assert!(s.garbage && s.stderr);
        assert_eq!(Scenario::parse("please change the plan").kind, Kind::Echo);
        assert_eq!(Scenario::parse("Hang!").kind, Kind::Hang);
        assert_eq!(
            Scenario::parse("ask for permission.").kind,
            Kind::Bash(DEFAULT_BASH.into())
        );
    }
}
