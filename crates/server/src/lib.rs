//! ccrelay's server: the relay that supervises Claude Code sessions and serves
//! them over WebSocket to many devices.
//!
//! Owns everything `ccrelay serve` runs. Must not: parse a command line (the
//! `ccrelay` binary crate builds [`config::ServeValues`] and the other settings
//! types), or know the terminal client. Wire types come from `ccrelay-protocol`.
//!
//! Modules, one concern each, listed from the top of the layering down (a module
//! uses only modules below it; `scripts/check-layers` checks there is no cycle):
//! - `server`: binding, the HTTP routes (health, readiness, metrics, origin check,
//!   `POST /v1/push/respond`), admission before the upgrade, shutdown order;
//! - `connection`: one WebSocket connection: framing, heartbeat, auth phase,
//!   dispatch; [`connection::Services`] is what a connection may use;
//! - `config`: the table of `serve`'s settings and their merged, validated values
//!   (flags > env > file > defaults);
//! - `pairing`: pending device pairing requests and the owners told about them;
//! - `session`: one session's ordered event log, fan-out, prompts, permission prompts;
//! - `workspace`: the workspace view of a session's workdir (`files.*`, per-turn
//!   snapshots and `relay.changes`), confinement of its paths, its git limits;
//! - `workdirs`: session roots, the directory picker, the CLI's recorded
//!   conversations, and git worktrees for created sessions;
//! - `notify`: notifications for devices that are not connected (Web Push, webhooks);
//! - `agent`: the Claude Code child process and its stream-json protocol;
//! - `journal`: the durable per-session event journal;
//! - `tls`: server TLS (certificates, reloads, self-signed, fingerprints, RFC 9266 exporter);
//! - `listen`: accept loop, request-head deadline, per-address pre-auth and plain
//!   HTTP caps, `--trusted-proxy`, TLS hook ([`listen::AcceptServices`] is what it may use);
//! - `ws`: the WebSocket upgrade, codec configuration and the pre-auth frame gate;
//! - `guard`: the memory guard (buffered bytes against `--memory-limit`, shedding);
//! - `metrics`: Prometheus registry and families;
//! - `auth`: SSH key challenge-response, authorized_keys, throttling, client signing;
//! - `web`: the web client's files (embedded), their headers, and the own-origin rule;
//! - `logging`: the log subscriber (text or JSON, file for the demo);
//! - `names`: this server's names (origin binding, the page's `Host` check);
//! - `address`: the address key of a peer (IPv6 grouping) every per-address rule counts;
//! - `datadir`: owner-only data dir and files (modes at creation, start-up check);
//! - `health`: what the health endpoints tell loopback and everyone else;
//! - `fatal`: the fatal-fault signal every layer may raise;
//! - `escape`: escaping of peer-controlled strings for logs and terminals.

pub mod address;
pub mod agent;
pub mod auth;
pub mod config;
pub mod connection;
pub mod datadir;
pub mod escape;
pub mod fatal;
pub mod guard;
pub mod health;
pub mod journal;
pub mod listen;
pub mod logging;
pub mod metrics;
pub mod names;
pub mod notify;
pub mod pairing;
pub mod server;
pub mod session;
pub mod tls;
pub mod web;
pub mod workdirs;
pub mod workspace;
pub mod ws;
