//! The integration tests: one test binary (linking each of some thirty binaries
//! against the whole workspace cost minutes per run), one module per area. Every
//! test starts the real `ccrelay` binary on 127.0.0.1 port 0 through [`common`].
//!
//! Run one area: `cargo test --test it sessions::`; one test: `cargo test --test it
//! sessions::load -- --nocapture`. Heavy tests (floods, hundreds of clients, the
//! real CLI) serialize themselves with their module's lock.

mod common;

mod agent_supervision;
mod attach_client;
mod attach_controls;
mod auth_flow;
mod cli_controls;
mod deploy_configs;
mod devices;
mod examples;
mod foundation;
mod fuzz_corpus;
mod hardening;
mod hardening_transport;
mod metrics_format;
mod mock_agent;
mod notify;
mod observability;
mod on_demand;
mod origin_binding;
mod pairing;
mod preauth_cpu;
mod protocol_fixtures;
mod push;
mod real_cli_mock_api;
mod real_cli_relay;
mod real_cli_sessions;
mod scale;
mod scheduled_prompts;
mod session_controls;
mod session_lifecycle;
mod sessions;
mod sessions_cli;
mod settings_table;
mod tls;
mod workspace_view;
