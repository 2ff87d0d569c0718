//! When to restart a dead agent: exponential backoff, and the crash-loop limit
//! that puts a session in `failed` (docs/protocol.md §5.2, `relay.state` `failed`: `--agent-max-restarts`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// First restart delay; doubles per consecutive failure up to [`MAX_BACKOFF`].
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// An agent that stayed up this long resets the backoff.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// What to do after an unexpected exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Restart after this delay.
    RestartAfter(Duration),
    /// Too many exits in the window: stay failed until this instant (or an owner restarts).
    Failed { until: Instant },
}

/// Restart bookkeeping for one session.
#[derive(Debug)]
pub struct RestartPolicy {
    max_restarts: u32,
    window: Duration,
    exits: VecDeque<Instant>,
    backoff: Duration,
}

impl RestartPolicy {
    pub fn new(max_restarts: u32, window: Duration) -> Self {
        RestartPolicy {
            max_restarts,
            window,
            exits: VecDeque::new(),
            backoff: INITIAL_BACKOFF,
        }
    }

    /// Record an unexpected exit (crashed or hung) of an agent that ran for `uptime`.
    pub fn on_unexpected_exit(&mut self, now: Instant, uptime: Duration) -> Verdict {
        if uptime >= HEALTHY_AFTER {
            self.backoff = INITIAL_BACKOFF;
        }
        self.exits.push_back(now);
        while self
            .exits
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            self.exits.pop_front();
        }
        if self.exits.len() as u32 > self.max_restarts {
            let oldest = self.exits.front().copied().unwrap_or(now);
            return Verdict::Failed {
                until: oldest + self.window,
            };
        }
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        Verdict::RestartAfter(delay)
    }

    /// Forget the history: an owner asked for a restart, or the failed window passed.
    pub fn reset(&mut self) {
        self.exits.clear();
        self.backoff = INITIAL_BACKOFF;
    }

    /// Unexpected exits currently inside the window.
    pub fn recent_exits(&self) -> usize {
        self.exits.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_then_fails_past_the_limit() {
        let mut p = RestartPolicy::new(3, Duration::from_secs(300));
        let t = Instant::now();
        let up = Duration::from_secs(1);
        assert_eq!(
            p.on_unexpected_exit(t, up),
            Verdict::RestartAfter(Duration::from_millis(500))
        );
        assert_eq!(
            p.on_unexpected_exit(t, up),
            Verdict::RestartAfter(Duration::from_secs(1))
        );
        assert_eq!(
            p.on_unexpected_exit(t, up),
            Verdict::RestartAfter(Duration::from_secs(2))
        );
        assert!(matches!(
            p.on_unexpected_exit(t, up),
            Verdict::Failed { .. }
        ));
        p.reset();
        assert_eq!(
            p.on_unexpected_exit(t, up),
            Verdict::RestartAfter(Duration::from_millis(500))
        );
    }

    #[test]
    fn exits_outside_the_window_do_not_count_and_health_resets_backoff() {
        let mut p = RestartPolicy::new(1, Duration::from_secs(10));
        let t = Instant::now();
        assert!(matches!(
            p.on_unexpected_exit(t, Duration::ZERO),
            Verdict::RestartAfter(_)
        ));
        let later = t + Duration::from_secs(11);
        assert_eq!(
            p.on_unexpected_exit(later, HEALTHY_AFTER),
            Verdict::RestartAfter(INITIAL_BACKOFF)
        );
        assert_eq!(p.recent_exits(), 1);
        let mut capped = RestartPolicy::new(100, Duration::from_secs(1000));
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            if let Verdict::RestartAfter(d) = capped.on_unexpected_exit(t, Duration::ZERO) {
                last = d;
            }
        }
        assert_eq!(last, MAX_BACKOFF);
    }
}
