//! Whether `ccrelay attach` may sign a server's challenge (docs/protocol.md §3.8 channel
//! binding, §3.11 server identity), and the text it signs (bound to the origin it dialed).
//!
//! Owns: the TLS client configuration (system roots + `--ca-file`; the
//! certificate is recorded during the handshake and judged afterwards, so a
//! self-signed server can be pinned), challenge validation (`sign` must be
//! `ccrelay-auth-v1:<server_id>:<nonce>` of the challenge itself), and the decision
//! table: certificate (pin / recorded fingerprint / CA), `server_id`, channel
//! binding and its downgrade, and whether a new server needs the user's consent.
//! Must not: do I/O beyond reading CA files (`connect` asks and records).

use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;

use super::known::{Entry, Found};

/// The value of `channel_binding` this client knows (RFC 9266).
pub use ccrelay_protocol::CHANNEL_BINDING_TLS_EXPORTER as TLS_EXPORTER;

/// The CA roots `attach` trusts: the system store plus `--ca-file`.
#[derive(Debug, Clone)]
pub struct Roots {
    /// `None` when there is no CA at all (then only pins and records count).
    verifier: Option<Arc<WebPkiServerVerifier>>,
}

impl Roots {
    /// The system's CA store (as `update-ca-certificates` leaves it) and the PEM
    /// certificates of `ca_file`.
    pub fn load(ca_file: Option<&Path>) -> Result<Roots, String> {
        let mut store = RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            // A system certificate rustls cannot use is skipped, as browsers do.
            let _ = store.add(cert);
        }
        if let Some(path) = ca_file {
            let bytes = std::fs::read(path)
                .map_err(|e| format!("--ca-file: cannot read {}: {e}", path.display()))?;
            let certs = CertificateDer::pem_slice_iter(&bytes)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("--ca-file: {} is not PEM ({e})", path.display()))?;
            if certs.is_empty() {
                return Err(format!("--ca-file: no certificate in {}", path.display()));
            }
            for cert in certs {
                store.add(cert).map_err(|e| {
                    format!("--ca-file: unusable certificate in {}: {e}", path.display())
                })?;
            }
        }
        let verifier = if store.is_empty() {
            None
        } else {
            Some(
                WebPkiServerVerifier::builder_with_provider(
                    Arc::new(store),
                    ccrelay_server::tls::provider(),
                )
                .build()
                .map_err(|e| format!("cannot use the CA certificates: {e}"))?,
            )
        };
        Ok(Roots { verifier })
    }

    /// A client configuration for one connection and the slot where its handshake
    /// leaves the server's certificate and the CA verdict.
    pub fn client_config(&self) -> (Arc<rustls::ClientConfig>, Arc<Mutex<Option<Seen>>>) {
        let seen = Arc::new(Mutex::new(None));
        let provider = ccrelay_server::tls::provider();
        let verifier = Arc::new(Recorder {
            ca: self.verifier.clone(),
            algorithms: provider.signature_verification_algorithms,
            seen: seen.clone(),
        });
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12]);
        let mut config = match builder {
            Ok(b) => b,
            // The ring provider supports both versions; this cannot fail.
            Err(_) => rustls::ClientConfig::builder_with_provider(ccrelay_server::tls::provider())
                .with_safe_default_protocol_versions()
                .unwrap_or_else(|_| unreachable!("ring supports the default versions")),
        }
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
        config.alpn_protocols = vec![ccrelay_server::tls::ALPN_HTTP11.to_vec()];
        (Arc::new(config), seen)
    }
}

/// The server certificate as the handshake saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub fingerprint: String,
    /// `Err(reason)` when no trusted CA vouches for it (or not for this name).
    pub ca: Result<(), String>,
}

/// A verifier that checks the handshake signatures (possession of the
/// certificate's key) but only records the certificate and the CA's verdict: the
/// decision is taken after the handshake, before anything is signed, by [`decide`].
#[derive(Debug)]
struct Recorder {
    ca: Option<Arc<WebPkiServerVerifier>>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
    seen: Arc<Mutex<Option<Seen>>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = match &self.ca {
            None => Err("no CA certificates on this system".to_string()),
            Some(v) => v
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map(|_| ())
                .map_err(|e| ca_reason(&e)),
        };
        let seen = Seen {
            fingerprint: ccrelay_server::tls::fingerprint(end_entity),
            ca,
        };
        match self.seen.lock() {
            Ok(mut slot) => *slot = Some(seen),
            Err(p) => *p.into_inner() = Some(seen),
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Words for a certificate error.
fn ca_reason(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => "signed by an unknown CA (self-signed?)".into(),
            C::Expired | C::ExpiredContext { .. } => "expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => "not valid yet".into(),
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "not valid for this host name".into()
            }
            C::Revoked => "revoked".into(),
            other => format!("{other:?}"),
        },
        other => other.to_string(),
    }
}

/// The parts of `auth.challenge` the decision needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub server_id: String,
    pub nonce: String,
    pub sign: String,
    /// `"channel_binding":"tls-exporter"` was offered.
    pub binding_offered: bool,
}

/// Read a challenge and check that `sign` is exactly `ccrelay-auth-v1:<server_id>:<nonce>`
/// with a well-formed id and nonce: a server must not get any other text signed
/// (e.g. another server's bound text smuggled in through the nonce).
pub fn parse_challenge(
    server_id: &str,
    nonce: &str,
    sign: &str,
    channel_binding: Option<&str>,
) -> Result<Challenge, String> {
    if server_id.is_empty()
        || server_id.len() > 128
        || server_id
            .chars()
            .any(|c| c == ':' || c.is_whitespace() || ccrelay_server::escape::is_dangerous(c))
    {
        return Err(format!(
            "the challenge's server_id {} is not a server id; refusing to sign",
            ccrelay_server::escape::quoted(server_id)
        ));
    }
    let nonce_ok = nonce.len() == 43
        && base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(nonce)
            .is_ok_and(|b| b.len() == 32);
    if !nonce_ok {
        return Err(format!(
            "the challenge's nonce {} is not 32 bytes of base64url; refusing to sign",
            ccrelay_server::escape::quoted(nonce)
        ));
    }
    let expected = format!("{}:{server_id}:{nonce}", ccrelay_protocol::SIGN_PREFIX);
    if sign != expected {
        return Err(format!(
            "the server asked to sign {}, which is not {} (ccrelay-auth-v1:<server_id>:<nonce> of its challenge); refusing to sign",
            ccrelay_server::escape::quoted(sign),
            ccrelay_server::escape::quoted(&expected)
        ));
    }
    Ok(Challenge {
        server_id: server_id.to_string(),
        nonce: nonce.to_string(),
        sign: sign.to_string(),
        binding_offered: channel_binding == Some(TLS_EXPORTER),
    })
}

/// The text to sign (docs/protocol.md, "Origin binding"): `<sign>:origin:<origin>`,
/// plus `:tls-exporter:<exporter, base64url>` when the exporter is bound too. Never
/// the bare `sign`: a bare signature could be relayed to another server.
pub fn text_to_sign(sign: &str, origin: &str, exporter: Option<&[u8; 32]>) -> String {
    let exporter = exporter.map(|x| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(x));
    ccrelay_protocol::bound_text(sign, Some(origin), exporter.as_deref())
}

/// What this connection showed, for [`decide`].
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// The normalized URL (`ws://` or `wss://`), the known_servers key.
    pub url: &'a str,
    pub loopback: bool,
    /// The certificate (`None` over plaintext).
    pub tls: Option<&'a Seen>,
    /// The connection's RFC 9266 exporter (TLS 1.3 only).
    pub exporter: Option<&'a [u8; 32]>,
    pub challenge: &'a Challenge,
    /// This URL's record.
    pub known: Option<&'a Found>,
    /// `--server-fingerprint`.
    pub pin: Option<&'a str>,
    /// The known_servers file, for messages.
    pub file: &'a str,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Sign (bound to the channel when `bound`), writing `record` first if any.
    Sign { bound: bool, record: Option<Entry> },
    /// A server not seen before that the user must accept (terminal prompt or
    /// `--accept-new-server`) before `record` is written and it is signed for.
    New { bound: bool, record: Entry },
    /// Do not sign; exit 2 with this message.
    Refuse(String),
}

/// The decision table of docs/protocol.md §3.8 and §3.11 for one challenge.
pub fn decide(f: &Facts<'_>) -> Verdict {
    let c = f.challenge;
    let known = f.known.map(|k| &k.entry);
    let delete = |what: &str| match f.known {
        Some(k) => format!(
            "{what}. If the change is expected, delete line {} of {} and connect again.",
            k.line, f.file
        ),
        None => what.to_string(),
    };
    // 1. The certificate: a pin, else a recorded fingerprint, else a CA.
    let mut pin_fingerprint = None;
    if let Some(seen) = f.tls {
        if let Some(pin) = f.pin {
            if seen.fingerprint != pin {
                return Verdict::Refuse(format!(
                    "the certificate of {} has fingerprint {}, not the {pin} given with --server-fingerprint; refusing to sign (a different server, or a man in the middle)",
                    f.url, seen.fingerprint
                ));
            }
            pin_fingerprint = Some(seen.fingerprint.clone());
        } else if let Some(fp) = known.and_then(|k| k.fingerprint.as_deref()) {
            if seen.fingerprint != fp {
                return Verdict::Refuse(delete(&format!(
                    "the certificate of {} CHANGED: fingerprint {} where {fp} was recorded; refusing to sign (a new certificate, or a man in the middle)",
                    f.url, seen.fingerprint
                )));
            }
            pin_fingerprint = Some(fp.to_string());
        } else if let Err(reason) = &seen.ca {
            if known.is_some() {
                return Verdict::Refuse(delete(&format!(
                    "the certificate of {} is not trusted ({reason}; fingerprint {}), though a CA vouched for this server before; refusing to sign",
                    f.url, seen.fingerprint
                )));
            }
            // Not known, no CA: trust on first use, with the fingerprint recorded.
            pin_fingerprint = Some(seen.fingerprint.clone());
        }
    }
    // 2. The server's identity.
    if let Some(k) = known
        && k.server_id != c.server_id
    {
        return Verdict::Refuse(delete(&format!(
            "the server at {} has server_id {}, not the {} recorded: another server (other data dir) answers at this URL; refusing to sign",
            f.url, c.server_id, k.server_id
        )));
    }
    // 3. Channel binding, and its downgrade.
    let bound = f.tls.is_some() && c.binding_offered && f.exporter.is_some();
    if f.tls.is_some() && !bound && known.is_some_and(|k| k.binding == Some(true)) {
        return Verdict::Refuse(delete(&format!(
            "{} offered channel binding before and does not now ({}): a downgrade, possibly a man in the middle relaying the challenge; refusing to sign",
            f.url,
            if c.binding_offered {
                "this connection is not TLS 1.3"
            } else {
                "no channel_binding in the challenge"
            }
        )));
    }
    let binding = f.tls.map(|_| bound);
    // 4. Record: a new server, or what changed (a server that starts binding).
    match known {
        Some(k) => {
            let update = (binding.is_some() && k.binding != binding).then(|| Entry {
                binding,
                ..k.clone()
            });
            Verdict::Sign {
                bound,
                record: update,
            }
        }
        None => {
            let record = Entry {
                url: f.url.to_string(),
                server_id: c.server_id.clone(),
                fingerprint: pin_fingerprint,
                binding,
            };
            // An explicit pin is enough by itself; a loopback plaintext server is
            // recorded without asking.
            if (f.pin.is_some() && f.tls.is_some()) || (f.tls.is_none() && f.loopback) {
                Verdict::Sign {
                    bound,
                    record: Some(record),
                }
            } else {
                Verdict::New { bound, record }
            }
        }
    }
}

/// The message for a new server the user was not asked about.
pub fn new_server_refusal(record: &Entry, seen: Option<&Seen>, file: &str) -> String {
    let mut s = format!(
        "{} is a server not seen before (server_id {}",
        record.url, record.server_id
    );
    if let Some(seen) = seen {
        s.push_str(&format!(", certificate fingerprint {}", seen.fingerprint));
        if let Err(reason) = &seen.ca {
            s.push_str(&format!(", not trusted by any CA: {reason}"));
        }
    }
    s.push_str(&format!(
        ") and there is no terminal to ask on; refusing to sign. Compare with `ccrelay server-info` on the server, then pass --server-fingerprint SHA256:... (or --ca-file for a private CA) or --accept-new-server to record it in {file}"
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    fn challenge(id: &str, offered: bool) -> Challenge {
        Challenge {
            server_id: id.into(),
            nonce: NONCE.into(),
            sign: format!("ccrelay-auth-v1:{id}:{NONCE}"),
            binding_offered: offered,
        }
    }

    fn seen(fp: &str, ca: bool) -> Seen {
        Seen {
            fingerprint: fp.into(),
            ca: if ca {
                Ok(())
            } else {
                Err("signed by an unknown CA".into())
            },
        }
    }

    fn found(url: &str, id: &str, fp: Option<&str>, binding: Option<bool>) -> Found {
        Found {
            entry: Entry {
                url: url.into(),
                server_id: id.into(),
                fingerprint: fp.map(str::to_string),
                binding,
            },
            line: 7,
        }
    }

    const X: [u8; 32] = [7; 32];
    const WSS: &str = "wss://relay.example:7878/v1/ws";

    fn facts<'a>(
        tls: Option<&'a Seen>,
        c: &'a Challenge,
        known: Option<&'a Found>,
        pin: Option<&'a str>,
    ) -> Facts<'a> {
        Facts {
            url: if tls.is_some() {
                WSS
            } else {
                "ws://10.0.0.1:7878/v1/ws"
            },
            loopback: false,
            tls,
            exporter: tls.map(|_| &X),
            challenge: c,
            known,
            pin,
            file: "/home/u/.config/ccrelay/known_servers",
        }
    }

    /// `parse_challenge` on the fields of a JSON challenge.
    fn parse_challenge(v: &serde_json::Value) -> Result<Challenge, String> {
        let field = |k: &str| v[k].as_str().unwrap_or_default();
        super::parse_challenge(
            field("server_id"),
            field("nonce"),
            field("sign"),
            v["channel_binding"].as_str(),
        )
    }

    #[test]
    fn challenge_sign_text_must_be_the_challenges_own() {
        let ok = serde_json::json!({"server_id": "abc", "nonce": NONCE,
            "sign": format!("ccrelay-auth-v1:abc:{NONCE}"), "channel_binding": "tls-exporter"});
        let c = parse_challenge(&ok).unwrap();
        assert!(c.binding_offered);
        let mut other = ok.clone();
        other["channel_binding"] = "tls-unique".into();
        assert!(!parse_challenge(&other).unwrap().binding_offered);
        // Another server's text, a bound text smuggled through the nonce, a
        // different id: all refused.
        for (id, nonce, sign) in [
            ("abc", NONCE, format!("ccrelay-auth-v1:other:{NONCE}")),
            ("abc", NONCE, format!("ccrelay-auth-v1:abc:{NONCE}\n")),
            ("abc", NONCE, "anything at all".to_string()),
            (
                "abc",
                &*format!("{NONCE}:tls-exporter:{NONCE}"),
                format!("ccrelay-auth-v1:abc:{NONCE}:tls-exporter:{NONCE}"),
            ),
            ("a:b", NONCE, format!("ccrelay-auth-v1:a:b:{NONCE}")),
            ("", NONCE, format!("ccrelay-auth-v1::{NONCE}")),
            (
                "a\u{202e}b",
                NONCE,
                format!("ccrelay-auth-v1:a\u{202e}b:{NONCE}"),
            ),
            ("abc", "short", "ccrelay-auth-v1:abc:short".to_string()),
        ] {
            let v = serde_json::json!({"server_id": id, "nonce": nonce, "sign": sign});
            let e = parse_challenge(&v).unwrap_err();
            assert!(e.contains("refusing to sign"), "{e}");
        }
    }

    #[test]
    fn bound_text_is_sign_plus_origin_plus_exporter() {
        assert_eq!(
            text_to_sign("s", "ws://127.0.0.1:7878", None),
            "s:origin:ws://127.0.0.1:7878"
        );
        assert_eq!(
            text_to_sign("s", "wss://relay.example", Some(&[0xff; 32])),
            format!(
                "s:origin:wss://relay.example:tls-exporter:{}",
                "_".repeat(42) + "8"
            )
        );
    }

    #[test]
    fn decision_table() {
        let bound_c = challenge("id1", true);
        let unbound_c = challenge("id1", false);
        let other_id = challenge("id2", true);
        let ca = seen("SHA256:ca", true);
        let selfsigned = seen("SHA256:self", false);
        let known_ca_bound = found(WSS, "id1", None, Some(true));
        let known_self = found(WSS, "id1", Some("SHA256:self"), Some(true));
        let known_unbound = found(WSS, "id1", None, Some(false));

        // New CA-verified server: asks, records id and binding, no fingerprint.
        let v = decide(&facts(Some(&ca), &bound_c, None, None));
        let Verdict::New {
            bound: true,
            record,
        } = v
        else {
            panic!("{v:?}")
        };
        assert_eq!((record.fingerprint, record.binding), (None, Some(true)));
        // New self-signed server: asks, records the fingerprint.
        let v = decide(&facts(Some(&selfsigned), &bound_c, None, None));
        let Verdict::New { record, .. } = v else {
            panic!("{v:?}")
        };
        assert_eq!(record.fingerprint.as_deref(), Some("SHA256:self"));
        // A right pin is enough by itself; a wrong one refuses.
        let v = decide(&facts(
            Some(&selfsigned),
            &bound_c,
            None,
            Some("SHA256:self"),
        ));
        assert!(
            matches!(
                v,
                Verdict::Sign {
                    bound: true,
                    record: Some(_)
                }
            ),
            "{v:?}"
        );
        let v = decide(&facts(
            Some(&ca),
            &bound_c,
            Some(&known_ca_bound),
            Some("SHA256:x"),
        ));
        assert!(matches!(v, Verdict::Refuse(m) if m.contains("--server-fingerprint")));
        // Known, unchanged: sign, nothing to write.
        let v = decide(&facts(Some(&selfsigned), &bound_c, Some(&known_self), None));
        assert_eq!(
            v,
            Verdict::Sign {
                bound: true,
                record: None
            }
        );
        // Fingerprint changed: refused, naming file and line.
        let other_cert = seen("SHA256:new", true);
        let v = decide(&facts(Some(&other_cert), &bound_c, Some(&known_self), None));
        assert!(
            matches!(&v, Verdict::Refuse(m) if m.contains("CHANGED") && m.contains("line 7 of /home/u/.config/ccrelay/known_servers")),
            "{v:?}"
        );
        // Known through a CA, now untrusted: refused.
        let v = decide(&facts(
            Some(&selfsigned),
            &bound_c,
            Some(&known_ca_bound),
            None,
        ));
        assert!(
            matches!(&v, Verdict::Refuse(m) if m.contains("not trusted")),
            "{v:?}"
        );
        // Server id changed: refused, naming the line.
        let v = decide(&facts(Some(&ca), &other_id, Some(&known_ca_bound), None));
        assert!(
            matches!(&v, Verdict::Refuse(m) if m.contains("server_id id2") && m.contains("line 7")),
            "{v:?}"
        );
        // Downgrade: recorded bound, no offer now.
        let v = decide(&facts(Some(&ca), &unbound_c, Some(&known_ca_bound), None));
        assert!(
            matches!(&v, Verdict::Refuse(m) if m.contains("downgrade")),
            "{v:?}"
        );
        // Offered but this side has no exporter (TLS 1.2): also a downgrade.
        let mut f = facts(Some(&ca), &bound_c, Some(&known_ca_bound), None);
        f.exporter = None;
        assert!(matches!(decide(&f), Verdict::Refuse(m) if m.contains("not TLS 1.3")));
        // A proxy that never offered binding keeps working; it starts binding: recorded.
        let v = decide(&facts(Some(&ca), &unbound_c, Some(&known_unbound), None));
        assert_eq!(
            v,
            Verdict::Sign {
                bound: false,
                record: None
            }
        );
        let v = decide(&facts(Some(&ca), &bound_c, Some(&known_unbound), None));
        let Verdict::Sign {
            bound: true,
            record: Some(r),
        } = v
        else {
            panic!("{v:?}")
        };
        assert_eq!(r.binding, Some(true));
        // New unbound wss server: recorded as unbound.
        let v = decide(&facts(Some(&ca), &unbound_c, None, None));
        let Verdict::New {
            bound: false,
            record,
        } = v
        else {
            panic!("{v:?}")
        };
        assert_eq!(record.binding, Some(false));

        // Plaintext: loopback is recorded without asking; elsewhere asks; id checked.
        let mut f = facts(None, &bound_c, None, None);
        f.url = "ws://127.0.0.1:7878/v1/ws";
        f.loopback = true;
        let v = decide(&f);
        let Verdict::Sign {
            bound: false,
            record: Some(r),
        } = v
        else {
            panic!("{v:?}")
        };
        assert_eq!((r.fingerprint, r.binding), (None, None));
        let v = decide(&facts(None, &bound_c, None, None));
        assert!(matches!(v, Verdict::New { bound: false, .. }), "{v:?}");
        let known_plain = found("ws://10.0.0.1:7878/v1/ws", "id1", None, None);
        let v = decide(&facts(None, &other_id, Some(&known_plain), None));
        assert!(matches!(v, Verdict::Refuse(_)), "{v:?}");
        let v = decide(&facts(None, &bound_c, Some(&known_plain), None));
        assert_eq!(
            v,
            Verdict::Sign {
                bound: false,
                record: None
            }
        );
    }
}
