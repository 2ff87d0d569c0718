//! Per-address throttle of failed authentications (HTTP 429 before the upgrade).
//!
//! A token bucket per address: `failures_per_minute` tokens, refilled evenly
//! over a minute. An attempt takes one when it arrives ([`AuthThrottle::try_take`],
//! docs/protocol.md §3.6) and a success gives it back ([`AuthThrottle::give_back`]), so
//! that many concurrent attempts from one address can never all be verified;
//! timeouts and protocol errors take one with [`AuthThrottle::record_failure`].
//! An address with less than one token left is refused until one has refilled. Our own buckets rather than
//! governor's keyed limiter because `check` must look without consuming.
//! Addresses are counted by their [`AddressKey`] (a global IPv6 address by its
//! prefix, `--ipv6-prefix-len`; IPv4-mapped IPv6 as IPv4). Memory is bounded: full buckets carry no
//! information and are pruned, and past `max_entries` the least-throttled
//! entry is evicted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::address::{AddressGrouping, AddressKey};

/// Default bound on tracked addresses.
pub const DEFAULT_MAX_ENTRIES: usize = 65_536;
/// The contract's floor: at least this many failures a minute are allowed.
pub const MIN_FAILURES_PER_MINUTE: u32 = 10;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

#[derive(Debug)]
struct State {
    buckets: HashMap<AddressKey, Bucket>,
    /// Failures recorded since the last prune.
    since_prune: usize,
}

/// Per-IP failed-auth throttle. Shared by reference (wrap in `Arc`).
#[derive(Debug)]
pub struct AuthThrottle {
    burst: f64,
    /// Tokens regained per second.
    rate: f64,
    max_entries: usize,
    grouping: AddressGrouping,
    state: Mutex<State>,
}

impl AuthThrottle {
    /// Allow `failures_per_minute` failures per address per minute (burst of the
    /// same size); values under 10 are raised to 10, as the contract requires.
    pub fn new(failures_per_minute: u32) -> Self {
        Self::with_capacity(failures_per_minute, DEFAULT_MAX_ENTRIES)
    }

    /// Like [`AuthThrottle::new`] with an explicit bound on tracked addresses.
    pub fn with_capacity(failures_per_minute: u32, max_entries: usize) -> Self {
        let n = f64::from(failures_per_minute.max(MIN_FAILURES_PER_MINUTE));
        AuthThrottle {
            burst: n,
            rate: n / 60.0,
            max_entries: max_entries.max(1),
            grouping: AddressGrouping::default(),
            state: Mutex::new(State {
                buckets: HashMap::new(),
                since_prune: 0,
            }),
        }
    }

    /// Count addresses by `grouping` (the server's `--ipv6-prefix-len`).
    pub fn with_grouping(mut self, grouping: AddressGrouping) -> Self {
        self.grouping = grouping;
        self
    }

    fn key(&self, ip: IpAddr) -> AddressKey {
        self.grouping.key(ip)
    }

    /// Ok if `ip` may try to authenticate; else how long until it may (Retry-After). Does not consume.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.check_at(ip, Instant::now())
    }

    /// Consume one token for a failed authentication from `ip`.
    pub fn record_failure(&self, ip: IpAddr) {
        self.record_failure_at(ip, Instant::now());
    }

    /// An attempt from `ip` arrives: take one token if there is one (Ok), else
    /// refuse it without taking anything (Err: how long until one refills).
    pub fn try_take(&self, ip: IpAddr) -> Result<(), Duration> {
        self.try_take_at(ip, Instant::now())
    }

    /// An attempt from `ip` succeeded: return the token it took.
    pub fn give_back(&self, ip: IpAddr) {
        self.give_back_at(ip, Instant::now());
    }

    /// Number of addresses currently tracked.
    pub fn tracked(&self) -> usize {
        self.lock().buckets.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent under a panic elsewhere: every update is one assignment.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refill(&self, b: &Bucket, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(b.updated).as_secs_f64();
        (b.tokens + dt * self.rate).min(self.burst)
    }

    pub(crate) fn check_at(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let state = self.lock();
        let Some(b) = state.buckets.get(&self.key(ip)) else {
            return Ok(());
        };
        let tokens = self.refill(b, now);
        if tokens >= 1.0 {
            Ok(())
        } else {
            let secs = (1.0 - tokens) / self.rate;
            // Never "retry after 0": round up to whole milliseconds, at least one.
            Err(Duration::from_millis((secs * 1000.0).ceil().max(1.0) as u64))
        }
    }

    pub(crate) fn try_take_at(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        // One lock for the check and the take: concurrent attempts cannot both
        // see the last token.
        let mut state = self.lock();
        let k = self.key(ip);
        let tokens = state
            .buckets
            .get(&k)
            .map_or(self.burst, |b| self.refill(b, now));
        if tokens < 1.0 {
            let secs = (1.0 - tokens) / self.rate;
            return Err(Duration::from_millis((secs * 1000.0).ceil().max(1.0) as u64));
        }
        self.take_locked(&mut state, k, tokens, now);
        Ok(())
    }

    pub(crate) fn give_back_at(&self, ip: IpAddr, now: Instant) {
        let mut state = self.lock();
        if let Some(b) = state.buckets.get_mut(&self.key(ip)) {
            let tokens = (self.refill(b, now) + 1.0).min(self.burst);
            *b = Bucket {
                tokens,
                updated: now,
            };
        }
    }

    pub(crate) fn record_failure_at(&self, ip: IpAddr, now: Instant) {
        let mut state = self.lock();
        let k = self.key(ip);
        let tokens = state
            .buckets
            .get(&k)
            .map_or(self.burst, |b| self.refill(b, now));
        self.take_locked(&mut state, k, tokens, now);
    }

    fn take_locked(&self, state: &mut State, k: AddressKey, tokens: f64, now: Instant) {
        state.buckets.insert(
            k,
            Bucket {
                tokens: (tokens - 1.0).max(0.0),
                updated: now,
            },
        );
        state.since_prune += 1;
        if state.buckets.len() > self.max_entries || state.since_prune >= 1024 {
            self.prune(state, now);
        }
    }

    /// Drop full buckets; if still over the bound, evict the fullest ones down to
    /// 90 % of it, so the cost of a sort is spread over many insertions.
    fn prune(&self, state: &mut State, now: Instant) {
        state.since_prune = 0;
        state
            .buckets
            .retain(|_, b| self.refill(b, now) < self.burst);
        if state.buckets.len() <= self.max_entries {
            return;
        }
        let target = self.max_entries - self.max_entries / 10;
        let mut by_tokens: Vec<(f64, AddressKey)> = state
            .buckets
            .iter()
            .map(|(k, b)| (self.refill(b, now), *k))
            .collect();
        by_tokens.sort_by(|a, b| b.0.total_cmp(&a.0));
        let excess = state.buckets.len().saturating_sub(target);
        for (_, k) in by_tokens.into_iter().take(excess) {
            state.buckets.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ten_failures_a_minute_never_block() {
        let t = AuthThrottle::new(10);
        let start = Instant::now();
        let a = ip("192.0.2.1");
        for i in 0..10 {
            assert_eq!(
                t.check_at(a, start + Duration::from_secs(i * 5)),
                Ok(()),
                "attempt {i}"
            );
            t.record_failure_at(a, start + Duration::from_secs(i * 5));
        }
        // Steady state: one failure every 6 s forever is within budget.
        for i in 0..50 {
            let at = start + Duration::from_secs(60 + i * 6);
            assert_eq!(t.check_at(a, at), Ok(()), "steady {i}");
            t.record_failure_at(a, at);
        }
    }

    #[test]
    fn beyond_the_budget_is_refused_with_retry_after() {
        let t = AuthThrottle::new(10);
        let now = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..10 {
            assert!(t.check_at(a, now).is_ok());
            t.record_failure_at(a, now);
        }
        let retry = t.check_at(a, now).unwrap_err();
        assert!(
            retry > Duration::ZERO && retry <= Duration::from_secs(6),
            "{retry:?}"
        );
        // check() does not consume: asking again gives the same answer.
        assert_eq!(t.check_at(a, now), Err(retry));
        // After the Retry-After one more try is allowed.
        assert!(t.check_at(a, now + retry).is_ok());
        // Others are unaffected, including a different IPv6 /64.
        assert!(t.check_at(ip("192.0.2.2"), now).is_ok());
        assert!(t.check_at(ip("::ffff:192.0.2.2"), now).is_ok());
        // The IPv4-mapped form of the throttled address is the same address.
        assert!(t.check_at(ip("::ffff:192.0.2.1"), now).is_err());
    }

    #[test]
    fn attempts_take_on_arrival_and_success_gives_back() {
        let t = AuthThrottle::new(10);
        let now = Instant::now();
        let a = ip("192.0.2.7");
        // Ten attempts in flight at once: all admitted, the eleventh is not.
        for i in 0..10 {
            assert!(t.try_take_at(a, now).is_ok(), "attempt {i}");
        }
        let wait = t.try_take_at(a, now).unwrap_err();
        assert!(wait > Duration::ZERO);
        assert!(t.check_at(a, now).is_err());
        // One succeeds: its token comes back, exactly one more attempt fits.
        t.give_back_at(a, now);
        assert!(t.check_at(a, now).is_ok());
        assert!(t.try_take_at(a, now).is_ok());
        assert!(t.try_take_at(a, now).is_err());
        // Successes never raise the budget above its size.
        let b = ip("192.0.2.8");
        t.try_take_at(b, now).unwrap();
        for _ in 0..5 {
            t.give_back_at(b, now);
        }
        for _ in 0..10 {
            assert!(t.try_take_at(b, now).is_ok());
        }
        assert!(t.try_take_at(b, now).is_err());
    }

    #[test]
    fn ipv6_is_grouped_by_64() {
        let t = AuthThrottle::new(10);
        let now = Instant::now();
        for i in 0..10u16 {
            t.record_failure_at(
                IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 1, 0, 0, 0, i)),
                now,
            );
        }
        assert!(t.check_at(ip("2001:db8:1:1::ffff"), now).is_err());
        assert!(t.check_at(ip("2001:db8:1:2::1"), now).is_ok());
        // Unique-local addresses (a Tailscale network) are counted one by one.
        for _ in 0..10 {
            t.record_failure_at(ip("fd7a:115c:a1e0::1"), now);
        }
        assert!(t.check_at(ip("fd7a:115c:a1e0::1"), now).is_err());
        assert!(t.check_at(ip("fd7a:115c:a1e0::2"), now).is_ok());
        // --ipv6-prefix-len 48 groups wider.
        let t = AuthThrottle::new(10).with_grouping(AddressGrouping::new(48).unwrap());
        for _ in 0..10 {
            t.record_failure_at(ip("2001:db8:1:1::1"), now);
        }
        assert!(t.check_at(ip("2001:db8:1:2::1"), now).is_err());
        assert!(t.check_at(ip("2001:db8:2::1"), now).is_ok());
    }

    #[test]
    fn floor_of_ten_per_minute() {
        let t = AuthThrottle::new(1);
        let now = Instant::now();
        let a = ip("198.51.100.7");
        for _ in 0..10 {
            assert!(t.check_at(a, now).is_ok());
            t.record_failure_at(a, now);
        }
        assert!(t.check_at(a, now).is_err());
    }

    #[test]
    fn memory_is_bounded_and_stale_entries_pruned() {
        let t = AuthThrottle::with_capacity(10, 100);
        let now = Instant::now();
        for i in 0..1000u32 {
            t.record_failure_at(IpAddr::V4(i.into()), now);
            assert!(t.tracked() <= 100);
        }
        // A heavily throttled address survives eviction of lightly throttled ones.
        let bad = ip("203.0.113.9");
        for _ in 0..10 {
            t.record_failure_at(bad, now);
        }
        for i in 1000..1200u32 {
            t.record_failure_at(IpAddr::V4(i.into()), now);
        }
        assert!(t.check_at(bad, now).is_err());
        // A minute later every bucket is full again: the next prune drops them all.
        let later = now + Duration::from_secs(61);
        for _ in 0..1024 {
            t.record_failure_at(bad, later);
        }
        assert_eq!(t.tracked(), 1, "only the address failing now is kept");
    }
}
