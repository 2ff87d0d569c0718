//! Settings of `ccrelay serve`: merged from flags, env vars, the TOML file and
//! defaults (in that order of precedence), then validated.
//!
//! Owns: defaults, value parsing, validation and the error that names a bad
//! setting (exit code 2). Must not: open sockets, read key files or start
//! anything — a bad configuration starts nothing.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ValueEnum;

use crate::cli::{FsyncPolicy, LogFormat, ServeArgs};

/// A setting that could not be used. Printed as one line; the process exits 2.
#[derive(Debug, thiserror::Error)]
#[error("invalid value for --{setting}{origin}: {message}")]
pub struct ConfigError {
    /// The long option name, e.g. `max-connections`.
    pub setting: String,
    /// Where the bad value came from (empty for flags and env vars).
    pub origin: String,
    pub message: String,
}

impl ConfigError {
    fn new(setting: &str, message: impl Into<String>) -> Self {
        ConfigError {
            setting: setting.to_string(),
            origin: String::new(),
            message: message.into(),
        }
    }
}

/// A named session and its working directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    pub name: String,
    pub workdir: PathBuf,
}

/// How the agent process is run and supervised.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub cmd: PathBuf,
    pub extra_args: Vec<String>,
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
    pub max_restarts: u32,
    pub restart_window: Duration,
    pub stop_grace: Duration,
}

/// The journal's durability and size settings.
#[derive(Debug, Clone, Copy)]
pub struct JournalConfig {
    pub fsync: FsyncPolicy,
    pub segment_bytes: u64,
    pub max_bytes: u64,
}

/// Everything `ccrelay serve` needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    pub authorized_keys: PathBuf,
    pub viewer_keys: Option<PathBuf>,
    pub data_dir: PathBuf,
    pub server_id: Option<String>,
    pub sessions: Vec<SessionConfig>,
    pub agent: AgentConfig,
    pub journal: JournalConfig,
    pub max_connections: usize,
    pub auth_timeout: Duration,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    pub allowed_origins: Vec<String>,
    pub log_level: String,
    pub log_format: LogFormat,
    pub permission_timeout: Option<Duration>,
    pub max_frames_per_sec: u32,
    pub max_frame_bytes: usize,
    pub max_prompt_bytes: usize,
    pub prompt_queue: usize,
    pub client_queue: usize,
    pub tail_events: usize,
    pub tail_bytes: usize,
    /// Bytes buffered in client queues and event tails before the server degrades
    /// (see [`crate::guard`]).
    pub memory_limit: u64,
    pub auth_failures_per_min: u32,
    pub shutdown_grace: Duration,
    /// `--tls-cert`/`--tls-key` or `--tls-self-signed`: the listen address serves TLS only.
    pub tls: Option<crate::tls::TlsSource>,
    /// The names this server is reached by over TLS: `--tls-name` as given, or
    /// the self-signed certificate's default names (empty without TLS names).
    pub tls_names: Vec<String>,
    /// `--insecure-plaintext`: plaintext outside loopback was asked for.
    pub insecure_plaintext: bool,
    /// `--trusted-proxy`: peers in these networks report the client address in
    /// `X-Forwarded-For` (docs/protocol.md §1.2).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `--max-http-per-address`: plain HTTP connections one address may hold.
    pub max_http_per_address: u32,
    /// `--ipv6-prefix-len`: how global IPv6 addresses are grouped for per-address rules.
    pub address_grouping: crate::address::AddressGrouping,
    /// Refuse unbound authentication on connections that have a TLS exporter (§3).
    pub require_channel_binding: bool,
    /// How long a pairing request waits for an owner (§3).
    pub pair_timeout: Duration,
    /// Owner keys added by pairing / `ccrelay keys add`.
    pub paired_keys: PathBuf,
    /// Viewer keys added by pairing / `ccrelay keys add --viewer`.
    pub paired_viewers: PathBuf,
    /// `--notify-after`, `--notify-webhook`, `--notify-ntfy`, `--public-url` (§9).
    pub notify: crate::notify::NotifySettings,
    /// `--push-allow-insecure-endpoints`: `http://` and loopback push endpoints (tests, §9).
    pub push_allow_insecure_endpoints: bool,
    /// `--push-subject`: the VAPID `sub` contact (`mailto:` or `https:`), if given.
    pub push_subject: Option<String>,
    /// `--server-name`: names devices use to reach this server (docs/protocol.md,
    /// "This server's names").
    pub server_names: Vec<crate::names::ServerName>,
    /// `--allow-unbound-auth`: fingerprints of keys that may sign the bare challenge.
    pub allow_unbound_auth: Vec<String>,
}

/// Frames before authentication may be at most this large (docs/protocol.md §1.3: ≤ 16 KiB).
pub const PRE_AUTH_MAX_FRAME_BYTES: usize = 16 * 1024;

const DEFAULT_LISTEN: &str = "127.0.0.1:7878";
const MAX_SECS: f64 = 7.0 * 24.0 * 3600.0;

/// Every key the TOML file may hold (the long option names).
const FILE_KEYS: &[&str] = &[
    "listen",
    "authorized-keys",
    "viewer-keys",
    "agent-cmd",
    "workdir",
    "data-dir",
    "max-connections",
    "max-http-per-address",
    "ipv6-prefix-len",
    "auth-timeout",
    "ping-interval",
    "idle-timeout",
    "allowed-origin",
    "allowed-origins",
    "trusted-proxy",
    "trusted-proxies",
    "metrics-listen",
    "log-level",
    "log-format",
    "permission-timeout",
    "agent-probe-interval",
    "agent-probe-timeout",
    "agent-max-restarts",
    "agent-restart-window",
    "max-frames-per-sec",
    "server-id",
    "max-frame-bytes",
    "max-prompt-bytes",
    "prompt-queue",
    "client-queue",
    "tail-events",
    "tail-bytes",
    "memory-limit",
    "journal-fsync",
    "journal-segment-bytes",
    "journal-max-bytes",
    "auth-failures-per-min",
    "agent-stop-grace",
    "shutdown-grace",
    "session",
    "sessions",
    "agent-args",
    "tls-cert",
    "tls-key",
    "tls-self-signed",
    "tls-name",
    "tls-names",
    "insecure-plaintext",
    "require-channel-binding",
    "pair-timeout",
    "paired-keys",
    "paired-viewers",
    "notify-after",
    "notify-webhook",
    "notify-ntfy",
    "notify-sink-allow",
    "public-url",
    "push-allow-insecure-endpoints",
    "push-subject",
    "server-name",
    "server-names",
    "allow-unbound-auth",
];

/// The TOML file, flattened to strings (lists kept as lists) so that file values
/// go through the same parsers as flag values.
#[derive(Debug, Default)]
struct FileValues {
    path: PathBuf,
    table: toml::Table,
}

impl FileValues {
    fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new("config", format!("cannot read {}: {e}", path.display()))
        })?;
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            ConfigError::new(
                "config",
                format!("{} is not valid TOML: {}", path.display(), e.message()),
            )
        })?;
        if let Some(unknown) = table.keys().find(|k| !FILE_KEYS.contains(&k.as_str())) {
            return Err(ConfigError::new(
                "config",
                format!("{}: unknown setting `{unknown}`", path.display()),
            ));
        }
        Ok(FileValues {
            path: path.to_path_buf(),
            table,
        })
    }

    fn origin(&self) -> String {
        format!(" (in {})", self.path.display())
    }

    fn scalar(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(toml::Value::Integer(i)) => Ok(Some(i.to_string())),
            Some(toml::Value::Float(f)) => Ok(Some(f.to_string())),
            Some(toml::Value::Boolean(b)) => Ok(Some(b.to_string())),
            Some(_) => Err(ConfigError {
                setting: key.to_string(),
                origin: self.origin(),
                message: "must be a string or a number".into(),
            }),
        }
    }

    fn list(&self, keys: &[&str]) -> Result<Option<Vec<String>>, ConfigError> {
        for key in keys {
            match self.table.get(*key) {
                None => continue,
                Some(toml::Value::String(s)) => {
                    return Ok(Some(s.split(',').map(|p| p.trim().to_string()).collect()));
                }
                Some(toml::Value::Array(items)) => {
                    let mut out = Vec::with_capacity(items.len());
                    for item in items {
                        match item {
                            toml::Value::String(s) => out.push(s.clone()),
                            _ => {
                                return Err(ConfigError {
                                    setting: key.to_string(),
                                    origin: self.origin(),
                                    message: "must be a list of strings".into(),
                                });
                            }
                        }
                    }
                    return Ok(Some(out));
                }
                Some(_) => {
                    return Err(ConfigError {
                        setting: key.to_string(),
                        origin: self.origin(),
                        message: "must be a string or a list of strings".into(),
                    });
                }
            }
        }
        Ok(None)
    }
}

/// One setting's raw value and where it came from, for error messages.
struct Raw {
    value: String,
    origin: String,
}

/// Resolves one setting at a time: flag/env first, then the file.
struct Resolver<'a> {
    file: &'a FileValues,
}

impl Resolver<'_> {
    fn raw(&self, key: &str, cli: Option<&String>) -> Result<Option<Raw>, ConfigError> {
        if let Some(v) = cli {
            return Ok(Some(Raw {
                value: v.clone(),
                origin: String::new(),
            }));
        }
        Ok(self.file.scalar(key)?.map(|value| Raw {
            value,
            origin: self.file.origin(),
        }))
    }

    fn parse<T>(
        &self,
        key: &str,
        cli: Option<&String>,
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match self.raw(key, cli)? {
            None => Ok(default),
            Some(raw) => parse(raw.value.trim()).map_err(|message| ConfigError {
                setting: key.to_string(),
                origin: raw.origin,
                message: format!("{message}, got {:?}", raw.value),
            }),
        }
    }

    fn optional<T>(
        &self,
        key: &str,
        cli: Option<&String>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        self.parse(key, cli, None, |s| parse(s).map(Some))
    }

    fn path(&self, key: &str, cli: Option<&PathBuf>) -> Result<Option<PathBuf>, ConfigError> {
        if let Some(p) = cli {
            return Ok(Some(expand_home(p)));
        }
        Ok(self.file.scalar(key)?.map(|s| expand_home(Path::new(&s))))
    }
}

fn expand_home(p: &Path) -> PathBuf {
    if let Ok(rest) = p.strip_prefix("~")
        && let Some(home) = home_dir()
    {
        return home.join(rest);
    }
    p.to_path_buf()
}

/// `$HOME`, if set and non-empty.
pub fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// Parse a listen address: `IP:PORT`, `[IPv6]:PORT` or `localhost:PORT`.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        let port: u16 = port
            .parse()
            .map_err(|_| "the port must be a number from 0 to 65535".to_string())?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    // Host names other than localhost are resolved once here; a listen address
    // that needs DNS is unusual, but an operator's /etc/hosts entry is honoured.
    match s.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| "the address resolves to nothing".to_string()),
        Err(_) => Err("expected an address like 127.0.0.1:7878 or [::1]:7878".into()),
    }
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| "expected a number of seconds (fractions allowed)".to_string())?;
    if !v.is_finite() || v <= 0.0 || v > MAX_SECS {
        return Err(format!(
            "must be more than 0 and at most {MAX_SECS} seconds"
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

fn count_in(lo: u64, hi: u64) -> impl Fn(&str) -> Result<u64, String> {
    move |s: &str| {
        let v: u64 = s
            .replace('_', "")
            .parse()
            .map_err(|_| format!("expected a whole number from {lo} to {hi}"))?;
        if v < lo || v > hi {
            return Err(format!("must be a whole number from {lo} to {hi}"));
        }
        Ok(v)
    }
}

fn parse_enum<T: ValueEnum>(s: &str) -> Result<T, String> {
    T::from_str(s, true).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
            .collect();
        format!("expected one of {}", names.join(", "))
    })
}

fn valid_session_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// The data dir when none is given: `$XDG_STATE_HOME/ccrelay`, else `~/.local/state/ccrelay`.
pub fn default_data_dir() -> PathBuf {
    if let Some(state) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(state).join("ccrelay");
    }
    home_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".local/state/ccrelay")
}

impl Config {
    /// Merge flags/env (already merged by clap), the TOML file and defaults, and validate.
    pub fn resolve(args: &ServeArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => FileValues::load(path)?,
            None => FileValues::default(),
        };
        let r = Resolver { file: &file };

        let listen = r.parse(
            "listen",
            args.listen.as_ref(),
            parse_addr(DEFAULT_LISTEN).map_err(|e| ConfigError::new("listen", e))?,
            parse_addr,
        )?;
        let metrics_listen =
            r.optional("metrics-listen", args.metrics_listen.as_ref(), parse_addr)?;

        let authorized_keys = r
            .path("authorized-keys", args.authorized_keys.as_ref())?
            .or_else(|| home_dir().map(|h| h.join(".ssh/authorized_keys")))
            .ok_or_else(|| {
                ConfigError::new("authorized-keys", "no path given and $HOME is not set")
            })?;
        let viewer_keys = r.path("viewer-keys", args.viewer_keys.as_ref())?;
        let data_dir = r
            .path("data-dir", args.data_dir.as_ref())?
            .unwrap_or_else(default_data_dir);
        let workdir = match r.path("workdir", args.workdir.as_ref())? {
            Some(dir) => dir,
            None => std::env::current_dir()
                .map_err(|e| ConfigError::new("workdir", format!("no current directory: {e}")))?,
        };
        if !workdir.is_dir() {
            return Err(ConfigError::new(
                "workdir",
                format!("{} is not a directory", workdir.display()),
            ));
        }
        let mut sessions = vec![SessionConfig {
            name: crate::protocol::DEFAULT_SESSION.to_string(),
            workdir,
        }];
        let extra_sessions = match &args.sessions {
            Some(list) => Some(list.clone()),
            None => file.list(&["session", "sessions"])?,
        };
        for spec in extra_sessions.unwrap_or_default() {
            let (name, dir) = spec.split_once('=').ok_or_else(|| {
                ConfigError::new("session", format!("expected NAME=DIR, got {spec:?}"))
            })?;
            if !valid_session_name(name) {
                return Err(ConfigError::new(
                    "session",
                    format!("session names are 1-64 of A-Z a-z 0-9 - _ ., got {name:?}"),
                ));
            }
            if sessions.iter().any(|s| s.name == name) {
                return Err(ConfigError::new(
                    "session",
                    format!("session {name:?} is defined twice"),
                ));
            }
            let dir = expand_home(Path::new(dir));
            if !dir.is_dir() {
                return Err(ConfigError::new(
                    "session",
                    format!("{} (session {name:?}) is not a directory", dir.display()),
                ));
            }
            sessions.push(SessionConfig {
                name: name.to_string(),
                workdir: dir,
            });
        }

        let max_connections = r.parse(
            "max-connections",
            args.max_connections.as_ref(),
            4096,
            count_in(1, 1_000_000),
        )? as usize;
        let max_http_per_address = r.parse(
            "max-http-per-address",
            args.max_http_per_address.as_ref(),
            u64::from(crate::listen::preauth::DEFAULT_HTTP_PER_ADDRESS),
            count_in(1, 1_000_000),
        )? as u32;
        let address_grouping = r.parse(
            "ipv6-prefix-len",
            args.ipv6_prefix_len.as_ref(),
            crate::address::AddressGrouping::default(),
            |s| {
                count_in(1, 128)(s)
                    .map(|n| crate::address::AddressGrouping::new(n as u8).unwrap_or_default())
            },
        )?;
        let auth_timeout = r.parse(
            "auth-timeout",
            args.auth_timeout.as_ref(),
            Duration::from_secs(10),
            parse_secs,
        )?;
        let ping_interval = r.parse(
            "ping-interval",
            args.ping_interval.as_ref(),
            Duration::from_secs(15),
            parse_secs,
        )?;
        let idle_timeout = r.parse(
            "idle-timeout",
            args.idle_timeout.as_ref(),
            Duration::from_secs(45),
            parse_secs,
        )?;
        if idle_timeout <= ping_interval {
            return Err(ConfigError::new(
                "idle-timeout",
                format!(
                    "must be longer than --ping-interval ({} s), or healthy clients would be dropped",
                    ping_interval.as_secs_f64()
                ),
            ));
        }
        let allowed_origins = match &args.allowed_origins {
            Some(list) => list.clone(),
            None => file
                .list(&["allowed-origin", "allowed-origins"])?
                .unwrap_or_default(),
        };
        let allowed_origins: Vec<String> = allowed_origins
            .into_iter()
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect();
        for origin in &allowed_origins {
            if !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(ConfigError::new(
                    "allowed-origin",
                    format!("an origin looks like https://host[:port], got {origin:?}"),
                ));
            }
        }

        let server_names = resolve_server_names(&file, args)?;
        let allow_unbound_auth = resolve_allow_unbound(&file, args)?;

        let trusted_proxies = match &args.trusted_proxies {
            Some(list) => list.clone(),
            None => file
                .list(&["trusted-proxy", "trusted-proxies"])?
                .unwrap_or_default(),
        };
        let trusted_proxies = trusted_proxies
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(crate::listen::proxy::parse_network)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| ConfigError::new("trusted-proxy", message))?;

        let log_level = r.parse(
            "log-level",
            args.log_level.as_ref(),
            "info".to_string(),
            |s| {
                tracing_subscriber::EnvFilter::try_new(s)
                    .map(|_| s.to_string())
                    .map_err(|_| {
                        "expected error, warn, info, debug, trace or a tracing filter".into()
                    })
            },
        )?;
        let log_format = match args.log_format {
            Some(f) => f,
            None => r.parse("log-format", None, LogFormat::Pretty, parse_enum)?,
        };
        let permission_timeout = r.optional(
            "permission-timeout",
            args.permission_timeout.as_ref(),
            parse_secs,
        )?;

        let agent_cmd = r
            .path("agent-cmd", args.agent_cmd.as_ref())?
            .unwrap_or_else(|| PathBuf::from("claude"));
        let extra_args = if args.extra_agent_args.is_empty() {
            file.list(&["agent-args"])?.unwrap_or_default()
        } else {
            args.extra_agent_args.clone()
        };
        let agent = AgentConfig {
            cmd: agent_cmd,
            extra_args,
            probe_interval: r.parse(
                "agent-probe-interval",
                args.agent_probe_interval.as_ref(),
                Duration::from_secs(30),
                parse_secs,
            )?,
            probe_timeout: r.parse(
                "agent-probe-timeout",
                args.agent_probe_timeout.as_ref(),
                Duration::from_secs(20),
                parse_secs,
            )?,
            max_restarts: r.parse(
                "agent-max-restarts",
                args.agent_max_restarts.as_ref(),
                5,
                count_in(0, 10_000),
            )? as u32,
            restart_window: r.parse(
                "agent-restart-window",
                args.agent_restart_window.as_ref(),
                Duration::from_secs(300),
                parse_secs,
            )?,
            stop_grace: r.parse(
                "agent-stop-grace",
                args.agent_stop_grace.as_ref(),
                Duration::from_secs(5),
                parse_secs,
            )?,
        };

        let max_frames_per_sec = r.parse(
            "max-frames-per-sec",
            args.max_frames_per_sec.as_ref(),
            100,
            count_in(1, 1_000_000),
        )? as u32;
        let server_id = r.optional("server-id", args.server_id.as_ref(), |s| {
            if s.is_empty() || s.len() > 128 || s.chars().any(|c| c.is_whitespace() || c == ':') {
                Err("must be 1-128 characters without spaces or ':'".into())
            } else {
                Ok(s.to_string())
            }
        })?;
        let max_frame_bytes = r.parse(
            "max-frame-bytes",
            args.max_frame_bytes.as_ref(),
            4 * 1024 * 1024,
            count_in(PRE_AUTH_MAX_FRAME_BYTES as u64, 256 * 1024 * 1024),
        )? as usize;
        let max_prompt_bytes = r.parse(
            "max-prompt-bytes",
            args.max_prompt_bytes.as_ref(),
            1024 * 1024,
            count_in(1, 256 * 1024 * 1024),
        )? as usize;
        let prompt_queue = r.parse(
            "prompt-queue",
            args.prompt_queue.as_ref(),
            256,
            count_in(1, 1_000_000),
        )? as usize;
        let client_queue = r.parse(
            "client-queue",
            args.client_queue.as_ref(),
            8192,
            count_in(16, 10_000_000),
        )? as usize;
        let tail_events = r.parse(
            "tail-events",
            args.tail_events.as_ref(),
            20_000,
            count_in(1, 100_000_000),
        )? as usize;
        let tail_bytes = r.parse(
            "tail-bytes",
            args.tail_bytes.as_ref(),
            64 * 1024 * 1024,
            count_in(1024, 64 * 1024 * 1024 * 1024),
        )? as usize;
        // Full tails alone must leave at least half the budget to client queues,
        // or the server would refuse every connection once the tails fill up. The
        // default grows with the tails; a limit given explicitly must respect it.
        let all_tails = (tail_bytes as u64).saturating_mul(sessions.len() as u64);
        let memory_limit = match r.optional(
            "memory-limit",
            args.memory_limit.as_ref(),
            count_in(crate::guard::MIN_MEMORY_LIMIT, u64::MAX / 2),
        )? {
            Some(limit) if limit / 2 < all_tails => {
                return Err(ConfigError::new(
                    "memory-limit",
                    format!(
                        "{limit} bytes is less than twice the event tails ({} session(s) × --tail-bytes {tail_bytes}); raise it or lower --tail-bytes",
                        sessions.len()
                    ),
                ));
            }
            Some(limit) => limit,
            None => crate::guard::DEFAULT_MEMORY_LIMIT.max(all_tails.saturating_mul(2)),
        };
        let fsync = match args.journal_fsync {
            Some(f) => f,
            None => r.parse("journal-fsync", None, FsyncPolicy::Always, parse_enum)?,
        };
        let segment_bytes = r.parse(
            "journal-segment-bytes",
            args.journal_segment_bytes.as_ref(),
            16 * 1024 * 1024,
            count_in(4096, 64 * 1024 * 1024 * 1024),
        )?;
        let max_bytes = r.parse(
            "journal-max-bytes",
            args.journal_max_bytes.as_ref(),
            1024 * 1024 * 1024,
            count_in(4096, u64::MAX / 2),
        )?;
        if max_bytes < segment_bytes {
            return Err(ConfigError::new(
                "journal-max-bytes",
                "must be at least --journal-segment-bytes",
            ));
        }
        let auth_failures_per_min = r.parse(
            "auth-failures-per-min",
            args.auth_failures_per_min.as_ref(),
            30,
            count_in(10, 1_000_000),
        )? as u32;
        let shutdown_grace = r.parse(
            "shutdown-grace",
            args.shutdown_grace.as_ref(),
            Duration::from_secs(5),
            parse_secs,
        )?;
        let require_channel_binding = args.require_channel_binding
            || r.parse("require-channel-binding", None, false, parse_bool)?;
        let pair_timeout = r.parse(
            "pair-timeout",
            args.pair_timeout.as_ref(),
            Duration::from_secs(120),
            parse_secs,
        )?;
        let paired_keys = r
            .path("paired-keys", args.paired_keys.as_ref())?
            .unwrap_or_else(|| data_dir.join("paired_keys"));
        let paired_viewers = r
            .path("paired-viewers", args.paired_viewers.as_ref())?
            .unwrap_or_else(|| data_dir.join("paired_viewers"));

        let push_allow_insecure_endpoints = args.push_allow_insecure_endpoints
            || r.parse("push-allow-insecure-endpoints", None, false, parse_bool)?;
        let push_subject = r.optional(
            "push-subject",
            args.push_subject.as_ref(),
            parse_push_subject,
        )?;
        let (tls, tls_names, insecure_plaintext) = resolve_tls(&r, &file, args, listen)?;
        let notify = resolve_notify(&r, args, address_grouping)?;

        Ok(Config {
            listen,
            metrics_listen,
            authorized_keys,
            viewer_keys,
            data_dir,
            server_id,
            sessions,
            agent,
            journal: JournalConfig {
                fsync,
                segment_bytes,
                max_bytes,
            },
            max_connections,
            auth_timeout,
            ping_interval,
            idle_timeout,
            allowed_origins,
            log_level,
            log_format,
            permission_timeout,
            max_frames_per_sec,
            max_frame_bytes,
            max_prompt_bytes,
            prompt_queue,
            client_queue,
            tail_events,
            tail_bytes,
            memory_limit,
            auth_failures_per_min,
            shutdown_grace,
            tls,
            tls_names,
            insecure_plaintext,
            trusted_proxies,
            max_http_per_address,
            address_grouping,
            require_channel_binding,
            pair_timeout,
            paired_keys,
            paired_viewers,
            notify,
            push_allow_insecure_endpoints,
            push_subject,
            server_names,
            allow_unbound_auth,
        })
    }
}

/// `--server-name HOST[:PORT]` values (flags or env beat the file).
fn resolve_server_names(
    file: &FileValues,
    args: &ServeArgs,
) -> Result<Vec<crate::names::ServerName>, ConfigError> {
    let given = match &args.server_names {
        Some(list) => list.clone(),
        None => file
            .list(&["server-name", "server-names"])?
            .unwrap_or_default(),
    };
    given
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            crate::names::ServerName::parse(s).map_err(|e| {
                ConfigError::new(
                    "server-name",
                    format!(
                        "expected HOST or HOST:PORT (a DNS name or an IP address), got {s:?}: {e}"
                    ),
                )
            })
        })
        .collect()
}

/// `--allow-unbound-auth FINGERPRINT` values: `SHA256:` and 43 base64 characters,
/// as `ssh-keygen -l` prints them.
fn resolve_allow_unbound(file: &FileValues, args: &ServeArgs) -> Result<Vec<String>, ConfigError> {
    use base64::Engine as _;
    let given = match &args.allow_unbound_auth {
        Some(list) => list.clone(),
        None => file.list(&["allow-unbound-auth"])?.unwrap_or_default(),
    };
    let mut out = Vec::new();
    for fp in given.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let valid = fp.strip_prefix("SHA256:").is_some_and(|b64| {
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(b64)
                .is_ok_and(|d| d.len() == 32)
        });
        if !valid {
            return Err(ConfigError::new(
                "allow-unbound-auth",
                format!(
                    "expected a key fingerprint SHA256:... as `ssh-keygen -l` prints it, got {fp:?}"
                ),
            ));
        }
        out.push(fp.to_string());
    }
    Ok(out)
}

/// `--notify-after` (0 allowed: at once), the webhook and ntfy URLs, `--public-url`,
/// `--notify-sink-allow`; `address_grouping` (`--ipv6-prefix-len`) for the answer
/// endpoint's throttle.
fn resolve_notify(
    r: &Resolver<'_>,
    args: &ServeArgs,
    address_grouping: crate::address::AddressGrouping,
) -> Result<crate::notify::NotifySettings, ConfigError> {
    let after = r.parse(
        "notify-after",
        args.notify_after.as_ref(),
        Duration::from_secs(10),
        parse_secs_or_zero,
    )?;
    let webhook = r.optional(
        "notify-webhook",
        args.notify_webhook.as_ref(),
        parse_http_url,
    )?;
    let ntfy = r.optional("notify-ntfy", args.notify_ntfy.as_ref(), |s| {
        crate::notify::hooks::NtfyTarget::parse(&parse_http_url(s)?)
    })?;
    let public_url = r.optional("public-url", args.public_url.as_ref(), |s| {
        let url = parse_http_url(s)?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err("expected https://host[:port][/path], without ? or #".into());
        }
        Ok(url)
    })?;
    let sink_allow =
        args.notify_sink_allow || r.parse("notify-sink-allow", None, false, parse_bool)?;
    Ok(crate::notify::NotifySettings {
        after,
        webhook,
        ntfy,
        public_url,
        sink_allow,
        address_grouping,
    })
}

/// An absolute `http://` or `https://` URL with a host.
fn parse_http_url(s: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(s.trim()).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("expected an http:// or https:// URL".to_string());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".to_string());
    }
    if !url.username().is_empty() || url.password().is_some() {
        // It would be logged and kept in memory in the clear; use a token in the path.
        return Err("user:password@ in the URL is not supported".into());
    }
    Ok(url)
}

/// Seconds as [`parse_secs`], but 0 is allowed (`--notify-after 0`: at once).
fn parse_secs_or_zero(s: &str) -> Result<Duration, String> {
    if s.trim().parse::<f64>().is_ok_and(|v| v == 0.0) {
        return Ok(Duration::ZERO);
    }
    parse_secs(s).map_err(|_| format!("must be from 0 to {MAX_SECS} seconds"))
}

/// A VAPID contact (RFC 8292 §2.1): `mailto:user@domain` or an `https://` URL.
fn parse_push_subject(s: &str) -> Result<String, String> {
    let s = s.trim();
    let ok = s.len() <= 256
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && match s.strip_prefix("mailto:") {
            Some(addr) => addr
                .split_once('@')
                .is_some_and(|(user, domain)| !user.is_empty() && domain.contains('.')),
            None => url::Url::parse(s).is_ok_and(|u| u.scheme() == "https" && u.host().is_some()),
        };
    if ok {
        Ok(s.to_string())
    } else {
        Err(
            "expected mailto:user@domain.example or an https:// URL (at most 256 characters)"
                .into(),
        )
    }
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// The TLS settings (docs/protocol.md §1.4) and the plaintext-outside-loopback rule.
fn resolve_tls(
    r: &Resolver<'_>,
    file: &FileValues,
    args: &ServeArgs,
    listen: SocketAddr,
) -> Result<(Option<crate::tls::TlsSource>, Vec<String>, bool), ConfigError> {
    let cert = r.path("tls-cert", args.tls_cert.as_ref())?;
    let key = r.path("tls-key", args.tls_key.as_ref())?;
    let flag = |key: &str, given: bool| -> Result<bool, ConfigError> {
        if given {
            return Ok(true);
        }
        r.parse(key, None, false, parse_bool)
    };
    let self_signed = flag("tls-self-signed", args.tls_self_signed)?;
    let insecure_plaintext = flag("insecure-plaintext", args.insecure_plaintext)?;
    let names: Vec<String> = match &args.tls_names {
        Some(list) => list.clone(),
        None => file.list(&["tls-name", "tls-names"])?.unwrap_or_default(),
    }
    .into_iter()
    .map(|n| n.trim().to_string())
    .filter(|n| !n.is_empty())
    .collect();
    for name in &names {
        if !crate::tls::valid_name(name) {
            return Err(ConfigError::new(
                "tls-name",
                format!("expected a DNS name or an IP address, got {name:?}"),
            ));
        }
    }
    let tls = match (cert, key, self_signed) {
        (Some(_), _, true) | (_, Some(_), true) => {
            return Err(ConfigError::new(
                "tls-self-signed",
                "cannot be combined with --tls-cert/--tls-key; choose one",
            ));
        }
        (Some(cert), Some(key), false) => Some(crate::tls::TlsSource::Files { cert, key }),
        (Some(_), None, false) => {
            return Err(ConfigError::new(
                "tls-key",
                "--tls-cert needs --tls-key (the PEM private key of the certificate)",
            ));
        }
        (None, Some(_), false) => {
            return Err(ConfigError::new(
                "tls-cert",
                "--tls-key needs --tls-cert (the PEM certificate chain)",
            ));
        }
        (None, None, true) => Some(crate::tls::TlsSource::SelfSigned {
            names: if names.is_empty() {
                crate::tls::default_names()
            } else {
                names.clone()
            },
        }),
        (None, None, false) => None,
    };
    if tls.is_none() && !insecure_plaintext && !listen.ip().is_loopback() {
        return Err(ConfigError::new(
            "listen",
            format!(
                "{listen} is outside loopback and would be served without TLS; give --tls-cert/--tls-key or --tls-self-signed, or --insecure-plaintext when TLS is handled elsewhere (a TLS-terminating proxy, a WireGuard or Tailscale network)"
            ),
        ));
    }
    let names = match &tls {
        Some(crate::tls::TlsSource::SelfSigned { names }) => names.clone(),
        _ => names,
    };
    Ok((tls, names, insecure_plaintext))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServeArgs {
        ServeArgs {
            workdir: Some(std::env::temp_dir()),
            authorized_keys: Some(PathBuf::from("/dev/null")),
            ..ServeArgs::default()
        }
    }

    #[test]
    fn server_names_and_unbound_keys() {
        let c = Config::resolve(&args()).unwrap();
        assert!(c.server_names.is_empty() && c.allow_unbound_auth.is_empty());
        let fp = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
        let mut a = args();
        a.server_names = Some(vec!["Relay.Example.".into(), "127.0.0.1:9999".into()]);
        a.allow_unbound_auth = Some(vec![fp.into()]);
        let c = Config::resolve(&a).unwrap();
        assert_eq!(
            c.server_names,
            vec![
                crate::names::ServerName::parse("relay.example").unwrap(),
                crate::names::ServerName::parse("127.0.0.1:9999").unwrap()
            ]
        );
        assert_eq!(c.allow_unbound_auth, vec![fp.to_string()]);
        for bad in ["relay.example:x", "https://relay.example", "a b"] {
            let mut a = args();
            a.server_names = Some(vec![bad.into()]);
            let err = Config::resolve(&a).unwrap_err().to_string();
            assert!(err.contains("--server-name"), "{err}");
        }
        for bad in [
            "SHA256:short",
            "MD5:aa:bb",
            "uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s",
        ] {
            let mut a = args();
            a.allow_unbound_auth = Some(vec![bad.into()]);
            let err = Config::resolve(&a).unwrap_err().to_string();
            assert!(err.contains("--allow-unbound-auth"), "{err}");
        }
        // From the file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            format!("server-name = [\"relay.example:8443\"]\nallow-unbound-auth = [\"{fp}\"]\n"),
        )
        .unwrap();
        let mut a = args();
        a.config = Some(path);
        let c = Config::resolve(&a).unwrap();
        assert_eq!(c.server_names[0].port, Some(8443));
        assert_eq!(c.allow_unbound_auth.len(), 1);
    }

    #[test]
    fn defaults_are_documented_values() {
        let c = Config::resolve(&args()).unwrap();
        assert_eq!(c.listen, "127.0.0.1:7878".parse().unwrap());
        assert_eq!(c.max_connections, 4096);
        assert_eq!(c.auth_timeout, Duration::from_secs(10));
        assert_eq!(c.ping_interval, Duration::from_secs(15));
        assert_eq!(c.idle_timeout, Duration::from_secs(45));
        assert_eq!(c.agent.probe_interval, Duration::from_secs(30));
        assert_eq!(c.agent.probe_timeout, Duration::from_secs(20));
        assert_eq!(c.agent.max_restarts, 5);
        assert_eq!(c.agent.restart_window, Duration::from_secs(300));
        assert_eq!(c.max_frames_per_sec, 100);
        assert_eq!(c.permission_timeout, None);
        assert_eq!(c.sessions[0].name, "default");
    }

    #[test]
    fn pairing_and_binding_settings() {
        let c = Config::resolve(&args()).unwrap();
        assert!(!c.require_channel_binding);
        assert_eq!(c.pair_timeout, Duration::from_secs(120));
        assert_eq!(c.paired_keys, c.data_dir.join("paired_keys"));
        assert_eq!(c.paired_viewers, c.data_dir.join("paired_viewers"));
        let mut a = args();
        a.require_channel_binding = true;
        a.pair_timeout = Some("1.5".into());
        a.paired_keys = Some(PathBuf::from("/tmp/pk"));
        let c = Config::resolve(&a).unwrap();
        assert!(c.require_channel_binding);
        assert_eq!(c.pair_timeout, Duration::from_millis(1500));
        assert_eq!(c.paired_keys, PathBuf::from("/tmp/pk"));
        let mut a = args();
        a.pair_timeout = Some("0".into());
        let e = Config::resolve(&a).unwrap_err().to_string();
        assert!(e.contains("--pair-timeout"), "{e}");
        // The flag and its env var, through clap.
        use clap::Parser as _;
        let cli =
            crate::cli::Cli::try_parse_from(["ccrelay", "serve", "--require-channel-binding"])
                .unwrap();
        let crate::cli::Command::Serve(a) = cli.command else {
            panic!("not serve")
        };
        assert!(a.require_channel_binding);
    }

    /// What a config file may hold, and the errors that name it: unreadable,
    /// not TOML, a value of the wrong shape, sessions that clash or do not exist.
    #[test]
    fn config_file_values_and_their_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ccrelay.toml");
        let resolve = |text: &str| {
            std::fs::write(&file, text).unwrap();
            let mut a = args();
            a.config = Some(file.clone());
            Config::resolve(&a).map_err(|e| e.to_string())
        };
        let missing = {
            let mut a = args();
            a.config = Some(dir.path().join("absent.toml"));
            Config::resolve(&a).unwrap_err().to_string()
        };
        assert!(
            missing.starts_with("invalid value for --config: cannot read "),
            "{missing}"
        );
        let e = resolve("listen = ").unwrap_err();
        assert!(e.contains("is not valid TOML"), "{e}");
        // A scalar may be a string, a number or a boolean; a table is refused.
        let e = resolve("listen = { host = \"x\" }").unwrap_err();
        assert!(
            e.contains("--listen (in ") && e.ends_with("must be a string or a number"),
            "{e}"
        );
        let c = resolve("max-connections = 7\nlisten = \"localhost:0\"").unwrap();
        assert_eq!(c.max_connections, 7);
        assert_eq!(c.listen, "127.0.0.1:0".parse().unwrap());
        // Lists: an array of strings or one comma-separated string.
        let work = dir.path().join("w");
        std::fs::create_dir(&work).unwrap();
        let c = resolve(&format!("sessions = \"docs={0}, api={0}\"", work.display())).unwrap();
        let names: Vec<_> = c.sessions.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["default", "docs", "api"]);
        assert_eq!(c.sessions[1].workdir, work);
        let e = resolve("allowed-origins = [\"https://a.test\", 3]").unwrap_err();
        assert!(e.contains("must be a list of strings"), "{e}");
        let e = resolve("allowed-origins = 3").unwrap_err();
        assert!(e.contains("must be a string or a list of strings"), "{e}");
        // Sessions: NAME=DIR, each name once, an existing directory.
        let e = resolve("session = [\"docs\"]").unwrap_err();
        assert!(e.contains("expected NAME=DIR"), "{e}");
        let e = resolve(&format!("session = [\"a={0}\", \"a={0}\"]", work.display())).unwrap_err();
        assert!(e.contains("\"a\" is defined twice"), "{e}");
        let e = resolve("session = [\"default=/tmp\"]").unwrap_err();
        assert!(e.contains("\"default\" is defined twice"), "{e}");
        let e = resolve("session = [\"b=/definitely/not/here\"]").unwrap_err();
        assert!(e.contains("(session \"b\") is not a directory"), "{e}");
    }

    #[test]
    fn listen_addresses_and_log_levels() {
        assert_eq!(
            parse_addr("localhost:8080").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            parse_addr("localhost:http").unwrap_err(),
            "the port must be a number from 0 to 65535"
        );
        assert_eq!(parse_addr("[::1]:0").unwrap(), "[::1]:0".parse().unwrap());
        assert!(parse_addr("no port here").is_err());
        let mut a = args();
        a.log_level = Some("ccrelay=debug,hyper=warn".into());
        assert_eq!(
            Config::resolve(&a).unwrap().log_level,
            "ccrelay=debug,hyper=warn"
        );
        a.log_level = Some("ccrelay=[".into());
        let e = Config::resolve(&a).unwrap_err().to_string();
        assert!(
            e.contains("--log-level") && e.contains("a tracing filter"),
            "{e}"
        );
    }

    #[test]
    fn notify_sink_allow_from_flag_and_file() {
        assert!(!Config::resolve(&args()).unwrap().notify.sink_allow);
        let mut a = args();
        a.notify_sink_allow = true;
        assert!(Config::resolve(&a).unwrap().notify.sink_allow);
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("c.toml");
        std::fs::write(&file, "notify-sink-allow = true\n").unwrap();
        let mut a = args();
        a.config = Some(file.clone());
        assert!(Config::resolve(&a).unwrap().notify.sink_allow);
        std::fs::write(&file, "notify-sink-allow = \"sometimes\"\n").unwrap();
        let e = Config::resolve(&a).unwrap_err().to_string();
        assert!(e.contains("notify-sink-allow"), "{e}");
    }

    #[test]
    fn push_allow_insecure_endpoints_from_flag_env_and_file() {
        assert!(
            !Config::resolve(&args())
                .unwrap()
                .push_allow_insecure_endpoints
        );
        let mut a = args();
        a.push_allow_insecure_endpoints = true;
        assert!(Config::resolve(&a).unwrap().push_allow_insecure_endpoints);
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("c.toml");
        std::fs::write(&file, "push-allow-insecure-endpoints = true\n").unwrap();
        let mut a = args();
        a.config = Some(file.clone());
        assert!(Config::resolve(&a).unwrap().push_allow_insecure_endpoints);
        std::fs::write(&file, "push-allow-insecure-endpoints = \"maybe\"\n").unwrap();
        let e = Config::resolve(&a).unwrap_err().to_string();
        assert!(e.contains("push-allow-insecure-endpoints"), "{e}");
    }

    #[test]
    fn push_subject_is_a_mailto_or_https_contact() {
        assert_eq!(Config::resolve(&args()).unwrap().push_subject, None);
        for good in ["mailto:ops@example.org", "https://relay.example.org"] {
            let mut a = args();
            a.push_subject = Some(good.into());
            assert_eq!(
                Config::resolve(&a).unwrap().push_subject.as_deref(),
                Some(good)
            );
        }
        for bad in [
            "ops@example.org",
            "mailto:ops",
            "http://relay.example",
            "mailto:a b@c.d",
            "",
        ] {
            let mut a = args();
            a.push_subject = Some(bad.into());
            let e = Config::resolve(&a).unwrap_err().to_string();
            assert!(e.contains("--push-subject"), "{bad}: {e}");
        }
    }

    #[test]
    fn rejects_bad_values_naming_the_setting() {
        type Mutation = fn(&mut ServeArgs);
        let cases: Vec<(Mutation, &str)> = vec![
            (|a| a.listen = Some("nonsense".into()), "--listen"),
            (
                |a| a.max_connections = Some("0".into()),
                "--max-connections",
            ),
            (
                |a| a.max_connections = Some("99999999999".into()),
                "--max-connections",
            ),
            (|a| a.ping_interval = Some("-1".into()), "--ping-interval"),
            (|a| a.idle_timeout = Some("abc".into()), "--idle-timeout"),
            (
                |a| a.permission_timeout = Some("0".into()),
                "--permission-timeout",
            ),
            (
                |a| a.allowed_origins = Some(vec!["evil".into()]),
                "--allowed-origin",
            ),
            (
                |a| a.sessions = Some(vec!["bad name=/tmp".into()]),
                "--session",
            ),
            (
                |a| a.workdir = Some("/definitely/not/here".into()),
                "--workdir",
            ),
        ];
        for (mutate, setting) in cases {
            let mut a = args();
            mutate(&mut a);
            let err = Config::resolve(&a).unwrap_err().to_string();
            assert!(err.contains(setting), "{err} should name {setting}");
        }
    }

    #[test]
    fn tls_settings_and_the_plaintext_rule() {
        use crate::tls::TlsSource;
        // Plaintext outside loopback is refused, naming --listen, unless asked for.
        let mut a = args();
        a.listen = Some("0.0.0.0:0".into());
        let err = Config::resolve(&a).unwrap_err().to_string();
        assert!(
            err.contains("--listen") && err.contains("--insecure-plaintext"),
            "{err}"
        );
        a.insecure_plaintext = true;
        assert!(Config::resolve(&a).unwrap().insecure_plaintext);
        let mut a = args();
        a.listen = Some("[::]:0".into());
        a.tls_self_signed = true;
        let c = Config::resolve(&a).unwrap();
        assert!(
            matches!(&c.tls, Some(TlsSource::SelfSigned { names }) if names.iter().any(|n| n == "localhost")),
            "{:?}",
            c.tls
        );
        a.tls_names = Some(vec!["relay.example".into(), "10.0.0.7".into()]);
        let c = Config::resolve(&a).unwrap();
        assert_eq!(
            c.tls,
            Some(TlsSource::SelfSigned {
                names: vec!["relay.example".into(), "10.0.0.7".into()]
            })
        );
        type Mutation = fn(&mut ServeArgs);
        let cases: Vec<(Mutation, &str)> = vec![
            (|a| a.tls_cert = Some("c.pem".into()), "--tls-key"),
            (|a| a.tls_key = Some("k.pem".into()), "--tls-cert"),
            (
                |a| {
                    a.tls_cert = Some("c.pem".into());
                    a.tls_key = Some("k.pem".into());
                    a.tls_self_signed = true;
                },
                "--tls-self-signed",
            ),
            (
                |a| a.tls_names = Some(vec!["not a name".into()]),
                "--tls-name",
            ),
        ];
        for (mutate, setting) in cases {
            let mut a = args();
            mutate(&mut a);
            let err = Config::resolve(&a).unwrap_err().to_string();
            assert!(err.contains(setting), "{err} should name {setting}");
        }
        // From the file, with a non-loopback listen address.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:0\"\ntls-cert = \"/c.pem\"\ntls-key = \"/k.pem\"\ntls-name = [\"a.example\"]\n",
        )
        .unwrap();
        let mut a = args();
        a.config = Some(path);
        let c = Config::resolve(&a).unwrap();
        assert_eq!(
            c.tls,
            Some(TlsSource::Files {
                cert: "/c.pem".into(),
                key: "/k.pem".into()
            })
        );
        assert_eq!(c.tls_names, vec!["a.example".to_string()]);
    }

    #[test]
    fn memory_limit_default_and_validation() {
        let c = Config::resolve(&args()).unwrap();
        assert_eq!(c.memory_limit, 1024 * 1024 * 1024);

        let mut a = args();
        a.memory_limit = Some("4194304".into());
        a.tail_bytes = Some("1048576".into());
        assert_eq!(Config::resolve(&a).unwrap().memory_limit, 4 * 1024 * 1024);

        for bad in ["0", "1000", "-5", "lots"] {
            let mut a = args();
            a.memory_limit = Some(bad.into());
            let err = Config::resolve(&a).unwrap_err().to_string();
            assert!(err.contains("--memory-limit"), "{bad}: {err}");
        }
        // Tails may take at most half of the budget.
        let mut a = args();
        a.memory_limit = Some("100000000".into());
        let err = Config::resolve(&a).unwrap_err().to_string();
        assert!(
            err.contains("--memory-limit") && err.contains("--tail-bytes"),
            "{err}"
        );
    }

    #[test]
    fn fractions_of_seconds_are_accepted() {
        let mut a = args();
        a.ping_interval = Some("0.5".into());
        a.idle_timeout = Some("1.5".into());
        let c = Config::resolve(&a).unwrap();
        assert_eq!(c.ping_interval, Duration::from_millis(500));
        assert_eq!(c.idle_timeout, Duration::from_millis(1500));
    }

    #[test]
    fn file_values_sit_below_flags_and_above_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "max-connections = 64\nping-interval = 2.5\nlisten = \"127.0.0.1:9000\"\nallowed-origin = [\"https://a.example\"]\n",
        )
        .unwrap();
        let mut a = args();
        a.config = Some(path.clone());
        a.listen = Some("127.0.0.1:9001".into());
        let c = Config::resolve(&a).unwrap();
        assert_eq!(c.max_connections, 64);
        assert_eq!(c.ping_interval, Duration::from_millis(2500));
        assert_eq!(c.listen.port(), 9001);
        assert_eq!(c.allowed_origins, vec!["https://a.example".to_string()]);

        std::fs::write(&path, "max-conections = 64\n").unwrap();
        let err = Config::resolve(&a).unwrap_err().to_string();
        assert!(err.contains("max-conections"), "{err}");
        std::fs::write(&path, "max-connections = 0\n").unwrap();
        let err = Config::resolve(&a).unwrap_err().to_string();
        assert!(
            err.contains("--max-connections") && err.contains("c.toml"),
            "{err}"
        );
    }

    #[test]
    fn http_per_address_and_ipv6_prefix_len() {
        let c = Config::resolve(&args()).unwrap();
        assert_eq!(c.max_http_per_address, 32);
        assert_eq!(c.address_grouping.ipv6_prefix_len(), 64);
        let mut a = args();
        a.max_http_per_address = Some("8".into());
        a.ipv6_prefix_len = Some("48".into());
        let c = Config::resolve(&a).unwrap();
        assert_eq!(c.max_http_per_address, 8);
        assert_eq!(c.address_grouping.ipv6_prefix_len(), 48);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "max-http-per-address = 4\nipv6-prefix-len = 56\n").unwrap();
        let mut a = args();
        a.config = Some(file);
        let c = Config::resolve(&a).unwrap();
        assert_eq!(c.max_http_per_address, 4);
        assert_eq!(c.address_grouping.ipv6_prefix_len(), 56);
        for (bad, setting) in [
            ("0", "--ipv6-prefix-len"),
            ("129", "--ipv6-prefix-len"),
            ("x", "--ipv6-prefix-len"),
        ] {
            let mut a = args();
            a.ipv6_prefix_len = Some(bad.into());
            let e = Config::resolve(&a).unwrap_err().to_string();
            assert!(e.contains(setting), "{bad}: {e}");
        }
        let mut a = args();
        a.max_http_per_address = Some("0".into());
        let e = Config::resolve(&a).unwrap_err().to_string();
        assert!(e.contains("--max-http-per-address"), "{e}");
    }

    #[test]
    fn trusted_proxies_come_from_flags_or_the_file() {
        let mut a = args();
        a.trusted_proxies = Some(vec!["127.0.0.1/32".into(), "10.0.0.0/8".into()]);
        let c = Config::resolve(&a).unwrap();
        assert_eq!(c.trusted_proxies.len(), 2);
        assert!(Config::resolve(&args()).unwrap().trusted_proxies.is_empty());
        a.trusted_proxies = Some(vec!["not-a-network".into()]);
        let err = Config::resolve(&a).unwrap_err().to_string();
        assert!(err.contains("--trusted-proxy"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "trusted-proxy = [\"::1\", \"192.168.0.0/16\"]\n").unwrap();
        let mut a = args();
        a.config = Some(path);
        let c = Config::resolve(&a).unwrap();
        assert_eq!(
            c.trusted_proxies
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>(),
            vec!["::1/128".to_string(), "192.168.0.0/16".to_string()]
        );
    }

    #[test]
    fn notification_settings_resolve_and_are_validated() {
        let c = Config::resolve(&args()).unwrap();
        assert_eq!(c.notify.after, Duration::from_secs(10));
        assert!(c.notify.webhook.is_none() && c.notify.ntfy.is_none());
        assert!(c.notify.public_url.is_none());
        let mut a = args();
        a.notify_after = Some("0".into());
        a.notify_webhook = Some("https://hooks.example/ccrelay".into());
        a.notify_ntfy = Some("https://ntfy.example/alerts".into());
        a.public_url = Some("https://relay.example:8443".into());
        let c = Config::resolve(&a).unwrap();
        assert_eq!(c.notify.after, Duration::ZERO);
        assert_eq!(
            c.notify.webhook.as_ref().map(|u| u.as_str()),
            Some("https://hooks.example/ccrelay")
        );
        let ntfy = c.notify.ntfy.unwrap();
        assert_eq!(
            (ntfy.root.as_str(), ntfy.topic.as_str()),
            ("https://ntfy.example/", "alerts")
        );
        a.notify_after = Some("0.5".into());
        assert_eq!(
            Config::resolve(&a).unwrap().notify.after,
            Duration::from_millis(500)
        );
        for (set, name) in [
            (
                (|a: &mut ServeArgs| a.notify_after = Some("-1".into())) as fn(&mut ServeArgs),
                "--notify-after",
            ),
            (
                |a| a.notify_webhook = Some("ftp://x.example/".into()),
                "--notify-webhook",
            ),
            (
                |a| a.notify_webhook = Some("https://u:p@x.example/".into()),
                "--notify-webhook",
            ),
            (
                |a| a.notify_ntfy = Some("https://ntfy.example".into()),
                "--notify-ntfy",
            ),
            (
                |a| a.public_url = Some("relay.example".into()),
                "--public-url",
            ),
        ] {
            let mut a = args();
            set(&mut a);
            let err = Config::resolve(&a).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
        // The file's keys are the long option names.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "notify-after = 2\nnotify-webhook = \"http://127.0.0.1:9/h\"\npublic-url = \"https://r.example\"\n",
        )
        .unwrap();
        let mut a = args();
        a.config = Some(path);
        let c = Config::resolve(&a).unwrap();
        assert_eq!(c.notify.after, Duration::from_secs(2));
        assert!(c.notify.webhook.is_some() && c.notify.public_url.is_some());
    }
}
