//! ccrelay: drive one Claude Code session from many devices.
//!
//! The library holds everything; `main.rs` only parses the command line, sets up
//! logging and calls into it. Modules, one concern each:
//! - [`cli`]: the binary's command-line parser, turned into the plain settings of the modules below;
//! - `client`: `ccrelay attach`, the terminal client (connect, render, line editor, reconnect);
//! - `config`: the table of `serve`'s settings and their merged, validated values (flags > env > file > defaults);
//! - `protocol`: the wire messages of docs/protocol.md as serde types;
//! - `server`: HTTP listener, admission, health endpoints, shutdown order;
//! - `listen`: accept loop, request-head deadline, per-address pre-auth and plain HTTP caps, `--trusted-proxy`, TLS hook;
//! - `address`: the address key of a peer (IPv6 grouping) every per-address rule counts;
//! - `ws`: the WebSocket upgrade, codec configuration and the pre-auth frame gate;
//! - `connection`: one WebSocket connection: framing, heartbeat, auth phase, dispatch;
//! - `auth`: SSH key challenge-response, authorized_keys, throttling, client signing;
//! - `session`: one session's ordered event log, fan-out, prompts, permission prompts;
//! - `journal`: the durable per-session event journal;
//! - `datadir`: owner-only data dir and files (modes at creation, start-up check);
//! - `agent`: the Claude Code child process and its stream-json protocol;
//! - `metrics`: Prometheus registry and families;
//! - `health`: what the health endpoints tell loopback and everyone else;
//! - `tls`: server TLS (certificates, reloads, self-signed, fingerprints, RFC 9266 exporter);
//! - `guard`: the memory guard (buffered bytes against `--memory-limit`, shedding);
//! - `client`: the `ccrelay attach` terminal client;
//! - `demo`: `ccrelay demo`, the whole system in one command;
//! - `pairing`: pending device pairing requests and the owners told about them;
//! - `fatal`: the fatal-fault signal every layer may raise;
//! - `escape`: escaping of peer-controlled strings for logs and terminals;
//! - `mock_agent`: a protocol-faithful stand-in for the Claude Code CLI (demos, tests).
//! - `notify`: notifications for devices that are not connected (Web Push);
//! - `web`: the web client's files (embedded), their headers, and the own-origin rule;
//! - `names`: this server's names (origin binding, the page's `Host` check).

pub mod address;
pub mod agent;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod connection;
pub mod datadir;
pub mod demo;
pub mod escape;
pub mod fatal;
pub mod guard;
pub mod health;
pub mod journal;
pub mod listen;
pub mod logging;
pub mod metrics;
pub mod mock_agent;
pub mod names;
pub mod notify;
pub mod pairing;
pub mod server;
pub mod session;
pub mod tls;
pub mod web;
pub mod ws;

/// The wire protocol lives in its own crate (`crates/protocol`): no sockets, no tokio.
pub use ccrelay_protocol as protocol;
