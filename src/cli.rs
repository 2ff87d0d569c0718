//! Command-line surface of the `ccrelay` binary (clap definitions only).
//!
//! Owns: the parsers of the subcommands and their conversion into the plain
//! settings of the modules they run. `serve`'s options are built from the
//! settings table (`config::settings`): flag names, env var names and
//! help text are declared there once. Must not: apply defaults or validate
//! values — `config` does that, so that flags, env vars and the TOML file are
//! merged in one place with one precedence rule.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::{FalseyValueParser, PossibleValue, PossibleValuesParser};
use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches, Parser, Subcommand};

use crate::config::ServeValues;
use crate::config::settings::{SETTINGS, Setting, Shape, ValueKind};

/// ccrelay: drive one Claude Code session from many devices.
#[derive(Debug, Parser)]
#[command(name = "ccrelay", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at startup; boxing `ServeArgs` would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay: supervise Claude Code and serve the WebSocket endpoint.
    // Negative numbers are taken as values so that validation can name the setting.
    #[command(after_help = SERVE_EXAMPLES, allow_negative_numbers = true)]
    Serve(ServeArgs),
    /// Attach a terminal to a running relay.
    #[command(after_help = ATTACH_EXAMPLES)]
    Attach(AttachArgs),
    /// List a relay's sessions; close, rename, or resume a past conversation in a new one.
    #[command(after_help = SESSIONS_EXAMPLES)]
    Sessions(SessionsArgs),
    /// Inspect SSH key files.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Try everything on this machine: throwaway key, relay with the mock agent, attached client.
    Demo(DemoArgs),
    /// Print this server's id and TLS certificate fingerprint (to compare with what `attach` shows).
    ServerInfo(ServerInfoArgs),
    /// A protocol-faithful stand-in for `claude` (stream-json over stdin/stdout), for demos and tests.
    #[command(after_help = crate::mock_agent::HELP)]
    MockAgent(MockAgentArgs),
}

const SERVE_EXAMPLES: &str = "Examples:
  ccrelay serve
  ccrelay serve --listen 127.0.0.1:0 --workdir ~/project
  ccrelay serve --authorized-keys ~/.ssh/ccrelay_keys -- --model sonnet";

const ATTACH_EXAMPLES: &str = "Examples:
  ccrelay attach ws://127.0.0.1:7878/v1/ws
  ccrelay attach 127.0.0.1:7878 --device laptop
  ccrelay attach 127.0.0.1:7878 -i ~/.ssh/ccrelay_key --tail 50
  ccrelay attach 127.0.0.1:7878 --prompt 'run the tests' --allow --json
  ccrelay attach wss://relay.example:7878 --invite     # a single-use pairing URL for a phone
  ccrelay attach 127.0.0.1:7878 --new ~/src/api --name api        # start a session there
  ccrelay attach 127.0.0.1:7878 --new ~/src/api --worktree fix-1  # ... in a new worktree
  ccrelay attach 127.0.0.1:7878 --session api

Keys: ssh-agent identities (SSH_AUTH_SOCK) one per connection, then ~/.ssh/id_ed25519,
id_ecdsa, id_rsa; with -i only that file. Passphrases are asked on the terminal, or through
SSH_ASKPASS when there is none (SSH_ASKPASS_REQUIRE=force|prefer|never as for ssh).

Interactive keys: Enter sends; a trailing \\ or Alt-Enter continues on a new line; Up/Down
history; Tab completes a /command from the agent's catalog (again: the next match; its
argument hint is shown); on a permission prompt y allows, a always allows (applies its
suggestions), n denies, m denies with a message; on a plan (ExitPlanMode) y approves,
a approves and switches to acceptEdits, m keeps planning with a message, n declines; on
questions (AskUserQuestion) type an option's number (several for a multi-select question)
and Enter, o for an answer of your own, n to decline. The line above the prompt shows the
context used and the cost (session.usage, asked on attach and after each turn). Ctrl-C interrupts a running turn, a second Ctrl-C
(or Ctrl-C when idle) or Ctrl-D quits. When stdin is not a terminal, each line read is
a prompt. A dropped connection is resumed where it left off.

Interactive commands (typed as a prompt line, on their own): :sessions lists the relay's
sessions; :switch NAME attaches to session NAME instead (switching back shows only what
happened meanwhile: each session's place is kept); :mode NAME sets the permission mode
(default, acceptEdits, plan, ...) and :model NAME the model (a refusal prints the server's
error); :changes lists the workdir's changed files; :diff shows every change, :diff PATH one
file's, :diff turn the last turn's (coloured; through $PAGER, default `less -R`); :at WHEN
TEXT schedules TEXT as a prompt for WHEN (+30m, +2h, +1h30m, or an RFC 3339 time). After a
turn that changed files, its paths are listed with their status and +/- counts. Any other
line is a prompt.

With --new: the server starts the session (owners only; DIR must lie under one of its
--session-root directories) and this client attaches to it; a server refusal prints its
error code (outside_roots, session_exists, git_failed, overloaded, ...) and exits 1.

With --invite: prints the web page's URL with #invite=<token> (a QR code too on a terminal);
the device that opens it first is paired at once. Exit 0, or 2 when the server refuses.

Exit status with --prompt: 0 the turn succeeded; 1 it failed or was aborted; 2 usage,
connection or authentication error; 3 a permission prompt came and neither --allow nor
--deny was given.";

const SESSIONS_EXAMPLES: &str = "Examples:
  ccrelay sessions 127.0.0.1:7878                     # a table of the sessions
  ccrelay sessions 127.0.0.1:7878 --json              # the same as one JSON document
  ccrelay sessions 127.0.0.1:7878 --resume ~/src/api  # pick a past conversation, attach
  ccrelay sessions 127.0.0.1:7878 --resume ~/src/api --pick 1 --name api
  ccrelay sessions 127.0.0.1:7878 close api --remove-worktree
  ccrelay sessions 127.0.0.1:7878 rename api 'Login bug'

Attach to a listed session with `ccrelay attach URL --session NAME`. Everything the server
sends is shown escaped (control and bidi characters appear as \\u{...}).

Exit status: 0 done; 1 the server refused the request (its error code and message are
printed, e.g. `no_such_session`, `forbidden`, `outside_roots`, `git_failed`); 2 usage,
connection or authentication error. With --resume, once attached, as `ccrelay attach`.";

/// `ccrelay serve` options: one per entry of the settings table, every one
/// optional here; `config::Config::resolve` fills what is missing from the
/// TOML file and then from the table's defaults.
#[derive(Debug, Default)]
pub struct ServeArgs(pub ServeValues);

/// The option of one setting.
fn serve_arg(setting: &'static Setting) -> Arg {
    let mut arg = Arg::new(setting.name).help(setting.help_line());
    if let Some(env) = setting.env {
        arg = arg.env(env);
    }
    match setting.shape {
        Shape::One(kind) => {
            arg = arg
                .long(setting.name)
                .value_name(setting.value_name)
                .action(ArgAction::Set)
                .value_parser(clap::value_parser!(OsString));
            if let ValueKind::Choice(choices) = kind {
                arg = arg.value_parser(PossibleValuesParser::new(
                    choices
                        .iter()
                        .map(|(name, help)| PossibleValue::new(*name).help(*help)),
                ));
            }
            arg
        }
        Shape::Switch => arg
            .long(setting.name)
            .action(ArgAction::SetTrue)
            .value_parser(FalseyValueParser::new()),
        Shape::List => arg
            .long(setting.name)
            .value_name(setting.value_name)
            .action(ArgAction::Append)
            .value_delimiter(',')
            .value_parser(clap::value_parser!(OsString)),
        Shape::Trailing => arg
            .value_name(setting.value_name)
            .last(true)
            .num_args(1..)
            .action(ArgAction::Append)
            .value_parser(clap::value_parser!(OsString)),
    }
}

impl Args for ServeArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        SETTINGS
            .iter()
            .fold(cmd, |cmd, setting| cmd.arg(serve_arg(setting)))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for ServeArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut values = ServeValues::default();
        for setting in SETTINGS {
            match setting.shape {
                Shape::Switch => {
                    if matches.get_flag(setting.name) {
                        values.set(setting, ["true"]);
                    }
                }
                _ => {
                    if let Some(raw) = matches.get_raw(setting.name) {
                        values.set(setting, raw.map(|v| v.to_os_string()));
                    }
                }
            }
        }
        Ok(ServeArgs(values))
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

/// How to reach and trust a relay, and which key to sign with: the options
/// `ccrelay attach` and `ccrelay sessions` share.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Relay address: wss://HOST:PORT/v1/ws, ws://HOST:PORT or HOST:PORT
    pub url: String,
    /// Private key file to sign with (instead of ssh-agent and the default key files)
    #[arg(short = 'i', long = "identity", value_name = "KEY_FILE", global = true)]
    pub identity: Option<PathBuf>,
    /// Device name shown to other clients [default: this host's name]
    #[arg(long, global = true)]
    pub device: Option<String>,
    /// PEM CA certificate(s) to trust besides the system's, for wss://
    #[arg(long, value_name = "PATH", global = true)]
    pub ca_file: Option<PathBuf>,
    /// The server certificate's fingerprint (`ccrelay server-info` prints it): trust that certificate, whoever signed it
    #[arg(long, value_name = "SHA256:...", global = true)]
    pub server_fingerprint: Option<String>,
    /// Record a server not seen before without asking (never overrides a mismatch)
    #[arg(long, global = true)]
    pub accept_new_server: bool,
    /// Allow plaintext ws:// to a host outside loopback
    #[arg(long, global = true)]
    pub insecure_plaintext: bool,
    /// Where servers seen before are recorded [default: $XDG_CONFIG_HOME/ccrelay/known_servers, else ~/.config/ccrelay/known_servers]
    #[arg(long, value_name = "PATH", global = true)]
    pub known_servers: Option<PathBuf>,
}

/// `ccrelay attach` options.
#[derive(Debug, Args)]
pub struct AttachArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Session to attach to
    #[arg(long, default_value = "default", conflicts_with = "new")]
    pub session: String,
    /// Start a new session whose agent works in DIR (a directory on the server, absolute or ~/...) and attach to it
    #[arg(long, value_name = "DIR", conflicts_with = "invite")]
    pub new: Option<String>,
    /// With --new: the new session's name [default: the directory's name, made unique]
    #[arg(long, value_name = "NAME", requires = "new")]
    pub name: Option<String>,
    /// With --new: run the session in a new git worktree of DIR's repository, on a new branch BRANCH
    #[arg(long, value_name = "BRANCH", requires = "new")]
    pub worktree: Option<String>,
    /// Send one prompt, show its turn, exit when it ends (exit 0 success, 1 failed/aborted)
    #[arg(long, value_name = "TEXT")]
    pub prompt: Option<String>,
    /// With --prompt: allow every permission prompt of its turn
    #[arg(long, conflicts_with = "deny", requires = "prompt")]
    pub allow: bool,
    /// With --prompt: deny every permission prompt of its turn
    #[arg(long, requires = "prompt")]
    pub deny: bool,
    /// Print every received frame as one JSON line on stdout (messages go to stderr)
    #[arg(long)]
    pub json: bool,
    /// Replay only the last N events when attaching (default: the whole retained log)
    #[arg(long, value_name = "N")]
    pub tail: Option<u64>,
    /// Make a single-use pairing invite (10 minutes), print the web page's URL with it (and its QR code on a terminal), and exit
    #[arg(long, conflicts_with_all = ["prompt", "json", "tail"])]
    pub invite: bool,
    /// With --invite: the invited device gets the read-only viewer role
    #[arg(long, requires = "invite")]
    pub viewer: bool,
}

/// `ccrelay sessions` options.
#[derive(Debug, Args)]
pub struct SessionsArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Print the sessions as one JSON document (the server's session.list entries)
    #[arg(long, conflicts_with = "resume")]
    pub json: bool,
    /// List the past conversations of DIR (on the server), pick one, start a session resuming it and attach
    #[arg(long, value_name = "DIR")]
    pub resume: Option<String>,
    /// With --resume: take the Nth conversation of the list (1 = the newest) without asking
    #[arg(
        long,
        value_name = "N",
        requires = "resume",
        conflicts_with = "conversation"
    )]
    pub pick: Option<usize>,
    /// With --resume: resume this conversation id without listing
    #[arg(long, value_name = "ID", requires = "resume")]
    pub conversation: Option<String>,
    /// With --resume: the new session's name [default: the directory's name, made unique]
    #[arg(long, value_name = "NAME", requires = "resume")]
    pub name: Option<String>,
    /// With --resume: continue in a new conversation branched from the picked one
    #[arg(long, requires = "resume")]
    pub fork: bool,
    #[command(subcommand)]
    pub action: Option<SessionsAction>,
}

impl SessionsArgs {
    /// What clap cannot say of options beside a subcommand: `close` and `rename`
    /// take none of the listing's or resuming's options.
    pub fn check(&self) -> Result<(), clap::Error> {
        if self.action.is_some() && (self.json || self.resume.is_some()) {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            return Err(cmd.error(
                clap::error::ErrorKind::ArgumentConflict,
                "`sessions close` and `sessions rename` take neither --json nor --resume",
            ));
        }
        Ok(())
    }
}

/// `ccrelay sessions URL close|rename ...`
#[derive(Debug, Subcommand)]
pub enum SessionsAction {
    /// Close a session started from a device: its agent is stopped and its name is free again.
    Close {
        /// The session's name
        name: String,
        /// Also remove the git worktree the server made for it (refused if it has changes)
        #[arg(long)]
        remove_worktree: bool,
    },
    /// Set a session's title (1 to 80 characters).
    Rename {
        /// The session's name
        name: String,
        /// The new title
        title: String,
    },
}

/// `ccrelay keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Parse an authorized keys file and say, per line, whether ccrelay accepts the key and why not.
    Check {
        /// The file to check [default: ~/.ssh/authorized_keys]
        path: Option<PathBuf>,
    },
    /// Add a public key to the paired keys file (owner; with --viewer the paired viewers file).
    Add {
        /// The key as an OpenSSH line: `ssh-ed25519 AAAA... name`
        #[arg(value_name = "KEYLINE")]
        keyline: String,
        /// Add it as a read-only viewer key
        #[arg(long)]
        viewer: bool,
        #[command(flatten)]
        files: KeyFilesArgs,
    },
    /// List every key the server accepts: file, role, fingerprint, comment.
    List {
        #[command(flatten)]
        files: KeyFilesArgs,
    },
    /// Remove a paired key by fingerprint (its open connections are closed with 1008).
    Remove {
        /// `SHA256:...` as `ccrelay keys list` or `ssh-keygen -l` prints it
        #[arg(value_name = "FINGERPRINT")]
        fingerprint: String,
        #[command(flatten)]
        files: KeyFilesArgs,
    },
}

/// The keys files of a server, for `ccrelay keys add|list|remove` (same options
/// and env vars as `ccrelay serve`).
#[derive(Debug, Default, Clone, Args)]
pub struct KeyFilesArgs {
    /// The server's data dir [default: $XDG_STATE_HOME/ccrelay, else ~/.local/state/ccrelay]
    #[arg(long, env = "CCRELAY_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// [default: <data-dir>/paired_keys]
    #[arg(long, env = "CCRELAY_PAIRED_KEYS", value_name = "PATH")]
    pub paired_keys: Option<PathBuf>,
    /// [default: <data-dir>/paired_viewers]
    #[arg(long, env = "CCRELAY_PAIRED_VIEWERS", value_name = "PATH")]
    pub paired_viewers: Option<PathBuf>,
    /// Listed by `keys list` [default: ~/.ssh/authorized_keys]
    #[arg(long, env = "CCRELAY_AUTHORIZED_KEYS", value_name = "PATH")]
    pub authorized_keys: Option<PathBuf>,
    /// Listed by `keys list` when given
    #[arg(long, env = "CCRELAY_VIEWER_KEYS", value_name = "PATH")]
    pub viewer_keys: Option<PathBuf>,
}

/// `ccrelay server-info` options.
#[derive(Debug, Args)]
pub struct ServerInfoArgs {
    /// The server's data dir [default: $XDG_STATE_HOME/ccrelay, else ~/.local/state/ccrelay]
    #[arg(long, env = "CCRELAY_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The PEM certificate `serve` uses [default: the self-signed one in the data dir]
    #[arg(long, env = "CCRELAY_TLS_CERT", value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
}

/// `ccrelay demo` options.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Listen address of the demo relay
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Use this agent instead of the built-in mock (e.g. `claude`)
    #[arg(long, value_name = "PATH")]
    pub agent_cmd: Option<PathBuf>,
}

/// `ccrelay mock-agent` accepts the flags `claude` accepts, so it can stand in for it
/// as `--agent-cmd`. Flags it has no use for are accepted and ignored.
#[derive(Debug, Default, Args, Clone)]
pub struct MockAgentArgs {
    /// Print mode (accepted for compatibility)
    #[arg(short = 'p', long = "print")]
    pub print: bool,
    /// Must be stream-json
    #[arg(long, value_name = "FORMAT")]
    pub input_format: Option<String>,
    /// Must be stream-json
    #[arg(long, value_name = "FORMAT")]
    pub output_format: Option<String>,
    /// Accepted for compatibility
    #[arg(long)]
    pub verbose: bool,
    /// `stdio` routes permission prompts to stdout as control requests
    #[arg(long, value_name = "TOOL")]
    pub permission_prompt_tool: Option<String>,
    /// Emit stream_event lines
    #[arg(long)]
    pub include_partial_messages: bool,
    /// Resume this conversation (kept in the mock's state dir)
    #[arg(long, value_name = "SESSION_ID")]
    pub resume: Option<String>,
    /// Use this session id for a new conversation
    #[arg(long, value_name = "UUID")]
    pub session_id: Option<String>,
    /// Echo prompts back with isReplay
    #[arg(long)]
    pub replay_user_messages: bool,
    /// Accepted and ignored (any other flag `claude` has)
    #[arg(allow_hyphen_values = true, trailing_var_arg = true, hide = true)]
    pub rest: Vec<String>,
}

impl From<ServerArgs> for crate::client::ServerOptions {
    fn from(a: ServerArgs) -> Self {
        crate::client::ServerOptions {
            url: a.url,
            identity: a.identity,
            device: a.device,
            ca_file: a.ca_file,
            server_fingerprint: a.server_fingerprint,
            accept_new_server: a.accept_new_server,
            insecure_plaintext: a.insecure_plaintext,
            known_servers: a.known_servers,
        }
    }
}

impl From<AttachArgs> for crate::client::AttachSettings {
    fn from(a: AttachArgs) -> Self {
        crate::client::AttachSettings {
            server: a.server.into(),
            session: a.session,
            new: a.new.map(|workdir| crate::client::NewSession {
                workdir,
                name: a.name,
                worktree: a.worktree,
                resume: None,
                fork: false,
            }),
            prompt: a.prompt,
            allow: a.allow,
            deny: a.deny,
            json: a.json,
            tail: a.tail,
            invite: a.invite,
            viewer: a.viewer,
        }
    }
}

impl From<SessionsArgs> for crate::client::SessionsSettings {
    fn from(a: SessionsArgs) -> Self {
        use crate::client::{Resume, SessionsTask};
        let task = match (a.action, a.resume) {
            (
                Some(SessionsAction::Close {
                    name,
                    remove_worktree,
                }),
                _,
            ) => SessionsTask::Close {
                name,
                remove_worktree,
            },
            (Some(SessionsAction::Rename { name, title }), _) => {
                SessionsTask::Rename { name, title }
            }
            (None, Some(workdir)) => SessionsTask::Resume(Resume {
                workdir,
                pick: a.pick,
                conversation: a.conversation,
                name: a.name,
                fork: a.fork,
            }),
            (None, None) => SessionsTask::List { json: a.json },
        };
        crate::client::SessionsSettings {
            server: a.server.into(),
            task,
        }
    }
}

impl From<KeyFilesArgs> for crate::auth::KeyFileOptions {
    fn from(a: KeyFilesArgs) -> Self {
        crate::auth::KeyFileOptions {
            data_dir: a.data_dir,
            paired_keys: a.paired_keys,
            paired_viewers: a.paired_viewers,
            authorized_keys: a.authorized_keys,
            viewer_keys: a.viewer_keys,
        }
    }
}

impl From<DemoArgs> for crate::demo::DemoSettings {
    fn from(a: DemoArgs) -> Self {
        crate::demo::DemoSettings {
            listen: a.listen,
            agent_cmd: a.agent_cmd,
        }
    }
}

impl From<MockAgentArgs> for crate::mock_agent::MockAgentSettings {
    fn from(a: MockAgentArgs) -> Self {
        crate::mock_agent::MockAgentSettings {
            print: a.print,
            input_format: a.input_format,
            output_format: a.output_format,
            verbose: a.verbose,
            permission_prompt_tool: a.permission_prompt_tool,
            include_partial_messages: a.include_partial_messages,
            resume: a.resume,
            session_id: a.session_id,
            replay_user_messages: a.replay_user_messages,
            rest: a.rest,
        }
    }
}

/// The command line of the mock agent when it runs as its own program
/// (`ccrelay-mock-agent`, or `ccrelay` invoked under that name).
#[derive(Debug, Parser)]
#[command(name = "ccrelay-mock-agent", version, after_help = crate::mock_agent::HELP)]
struct MockAgentCli {
    #[command(flatten)]
    args: MockAgentArgs,
}

/// Parse `argv` as the mock agent's command line and run it; returns the exit code.
pub fn mock_agent_main(argv: impl IntoIterator<Item = OsString>) -> i32 {
    let cli = MockAgentCli::parse_from(argv);
    match crate::mock_agent::run(cli.args.into()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mock-agent: {e:#}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, settings};

    fn serve(argv: &[&str]) -> ServeValues {
        let cli = Cli::try_parse_from(["ccrelay", "serve"].iter().chain(argv)).unwrap();
        let Command::Serve(ServeArgs(values)) = cli.command else {
            panic!("not serve")
        };
        values
    }

    /// Flags reach `resolve` as the table's settings: one value, a switch, a
    /// repeated list and a comma-separated one, the words after `--`.
    #[test]
    fn serve_flags_become_setting_values() {
        let dir = std::env::temp_dir();
        let dir = dir.to_str().unwrap();
        let values = serve(&[
            "--workdir",
            dir,
            "--authorized-keys",
            "/dev/null",
            "--require-channel-binding",
            "--ping-interval",
            "2",
            "--allowed-origin",
            "https://a.example,https://b.example",
            "--allowed-origin",
            "https://c.example",
            "--log-format",
            "json",
            "--",
            "--model",
            "sonnet",
        ]);
        let c = Config::resolve(&values).unwrap();
        assert!(c.require_channel_binding);
        assert!(!c.insecure_plaintext);
        assert_eq!(c.ping_interval, std::time::Duration::from_secs(2));
        assert_eq!(
            c.allowed_origins,
            [
                "https://a.example",
                "https://b.example",
                "https://c.example"
            ]
        );
        assert_eq!(c.log_format, crate::logging::LogFormat::Json);
        assert_eq!(c.agent.extra_args, ["--model", "sonnet"]);
        // A choice outside the table's is refused by the parser, as before.
        let err = Cli::try_parse_from(["ccrelay", "serve", "--journal-fsync", "sometimes"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("always") && err.contains("interval"), "{err}");
    }

    /// Every setting of the table is an option of `serve`, with its env var.
    #[test]
    fn serve_command_has_every_setting() {
        let cmd = <Cli as clap::CommandFactory>::command();
        let serve = cmd.find_subcommand("serve").unwrap();
        for setting in settings::SETTINGS {
            let arg = serve
                .get_arguments()
                .find(|a| a.get_id() == setting.name)
                .unwrap_or_else(|| panic!("no option for {}", setting.name));
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                setting.env,
                "{}",
                setting.name
            );
        }
    }

    fn parse(argv: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("ccrelay").chain(argv.iter().copied()))
            .map(|c| c.command)
    }

    /// `attach --new` takes the create options; `--name` and `--worktree` need
    /// it, and it excludes `--session` and `--invite`.
    #[test]
    fn attach_new_and_its_options() {
        let Ok(Command::Attach(a)) = parse(&[
            "attach",
            "127.0.0.1:1",
            "--new",
            "~/src/api",
            "--name",
            "api",
            "--worktree",
            "fix",
            "-i",
            "k",
        ]) else {
            panic!("not attach")
        };
        let settings = crate::client::AttachSettings::from(a);
        let new = settings.new.expect("a new session");
        assert_eq!(new.workdir, "~/src/api");
        assert_eq!(new.name.as_deref(), Some("api"));
        assert_eq!(new.worktree.as_deref(), Some("fix"));
        assert_eq!(settings.server.identity, Some(PathBuf::from("k")));
        assert_eq!(settings.server.url, "127.0.0.1:1");
        for bad in [
            &["attach", "u", "--name", "api"][..],
            &["attach", "u", "--worktree", "b"],
            &["attach", "u", "--new", "d", "--session", "s"],
            &["attach", "u", "--new", "d", "--invite"],
        ] {
            let e = parse(bad).err().unwrap_or_else(|| panic!("{bad:?} parsed"));
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
        let Ok(Command::Attach(a)) = parse(&["attach", "u", "--session", "api"]) else {
            panic!("not attach")
        };
        assert_eq!(a.session, "api");
    }

    /// `sessions URL` lists; `close` and `rename` come after the URL and take the
    /// connection options after them too; `--pick` needs `--resume`.
    #[test]
    fn sessions_commands() {
        use crate::client::{SessionsSettings, SessionsTask};
        let settings = |argv: &[&str]| -> SessionsSettings {
            let Ok(Command::Sessions(a)) = parse(argv) else {
                panic!("not sessions: {argv:?}")
            };
            a.check().unwrap();
            a.into()
        };
        assert!(matches!(
            settings(&["sessions", "u"]).task,
            SessionsTask::List { json: false }
        ));
        assert!(matches!(
            settings(&["sessions", "u", "--json"]).task,
            SessionsTask::List { json: true }
        ));
        let s = settings(&[
            "sessions",
            "u",
            "close",
            "api",
            "--remove-worktree",
            "-i",
            "k",
        ]);
        assert!(
            matches!(&s.task, SessionsTask::Close { name, remove_worktree: true } if name == "api")
        );
        assert_eq!(s.server.identity, Some(PathBuf::from("k")));
        let s = settings(&["sessions", "u", "rename", "api", "Login bug"]);
        assert!(
            matches!(&s.task, SessionsTask::Rename { name, title } if name == "api" && title == "Login bug")
        );
        let s = settings(&[
            "sessions", "u", "--resume", "~/w", "--pick", "2", "--name", "n", "--fork",
        ]);
        let SessionsTask::Resume(r) = s.task else {
            panic!("not resume")
        };
        assert_eq!(
            (r.workdir.as_str(), r.pick, r.name.as_deref(), r.fork),
            ("~/w", Some(2), Some("n"), true)
        );
        for bad in [
            &["sessions", "u", "--pick", "1"][..],
            &["sessions", "u", "--resume", "d", "--json"],
            &[
                "sessions",
                "u",
                "--resume",
                "d",
                "--pick",
                "1",
                "--conversation",
                "c",
            ],
            &["sessions", "u", "close"],
            &["sessions", "u", "rename", "api"],
            &["sessions"],
        ] {
            let e = parse(bad).err().unwrap_or_else(|| panic!("{bad:?} parsed"));
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
        let Ok(Command::Sessions(a)) = parse(&["sessions", "u", "--json", "close", "api"]) else {
            panic!("not sessions")
        };
        assert_eq!(a.check().unwrap_err().exit_code(), 2);
    }
}
