//! Command-line surface of the `ccrelay` binary (clap definitions only).
//!
//! Owns: flag names, env var names and help text. Must not: apply defaults or
//! validate values — `config` does that, so that flags, env vars and the TOML
//! file are merged in one place with one precedence rule.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    #[command(after_help = MOCK_AGENT_HELP)]
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

/// The scripted behaviours of `ccrelay mock-agent`, chosen by a case-insensitive
/// whole-word keyword anywhere in the prompt (first match in this order).
pub const MOCK_AGENT_HELP: &str =
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
  permission        same as run-bash with the default command
  slow              20 text deltas, 250 ms apart (for interrupts)
  recall            the answer quotes every earlier prompt of this conversation (proves --resume)
  (anything else)   \"You said: <prompt>\" in a few deltas
Modifiers, combined with any of the above:
  garbage           write the non-JSON line `this is not json` to stdout mid-turn
  stderr            write a few lines to stderr during the turn
Conversations are kept for --resume in $CCRELAY_MOCK_STATE_DIR,
else $XDG_STATE_HOME/ccrelay-mock, else ~/.local/state/ccrelay-mock.";

/// How a log line is formatted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for machines.
    Json,
    /// Human-readable, one event per line.
    Pretty,
}

/// When the session journal is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Before the events are sent to any client (per batch of agent lines).
    Always,
    /// At most once a second, in the background of the session.
    Interval,
    /// Never explicitly; the OS writes back on its own schedule.
    Never,
}

/// `ccrelay serve` options. Every field is optional here: `config::Config::resolve`
/// fills what is missing from the TOML file and then from the documented defaults.
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// WebSocket + HTTP listen address (port 0 picks a free port) [default: 127.0.0.1:7878]
    #[arg(long, env = "CCRELAY_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// OpenSSH authorized_keys file of `owner` keys [default: ~/.ssh/authorized_keys]
    #[arg(long, env = "CCRELAY_AUTHORIZED_KEYS", value_name = "PATH")]
    pub authorized_keys: Option<PathBuf>,
    /// authorized_keys-format file of read-only `viewer` keys
    #[arg(long, env = "CCRELAY_VIEWER_KEYS", value_name = "PATH")]
    pub viewer_keys: Option<PathBuf>,
    /// The Claude Code executable, or any program speaking its stream-json protocol [default: claude]
    #[arg(long, env = "CCRELAY_AGENT_CMD", value_name = "PATH")]
    pub agent_cmd: Option<PathBuf>,
    /// Working directory of the `default` session [default: current directory]
    #[arg(long, env = "CCRELAY_WORKDIR", value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Journals, audit log and metadata [default: $XDG_STATE_HOME/ccrelay, else ~/.local/state/ccrelay]
    #[arg(long, env = "CCRELAY_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Open connections from their TCP accept on: WebSocket (authenticated or not) and plain HTTP [default: 4096]
    #[arg(long, env = "CCRELAY_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<String>,
    /// Plain HTTP connections (page, assets, health, metrics) one address may hold; more get HTTP 429 [default: 32]
    #[arg(long, env = "CCRELAY_MAX_HTTP_PER_ADDRESS", value_name = "N")]
    pub max_http_per_address: Option<String>,
    /// Global IPv6 addresses (2000::/3) count as one address per prefix of this many bits in per-address limits; other IPv6 addresses count one by one [default: 64]
    #[arg(long, env = "CCRELAY_IPV6_PREFIX_LEN", value_name = "N")]
    pub ipv6_prefix_len: Option<String>,
    /// Seconds a client has to answer the authentication challenge [default: 10]
    #[arg(long, env = "CCRELAY_AUTH_TIMEOUT", value_name = "SECS")]
    pub auth_timeout: Option<String>,
    /// WebSocket ping period in seconds [default: 15]
    #[arg(long, env = "CCRELAY_PING_INTERVAL", value_name = "SECS")]
    pub ping_interval: Option<String>,
    /// Close a connection that sent nothing (not even a pong) for this many seconds [default: 45]
    #[arg(long, env = "CCRELAY_IDLE_TIMEOUT", value_name = "SECS")]
    pub idle_timeout: Option<String>,
    /// Browser origin allowed to connect (repeatable; the env var takes a comma-separated list)
    #[arg(
        long = "allowed-origin",
        env = "CCRELAY_ALLOWED_ORIGINS",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub allowed_origins: Option<Vec<String>>,
    /// Where /metrics is served [default: same as --listen]
    #[arg(long, env = "CCRELAY_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive [default: info]
    #[arg(long, env = "CCRELAY_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log line format [default: pretty]
    #[arg(long, env = "CCRELAY_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Deny permission prompts nobody answered within this many seconds [default: wait forever]
    #[arg(long, env = "CCRELAY_PERMISSION_TIMEOUT", value_name = "SECS")]
    pub permission_timeout: Option<String>,
    /// Probe an agent that has been silent this many seconds [default: 30]
    #[arg(long, env = "CCRELAY_AGENT_PROBE_INTERVAL", value_name = "SECS")]
    pub agent_probe_interval: Option<String>,
    /// An agent that does not answer a probe within this many seconds is hung and restarted [default: 20]
    #[arg(long, env = "CCRELAY_AGENT_PROBE_TIMEOUT", value_name = "SECS")]
    pub agent_probe_timeout: Option<String>,
    /// More unexpected agent exits than this within the restart window mark the session failed [default: 5]
    #[arg(long, env = "CCRELAY_AGENT_MAX_RESTARTS", value_name = "N")]
    pub agent_max_restarts: Option<String>,
    /// The window, in seconds, for --agent-max-restarts [default: 300]
    #[arg(long, env = "CCRELAY_AGENT_RESTART_WINDOW", value_name = "SECS")]
    pub agent_restart_window: Option<String>,
    /// Per-connection inbound frame rate; bursts of twice this are allowed [default: 100]
    #[arg(long, env = "CCRELAY_MAX_FRAMES_PER_SEC", value_name = "N")]
    pub max_frames_per_sec: Option<String>,
    /// TOML file with the same settings, keys spelled like the long options
    #[arg(long, env = "CCRELAY_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Over TLS, refuse an authentication that is not bound to the connection (tls-exporter)
    #[arg(
        long,
        env = "CCRELAY_REQUIRE_CHANNEL_BINDING",
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub require_channel_binding: bool,
    /// Seconds a pairing request waits for an owner's answer [default: 120]
    #[arg(long, env = "CCRELAY_PAIR_TIMEOUT", value_name = "SECS")]
    pub pair_timeout: Option<String>,
    /// Notify a permission request nobody answered after this many seconds; 0 = at once [default: 10]
    #[arg(long, env = "CCRELAY_NOTIFY_AFTER", value_name = "SECS")]
    pub notify_after: Option<String>,
    /// Also post notifications as JSON to this URL (http:// or https://)
    #[arg(long, env = "CCRELAY_NOTIFY_WEBHOOK", value_name = "URL")]
    pub notify_webhook: Option<String>,
    /// Also post notifications to this ntfy topic URL (https://ntfy.example/TOPIC)
    #[arg(long, env = "CCRELAY_NOTIFY_NTFY", value_name = "URL")]
    pub notify_ntfy: Option<String>,
    /// How devices reach this server (https://host:port), for links and answer buttons in notifications
    #[arg(long, env = "CCRELAY_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// A name devices use to reach this server, HOST[:PORT] (port: the scheme's default when left out); one of this server's names for origin binding (repeatable)
    #[arg(
        long = "server-name",
        env = "CCRELAY_SERVER_NAMES",
        value_name = "HOST[:PORT]",
        value_delimiter = ','
    )]
    pub server_names: Option<Vec<String>>,
    /// A key (SHA256:... fingerprint) that may still sign the bare challenge, without origin binding; each such login is logged as a warning (repeatable)
    #[arg(
        long = "allow-unbound-auth",
        env = "CCRELAY_ALLOW_UNBOUND_AUTH",
        value_name = "FINGERPRINT",
        value_delimiter = ','
    )]
    pub allow_unbound_auth: Option<Vec<String>>,
    /// Give webhook and ntfy notifications `allow` actions too, for requests shown whole; without it they carry only `deny` (their tokens belong to no key, and a topic may be read by others)
    #[arg(
        long,
        env = "CCRELAY_NOTIFY_SINK_ALLOW",
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub notify_sink_allow: bool,
    /// Owner keys added by pairing or `ccrelay keys add` [default: <data-dir>/paired_keys]
    #[arg(long, env = "CCRELAY_PAIRED_KEYS", value_name = "PATH")]
    pub paired_keys: Option<PathBuf>,
    /// Viewer keys added by pairing or `ccrelay keys add --viewer` [default: <data-dir>/paired_viewers]
    #[arg(long, env = "CCRELAY_PAIRED_VIEWERS", value_name = "PATH")]
    pub paired_viewers: Option<PathBuf>,
    /// Accept http:// and loopback Web Push endpoints (tests only; docs/protocol.md §9.1.2)
    #[arg(
        long,
        env = "CCRELAY_PUSH_ALLOW_INSECURE_ENDPOINTS",
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub push_allow_insecure_endpoints: bool,
    /// Contact in the Web Push VAPID signature (`sub`): a mailto: address or an https:// URL where the server's operator can be reached; Apple's push service refuses an unresolvable one [default: mailto:ccrelay@localhost]
    #[arg(long, env = "CCRELAY_PUSH_SUBJECT", value_name = "URI")]
    pub push_subject: Option<String>,

    // ---- settings of the project's choosing (the contract leaves them open: docs/protocol.md §8.1) ----
    /// Stable server id shown in challenges [default: generated once and kept in the data dir]
    #[arg(long, env = "CCRELAY_SERVER_ID", value_name = "ID")]
    pub server_id: Option<String>,
    /// Largest inbound frame after authentication, in bytes [default: 4194304]
    #[arg(long, env = "CCRELAY_MAX_FRAME_BYTES", value_name = "BYTES")]
    pub max_frame_bytes: Option<String>,
    /// Largest prompt content, in bytes of JSON [default: 1048576]
    #[arg(long, env = "CCRELAY_MAX_PROMPT_BYTES", value_name = "BYTES")]
    pub max_prompt_bytes: Option<String>,
    /// Prompts that may wait behind a running turn, per session [default: 256]
    #[arg(long, env = "CCRELAY_PROMPT_QUEUE", value_name = "N")]
    pub prompt_queue: Option<String>,
    /// Frames that may wait for a slow client before it is closed with 4008 [default: 8192]
    #[arg(long, env = "CCRELAY_CLIENT_QUEUE", value_name = "N")]
    pub client_queue: Option<String>,
    /// Events kept in memory per session for replays [default: 20000]
    #[arg(long, env = "CCRELAY_TAIL_EVENTS", value_name = "N")]
    pub tail_events: Option<String>,
    /// Bytes of events kept in memory per session for replays [default: 67108864]
    #[arg(long, env = "CCRELAY_TAIL_BYTES", value_name = "BYTES")]
    pub tail_bytes: Option<String>,
    /// When the journal is fsynced: always (before events are sent), interval (each second), never [default: always]
    #[arg(long, env = "CCRELAY_JOURNAL_FSYNC", value_name = "POLICY")]
    pub journal_fsync: Option<FsyncPolicy>,
    /// Journal segment size before a new segment is started, in bytes [default: 16777216]
    #[arg(long, env = "CCRELAY_JOURNAL_SEGMENT_BYTES", value_name = "BYTES")]
    pub journal_segment_bytes: Option<String>,
    /// Journal bytes kept per session; the oldest segments are removed beyond it [default: 1073741824]
    #[arg(long, env = "CCRELAY_JOURNAL_MAX_BYTES", value_name = "BYTES")]
    pub journal_max_bytes: Option<String>,
    /// Bytes the relay may buffer in client queues and event tails; from 80 % new connections get HTTP 503, from 95 % the slowest clients are closed with 1013 [default: 1073741824, or twice the event tails of all sessions if that is more]
    #[arg(long, env = "CCRELAY_MEMORY_LIMIT", value_name = "BYTES")]
    pub memory_limit: Option<String>,
    /// Failed authentications allowed per address per minute before HTTP 429 [default: 30]
    #[arg(long, env = "CCRELAY_AUTH_FAILURES_PER_MIN", value_name = "N")]
    pub auth_failures_per_min: Option<String>,
    /// Seconds an agent gets between SIGTERM and SIGKILL when it is stopped [default: 5]
    #[arg(long, env = "CCRELAY_AGENT_STOP_GRACE", value_name = "SECS")]
    pub agent_stop_grace: Option<String>,
    /// Seconds shutdown may take before remaining connections are dropped [default: 5]
    #[arg(long, env = "CCRELAY_SHUTDOWN_GRACE", value_name = "SECS")]
    pub shutdown_grace: Option<String>,
    /// Reverse proxy network whose X-Forwarded-For is believed, as a CIDR (repeatable; the env var takes a comma-separated list)
    #[arg(
        long = "trusted-proxy",
        env = "CCRELAY_TRUSTED_PROXIES",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub trusted_proxies: Option<Vec<String>>,
    /// Extra session besides `default`, as NAME=DIR (repeatable)
    #[arg(
        long = "session",
        env = "CCRELAY_SESSIONS",
        value_name = "NAME=DIR",
        value_delimiter = ','
    )]
    pub sessions: Option<Vec<String>>,

    /// PEM certificate chain: serve TLS only (with --tls-key); re-read on SIGHUP and when it changes
    #[arg(long, env = "CCRELAY_TLS_CERT", value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert
    #[arg(long, env = "CCRELAY_TLS_KEY", value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
    /// Serve TLS with a certificate made once and kept in the data dir (its fingerprint is logged)
    #[arg(
        long,
        env = "CCRELAY_TLS_SELF_SIGNED",
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub tls_self_signed: bool,
    /// DNS name or IP address of the self-signed certificate (repeatable) [default: localhost, 127.0.0.1, ::1 and the host name]
    #[arg(
        long = "tls-name",
        env = "CCRELAY_TLS_NAMES",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub tls_names: Option<Vec<String>>,
    /// Allow listening without TLS outside loopback (behind a TLS-terminating proxy, on a WireGuard or Tailscale network)
    #[arg(
        long,
        env = "CCRELAY_INSECURE_PLAINTEXT",
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub insecure_plaintext: bool,

    /// Arguments passed to every agent process after the flags ccrelay adds
    #[arg(last = true, value_name = "EXTRA_AGENT_ARGS")]
    pub extra_agent_args: Vec<String>,
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
