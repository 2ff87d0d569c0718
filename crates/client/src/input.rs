//! The interactive line editor: prompt input with history and multi-line
//! continuation, and single-key answers to permission prompts.
//!
//! Owns: the draft, the cursor, history, and what a key press means. Pure: it
//! takes crossterm key events and returns an [`Action`]; `screen` draws
//! [`Editor::view`] and `session` acts on the actions.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::controls::{Choice, Question, parse_choice};

/// Entries of prompt history kept in memory.
const HISTORY_MAX: usize = 500;
/// Prompt of the first line and of continuation lines.
pub const PROMPT: &str = "> ";
pub const CONTINUATION: &str = ". ";

/// An answer to a permission prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Allow and apply the request's `permission_suggestions`.
    AllowAlways,
    Deny(Option<String>),
    /// A pairing request allowed with the viewer role (`v`).
    AllowViewer,
    /// A plan approved, and edits accepted from now on (`a` on an `ExitPlanMode` request).
    AllowAcceptEdits,
    /// The answers to an `AskUserQuestion` request, one per question.
    Answers(Vec<Choice>),
}

/// What kind of request a permission prompt answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AskKind {
    /// A tool call: y / a / n / m.
    #[default]
    Tool,
    /// `ExitPlanMode`: approve, approve and accept edits, or keep planning.
    Plan,
    /// `AskUserQuestion`: option numbers (or other text) per question.
    Questions(Vec<Question>),
}

/// What a key press asks the session to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing visible changed.
    None,
    /// The editor changed: draw it again.
    Redraw,
    /// Send this prompt.
    Submit(String),
    /// Ctrl-C with nothing to clear: interrupt or quit (the session knows which).
    CtrlC,
    /// Ctrl-D on an empty line: quit.
    Eof,
    /// Answer the permission prompt on screen.
    Answer {
        request_id: String,
        decision: Decision,
    },
}

/// The permission prompt the editor is showing instead of the draft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    pub request_id: String,
    pub tool: String,
    /// Whether "always allow" has suggestions to apply.
    pub can_always: bool,
    /// Set when this is a device pairing request (answered y / v / n).
    pub pair: Option<PairAsk>,
    pub kind: AskKind,
}

/// A device pairing request on screen; every string already made terminal-safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairAsk {
    pub device: String,
    pub code: String,
    pub fingerprint: String,
}

/// What to draw: lines of text (prompts included) and where the cursor sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub lines: Vec<String>,
    /// (line index, column in characters)
    pub cursor: (usize, usize),
}

#[derive(Debug, Default)]
pub struct Editor {
    buf: Vec<char>,
    cursor: usize,
    history: Vec<String>,
    /// Index into history while browsing it with Up/Down.
    browsing: Option<usize>,
    /// The draft saved when history browsing started.
    saved: Vec<char>,
    ask: Option<Ask>,
    /// Typing the message of a deny (`m`).
    message: Option<Vec<char>>,
    /// Answering an `AskUserQuestion` prompt.
    answering: Answering,
    /// Slash commands Tab completes: (name without `/`, argument hint), every
    /// string terminal-safe.
    commands: Vec<(String, String)>,
    /// The Tab cycle in progress: what was typed and which candidate is shown.
    completion: Option<(String, usize)>,
    /// A status line drawn above the prompt (terminal-safe).
    status: Option<String>,
}

/// Progress through the questions of one `AskUserQuestion` prompt.
#[derive(Debug, Default)]
struct Answering {
    choices: Vec<Choice>,
    typed: Vec<char>,
    /// Typing free text (`o`) instead of option numbers.
    other: bool,
    /// The last entry named no option.
    invalid: bool,
}

impl Editor {
    pub fn new() -> Editor {
        Editor::default()
    }

    /// Show a permission prompt (or the draft again with `None`).
    pub fn set_ask(&mut self, ask: Option<Ask>) {
        if self.ask.as_ref().map(|a| &a.request_id) != ask.as_ref().map(|a| &a.request_id) {
            self.message = None;
            self.answering = Answering::default();
        }
        self.ask = ask;
    }

    pub fn ask(&self) -> Option<&Ask> {
        self.ask.as_ref()
    }

    /// The slash commands Tab completes (names without `/`, terminal-safe).
    pub fn set_commands(&mut self, commands: Vec<(String, String)>) {
        self.commands = commands;
        self.completion = None;
    }

    /// The status line above the prompt (`None`: none).
    pub fn set_status(&mut self, status: Option<String>) {
        self.status = status;
    }

    pub fn status(&self) -> Option<&str> {
        self.status.as_deref()
    }

    pub fn commands(&self) -> &[(String, String)] {
        &self.commands
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Text pasted in one piece (bracketed paste): inserted as typed, newlines kept.
    pub fn paste(&mut self, text: &str) -> Action {
        let text = text.replace("\r\n", "\n").replace('\r', "\n");
        if let Some(msg) = &mut self.message {
            msg.extend(text.chars().filter(|c| *c != '\n'));
            return Action::Redraw;
        }
        if self.ask.is_some() {
            return Action::None;
        }
        for c in text.chars() {
            self.insert(c);
        }
        Action::Redraw
    }

    pub fn key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        // Ctrl-C and Ctrl-D mean the same in every mode.
        match key.code {
            KeyCode::Char('c') if ctrl => {
                if self.message.is_some() {
                    self.message = None;
                    return Action::Redraw;
                }
                if self.ask.is_none() && !self.buf.is_empty() {
                    self.clear();
                    return Action::Redraw;
                }
                return Action::CtrlC;
            }
            KeyCode::Char('d') if ctrl && self.buf.is_empty() && self.message.is_none() => {
                return Action::Eof;
            }
            _ => {}
        }
        if self.message.is_some() {
            return self.message_key(key);
        }
        if !matches!(key.code, KeyCode::Tab) {
            self.completion = None;
        }
        if let Some(ask) = &self.ask {
            if let AskKind::Questions(questions) = &ask.kind {
                let (questions, request_id) = (questions.clone(), ask.request_id.clone());
                return self.question_key(key, &questions, request_id);
            }
            // y and n everywhere; a plan offers "approve, accept edits" and a message,
            // a pairing "as a viewer", a tool "always" and a message.
            let plan = ask.kind == AskKind::Plan;
            let pairing = !plan && ask.pair.is_some();
            let request_id = ask.request_id.clone();
            let decision = match key.code {
                KeyCode::Char('y' | 'Y') => Decision::Allow,
                KeyCode::Char('n' | 'N') => Decision::Deny(None),
                KeyCode::Char('a' | 'A') if plan => Decision::AllowAcceptEdits,
                KeyCode::Char('a' | 'A') if !pairing => Decision::AllowAlways,
                KeyCode::Char('v' | 'V') if pairing => Decision::AllowViewer,
                KeyCode::Char('m' | 'M') if !pairing => {
                    self.message = Some(Vec::new());
                    return Action::Redraw;
                }
                _ => return Action::None,
            };
            return Action::Answer {
                request_id,
                decision,
            };
        }
        match key.code {
            KeyCode::Enter if alt => self.insert('\n'),
            KeyCode::Char('j') if ctrl => self.insert('\n'),
            KeyCode::Enter => return self.enter(),
            KeyCode::Char('a') if ctrl => self.cursor = self.line_start(),
            KeyCode::Char('e') if ctrl => self.cursor = self.line_end(),
            KeyCode::Char('u') if ctrl => {
                let start = self.line_start();
                self.buf.drain(start..self.cursor);
                self.cursor = start;
            }
            KeyCode::Char('k') if ctrl => {
                let end = self.line_end();
                self.buf.drain(self.cursor..end);
            }
            KeyCode::Char('w') if ctrl => self.delete_word(),
            KeyCode::Char('l') if ctrl => {}
            KeyCode::Char('d') if ctrl && self.cursor < self.buf.len() => {
                self.buf.remove(self.cursor);
            }
            KeyCode::Char(_) if ctrl => return Action::None,
            KeyCode::Char(c) => self.insert(c),
            KeyCode::Tab => {
                if !self.complete() {
                    for _ in 0..4 {
                        self.insert(' ');
                    }
                }
            }
            KeyCode::Backspace if self.cursor > 0 => {
                self.cursor -= 1;
                self.buf.remove(self.cursor);
            }
            KeyCode::Delete if self.cursor < self.buf.len() => {
                self.buf.remove(self.cursor);
            }
            KeyCode::Left => self.cursor = self.cursor.saturating_sub(1),
            KeyCode::Right => self.cursor = (self.cursor + 1).min(self.buf.len()),
            KeyCode::Home => self.cursor = self.line_start(),
            KeyCode::End => self.cursor = self.line_end(),
            KeyCode::Up => self.history_step(true),
            KeyCode::Down => self.history_step(false),
            _ => return Action::None,
        }
        Action::Redraw
    }

    fn message_key(&mut self, key: KeyEvent) -> Action {
        let Some(msg) = &mut self.message else {
            return Action::None;
        };
        match key.code {
            KeyCode::Enter => {
                let text: String = msg.iter().collect();
                let text = text.trim().to_string();
                let Some(ask) = &self.ask else {
                    self.message = None;
                    return Action::Redraw;
                };
                let request_id = ask.request_id.clone();
                self.message = None;
                Action::Answer {
                    request_id,
                    decision: Decision::Deny((!text.is_empty()).then_some(text)),
                }
            }
            KeyCode::Esc => {
                self.message = None;
                Action::Redraw
            }
            KeyCode::Backspace => {
                msg.pop();
                Action::Redraw
            }
            KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => {
                msg.push(c);
                Action::Redraw
            }
            _ => Action::None,
        }
    }

    /// One key while answering questions: digits choose options, Enter takes
    /// the current question's answer (the last one sends them all), `o` types
    /// another answer, `n` declines to answer.
    fn question_key(
        &mut self,
        key: KeyEvent,
        questions: &[Question],
        request_id: String,
    ) -> Action {
        let a = &mut self.answering;
        let Some(q) = questions.get(a.choices.len()) else {
            return Action::None;
        };
        match key.code {
            KeyCode::Enter => {
                let typed: String = a.typed.iter().collect();
                let choice = if a.other {
                    let text = typed.trim().to_string();
                    (!text.is_empty()).then_some(Choice::Other(text))
                } else {
                    parse_choice(q, typed.trim())
                };
                let Some(choice) = choice else {
                    a.invalid = true;
                    return Action::Redraw;
                };
                a.choices.push(choice);
                a.typed.clear();
                a.other = false;
                a.invalid = false;
                if a.choices.len() < questions.len() {
                    return Action::Redraw;
                }
                let choices = std::mem::take(&mut a.choices);
                Action::Answer {
                    request_id,
                    decision: Decision::Answers(choices),
                }
            }
            KeyCode::Esc if a.other => {
                a.other = false;
                a.typed.clear();
                Action::Redraw
            }
            KeyCode::Backspace => {
                a.typed.pop();
                Action::Redraw
            }
            KeyCode::Char(_) if key.modifiers.contains(KeyModifiers::CONTROL) => Action::None,
            KeyCode::Char(c) if a.other => {
                a.typed.push(c);
                Action::Redraw
            }
            KeyCode::Char('o' | 'O') if a.typed.is_empty() => {
                a.other = true;
                Action::Redraw
            }
            KeyCode::Char('n' | 'N') if a.typed.is_empty() && a.choices.is_empty() => {
                Action::Answer {
                    request_id,
                    decision: Decision::Deny(None),
                }
            }
            KeyCode::Char(c) if c.is_ascii_digit() || c == ',' || c == ' ' => {
                a.typed.push(c);
                a.invalid = false;
                Action::Redraw
            }
            _ => Action::None,
        }
    }

    /// Tab on a `/command` being typed: complete its name from the catalog;
    /// Tab again shows the next match. False when there is nothing to complete.
    fn complete(&mut self) -> bool {
        let text: String = self.buf.iter().collect();
        if self.cursor != self.buf.len() || text.contains(char::is_whitespace) {
            return false;
        }
        let (typed, next) = match &self.completion {
            Some((typed, i)) => (typed.clone(), i + 1),
            None => match text.strip_prefix('/') {
                Some(typed) => (typed.to_string(), 0),
                None => return false,
            },
        };
        let matches: Vec<&String> = self
            .commands
            .iter()
            .map(|(name, _)| name)
            .filter(|name| name.starts_with(&typed))
            .collect();
        if matches.is_empty() {
            self.completion = None;
            return !text.is_empty();
        }
        let i = next % matches.len();
        self.buf = format!("/{}", matches[i]).chars().collect();
        self.cursor = self.buf.len();
        self.completion = Some((typed, i));
        true
    }

    /// The argument hint of the command the draft names, while completing.
    fn hint(&self) -> Option<&str> {
        self.completion.as_ref()?;
        let text: String = self.buf.iter().collect();
        let name = text.strip_prefix('/')?;
        self.commands
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, hint)| hint.as_str())
            .filter(|h| !h.is_empty())
    }

    /// Enter: a trailing backslash continues on a new line; otherwise submit.
    fn enter(&mut self) -> Action {
        if self.cursor == self.buf.len() && self.buf.last() == Some(&'\\') {
            self.buf.pop();
            self.cursor -= 1;
            self.insert('\n');
            return Action::Redraw;
        }
        let text: String = self.buf.iter().collect();
        if text.trim().is_empty() {
            return Action::None;
        }
        if self.history.last() != Some(&text) {
            self.history.push(text.clone());
            if self.history.len() > HISTORY_MAX {
                self.history.remove(0);
            }
        }
        self.clear();
        Action::Submit(text)
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.cursor = 0;
        self.browsing = None;
    }

    fn insert(&mut self, c: char) {
        self.buf.insert(self.cursor, c);
        self.cursor += 1;
    }

    fn line_start(&self) -> usize {
        self.buf[..self.cursor]
            .iter()
            .rposition(|c| *c == '\n')
            .map_or(0, |i| i + 1)
    }

    fn line_end(&self) -> usize {
        self.buf[self.cursor..]
            .iter()
            .position(|c| *c == '\n')
            .map_or(self.buf.len(), |i| self.cursor + i)
    }

    fn delete_word(&mut self) {
        let mut i = self.cursor;
        while i > 0 && self.buf[i - 1].is_whitespace() {
            i -= 1;
        }
        while i > 0 && !self.buf[i - 1].is_whitespace() {
            i -= 1;
        }
        self.buf.drain(i..self.cursor);
        self.cursor = i;
    }

    fn history_step(&mut self, back: bool) {
        if self.history.is_empty() {
            return;
        }
        let next = match (self.browsing, back) {
            (None, true) => {
                self.saved = self.buf.clone();
                Some(self.history.len() - 1)
            }
            (None, false) => return,
            (Some(i), true) => Some(i.saturating_sub(1)),
            (Some(i), false) if i + 1 < self.history.len() => Some(i + 1),
            (Some(_), false) => None,
        };
        self.browsing = next;
        self.buf = match next {
            Some(i) => self.history[i].chars().collect(),
            None => std::mem::take(&mut self.saved),
        };
        self.cursor = self.buf.len();
    }

    /// The lines to draw, prompts included, and the cursor position.
    pub fn view(&self) -> View {
        if let Some(pair) = self.ask.as_ref().and_then(|a| a.pair.as_ref()) {
            let line = format!(
                "Pair device \"{}\" (code {}, {})? [y] yes, as owner  [v] yes, as viewer  [n] no",
                pair.device, pair.code, pair.fingerprint
            );
            let col = line.chars().count();
            return View {
                lines: vec![line],
                cursor: (0, col),
            };
        }
        if let Some(Ask {
            kind: AskKind::Questions(questions),
            ..
        }) = &self.ask
        {
            let a = &self.answering;
            let n = a.choices.len();
            let typed: String = a.typed.iter().collect();
            let what = if a.other {
                "your answer (Enter; Esc: numbers)".to_string()
            } else {
                let several = questions.get(n).is_some_and(|q| q.multi_select);
                let numbers = if several { "numbers" } else { "a number" };
                let again = if a.invalid { "no such option; " } else { "" };
                format!("{again}{numbers}, Enter  [o] other  [n] decline")
            };
            let head = format!("Answer Q{} of {} — {what}: ", n + 1, questions.len());
            let col = head.chars().count() + a.typed.len();
            return View {
                lines: vec![format!("{head}{typed}")],
                cursor: (0, col),
            };
        }
        if let Some(ask) = &self.ask {
            if let Some(msg) = &self.message {
                let head = if ask.kind == AskKind::Plan {
                    "keep planning; tell the agent (Enter sends, Esc goes back): ".to_string()
                } else {
                    format!(
                        "deny {} with message (Enter sends, Esc goes back): ",
                        ask.tool
                    )
                };
                let text: String = msg.iter().collect();
                let col = head.chars().count() + msg.len();
                return View {
                    lines: vec![format!("{head}{text}")],
                    cursor: (0, col),
                };
            }
            if ask.kind == AskKind::Plan {
                let line = "Approve the plan? [y] yes  [a] yes, and accept edits  [m] keep planning, with a message  [n] no".to_string();
                let col = line.chars().count();
                return View {
                    lines: vec![line],
                    cursor: (0, col),
                };
            }
            let always = if ask.can_always {
                "  [a] always allow"
            } else {
                "  [a] allow"
            };
            let line = format!(
                "Allow {}? [y] yes{always}  [n] no  [m] no, with a message",
                ask.tool
            );
            let col = line.chars().count();
            return View {
                lines: vec![line],
                cursor: (0, col),
            };
        }
        let text: String = self.buf.iter().collect();
        let mut lines: Vec<String> = self.status.iter().cloned().collect();
        let top = lines.len();
        for (i, l) in text.split('\n').enumerate() {
            let p = if i == 0 { PROMPT } else { CONTINUATION };
            lines.push(format!("{p}{l}"));
        }
        if let Some(hint) = self.hint()
            && let Some(last) = lines.last_mut()
        {
            last.push_str("  ");
            last.push_str(hint);
        }
        let before: String = self.buf[..self.cursor].iter().collect();
        let row = before.matches('\n').count();
        let col_chars = before.rsplit('\n').next().map_or(0, |l| l.chars().count());
        View {
            lines,
            cursor: (top + row, PROMPT.chars().count() + col_chars),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn ctrl(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
    }

    fn typed(e: &mut Editor, s: &str) {
        for c in s.chars() {
            e.key(k(KeyCode::Char(c)));
        }
    }

    #[test]
    fn typing_and_submitting() {
        let mut e = Editor::new();
        typed(&mut e, "helo");
        e.key(k(KeyCode::Left));
        typed(&mut e, "l");
        assert_eq!(e.view().lines, vec!["> hello"]);
        assert_eq!(e.view().cursor, (0, 6));
        assert_eq!(e.key(k(KeyCode::Enter)), Action::Submit("hello".into()));
        assert!(e.is_empty());
        assert_eq!(e.key(k(KeyCode::Enter)), Action::None);
    }

    #[test]
    fn trailing_backslash_and_alt_enter_continue() {
        let mut e = Editor::new();
        typed(&mut e, "one\\");
        assert_eq!(e.key(k(KeyCode::Enter)), Action::Redraw);
        typed(&mut e, "two");
        e.key(KeyEvent::new(KeyCode::Enter, KeyModifiers::ALT));
        typed(&mut e, "three");
        assert_eq!(e.view().lines, vec!["> one", ". two", ". three"]);
        assert_eq!(e.view().cursor, (2, 7));
        assert_eq!(
            e.key(k(KeyCode::Enter)),
            Action::Submit("one\ntwo\nthree".into())
        );
    }

    #[test]
    fn history_browsing_keeps_the_draft() {
        let mut e = Editor::new();
        typed(&mut e, "first");
        e.key(k(KeyCode::Enter));
        typed(&mut e, "second");
        e.key(k(KeyCode::Enter));
        typed(&mut e, "dra");
        e.key(k(KeyCode::Up));
        assert_eq!(e.view().lines, vec!["> second"]);
        e.key(k(KeyCode::Up));
        e.key(k(KeyCode::Up));
        assert_eq!(e.view().lines, vec!["> first"]);
        e.key(k(KeyCode::Down));
        e.key(k(KeyCode::Down));
        assert_eq!(e.view().lines, vec!["> dra"]);
    }

    #[test]
    fn ctrl_c_clears_then_reports_and_ctrl_d_quits_on_empty() {
        let mut e = Editor::new();
        typed(&mut e, "x");
        assert_eq!(e.key(ctrl('c')), Action::Redraw);
        assert!(e.is_empty());
        assert_eq!(e.key(ctrl('c')), Action::CtrlC);
        assert_eq!(e.key(ctrl('d')), Action::Eof);
        typed(&mut e, "ab");
        e.key(k(KeyCode::Home));
        assert_eq!(e.key(ctrl('d')), Action::Redraw);
        assert_eq!(e.view().lines, vec!["> b"]);
    }

    #[test]
    fn permission_keys() {
        let mut e = Editor::new();
        typed(&mut e, "draft");
        e.set_ask(Some(Ask {
            pair: None,
            request_id: "r1".into(),
            tool: "Bash".into(),
            can_always: true,
            kind: AskKind::Tool,
        }));
        assert!(e.view().lines[0].starts_with("Allow Bash? [y] yes  [a] always allow"));
        assert_eq!(e.key(k(KeyCode::Char('x'))), Action::None);
        let answer = |d| Action::Answer {
            request_id: "r1".into(),
            decision: d,
        };
        assert_eq!(e.key(k(KeyCode::Char('y'))), answer(Decision::Allow));
        assert_eq!(e.key(k(KeyCode::Char('a'))), answer(Decision::AllowAlways));
        assert_eq!(e.key(k(KeyCode::Char('n'))), answer(Decision::Deny(None)));
        assert_eq!(e.key(k(KeyCode::Char('m'))), Action::Redraw);
        typed(&mut e, "not now");
        assert_eq!(
            e.key(k(KeyCode::Enter)),
            answer(Decision::Deny(Some("not now".into())))
        );
        e.set_ask(None);
        assert_eq!(e.view().lines, vec!["> draft"]);
    }

    #[test]
    fn pairing_keys_are_yes_viewer_or_no_and_nothing_else() {
        let mut e = Editor::new();
        e.set_ask(Some(Ask {
            pair: Some(PairAsk {
                device: "Pixel 9".into(),
                code: "123456".into(),
                fingerprint: "SHA256:x".into(),
            }),
            request_id: "pair1".into(),
            tool: String::new(),
            can_always: false,
            kind: AskKind::Tool,
        }));
        let answer = |d| Action::Answer {
            request_id: "pair1".into(),
            decision: d,
        };
        // A tool's "always" and "message" keys mean nothing for a device.
        assert_eq!(e.key(k(KeyCode::Char('a'))), Action::None);
        assert_eq!(e.key(k(KeyCode::Char('m'))), Action::None);
        assert_eq!(e.key(k(KeyCode::Char('v'))), answer(Decision::AllowViewer));
        assert_eq!(e.key(k(KeyCode::Char('y'))), answer(Decision::Allow));
        assert_eq!(e.key(k(KeyCode::Char('n'))), answer(Decision::Deny(None)));
    }

    #[test]
    fn tab_completes_slash_commands_cycling_and_shows_the_hint() {
        let mut e = Editor::new();
        e.set_commands(vec![
            ("compact".into(), "<instructions>".into()),
            ("config".into(), String::new()),
            ("review".into(), String::new()),
        ]);
        typed(&mut e, "/co");
        assert_eq!(e.key(k(KeyCode::Tab)), Action::Redraw);
        assert_eq!(e.view().lines, vec!["> /compact  <instructions>"]);
        assert_eq!(e.view().cursor, (0, 10));
        e.key(k(KeyCode::Tab));
        assert_eq!(e.view().lines, vec!["> /config"]);
        e.key(k(KeyCode::Tab));
        assert_eq!(e.view().lines[0], "> /compact  <instructions>");
        // Typing ends the cycle (and the hint).
        typed(&mut e, " x");
        assert_eq!(e.view().lines, vec!["> /compact x"]);
        // Not a slash command: Tab inserts spaces as before.
        let mut plain = Editor::new();
        typed(&mut plain, "ab");
        plain.key(k(KeyCode::Tab));
        assert_eq!(plain.view().lines, vec!["> ab    "]);
    }

    #[test]
    fn the_status_line_sits_above_the_prompt() {
        let mut e = Editor::new();
        e.set_status(Some("context 41k/200k (20%) · $1.93".into()));
        typed(&mut e, "hi");
        assert_eq!(
            e.view().lines,
            vec!["context 41k/200k (20%) · $1.93", "> hi"]
        );
        assert_eq!(e.view().cursor, (1, 4));
    }

    #[test]
    fn plan_keys_approve_accept_edits_or_keep_planning() {
        let mut e = Editor::new();
        e.set_ask(Some(Ask {
            pair: None,
            request_id: "p1".into(),
            tool: "ExitPlanMode".into(),
            can_always: false,
            kind: AskKind::Plan,
        }));
        assert!(
            e.view().lines[0].starts_with("Approve the plan? [y] yes  [a] yes, and accept edits")
        );
        let answer = |d| Action::Answer {
            request_id: "p1".into(),
            decision: d,
        };
        assert_eq!(e.key(k(KeyCode::Char('y'))), answer(Decision::Allow));
        assert_eq!(
            e.key(k(KeyCode::Char('a'))),
            answer(Decision::AllowAcceptEdits)
        );
        assert_eq!(e.key(k(KeyCode::Char('m'))), Action::Redraw);
        assert!(e.view().lines[0].starts_with("keep planning"));
        typed(&mut e, "add tests");
        assert_eq!(
            e.key(k(KeyCode::Enter)),
            answer(Decision::Deny(Some("add tests".into())))
        );
    }

    #[test]
    fn question_keys_take_numbers_per_question_and_other_text() {
        let questions = crate::controls::questions(&serde_json::json!({"questions":[
            {"question":"Color?","header":"C","multiSelect":false,"options":[{"label":"Red"},{"label":"Blue"}]},
            {"question":"Toppings?","header":"T","multiSelect":true,"options":[{"label":"Cheese"},{"label":"Olives"},{"label":"Basil"}]},
            {"question":"Size?","header":"S","multiSelect":false,"options":[{"label":"S"}]}]}));
        let mut e = Editor::new();
        e.set_ask(Some(Ask {
            pair: None,
            request_id: "q1".into(),
            tool: "AskUserQuestion".into(),
            can_always: false,
            kind: AskKind::Questions(questions),
        }));
        assert!(e.view().lines[0].starts_with("Answer Q1 of 3 — a number"));
        typed(&mut e, "3");
        assert_eq!(e.key(k(KeyCode::Enter)), Action::Redraw);
        assert!(
            e.view().lines[0].contains("no such option"),
            "{:?}",
            e.view()
        );
        e.key(k(KeyCode::Backspace));
        typed(&mut e, "2");
        assert_eq!(e.key(k(KeyCode::Enter)), Action::Redraw);
        assert!(e.view().lines[0].starts_with("Answer Q2 of 3 — numbers"));
        typed(&mut e, "13");
        e.key(k(KeyCode::Enter));
        assert_eq!(e.key(k(KeyCode::Char('o'))), Action::Redraw);
        typed(&mut e, "XL please");
        assert_eq!(
            e.key(k(KeyCode::Enter)),
            Action::Answer {
                request_id: "q1".into(),
                decision: Decision::Answers(vec![
                    Choice::Options(vec![2]),
                    Choice::Options(vec![1, 3]),
                    Choice::Other("XL please".into()),
                ]),
            }
        );
    }
}
