//! Memory guard: bounds the bytes the relay buffers for clients.
//!
//! Owns: the accounting of frames waiting in client queues and of the sessions'
//! in-memory event tails (atomics only: nothing on the frame path takes a lock),
//! the pressure level, and shedding. As buffered bytes grow toward
//! `--memory-limit` the server degrades in a fixed order instead of failing:
//! 1. from [`REFUSE_PERCENT`] of the limit, new connections are refused before
//!    the upgrade (HTTP 503 `overloaded`, refused reason `memory`);
//! 2. from [`SHED_PERCENT`], the client holding the most queued bytes is closed
//!    with 1013 (docs/protocol.md §2.3, §8.1), one at a time, until usage is back under it.
//!
//! Refusing lasts at least [`REFUSE_HOLD`] after usage was last seen at the
//! refuse level, so the clients just shed (and everyone else) do not rush back in
//! and rebuild the backlog the moment it drained.
//!
//! Event frames are refcounted and shared between the tail and every queue, so
//! the sum over-counts what is really held: the guard errs on the safe side.
//! Must not: know about sockets or sessions — connections and sessions report
//! their bytes through [`QueueAccount`] and [`TailAccount`].

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::{MemoryKind, Metrics};

/// Default `--memory-limit`: 1 GiB of buffered event and frame bytes.
pub const DEFAULT_MEMORY_LIMIT: u64 = 1024 * 1024 * 1024;
/// Smallest accepted `--memory-limit`.
pub const MIN_MEMORY_LIMIT: u64 = 1024 * 1024;
/// New connections are refused from this share of the limit.
pub const REFUSE_PERCENT: u64 = 80;
/// Clients are shed from this share of the limit.
pub const SHED_PERCENT: u64 = 95;
/// How long new connections stay refused after usage was last seen at the refuse level.
pub const REFUSE_HOLD: Duration = Duration::from_secs(2);
/// Only a client holding at least limit / this many bytes is worth shedding.
const MIN_SHED_DIVISOR: u64 = 64;
/// At most this many clients are shed per wake-up (the rest wait for the next).
const MAX_SHED_PER_ROUND: usize = 16;
/// How often the level is re-checked without a wake-up.
const CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// How close buffered memory is to the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pressure {
    Normal = 0,
    /// Refuse new connections.
    Refuse = 1,
    /// Refuse, and shed the clients holding the most bytes.
    Shed = 2,
}

impl Pressure {
    pub fn as_str(self) -> &'static str {
        match self {
            Pressure::Normal => "normal",
            Pressure::Refuse => "refuse",
            Pressure::Shed => "shed",
        }
    }
}

/// The server-wide account of buffered bytes.
#[derive(Debug)]
pub struct MemoryGuard {
    limit: u64,
    refuse_at: u64,
    shed_at: u64,
    queued: AtomicU64,
    tails: AtomicU64,
    /// Every connection's queue (registered once per connection; pruned lazily).
    queues: Mutex<Vec<Weak<QueueAccount>>>,
    wake: Notify,
    /// The level last logged, so each transition is logged once.
    logged: AtomicU8,
    /// Refuse until this many ms after `created` (see [`REFUSE_HOLD`]).
    refuse_until_ms: AtomicU64,
    created: Instant,
}

impl MemoryGuard {
    /// A guard for `limit` bytes.
    pub fn new(limit: u64) -> Arc<MemoryGuard> {
        Arc::new(MemoryGuard {
            limit,
            refuse_at: limit / 100 * REFUSE_PERCENT,
            shed_at: limit / 100 * SHED_PERCENT,
            queued: AtomicU64::new(0),
            tails: AtomicU64::new(0),
            queues: Mutex::new(Vec::new()),
            wake: Notify::new(),
            logged: AtomicU8::new(Pressure::Normal as u8),
            refuse_until_ms: AtomicU64::new(0),
            created: Instant::now(),
        })
    }

    /// A guard that never refuses or sheds (unit tests, tools).
    pub fn unlimited() -> Arc<MemoryGuard> {
        Self::new(u64::MAX)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes waiting in client queues.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// Bytes held in the sessions' event tails.
    pub fn tails(&self) -> u64 {
        self.tails.load(Ordering::Relaxed)
    }

    /// Copy this accounting into `ccrelay_memory_buffered_bytes` (called before
    /// a scrape).
    pub fn record_metrics(&self, metrics: &Metrics) {
        metrics.set_memory_buffered(MemoryKind::Queues, self.queued());
        metrics.set_memory_buffered(MemoryKind::Tails, self.tails());
    }

    /// Everything accounted.
    pub fn used(&self) -> u64 {
        self.queued().saturating_add(self.tails())
    }

    /// The current level. At or above the refuse level, this (re)starts the refuse hold.
    pub fn pressure(&self) -> Pressure {
        let used = self.used();
        if used >= self.shed_at {
            self.hold_refusal();
            Pressure::Shed
        } else if used >= self.refuse_at {
            self.hold_refusal();
            Pressure::Refuse
        } else if self.elapsed_ms() < self.refuse_until_ms.load(Ordering::Relaxed) {
            Pressure::Refuse
        } else {
            Pressure::Normal
        }
    }

    /// Whether new connections must be refused now.
    pub fn refusing(&self) -> bool {
        self.pressure() >= Pressure::Refuse
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn hold_refusal(&self) {
        let until = self.elapsed_ms() + REFUSE_HOLD.as_millis() as u64;
        self.refuse_until_ms.fetch_max(until, Ordering::Relaxed);
    }

    /// A new connection's queue account, registered for shedding.
    pub fn queue(self: &Arc<Self>) -> Arc<QueueAccount> {
        let account = Arc::new(QueueAccount {
            guard: self.clone(),
            bytes: AtomicU64::new(0),
            shed: CancellationToken::new(),
        });
        if let Ok(mut queues) = self.queues.lock() {
            if queues.len() == queues.capacity() {
                queues.retain(|q| q.strong_count() > 0);
            }
            queues.push(Arc::downgrade(&account));
        }
        account
    }

    /// A session's tail account.
    pub fn tail(self: &Arc<Self>) -> TailAccount {
        TailAccount {
            guard: self.clone(),
            bytes: 0,
        }
    }

    /// Shed until usage is under the shed level (counting clients already shed as
    /// freed). Returns how many clients were shed.
    fn shed_round(&self, metrics: &Metrics) -> usize {
        let mut shed = 0;
        while shed < MAX_SHED_PER_ROUND {
            let Ok(mut queues) = self.queues.lock() else {
                break;
            };
            queues.retain(|q| q.strong_count() > 0);
            let live: Vec<Arc<QueueAccount>> = queues.iter().filter_map(Weak::upgrade).collect();
            drop(queues);
            let releasing: u64 = live
                .iter()
                .filter(|q| q.shed.is_cancelled())
                .map(|q| q.bytes())
                .sum();
            if self.used().saturating_sub(releasing) < self.shed_at {
                break;
            }
            let Some(victim) = live
                .iter()
                .filter(|q| !q.shed.is_cancelled())
                .max_by_key(|q| q.bytes())
            else {
                break;
            };
            let bytes = victim.bytes();
            if bytes < self.limit / MIN_SHED_DIVISOR {
                // The pressure is not from one slow client (tails, many small queues).
                break;
            }
            tracing::warn!(
                queued_bytes = bytes,
                used_bytes = self.used(),
                limit_bytes = self.limit,
                "memory pressure: shedding the client with the largest queue (close 1013)"
            );
            victim.shed.cancel();
            metrics.memory_shed.inc();
            shed += 1;
        }
        shed
    }

    /// Log each change of level once.
    fn log_level(&self) -> Pressure {
        let level = self.pressure();
        let before = self.logged.swap(level as u8, Ordering::Relaxed);
        if before != level as u8 {
            let (used, limit) = (self.used(), self.limit);
            match level {
                Pressure::Normal => {
                    tracing::info!(
                        used_bytes = used,
                        limit_bytes = limit,
                        "memory pressure over: accepting connections again"
                    )
                }
                Pressure::Refuse => {
                    tracing::warn!(
                        used_bytes = used,
                        limit_bytes = limit,
                        "memory pressure: refusing new connections"
                    )
                }
                Pressure::Shed => {
                    tracing::warn!(
                        used_bytes = used,
                        limit_bytes = limit,
                        "memory pressure: shedding slow clients"
                    )
                }
            }
        }
        level
    }

    /// The shedder: wakes when a push crosses the shed level (and every
    /// [`CHECK_INTERVAL`]), logs level changes and sheds. Runs until `stop`.
    pub async fn run(self: Arc<Self>, metrics: Arc<Metrics>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tick.tick() => {}
            }
            if self.log_level() == Pressure::Shed && self.shed_round(&metrics) > 0 {
                // Give the shed writers a moment to drop their queues.
                tokio::task::yield_now().await;
            }
        }
    }
}

/// The bytes waiting in one connection's queue, and its shed signal.
#[derive(Debug)]
pub struct QueueAccount {
    guard: Arc<MemoryGuard>,
    bytes: AtomicU64,
    shed: CancellationToken,
}

impl QueueAccount {
    /// Count `bytes` as queued until the returned charge is dropped.
    pub fn charge(self: &Arc<Self>, bytes: u64) -> Charge {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        let queued = self.guard.queued.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if queued.saturating_add(self.guard.tails()) >= self.guard.shed_at {
            self.guard.wake.notify_one();
        }
        Charge {
            account: self.clone(),
            bytes,
        }
    }

    /// Bytes queued now.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Cancelled when this connection is shed; its writer then closes with 1013.
    pub fn shed(&self) -> &CancellationToken {
        &self.shed
    }
}

/// Bytes of one queued item; released when dropped (taken by the writer, or
/// dropped with the queue).
#[derive(Debug)]
pub struct Charge {
    account: Arc<QueueAccount>,
    bytes: u64,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.account.bytes.fetch_sub(self.bytes, Ordering::Relaxed);
        self.account
            .guard
            .queued
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A session's in-memory tail, as reported by its actor.
#[derive(Debug)]
pub struct TailAccount {
    guard: Arc<MemoryGuard>,
    bytes: u64,
}

impl TailAccount {
    /// Report the tail's current size.
    pub fn set(&mut self, bytes: usize) {
        let bytes = bytes as u64;
        if bytes >= self.bytes {
            self.guard
                .tails
                .fetch_add(bytes - self.bytes, Ordering::Relaxed);
        } else {
            self.guard
                .tails
                .fetch_sub(self.bytes - bytes, Ordering::Relaxed);
        }
        self.bytes = bytes;
    }
}

impl Drop for TailAccount {
    fn drop(&mut self) {
        self.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_charges_and_tails() {
        let guard = MemoryGuard::new(10_000);
        let q = guard.queue();
        assert_eq!(guard.pressure(), Pressure::Normal);
        let a = q.charge(7_000);
        let mut tail = guard.tail();
        tail.set(1_000);
        assert_eq!(guard.used(), 8_000);
        assert!(guard.refusing());
        assert_eq!(guard.pressure(), Pressure::Refuse);
        let b = q.charge(1_600);
        assert_eq!(guard.pressure(), Pressure::Shed);
        assert_eq!(q.bytes(), 8_600);
        drop(a);
        drop(b);
        tail.set(500);
        assert_eq!(guard.used(), 500);
        drop(tail);
        assert_eq!(guard.used(), 0);
        assert_eq!(q.bytes(), 0);
        // Refusal outlasts the pressure by the hold.
        assert_eq!(guard.pressure(), Pressure::Refuse);
        guard.refuse_until_ms.store(0, Ordering::Relaxed);
        assert_eq!(guard.pressure(), Pressure::Normal);
    }

    #[test]
    fn sheds_the_largest_queue_once() {
        let metrics = Metrics::new();
        let guard = MemoryGuard::new(10_000);
        let small = guard.queue();
        let big = guard.queue();
        let _s = small.charge(1_000);
        let _b = big.charge(9_000);
        assert_eq!(guard.shed_round(&metrics), 1);
        assert!(big.shed().is_cancelled());
        assert!(!small.shed().is_cancelled());
        // The shed queue's bytes count as released: nobody else is shed meanwhile.
        assert_eq!(guard.shed_round(&metrics), 0);
        assert_eq!(metrics.memory_shed.get(), 1);
    }

    #[test]
    fn small_queues_are_not_shed() {
        let metrics = Metrics::new();
        let guard = MemoryGuard::new(64_000);
        let mut tail = guard.tail();
        tail.set(63_000);
        let q = guard.queue();
        let _c = q.charge(900);
        assert_eq!(guard.pressure(), Pressure::Shed);
        assert_eq!(guard.shed_round(&metrics), 0);
        assert!(!q.shed().is_cancelled());
    }
}
