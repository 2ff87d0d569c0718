//! Agents on demand (docs/protocol.md §4.11): a session sleeps without an agent
//! process, wakes for a prompt or a restart, stops an agent that stayed idle for
//! `--agent-idle-stop`, and starts one only while holding one of the
//! `--max-agents` slots (see `session::slots`).

use super::*;

/// The `relay.state` detail of a session queued for an agent slot.
pub(super) const WAITING_FOR_SLOT: &str = "waiting for an agent slot";

impl Actor {
    /// Start an agent if this session holds a slot or gets one now; otherwise
    /// wait in the queue (state `starting`, [`WAITING_FOR_SLOT`]) until
    /// [`SlotMsg::Granted`] arrives.
    pub(super) fn launch_agent(&mut self) {
        self.asleep = false;
        if self.slot.is_none() {
            match self.slot_member.acquire() {
                Acquired::Now(permit) => self.slot = Some(permit),
                Acquired::Waiting => {
                    if !self.waiting_slot {
                        tracing::info!(session = %self.name, "no agent slot free: waiting for one");
                        self.waiting_slot = true;
                    }
                    self.next_detail = Some(WAITING_FOR_SLOT.into());
                    return;
                }
            }
        }
        self.waiting_slot = false;
        self.start_agent();
    }

    /// The session opens without starting its agent (created sessions, §4.11).
    /// Requests recorded as pending died with the process that opened them.
    pub(super) fn open_asleep(&mut self) -> Step {
        self.asleep = true;
        for p in std::mem::take(&mut self.pending) {
            // Never reported as opened in this server run: nothing to close.
            self.emit_relay(json!({"type": "relay.cancelled", "request_id": p.request_id, "reason": "agent_stopped"}))?;
        }
        Ok(())
    }

    /// The agent was stopped to sleep and is reaped: give the slot back and
    /// sleep, unless a prompt came in meanwhile (then wake again at once).
    pub(super) fn fall_asleep(&mut self) -> Step {
        self.slot = None;
        self.ever_ready = false;
        self.asleep = true;
        self.cancel_all_pending("agent_stopped")?;
        if !self.queue.is_empty() && !self.queue_held() {
            self.launch_agent();
        }
        Ok(())
    }

    /// Stop the agent so that the session sleeps (SIGTERM, SIGKILL after the grace).
    pub(super) fn sleep_agent(&mut self, why: &str) {
        let Some(agent) = &self.agent else {
            return;
        };
        if self.stopping.is_some() {
            return;
        }
        tracing::info!(session = %self.name, pid = agent.pid, why, "stopping the agent to sleep");
        self.stopping = Some(StopCause::Stopped);
        self.going_to_sleep = true;
        agent.signal_group(Signal::SIGTERM);
        self.stop_deadline = Some(Instant::now() + self.settings.agent.stop_grace);
    }

    /// Whether the agent may be put to sleep: it runs and answers, and has no
    /// turn, queued prompt (but those held for a usage limit's reset: hours
    /// away, they wake it then), pending request or running background task.
    pub(super) fn is_idle(&self) -> bool {
        self.agent.is_some()
            && self.phase == Phase::Ready
            && self.stopping.is_none()
            && self.turn.is_none()
            && (self.queue.is_empty() || self.queue_held())
            && self.pending.is_empty()
            && self.tasks.is_empty()
    }

    /// When the idle agent is due to be stopped (`--agent-idle-stop`).
    pub(super) fn idle_stop_due(&self) -> Option<Instant> {
        Some(self.idle_since? + self.settings.agent.idle_stop?)
    }

    /// At every step end: note when the agent became idle (or stopped being
    /// idle) and tell the slot table, which picks the longest idle to sleep.
    pub(super) fn track_idle(&mut self) {
        let idle = self.is_idle();
        match (idle, self.idle_since) {
            (true, None) => {
                let now = Instant::now();
                self.idle_since = Some(now);
                self.slot_member.set_idle(Some(now));
            }
            (false, Some(_)) => {
                self.idle_since = None;
                self.slot_member.set_idle(None);
            }
            _ => {}
        }
    }

    pub(super) fn on_slot_msg(&mut self, msg: SlotMsg) -> Step {
        match msg {
            SlotMsg::Granted(permit) => {
                if !self.waiting_slot || self.shutting_down || self.agent.is_some() {
                    // Not wanted any more: dropping it hands it on.
                    return Ok(());
                }
                self.slot = Some(permit);
                self.waiting_slot = false;
                self.next_detail = Some("an agent slot is free: starting the agent".into());
                self.start_agent();
            }
            SlotMsg::Sleep => {
                if self.is_idle() {
                    self.sleep_agent("another session needs an agent slot");
                } else if self.going_to_sleep {
                    // Already on its way to sleep: the slot comes free with it.
                } else {
                    self.slot_member.decline();
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::slots::AgentSlots;

    fn shared(dir: &std::path::Path, stop: &CancellationToken) -> SessionShared {
        let metrics = Arc::new(Metrics::new());
        let keys = watch::channel(Arc::new(crate::auth::KeySet::default())).1;
        SessionShared {
            metrics: metrics.clone(),
            audit: Arc::new(crate::session::AuditLog::open(dir).expect("audit log")),
            fatal: crate::session::FatalSignal::default(),
            memory: crate::guard::MemoryGuard::new(1 << 30),
            notify: crate::notify::Notifier::start(
                Default::default(),
                dir,
                None,
                keys,
                metrics,
                stop.clone(),
            )
            .expect("notifier"),
            slots: AgentSlots::new(1),
            workspace: Arc::new(crate::workspace::Workspace::new(dir, &[])),
        }
    }

    fn settings(dir: &std::path::Path) -> SessionSettings {
        SessionSettings {
            name: "created".into(),
            workdir: dir.to_path_buf(),
            dir: dir.join("sessions").join("created"),
            agent: crate::agent::AgentConfig {
                // Never started: the session opens asleep and nobody prompts it.
                cmd: dir.join("no-such-agent"),
                extra_args: Vec::new(),
                probe_interval: Duration::from_secs(30),
                probe_timeout: Duration::from_secs(20),
                max_restarts: 5,
                restart_window: Duration::from_secs(300),
                stop_grace: Duration::from_secs(5),
                idle_stop: None,
                allow_bypass: false,
            },
            journal: crate::journal::JournalConfig {
                fsync: crate::journal::FsyncPolicy::Never,
                segment_bytes: 1 << 20,
                max_bytes: 1 << 24,
            },
            permission_timeout: None,
            prompt_queue: 16,
            tail_events: 100,
            tail_bytes: 1 << 20,
            start_agent: false,
            initial_settings: Default::default(),
            created_by: None,
            resume: None,
            fork: false,
        }
    }

    /// Open the session, wait until it is asleep with everything durable, stop it;
    /// returns its head.
    async fn open_and_stop(dir: &std::path::Path) -> u64 {
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let shared = shared(dir, &stop);
        let slots = shared.slots.clone();
        let handle = spawn(settings(dir), shared, stop.clone(), &tracker).expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            let status = handle.status();
            if status.state == SessionState::Asleep && status.head >= 1 {
                break status;
            }
            assert!(Instant::now() < deadline, "not asleep: {status:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(status.agent_pid, None);
        assert_eq!(slots.held(), 0, "an asleep session holds no slot");
        stop.cancel();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(10), tracker.wait())
            .await
            .expect("the actor stops");
        let head = handle.status().head;
        assert_eq!(handle.status().state, SessionState::Asleep);
        head
    }

    #[tokio::test]
    async fn a_session_opened_asleep_journals_asleep_once_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The first open announces `asleep` (one event); shutdown adds no
        // `stopped`, and the next open finds `asleep` last and adds nothing.
        assert_eq!(open_and_stop(dir.path()).await, 1);
        assert_eq!(open_and_stop(dir.path()).await, 1);
    }
}
