//! The settings of `ccrelay serve`, declared once: for each its long option (also
//! its TOML key), env var, value kind and bounds, default, and help text. The
//! binary builds its command line from [`SETTINGS`], [`super::Config::resolve`]
//! reads every value through it, and the options table in docs/operations.md is
//! [`docs_table`] (a test compares them).
//!
//! Plain data: nothing here knows the command-line parser.

/// What one value of a setting must look like; `resolve` parses it by this kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// Free text, checked by the setting's own rule in `resolve`.
    Text,
    /// A file or directory; a leading `~` is the home directory.
    Path,
    /// A socket address: `IP:PORT`, `[IPv6]:PORT` or `localhost:PORT`.
    Addr,
    /// Seconds, fractions allowed, more than 0 and at most a week.
    Secs,
    /// Seconds as [`ValueKind::Secs`], but 0 is allowed.
    SecsOrZero,
    /// A whole number in `min..=max` (`_` separators allowed).
    Count { min: u64, max: u64 },
    /// One of these names (case-insensitive), each with what it means.
    Choice(&'static [(&'static str, &'static str)]),
}

/// How a setting is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `--name VALUE`.
    One(ValueKind),
    /// `--name` alone; the env var and the file take true/false.
    Switch,
    /// `--name VALUE`, repeatable; the env var and a file string take a
    /// comma-separated list, the file an array of strings too.
    List,
    /// What follows `--` on the command line (an array in the file).
    Trailing,
}

/// A setting's default, as `--help` and the docs state it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    /// No value: the feature is off or the setting is absent.
    Unset,
    /// This value, parsed like a given one.
    Value(&'static str),
    /// Computed when the settings are resolved (from other settings or the
    /// environment); the text says how.
    Computed(&'static str),
}

/// One setting of `ccrelay serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The long option without `--`, and the TOML key (the name errors print).
    pub name: &'static str,
    /// Other TOML keys for the same setting (plural spellings of lists).
    pub file_aliases: &'static [&'static str],
    /// Whether the TOML file may hold it (not `--config` itself).
    pub in_file: bool,
    pub env: Option<&'static str>,
    /// The placeholder of its value in `--help` and the docs (`ADDR`, `SECS`, ...).
    pub value_name: &'static str,
    pub shape: Shape,
    pub default: DefaultValue,
    pub help: &'static str,
}

impl Setting {
    /// The help line: its text and, when there is one, `[default: ...]`.
    pub fn help_line(&self) -> String {
        match self.default {
            DefaultValue::Value(v) | DefaultValue::Computed(v) => {
                format!("{} [default: {v}]", self.help)
            }
            DefaultValue::Unset => self.help.to_string(),
        }
    }

    /// How the setting is written on the command line: `--listen ADDR`,
    /// `--tls-self-signed`, `-- EXTRA_AGENT_ARGS...`.
    pub fn usage(&self) -> String {
        match self.shape {
            Shape::Switch => format!("--{}", self.name),
            Shape::Trailing => format!("-- {}...", self.value_name),
            Shape::One(_) | Shape::List => format!("--{} {}", self.name, self.value_name),
        }
    }

    /// Its row in the options table of docs/operations.md.
    pub fn docs_row(&self) -> String {
        let env = match (self.env, self.shape) {
            (Some(env), Shape::List) => format!("`{env}` (comma-separated)"),
            (Some(env), _) => format!("`{env}`"),
            (None, Shape::Trailing) => "`agent-args` in the file only".to_string(),
            (None, _) => "none".to_string(),
        };
        let default = match (self.default, self.shape) {
            (DefaultValue::Value(v), _) => format!("`{v}`"),
            (DefaultValue::Computed(text), _) => text.to_string(),
            (DefaultValue::Unset, Shape::Switch) => "off".to_string(),
            (DefaultValue::Unset, _) => "none".to_string(),
        };
        let mut meaning = self.help.replace('|', "\\|");
        if let Shape::One(ValueKind::Choice(choices)) = self.shape {
            let names: Vec<String> = choices.iter().map(|(n, _)| format!("`{n}`")).collect();
            meaning.push_str(&format!(" ({})", names.join(", ")));
        }
        format!(
            "| `{}` | {env} | {default} | {meaning} |",
            self.usage().replace('|', "\\|")
        )
    }

    /// Whether `key` names this setting in the TOML file.
    pub fn has_file_key(&self, key: &str) -> bool {
        self.in_file && (self.name == key || self.file_aliases.contains(&key))
    }
}

const fn one(
    name: &'static str,
    env: &'static str,
    value_name: &'static str,
    kind: ValueKind,
    default: DefaultValue,
    help: &'static str,
) -> Setting {
    Setting {
        name,
        file_aliases: &[],
        in_file: true,
        env: Some(env),
        value_name,
        shape: Shape::One(kind),
        default,
        help,
    }
}

const fn switch(name: &'static str, env: &'static str, help: &'static str) -> Setting {
    Setting {
        name,
        file_aliases: &[],
        in_file: true,
        env: Some(env),
        value_name: "",
        shape: Shape::Switch,
        default: DefaultValue::Unset,
        help,
    }
}

const fn list(
    name: &'static str,
    file_aliases: &'static [&'static str],
    env: &'static str,
    value_name: &'static str,
    default: DefaultValue,
    help: &'static str,
) -> Setting {
    Setting {
        name,
        file_aliases,
        in_file: true,
        env: Some(env),
        value_name,
        shape: Shape::List,
        default,
        help,
    }
}

use DefaultValue::{Computed, Unset, Value as Default};
use ValueKind::{Addr, Count, Path, Secs, SecsOrZero, Text};

pub const LISTEN: Setting = one(
    "listen",
    "CCRELAY_LISTEN",
    "ADDR",
    Addr,
    Default("127.0.0.1:7878"),
    "WebSocket + HTTP listen address (port 0 picks a free port)",
);
pub const AUTHORIZED_KEYS: Setting = one(
    "authorized-keys",
    "CCRELAY_AUTHORIZED_KEYS",
    "PATH",
    Path,
    Computed("~/.ssh/authorized_keys"),
    "OpenSSH authorized_keys file of `owner` keys",
);
pub const VIEWER_KEYS: Setting = one(
    "viewer-keys",
    "CCRELAY_VIEWER_KEYS",
    "PATH",
    Path,
    Unset,
    "authorized_keys-format file of read-only `viewer` keys",
);
pub const AGENT_CMD: Setting = one(
    "agent-cmd",
    "CCRELAY_AGENT_CMD",
    "PATH",
    Path,
    Default("claude"),
    "The Claude Code executable, or any program speaking its stream-json protocol",
);
pub const WORKDIR: Setting = one(
    "workdir",
    "CCRELAY_WORKDIR",
    "DIR",
    Path,
    Computed("current directory"),
    "Working directory of the `default` session",
);
pub const DATA_DIR: Setting = one(
    "data-dir",
    "CCRELAY_DATA_DIR",
    "DIR",
    Path,
    Computed("$XDG_STATE_HOME/ccrelay, else ~/.local/state/ccrelay"),
    "Journals, audit log and metadata",
);
pub const MAX_CONNECTIONS: Setting = one(
    "max-connections",
    "CCRELAY_MAX_CONNECTIONS",
    "N",
    Count {
        min: 1,
        max: 1_000_000,
    },
    Default("4096"),
    "Open connections from their TCP accept on: WebSocket (authenticated or not) and plain HTTP",
);
pub const MAX_HTTP_PER_ADDRESS: Setting = one(
    "max-http-per-address",
    "CCRELAY_MAX_HTTP_PER_ADDRESS",
    "N",
    Count {
        min: 1,
        max: 1_000_000,
    },
    Default("32"),
    "Plain HTTP connections (page, assets, health, metrics) one address may hold; more get HTTP 429",
);
pub const IPV6_PREFIX_LEN: Setting = one(
    "ipv6-prefix-len",
    "CCRELAY_IPV6_PREFIX_LEN",
    "N",
    Count { min: 1, max: 128 },
    Default("64"),
    "Global IPv6 addresses (2000::/3) count as one address per prefix of this many bits in per-address limits; other IPv6 addresses count one by one",
);
pub const AUTH_TIMEOUT: Setting = one(
    "auth-timeout",
    "CCRELAY_AUTH_TIMEOUT",
    "SECS",
    Secs,
    Default("10"),
    "Seconds a client has to answer the authentication challenge",
);
pub const PING_INTERVAL: Setting = one(
    "ping-interval",
    "CCRELAY_PING_INTERVAL",
    "SECS",
    Secs,
    Default("15"),
    "WebSocket ping period in seconds",
);
pub const IDLE_TIMEOUT: Setting = one(
    "idle-timeout",
    "CCRELAY_IDLE_TIMEOUT",
    "SECS",
    Secs,
    Default("45"),
    "Close a connection that sent nothing (not even a pong) for this many seconds",
);
pub const ALLOWED_ORIGIN: Setting = list(
    "allowed-origin",
    &["allowed-origins"],
    "CCRELAY_ALLOWED_ORIGINS",
    "ORIGIN",
    Unset,
    "Browser origin allowed to connect (repeatable; the env var takes a comma-separated list)",
);
pub const METRICS_LISTEN: Setting = one(
    "metrics-listen",
    "CCRELAY_METRICS_LISTEN",
    "ADDR",
    Addr,
    Computed("same as --listen"),
    "Where /metrics is served",
);
pub const LOG_LEVEL: Setting = one(
    "log-level",
    "CCRELAY_LOG_LEVEL",
    "LEVEL",
    Text,
    Default("info"),
    "Log filter: error, warn, info, debug, trace, or a tracing directive",
);
pub const LOG_FORMAT: Setting = one(
    "log-format",
    "CCRELAY_LOG_FORMAT",
    "FORMAT",
    ValueKind::Choice(crate::logging::LogFormat::CHOICES),
    Default("pretty"),
    "Log line format",
);
pub const PERMISSION_TIMEOUT: Setting = one(
    "permission-timeout",
    "CCRELAY_PERMISSION_TIMEOUT",
    "SECS",
    Secs,
    Computed("wait forever"),
    "Deny permission prompts nobody answered within this many seconds",
);
pub const AGENT_PROBE_INTERVAL: Setting = one(
    "agent-probe-interval",
    "CCRELAY_AGENT_PROBE_INTERVAL",
    "SECS",
    Secs,
    Default("30"),
    "Probe an agent that has been silent this many seconds",
);
pub const AGENT_PROBE_TIMEOUT: Setting = one(
    "agent-probe-timeout",
    "CCRELAY_AGENT_PROBE_TIMEOUT",
    "SECS",
    Secs,
    Default("20"),
    "An agent that does not answer a probe within this many seconds is hung and restarted",
);
pub const AGENT_MAX_RESTARTS: Setting = one(
    "agent-max-restarts",
    "CCRELAY_AGENT_MAX_RESTARTS",
    "N",
    Count {
        min: 0,
        max: 10_000,
    },
    Default("5"),
    "More unexpected agent exits than this within the restart window mark the session failed",
);
pub const AGENT_RESTART_WINDOW: Setting = one(
    "agent-restart-window",
    "CCRELAY_AGENT_RESTART_WINDOW",
    "SECS",
    Secs,
    Default("300"),
    "The window, in seconds, for --agent-max-restarts",
);
pub const MAX_FRAMES_PER_SEC: Setting = one(
    "max-frames-per-sec",
    "CCRELAY_MAX_FRAMES_PER_SEC",
    "N",
    Count {
        min: 1,
        max: 1_000_000,
    },
    Default("100"),
    "Per-connection inbound frame rate; bursts of twice this are allowed",
);
pub const CONFIG: Setting = Setting {
    in_file: false,
    ..one(
        "config",
        "CCRELAY_CONFIG",
        "PATH",
        Path,
        Unset,
        "TOML file with the same settings, keys spelled like the long options (lists as arrays or comma-separated strings)",
    )
};
pub const REQUIRE_CHANNEL_BINDING: Setting = switch(
    "require-channel-binding",
    "CCRELAY_REQUIRE_CHANNEL_BINDING",
    "Over TLS, refuse an authentication that is not bound to the connection (tls-exporter)",
);
pub const PAIR_TIMEOUT: Setting = one(
    "pair-timeout",
    "CCRELAY_PAIR_TIMEOUT",
    "SECS",
    Secs,
    Default("120"),
    "Seconds a pairing request waits for an owner's answer",
);
pub const NOTIFY_AFTER: Setting = one(
    "notify-after",
    "CCRELAY_NOTIFY_AFTER",
    "SECS",
    SecsOrZero,
    Default("10"),
    "Notify a permission request nobody answered after this many seconds; 0 = at once",
);
pub const NOTIFY_WEBHOOK: Setting = one(
    "notify-webhook",
    "CCRELAY_NOTIFY_WEBHOOK",
    "URL",
    Text,
    Unset,
    "Also post notifications as JSON to this URL (http:// or https://)",
);
pub const NOTIFY_NTFY: Setting = one(
    "notify-ntfy",
    "CCRELAY_NOTIFY_NTFY",
    "URL",
    Text,
    Unset,
    "Also post notifications to this ntfy topic URL (https://ntfy.example/TOPIC)",
);
pub const PUBLIC_URL: Setting = one(
    "public-url",
    "CCRELAY_PUBLIC_URL",
    "URL",
    Text,
    Unset,
    "How devices reach this server (https://host:port), for links and answer buttons in notifications",
);
pub const SERVER_NAME: Setting = list(
    "server-name",
    &["server-names"],
    "CCRELAY_SERVER_NAMES",
    "HOST[:PORT]",
    Unset,
    "A name devices use to reach this server, HOST[:PORT] (port: the scheme's default when left out); one of this server's names for origin binding (repeatable)",
);
pub const ALLOW_UNBOUND_AUTH: Setting = list(
    "allow-unbound-auth",
    &[],
    "CCRELAY_ALLOW_UNBOUND_AUTH",
    "FINGERPRINT",
    Unset,
    "A key (SHA256:... fingerprint) that may still sign the bare challenge, without origin binding; each such login is logged as a warning (repeatable)",
);
pub const NOTIFY_SINK_ALLOW: Setting = switch(
    "notify-sink-allow",
    "CCRELAY_NOTIFY_SINK_ALLOW",
    "Give webhook and ntfy notifications `allow` actions too, for requests shown whole; without it they carry only `deny` (their tokens belong to no key, and a topic may be read by others)",
);
pub const VIEWER_FILES: Setting = switch(
    "viewer-files",
    "CCRELAY_VIEWER_FILES",
    "Let viewers use the workspace requests (files.status, files.diff, files.list, files.read; docs/protocol.md §11); without it they are owners only",
);
pub const PAIRED_KEYS: Setting = one(
    "paired-keys",
    "CCRELAY_PAIRED_KEYS",
    "PATH",
    Path,
    Computed("<data-dir>/paired_keys"),
    "Owner keys added by pairing or `ccrelay keys add`",
);
pub const PAIRED_VIEWERS: Setting = one(
    "paired-viewers",
    "CCRELAY_PAIRED_VIEWERS",
    "PATH",
    Path,
    Computed("<data-dir>/paired_viewers"),
    "Viewer keys added by pairing or `ccrelay keys add --viewer`",
);
pub const PUSH_ALLOW_INSECURE_ENDPOINTS: Setting = switch(
    "push-allow-insecure-endpoints",
    "CCRELAY_PUSH_ALLOW_INSECURE_ENDPOINTS",
    "Accept http:// and loopback Web Push endpoints (tests only; docs/protocol.md §9.1.2)",
);
pub const PUSH_SUBJECT: Setting = one(
    "push-subject",
    "CCRELAY_PUSH_SUBJECT",
    "URI",
    Text,
    Computed("mailto:ccrelay@localhost"),
    "Contact in the Web Push VAPID signature (`sub`): a mailto: address or an https:// URL where the server's operator can be reached; Apple's push service refuses an unresolvable one",
);
// Settings of the project's choosing (the contract leaves them open: docs/protocol.md §8.1).
pub const SERVER_ID: Setting = one(
    "server-id",
    "CCRELAY_SERVER_ID",
    "ID",
    Text,
    Computed("generated once and kept in the data dir"),
    "Stable server id shown in challenges",
);
pub const MAX_FRAME_BYTES: Setting = one(
    "max-frame-bytes",
    "CCRELAY_MAX_FRAME_BYTES",
    "BYTES",
    Count {
        min: crate::ws::gate::PRE_AUTH_MAX_FRAME_BYTES as u64,
        max: 256 * 1024 * 1024,
    },
    Default("4194304"),
    "Largest inbound frame after authentication, in bytes",
);
pub const MAX_PROMPT_BYTES: Setting = one(
    "max-prompt-bytes",
    "CCRELAY_MAX_PROMPT_BYTES",
    "BYTES",
    Count {
        min: 1,
        max: 256 * 1024 * 1024,
    },
    Default("1048576"),
    "Largest prompt content, in bytes of JSON",
);
pub const PROMPT_QUEUE: Setting = one(
    "prompt-queue",
    "CCRELAY_PROMPT_QUEUE",
    "N",
    Count {
        min: 1,
        max: 1_000_000,
    },
    Default("256"),
    "Prompts that may wait behind a running turn, per session",
);
pub const CLIENT_QUEUE: Setting = one(
    "client-queue",
    "CCRELAY_CLIENT_QUEUE",
    "N",
    Count {
        min: 16,
        max: 10_000_000,
    },
    Default("8192"),
    "Frames that may wait for a slow client before it is closed with 4008",
);
pub const TAIL_EVENTS: Setting = one(
    "tail-events",
    "CCRELAY_TAIL_EVENTS",
    "N",
    Count {
        min: 1,
        max: 100_000_000,
    },
    Default("20000"),
    "Events kept in memory per session for replays",
);
pub const TAIL_BYTES: Setting = one(
    "tail-bytes",
    "CCRELAY_TAIL_BYTES",
    "BYTES",
    Count {
        min: 1024,
        max: 64 * 1024 * 1024 * 1024,
    },
    Default("67108864"),
    "Bytes of events kept in memory per session for replays",
);
pub const JOURNAL_FSYNC: Setting = one(
    "journal-fsync",
    "CCRELAY_JOURNAL_FSYNC",
    "POLICY",
    ValueKind::Choice(crate::journal::FsyncPolicy::CHOICES),
    Default("always"),
    "When the journal is fsynced: always (before events are sent), interval (each second), never",
);
pub const JOURNAL_SEGMENT_BYTES: Setting = one(
    "journal-segment-bytes",
    "CCRELAY_JOURNAL_SEGMENT_BYTES",
    "BYTES",
    Count {
        min: 4096,
        max: 64 * 1024 * 1024 * 1024,
    },
    Default("16777216"),
    "Journal segment size before a new segment is started, in bytes",
);
pub const JOURNAL_MAX_BYTES: Setting = one(
    "journal-max-bytes",
    "CCRELAY_JOURNAL_MAX_BYTES",
    "BYTES",
    Count {
        min: 4096,
        max: u64::MAX / 2,
    },
    Default("1073741824"),
    "Journal bytes kept per session; the oldest segments are removed beyond it",
);
pub const MEMORY_LIMIT: Setting = one(
    "memory-limit",
    "CCRELAY_MEMORY_LIMIT",
    "BYTES",
    Count {
        min: crate::guard::MIN_MEMORY_LIMIT,
        max: u64::MAX / 2,
    },
    Computed("1073741824, or twice the event tails of all sessions if that is more"),
    "Bytes the relay may buffer in client queues and event tails; from 80 % new connections get HTTP 503, from 95 % the slowest clients are closed with 1013",
);
pub const AUTH_FAILURES_PER_MIN: Setting = one(
    "auth-failures-per-min",
    "CCRELAY_AUTH_FAILURES_PER_MIN",
    "N",
    Count {
        min: 10,
        max: 1_000_000,
    },
    Default("30"),
    "Failed authentications allowed per address per minute before HTTP 429",
);
pub const AGENT_STOP_GRACE: Setting = one(
    "agent-stop-grace",
    "CCRELAY_AGENT_STOP_GRACE",
    "SECS",
    Secs,
    Default("5"),
    "Seconds an agent gets between SIGTERM and SIGKILL when it is stopped",
);
pub const SHUTDOWN_GRACE: Setting = one(
    "shutdown-grace",
    "CCRELAY_SHUTDOWN_GRACE",
    "SECS",
    Secs,
    Default("5"),
    "Seconds shutdown may take before remaining connections are dropped",
);
pub const TRUSTED_PROXY: Setting = list(
    "trusted-proxy",
    &["trusted-proxies"],
    "CCRELAY_TRUSTED_PROXIES",
    "CIDR",
    Unset,
    "Reverse proxy network whose X-Forwarded-For is believed, as a CIDR (repeatable; the env var takes a comma-separated list)",
);
pub const SESSION: Setting = list(
    "session",
    &["sessions"],
    "CCRELAY_SESSIONS",
    "NAME=DIR",
    Unset,
    "Extra session besides `default`, as NAME=DIR (repeatable)",
);
pub const SESSION_ROOT: Setting = list(
    "session-root",
    &["session-roots"],
    "CCRELAY_SESSION_ROOTS",
    "DIR",
    Computed("the `default` session's workdir"),
    "Directory under which clients may create sessions and list directories and conversations (repeatable; the env var takes a comma-separated list)",
);
pub const MAX_SESSIONS: Setting = one(
    "max-sessions",
    "CCRELAY_MAX_SESSIONS",
    "N",
    Count {
        min: 1,
        max: 10_000,
    },
    Default("32"),
    "Open sessions at most, configured ones included; more creates are refused",
);
pub const CLOSED_RETENTION: Setting = one(
    "closed-retention",
    "CCRELAY_CLOSED_RETENTION",
    "SECS",
    SecsOrZero,
    Default("604800"),
    "Seconds a closed session's journal is kept before it is deleted",
);
pub const MAX_AGENTS: Setting = one(
    "max-agents",
    "CCRELAY_MAX_AGENTS",
    "N",
    Count {
        min: 1,
        max: 10_000,
    },
    Default("8"),
    "Agent processes running at once, all sessions together; the longest-idle one sleeps when another must start",
);
pub const AGENT_IDLE_STOP: Setting = one(
    "agent-idle-stop",
    "CCRELAY_AGENT_IDLE_STOP",
    "SECS",
    SecsOrZero,
    Default("1800"),
    "Stop an agent idle this many seconds (0 = never); the session sleeps until its next prompt",
);
pub const TLS_CERT: Setting = one(
    "tls-cert",
    "CCRELAY_TLS_CERT",
    "PATH",
    Path,
    Unset,
    "PEM certificate chain: serve TLS only (with --tls-key); re-read on SIGHUP and when it changes",
);
pub const TLS_KEY: Setting = one(
    "tls-key",
    "CCRELAY_TLS_KEY",
    "PATH",
    Path,
    Unset,
    "PEM private key of --tls-cert",
);
pub const TLS_SELF_SIGNED: Setting = switch(
    "tls-self-signed",
    "CCRELAY_TLS_SELF_SIGNED",
    "Serve TLS with a certificate made once and kept in the data dir (its fingerprint is logged)",
);
pub const TLS_NAME: Setting = list(
    "tls-name",
    &["tls-names"],
    "CCRELAY_TLS_NAMES",
    "NAME",
    Computed("localhost, 127.0.0.1, ::1 and the host name"),
    "DNS name or IP address of the self-signed certificate (repeatable)",
);
pub const INSECURE_PLAINTEXT: Setting = switch(
    "insecure-plaintext",
    "CCRELAY_INSECURE_PLAINTEXT",
    "Allow listening without TLS outside loopback (behind a TLS-terminating proxy, on a WireGuard or Tailscale network)",
);
pub const ALLOW_BYPASS_PERMISSIONS: Setting = switch(
    "allow-bypass-permissions",
    "CCRELAY_ALLOW_BYPASS_PERMISSIONS",
    "Let owners switch a session to a mode that skips permission prompts (bypassPermissions, auto); agents start with the CLI's flag that permits it",
);
pub const AGENT_ARGS: Setting = Setting {
    name: "agent-args",
    file_aliases: &[],
    in_file: true,
    env: None,
    value_name: "EXTRA_AGENT_ARGS",
    shape: Shape::Trailing,
    default: Unset,
    help: "Arguments passed to every agent process after the flags ccrelay adds",
};

/// Every setting of `ccrelay serve`, in the order `--help` and the docs list them.
pub const SETTINGS: &[&Setting] = &[
    &LISTEN,
    &AUTHORIZED_KEYS,
    &VIEWER_KEYS,
    &AGENT_CMD,
    &WORKDIR,
    &DATA_DIR,
    &MAX_CONNECTIONS,
    &MAX_HTTP_PER_ADDRESS,
    &IPV6_PREFIX_LEN,
    &AUTH_TIMEOUT,
    &PING_INTERVAL,
    &IDLE_TIMEOUT,
    &ALLOWED_ORIGIN,
    &METRICS_LISTEN,
    &LOG_LEVEL,
    &LOG_FORMAT,
    &PERMISSION_TIMEOUT,
    &AGENT_PROBE_INTERVAL,
    &AGENT_PROBE_TIMEOUT,
    &AGENT_MAX_RESTARTS,
    &AGENT_RESTART_WINDOW,
    &MAX_FRAMES_PER_SEC,
    &CONFIG,
    &REQUIRE_CHANNEL_BINDING,
    &PAIR_TIMEOUT,
    &NOTIFY_AFTER,
    &NOTIFY_WEBHOOK,
    &NOTIFY_NTFY,
    &PUBLIC_URL,
    &SERVER_NAME,
    &ALLOW_UNBOUND_AUTH,
    &NOTIFY_SINK_ALLOW,
    &VIEWER_FILES,
    &PAIRED_KEYS,
    &PAIRED_VIEWERS,
    &PUSH_ALLOW_INSECURE_ENDPOINTS,
    &PUSH_SUBJECT,
    &SERVER_ID,
    &MAX_FRAME_BYTES,
    &MAX_PROMPT_BYTES,
    &PROMPT_QUEUE,
    &CLIENT_QUEUE,
    &TAIL_EVENTS,
    &TAIL_BYTES,
    &JOURNAL_FSYNC,
    &JOURNAL_SEGMENT_BYTES,
    &JOURNAL_MAX_BYTES,
    &MEMORY_LIMIT,
    &AUTH_FAILURES_PER_MIN,
    &AGENT_STOP_GRACE,
    &SHUTDOWN_GRACE,
    &TRUSTED_PROXY,
    &SESSION,
    &MAX_AGENTS,
    &AGENT_IDLE_STOP,
    &SESSION_ROOT,
    &MAX_SESSIONS,
    &CLOSED_RETENTION,
    &TLS_CERT,
    &TLS_KEY,
    &TLS_SELF_SIGNED,
    &TLS_NAME,
    &INSECURE_PLAINTEXT,
    &ALLOW_BYPASS_PERMISSIONS,
    &AGENT_ARGS,
];

/// The setting named `name` (its long option / TOML key).
pub fn setting(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().copied().find(|s| s.name == name)
}

/// The options table of docs/operations.md: a header and one row per setting.
pub fn docs_table() -> String {
    let mut out =
        String::from("| option | env var | default | meaning |\n| --- | --- | --- | --- |\n");
    for s in SETTINGS {
        out.push_str(&s.docs_row());
        out.push('\n');
    }
    out
}
