//! Scheduled prompts in the session (docs/protocol.md §10): queueing them when
//! they are due (or aborting them when the key that scheduled them is no longer
//! usable), and `auto_continue`: a `continue` scheduled for the moment a usage
//! limit that ended a turn resets, with the queue held behind it until then.
//!
//! The prompts themselves are kept by [`ScheduledStore`]; this part decides what
//! happens to them and emits the events.

use super::*;
use crate::session::scheduled::{self, Due, MAX_SCHEDULED, Scheduled, ScheduledBy};

/// Who turned `auto_continue` on, in the session's directory.
const AUTO_CONTINUE_BY_FILE: &str = "auto-continue-by.json";
/// When the reset a usage limit names is already past (a clock apart, or a
/// stale report), `continue` waits this long rather than hitting the limit again
/// in a loop.
const STALE_RESET_DELAY: Duration = Duration::from_secs(60);
/// What an `auto_continue` prompt says.
const CONTINUE: &str = "\"continue\"";

/// `auto_continue`'s state beside the setting itself.
#[derive(Debug, Default)]
pub(super) struct AutoContinue {
    /// The key that turned it on (none: the server's configuration did), whose
    /// usability the scheduled `continue` needs.
    by: Option<ScheduledBy>,
    /// The reset time (Unix seconds) of a usage limit the running turn hit.
    pub(super) limit_reset: Option<i64>,
}

impl AutoContinue {
    /// As recorded in `dir`, else the session's creator (who may have asked for
    /// `auto_continue` in `session.create`).
    pub(super) fn load(dir: &std::path::Path, created_by: Option<&ScheduledBy>) -> AutoContinue {
        let by = std::fs::read(dir.join(AUTO_CONTINUE_BY_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .or_else(|| created_by.cloned());
        AutoContinue {
            by,
            limit_reset: None,
        }
    }
}

/// `t` as a deadline on the monotonic clock (now when it is past).
fn instant_of(t: SystemTime) -> Instant {
    let now = Instant::now();
    t.duration_since(SystemTime::now())
        .map_or(now, |ahead| now + ahead)
}

impl Actor {
    /// Whether the queue waits for a usage limit's reset: while `auto_continue`'s
    /// `continue` is scheduled, the prompts queued behind it wait for it, so that
    /// none runs into the limit and all run, in order, after `continue` at the reset
    /// (docs/protocol.md §10). Cancelling that `continue` (or turning
    /// `auto_continue` off) lets them run at once.
    pub(super) fn queue_held(&self) -> bool {
        self.scheduled.has_auto_continue()
    }

    /// A scheduled prompt went away (cancelled, aborted): if it was the
    /// `continue` the queue waited for, the queue runs now, waking a sleeping
    /// session for it (§4.11) as a prompt sent now would.
    pub(super) fn queue_released(&mut self) -> Step {
        if self.asleep && !self.queue.is_empty() && !self.queue_held() {
            self.launch_agent();
        }
        self.maybe_start_turn()
    }

    /// When the soonest scheduled prompt is due.
    pub(super) fn scheduled_deadline(&self) -> Option<Instant> {
        self.scheduled.next_due().map(instant_of)
    }

    /// Queue the scheduled prompts that are due, in order; abort those whose key
    /// can no longer be used (`key_unusable`) or whose file was lost.
    pub(super) fn fire_scheduled(&mut self) -> Step {
        let now = SystemTime::now();
        if self.scheduled.next_due().is_none_or(|t| t > now) {
            return Ok(());
        }
        let mut queued = false;
        for Due { prompt, content } in self.scheduled.take_due(now) {
            let content = match content {
                Ok(content) => content,
                Err(error) => {
                    tracing::error!(session = %self.name, prompt_id = %prompt.prompt_id, %error, "a scheduled prompt could not be read back");
                    self.abort_scheduled(&prompt, "unreadable", Some(&error))?;
                    continue;
                }
            };
            if let Some(by) = &prompt.by
                && let Err(why) = self
                    .shared
                    .notify
                    .fingerprint_usable(&by.fingerprint, by.address)
            {
                tracing::info!(session = %self.name, prompt_id = %prompt.prompt_id, fingerprint = %by.fingerprint, %why, "a scheduled prompt's key is no longer usable: aborted");
                self.abort_scheduled(&prompt, "key_unusable", Some(&why.to_string()))?;
                continue;
            }
            tracing::info!(session = %self.name, prompt_id = %prompt.prompt_id, auto_continue = prompt.auto_continue, "a scheduled prompt is due: queued");
            let queued_prompt = QueuedPrompt {
                prompt_id: prompt.prompt_id,
                content: PromptContent(content),
            };
            // `continue` picks up the turn the limit cut short: it goes before the
            // prompts that waited behind it.
            if prompt.auto_continue {
                self.queue.push_front(queued_prompt);
            } else {
                self.queue.push_back(queued_prompt);
            }
            queued = true;
        }
        if !queued {
            // An aborted `continue` no longer holds the queue.
            return self.queue_released();
        }
        if self.asleep {
            // Like a prompt sent now: it wakes the session (§4.11).
            self.launch_agent();
        }
        self.maybe_start_turn()
    }

    /// The keys changed: scheduled prompts whose key is no longer usable are
    /// aborted now (`key_unusable`) rather than when they are due.
    pub(super) fn check_scheduled_keys(&mut self) -> Step {
        let unusable: Vec<(Scheduled, String)> = self
            .scheduled
            .iter()
            .filter_map(|s| {
                let by = s.by.as_ref()?;
                let why = self
                    .shared
                    .notify
                    .fingerprint_usable(&by.fingerprint, by.address)
                    .err()?;
                Some((s.clone(), why.to_string()))
            })
            .collect();
        for (prompt, why) in unusable {
            self.scheduled.remove(&prompt.prompt_id);
            tracing::info!(session = %self.name, prompt_id = %prompt.prompt_id, %why, "the key of a scheduled prompt is no longer usable: aborted");
            self.abort_scheduled(&prompt, "key_unusable", Some(&why))?;
        }
        // An aborted `continue` no longer holds the queue.
        self.queue_released()
    }

    /// A scheduled prompt that will not run: `relay.turn` `aborted` with `detail`,
    /// and an audit line.
    fn abort_scheduled(&mut self, prompt: &Scheduled, detail: &str, why: Option<&str>) -> Step {
        self.emit_relay(json!({
            "type": "relay.turn", "prompt_id": prompt.prompt_id, "phase": "aborted", "detail": detail,
        }))?;
        self.shared.audit.record(
            "prompt_abort",
            &self.name,
            json!({
                "prompt_id": prompt.prompt_id,
                "detail": detail,
                "why": why,
                "fingerprint": prompt.by.as_ref().map(|b| b.fingerprint.as_str()),
            }),
        );
        Ok(())
    }

    /// The session closes: every scheduled prompt ends with it.
    pub(super) fn abort_all_scheduled(&mut self, detail: &str) -> Step {
        for prompt in self.scheduled.remove_all() {
            self.emit_relay(json!({
                "type": "relay.turn", "prompt_id": prompt.prompt_id, "phase": "aborted", "detail": detail,
            }))?;
        }
        Ok(())
    }

    /// `auto_continue` was changed (`session.set`): remember who turned it on;
    /// turned off, a `continue` it scheduled is cancelled.
    pub(super) fn auto_continue_changed(
        &mut self,
        on: bool,
        by: Option<&crate::session::ClientInfo>,
    ) -> Step {
        let path = self.settings.dir.join(AUTO_CONTINUE_BY_FILE);
        if on {
            let Some(info) = by else {
                return Ok(());
            };
            let setter = ScheduledBy::of(info);
            let body = serde_json::to_vec(&setter).unwrap_or_default();
            if let Err(e) = crate::datadir::write_atomic(&path, body) {
                tracing::error!(session = %self.name, error = %e, "cannot record who turned auto_continue on");
            }
            self.auto_continue.by = Some(setter);
            return Ok(());
        }
        let _ = std::fs::remove_file(&path);
        self.auto_continue.by = None;
        let waiting: Vec<String> = self
            .scheduled
            .iter()
            .filter(|s| s.auto_continue)
            .map(|s| s.prompt_id.clone())
            .collect();
        for prompt_id in waiting {
            self.scheduled.remove(&prompt_id);
            self.emit_relay(json!({
                "type": "relay.turn", "prompt_id": prompt_id, "phase": "aborted", "detail": "cancelled",
            }))?;
        }
        // The queue no longer waits for the reset.
        self.queue_released()
    }

    /// The running turn just ended. If it ended on a usage limit that names its
    /// reset, and `auto_continue` is on, `continue` is scheduled for that moment
    /// (one at a time).
    pub(super) fn auto_continue_after_turn(&mut self) -> Step {
        let Some(reset) = self.auto_continue.limit_reset.take() else {
            return Ok(());
        };
        if !self.controls.settings().auto_continue
            || self.closing.is_some()
            || self.scheduled.has_auto_continue()
        {
            return Ok(());
        }
        if self.scheduled.len() >= MAX_SCHEDULED {
            tracing::warn!(session = %self.name, "auto_continue: {MAX_SCHEDULED} prompts are already scheduled; nothing added");
            return Ok(());
        }
        let now = SystemTime::now();
        let reset = SystemTime::UNIX_EPOCH + Duration::from_secs(reset.max(0) as u64);
        // Bounded like a client's `at`: a reset reported years ahead would hold
        // the queue (and keep a file) that long.
        let at = if reset > now {
            reset.min(now + scheduled::MAX_AHEAD)
        } else {
            now + STALE_RESET_DELAY
        };
        let prompt_id = uuid::Uuid::new_v4().to_string();
        let by = self.auto_continue.by.clone();
        let Ok(content) = RawValue::from_string(CONTINUE.to_string()) else {
            return Ok(());
        };
        let record = Scheduled {
            prompt_id: prompt_id.clone(),
            at,
            by: by.clone(),
            auto_continue: true,
        };
        if let Err(e) = self.scheduled.add(record, &content) {
            tracing::error!(session = %self.name, error = %e, "auto_continue: cannot record the scheduled prompt");
            return Ok(());
        }
        let scheduled_at = scheduled::rfc3339(at);
        let mut event = json!({
            "type": "relay.prompt",
            "prompt_id": prompt_id,
            "client_id": "relay",
            "scheduled_at": scheduled_at,
            "auto_continue": true,
            "content": "continue",
        });
        if let Some(by) = &by {
            event["fingerprint"] = Value::from(by.fingerprint.as_str());
        }
        self.emit_relay(event)?;
        self.shared.audit.record(
            "prompt",
            &self.name,
            json!({
                "prompt_id": prompt_id,
                "client_id": "relay",
                "fingerprint": by.as_ref().map(|b| b.fingerprint.as_str()),
                "scheduled_at": scheduled_at,
                "auto_continue": true,
            }),
        );
        tracing::info!(session = %self.name, prompt_id = %prompt_id, at = %scheduled_at, "usage limit reached: continue scheduled for its reset");
        Ok(())
    }
}
