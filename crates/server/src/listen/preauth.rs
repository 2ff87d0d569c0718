//! Per-address connection caps (docs/protocol.md "Transport"): at most 16
//! connections per address that are not yet authenticated (counted from the TCP
//! accept), and at most `--max-http-per-address` (32) plain HTTP connections.
//!
//! Owns: the count per [`AddressKey`] and the RAII token a connection holds while
//! it counts. Must not: decide what an address is (see `proxy` and `address`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::address::AddressKey;

/// Unauthenticated connections one address may hold.
pub const PRE_AUTH_PER_ADDRESS: u32 = 16;
/// `--max-http-per-address` when none is given.
pub const DEFAULT_HTTP_PER_ADDRESS: u32 = 32;

/// Connections of one kind per address, at most `per_address` each.
#[derive(Debug)]
pub struct AddressCap {
    per_address: u32,
    counts: Mutex<HashMap<AddressKey, u32>>,
}

impl AddressCap {
    pub fn new(per_address: u32) -> Arc<AddressCap> {
        Arc::new(AddressCap {
            per_address,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// The most one address may hold.
    pub fn per_address(&self) -> u32 {
        self.per_address
    }

    /// A token for one more connection from `key`, unless it holds the maximum already.
    pub fn try_take(self: &Arc<Self>, key: AddressKey) -> Option<AddressToken> {
        let mut counts = self.counts.lock().ok()?;
        let n = counts.entry(key).or_insert(0);
        if *n >= self.per_address {
            return None;
        }
        *n += 1;
        Some(AddressToken {
            cap: self.clone(),
            key,
        })
    }

    /// Tokens `key` holds now.
    pub fn held(&self, key: AddressKey) -> u32 {
        self.counts
            .lock()
            .map(|c| c.get(&key).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Addresses holding at least one token.
    pub fn addresses(&self) -> usize {
        self.counts.lock().map(|c| c.len()).unwrap_or(0)
    }
}

/// One connection's place in its address's count; released on drop.
#[derive(Debug)]
pub struct AddressToken {
    cap: Arc<AddressCap>,
    key: AddressKey,
}

impl AddressToken {
    pub fn key(&self) -> AddressKey {
        self.key
    }
}

impl Drop for AddressToken {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.cap.counts.lock()
            && let Some(n) = counts.get_mut(&self.key)
        {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::AddressGrouping;

    fn key(s: &str) -> AddressKey {
        AddressGrouping::default().key(s.parse().unwrap())
    }

    #[test]
    fn caps_each_address_and_releases_on_drop() {
        let cap = AddressCap::new(2);
        let a = key("127.0.0.2");
        let b = key("127.0.0.3");
        let t1 = cap.try_take(a).unwrap();
        let _t2 = cap.try_take(a).unwrap();
        assert!(cap.try_take(a).is_none());
        let _t3 = cap.try_take(b).expect("another address is not affected");
        drop(t1);
        assert_eq!(cap.held(a), 1);
        assert!(cap.try_take(a).is_some());
        // Mapped IPv6 counts as the IPv4 address.
        assert_eq!(cap.held(key("::ffff:127.0.0.3")), 1);
    }

    #[test]
    fn a_global_ipv6_prefix_is_one_address() {
        let cap = AddressCap::new(2);
        let _t1 = cap.try_take(key("2001:db8:5:5::1")).unwrap();
        let _t2 = cap.try_take(key("2001:db8:5:5::2")).unwrap();
        assert!(cap.try_take(key("2001:db8:5:5::3")).is_none());
        assert!(cap.try_take(key("2001:db8:5:6::1")).is_some());
        // Unique-local addresses each have their own count.
        let _u1 = cap.try_take(key("fd00::1")).unwrap();
        let _u2 = cap.try_take(key("fd00::1")).unwrap();
        assert!(cap.try_take(key("fd00::1")).is_none());
        assert!(cap.try_take(key("fd00::2")).is_some());
    }

    #[test]
    fn forgets_addresses_with_no_connections() {
        let cap = AddressCap::new(16);
        let t = cap.try_take(key("10.0.0.1")).unwrap();
        assert_eq!(cap.addresses(), 1);
        drop(t);
        assert_eq!(cap.addresses(), 0);
    }
}
