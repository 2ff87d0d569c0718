//! The syntax checks of `session.set` (docs/protocol.md §10) before the session
//! sees it; what the agent accepts and the bypass gate are the session's checks.

use super::lifecycle::check_settings;
use ccrelay_protocol::{ErrorCode, SettingsRequest, catalog::PERMISSION_MODES};

/// `session.set`'s `settings`, each given field checked like `session.create`'s
/// (model and effort spelling, the thinking budget); a permission mode must be
/// one the CLI knows. At least one field must be given.
pub(super) fn check_set(asked: SettingsRequest) -> Result<SettingsRequest, (ErrorCode, String)> {
    if asked == SettingsRequest::default() {
        return Err((
            ErrorCode::BadMessage,
            "`settings` must name at least one of permission_mode, model, effort, thinking, auto_continue".into(),
        ));
    }
    if let Some(mode) = &asked.permission_mode
        && !PERMISSION_MODES.contains(&mode.as_str())
    {
        // The CLI's own refusal text (docs/protocol.md §10.1): the relay knows
        // the same list and refuses before anything is changed.
        return Err((
            ErrorCode::BadMessage,
            format!(
                "Cannot set permission mode: must be one of {}",
                sorted_modes().join(", ")
            ),
        ));
    }
    // The rest as session.create checks it; the mode gate is the session's.
    check_settings(SettingsRequest {
        permission_mode: None,
        ..asked.clone()
    })?;
    Ok(asked)
}

fn sorted_modes() -> Vec<&'static str> {
    let mut modes = PERMISSION_MODES.to_vec();
    modes.sort_unstable();
    modes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_is_checked() {
        let mode = |m: &str| SettingsRequest {
            permission_mode: Some(m.into()),
            ..Default::default()
        };
        assert!(check_set(mode("plan")).is_ok());
        // Gated by the session (it knows --allow-bypass-permissions), not here.
        assert!(check_set(mode("bypassPermissions")).is_ok());
        let (code, why) = check_set(mode("bogus")).unwrap_err();
        assert_eq!(code, ErrorCode::BadMessage);
        assert_eq!(
            why,
            "Cannot set permission mode: must be one of acceptEdits, auto, bypassPermissions, default, dontAsk, plan"
        );
        assert_eq!(
            check_set(SettingsRequest::default()).unwrap_err().0,
            ErrorCode::BadMessage
        );
        let model = SettingsRequest {
            model: Some("--dangerously-skip-permissions".into()),
            ..Default::default()
        };
        assert_eq!(check_set(model).unwrap_err().0, ErrorCode::BadMessage);
    }
}
