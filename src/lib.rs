//! The `ccrelay` binary crate: the command line ([`cli`], the only place that
//! knows clap) and `ccrelay demo` ([`demo`]), over the workspace's libraries:
//! - `ccrelay-protocol` (crates/protocol): the wire types, both directions;
//! - `ccrelay-server` (crates/server): everything `ccrelay serve` runs;
//! - `ccrelay-client` (crates/client): `ccrelay attach`, the terminal client;
//! - `ccrelay-mock-agent` (crates/mock-agent): a stand-in for the Claude Code CLI.
//!
//! The re-exports below give the integration tests, benches and fuzz targets one
//! path (`ccrelay::session`, `ccrelay::protocol`, ...) to everything.

pub mod cli;
pub mod demo;

pub use ccrelay_client as client;
pub use ccrelay_mock_agent as mock_agent;
pub use ccrelay_protocol as protocol;
pub use ccrelay_server::{
    address, agent, auth, config, connection, datadir, escape, fatal, guard, health, journal,
    listen, logging, metrics, names, notify, pairing, server, session, tls, web, ws,
};
