//! `--trusted-proxy`: which address a connection is "from".
//!
//! Owns: parsing trusted networks and choosing the client address of a request:
//! the TCP peer, or, when that peer is a trusted proxy, the last `X-Forwarded-For`
//! entry that is not itself in a trusted network (docs/protocol.md §1.2). Pure functions.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// Parse `CIDR` or a bare address (a single host).
pub fn parse_network(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("expected a network like 10.0.0.0/8 or an address, got {s:?}"))
}

/// An address as the limits see it (IPv4-mapped IPv6 is the IPv4 address).
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Whether `ip` is in one of the trusted networks.
pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = canonical(ip);
    trusted.iter().any(|n| n.contains(&ip))
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_entry(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"');
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .map(canonical)
}

/// The client address of a request from `peer`: `peer` unless it is a trusted
/// proxy, else the last `X-Forwarded-For` entry outside the trusted networks.
/// An entry that is not an address stops the walk (the proxy chain is broken
/// there) and the peer's address is used.
pub fn client_address(peer: IpAddr, trusted: &[IpNet], headers: &HeaderMap) -> IpAddr {
    let peer = canonical(peer);
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let mut entries: Vec<&str> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(v) = value.to_str() else {
            return peer;
        };
        entries.extend(v.split(','));
    }
    for entry in entries.iter().rev() {
        match parse_entry(entry) {
            Some(ip) if is_trusted(ip, trusted) => continue,
            Some(ip) => return ip,
            None => return peer,
        }
    }
    peer
}

/// The `X-Forwarded-For` parser as the fuzz target (fuzz/fuzz_targets/forwarded_for.rs)
/// and the corpus replay (tests/it/fuzz_corpus.rs) drive it.
pub mod fuzzing {
    use std::net::IpAddr;

    use axum::http::{HeaderMap, HeaderValue};

    use super::{client_address, is_trusted, parse_network};
    use crate::address::AddressGrouping;

    /// Each line of `data` as one `X-Forwarded-For` header of a request from a
    /// trusted proxy (127.0.0.1; trusted: 127.0.0.0/8, 10.0.0.0/8, fd00::/8).
    /// Panics if the answer breaks the rules: the proxy itself, or an untrusted
    /// address in its IPv4 form when mapped. Returns the client address.
    pub fn forwarded_for(data: &[u8]) -> IpAddr {
        let trusted: Vec<_> = ["127.0.0.0/8", "10.0.0.0/8", "fd00::/8"]
            .iter()
            .filter_map(|n| parse_network(n).ok())
            .collect();
        let peer = IpAddr::from([127, 0, 0, 1]);
        let mut headers = HeaderMap::new();
        for line in data.split(|b| *b == b'\n') {
            if let Ok(value) = HeaderValue::from_bytes(line) {
                headers.append("x-forwarded-for", value);
            }
        }
        let ip = client_address(peer, &trusted, &headers);
        assert!(ip == peer || !is_trusted(ip, &trusted), "{ip} is trusted");
        assert_eq!(ip, ip.to_canonical(), "{ip} is not canonical");
        for len in [1, 48, 64, 128] {
            if let Some(grouping) = AddressGrouping::new(len) {
                let _ = grouping.key(ip);
            }
        }
        ip
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_networks_and_hosts() {
        assert_eq!(
            parse_network("127.0.0.1/32").unwrap().to_string(),
            "127.0.0.1/32"
        );
        assert_eq!(
            parse_network("10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(parse_network("::1").unwrap().to_string(), "::1/128");
        assert!(parse_network("nonsense").is_err());
        assert!(parse_network("10.0.0.0/33").is_err());
    }

    #[test]
    fn untrusted_peers_keep_their_address() {
        let trusted = [parse_network("127.0.0.1/32").unwrap()];
        let h = xff(&["9.9.9.9"]);
        assert_eq!(
            client_address(ip("127.0.0.2"), &trusted, &h),
            ip("127.0.0.2")
        );
        assert_eq!(client_address(ip("127.0.0.2"), &[], &h), ip("127.0.0.2"));
    }

    #[test]
    fn trusted_proxies_report_the_last_untrusted_entry() {
        let trusted = [
            parse_network("127.0.0.1/32").unwrap(),
            parse_network("10.0.0.0/8").unwrap(),
        ];
        let peer = ip("127.0.0.1");
        // A client-supplied first entry is not believed: the last untrusted one is.
        let h = xff(&["6.6.6.6, 1.2.3.4", "10.0.0.7"]);
        assert_eq!(client_address(peer, &trusted, &h), ip("1.2.3.4"));
        assert_eq!(
            client_address(peer, &trusted, &xff(&["[2001:db8::1]:443"])),
            ip("2001:db8::1")
        );
        assert_eq!(
            client_address(peer, &trusted, &xff(&["1.2.3.4:5678"])),
            ip("1.2.3.4")
        );
        // No header, only trusted entries, or garbage: the proxy's own address.
        assert_eq!(client_address(peer, &trusted, &HeaderMap::new()), peer);
        assert_eq!(client_address(peer, &trusted, &xff(&["10.1.1.1"])), peer);
        assert_eq!(
            client_address(peer, &trusted, &xff(&["1.2.3.4, junk"])),
            peer
        );
        // IPv4-mapped peers match IPv4 networks.
        assert_eq!(
            client_address(ip("::ffff:127.0.0.1"), &trusted, &xff(&["5.5.5.5"])),
            ip("5.5.5.5")
        );
    }
}
