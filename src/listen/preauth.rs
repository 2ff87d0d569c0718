//! The per-address cap on connections that are not yet authenticated
//! (PROTOCOL.md §1: at most 16 per address, counted from the TCP accept).
//!
//! Owns: the count per address and the RAII token a connection holds until it
//! authenticates or closes. Must not: decide what an address is (see `proxy`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Unauthenticated connections one address may hold.
pub const PRE_AUTH_PER_ADDRESS: u32 = 16;

/// Unauthenticated connections per address.
#[derive(Debug)]
pub struct PreAuthCap {
    per_address: u32,
    counts: Mutex<HashMap<IpAddr, u32>>,
}

impl PreAuthCap {
    pub fn new(per_address: u32) -> Arc<PreAuthCap> {
        Arc::new(PreAuthCap {
            per_address,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// A token for one more unauthenticated connection from `ip`, unless it holds
    /// the maximum already.
    pub fn try_take(self: &Arc<Self>, ip: IpAddr) -> Option<PreAuthToken> {
        let ip = ip.to_canonical();
        let mut counts = self.counts.lock().ok()?;
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.per_address {
            return None;
        }
        *n += 1;
        Some(PreAuthToken {
            cap: self.clone(),
            ip,
        })
    }

    /// Tokens `ip` holds now.
    pub fn held(&self, ip: IpAddr) -> u32 {
        self.counts
            .lock()
            .map(|c| c.get(&ip.to_canonical()).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Addresses holding at least one token.
    pub fn addresses(&self) -> usize {
        self.counts.lock().map(|c| c.len()).unwrap_or(0)
    }
}

/// One unauthenticated connection's place in its address's count; released on drop.
#[derive(Debug)]
pub struct PreAuthToken {
    cap: Arc<PreAuthCap>,
    ip: IpAddr,
}

impl PreAuthToken {
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

impl Drop for PreAuthToken {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.cap.counts.lock()
            && let Some(n) = counts.get_mut(&self.ip)
        {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_each_address_and_releases_on_drop() {
        let cap = PreAuthCap::new(2);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let t1 = cap.try_take(a).unwrap();
        let _t2 = cap.try_take(a).unwrap();
        assert!(cap.try_take(a).is_none());
        let _t3 = cap.try_take(b).expect("another address is not affected");
        drop(t1);
        assert_eq!(cap.held(a), 1);
        assert!(cap.try_take(a).is_some());
        // Mapped IPv6 counts as the IPv4 address.
        let mapped: IpAddr = "::ffff:127.0.0.3".parse().unwrap();
        assert_eq!(cap.held(mapped), 1);
    }

    #[test]
    fn forgets_addresses_with_no_connections() {
        let cap = PreAuthCap::new(16);
        let t = cap.try_take("10.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(cap.addresses(), 1);
        drop(t);
        assert_eq!(cap.addresses(), 0);
    }
}
