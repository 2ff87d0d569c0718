//! The Claude Code agent process and its stream-json host protocol.
//!
//! Owns: spawning the agent (flags, process group, parent-death signal), the one
//! writer of its stdin, reading its stdout as bounded lines, logging its stderr,
//! its exit status, the lines the relay writes to it, and the restart policy.
//! Must not: decide what a line means for clients, assign seqs or touch sockets —
//! the session drives the agent and owns every piece of session state.

pub mod controls;
pub mod process;
pub mod restart;
pub mod wire;

pub use process::{AgentConfig, AgentOutput, AgentProcess, ExitInfo, SpawnSpec, Tagged};
