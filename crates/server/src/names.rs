//! This server's names (docs/protocol.md, "This server's names"): the host and
//! port pairs under which clients may say they reached this server. Two checks use
//! the same list: origin binding of signatures (docs/protocol.md, "Origin
//! binding"), where a client signs the origin it dialed, and the `Host` check that
//! lets the server's own page open `/v1/ws` (a page on another name that resolves
//! here — DNS rebinding — is refused).
//!
//! A pair is a name when it is: the host and port of `--public-url`; a
//! `--server-name HOST[:PORT]` (without a port, the default port of the scheme in
//! use); a `--tls-name` or a DNS or IP subject alternative name of the certificate,
//! with the listen port; the local address of the very connection; or `localhost`
//! with the listen port, only while the listener holds that port on both loopback
//! addresses and the peer is loopback itself. Nothing else (not the machine's host
//! name, not other interface addresses): a squatter on another port or address, or
//! a server relaying our challenge, can only obtain a signature naming itself.
//!
//! Owns: parsing and normalizing origins and `--server-name` values (lower case,
//! IDNA, no trailing dot, IPv6 in RFC 5952 form, IPv4-mapped IPv6 as IPv4), the
//! list (its fixed part computed once at start), and the option that would admit a
//! refused origin. Must not: see frames, headers or configuration sources.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use rustls_pki_types::CertificateDer;

/// Longest origin accepted from a peer; a real one is far shorter.
pub const MAX_ORIGIN_BYTES: usize = 512;

/// Why a host, origin or `--server-name` value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Over [`MAX_ORIGIN_BYTES`].
    #[error("longer than {MAX_ORIGIN_BYTES} bytes")]
    TooLong,
    /// Not `ws://` or `wss://` (or `http(s)://` for a page's `Origin`).
    #[error("expected {0}")]
    Scheme(&'static str),
    /// A path, query, fragment or user info after the host and port.
    #[error("expected nothing after the host and port")]
    Trailing,
    /// Not a port number from 1 to 65535.
    #[error("bad port {0:?}")]
    Port(String),
    /// Not a DNS name or an IP address.
    #[error("bad host {0:?}")]
    Host(String),
}

/// A normalized host: a lower-case ASCII DNS name (IDNA applied, no trailing
/// dot) or an IP address (IPv4-mapped IPv6 as IPv4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

impl Host {
    /// A host as written in a URL (an IPv6 address in brackets) or bare
    /// (an IPv6 address without brackets is accepted too).
    pub fn parse(text: &str) -> Result<Host, NameError> {
        let bad = || NameError::Host(text.chars().take(64).collect());
        if let Some(inner) = text.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or_else(bad)?;
            let ip: std::net::Ipv6Addr = inner.parse().map_err(|_| bad())?;
            return Ok(Host::Ip(canonical(IpAddr::V6(ip))));
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Host::Ip(canonical(ip)));
        }
        // One trailing dot names the same host (`relay.example.`).
        let name = text.strip_suffix('.').unwrap_or(text);
        if name.is_empty() || name.contains([':', '/', '@', '?', '#', '[', ']']) {
            return Err(bad());
        }
        // The WHATWG host parser, as browsers use it: lower case, IDNA (UTS #46)
        // to punycode, IPv4 forms like `127.1` read as addresses.
        match url::Host::parse(name).map_err(|_| bad())? {
            url::Host::Domain(d) => {
                let d = d.strip_suffix('.').unwrap_or(&d).to_string();
                if d.is_empty() || d.ends_with('.') {
                    return Err(bad());
                }
                Ok(Host::Name(d))
            }
            url::Host::Ipv4(ip) => Ok(Host::Ip(IpAddr::V4(ip))),
            url::Host::Ipv6(ip) => Ok(Host::Ip(canonical(IpAddr::V6(ip)))),
        }
    }

    /// `localhost`.
    fn is_localhost(&self) -> bool {
        matches!(self, Host::Name(n) if n == "localhost")
    }
}

impl fmt::Display for Host {
    /// As in a URL: an IPv6 address in brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// IPv4-mapped IPv6 (`::ffff:127.0.0.1`, a dual-stack socket's view) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The WebSocket scheme of an origin (a page's `http`/`https` maps to `ws`/`wss`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Ws,
    Wss,
}

impl Scheme {
    /// 80 for `ws`, 443 for `wss`.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Ws => 80,
            Scheme::Wss => 443,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        }
    }
}

/// An origin, normalized: scheme, host and port (the default port filled in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: Scheme,
    pub host: Host,
    pub port: u16,
}

impl Origin {
    /// The `origin` a client bound its signature to: `ws://HOST[:PORT]` or
    /// `wss://HOST[:PORT]` (a final `/` is tolerated; nothing else after it).
    pub fn parse(text: &str) -> Result<Origin, NameError> {
        Self::parse_with(
            text,
            &[("ws", Scheme::Ws), ("wss", Scheme::Wss)],
            "ws:// or wss://",
        )
    }

    /// A page's `Origin` header: `http` stands for `ws`, `https` for `wss`.
    pub fn parse_page(text: &str) -> Result<Origin, NameError> {
        Self::parse_with(
            text,
            &[("http", Scheme::Ws), ("https", Scheme::Wss)],
            "http:// or https://",
        )
    }

    fn parse_with(
        text: &str,
        schemes: &[(&str, Scheme)],
        expected: &'static str,
    ) -> Result<Origin, NameError> {
        if text.len() > MAX_ORIGIN_BYTES {
            return Err(NameError::TooLong);
        }
        let (scheme, rest) = text.split_once("://").ok_or(NameError::Scheme(expected))?;
        let scheme = schemes
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(scheme))
            .map(|(_, s)| *s)
            .ok_or(NameError::Scheme(expected))?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#', '@', '\\']) {
            return Err(NameError::Trailing);
        }
        let (host, port) = split_host_port(authority)?;
        Ok(Origin {
            scheme,
            host: Host::parse(host)?,
            port: port.unwrap_or(scheme.default_port()),
        })
    }

    /// The origin of a URL a client dials, serialized as a browser does.
    pub fn of(scheme: Scheme, host: &str, port: u16) -> Result<Origin, NameError> {
        Ok(Origin {
            scheme,
            host: Host::parse(host)?,
            port,
        })
    }
}

impl fmt::Display for Origin {
    /// As a browser serializes an origin: `wss://relay.example`,
    /// `ws://127.0.0.1:7878`, `wss://[fd7a::1]:8443` (default port left out).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.host)?;
        if self.port != self.scheme.default_port() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`; the port, when given, 1 to 65535.
fn split_host_port(authority: &str) -> Result<(&str, Option<u16>), NameError> {
    let (host, port) = if authority.starts_with('[') {
        match authority.find(']') {
            Some(end) => {
                let (host, after) = authority.split_at(end + 1);
                match after.strip_prefix(':') {
                    Some(p) => (host, Some(p)),
                    None if after.is_empty() => (host, None),
                    None => return Err(NameError::Host(authority.chars().take(64).collect())),
                }
            }
            None => return Err(NameError::Host(authority.chars().take(64).collect())),
        }
    } else {
        match authority.rsplit_once(':') {
            // An IPv6 address without brackets: ambiguous with a port.
            Some((h, _)) if h.contains(':') => {
                return Err(NameError::Host(authority.chars().take(64).collect()));
            }
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|&n| n != 0 && p.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| NameError::Port(p.chars().take(16).collect()))?,
        ),
    };
    Ok((host, port))
}

/// A `--server-name HOST[:PORT]` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerName {
    pub host: Host,
    /// None: the default port of the scheme in use.
    pub port: Option<u16>,
}

impl ServerName {
    /// `relay.example`, `relay.example:8443`, `[fd7a::1]:8443`, `fd7a::1`.
    pub fn parse(text: &str) -> Result<ServerName, NameError> {
        let text = text.trim();
        if text.len() > MAX_ORIGIN_BYTES {
            return Err(NameError::TooLong);
        }
        // A bare IPv6 address has colons but no brackets.
        if let Ok(ip) = text.parse::<std::net::Ipv6Addr>() {
            return Ok(ServerName {
                host: Host::Ip(canonical(IpAddr::V6(ip))),
                port: None,
            });
        }
        if text.contains(['/', '?', '#', '@', '\\']) {
            return Err(NameError::Trailing);
        }
        let (host, port) = split_host_port(text)?;
        Ok(ServerName {
            host: Host::parse(host)?,
            port,
        })
    }

    fn matches(&self, origin: &Origin) -> bool {
        self.host == origin.host && self.port.unwrap_or(origin.scheme.default_port()) == origin.port
    }
}

/// Where one connection arrived, for the parts of the list that depend on it.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    /// The connection is TLS (the listener serves TLS).
    pub tls: bool,
    /// The local address of its socket.
    pub local: SocketAddr,
    /// The client's address (behind a trusted proxy, the forwarded one).
    pub peer: IpAddr,
}

/// Why an origin was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `ws` on a TLS connection.
    PlaintextSchemeOverTls,
    /// `wss` on a plaintext connection, for a name no proxy in front is declared for.
    TlsSchemeOverPlaintext,
    /// The host and port are not one of this server's names.
    NotAName,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::PlaintextSchemeOverTls => "a ws:// origin on a TLS connection",
            Refusal::TlsSchemeOverPlaintext => {
                "a wss:// origin on a plaintext connection, for a name not given by --public-url or --server-name"
            }
            Refusal::NotAName => "not one of this server's names",
        })
    }
}

/// The list of this server's names: its fixed part, computed once at start.
#[derive(Debug, Clone, Default)]
pub struct ServerNames {
    /// `--public-url` and `--server-name`: names of a proxy in front may carry `wss`
    /// over a plaintext connection.
    declared: Vec<ServerName>,
    /// `--tls-name` values and the certificate's DNS names, with the listen port.
    cert_names: Vec<Host>,
    /// The `--tls-cert` leaf, for its IP address subject alternative names.
    cert_leaf: Option<CertificateDer<'static>>,
    listen_port: u16,
    /// The listener holds its port on both 127.0.0.1 and ::1 (a dual-stack wildcard).
    localhost: bool,
}

impl ServerNames {
    /// The list for a listener bound on `listen` (the real port). `public_url` is
    /// its host and port; `tls_names` the `--tls-name` values (or the self-signed
    /// defaults); `cert_leaf` the served certificate; `dual_stack_wildcard` whether
    /// the listener holds its port on both loopback addresses.
    pub fn new(
        public_url: Option<ServerName>,
        server_names: &[ServerName],
        tls_names: &[String],
        cert_leaf: Option<CertificateDer<'static>>,
        listen: SocketAddr,
        dual_stack_wildcard: bool,
    ) -> ServerNames {
        let mut cert_names: Vec<Host> = tls_names
            .iter()
            .filter_map(|n| Host::parse(n).ok())
            .collect();
        if let Some(leaf) = &cert_leaf
            && let Ok(parsed) = webpki::EndEntityCert::try_from(leaf)
        {
            // A wildcard names no host by itself: only exact DNS names count.
            cert_names.extend(
                parsed
                    .valid_dns_names()
                    .filter(|n| !n.starts_with('*'))
                    .filter_map(|n| Host::parse(n).ok()),
            );
        }
        cert_names.dedup();
        ServerNames {
            declared: public_url
                .into_iter()
                .chain(server_names.iter().cloned())
                .collect(),
            cert_names,
            cert_leaf,
            listen_port: listen.port(),
            localhost: dual_stack_wildcard,
        }
    }

    /// Whether `origin` is acceptable on a connection that arrived as `at`: the
    /// scheme fits the transport, and the host and port are one of the names.
    pub fn admit(&self, origin: &Origin, at: &Arrival) -> Result<(), Refusal> {
        let declared = self.declared.iter().any(|n| n.matches(origin));
        match (origin.scheme, at.tls) {
            (Scheme::Ws, true) => Err(Refusal::PlaintextSchemeOverTls),
            (Scheme::Wss, false) if !declared => Err(Refusal::TlsSchemeOverPlaintext),
            _ if declared || self.is_name(origin, at) => Ok(()),
            _ => Err(Refusal::NotAName),
        }
    }

    fn is_name(&self, origin: &Origin, at: &Arrival) -> bool {
        let host = &origin.host;
        if Host::Ip(canonical(at.local.ip())) == *host && at.local.port() == origin.port {
            return true;
        }
        if origin.port != self.listen_port {
            return false;
        }
        if host.is_localhost() {
            return self.localhost && canonical(at.peer).is_loopback();
        }
        if self.cert_names.contains(host) {
            return true;
        }
        match (host, &self.cert_leaf) {
            (Host::Ip(ip), Some(leaf)) => webpki::EndEntityCert::try_from(leaf).is_ok_and(|c| {
                c.verify_is_valid_for_subject_name(&rustls_pki_types::ServerName::IpAddress(
                    (*ip).into(),
                ))
                .is_ok()
            }),
            _ => false,
        }
    }

    /// The option that would admit an origin refused for `why` (for the log).
    pub fn admit_with(origin: &Origin, why: Refusal) -> String {
        match why {
            Refusal::PlaintextSchemeOverTls => {
                "none: this listener serves TLS, so the client must bind a wss:// origin".into()
            }
            Refusal::TlsSchemeOverPlaintext | Refusal::NotAName => {
                format!("--server-name {}:{}", origin.host, origin.port)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(s: &str) -> Origin {
        Origin::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn at(tls: bool, local: &str, peer: &str) -> Arrival {
        Arrival {
            tls,
            local: local.parse().unwrap(),
            peer: peer.parse().unwrap(),
        }
    }

    #[test]
    fn origins_are_normalized_like_a_browser() {
        for (given, serialized) in [
            ("ws://127.0.0.1:7878", "ws://127.0.0.1:7878"),
            ("WSS://Relay.Example", "wss://relay.example"),
            ("wss://relay.example:443", "wss://relay.example"),
            ("ws://relay.example:80/", "ws://relay.example"),
            ("wss://relay.example.:8443", "wss://relay.example:8443"),
            ("wss://[FD7A:0:0::1]:8443", "wss://[fd7a::1]:8443"),
            ("ws://[::ffff:127.0.0.1]:7878", "ws://127.0.0.1:7878"),
            ("wss://bücher.example", "wss://xn--bcher-kva.example"),
            ("wss://BÜCHER.example.", "wss://xn--bcher-kva.example"),
            ("ws://127.1:9", "ws://127.0.0.1:9"),
        ] {
            assert_eq!(origin(given).to_string(), serialized, "{given}");
        }
        assert_eq!(origin("wss://relay.example").port, 443);
        assert_eq!(origin("ws://relay.example").port, 80);
    }

    #[test]
    fn bad_origins_are_refused() {
        for bad in [
            "",
            "relay.example",
            "https://relay.example",
            "ftp://relay.example",
            "ws://relay.example/v1/ws",
            "ws://user@relay.example",
            "ws://relay.example?x",
            "ws://relay.example#x",
            "ws://relay.example:0",
            "ws://relay.example:65536",
            "ws://relay.example:+80",
            "ws://relay.example:",
            "ws://",
            "ws://.",
            "ws://[::1",
            "ws://[::1]x",
            "ws://::1",
            "ws://1::2:3",
            "ws://a b",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            Origin::parse(&format!("ws://{}", "a".repeat(600))),
            Err(NameError::TooLong)
        );
        assert_eq!(
            Origin::parse_page("https://relay.example").unwrap().scheme,
            Scheme::Wss
        );
        assert!(Origin::parse_page("wss://relay.example").is_err());
    }

    #[test]
    fn server_name_values() {
        let parse = |s: &str| ServerName::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(
            parse("Relay.Example.").host,
            Host::Name("relay.example".into())
        );
        assert_eq!(parse("relay.example").port, None);
        assert_eq!(parse("relay.example:8443").port, Some(8443));
        assert_eq!(
            parse("127.0.0.1:9999").host,
            Host::Ip("127.0.0.1".parse().unwrap())
        );
        assert_eq!(parse("[fd7a::1]:8443").port, Some(8443));
        assert_eq!(
            parse("fd7a:0::1").host,
            Host::Ip("fd7a::1".parse().unwrap())
        );
        for bad in [
            "",
            "a b",
            "relay.example:x",
            "https://relay.example",
            "[::1]:",
            "x/y",
        ] {
            assert!(ServerName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    fn names(declared: &[&str], tls_names: &[&str], listen: &str, dual: bool) -> ServerNames {
        ServerNames::new(
            None,
            &declared
                .iter()
                .map(|s| ServerName::parse(s).unwrap())
                .collect::<Vec<_>>(),
            &tls_names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            None,
            listen.parse().unwrap(),
            dual,
        )
    }

    #[test]
    fn the_connection_local_address_is_a_name_other_ports_are_not() {
        let n = names(&[], &[], "127.0.0.1:7878", false);
        let here = at(false, "127.0.0.1:7878", "127.0.0.1");
        assert_eq!(n.admit(&origin("ws://127.0.0.1:7878"), &here), Ok(()));
        assert_eq!(
            n.admit(&origin("ws://127.0.0.1:7879"), &here),
            Err(Refusal::NotAName)
        );
        assert_eq!(
            n.admit(&origin("ws://127.0.0.2:7878"), &here),
            Err(Refusal::NotAName)
        );
        // localhost only when both loopback addresses are held.
        assert_eq!(
            n.admit(&origin("ws://localhost:7878"), &here),
            Err(Refusal::NotAName)
        );
        // A dual-stack socket sees IPv4 clients as IPv4-mapped addresses.
        let n = names(&[], &[], "[::]:7878", true);
        let mapped = at(false, "[::ffff:127.0.0.1]:7878", "::ffff:127.0.0.1");
        assert_eq!(n.admit(&origin("ws://127.0.0.1:7878"), &mapped), Ok(()));
        assert_eq!(n.admit(&origin("ws://localhost:7878"), &mapped), Ok(()));
        assert_eq!(n.admit(&origin("ws://LOCALHOST.:7878"), &mapped), Ok(()));
        assert_eq!(
            n.admit(&origin("ws://[::1]:7878"), &mapped),
            Err(Refusal::NotAName)
        );
        assert_eq!(
            n.admit(&origin("ws://[::1]:7878"), &at(false, "[::1]:7878", "::1")),
            Ok(())
        );
        // localhost is not a name for a peer that is not loopback.
        let remote = at(false, "[::ffff:192.168.1.5]:7878", "192.168.1.9");
        assert_eq!(
            n.admit(&origin("ws://localhost:7878"), &remote),
            Err(Refusal::NotAName)
        );
        // Nothing else is implied: other interface addresses, the host name.
        assert_eq!(
            n.admit(&origin("ws://192.168.1.6:7878"), &remote),
            Err(Refusal::NotAName)
        );
    }

    #[test]
    fn declared_names_and_default_ports() {
        let n = names(
            &["relay.example", "127.0.0.1:9999", "[fd7a::1]:8443"],
            &[],
            "127.0.0.1:7878",
            false,
        );
        let plain = at(false, "127.0.0.1:7878", "127.0.0.1");
        let tls = at(true, "127.0.0.1:7878", "127.0.0.1");
        // TLS may end at a proxy in front of a declared name: wss on plaintext.
        assert_eq!(n.admit(&origin("wss://relay.example"), &plain), Ok(()));
        assert_eq!(n.admit(&origin("ws://relay.example"), &plain), Ok(()));
        assert_eq!(n.admit(&origin("wss://RELAY.example.:443"), &tls), Ok(()));
        assert_eq!(
            n.admit(&origin("wss://relay.example:8443"), &plain),
            Err(Refusal::TlsSchemeOverPlaintext)
        );
        assert_eq!(n.admit(&origin("ws://127.0.0.1:9999"), &plain), Ok(()));
        assert_eq!(n.admit(&origin("wss://[fd7a:0::1]:8443"), &tls), Ok(()));
        // The wrong scheme for the transport.
        assert_eq!(
            n.admit(&origin("ws://relay.example"), &tls),
            Err(Refusal::PlaintextSchemeOverTls)
        );
        assert_eq!(
            n.admit(&origin("wss://127.0.0.1:7878"), &plain),
            Err(Refusal::TlsSchemeOverPlaintext)
        );
        assert_eq!(n.admit(&origin("wss://127.0.0.1:7878"), &tls), Ok(()));
        assert_eq!(
            ServerNames::admit_with(&origin("ws://[::1]:9"), Refusal::NotAName),
            "--server-name [::1]:9"
        );
    }

    #[test]
    fn tls_names_count_with_the_listen_port_only() {
        let n = names(
            &[],
            &["Relay.Example", "10.0.0.7", "bücher.example"],
            "[::]:8443",
            false,
        );
        let tls = at(true, "[::ffff:10.0.0.7]:8443", "203.0.113.5");
        assert_eq!(n.admit(&origin("wss://relay.example:8443"), &tls), Ok(()));
        assert_eq!(n.admit(&origin("wss://10.0.0.7:8443"), &tls), Ok(()));
        assert_eq!(
            n.admit(&origin("wss://xn--bcher-kva.example:8443"), &tls),
            Ok(())
        );
        assert_eq!(
            n.admit(&origin("wss://relay.example"), &tls),
            Err(Refusal::NotAName)
        );
    }

    #[test]
    fn certificate_names_are_read_from_the_leaf() {
        let cert = rcgen::generate_simple_self_signed(vec![
            "relay.example".to_string(),
            "*.wild.example".to_string(),
            "192.0.2.1".to_string(),
        ])
        .unwrap();
        let n = ServerNames::new(
            None,
            &[],
            &[],
            Some(cert.cert.der().clone()),
            "0.0.0.0:8443".parse().unwrap(),
            false,
        );
        let tls = at(true, "10.1.1.1:8443", "203.0.113.5");
        assert_eq!(n.admit(&origin("wss://relay.example:8443"), &tls), Ok(()));
        assert_eq!(n.admit(&origin("wss://192.0.2.1:8443"), &tls), Ok(()));
        assert_eq!(
            n.admit(&origin("wss://192.0.2.2:8443"), &tls),
            Err(Refusal::NotAName)
        );
        assert_eq!(
            n.admit(&origin("wss://a.wild.example:8443"), &tls),
            Err(Refusal::NotAName)
        );
    }
}
