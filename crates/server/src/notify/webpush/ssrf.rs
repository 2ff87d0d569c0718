//! The push endpoint address rule (docs/protocol.md §9.1.2): a subscription endpoint is a
//! URL chosen by a client, never a way to make the server reach into its own
//! network.
//!
//! Owns: which endpoint URLs are accepted at subscribe time (scheme, no user
//! info, host not an IP literal, every resolved address outward), which addresses
//! a connection may go to at send time ([`Guard::allowed`], applied by the DNS
//! resolver the push client uses, so a DNS answer that changed since the
//! subscription — DNS rebinding — cannot reach inward either). Must not: send
//! anything (the client module) or store anything.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// How long a subscribe-time DNS lookup may take before the endpoint is refused.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an endpoint URL is refused (the text reaches the client in `bad_message`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("`endpoint` is not a valid URL")]
    NotAUrl,
    #[error("`endpoint` must be an https:// URL")]
    NotHttps,
    #[error("`endpoint` must not carry a user name or password")]
    UserInfo,
    #[error("`endpoint` must name a host")]
    NoHost,
    #[error("`endpoint` must name its host by DNS name, not by IP address")]
    IpLiteral,
    #[error("`endpoint` host {host} could not be resolved")]
    Unresolved { host: String },
    #[error(
        "`endpoint` host {host} resolves to {addr}, a loopback, private, link-local or otherwise non-public address"
    )]
    Inward { host: String, addr: IpAddr },
}

/// The rule in force: strict, or relaxed for tests (`--push-allow-insecure-endpoints`:
/// `http://` and loopback addresses are allowed; other inward addresses still are not).
#[derive(Debug, Clone, Copy)]
pub struct Guard {
    pub allow_insecure: bool,
}

impl Guard {
    /// May a connection go to `ip`?
    pub fn allowed(&self, ip: IpAddr) -> bool {
        match classify(ip) {
            Class::Public => true,
            Class::Loopback => self.allow_insecure,
            Class::Inward => false,
        }
    }

    /// Check the URL's form (no I/O): scheme, user info, a host; an IP literal is
    /// refused, except a loopback one when insecure endpoints are allowed.
    /// Returns the parsed URL.
    pub fn check_form(&self, endpoint: &str) -> Result<reqwest::Url, EndpointError> {
        let url = reqwest::Url::parse(endpoint).map_err(|_| EndpointError::NotAUrl)?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_insecure => {}
            _ => return Err(EndpointError::NotHttps),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(EndpointError::UserInfo);
        }
        match url.host() {
            None => return Err(EndpointError::NoHost),
            Some(url::Host::Domain("")) => return Err(EndpointError::NoHost),
            Some(url::Host::Domain(_)) => {}
            Some(url::Host::Ipv4(v4)) => self.literal(IpAddr::V4(v4))?,
            Some(url::Host::Ipv6(v6)) => self.literal(IpAddr::V6(v6))?,
        }
        Ok(url)
    }

    fn literal(&self, ip: IpAddr) -> Result<(), EndpointError> {
        if self.allow_insecure && classify(ip) == Class::Loopback {
            Ok(())
        } else {
            Err(EndpointError::IpLiteral)
        }
    }

    /// The whole subscribe-time check: the form, then every address the host
    /// resolves to now must be allowed (one inward answer refuses the endpoint).
    pub async fn check(&self, endpoint: &str) -> Result<reqwest::Url, EndpointError> {
        let url = self.check_form(endpoint)?;
        let Some(url::Host::Domain(host)) = url.host() else {
            return Ok(url);
        };
        let host = host.to_string();
        let port = url.port_or_known_default().unwrap_or(443);
        let unresolved = || EndpointError::Unresolved { host: host.clone() };
        let addrs: Vec<SocketAddr> = tokio::time::timeout(
            RESOLVE_TIMEOUT,
            tokio::net::lookup_host((host.as_str(), port)),
        )
        .await
        .map_err(|_| unresolved())?
        .map_err(|_| unresolved())?
        .collect();
        if addrs.is_empty() {
            return Err(unresolved());
        }
        if let Some(bad) = addrs.iter().find(|a| !self.allowed(a.ip())) {
            return Err(EndpointError::Inward {
                host,
                addr: bad.ip(),
            });
        }
        Ok(url)
    }
}

/// Where an address leads, for this rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Reachable on the public Internet.
    Public,
    /// This machine (127.0.0.0/8, ::1).
    Loopback,
    /// Anything else that is not public: private, link-local, unique-local,
    /// CGNAT, unspecified, multicast, broadcast, documentation, benchmarking,
    /// reserved.
    Inward,
}

/// Classify an address; IPv6 forms that embed an IPv4 address (mapped,
/// compatible, NAT64 64:ff9b::/96, 6to4 2002::/16) are judged by that address.
pub fn classify(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Class {
    let [a, b, c, _] = ip.octets();
    if a == 127 {
        return Class::Loopback;
    }
    let inward = a == 0                                  // "this network", 0.0.0.0
        || a == 10                                       // private
        || (a == 100 && (64..=127).contains(&b))         // CGNAT 100.64.0.0/10
        || (a == 169 && b == 254)                        // link-local
        || (a == 172 && (16..=31).contains(&b))          // private
        || (a == 192 && b == 0 && c == 0)                // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)                // TEST-NET-1
        || (a == 192 && b == 88 && c == 99)              // 6to4 relay anycast
        || (a == 192 && b == 168)                        // private
        || (a == 198 && (18..=19).contains(&b))          // benchmarking
        || (a == 198 && b == 51 && c == 100)             // TEST-NET-2
        || (a == 203 && b == 0 && c == 113)              // TEST-NET-3
        || a >= 224; // multicast, reserved, broadcast
    if inward { Class::Inward } else { Class::Public }
}

fn classify_v6(ip: Ipv6Addr) -> Class {
    if ip.is_loopback() {
        return Class::Loopback;
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let s = ip.segments();
    // IPv4-compatible (deprecated ::a.b.c.d) and the unspecified address.
    if s[..6].iter().all(|&x| x == 0) {
        return if ip.is_unspecified() {
            Class::Inward
        } else {
            classify_v4(embedded_low(&s))
        };
    }
    // NAT64 well-known prefix: the last 32 bits are an IPv4 address.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|&x| x == 0) {
        return classify_v4(embedded_low(&s));
    }
    // 6to4: 2002:AABB:CCDD::/48 carries AABB.CCDD.
    if s[0] == 0x2002 {
        let v4 = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
        return classify_v4(v4);
    }
    let inward = (s[0] & 0xfe00) == 0xfc00        // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80              // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0              // site-local (deprecated) fec0::/10
        || (s[0] & 0xff00) == 0xff00              // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8)     // documentation
        || (s[0] == 0x0100 && s[1..4].iter().all(|&x| x == 0)); // discard-only 100::/64
    if inward { Class::Inward } else { Class::Public }
}

fn embedded_low(s: &[u16; 8]) -> Ipv4Addr {
    Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8)
}

/// The push client's DNS resolver: the system resolver, then only the allowed
/// addresses. A name with none left fails to connect, whatever it resolved to
/// when it was subscribed.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    pub guard: Guard,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.guard;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let lookup = tokio::net::lookup_host((host.as_str(), 0));
            let found: Vec<SocketAddr> = tokio::time::timeout(RESOLVE_TIMEOUT, lookup)
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "DNS lookup timed out")
                })??
                .collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| guard.allowed(a.ip()))
                .collect();
            if allowed.is_empty() {
                let err: Box<dyn std::error::Error + Send + Sync> = Box::new(RefusedAddress {
                    host,
                    found: found.len(),
                });
                return Err(err);
            }
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// The resolver's refusal: every address of the host is inward.
#[derive(Debug, thiserror::Error)]
#[error("push endpoint host {host}: none of its {found} address(es) is allowed (§9 address rule)")]
pub struct RefusedAddress {
    pub host: String,
    pub found: usize,
}

/// The resolver as reqwest takes it.
pub fn resolver(guard: Guard) -> Arc<GuardedResolver> {
    Arc::new(GuardedResolver { guard })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Class {
        classify(s.parse().unwrap())
    }

    #[test]
    fn classifies_the_ranges() {
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2a00:1450:4001::200e",
            "2606:4700::1111",
        ] {
            assert_eq!(c(public), Class::Public, "{public}");
        }
        for lo in ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(c(lo), Class::Loopback, "{lo}");
        }
        for inward in [
            "0.0.0.0",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "192.0.2.5",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.1.1.1",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:c0a8:0101::1",
            "::10.0.0.1",
            "100::1",
        ] {
            assert_eq!(c(inward), Class::Inward, "{inward}");
        }
        // NAT64 and 6to4 of public addresses stay public.
        assert_eq!(c("64:ff9b::808:808"), Class::Public);
        assert_eq!(c("2002:0808:0808::1"), Class::Public);
    }

    #[test]
    fn form_rules() {
        let strict = Guard {
            allow_insecure: false,
        };
        let lax = Guard {
            allow_insecure: true,
        };
        assert!(strict.check_form("https://push.example/abc").is_ok());
        assert_eq!(
            strict.check_form("http://push.example/abc"),
            Err(EndpointError::NotHttps)
        );
        assert!(lax.check_form("http://push.example/abc").is_ok());
        for s in [&strict, &lax] {
            assert_eq!(s.check_form("ftp://x/"), Err(EndpointError::NotHttps));
            assert_eq!(s.check_form("not a url"), Err(EndpointError::NotAUrl));
            assert_eq!(
                s.check_form("https://u:p@push.example/"),
                Err(EndpointError::UserInfo)
            );
            assert_eq!(
                s.check_form("https://10.0.0.1/"),
                Err(EndpointError::IpLiteral)
            );
            assert_eq!(
                s.check_form("https://[fd00::1]/"),
                Err(EndpointError::IpLiteral)
            );
            // Decimal and hex spellings of an address are IP literals too (the URL
            // parser normalizes them).
            assert_eq!(
                s.check_form("https://2130706433/"),
                if s.allow_insecure {
                    Ok(reqwest::Url::parse("https://127.0.0.1/").unwrap())
                } else {
                    Err(EndpointError::IpLiteral)
                }
            );
            assert_eq!(
                s.check_form("https://0xa000001/"),
                Err(EndpointError::IpLiteral)
            );
        }
        assert_eq!(
            strict.check_form("https://127.0.0.1:8443/"),
            Err(EndpointError::IpLiteral)
        );
        assert!(lax.check_form("http://127.0.0.1:8443/p").is_ok());
        assert!(lax.check_form("http://[::1]:8443/p").is_ok());
    }

    #[tokio::test]
    async fn resolution_rule() {
        let strict = Guard {
            allow_insecure: false,
        };
        let lax = Guard {
            allow_insecure: true,
        };
        // `localhost` resolves to loopback without any network.
        assert!(matches!(
            strict.check("https://localhost/x").await,
            Err(EndpointError::Inward { .. })
        ));
        assert!(lax.check("http://localhost:1/x").await.is_ok());
        assert!(matches!(
            strict.check("https://name.invalid/x").await,
            Err(EndpointError::Unresolved { .. })
        ));
    }

    #[tokio::test]
    async fn resolver_drops_inward_answers() {
        use reqwest::dns::Resolve;
        let strict = resolver(Guard {
            allow_insecure: false,
        });
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let err = match strict.resolve(name).await {
            Ok(_) => panic!("localhost must be refused"),
            Err(e) => e,
        };
        assert!(err.is::<RefusedAddress>(), "{err}");
        let lax = resolver(Guard {
            allow_insecure: true,
        });
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let addrs: Vec<_> = lax.resolve(name).await.unwrap().collect();
        assert!(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()));
    }
}
