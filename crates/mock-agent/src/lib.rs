//! A protocol-faithful stand-in for the Claude Code CLI in stream-json mode
//! (`claude -p --input-format stream-json --output-format stream-json --verbose
//! --permission-prompt-tool stdio [--include-partial-messages]`), for demos and
//! tests. It writes the same line shapes, key names and line order as the real
//! CLI 2.1.330 did in transcripts recorded from it.
//!
//! Owns: the stdin/stdout protocol of one mock agent process, its scripted
//! behaviours and its conversation files. Must not: talk to any network.
//!
//! Protocol behaviour, as the real CLI:
//! - nothing on stdout before the first stdin line; EOF with no input or while
//!   idle → exit 0; EOF mid-turn → the turn finishes, then exit 0;
//! - `initialize` is answered at any time, also mid-turn and while a permission
//!   prompt pends (`session_state:"requires_action"`, the prompt listed in
//!   `pending_permission_requests`);
//! - every turn: `system/init`, (partial mode) `system/status requesting` and
//!   `stream_event`s, one `assistant` line per content block, `result`;
//!   prompts arriving mid-turn are queued and run as their own turns;
//! - `interrupt` is answered at once and ends a streaming turn
//!   (`aborted_streaming`) or a pending prompt (`control_cancel_request` first,
//!   `aborted_tools`); idle, it is only answered;
//! - not-JSON stdin line or `user` without message → stderr, exit 1;
//!   unknown control subtype → `unsupported_request`; SIGTERM → exit 143.
//!
//! Scripted behaviours, chosen by a case-insensitive whole-word keyword anywhere
//! in the prompt (first match in this order; `garbage` and `stderr` combine
//! with any of them). Also printed by `--help` ([`HELP`]):
//!
//! | keyword | behaviour |
//! |---|---|
//! | `hang` | stop reading stdin and writing stdout forever (still dies on SIGTERM/SIGKILL) |
//! | `crash` | a few deltas, then exit 3 mid-turn, no result |
//! | `bigline [N]` | one assistant line whose text is N bytes (default 1 MiB) |
//! | `flood [N]` | N text deltas as fast as possible (default 2000) |
//! | `run-bash [CMD]` | Bash tool_use (CMD = rest of the prompt, default `sh -c 'echo relay-ok'`), asks permission; allow runs it with `sh -c` in the cwd |
//! | `run-bash-background [CMD]` | the same with `run_in_background: true` in the tool's input |
//! | `write-file [PATH]` | Write tool_use (default `relay-test.txt` in the cwd), asks permission; allow writes `written by the mock agent\n` |
//! | `exit-plan` | ExitPlanMode tool_use with a short plan (`requires_user_interaction`); allow switches to `default` mode |
//! | `ask-question` | AskUserQuestion tool_use with two questions (the second multi-select); allow quotes the `answers` |
//! | `permission` | `run-bash` with the default command |
//! | `slow` | 20 text deltas, 250 ms apart |
//! | `recall` | quotes every earlier prompt of the conversation |
//! | anything else | `You said: <prompt>` in a few deltas |
//! | `garbage` (modifier) | the line `this is not json` on stdout mid-turn |
//! | `stderr` (modifier) | three lines on stderr |
//!
//! Conversations are stored per session id as JSON under `$CCRELAY_MOCK_STATE_DIR`,
//! else `$XDG_STATE_HOME/ccrelay-mock`, else `~/.local/state/ccrelay-mock`.
//!
//! Fault injection, by environment variable (also printed by `--help`):
//!
//! | variable | behaviour |
//! |---|---|
//! | `CCRELAY_MOCK_REFUSE_CONTROLS=a,b` | the named control subtypes are answered as the CLI answers one it does not know (`error_code:"unsupported_request"`, the error naming the subtype), as an older CLI would |
//! | `CCRELAY_MOCK_MERGE_STEERS=1` | a steering prompt (`priority:"next"`) arriving mid-turn is taken into that turn: no turn of its own, no `command_lifecycle` `started`/`completed` for it, only the turn's `result` lists its uuid in `user_message_uuids` |

mod input;
mod json;
mod msg;
mod out;
mod scenario;
mod store;

/// The version the mock reports as `claude_code_version` (tests match messages naming it).
pub use msg::VERSION;

use std::collections::VecDeque;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use serde_json::Value;

use input::{Input, Prompt, Reply};
use json::{Obj, array, to_json};
use msg::{Ctx, Outcome, ToolCall, TurnSummary};
use scenario::{Kind, Scenario};
use store::{Conversation, Exchange};

/// The flags of `claude` the mock agent understands (it is started with the same
/// command line as `claude`; flags it has no use for land in `rest`).
#[derive(Debug, Default, Clone)]
pub struct MockAgentSettings {
    /// `-p` / `--print` (accepted for compatibility).
    pub print: bool,
    /// `--input-format`: must be `stream-json`.
    pub input_format: Option<String>,
    /// `--output-format`: must be `stream-json`.
    pub output_format: Option<String>,
    /// `--verbose` (accepted for compatibility).
    pub verbose: bool,
    /// `--permission-prompt-tool`: `stdio` routes permission prompts to stdout.
    pub permission_prompt_tool: Option<String>,
    /// `--include-partial-messages`: emit stream_event lines.
    pub include_partial_messages: bool,
    /// `--resume`: continue this conversation (kept in the state dir).
    pub resume: Option<String>,
    /// `--session-id`: the id of a new conversation.
    pub session_id: Option<String>,
    /// `--replay-user-messages`: echo prompts back with isReplay.
    pub replay_user_messages: bool,
    /// Every other argument, as given.
    pub rest: Vec<String>,
}

/// The scripted behaviours, chosen by a case-insensitive whole-word keyword
/// anywhere in the prompt (first match in this order); `--help` prints it.
pub const HELP: &str =
    "Scripted behaviours (keyword anywhere in the prompt, case-insensitive, first match wins):
  hang              stop reading stdin and writing stdout forever (still dies on SIGTERM/SIGKILL)
  crash             stream a few deltas, then exit 3 mid-turn (no result)
  bigline [N]       one assistant line whose text is N bytes (default 1048576), then result
  flood [N]         N text deltas as fast as possible (default 2000), then assistant + result
  run-bash [CMD]    Bash tool_use asking permission; CMD is the rest of the prompt
                    (default: sh -c 'echo relay-ok');
                    allow runs CMD with sh -c in the cwd, the final text quotes its output
  run-bash-background [CMD]  the same with run_in_background: true in the tool's input
  write-file [PATH] Write tool_use asking permission (default relay-test.txt, relative to the cwd);
                    allow writes \"written by the mock agent\\n\"
  exit-plan         ExitPlanMode tool_use with a short plan (requires_user_interaction);
                    allow switches the permission mode to default
  ask-question      AskUserQuestion tool_use with two questions (the second multi-select);
                    allow quotes the answers of the updatedInput
  permission        same as run-bash with the default command
  slow              20 text deltas, 250 ms apart (for interrupts)
  recall            the answer quotes every earlier prompt of this conversation (proves --resume)
  (anything else)   \"You said: <prompt>\" in a few deltas
Modifiers, combined with any of the above:
  garbage           write the non-JSON line `this is not json` to stdout mid-turn
  stderr            write a few lines to stderr during the turn
Conversations are kept for --resume in $CCRELAY_MOCK_STATE_DIR,
else $XDG_STATE_HOME/ccrelay-mock, else ~/.local/state/ccrelay-mock.
Fault injection (environment):
  CCRELAY_MOCK_REFUSE_CONTROLS=a,b  answer these control subtypes as unknown
                    (error_code unsupported_request), as an older CLI would
  CCRELAY_MOCK_MERGE_STEERS=1  take a steering prompt (priority next) arriving
                    mid-turn into that turn; only the result's user_message_uuids says so";

/// The faults the environment asks for (see the module doc).
#[derive(Debug, Default, Clone)]
struct Faults {
    /// Control subtypes answered as unknown.
    refused_controls: Vec<String>,
    /// Steering prompts are merged into the running turn, reported only by its result.
    merge_steers: bool,
}

impl Faults {
    fn from_env() -> Faults {
        let refused_controls = std::env::var("CCRELAY_MOCK_REFUSE_CONTROLS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let merge_steers = std::env::var_os("CCRELAY_MOCK_MERGE_STEERS").is_some_and(|v| v == "1");
        Faults {
            refused_controls,
            merge_steers,
        }
    }
}

/// Pause between the deltas of ordinary answers.
const DELTA_PAUSE: Duration = Duration::from_millis(5);
/// Pause between the deltas of `slow`.
const SLOW_PAUSE: Duration = Duration::from_millis(250);
/// Deltas of `slow`.
const SLOW_DELTAS: usize = 20;
/// Delta size of `bigline` in partial mode.
const BIGLINE_CHUNK_BYTES: usize = 64 * 1024;
/// How often a running tool is checked while inputs are served.
const TOOL_POLL: Duration = Duration::from_millis(10);
/// The tool_result text the CLI uses when a prompt is rejected with an interrupt.
const REJECTED: &str = "The user doesn't want to proceed with this tool use. The tool use was rejected (eg. if it was a file edit, the new_string was NOT written to the file). STOP what you are doing and wait for the user to tell you how to proceed.";
/// The failure text when stdin closes while a prompt is pending.
const STREAM_CLOSED: &str = "Tool permission request failed: AbortError: Tool permission stream closed before response received";

/// Runs the mock agent on this process's stdin/stdout; returns the exit code.
pub fn run(args: MockAgentSettings) -> anyhow::Result<i32> {
    out::install_sigterm()?;
    for (flag, value) in [
        ("--input-format", &args.input_format),
        ("--output-format", &args.output_format),
    ] {
        if let Some(v) = value.as_deref().filter(|v| *v != "stream-json") {
            eprintln!("Error: the mock agent only speaks stream-json ({flag} {v})");
            return Ok(1);
        }
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let dir = store::state_dir();
    let fork = args.rest.iter().any(|a| a == "--fork-session");
    let mut unknown_resume = false;
    let conv = match (&args.resume, &args.session_id) {
        (Some(id), _) => match store::load(&dir, id) {
            Some(c) if fork => Conversation {
                session_id: msg::uuid(),
                exchanges: c.exchanges,
            },
            Some(c) => c,
            None => {
                unknown_resume = true;
                Conversation {
                    session_id: id.clone(),
                    exchanges: Vec::new(),
                }
            }
        },
        (None, Some(id)) => store::load(&dir, id).unwrap_or_else(|| Conversation {
            session_id: id.clone(),
            exchanges: Vec::new(),
        }),
        (None, None) => Conversation {
            session_id: msg::uuid(),
            exchanges: Vec::new(),
        },
    };

    let (tx, rx) = std::sync::mpsc::channel();
    input::spawn_reader(tx);

    if unknown_resume {
        // Like the real CLI: the error comes after the first stdin line.
        let first = rx.recv().unwrap_or(Input::Eof);
        eprintln!("No conversation found with session ID: {}", conv.session_id);
        if !matches!(first, Input::Eof) {
            out::line(&msg::result_unknown_session(&conv.session_id));
        }
        return Ok(1);
    }

    let ctx = Ctx {
        session_id: conv.session_id.clone(),
        cwd: cwd.display().to_string(),
        partial: args.include_partial_messages,
        replay: args.replay_user_messages,
    };
    let mut agent = Agent {
        rx,
        ctx,
        cwd,
        dir,
        conv,
        permission_mode: permission_mode(&args.rest),
        queue: VecDeque::new(),
        eof: false,
        pending: None,
        garbage_pending: false,
        current_uuid: None,
        result_index: 0,
        faults: Faults::from_env(),
    };
    Ok(agent.main_loop())
}

/// The CLI's answer to a control subtype it does not know.
fn unsupported_control(request_id: &str, subtype: &str) -> String {
    msg::control_error(
        request_id,
        &format!("Unsupported control request subtype: {subtype}"),
        Some("unsupported_request"),
    )
}

fn permission_mode(rest: &[String]) -> String {
    let mut it = rest.iter();
    while let Some(arg) = it.next() {
        if let Some(mode) = arg.strip_prefix("--permission-mode=") {
            return mode.to_string();
        }
        if arg == "--permission-mode"
            && let Some(mode) = it.next()
        {
            return mode.clone();
        }
    }
    "default".to_string()
}

/// An `interrupt` control request, not yet answered.
struct Interrupt {
    request_id: String,
    cancel_queued: bool,
}

/// What an input means to a running turn.
enum Event {
    Stop(Interrupt),
    Reply(String, Reply),
}

/// The host's decision on a permission prompt.
enum Decision {
    Allow(Value),
    Deny { message: String, interrupt: bool },
    Failed(String),
}

/// What a tool run produced.
struct ToolRun {
    content: String,
    is_error: bool,
    tool_use_result: String,
}

/// One simulated API message being streamed.
struct ApiMessage {
    id: String,
    request_id: String,
    next_index: usize,
    /// The open text block's index, its text so far, and whether its assistant line went out.
    open: Option<(usize, String, bool)>,
    /// All text of the message so far.
    text: String,
}

/// Per-turn bookkeeping for the result line.
struct Turn {
    api_calls: u32,
    denials: Vec<Obj>,
    user_uuid: Option<String>,
}

struct Agent {
    rx: Receiver<Input>,
    ctx: Ctx,
    cwd: PathBuf,
    dir: PathBuf,
    conv: Conversation,
    permission_mode: String,
    queue: VecDeque<Prompt>,
    eof: bool,
    /// The can_use_tool line waiting for an answer, with its request id.
    pending: Option<(String, String)>,
    garbage_pending: bool,
    /// The running prompt's `uuid`, repeated on its assistant lines.
    current_uuid: Option<String>,
    result_index: u64,
    faults: Faults,
}

impl Agent {
    fn main_loop(&mut self) -> i32 {
        loop {
            if let Some(prompt) = self.queue.pop_front() {
                self.run_turn(prompt);
                continue;
            }
            if self.eof {
                return 0;
            }
            match self.rx.recv() {
                Ok(Input::Eof) | Err(_) => self.eof = true,
                Ok(input) => {
                    if let Some(Event::Stop(i)) = self.pump(input) {
                        // Interrupt while idle: answered, nothing else.
                        self.reply_interrupt(&i);
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------ inputs

    /// Applies one input; returns what a running turn must react to.
    fn pump(&mut self, input: Input) -> Option<Event> {
        match input {
            Input::Prompt(p) => {
                if let Some(u) = &p.uuid {
                    out::line(&msg::command_lifecycle(&self.ctx, u, "queued"));
                }
                self.queue.push_back(p);
                None
            }
            Input::Control {
                request_id,
                request,
            } => self.control(&request_id, &request).map(Event::Stop),
            Input::Response { request_id, reply } => Some(Event::Reply(request_id, reply)),
            Input::Eof => {
                self.eof = true;
                None
            }
        }
    }

    /// Answers a control request, except `interrupt`, which is returned to the caller.
    fn control(&mut self, request_id: &str, request: &Value) -> Option<Interrupt> {
        let subtype = request.get("subtype").and_then(Value::as_str).unwrap_or("");
        if self.faults.refused_controls.iter().any(|r| r == subtype) {
            out::line(&unsupported_control(request_id, subtype));
            return None;
        }
        match subtype {
            "initialize" => {
                let pending: Vec<String> =
                    self.pending.iter().map(|(_, line)| line.clone()).collect();
                out::line(&msg::initialize_response(
                    request_id,
                    &pending,
                    &self.permission_mode,
                ));
            }
            "interrupt" => {
                return Some(Interrupt {
                    request_id: request_id.to_string(),
                    cancel_queued: request.get("cancel_queued").and_then(Value::as_bool)
                        == Some(true),
                });
            }
            "set_permission_mode" => {
                let mode = request
                    .get("mode")
                    .and_then(Value::as_str)
                    .unwrap_or("default");
                self.permission_mode = mode.to_string();
                out::line(&msg::permission_mode_response(request_id, mode));
                out::line(&msg::status_mode(&self.ctx, mode));
            }
            other => out::line(&unsupported_control(request_id, other)),
        }
        None
    }

    fn reply_interrupt(&mut self, i: &Interrupt) {
        let uuids =
            |q: &VecDeque<Prompt>| q.iter().filter_map(|p| p.uuid.clone()).collect::<Vec<_>>();
        if i.cancel_queued {
            let cancelled = uuids(&self.queue);
            self.queue.clear();
            out::line(&msg::interrupt_response(
                &i.request_id,
                &[],
                Some(&cancelled),
            ));
        } else {
            out::line(&msg::interrupt_response(
                &i.request_id,
                &uuids(&self.queue),
                None,
            ));
        }
    }

    /// Serves inputs for `dur`; an interrupt is answered and ends the wait early.
    fn pause(&mut self, dur: Duration) -> Result<(), Interrupt> {
        let deadline = Instant::now() + dur;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return self.poll();
            }
            if self.eof {
                std::thread::sleep(deadline - now);
                continue;
            }
            match self.rx.recv_timeout(deadline - now) {
                Ok(input) => {
                    if let Some(Event::Stop(i)) = self.pump(input) {
                        self.reply_interrupt(&i);
                        return Err(i);
                    }
                }
                Err(RecvTimeoutError::Timeout) => return Ok(()),
                Err(RecvTimeoutError::Disconnected) => self.eof = true,
            }
        }
    }

    /// Serves inputs that are already waiting, without blocking.
    fn poll(&mut self) -> Result<(), Interrupt> {
        loop {
            match self.rx.try_recv() {
                Ok(input) => {
                    if let Some(Event::Stop(i)) = self.pump(input) {
                        self.reply_interrupt(&i);
                        return Err(i);
                    }
                }
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => {
                    self.eof = true;
                    return Ok(());
                }
            }
        }
    }

    // ------------------------------------------------------------ turns

    fn run_turn(&mut self, prompt: Prompt) {
        let started = Instant::now();
        if let Some(u) = &prompt.uuid {
            out::line(&msg::command_lifecycle(&self.ctx, u, "started"));
        }
        let uuids: Vec<String> = prompt.uuid.iter().cloned().collect();
        out::line(&msg::system_init(&self.ctx, &self.permission_mode, &uuids));
        if self.ctx.replay {
            let u = prompt.uuid.clone().unwrap_or_else(msg::uuid);
            out::line(&msg::user_replay(&self.ctx, &prompt.content_json, &u));
        }
        self.conv.exchanges.push(Exchange {
            prompt: prompt.text.clone(),
            answer: None,
        });
        store::save(&self.dir, &self.conv);

        self.current_uuid = prompt.uuid.clone();
        let sc = Scenario::parse(&prompt.text);
        self.garbage_pending = sc.garbage;
        if sc.stderr {
            for i in 1..=3 {
                eprintln!("mock-agent: stderr line {i} of 3 (scripted by the prompt)");
            }
        }
        let mut turn = Turn {
            api_calls: 0,
            denials: Vec::new(),
            user_uuid: prompt.uuid.clone(),
        };
        let outcome = self.turn_body(&mut turn, &sc, &prompt.text);
        if let (Outcome::Success(text), Some(last)) = (&outcome, self.conv.exchanges.last_mut()) {
            last.answer = Some(text.clone());
            store::save(&self.dir, &self.conv);
        }
        let num_turns = match outcome {
            Outcome::Success(_) => turn.api_calls,
            _ => turn.api_calls + 1,
        };
        let merged_uuids = self.take_steers();
        let summary = TurnSummary {
            outcome,
            num_turns,
            denials: turn.denials,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            user_uuid: turn.user_uuid,
            merged_uuids,
            result_index: self.result_index,
            queued: self.queue.len(),
        };
        out::line(&msg::result(&self.ctx, &summary));
        self.result_index += 1;
        if let Some(u) = &prompt.uuid {
            out::line(&msg::command_lifecycle(&self.ctx, u, "completed"));
        }
    }

    /// With `CCRELAY_MOCK_MERGE_STEERS`: the steering prompts that arrived
    /// during the turn are taken into it (their uuids, for its result).
    fn take_steers(&mut self) -> Vec<String> {
        if !self.faults.merge_steers {
            return Vec::new();
        }
        let (steers, rest): (VecDeque<Prompt>, VecDeque<Prompt>) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(|p| p.priority.as_deref() == Some("next") && p.uuid.is_some());
        self.queue = rest;
        steers.into_iter().filter_map(|p| p.uuid).collect()
    }

    fn turn_body(&mut self, t: &mut Turn, sc: &Scenario, text: &str) -> Outcome {
        match &sc.kind {
            Kind::Echo => self.text_turn(t, split_in(&format!("You said: {text}"), 4), DELTA_PAUSE),
            Kind::Slow => {
                let chunks = (0..SLOW_DELTAS).map(|i| format!("slow-{i} ")).collect();
                self.text_turn(t, chunks, SLOW_PAUSE)
            }
            Kind::Flood(n) => {
                let chunks = (0..*n).map(|i| format!("flood-{i} ")).collect();
                self.text_turn(t, chunks, Duration::ZERO)
            }
            Kind::BigLine(n) => {
                let size = usize::try_from(*n).unwrap_or(usize::MAX);
                self.text_turn(t, big_text_chunks(size), Duration::ZERO)
            }
            Kind::Recall => {
                let answer = self.recall_text();
                self.text_turn(t, split_in(&answer, 4), DELTA_PAUSE)
            }
            Kind::Crash => self.crash(t),
            Kind::Hang => {
                out::set_hung();
                out::park_forever()
            }
            Kind::Bash(cmd) => {
                let tool = bash_tool(cmd, false);
                self.tool_turn(t, tool, "I will run a command.")
            }
            Kind::BashInBackground(cmd) => {
                let tool = bash_tool(cmd, true);
                self.tool_turn(t, tool, "I will run a command.")
            }
            Kind::Write(path) => {
                let tool = write_tool(&self.cwd, path);
                self.tool_turn(t, tool, "Writing the file.")
            }
            Kind::ExitPlan => self.tool_turn(t, exit_plan_tool(), "Here is my plan."),
            Kind::AskQuestion => self.tool_turn(t, ask_question_tool(), "I have questions."),
        }
    }

    fn recall_text(&self) -> String {
        let n = self.conv.exchanges.len().saturating_sub(1);
        let earlier = &self.conv.exchanges[..n];
        if earlier.is_empty() {
            return "I saw no earlier prompts in this conversation.".to_string();
        }
        let quoted: Vec<String> = earlier
            .iter()
            .map(|e| format!("\"{}\"", e.prompt))
            .collect();
        format!(
            "I saw {} earlier prompt(s) in this conversation: {}",
            earlier.len(),
            quoted.join(", ")
        )
    }

    /// One streamed text message; the whole turn when it is the only call.
    fn text_turn(&mut self, t: &mut Turn, chunks: Vec<String>, delay: Duration) -> Outcome {
        let mut m = self.begin_message(t);
        let streamed = self
            .text_block(&mut m, &chunks, delay)
            .map(|()| self.end_message(&m, "end_turn"));
        match streamed {
            Ok(()) => Outcome::Success(m.text),
            Err(_) => {
                self.abort_streaming(&m);
                Outcome::AbortedStreaming
            }
        }
    }

    fn tool_turn(&mut self, t: &mut Turn, tool: ToolCall, intro: &str) -> Outcome {
        let mut m = self.begin_message(t);
        let streamed = self
            .text_block(&mut m, &split_in(intro, 2), DELTA_PAUSE)
            .and_then(|()| self.tool_block(&mut m, &tool))
            .map(|()| self.end_message(&m, "tool_use"));
        if streamed.is_err() {
            self.abort_streaming(&m);
            return Outcome::AbortedStreaming;
        }
        let decision = match self.ask_permission(&tool) {
            Ok(d) => d,
            Err(_) => {
                t.denials.push(msg::denial(&tool));
                self.emit_rejected(&tool);
                return Outcome::AbortedTools;
            }
        };
        let meta = |decision: Obj| {
            array([Obj::new()
                .str("id", &tool.id)
                .obj("permission_decision", decision)])
        };
        let rejected_meta = |decision: Obj| {
            array([Obj::new()
                .str("id", &tool.id)
                .str("non_execution_kind", "permission-rule")
                .obj("permission_decision", decision)])
        };
        let failed = matches!(decision, Decision::Failed(_));
        let answer = match decision {
            Decision::Allow(input) => {
                let Ok(run) = self.run_tool(&tool, &input) else {
                    out::line(&msg::user_interrupted(&self.ctx, true));
                    return Outcome::AbortedTools;
                };
                let block = if run.is_error {
                    msg::tool_result_err(&tool.id, &run.content)
                } else {
                    msg::tool_result_ok(&tool.id, &run.content)
                };
                let accept = meta(
                    Obj::new()
                        .str("decision", "accept")
                        .str("source", "user_temporary"),
                );
                out::line(&msg::user_line(
                    &self.ctx,
                    block,
                    Some(&run.tool_use_result),
                    Some(&accept),
                ));
                if run.is_error {
                    format!("Tool failed. Output was: {}", run.content)
                } else {
                    format!("Tool finished. Output was: {}", run.content)
                }
            }
            Decision::Deny {
                interrupt: true, ..
            } => {
                t.denials.push(msg::denial(&tool));
                self.emit_rejected(&tool);
                return Outcome::AbortedTools;
            }
            // A deny and a failed answer look the same to the model; only how the
            // CLI records the decision differs.
            Decision::Deny { message, .. } | Decision::Failed(message) => {
                let meta = if failed {
                    Obj::new()
                        .str("decision", "reject")
                        .str("source", "config")
                        .str("reason_type", "other")
                } else {
                    Obj::new()
                        .str("decision", "reject")
                        .str("source", "user_reject")
                };
                t.denials.push(msg::denial(&tool));
                let block = msg::tool_result_err(&tool.id, &message);
                let result = to_json(&format!("Error: {message}"));
                out::line(&msg::user_line(
                    &self.ctx,
                    block,
                    Some(&result),
                    Some(&rejected_meta(meta)),
                ));
                format!("Tool was denied: {message}")
            }
        };
        self.text_turn(t, split_in(&answer, 4), DELTA_PAUSE)
    }

    /// The lines after a prompt was rejected with an interrupt.
    fn emit_rejected(&mut self, tool: &ToolCall) {
        let block = msg::tool_result_err(&tool.id, REJECTED);
        let meta = array([Obj::new()
            .str("id", &tool.id)
            .str("non_execution_kind", "user-rejected")]);
        out::line(&msg::user_line(
            &self.ctx,
            block,
            Some(&to_json("User rejected tool use")),
            Some(&meta),
        ));
        out::line(&msg::user_interrupted(&self.ctx, true));
    }

    fn crash(&mut self, t: &mut Turn) -> ! {
        let mut m = self.begin_message(t);
        let chunks: Vec<String> = (0..3).map(|i| format!("crash-{i} ")).collect();
        let index = m.next_index;
        if self.ctx.partial {
            out::line(&msg::stream_event(
                &self.ctx,
                &m.id,
                msg::ev_text_start(index),
            ));
        }
        for chunk in &chunks {
            if self.ctx.partial {
                out::line(&msg::stream_event(
                    &self.ctx,
                    &m.id,
                    msg::ev_text_delta(index, chunk),
                ));
            }
            m.text.push_str(chunk);
            let _ = self.pause(DELTA_PAUSE);
        }
        eprintln!("mock-agent: crashing on purpose (exit 3)");
        out::exit(3)
    }

    // ------------------------------------------------------------ streaming

    fn begin_message(&mut self, t: &mut Turn) -> ApiMessage {
        t.api_calls += 1;
        let m = ApiMessage {
            id: msg::mock_id("msg_mock"),
            request_id: msg::mock_id("req_mock"),
            next_index: 0,
            open: None,
            text: String::new(),
        };
        if self.ctx.partial {
            out::line(&msg::status_requesting(&self.ctx));
            out::line(&msg::ev_message_start(&self.ctx, &m.id));
        }
        m
    }

    fn text_block(
        &mut self,
        m: &mut ApiMessage,
        chunks: &[String],
        delay: Duration,
    ) -> Result<(), Interrupt> {
        let index = m.next_index;
        m.next_index += 1;
        m.open = Some((index, String::new(), false));
        if self.ctx.partial {
            out::line(&msg::stream_event(
                &self.ctx,
                &m.id,
                msg::ev_text_start(index),
            ));
        }
        let mut block_text = String::new();
        for (i, chunk) in chunks.iter().enumerate() {
            if i > 0 && !delay.is_zero() {
                self.pause(delay)?;
            } else {
                self.poll()?;
            }
            if self.ctx.partial {
                out::line(&msg::stream_event(
                    &self.ctx,
                    &m.id,
                    msg::ev_text_delta(index, chunk),
                ));
            }
            block_text.push_str(chunk);
            m.text.push_str(chunk);
            if let Some(open) = m.open.as_mut() {
                open.1.push_str(chunk);
            }
            if self.garbage_pending {
                self.garbage_pending = false;
                out::line("this is not json");
            }
        }
        out::line(&msg::assistant(
            &self.ctx,
            &m.id,
            &m.request_id,
            msg::text_block(&block_text),
            self.current_uuid.as_deref(),
            false,
        ));
        if let Some(open) = m.open.as_mut() {
            open.2 = true;
        }
        if self.ctx.partial {
            out::line(&msg::stream_event(
                &self.ctx,
                &m.id,
                msg::ev_block_stop(index),
            ));
        }
        m.open = None;
        Ok(())
    }

    fn tool_block(&mut self, m: &mut ApiMessage, tool: &ToolCall) -> Result<(), Interrupt> {
        let index = m.next_index;
        m.next_index += 1;
        if self.ctx.partial {
            out::line(&msg::stream_event(
                &self.ctx,
                &m.id,
                msg::ev_tool_start(index, tool),
            ));
        }
        for piece in split_in(&tool.input, 3) {
            self.pause(DELTA_PAUSE)?;
            if self.ctx.partial {
                out::line(&msg::stream_event(
                    &self.ctx,
                    &m.id,
                    msg::ev_json_delta(index, &piece),
                ));
            }
        }
        out::line(&msg::assistant(
            &self.ctx,
            &m.id,
            &m.request_id,
            msg::tool_use_block(tool),
            self.current_uuid.as_deref(),
            false,
        ));
        if self.ctx.partial {
            out::line(&msg::stream_event(
                &self.ctx,
                &m.id,
                msg::ev_block_stop(index),
            ));
        }
        Ok(())
    }

    fn end_message(&mut self, m: &ApiMessage, stop_reason: &str) {
        if self.ctx.partial {
            let tokens = u64::try_from(m.text.len() / 4 + 1).unwrap_or(u64::MAX);
            out::line(&msg::stream_event(
                &self.ctx,
                &m.id,
                msg::ev_message_delta(stop_reason, tokens),
            ));
            out::line(&msg::stream_event(
                &self.ctx,
                &m.id,
                msg::ev_message_stop(None),
            ));
        }
    }

    /// After an interrupt during streaming (the interrupt reply is already out).
    fn abort_streaming(&mut self, m: &ApiMessage) {
        if let Some((_, text, false)) = &m.open
            && !text.is_empty()
        {
            out::line(&msg::assistant(
                &self.ctx,
                &m.id,
                &m.request_id,
                msg::text_block(text),
                self.current_uuid.as_deref(),
                true,
            ));
        }
        out::line(&msg::user_interrupted(&self.ctx, false));
        if self.ctx.partial {
            if let Some((index, _, _)) = &m.open {
                out::line(&msg::stream_event(
                    &self.ctx,
                    &m.id,
                    msg::ev_block_stop(*index),
                ));
            }
            out::line(&msg::stream_event(
                &self.ctx,
                &m.id,
                msg::ev_message_delta_aborted(),
            ));
            out::line(&msg::stream_event(
                &self.ctx,
                &m.id,
                msg::ev_message_stop(Some((&m.id, m.next_index))),
            ));
        }
    }

    // ------------------------------------------------------------ permission + tools

    fn ask_permission(&mut self, tool: &ToolCall) -> Result<Decision, Interrupt> {
        let request_id = msg::uuid();
        let line = msg::can_use_tool(&request_id, tool);
        out::line(&line);
        self.pending = Some((request_id.clone(), line));
        let decision = loop {
            if self.eof {
                break Ok(Decision::Failed(STREAM_CLOSED.to_string()));
            }
            let input = self.rx.recv().unwrap_or(Input::Eof);
            match self.pump(input) {
                Some(Event::Stop(i)) => {
                    out::line(&msg::control_cancel(&request_id));
                    self.reply_interrupt(&i);
                    break Err(i);
                }
                Some(Event::Reply(id, reply)) if id == request_id => break Ok(decide(reply, tool)),
                // Stale or unknown request ids are ignored, like the real CLI.
                _ => {}
            }
        };
        self.pending = None;
        decision
    }

    fn run_tool(&mut self, tool: &ToolCall, input: &Value) -> Result<ToolRun, Interrupt> {
        match tool.name {
            "Write" => Ok(self.run_write(input)),
            "ExitPlanMode" => Ok(self.run_exit_plan(input)),
            "AskUserQuestion" => Ok(run_ask_question(input)),
            _ => self.run_bash(input),
        }
    }

    /// An approved plan: the CLI leaves plan mode for `default` and says so.
    fn run_exit_plan(&mut self, input: &Value) -> ToolRun {
        self.permission_mode = "default".into();
        out::line(&msg::status_mode(&self.ctx, "default"));
        let path = input
            .get("planFilePath")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let content = format!(
            "User has approved your plan. You can now start coding. Start with updating your todo list if applicable\n\nYour plan has been saved to: {path}\nYou can refer back to it if needed during implementation."
        );
        ToolRun {
            tool_use_result: Obj::new()
                .opt_str("plan", input.get("plan").and_then(Value::as_str))
                .val("isAgent", &false)
                .str("filePath", path)
                .finish(),
            content,
            is_error: false,
        }
    }

    fn run_write(&self, input: &Value) -> ToolRun {
        let path = input.get("file_path").and_then(Value::as_str).unwrap_or("");
        let content = input
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or(scenario::WRITE_CONTENT);
        let full = self.cwd.join(path);
        let written = full
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&full, content));
        let shown = full.display().to_string();
        match written {
            Ok(()) => ToolRun {
                content: format!("File created successfully at: {shown}"),
                is_error: false,
                tool_use_result: Obj::new()
                    .str("type", "create")
                    .str("filePath", &shown)
                    .str("content", content)
                    .raw("structuredPatch", "[]")
                    .null("originalFile")
                    .val("userModified", &false)
                    .finish(),
            },
            Err(e) => {
                let content = format!("Error writing file {shown}: {e}");
                ToolRun {
                    tool_use_result: to_json(&format!("Error: {content}")),
                    content,
                    is_error: true,
                }
            }
        }
    }

    fn run_bash(&mut self, input: &Value) -> Result<ToolRun, Interrupt> {
        let command = input.get("command").and_then(Value::as_str).unwrap_or("");
        let spawned = Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let content = format!("Error: cannot run sh: {e}");
                return Ok(ToolRun {
                    tool_use_result: to_json(&content),
                    content,
                    is_error: true,
                });
            }
        };
        let collect = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut p) = pipe {
                    let _ = p.read_to_end(&mut buf);
                }
                String::from_utf8_lossy(&buf).into_owned()
            })
        };
        let stdout = collect(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let stderr = collect(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status.code().unwrap_or(-1),
                Ok(None) => {}
                Err(_) => break -1,
            }
            if let Err(i) = self.pause(TOOL_POLL) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(i);
            }
        };
        let out_text = stdout.join().unwrap_or_default();
        let err_text = stderr.join().unwrap_or_default();
        let out_trim = out_text.trim_end_matches('\n');
        let err_trim = err_text.trim_end_matches('\n');
        if status == 0 {
            let content = if err_trim.is_empty() {
                out_trim.to_string()
            } else {
                format!("{out_trim}\n{err_trim}")
            };
            Ok(ToolRun {
                content,
                is_error: false,
                tool_use_result: Obj::new()
                    .str("stdout", out_trim)
                    .str("stderr", err_trim)
                    .val("interrupted", &false)
                    .val("isImage", &false)
                    .val("noOutputExpected", &false)
                    .finish(),
            })
        } else {
            let content = format!("Exit code {status}\n{out_trim}{err_trim}");
            Ok(ToolRun {
                tool_use_result: to_json(&format!("Error: {content}")),
                content,
                is_error: true,
            })
        }
    }
}

fn decide(reply: Reply, tool: &ToolCall) -> Decision {
    match reply {
        Reply::Success(resp) => match resp.get("behavior").and_then(Value::as_str) {
            Some("allow") => {
                let input = resp
                    .get("updatedInput")
                    .filter(|v| v.is_object())
                    .cloned()
                    .or_else(|| serde_json::from_str(&tool.input).ok())
                    .unwrap_or(Value::Null);
                Decision::Allow(input)
            }
            Some("deny") => Decision::Deny {
                message: resp
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("Permission denied")
                    .to_string(),
                interrupt: resp.get("interrupt").and_then(Value::as_bool) == Some(true),
            },
            _ => Decision::Failed(
                "Tool permission request failed: Error: invalid permission result".to_string(),
            ),
        },
        Reply::Error(e) => Decision::Failed(format!("Tool permission request failed: Error: {e}")),
    }
}

fn bash_tool(cmd: &str, background: bool) -> ToolCall {
    let description = if cmd == scenario::DEFAULT_BASH {
        "Print relay-ok".to_string()
    } else {
        format!("Run {cmd}")
    };
    let rules = array([Obj::new().str("toolName", "Bash").str("ruleContent", cmd)]);
    ToolCall {
        id: msg::mock_id("toolu_mock"),
        name: "Bash",
        input: {
            let input = Obj::new()
                .str("command", cmd)
                .str("description", &description);
            if background {
                input.raw("run_in_background", "true").finish()
            } else {
                input.finish()
            }
        },
        description,
        suggestions: array([Obj::new()
            .str("type", "addRules")
            .raw("rules", &rules)
            .str("behavior", "allow")
            .str("destination", "localSettings")]),
        with_decision_reason: true,
        user_interaction: false,
    }
}

/// The plan of `exit-plan`.
const MOCK_PLAN: &str = "# Plan\n\n1. Read the code.\n2. Fix the bug.\n3. Run the tests.";

fn exit_plan_tool() -> ToolCall {
    ToolCall {
        id: msg::mock_id("toolu_mock"),
        name: "ExitPlanMode",
        input: Obj::new()
            .str("plan", MOCK_PLAN)
            .str("planFilePath", "/home/dev/.claude/plans/mock-plan.md")
            .finish(),
        description: String::new(),
        suggestions: "[]".into(),
        with_decision_reason: false,
        user_interaction: true,
    }
}

fn ask_question_tool() -> ToolCall {
    let option = |label: &str, description: &str| {
        Obj::new()
            .str("label", label)
            .str("description", description)
    };
    let questions = array([
        Obj::new()
            .str("question", "Which color should the button be?")
            .str("header", "Color")
            .arr(
                "options",
                [option("Red", "A warm red"), option("Blue", "A calm blue")],
            )
            .val("multiSelect", &false),
        Obj::new()
            .str("question", "Which toppings do you want?")
            .str("header", "Toppings")
            .arr(
                "options",
                [
                    option("Cheese", "Grated cheese"),
                    option("Olives", "Black olives"),
                    option("Basil", "Fresh basil"),
                ],
            )
            .val("multiSelect", &true),
    ]);
    ToolCall {
        id: msg::mock_id("toolu_mock"),
        name: "AskUserQuestion",
        input: Obj::new().raw("questions", &questions).finish(),
        description: String::new(),
        suggestions: "[]".into(),
        with_decision_reason: false,
        user_interaction: true,
    }
}

/// The CLI's tool result for answered questions: each `"question"="answer"`.
fn run_ask_question(input: &Value) -> ToolRun {
    let answers = input.get("answers").and_then(Value::as_object);
    let pairs: Vec<String> = answers
        .into_iter()
        .flatten()
        .map(|(q, a)| format!("{}={}", to_json(q), to_json(a.as_str().unwrap_or_default())))
        .collect();
    let content = format!(
        "Your questions have been answered: {}. You can now continue with these answers in mind.",
        pairs.join(", ")
    );
    ToolRun {
        tool_use_result: Obj::new()
            .raw(
                "questions",
                &to_json(input.get("questions").unwrap_or(&Value::Null)),
            )
            .raw(
                "answers",
                &to_json(input.get("answers").unwrap_or(&Value::Null)),
            )
            .finish(),
        content,
        is_error: false,
    }
}

fn write_tool(cwd: &Path, path: &str) -> ToolCall {
    let full = cwd.join(path);
    let name = full
        .file_name()
        .map_or_else(|| path.to_string(), |n| n.to_string_lossy().into_owned());
    ToolCall {
        id: msg::mock_id("toolu_mock"),
        name: "Write",
        input: Obj::new()
            .str("file_path", &full.display().to_string())
            .str("content", scenario::WRITE_CONTENT)
            .finish(),
        description: name,
        suggestions: array([Obj::new()
            .str("type", "setMode")
            .str("mode", "acceptEdits")
            .str("destination", "session")]),
        with_decision_reason: false,
        user_interaction: false,
    }
}

/// Splits `text` into about `n` pieces on char boundaries (at least one piece).
fn split_in(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    let size = chars.len().div_ceil(n.max(1));
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

/// `size` bytes of ASCII text in `BIGLINE_CHUNK_BYTES` pieces.
fn big_text_chunks(size: usize) -> Vec<String> {
    const PATTERN: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut chunks = Vec::new();
    let mut done = 0;
    while done < size {
        let len = BIGLINE_CHUNK_BYTES.min(size - done);
        let chunk: String = (done..done + len)
            .map(|i| char::from(PATTERN[i % PATTERN.len()]))
            .collect();
        chunks.push(chunk);
        done += len;
    }
    if chunks.is_empty() {
        chunks.push(String::new());
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request keys of the recorded CLI's plan and question requests
    /// (tests/fixtures/cli-controls/): the same keys, in the request and its input.
    #[test]
    fn user_interaction_requests_have_the_recorded_shape() {
        for (tool, fixture) in [
            (exit_plan_tool(), "exit_plan_mode.jsonl"),
            (ask_question_tool(), "ask_question.jsonl"),
        ] {
            let line: Value = serde_json::from_str(&msg::can_use_tool("r", &tool)).unwrap();
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/fixtures/cli-controls")
                .join(fixture);
            let recorded = std::fs::read_to_string(path).unwrap();
            let request = recorded
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find_map(|v| {
                    let line = v.get("msg").cloned().unwrap_or(v);
                    let req = line.get("request")?.clone();
                    (req.get("subtype")? == "can_use_tool").then_some(req)
                })
                .expect("a recorded can_use_tool");
            let keys =
                |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
            assert_eq!(keys(&line["request"]), keys(&request), "{}", tool.name);
            assert_eq!(
                keys(&line["request"]["input"]),
                keys(&request["input"]),
                "{}",
                tool.name
            );
        }
    }
}
