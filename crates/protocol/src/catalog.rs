//! What a session's agent offers and reports, as clients see it (docs/protocol.md
//! §10): the entries of `session.catalog` and the parts of `session.usage`.
//!
//! The server fills them from the CLI's own answers (`initialize`, `system/init`,
//! `system/commands_changed`, `get_context_usage`, `rate_limit_event`); these are
//! only the client-facing shapes.

use serde::{Deserialize, Serialize};

/// The permission modes the Claude Code CLI accepts (`set_permission_mode`,
/// `--permission-mode`), in the CLI's own spelling.
pub const PERMISSION_MODES: &[&str] = &[
    "default",
    "acceptEdits",
    "plan",
    "bypassPermissions",
    "dontAsk",
    "auto",
];

/// One slash command a client may offer (`/<name> <argument_hint>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogCommand {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// What the command takes after its name ("" when nothing).
    #[serde(default)]
    pub argument_hint: String,
}

/// One model a client may offer for `session.set` `model`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogModel {
    /// What to send as `model` (an alias such as `sonnet`, or `default`).
    pub value: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub description: String,
    /// The `effort` levels this model takes (empty when it takes none).
    #[serde(default)]
    pub effort_levels: Vec<String>,
}

/// How full the conversation's context window is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextUsage {
    pub used_tokens: u64,
    pub max_tokens: u64,
}

/// The account's usage limit as the agent last reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// When the limit resets (RFC 3339), or null when unknown.
    pub resets_at: Option<String>,
    /// The CLI's status: `allowed`, `allowed_warning` or `rejected`.
    pub status: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_round_trip() {
        let c: CatalogCommand =
            serde_json::from_str(r#"{"name":"compact","description":"d","argument_hint":"<x>"}"#)
                .unwrap();
        assert_eq!(c.argument_hint, "<x>");
        let back: CatalogCommand =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        let m: CatalogModel = serde_json::from_str(r#"{"value":"sonnet"}"#).unwrap();
        assert!(m.effort_levels.is_empty());
        let r: RateLimit =
            serde_json::from_str(r#"{"resets_at":null,"status":"rejected"}"#).unwrap();
        assert_eq!(r.resets_at, None);
        assert!(PERMISSION_MODES.contains(&"plan"));
    }
}
