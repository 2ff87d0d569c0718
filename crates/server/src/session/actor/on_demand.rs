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
        self.cancel_all_pending("agent_stopped")
    }

    /// The agent was stopped to sleep and is reaped: give the slot back and
    /// sleep, unless a prompt came in meanwhile (then wake again at once).
    pub(super) fn fall_asleep(&mut self) -> Step {
        self.slot = None;
        self.ever_ready = false;
        self.asleep = true;
        self.cancel_all_pending("agent_stopped")?;
        if !self.queue.is_empty() {
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
    /// turn, queued prompt, pending request or running background task.
    pub(super) fn is_idle(&self) -> bool {
        self.agent.is_some()
            && self.phase == Phase::Ready
            && self.stopping.is_none()
            && self.turn.is_none()
            && self.queue.is_empty()
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
