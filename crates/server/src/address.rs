//! The address key of a peer: what every per-address rule counts (docs/protocol.md
//! "Transport"): the pre-authentication and plain HTTP connection caps, the auth
//! failure throttle and pairing's one pending request per address.
//!
//! An IPv4 address is its own key (an IPv4-mapped IPv6 address is unmapped first).
//! A global unicast IPv6 address (2000::/3) is keyed by its prefix,
//! `--ipv6-prefix-len` bits (64 by default): one subscriber is usually handed a
//! whole /64 and can use any address in it, so counting addresses would let one
//! host take any number of places. Every other IPv6 address — unique-local
//! (fc00::/7, e.g. a Tailscale network), link-local, loopback — is keyed by the
//! whole address: there, neighbours share a prefix and each host has its own.
//! Keys only group: logs, `from=` and the `peer` owners are shown keep the full
//! address. Must not: know where the address came from (see `listen::proxy`).

use std::net::{IpAddr, Ipv6Addr};

use ipnet::{IpNet, Ipv6Net};

/// `--ipv6-prefix-len` when none is given.
pub const DEFAULT_IPV6_PREFIX_LEN: u8 = 64;

/// How peer addresses are grouped into keys; one per server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressGrouping {
    ipv6_prefix_len: u8,
}

impl Default for AddressGrouping {
    fn default() -> Self {
        AddressGrouping {
            ipv6_prefix_len: DEFAULT_IPV6_PREFIX_LEN,
        }
    }
}

impl AddressGrouping {
    /// Global IPv6 addresses grouped by their first `ipv6_prefix_len` bits
    /// (1 to 128; `None` otherwise).
    pub fn new(ipv6_prefix_len: u8) -> Option<AddressGrouping> {
        (1..=128)
            .contains(&ipv6_prefix_len)
            .then_some(AddressGrouping { ipv6_prefix_len })
    }

    pub fn ipv6_prefix_len(&self) -> u8 {
        self.ipv6_prefix_len
    }

    /// The key `ip` is counted under.
    pub fn key(&self, ip: IpAddr) -> AddressKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => AddressKey(IpNet::from(IpAddr::V4(v4))),
            IpAddr::V6(v6) if is_global_unicast(v6) => {
                // In range by construction (1..=128), so `new` cannot fail.
                let net = Ipv6Net::new(v6, self.ipv6_prefix_len)
                    .map(|n| n.trunc())
                    .unwrap_or_else(|_| Ipv6Net::from(v6));
                AddressKey(IpNet::V6(net))
            }
            IpAddr::V6(v6) => AddressKey(IpNet::from(IpAddr::V6(v6))),
        }
    }
}

/// 2000::/3, the block global unicast addresses are allocated from.
fn is_global_unicast(v6: Ipv6Addr) -> bool {
    v6.segments()[0] & 0xe000 == 0x2000
}

/// The unit a per-address rule counts: one address, or one global IPv6 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressKey(IpNet);

impl AddressKey {
    /// The address or network this key stands for.
    pub fn network(&self) -> IpNet {
        self.0
    }
}

impl std::fmt::Display for AddressKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.prefix_len() == self.0.max_prefix_len() {
            self.0.addr().fmt(f)
        } else {
            self.0.fmt(f)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> AddressKey {
        AddressGrouping::default().key(s.parse().unwrap())
    }

    #[test]
    fn ipv4_is_its_own_key_and_mapped_ipv6_is_ipv4() {
        assert_eq!(key("192.0.2.1").to_string(), "192.0.2.1");
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
        assert_eq!(key("::ffff:127.0.0.1").to_string(), "127.0.0.1");
    }

    #[test]
    fn global_ipv6_is_grouped_by_its_prefix() {
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_eq!(key("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        // The edges of 2000::/3.
        assert_eq!(key("2000::1"), key("2000::2"));
        assert_eq!(key("3fff:1:2:3::1"), key("3fff:1:2:3::2"));
        let g48 = AddressGrouping::new(48).unwrap();
        assert_eq!(
            g48.key("2001:db8:1:2::1".parse().unwrap()),
            g48.key("2001:db8:1:ffff::1".parse().unwrap())
        );
        assert_ne!(
            g48.key("2001:db8:1::1".parse().unwrap()),
            g48.key("2001:db8:2::1".parse().unwrap())
        );
        let g128 = AddressGrouping::new(128).unwrap();
        assert_ne!(
            g128.key("2001:db8::1".parse().unwrap()),
            g128.key("2001:db8::2".parse().unwrap())
        );
        assert_eq!(
            g128.key("2001:db8::1".parse().unwrap()).to_string(),
            "2001:db8::1"
        );
    }

    #[test]
    fn other_ipv6_is_keyed_by_the_whole_address() {
        for (a, b) in [
            // Unique-local (a Tailscale network), link-local, loopback, outside 2000::/3.
            ("fd7a:115c:a1e0::1", "fd7a:115c:a1e0::2"),
            ("fc00::1", "fc00::2"),
            ("fe80::1", "fe80::2"),
            ("4000::1", "4000::2"),
            ("1fff:ffff::1", "1fff:ffff::2"),
        ] {
            assert_ne!(key(a), key(b), "{a} and {b}");
            assert_eq!(key(a).to_string(), a);
        }
        assert_eq!(key("::1").to_string(), "::1");
    }

    #[test]
    fn prefix_lengths_outside_1_to_128_are_refused() {
        assert!(AddressGrouping::new(0).is_none());
        assert!(AddressGrouping::new(129).is_none());
        assert_eq!(AddressGrouping::new(1).unwrap().ipv6_prefix_len(), 1);
        assert_eq!(AddressGrouping::default().ipv6_prefix_len(), 64);
        let g1 = AddressGrouping::new(1).unwrap();
        assert_eq!(
            g1.key("2001:db8::1".parse().unwrap()),
            g1.key("3fff::1".parse().unwrap())
        );
    }
}
