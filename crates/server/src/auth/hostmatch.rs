//! `from="..."` patterns against a peer address, as OpenSSH's `match_host_and_ip`
//! does with `UseDNS no`: host names are never looked up.
//!
//! A pattern list is comma-separated; each entry is an address, a CIDR network or
//! a wildcard pattern (`*`, `?`) matched against the address text, optionally
//! negated with `!`. A negated entry that matches denies outright; otherwise at
//! least one entry must match. A CIDR with host bits set (`10.0.0.1/8`) makes the
//! whole list deny, as in OpenSSH. An IPv4-mapped IPv6 peer is matched as IPv4.

use std::net::IpAddr;

use ipnet::IpNet;

/// Why a `from=` list did not allow the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromRefusal {
    /// No entry matched.
    NotMatched,
    /// A negated entry matched (the entry, without its `!`).
    Negated(String),
    /// The list has an entry OpenSSH rejects (empty, inconsistent CIDR mask).
    Invalid(String),
}

impl std::fmt::Display for FromRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotMatched => f.write_str("no pattern matched"),
            Self::Negated(p) => write!(f, "denied by !{p}"),
            Self::Invalid(p) => write!(f, "invalid pattern {p:?}"),
        }
    }
}

/// The address as it is matched: IPv4-mapped IPv6 becomes IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Does the pattern list allow `peer`?
pub fn match_from(patterns: &str, peer: IpAddr) -> Result<(), FromRefusal> {
    let peer = canonical(peer);
    let peer_text = peer.to_string();
    let mut matched = false;
    for entry in patterns.split(',') {
        let (negated, body) = match entry.strip_prefix('!') {
            Some(b) => (true, b),
            None => (false, entry),
        };
        if body.is_empty() {
            return Err(FromRefusal::Invalid(entry.to_owned()));
        }
        let hit = match parse_network(body) {
            Some(Ok(net)) => net.contains(&peer),
            Some(Err(())) => return Err(FromRefusal::Invalid(entry.to_owned())),
            None => wildcard_match(&body.to_ascii_lowercase(), &peer_text),
        };
        if hit {
            if negated {
                return Err(FromRefusal::Negated(body.to_owned()));
            }
            matched = true;
        }
    }
    if matched {
        Ok(())
    } else {
        Err(FromRefusal::NotMatched)
    }
}

/// `Some(Ok)` for an address or CIDR network, `Some(Err)` for a CIDR with host
/// bits set, `None` when the entry is not an address (then it is a wildcard).
fn parse_network(body: &str) -> Option<Result<IpNet, ()>> {
    if body.contains('/') {
        let net: IpNet = body.parse().ok()?;
        // A mapped-IPv4 network would never match a canonical peer; so be it.
        Some(if net.trunc() == net { Ok(net) } else { Err(()) })
    } else {
        let ip: IpAddr = body.parse().ok()?;
        Some(Ok(IpNet::from(canonical(ip))))
    }
}

/// OpenSSH `match_pattern`: `*` any run of characters, `?` exactly one.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn exact_cidr_and_wildcards() {
        assert_eq!(match_from("127.0.0.1", ip("127.0.0.1")), Ok(()));
        assert_eq!(
            match_from("127.0.0.2", ip("127.0.0.1")),
            Err(FromRefusal::NotMatched)
        );
        assert_eq!(match_from("10.0.0.0/8", ip("10.200.3.4")), Ok(()));
        assert_eq!(
            match_from("10.0.0.0/8", ip("11.0.0.1")),
            Err(FromRefusal::NotMatched)
        );
        assert_eq!(match_from("192.168.1.*", ip("192.168.1.77")), Ok(()));
        assert_eq!(match_from("192.168.1.?", ip("192.168.1.7")), Ok(()));
        assert_eq!(
            match_from("192.168.1.?", ip("192.168.1.77")),
            Err(FromRefusal::NotMatched)
        );
        assert_eq!(match_from("*", ip("8.8.8.8")), Ok(()));
        assert_eq!(match_from("fd00::/8", ip("fd12::1")), Ok(()));
        assert_eq!(match_from("::1", ip("::1")), Ok(()));
        assert_eq!(match_from("10.*", ip("::1")), Err(FromRefusal::NotMatched));
    }

    #[test]
    fn negation_denies_outright() {
        let list = "10.0.0.0/8,!10.1.2.3";
        assert_eq!(match_from(list, ip("10.9.9.9")), Ok(()));
        assert_eq!(
            match_from(list, ip("10.1.2.3")),
            Err(FromRefusal::Negated("10.1.2.3".into()))
        );
        // Order does not matter: the negation wins even after a positive match.
        assert!(match_from("!127.0.0.*,*", ip("127.0.0.1")).is_err());
        // A negation alone never allows anything.
        assert_eq!(
            match_from("!10.0.0.1", ip("10.0.0.2")),
            Err(FromRefusal::NotMatched)
        );
    }

    #[test]
    fn ipv4_mapped_ipv6_is_matched_as_ipv4() {
        let mapped = ip("::ffff:127.0.0.1");
        assert_eq!(match_from("127.0.0.1", mapped), Ok(()));
        assert_eq!(match_from("127.0.0.0/8", mapped), Ok(()));
        assert_eq!(match_from("127.0.*", mapped), Ok(()));
        assert!(match_from("!127.0.0.1,*", mapped).is_err());
    }

    #[test]
    fn host_names_and_bad_entries() {
        // A host name pattern never matches an address (no DNS).
        assert_eq!(
            match_from("localhost", ip("127.0.0.1")),
            Err(FromRefusal::NotMatched)
        );
        assert!(matches!(
            match_from("10.0.0.1/8", ip("10.0.0.1")),
            Err(FromRefusal::Invalid(_))
        ));
        assert!(matches!(
            match_from("127.0.0.1,", ip("127.0.0.1")),
            Err(FromRefusal::Invalid(_))
        ));
        assert!(matches!(
            match_from("!", ip("127.0.0.1")),
            Err(FromRefusal::Invalid(_))
        ));
    }

    #[test]
    fn wildcard_engine() {
        assert!(wildcard_match("a*b*c", "axxbyyc"));
        assert!(wildcard_match("*", ""));
        assert!(!wildcard_match("a*b", "axxc"));
        assert!(wildcard_match("*.*.*.1", "10.0.0.1"));
        assert!(!wildcard_match("?", ""));
    }
}
