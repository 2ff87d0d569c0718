//! Working directories for sessions created by clients (docs/protocol.md §4,
//! "Creating and closing sessions"): which directories a client may name, what is
//! in them, which Claude Code conversations were recorded there, and the git
//! worktrees the server creates and removes for sessions.
//!
//! Owns: the session roots and the directories excluded from them ([`roots`]), the
//! directory picker's listing ([`dirs`]), reading the CLI's transcripts for
//! `conversations.list` ([`conversations`]), creating and removing worktrees
//! ([`worktree`]) and the one hygienic way git is run for them ([`git`],
//! docs/protocol.md §11 "Git hygiene"), and the errors all of these answer
//! ([`WorkdirError`], each with its wire code).
//!
//! Must not: know sessions, connections or the wire's frames (the session registry
//! calls these functions and turns their results into replies), keep state of its
//! own beyond [`Roots`], or write anywhere but a worktree it is asked to create.
//! Everything that touches the file system is blocking unless it is `async` (git
//! and worktrees); callers run the blocking functions off the network threads
//! (`spawn_blocking`).

pub mod conversations;
pub mod dirs;
mod error;
pub mod git;
pub mod roots;
pub mod worktree;

pub use error::{WorkdirError, bounded};
pub use roots::{Roots, RootsError, claude_config_dir};
