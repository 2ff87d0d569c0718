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

Keys: ssh-agent identities (SSH_AUTH_SOCK) one per connection, then ~/.ssh/id_ed25519,
id_ecdsa, id_rsa; with -i only that file. Passphrases are asked on the terminal, or through
SSH_ASKPASS when there is none (SSH_ASKPASS_REQUIRE=force|prefer|never as for ssh).

Interactive keys: Enter sends; a trailing \\ or Alt-Enter continues on a new line; Up/Down
history; on a permission prompt y allows, a always allows (applies its suggestions),
n denies, m denies with a message; Ctrl-C interrupts a running turn, a second Ctrl-C
(or Ctrl-C when idle) or Ctrl-D quits. When stdin is not a terminal, each line read is
a prompt. A dropped connection is resumed where it left off.

With --invite: prints the web page's URL with #invite=<token> (a QR code too on a terminal);
the device that opens it first is paired at once. Exit 0, or 2 when the server refuses.

Exit status with --prompt: 0 the turn succeeded; 1 it failed or was aborted; 2 usage,
connection or authentication error; 3 a permission prompt came and neither --allow nor
--deny was given.";

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

/// `ccrelay attach` options.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Relay address: ws://HOST:PORT/v1/ws, ws://HOST:PORT or HOST:PORT
    pub url: String,
    /// Session to attach to
    #[arg(long, default_value = "default")]
    pub session: String,
    /// Private key file to sign with (instead of ssh-agent and the default key files)
    #[arg(short = 'i', long = "identity", value_name = "KEY_FILE")]
    pub identity: Option<PathBuf>,
    /// Device name shown to other clients [default: this host's name]
    #[arg(long)]
    pub device: Option<String>,
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
    /// PEM CA certificate(s) to trust besides the system's, for wss://
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// The server certificate's fingerprint (`ccrelay server-info` prints it): trust that certificate, whoever signed it
    #[arg(long, value_name = "SHA256:...")]
    pub server_fingerprint: Option<String>,
    /// Record a server not seen before without asking (never overrides a mismatch)
    #[arg(long)]
    pub accept_new_server: bool,
    /// Allow plaintext ws:// to a host outside loopback
    #[arg(long)]
    pub insecure_plaintext: bool,
    /// Where servers seen before are recorded [default: $XDG_CONFIG_HOME/ccrelay/known_servers, else ~/.config/ccrelay/known_servers]
    #[arg(long, value_name = "PATH")]
    pub known_servers: Option<PathBuf>,
    /// Make a single-use pairing invite (10 minutes), print the web page's URL with it (and its QR code on a terminal), and exit
    #[arg(long, conflicts_with_all = ["prompt", "json", "tail"])]
    pub invite: bool,
    /// With --invite: the invited device gets the read-only viewer role
    #[arg(long, requires = "invite")]
    pub viewer: bool,
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

impl From<AttachArgs> for crate::client::AttachSettings {
    fn from(a: AttachArgs) -> Self {
        crate::client::AttachSettings {
            url: a.url,
            session: a.session,
            identity: a.identity,
            device: a.device,
            prompt: a.prompt,
            allow: a.allow,
            deny: a.deny,
            json: a.json,
            tail: a.tail,
            ca_file: a.ca_file,
            server_fingerprint: a.server_fingerprint,
            accept_new_server: a.accept_new_server,
            insecure_plaintext: a.insecure_plaintext,
            known_servers: a.known_servers,
            invite: a.invite,
            viewer: a.viewer,
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
}
