//! `ccrelay attach`: the terminal client.
//!
//! Three ways to run, chosen from the flags and the terminal:
//! - `--prompt TEXT`: send one prompt, show its turn, exit with its outcome;
//! - interactive (stdin and stdout are terminals, no `--json`): a line editor
//!   under the live session, permission prompts answered with one key;
//! - lines (anything else): each line read on stdin is a prompt; the session is
//!   shown until Ctrl-C (end of input leaves it watching).
//!
//! With `--new DIR` it first asks the server to create a session there and then
//! attaches to it; `ccrelay sessions` (module `sessions`) lists, closes, renames
//! and resumes sessions over the same connection code.
//!
//! Modules: `connect` (URL, WebSocket, authentication, one-shot requests), `keys`
//! (which keys, how they sign), `net` (the connection task and reconnects),
//! `session` (the state machine: since tracking, prompts, permissions, session
//! switching, exit codes), `sessions` (`ccrelay sessions`, `session.create`),
//! `table` (session and conversation lists as text), `render` (events → text),
//! `presence` (who is attached, from deltas), `input` (line editor), `screen`
//! (the terminal), `trust` (whether to sign: certificate, server id, channel
//! binding), `known` (the known_servers file).
//!
//! Owns: the terminal session of one `ccrelay attach`, the `ccrelay sessions`
//! commands, and their exit codes. Must
//! not: serve anything or hold server state. It speaks `ccrelay-protocol`'s types
//! and borrows from `ccrelay-server` only what both sides share: SSHSIG signing
//! and key files (`auth`), the TLS client pieces and fingerprints (`tls`), origin
//! names (`names`), escaping (`escape`) and the QR renderer (`web`).

mod connect;
mod controls;
mod input;
mod keys;
mod known;
mod net;
mod presence;
mod render;
mod screen;
mod session;
mod sessions;
mod table;
mod trust;

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crossterm::event::{Event, EventStream};
use futures_util::StreamExt as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use connect::{Connector, UrlError, normalize_url};
use input::{Action, Editor};
use keys::KeyError;
use net::NetEvent;
use screen::{RawGuard, Screen};
pub use session::exit;
use session::{Effect, Policy, PromptJob, Session};
pub use sessions::{Resume, SessionsSettings, SessionsTask, run_sessions};

/// How to reach and trust a relay and which key to sign with (the options
/// `ccrelay attach` and `ccrelay sessions` share).
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Relay address: `ws://HOST:PORT/v1/ws`, `ws://HOST:PORT` or `HOST:PORT`.
    pub url: String,
    /// The one key file to sign with (instead of ssh-agent and the default files).
    pub identity: Option<PathBuf>,
    /// Device name shown to other clients (default: this host's name).
    pub device: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub server_fingerprint: Option<String>,
    pub accept_new_server: bool,
    pub insecure_plaintext: bool,
    pub known_servers: Option<PathBuf>,
}

/// A session to create before attaching (`attach --new`, `sessions --resume`).
#[derive(Debug, Clone, Default)]
pub struct NewSession {
    /// The agent's working directory on the server (absolute or `~/`-relative).
    pub workdir: String,
    pub name: Option<String>,
    /// Run it in a new worktree on this new branch.
    pub worktree: Option<String>,
    /// The conversation to resume.
    pub resume: Option<String>,
    /// With `resume`: branch a new conversation from it.
    pub fork: bool,
}

/// What `ccrelay attach` was asked to do (its options, as given).
#[derive(Debug, Clone)]
pub struct AttachSettings {
    pub server: ServerOptions,
    pub session: String,
    /// Create this session first and attach to it (instead of `session`).
    pub new: Option<NewSession>,
    /// Send one prompt, show its turn, exit when it ends.
    pub prompt: Option<String>,
    /// With `prompt`: allow / deny every permission prompt of its turn.
    pub allow: bool,
    pub deny: bool,
    /// Every received frame as one JSON line on stdout.
    pub json: bool,
    /// Replay only the last N events when attaching.
    pub tail: Option<u64>,
    /// Make a single-use pairing invite, print its URL and exit.
    pub invite: bool,
    /// With `invite`: the invited device gets the viewer role.
    pub viewer: bool,
}

/// Longest `device` the server takes (docs/protocol.md §3.3).
const MAX_DEVICE_CHARS: usize = 64;
/// `--prompt` mode stops reconnecting after this long without a connection, so a
/// script does not wait forever for a server that is gone.
const PROMPT_RECONNECT_LIMIT: Duration = Duration::from_secs(300);
/// How many times `--new` sends its `session.create` (same retry key) when the
/// connection drops before the reply.
const CREATE_ATTEMPTS: u32 = 3;
/// How long the connection task gets to close the socket politely on exit.
const CLOSE_GRACE: Duration = Duration::from_millis(500);

/// Why `attach` could not start.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("{0}")]
    Url(#[from] UrlError),
    #[error("{0}")]
    Keys(#[from] KeyError),
    #[error("{0}")]
    Connect(#[from] connect::ConnectError),
    #[error("cannot use the terminal: {0}")]
    Terminal(#[from] std::io::Error),
}

/// Run `ccrelay attach` on its own runtime; the exit code is documented in `--help`.
pub fn run(args: AttachSettings) -> ExitCode {
    on_runtime(attach(args))
}

/// Run a command's future on a runtime of its own and return its exit code.
fn on_runtime(command: impl std::future::Future<Output = u8>) -> ExitCode {
    // Two workers: `block_in_place` (agent socket, signing, passphrase) needs a
    // multi-threaded runtime, and nothing here needs more.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ccrelay: cannot start the runtime: {e}");
            return ExitCode::from(exit::ERROR);
        }
    };
    let code = runtime.block_on(command);
    // The stdin reader thread may be blocked in read(); do not wait for it.
    runtime.shutdown_timeout(Duration::from_millis(100));
    ExitCode::from(code)
}

/// How this invocation talks to the person or program that started it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Prompt,
    Interactive,
    Lines,
}

impl Mode {
    fn of(args: &AttachSettings) -> Mode {
        if args.prompt.is_some() {
            Mode::Prompt
        } else if !args.json && std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
            Mode::Interactive
        } else {
            Mode::Lines
        }
    }
}

async fn attach(args: AttachSettings) -> u8 {
    match start(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ccrelay: {e}");
            exit::ERROR
        }
    }
}

/// The keys to try and how to trust the server, as the options say; then the
/// first connection, made before anything owns the terminal so that a
/// passphrase or a new server can still be asked about. Its failure is final (exit 2).
async fn open(server: &ServerOptions) -> Result<(Connector, connect::Connected), StartError> {
    let url = normalize_url(&server.url)?;
    let device = server
        .device
        .clone()
        .or_else(host_name)
        .map(|d| d.chars().take(MAX_DEVICE_CHARS).collect::<String>());
    let socket = std::env::var_os("SSH_AUTH_SOCK")
        .filter(|s| !s.is_empty())
        .map(std::path::PathBuf::from);
    let home = ccrelay_server::datadir::home_dir();
    let candidates = tokio::task::block_in_place(|| {
        keys::candidates(
            server.identity.as_deref(),
            home.as_deref(),
            socket.as_deref(),
        )
    })?;
    let trust = connect::TrustOptions {
        ca_file: server.ca_file.clone(),
        pin: server.server_fingerprint.clone(),
        accept_new: server.accept_new_server,
        insecure_plaintext: server.insecure_plaintext,
        known_servers: server.known_servers.clone(),
    };
    let mut connector = Connector::new(url, device, candidates, trust)?;
    let first = connector.connect().await?;
    Ok((connector, first))
}

async fn start(args: AttachSettings) -> Result<u8, StartError> {
    let (connector, first) = open(&args.server).await?;
    if args.invite {
        return Ok(invite(&connector, first, args.viewer).await);
    }
    start_on(args, connector, first).await
}

/// `attach` on a connection already open: create the session first when asked
/// (`--new`), then attach and run until the session ends.
async fn start_on(
    args: AttachSettings,
    mut connector: Connector,
    mut first: connect::Connected,
) -> Result<u8, StartError> {
    let mode = Mode::of(&args);
    let color = !args.json
        && std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var("TERM").map_or(true, |t| t != "dumb");
    let (name, uid) = match &args.new {
        None => (args.session.clone(), None),
        Some(new) => {
            let key = sessions::create_key();
            let mut attempt = 1;
            let created = loop {
                match sessions::create(&mut first.ws, &connector.url(), new, &key).await {
                    // The reply was lost with the connection: ask again with the
                    // same key on a new one; the server creates the session once.
                    Err(sessions::RequestError::Connect(e))
                        if e.is_transient() && attempt < CREATE_ATTEMPTS =>
                    {
                        eprintln!("ccrelay: {e}; asking again");
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        first = connector.connect().await?;
                    }
                    other => break other,
                }
            };
            match created {
                Ok(created) => {
                    if args.json {
                        // Every frame received is printed in --json mode.
                        println!("{}", table::terminal_safe_json(created.frame.trim()));
                    }
                    eprintln!("{}", sessions::created_line(&created));
                    (created.session, Some(created.uid))
                }
                Err(e) => {
                    eprintln!("ccrelay: {e}");
                    return Ok(e.exit_code());
                }
            }
        }
    };
    if mode == Mode::Interactive {
        connector.stop_prompting();
    }

    let policy = match (args.allow, args.deny) {
        (true, _) => Some(Policy::Allow),
        (_, true) => Some(Policy::Deny),
        _ => None,
    };
    let job = args.prompt.clone().map(|text| PromptJob::new(text, policy));
    let mut session = Session::new(name, args.json, color, args.tail, job).with_uid(uid);
    let banner = format!(
        "connected to {} with {} as {}",
        connector.url(),
        first.key_label,
        first.auth.role
    );

    let (events_tx, events_rx) = mpsc::channel(net::inbound_queue_frames());
    // Unbounded on purpose: only the user's own input and the answers of a
    // `--allow`/`--deny` policy (one per request the bounded inbound queue let
    // through) go this way.
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let give_up = (mode == Mode::Prompt).then_some(PROMPT_RECONNECT_LIMIT);
    let net_task = tokio::spawn(net::run(connector, first, events_tx, out_rx, give_up));

    let raw = if mode == Mode::Interactive {
        Some(RawGuard::enable()?)
    } else {
        None
    };
    let mut ui = Ui {
        screen: Screen::new(mode == Mode::Interactive, color),
        editor: (mode == Mode::Interactive).then(Editor::new),
        out_tx,
        generation: 0,
        pages: Vec::new(),
    };
    if mode == Mode::Interactive {
        let text = session.renderer.info(&banner);
        ui.screen.message(&text, ui.editor.as_ref());
    }
    let code = event_loop(mode, &mut session, &mut ui, events_rx).await;
    ui.screen.close();
    drop(raw);
    // Let the connection task send its close frame.
    let Ui { out_tx, .. } = ui;
    drop(out_tx);
    let _ = tokio::time::timeout(CLOSE_GRACE, net_task).await;
    Ok(code)
}

/// `--invite`: make a pairing invite on the connection just opened, print the
/// page URL that carries it (and, on a terminal, its QR code), and close.
async fn invite(connector: &Connector, first: connect::Connected, viewer: bool) -> u8 {
    let mut ws = first.ws;
    let made = connect::request_invite(&mut ws, &connector.url(), viewer).await;
    let _ = ws.close(None).await;
    let (token, ttl) = match made {
        Ok(made) => made,
        Err(e) => {
            eprintln!("ccrelay: {e}");
            return exit::ERROR;
        }
    };
    let page = format!("{}/#invite={token}", connector.page_origin());
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{page}");
    if std::io::stdout().is_terminal()
        && let Some(qr) = ccrelay_server::web::qr_half_blocks(&page)
    {
        let _ = write!(out, "\n{qr}");
    }
    let _ = out.flush();
    eprintln!(
        "ccrelay: open it on the device to pair it as {}: single use, valid for {} minutes",
        if viewer { "a viewer" } else { "an owner" },
        ttl.as_secs().div_ceil(60)
    );
    exit::OK
}

/// The screen, the editor and the way out to the connection task.
struct Ui {
    screen: Screen,
    editor: Option<Editor>,
    out_tx: mpsc::UnboundedSender<net::Outbound>,
    /// The connection frames are meant for (0: none yet).
    generation: u64,
    /// Text waiting for the pager (interactive only).
    pages: Vec<String>,
}

impl Ui {
    /// Perform effects in order; `Some(code)` when one of them is an exit.
    fn apply(&mut self, effects: Vec<Effect>) -> Option<u8> {
        for effect in effects {
            match effect {
                Effect::Send(v) => {
                    // A closed channel means the connection task ended; its
                    // Fatal event says why.
                    let _ = self.out_tx.send((self.generation, v.to_json()));
                }
                Effect::Out(text) => self.screen.output(&text, self.editor.as_ref()),
                Effect::Msg(text) => self.screen.message(&text, self.editor.as_ref()),
                Effect::Json(line) => {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                }
                Effect::Page(text) if self.editor.is_some() => self.pages.push(text),
                Effect::Page(text) => self.screen.output(&text, None),
                Effect::Exit(code) => return Some(code),
            }
        }
        None
    }

    /// Keep the editor's status line and slash commands as the session has them.
    fn sync_status(&mut self, session: &Session) {
        if let Some(editor) = &mut self.editor {
            let status = session.status_line();
            let mut changed = false;
            if editor.status() != status.as_deref() {
                editor.set_status(status);
                changed = true;
            }
            if editor.commands() != session.commands() {
                editor.set_commands(session.commands().to_vec());
            }
            if changed {
                self.screen.redraw(editor);
            }
        }
    }

    /// Show long text through `$PAGER` (default `less -R`): the terminal leaves
    /// raw mode and the key reader stops while the pager owns it. Without a
    /// pager that starts, the text is printed above the editor.
    async fn page(&mut self, text: String, keys: &mut Option<EventStream>) {
        let pager = std::env::var("PAGER").unwrap_or_else(|_| "less -R".into());
        if pager.trim().is_empty() {
            self.screen.output(&text, self.editor.as_ref());
            return;
        }
        self.screen.close();
        *keys = None;
        let _ = crossterm::terminal::disable_raw_mode();
        let child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&pager)
            .stdin(std::process::Stdio::piped())
            .spawn();
        let shown = match child {
            Ok(mut child) => {
                if let Some(mut stdin) = child.stdin.take() {
                    use tokio::io::AsyncWriteExt;
                    // A pager quit early closes its input: not an error.
                    let _ = stdin.write_all(text.as_bytes()).await;
                }
                child.wait().await.is_ok_and(|s| s.success())
            }
            Err(_) => false,
        };
        let _ = crossterm::terminal::enable_raw_mode();
        *keys = Some(EventStream::new());
        if !shown {
            self.screen.output(&text, self.editor.as_ref());
        } else if let Some(editor) = &self.editor {
            self.screen.redraw(editor);
        }
    }

    /// Show the session's oldest unanswered permission prompt in the editor.
    fn sync_ask(&mut self, session: &Session) {
        if let Some(editor) = &mut self.editor {
            let ask = session.current_ask();
            if editor.ask() != ask.as_ref() {
                editor.set_ask(ask);
                self.screen.redraw(editor);
            }
        }
    }
}

/// How often the interactive client looks at its status line without an event.
const STATUS_CLOCK: Duration = Duration::from_secs(20);

async fn event_loop(
    mode: Mode,
    session: &mut Session,
    ui: &mut Ui,
    mut events: mpsc::Receiver<NetEvent>,
) -> u8 {
    let mut keys = (mode == Mode::Interactive).then(EventStream::new);
    let mut lines = (mode == Mode::Lines).then(spawn_stdin_lines);
    let (Ok(mut sigint), Ok(mut sigterm), Ok(mut sighup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        eprintln!("ccrelay: cannot install signal handlers");
        return exit::ERROR;
    };
    if let Some(editor) = &ui.editor {
        ui.screen.redraw(editor);
    }
    // The status line tells time ("usage limit · resets … (in 25m)") with nothing on the
    // wire to redraw it: look again now and then (it redraws only when its text changed).
    let mut status_clock = tokio::time::interval(STATUS_CLOCK);
    status_clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let effects = tokio::select! {
            _ = status_clock.tick() => Vec::new(),
            ev = events.recv() => match ev {
                Some(ev) => on_net(ev, session, ui),
                None => vec![Effect::Exit(exit::ERROR)],
            },
            Some(key) = next_key(&mut keys) => on_terminal(key, session, ui),
            line = next_line(&mut lines) => match line {
                Some(text) if !text.trim().is_empty() => session.submit(text),
                Some(_) => Vec::new(),
                None => {
                    // End of input: stop reading, keep showing the session.
                    lines = None;
                    Vec::new()
                }
            },
            _ = sigint.recv() => session.ctrl_c(),
            _ = sigterm.recv() => vec![Effect::Exit(128 + 15)],
            _ = sighup.recv() => vec![Effect::Exit(128 + 1)],
        };
        if let Some(code) = ui.apply(effects) {
            return code;
        }
        let pages = std::mem::take(&mut ui.pages);
        if !pages.is_empty() {
            for text in pages {
                ui.page(text, &mut keys).await;
            }
            // A Ctrl-C pressed in the pager was the pager's: a fresh listener
            // does not see it (an old one would interrupt or quit).
            if let Ok(fresh) = signal(SignalKind::interrupt()) {
                sigint = fresh;
            }
        }
        ui.sync_ask(session);
        ui.sync_status(session);
    }
}

fn on_net(ev: NetEvent, session: &mut Session, ui: &mut Ui) -> Vec<Effect> {
    match ev {
        NetEvent::Connected { generation, auth } => {
            ui.generation = generation;
            session.on_connected(&auth, generation > 1)
        }
        NetEvent::Frame(text) => session.on_frame(&text),
        NetEvent::Disconnected { reason } => {
            ui.generation = 0;
            session.on_disconnected(&reason)
        }
        NetEvent::Retrying { error, delay } => {
            let text = format!("{error}; retrying in {:.1} s", delay.as_secs_f64());
            vec![Effect::Msg(session.renderer.notice(&text))]
        }
        NetEvent::Fatal { message } => vec![
            Effect::Msg(session.renderer.error(&message)),
            Effect::Exit(exit::ERROR),
        ],
    }
}

fn on_terminal(event: std::io::Result<Event>, session: &mut Session, ui: &mut Ui) -> Vec<Effect> {
    let Some(editor) = &mut ui.editor else {
        return Vec::new();
    };
    let action = match event {
        Ok(Event::Key(k)) => editor.key(k),
        Ok(Event::Paste(text)) => editor.paste(&text),
        Ok(Event::Resize(width, _)) => {
            ui.screen.resize(width);
            Action::Redraw
        }
        Ok(_) => Action::None,
        Err(e) => {
            return vec![
                Effect::Msg(
                    session
                        .renderer
                        .error(&format!("reading the terminal: {e}")),
                ),
                Effect::Exit(exit::ERROR),
            ];
        }
    };
    match action {
        Action::None => Vec::new(),
        Action::Redraw => {
            ui.screen.redraw(editor);
            Vec::new()
        }
        Action::Submit(text) => {
            ui.screen.redraw(editor);
            // Typed lines may be commands (`:sessions`, `:switch NAME`).
            session.typed(text)
        }
        Action::CtrlC => session.ctrl_c(),
        Action::Eof => vec![Effect::Exit(exit::OK)],
        Action::Answer {
            request_id,
            decision,
        } => session.answer(&request_id, decision),
    }
}

async fn next_key(keys: &mut Option<EventStream>) -> Option<std::io::Result<Event>> {
    match keys {
        Some(k) => k.next().await,
        None => std::future::pending().await,
    }
}

async fn next_line(lines: &mut Option<mpsc::Receiver<String>>) -> Option<String> {
    match lines {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Lines of stdin waiting to be sent as prompts, at most; the reading thread then
/// waits (a large file piped in is read as it is used, not buffered whole).
const STDIN_QUEUE_LINES: usize = 64;

/// Lines of stdin, read on a plain thread (a blocked read must not hold up the
/// runtime's shutdown). The channel closes at end of input.
fn spawn_stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(STDIN_QUEUE_LINES);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in std::io::BufRead::lines(stdin.lock()) {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn host_name() -> Option<String> {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
}
