//! Settings of `ccrelay serve`: merged from flags, env vars, the TOML file and
//! defaults (in that order of precedence), then validated.
//!
//! Owns: the table of settings ([`settings`]: names, env vars, defaults, help),
//! value parsing, validation and the error that names a bad setting (exit code
//! 2). Must not: know the command-line parser (the binary hands over what its
//! flags and env vars gave as [`ServeValues`]), open sockets, read key files or
//! start anything — a bad configuration starts nothing.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod settings;

use settings::{DefaultValue, Setting, Shape, ValueKind};

pub use crate::agent::AgentConfig;
pub use crate::datadir::{default_data_dir, home_dir};
pub use crate::journal::{FsyncPolicy, JournalConfig};
pub use crate::logging::LogFormat;
pub use crate::ws::gate::PRE_AUTH_MAX_FRAME_BYTES;

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
    /// `--session-root`: where clients may create sessions (docs/protocol.md §4),
    /// as given (`~` expanded); the `default` session's workdir when none was.
    pub session_roots: Vec<PathBuf>,
    /// `--max-sessions`: open sessions at most, configured ones included.
    pub max_sessions: usize,
    /// `--closed-retention`: how long a closed session's journal is kept.
    pub closed_retention: Duration,
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
    /// Largest `file.upload`, decoded (docs/protocol.md §10).
    pub max_upload_bytes: usize,
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
    /// `--max-agents`: agent processes running at once, all sessions together
    /// (docs/protocol.md §4.11).
    pub max_agents: usize,
    /// `--viewer-files`: viewers may use the workspace requests (docs/protocol.md §11).
    pub viewer_files: bool,
}

impl Config {
    /// What each configured session is started with.
    pub fn session_settings(&self) -> Vec<crate::session::SessionSettings> {
        self.sessions
            .iter()
            .map(|s| crate::session::SessionSettings {
                name: s.name.clone(),
                workdir: s.workdir.clone(),
                resume: None,
                fork: false,
                dir: self.data_dir.join("sessions").join(&s.name),
                agent: self.agent.clone(),
                journal: self.journal,
                permission_timeout: self.permission_timeout,
                prompt_queue: self.prompt_queue,
                tail_events: self.tail_events,
                tail_bytes: self.tail_bytes,
                // Configured sessions start their agent with the server (§4.11).
                start_agent: true,
                initial_settings: Default::default(),
                created_by: None,
            })
            .collect()
    }

    /// The keys files this configuration reads.
    pub fn key_paths(&self) -> crate::auth::KeyPaths {
        crate::auth::KeyPaths {
            authorized_keys: Some(self.authorized_keys.clone()),
            viewer_keys: self.viewer_keys.clone(),
            paired_keys: self.paired_keys.clone(),
            paired_viewers: self.paired_viewers.clone(),
        }
    }
}

const MAX_SECS: f64 = 7.0 * 24.0 * 3600.0;

/// What the command line gave for `serve`'s settings: per setting, its flag's
/// values, else its env var's (the binary applies that precedence; a list's env
/// var already split at commas). A switch that is on holds `true`; a setting
/// not given is absent, so the file and then the default apply.
#[derive(Debug, Default, Clone)]
pub struct ServeValues {
    given: BTreeMap<&'static str, Vec<OsString>>,
}

impl ServeValues {
    /// Record `values` for `setting` (replacing any earlier ones).
    pub fn set<V: Into<OsString>>(
        &mut self,
        setting: &'static Setting,
        values: impl IntoIterator<Item = V>,
    ) {
        self.given
            .insert(setting.name, values.into_iter().map(Into::into).collect());
    }

    /// `self` with one value for `setting`.
    pub fn with(mut self, setting: &'static Setting, value: impl Into<OsString>) -> Self {
        self.set(setting, [value]);
        self
    }

    fn get(&self, setting: &Setting) -> Option<&[OsString]> {
        self.given.get(setting.name).map(Vec::as_slice)
    }
}

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
            ConfigError::new(
                settings::CONFIG.name,
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            ConfigError::new(
                settings::CONFIG.name,
                format!("{} is not valid TOML: {}", path.display(), e.message()),
            )
        })?;
        if let Some(unknown) = table
            .keys()
            .find(|k| !settings::SETTINGS.iter().any(|s| s.has_file_key(k)))
        {
            return Err(ConfigError::new(
                settings::CONFIG.name,
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

/// A parser of seconds ([`parse_secs`] or [`parse_secs_or_zero`]).
type ParseSecs = fn(&str) -> Result<Duration, String>;

/// Reads one setting at a time through the table: flag/env first, then the
/// file, then the table's default, each parsed by the setting's value kind.
struct Values<'a> {
    given: &'a ServeValues,
    file: &'a FileValues,
}

fn utf8(setting: &Setting, value: &OsString) -> Result<String, ConfigError> {
    value
        .to_str()
        .map(str::to_string)
        .ok_or_else(|| ConfigError::new(setting.name, "the value is not valid UTF-8"))
}

/// A table entry read as a kind it is not declared as (caught by the tests).
fn wrong_kind(setting: &Setting, wanted: &str) -> ConfigError {
    ConfigError::new(
        setting.name,
        format!("declared as {:?}, read as {wanted}", setting.shape),
    )
}

impl Values<'_> {
    fn raw(&self, s: &Setting) -> Result<Option<Raw>, ConfigError> {
        if let Some(v) = self.given.get(s).and_then(<[OsString]>::last) {
            return Ok(Some(Raw {
                value: utf8(s, v)?,
                origin: String::new(),
            }));
        }
        if !s.in_file {
            return Ok(None);
        }
        Ok(self.file.scalar(s.name)?.map(|value| Raw {
            value,
            origin: self.file.origin(),
        }))
    }

    /// The given value parsed, or `None` when the setting was not given.
    fn optional<T>(
        &self,
        s: &Setting,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.raw(s)? {
            None => Ok(None),
            Some(raw) => parse(raw.value.trim())
                .map(Some)
                .map_err(|message| ConfigError {
                    setting: s.name.to_string(),
                    origin: raw.origin,
                    message: format!("{message}, got {:?}", raw.value),
                }),
        }
    }

    /// The given value, else the table's default, parsed the same way.
    fn parse<T>(
        &self,
        s: &Setting,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        if let Some(v) = self.optional(s, &parse)? {
            return Ok(v);
        }
        match s.default {
            DefaultValue::Value(d) => parse(d).map_err(|m| {
                ConfigError::new(s.name, format!("the default {d:?} is not valid: {m}"))
            }),
            DefaultValue::Unset | DefaultValue::Computed(_) => {
                Err(ConfigError::new(s.name, "the setting has no default value"))
            }
        }
    }

    fn secs_parser(s: &Setting) -> Result<ParseSecs, ConfigError> {
        match s.shape {
            Shape::One(ValueKind::Secs) => Ok(parse_secs),
            Shape::One(ValueKind::SecsOrZero) => Ok(parse_secs_or_zero),
            _ => Err(wrong_kind(s, "seconds")),
        }
    }

    fn secs(&self, s: &Setting) -> Result<Duration, ConfigError> {
        self.parse(s, Self::secs_parser(s)?)
    }

    fn optional_secs(&self, s: &Setting) -> Result<Option<Duration>, ConfigError> {
        self.optional(s, Self::secs_parser(s)?)
    }

    fn count_parser(s: &Setting) -> Result<impl Fn(&str) -> Result<u64, String>, ConfigError> {
        match s.shape {
            Shape::One(ValueKind::Count { min, max }) => Ok(count_in(min, max)),
            _ => Err(wrong_kind(s, "a count")),
        }
    }

    fn count(&self, s: &Setting) -> Result<u64, ConfigError> {
        self.parse(s, Self::count_parser(s)?)
    }

    fn optional_count(&self, s: &Setting) -> Result<Option<u64>, ConfigError> {
        self.optional(s, Self::count_parser(s)?)
    }

    fn addr(&self, s: &Setting) -> Result<Option<SocketAddr>, ConfigError> {
        if s.shape != Shape::One(ValueKind::Addr) {
            return Err(wrong_kind(s, "an address"));
        }
        self.optional(s, parse_addr)
    }

    fn choice<T>(&self, s: &Setting, from_name: fn(&str) -> Option<T>) -> Result<T, ConfigError> {
        let Shape::One(ValueKind::Choice(choices)) = s.shape else {
            return Err(wrong_kind(s, "a choice"));
        };
        self.parse(s, |v| {
            from_name(v).ok_or_else(|| {
                let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
                format!("expected one of {}", names.join(", "))
            })
        })
    }

    fn text(
        &self,
        s: &Setting,
        parse: impl Fn(&str) -> Result<String, String>,
    ) -> Result<Option<String>, ConfigError> {
        if s.shape != Shape::One(ValueKind::Text) {
            return Err(wrong_kind(s, "text"));
        }
        self.optional(s, parse)
    }

    /// A path as given (`~` expanded), without a default.
    fn path(&self, s: &Setting) -> Result<Option<PathBuf>, ConfigError> {
        if s.shape != Shape::One(ValueKind::Path) {
            return Err(wrong_kind(s, "a path"));
        }
        if let Some(p) = self.given.get(s).and_then(<[OsString]>::last) {
            return Ok(Some(expand_home(Path::new(p))));
        }
        if !s.in_file {
            return Ok(None);
        }
        Ok(self
            .file
            .scalar(s.name)?
            .map(|v| expand_home(Path::new(&v))))
    }

    /// A switch: on when given on the command line, else as the file says.
    fn switch(&self, s: &Setting) -> Result<bool, ConfigError> {
        if s.shape != Shape::Switch {
            return Err(wrong_kind(s, "a switch"));
        }
        let given = match self.given.get(s).and_then(<[OsString]>::last) {
            Some(v) => parse_bool(&utf8(s, v)?).map_err(|m| ConfigError::new(s.name, m))?,
            None => false,
        };
        if given {
            return Ok(true);
        }
        Ok(self.optional(s, parse_bool)?.unwrap_or(false))
    }

    /// A list: the command line's values replace the file's; empty when neither has it.
    fn list(&self, s: &Setting) -> Result<Vec<String>, ConfigError> {
        let non_empty = match s.shape {
            Shape::List => false,
            // Nothing after `--` leaves the file's list in force.
            Shape::Trailing => true,
            _ => return Err(wrong_kind(s, "a list")),
        };
        if let Some(values) = self.given.get(s)
            && !(non_empty && values.is_empty())
        {
            return values.iter().map(|v| utf8(s, v)).collect();
        }
        let mut keys = vec![s.name];
        keys.extend_from_slice(s.file_aliases);
        Ok(self.file.list(&keys)?.unwrap_or_default())
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

fn valid_session_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

impl Config {
    /// Merge what the command line gave (flags, else env vars), the TOML file and
    /// the table's defaults, and validate.
    pub fn resolve(given: &ServeValues) -> Result<Config, ConfigError> {
        use settings as s;
        let no_file = FileValues::default();
        let bare = Values {
            given,
            file: &no_file,
        };
        let file = match bare.path(&s::CONFIG)? {
            Some(path) => FileValues::load(&path)?,
            None => FileValues::default(),
        };
        let v = Values { given, file: &file };

        let listen = v.parse(&s::LISTEN, parse_addr)?;
        let metrics_listen = v.addr(&s::METRICS_LISTEN)?;

        let authorized_keys = v
            .path(&s::AUTHORIZED_KEYS)?
            .or_else(|| home_dir().map(|h| h.join(".ssh/authorized_keys")))
            .ok_or_else(|| {
                ConfigError::new(
                    s::AUTHORIZED_KEYS.name,
                    "no path given and $HOME is not set",
                )
            })?;
        let viewer_keys = v.path(&s::VIEWER_KEYS)?;
        let data_dir = v.path(&s::DATA_DIR)?.unwrap_or_else(default_data_dir);
        let workdir = match v.path(&s::WORKDIR)? {
            Some(dir) => dir,
            None => std::env::current_dir().map_err(|e| {
                ConfigError::new(s::WORKDIR.name, format!("no current directory: {e}"))
            })?,
        };
        if !workdir.is_dir() {
            return Err(ConfigError::new(
                s::WORKDIR.name,
                format!("{} is not a directory", workdir.display()),
            ));
        }
        let sessions = resolve_sessions(workdir, v.list(&s::SESSION)?)?;
        let session_roots = resolve_session_roots(v.list(&s::SESSION_ROOT)?, &sessions)?;
        let max_sessions = v.count(&s::MAX_SESSIONS)? as usize;
        if max_sessions < sessions.len() {
            return Err(ConfigError::new(
                s::MAX_SESSIONS.name,
                format!(
                    "{max_sessions} is fewer than the {} configured sessions",
                    sessions.len()
                ),
            ));
        }
        let closed_retention = v.secs(&s::CLOSED_RETENTION)?;

        let max_connections = v.count(&s::MAX_CONNECTIONS)? as usize;
        let max_http_per_address = v.count(&s::MAX_HTTP_PER_ADDRESS)? as u32;
        let address_grouping =
            crate::address::AddressGrouping::new(v.count(&s::IPV6_PREFIX_LEN)? as u8)
                .unwrap_or_default();
        let auth_timeout = v.secs(&s::AUTH_TIMEOUT)?;
        let ping_interval = v.secs(&s::PING_INTERVAL)?;
        let idle_timeout = v.secs(&s::IDLE_TIMEOUT)?;
        if idle_timeout <= ping_interval {
            return Err(ConfigError::new(
                s::IDLE_TIMEOUT.name,
                format!(
                    "must be longer than --ping-interval ({} s), or healthy clients would be dropped",
                    ping_interval.as_secs_f64()
                ),
            ));
        }
        let allowed_origins: Vec<String> = v
            .list(&s::ALLOWED_ORIGIN)?
            .into_iter()
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect();
        for origin in &allowed_origins {
            if !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(ConfigError::new(
                    s::ALLOWED_ORIGIN.name,
                    format!("an origin looks like https://host[:port], got {origin:?}"),
                ));
            }
        }

        let server_names = resolve_server_names(v.list(&s::SERVER_NAME)?)?;
        let allow_unbound_auth = resolve_allow_unbound(v.list(&s::ALLOW_UNBOUND_AUTH)?)?;

        let trusted_proxies = v
            .list(&s::TRUSTED_PROXY)?
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(crate::listen::proxy::parse_network)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| ConfigError::new(s::TRUSTED_PROXY.name, message))?;

        let log_level = v.parse(&s::LOG_LEVEL, |s| {
            tracing_subscriber::EnvFilter::try_new(s)
                .map(|_| s.to_string())
                .map_err(|_| "expected error, warn, info, debug, trace or a tracing filter".into())
        })?;
        let log_format = v.choice(&s::LOG_FORMAT, LogFormat::from_name)?;
        let permission_timeout = v.optional_secs(&s::PERMISSION_TIMEOUT)?;

        let agent = AgentConfig {
            cmd: match v.path(&s::AGENT_CMD)? {
                Some(cmd) => cmd,
                None => v.parse(&s::AGENT_CMD, |d| Ok(PathBuf::from(d)))?,
            },
            extra_args: v.list(&s::AGENT_ARGS)?,
            probe_interval: v.secs(&s::AGENT_PROBE_INTERVAL)?,
            probe_timeout: v.secs(&s::AGENT_PROBE_TIMEOUT)?,
            max_restarts: v.count(&s::AGENT_MAX_RESTARTS)? as u32,
            restart_window: v.secs(&s::AGENT_RESTART_WINDOW)?,
            stop_grace: v.secs(&s::AGENT_STOP_GRACE)?,
            idle_stop: Some(v.secs(&s::AGENT_IDLE_STOP)?).filter(|d| !d.is_zero()),
            allow_bypass: v.switch(&s::ALLOW_BYPASS_PERMISSIONS)?,
        };
        let max_agents = v.count(&s::MAX_AGENTS)? as usize;

        let max_frames_per_sec = v.count(&s::MAX_FRAMES_PER_SEC)? as u32;
        let server_id = v.text(&s::SERVER_ID, |s| {
            if s.is_empty() || s.len() > 128 || s.chars().any(|c| c.is_whitespace() || c == ':') {
                Err("must be 1-128 characters without spaces or ':'".into())
            } else {
                Ok(s.to_string())
            }
        })?;
        let max_frame_bytes = v.count(&s::MAX_FRAME_BYTES)? as usize;
        let max_prompt_bytes = v.count(&s::MAX_PROMPT_BYTES)? as usize;
        let max_upload_bytes = v.count(&s::MAX_UPLOAD_BYTES)? as usize;
        let prompt_queue = v.count(&s::PROMPT_QUEUE)? as usize;
        let client_queue = v.count(&s::CLIENT_QUEUE)? as usize;
        let tail_events = v.count(&s::TAIL_EVENTS)? as usize;
        let tail_bytes = v.count(&s::TAIL_BYTES)? as usize;
        // Full tails alone must leave at least half the budget to client queues,
        // or the server would refuse every connection once the tails fill up. The
        // default grows with the tails; a limit given explicitly must respect it.
        let all_tails = (tail_bytes as u64).saturating_mul(sessions.len() as u64);
        let memory_limit = match v.optional_count(&s::MEMORY_LIMIT)? {
            Some(limit) if limit / 2 < all_tails => {
                return Err(ConfigError::new(
                    s::MEMORY_LIMIT.name,
                    format!(
                        "{limit} bytes is less than twice the event tails ({} session(s) × --tail-bytes {tail_bytes}); raise it or lower --tail-bytes",
                        sessions.len()
                    ),
                ));
            }
            Some(limit) => limit,
            None => crate::guard::DEFAULT_MEMORY_LIMIT.max(all_tails.saturating_mul(2)),
        };
        let journal = JournalConfig {
            fsync: v.choice(&s::JOURNAL_FSYNC, FsyncPolicy::from_name)?,
            segment_bytes: v.count(&s::JOURNAL_SEGMENT_BYTES)?,
            max_bytes: v.count(&s::JOURNAL_MAX_BYTES)?,
        };
        if journal.max_bytes < journal.segment_bytes {
            return Err(ConfigError::new(
                s::JOURNAL_MAX_BYTES.name,
                "must be at least --journal-segment-bytes",
            ));
        }
        let auth_failures_per_min = v.count(&s::AUTH_FAILURES_PER_MIN)? as u32;
        let shutdown_grace = v.secs(&s::SHUTDOWN_GRACE)?;
        let require_channel_binding = v.switch(&s::REQUIRE_CHANNEL_BINDING)?;
        let pair_timeout = v.secs(&s::PAIR_TIMEOUT)?;
        let paired_keys = v
            .path(&s::PAIRED_KEYS)?
            .unwrap_or_else(|| data_dir.join("paired_keys"));
        let paired_viewers = v
            .path(&s::PAIRED_VIEWERS)?
            .unwrap_or_else(|| data_dir.join("paired_viewers"));

        let push_allow_insecure_endpoints = v.switch(&s::PUSH_ALLOW_INSECURE_ENDPOINTS)?;
        let push_subject = v.text(&s::PUSH_SUBJECT, parse_push_subject)?;
        let (tls, tls_names, insecure_plaintext) = resolve_tls(&v, listen)?;
        let notify = resolve_notify(&v, address_grouping)?;
        let viewer_files = v.switch(&s::VIEWER_FILES)?;

        Ok(Config {
            listen,
            metrics_listen,
            authorized_keys,
            viewer_keys,
            data_dir,
            server_id,
            sessions,
            session_roots,
            max_sessions,
            closed_retention,
            agent,
            journal,
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
            max_upload_bytes,
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
            max_agents,
            viewer_files,
        })
    }
}

/// The `default` session in `workdir`, then every `--session NAME=DIR`.
fn resolve_sessions(
    workdir: PathBuf,
    extra: Vec<String>,
) -> Result<Vec<SessionConfig>, ConfigError> {
    let setting = settings::SESSION.name;
    let mut sessions = vec![SessionConfig {
        name: ccrelay_protocol::DEFAULT_SESSION.to_string(),
        workdir,
    }];
    for spec in extra {
        let (name, dir) = spec
            .split_once('=')
            .ok_or_else(|| ConfigError::new(setting, format!("expected NAME=DIR, got {spec:?}")))?;
        if !valid_session_name(name) {
            return Err(ConfigError::new(
                setting,
                format!("session names are 1-64 of A-Z a-z 0-9 - _ ., got {name:?}"),
            ));
        }
        if sessions.iter().any(|s| s.name == name) {
            return Err(ConfigError::new(
                setting,
                format!("session {name:?} is defined twice"),
            ));
        }
        let dir = expand_home(Path::new(dir));
        if !dir.is_dir() {
            return Err(ConfigError::new(
                setting,
                format!("{} (session {name:?}) is not a directory", dir.display()),
            ));
        }
        sessions.push(SessionConfig {
            name: name.to_string(),
            workdir: dir,
        });
    }
    Ok(sessions)
}

/// `--session-root DIR` values (`~` expanded; each an existing directory), else
/// the `default` session's workdir.
fn resolve_session_roots(
    given: Vec<String>,
    sessions: &[SessionConfig],
) -> Result<Vec<PathBuf>, ConfigError> {
    let setting = settings::SESSION_ROOT.name;
    let mut roots = Vec::new();
    for root in given.iter().map(|r| r.trim()).filter(|r| !r.is_empty()) {
        let dir = expand_home(Path::new(root));
        if !dir.is_dir() {
            return Err(ConfigError::new(
                setting,
                format!("{} is not a directory", dir.display()),
            ));
        }
        roots.push(dir);
    }
    if roots.is_empty() {
        roots.extend(sessions.first().map(|s| s.workdir.clone()));
    }
    Ok(roots)
}

/// `--server-name HOST[:PORT]` values.
fn resolve_server_names(given: Vec<String>) -> Result<Vec<crate::names::ServerName>, ConfigError> {
    given
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            crate::names::ServerName::parse(s).map_err(|e| {
                ConfigError::new(
                    settings::SERVER_NAME.name,
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
fn resolve_allow_unbound(given: Vec<String>) -> Result<Vec<String>, ConfigError> {
    use base64::Engine as _;
    let mut out = Vec::new();
    for fp in given.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let valid = fp.strip_prefix("SHA256:").is_some_and(|b64| {
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(b64)
                .is_ok_and(|d| d.len() == 32)
        });
        if !valid {
            return Err(ConfigError::new(
                settings::ALLOW_UNBOUND_AUTH.name,
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
    v: &Values<'_>,
    address_grouping: crate::address::AddressGrouping,
) -> Result<crate::notify::NotifySettings, ConfigError> {
    use settings as s;
    let after = v.secs(&s::NOTIFY_AFTER)?;
    let webhook = v.optional(&s::NOTIFY_WEBHOOK, parse_http_url)?;
    let ntfy = v.optional(&s::NOTIFY_NTFY, |s| {
        crate::notify::hooks::NtfyTarget::parse(&parse_http_url(s)?)
    })?;
    let public_url = v.optional(&s::PUBLIC_URL, |s| {
        let url = parse_http_url(s)?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err("expected https://host[:port][/path], without ? or #".into());
        }
        Ok(url)
    })?;
    let sink_allow = v.switch(&s::NOTIFY_SINK_ALLOW)?;
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
    v: &Values<'_>,
    listen: SocketAddr,
) -> Result<(Option<crate::tls::TlsSource>, Vec<String>, bool), ConfigError> {
    use settings as s;
    let cert = v.path(&s::TLS_CERT)?;
    let key = v.path(&s::TLS_KEY)?;
    let self_signed = v.switch(&s::TLS_SELF_SIGNED)?;
    let insecure_plaintext = v.switch(&s::INSECURE_PLAINTEXT)?;
    let names: Vec<String> = v
        .list(&s::TLS_NAME)?
        .into_iter()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect();
    for name in &names {
        if !crate::tls::valid_name(name) {
            return Err(ConfigError::new(
                s::TLS_NAME.name,
                format!("expected a DNS name or an IP address, got {name:?}"),
            ));
        }
    }
    let tls = match (cert, key, self_signed) {
        (Some(_), _, true) | (_, Some(_), true) => {
            return Err(ConfigError::new(
                s::TLS_SELF_SIGNED.name,
                "cannot be combined with --tls-cert/--tls-key; choose one",
            ));
        }
        (Some(cert), Some(key), false) => Some(crate::tls::TlsSource::Files { cert, key }),
        (Some(_), None, false) => {
            return Err(ConfigError::new(
                s::TLS_KEY.name,
                "--tls-cert needs --tls-key (the PEM private key of the certificate)",
            ));
        }
        (None, Some(_), false) => {
            return Err(ConfigError::new(
                s::TLS_CERT.name,
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
            s::LISTEN.name,
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

    fn args() -> ServeValues {
        ServeValues::default()
            .with(&settings::WORKDIR, std::env::temp_dir())
            .with(&settings::AUTHORIZED_KEYS, "/dev/null")
    }

    /// What a flag or env var would give, by the setting's name.
    fn put(a: &mut ServeValues, name: &str, values: impl Given) {
        let setting = settings::setting(name).unwrap_or_else(|| panic!("no setting {name}"));
        a.set(setting, values.values());
    }

    trait Given {
        fn values(self) -> Vec<OsString>;
    }
    impl Given for &str {
        fn values(self) -> Vec<OsString> {
            vec![self.into()]
        }
    }
    impl Given for PathBuf {
        fn values(self) -> Vec<OsString> {
            vec![self.into()]
        }
    }
    impl Given for Vec<&str> {
        fn values(self) -> Vec<OsString> {
            self.into_iter().map(OsString::from).collect()
        }
    }

    #[test]
    fn server_names_and_unbound_keys() {
        let c = Config::resolve(&args()).unwrap();
        assert!(c.server_names.is_empty() && c.allow_unbound_auth.is_empty());
        let fp = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
        let mut a = args();
        put(
            &mut a,
            "server-name",
            vec!["Relay.Example.", "127.0.0.1:9999"],
        );
        put(&mut a, "allow-unbound-auth", vec![fp]);
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
            put(&mut a, "server-name", vec![bad]);
            let err = Config::resolve(&a).unwrap_err().to_string();
            assert!(err.contains("--server-name"), "{err}");
        }
        for bad in [
            "SHA256:short",
            "MD5:aa:bb",
            "uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s",
        ] {
            let mut a = args();
            put(&mut a, "allow-unbound-auth", vec![bad]);
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
        put(&mut a, "config", path);
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
        // Defaults the table states that other modules also name.
        assert_eq!(
            c.max_http_per_address,
            crate::listen::preauth::DEFAULT_HTTP_PER_ADDRESS
        );
        assert_eq!(
            c.address_grouping.ipv6_prefix_len(),
            crate::address::AddressGrouping::default().ipv6_prefix_len()
        );
        assert_eq!(c.memory_limit, crate::guard::DEFAULT_MEMORY_LIMIT);
    }

    #[test]
    fn pairing_and_binding_settings() {
        let c = Config::resolve(&args()).unwrap();
        assert!(!c.require_channel_binding);
        assert_eq!(c.pair_timeout, Duration::from_secs(120));
        assert_eq!(c.paired_keys, c.data_dir.join("paired_keys"));
        assert_eq!(c.paired_viewers, c.data_dir.join("paired_viewers"));
        let mut a = args();
        put(&mut a, "require-channel-binding", "true");
        put(&mut a, "pair-timeout", "1.5");
        put(&mut a, "paired-keys", PathBuf::from("/tmp/pk"));
        let c = Config::resolve(&a).unwrap();
        assert!(c.require_channel_binding);
        assert_eq!(c.pair_timeout, Duration::from_millis(1500));
        assert_eq!(c.paired_keys, PathBuf::from("/tmp/pk"));
        let mut a = args();
        put(&mut a, "pair-timeout", "0");
        let e = Config::resolve(&a).unwrap_err().to_string();
        assert!(e.contains("--pair-timeout"), "{e}");
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
            put(&mut a, "config", file.clone());
            Config::resolve(&a).map_err(|e| e.to_string())
        };
        let missing = {
            let mut a = args();
            put(&mut a, "config", dir.path().join("absent.toml"));
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
        put(&mut a, "log-level", "ccrelay=debug,hyper=warn");
        assert_eq!(
            Config::resolve(&a).unwrap().log_level,
            "ccrelay=debug,hyper=warn"
        );
        put(&mut a, "log-level", "ccrelay=[");
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
        put(&mut a, "notify-sink-allow", "true");
        assert!(Config::resolve(&a).unwrap().notify.sink_allow);
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("c.toml");
        std::fs::write(&file, "notify-sink-allow = true\n").unwrap();
        let mut a = args();
        put(&mut a, "config", file.clone());
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
        put(&mut a, "push-allow-insecure-endpoints", "true");
        assert!(Config::resolve(&a).unwrap().push_allow_insecure_endpoints);
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("c.toml");
        std::fs::write(&file, "push-allow-insecure-endpoints = true\n").unwrap();
        let mut a = args();
        put(&mut a, "config", file.clone());
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
            put(&mut a, "push-subject", good);
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
            put(&mut a, "push-subject", bad);
            let e = Config::resolve(&a).unwrap_err().to_string();
            assert!(e.contains("--push-subject"), "{bad}: {e}");
        }
    }

    #[test]
    fn rejects_bad_values_naming_the_setting() {
        type Mutation = fn(&mut ServeValues);
        let cases: Vec<(Mutation, &str)> = vec![
            (|a| put(a, "listen", "nonsense"), "--listen"),
            (|a| put(a, "max-connections", "0"), "--max-connections"),
            (
                |a| put(a, "max-connections", "99999999999"),
                "--max-connections",
            ),
            (|a| put(a, "ping-interval", "-1"), "--ping-interval"),
            (|a| put(a, "idle-timeout", "abc"), "--idle-timeout"),
            (
                |a| put(a, "permission-timeout", "0"),
                "--permission-timeout",
            ),
            (
                |a| put(a, "allowed-origin", vec!["evil"]),
                "--allowed-origin",
            ),
            (|a| put(a, "session", vec!["bad name=/tmp"]), "--session"),
            (|a| put(a, "workdir", "/definitely/not/here"), "--workdir"),
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
        put(&mut a, "listen", "0.0.0.0:0");
        let err = Config::resolve(&a).unwrap_err().to_string();
        assert!(
            err.contains("--listen") && err.contains("--insecure-plaintext"),
            "{err}"
        );
        put(&mut a, "insecure-plaintext", "true");
        assert!(Config::resolve(&a).unwrap().insecure_plaintext);
        let mut a = args();
        put(&mut a, "listen", "[::]:0");
        put(&mut a, "tls-self-signed", "true");
        let c = Config::resolve(&a).unwrap();
        assert!(
            matches!(&c.tls, Some(TlsSource::SelfSigned { names }) if names.iter().any(|n| n == "localhost")),
            "{:?}",
            c.tls
        );
        put(&mut a, "tls-name", vec!["relay.example", "10.0.0.7"]);
        let c = Config::resolve(&a).unwrap();
        assert_eq!(
            c.tls,
            Some(TlsSource::SelfSigned {
                names: vec!["relay.example".into(), "10.0.0.7".into()]
            })
        );
        type Mutation = fn(&mut ServeValues);
        let cases: Vec<(Mutation, &str)> = vec![
            (|a| put(a, "tls-cert", "c.pem"), "--tls-key"),
            (|a| put(a, "tls-key", "k.pem"), "--tls-cert"),
            (
                |a| {
                    put(a, "tls-cert", "c.pem");
                    put(a, "tls-key", "k.pem");
                    put(a, "tls-self-signed", "true");
                },
                "--tls-self-signed",
            ),
            (|a| put(a, "tls-name", vec!["not a name"]), "--tls-name"),
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
        put(&mut a, "config", path);
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
        put(&mut a, "memory-limit", "4194304");
        put(&mut a, "tail-bytes", "1048576");
        assert_eq!(Config::resolve(&a).unwrap().memory_limit, 4 * 1024 * 1024);

        for bad in ["0", "1000", "-5", "lots"] {
            let mut a = args();
            put(&mut a, "memory-limit", bad);
            let err = Config::resolve(&a).unwrap_err().to_string();
            assert!(err.contains("--memory-limit"), "{bad}: {err}");
        }
        // Tails may take at most half of the budget.
        let mut a = args();
        put(&mut a, "memory-limit", "100000000");
        let err = Config::resolve(&a).unwrap_err().to_string();
        assert!(
            err.contains("--memory-limit") && err.contains("--tail-bytes"),
            "{err}"
        );
    }

    #[test]
    fn fractions_of_seconds_are_accepted() {
        let mut a = args();
        put(&mut a, "ping-interval", "0.5");
        put(&mut a, "idle-timeout", "1.5");
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
        put(&mut a, "config", path.clone());
        put(&mut a, "listen", "127.0.0.1:9001");
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
        put(&mut a, "max-http-per-address", "8");
        put(&mut a, "ipv6-prefix-len", "48");
        let c = Config::resolve(&a).unwrap();
        assert_eq!(c.max_http_per_address, 8);
        assert_eq!(c.address_grouping.ipv6_prefix_len(), 48);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "max-http-per-address = 4\nipv6-prefix-len = 56\n").unwrap();
        let mut a = args();
        put(&mut a, "config", file);
        let c = Config::resolve(&a).unwrap();
        assert_eq!(c.max_http_per_address, 4);
        assert_eq!(c.address_grouping.ipv6_prefix_len(), 56);
        for (bad, setting) in [
            ("0", "--ipv6-prefix-len"),
            ("129", "--ipv6-prefix-len"),
            ("x", "--ipv6-prefix-len"),
        ] {
            let mut a = args();
            put(&mut a, "ipv6-prefix-len", bad);
            let e = Config::resolve(&a).unwrap_err().to_string();
            assert!(e.contains(setting), "{bad}: {e}");
        }
        let mut a = args();
        put(&mut a, "max-http-per-address", "0");
        let e = Config::resolve(&a).unwrap_err().to_string();
        assert!(e.contains("--max-http-per-address"), "{e}");
    }

    #[test]
    fn trusted_proxies_come_from_flags_or_the_file() {
        let mut a = args();
        put(&mut a, "trusted-proxy", vec!["127.0.0.1/32", "10.0.0.0/8"]);
        let c = Config::resolve(&a).unwrap();
        assert_eq!(c.trusted_proxies.len(), 2);
        assert!(Config::resolve(&args()).unwrap().trusted_proxies.is_empty());
        put(&mut a, "trusted-proxy", vec!["not-a-network"]);
        let err = Config::resolve(&a).unwrap_err().to_string();
        assert!(err.contains("--trusted-proxy"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "trusted-proxy = [\"::1\", \"192.168.0.0/16\"]\n").unwrap();
        let mut a = args();
        put(&mut a, "config", path);
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
        put(&mut a, "notify-after", "0");
        put(&mut a, "notify-webhook", "https://hooks.example/ccrelay");
        put(&mut a, "notify-ntfy", "https://ntfy.example/alerts");
        put(&mut a, "public-url", "https://relay.example:8443");
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
        put(&mut a, "notify-after", "0.5");
        assert_eq!(
            Config::resolve(&a).unwrap().notify.after,
            Duration::from_millis(500)
        );
        for (set, name) in [
            (
                (|a: &mut ServeValues| put(a, "notify-after", "-1")) as fn(&mut ServeValues),
                "--notify-after",
            ),
            (
                |a| put(a, "notify-webhook", "ftp://x.example/"),
                "--notify-webhook",
            ),
            (
                |a| put(a, "notify-webhook", "https://u:p@x.example/"),
                "--notify-webhook",
            ),
            (
                |a| put(a, "notify-ntfy", "https://ntfy.example"),
                "--notify-ntfy",
            ),
            (|a| put(a, "public-url", "relay.example"), "--public-url"),
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
        put(&mut a, "config", path);
        let c = Config::resolve(&a).unwrap();
        assert_eq!(c.notify.after, Duration::from_secs(2));
        assert!(c.notify.webhook.is_some() && c.notify.public_url.is_some());
    }
}
