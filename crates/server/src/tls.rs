//! Server-side TLS (docs/protocol.md §1.4 TLS, §3.8 channel binding, §3.11 server identity).
//!
//! Owns: the rustls `ServerConfig` (TLS 1.2 and 1.3 only, ALPN `http/1.1`, the
//! `ring` provider), loading a PEM chain and key (`--tls-cert`/`--tls-key`),
//! re-reading them on SIGHUP and when the files change — a bad new pair keeps the
//! old one and logs why —, the `--tls-self-signed` certificate made once and kept in
//! the data dir, certificate fingerprints (`SHA256:` + unpadded base64 of the
//! leaf's DER) and the RFC 9266 `tls-exporter` value of a connection.
//!
//! Must not: accept sockets or run HTTP (the accept loop in `listen` calls the
//! [`crate::listen::stream::TlsAcceptor`] hook under its request-head deadline),
//! nor verify signatures (`auth` gets the exporter value and checks bound
//! signatures).
//!
//! Reloads swap an `Arc<ServerConfig>`: a handshake uses the configuration current
//! when it starts, so new connections get the new certificate and established ones
//! are untouched.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest as _, Sha256};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// RFC 9266 exporter label.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-Channel-Binding";
/// Length of the exporter value (RFC 9266).
pub const EXPORTER_LEN: usize = 32;
/// The ALPN protocol offered: the relay speaks HTTP/1.1 (WebSocket upgrade) only.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";
/// How often the certificate files are checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// The self-signed certificate, its key and the names it was made for, in the data dir.
const SELF_SIGNED_CERT: &str = "tls-self-signed.crt";
const SELF_SIGNED_KEY: &str = "tls-self-signed.key";
const SELF_SIGNED_NAMES: &str = "tls-self-signed.names";

/// Where the server's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// `--tls-cert` / `--tls-key`: PEM files, re-read when they change.
    Files { cert: PathBuf, key: PathBuf },
    /// `--tls-self-signed`: made once for these names and kept in the data dir.
    SelfSigned { names: Vec<String> },
}

/// Why a certificate could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        setting: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Pem {
        setting: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("the certificate and the key cannot be used together: {0}")]
    Pair(rustls::Error),
    #[error("cannot make the self-signed certificate: {0}")]
    Generate(String),
    #[error("cannot keep the self-signed certificate in {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl TlsError {
    /// The option to name when this stops `serve` from starting (exit 2).
    pub fn setting(&self) -> &'static str {
        match self {
            TlsError::Read { setting, .. } | TlsError::Pem { setting, .. } => setting,
            TlsError::Pair(_) => "tls-key",
            TlsError::Generate(_) | TlsError::Write { .. } => "tls-self-signed",
        }
    }
}

/// The crypto provider every TLS object of ccrelay uses (server and `attach`).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `SHA256:` + unpadded base64 of SHA-256 over a certificate's DER (docs/protocol.md §3.11).
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

/// The RFC 9266 `tls-exporter` value (label `EXPORTER-Channel-Binding`, empty
/// context, 32 bytes) of a TLS 1.3 connection; `None` for TLS 1.2, whose exporter
/// is not safe for channel binding (docs/protocol.md §3.8).
pub fn exporter<D>(conn: &rustls::ConnectionCommon<D>) -> Option<[u8; EXPORTER_LEN]> {
    if conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
        return None;
    }
    conn.export_keying_material([0u8; EXPORTER_LEN], EXPORTER_LABEL, Some(&[]))
        .ok()
}

/// [`exporter`] of a server-side connection.
pub fn server_exporter(conn: &rustls::ServerConnection) -> Option<[u8; EXPORTER_LEN]> {
    exporter(conn)
}

/// [`exporter`] of a client-side connection.
pub fn client_exporter(conn: &rustls::ClientConnection) -> Option<[u8; EXPORTER_LEN]> {
    exporter(conn)
}

/// The names of a self-signed certificate when `--tls-name` gives none:
/// `localhost`, `127.0.0.1`, `::1` and this host's name.
pub fn default_names() -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Some(host) = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty() && valid_name(h))
        && !names.contains(&host)
    {
        names.push(host);
    }
    names
}

/// A DNS name or an IP address a certificate can be made for.
pub fn valid_name(name: &str) -> bool {
    rustls_pki_types::ServerName::try_from(name).is_ok()
}

/// The files of the self-signed certificate in `data_dir`: (certificate, key).
pub fn self_signed_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    (
        data_dir.join(SELF_SIGNED_CERT),
        data_dir.join(SELF_SIGNED_KEY),
    )
}

/// The fingerprint of the first certificate in a PEM file (`ccrelay server-info`).
pub fn cert_file_fingerprint(path: &Path, setting: &'static str) -> Result<String, TlsError> {
    let chain = read_chain(path, setting)?;
    Ok(fingerprint(&chain[0]))
}

/// `ccrelay server-info`: the server id kept in `data_dir` and the fingerprint of
/// `tls_cert`, else of the self-signed certificate in `data_dir` (docs/protocol.md §3.11).
/// Reads only; a value not made yet is said so.
pub fn server_info(data_dir: &Path, tls_cert: Option<&Path>) -> Result<String, TlsError> {
    let id = std::fs::read_to_string(data_dir.join("server_id"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let mut out = match id {
        Some(id) => format!("server_id: {id}\n"),
        None => format!(
            "server_id: none yet ({} has none; `ccrelay serve` makes it)\n",
            data_dir.display()
        ),
    };
    let (self_signed, _) = self_signed_paths(data_dir);
    match tls_cert {
        Some(cert) => {
            out += &format!(
                "fingerprint: {}\n",
                cert_file_fingerprint(cert, "tls-cert")?
            );
        }
        None if self_signed.exists() => {
            out += &format!(
                "fingerprint: {}\n",
                cert_file_fingerprint(&self_signed, "tls-self-signed")?
            );
        }
        None => {
            out += &format!(
                "fingerprint: none (no --tls-cert given and no self-signed certificate in {})\n",
                data_dir.display()
            );
        }
    }
    Ok(out)
}

/// What a certificate file looked like when it was last read (path, mtime, length).
type Stamp = Vec<Option<(SystemTime, u64)>>;

fn stamps(paths: &[&Path]) -> Stamp {
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// The server's TLS state: the current configuration and its certificate's fingerprint.
#[derive(Debug)]
pub struct TlsServer {
    source: TlsSource,
    current: RwLock<Current>,
}

#[derive(Debug, Clone)]
struct Current {
    config: Arc<ServerConfig>,
    fingerprint: String,
    /// The leaf certificate (its names are this server's names over TLS).
    leaf: CertificateDer<'static>,
}

impl TlsServer {
    /// Load (or, for `--tls-self-signed`, make once) the certificate. `data_dir` must exist.
    pub fn new(source: TlsSource, data_dir: &Path) -> Result<TlsServer, TlsError> {
        let current = match &source {
            TlsSource::Files { cert, key } => load_files(cert, key)?,
            TlsSource::SelfSigned { names } => self_signed(data_dir, names)?,
        };
        Ok(TlsServer {
            source,
            current: RwLock::new(current),
        })
    }

    /// The fingerprint of the certificate new connections get.
    pub fn fingerprint(&self) -> String {
        self.read().fingerprint
    }

    /// The leaf certificate new connections get.
    pub fn leaf(&self) -> CertificateDer<'static> {
        self.read().leaf
    }

    /// The configuration new handshakes use.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.read().config
    }

    fn read(&self) -> Current {
        // A poisoned lock only means a panic elsewhere while swapping an Arc; the
        // value inside is still a whole configuration.
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The TLS handshake on an accepted socket, with the current certificate.
    /// The caller bounds it in time (the HTTP head deadline).
    pub async fn accept(
        &self,
        tcp: TcpStream,
    ) -> std::io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
        tokio_rustls::TlsAcceptor::from(self.config())
            .accept(tcp)
            .await
    }

    /// Re-read `--tls-cert`/`--tls-key`. On success new connections get the new
    /// certificate; on failure the old one stays. Returns the new fingerprint.
    pub fn reload(&self) -> Result<String, TlsError> {
        let TlsSource::Files { cert, key } = &self.source else {
            return Ok(self.fingerprint());
        };
        let next = load_files(cert, key)?;
        let fp = next.fingerprint.clone();
        match self.current.write() {
            Ok(mut c) => *c = next,
            Err(p) => *p.into_inner() = next,
        }
        Ok(fp)
    }

    fn reload_logged(&self, why: &'static str) {
        let before = self.fingerprint();
        match self.reload() {
            Ok(fp) if fp == before => {
                tracing::debug!(reason = why, fingerprint = %fp, "TLS certificate re-read, unchanged");
            }
            Ok(fp) => {
                tracing::info!(reason = why, fingerprint = %fp, previous = %before, "TLS certificate reloaded: new connections get the new certificate");
            }
            Err(e) => {
                tracing::warn!(reason = why, error = %e, fingerprint = %before, "TLS certificate not reloaded; keeping the previous certificate");
            }
        }
    }

    /// Re-read the certificate files on SIGHUP and when they change (renewals by
    /// certbot, Caddy or `tailscale cert` replace them). Nothing to watch for a
    /// self-signed certificate.
    pub fn spawn_watcher(self: &Arc<Self>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let tls = self.clone();
        tokio::spawn(async move {
            let TlsSource::Files { cert, key } = tls.source.clone() else {
                return;
            };
            use tokio::signal::unix::{SignalKind, signal};
            let mut hup = match signal(SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGHUP; the TLS certificate is reloaded on file changes only");
                    None
                }
            };
            let files = [cert.as_path(), key.as_path()];
            let mut last = stamps(&files);
            let mut tick = tokio::time::interval(WATCH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    Some(()) = async {
                        match hup.as_mut() {
                            Some(h) => h.recv().await,
                            None => std::future::pending().await,
                        }
                    } => {
                        last = stamps(&files);
                        let tls = tls.clone();
                        let _ = tokio::task::spawn_blocking(move || tls.reload_logged("sighup")).await;
                    }
                    _ = tick.tick() => {
                        let now = stamps(&files);
                        if now != last {
                            last = now;
                            let tls = tls.clone();
                            let _ = tokio::task::spawn_blocking(move || tls.reload_logged("file_changed")).await;
                        }
                    }
                }
            }
        })
    }
}

/// The accept loop's TLS hook (`listen::stream::TlsAcceptor`): the handshake with
/// the current certificate, and the connection's RFC 9266 exporter.
impl crate::listen::stream::TlsAcceptor for TlsServer {
    fn accept(&self, tcp: TcpStream) -> crate::listen::stream::AcceptFuture<'_> {
        Box::pin(async move {
            let stream = TlsServer::accept(self, tcp).await?;
            let channel_binding = server_exporter(stream.get_ref().1);
            Ok(crate::listen::stream::Secured {
                stream: crate::listen::stream::ConnStream::Wrapped(Box::new(stream)),
                channel_binding,
            })
        })
    }
}

fn read_file(path: &Path, setting: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        setting,
        path: path.to_path_buf(),
        source,
    })
}

fn read_chain(
    path: &Path,
    setting: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_file(path, setting)?;
    let pem = |message: String| TlsError::Pem {
        setting,
        path: path.to_path_buf(),
        message,
    };
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(format!("not a PEM certificate chain ({e})")))?;
    if chain.is_empty() {
        return Err(pem("no certificate in it (expected a PEM chain)".into()));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_file(path, "tls-key")?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        setting: "tls-key",
        path: path.to_path_buf(),
        message: format!("no usable PEM private key in it ({e})"),
    })
}

/// The server configuration for a chain and its key: TLS 1.3 and 1.2, ALPN http/1.1.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Pair)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::Pair)?;
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

fn load_files(cert: &Path, key: &Path) -> Result<Current, TlsError> {
    let chain = read_chain(cert, "tls-cert")?;
    let fingerprint = fingerprint(&chain[0]);
    let leaf = chain[0].clone();
    let key = read_key(key)?;
    Ok(Current {
        config: server_config(chain, key)?,
        fingerprint,
        leaf,
    })
}

/// The self-signed certificate in `data_dir`, made now if there is none or if it
/// was made for other names.
fn self_signed(data_dir: &Path, names: &[String]) -> Result<Current, TlsError> {
    let (cert_path, key_path) = self_signed_paths(data_dir);
    let names_path = data_dir.join(SELF_SIGNED_NAMES);
    let wanted = names.join("\n") + "\n";
    let recorded = std::fs::read_to_string(&names_path).ok();
    if cert_path.exists() && key_path.exists() {
        // A certificate made for other names is made again: clients pinned to the
        // old fingerprint must be told, so say so loudly.
        if recorded.as_deref().is_none_or(|r| r == wanted) {
            return load_files(&cert_path, &key_path).map_err(|e| match e {
                TlsError::Read { path, source, .. } => TlsError::Read {
                    setting: "tls-self-signed",
                    path,
                    source,
                },
                TlsError::Pem { path, message, .. } => TlsError::Pem {
                    setting: "tls-self-signed",
                    path,
                    message,
                },
                other => other,
            });
        }
        tracing::warn!(
            names = names.join(","),
            "--tls-name differs from the names of the kept self-signed certificate: making a new one (its fingerprint changes; pinned clients must update)"
        );
    }
    let params = rcgen::CertificateParams::new(names.to_vec())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let key = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let mut params = params;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "ccrelay self-signed");
    params.distinguished_name = dn;
    // Valid from yesterday (clock skew) for 100 years: it is pinned, never renewed.
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(365 * 100);
    let cert = params
        .self_signed(&key)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    write_private(&cert_path, cert.pem().as_bytes())?;
    write_private(&names_path, wanted.as_bytes())?;
    let fingerprint = fingerprint(cert.der());
    tracing::info!(fingerprint = %fingerprint, names = names.join(","), path = %cert_path.display(), "made a self-signed TLS certificate");
    let key_der = PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    Ok(Current {
        config: server_config(vec![cert.der().clone()], key_der)?,
        fingerprint,
        leaf: cert.der().clone(),
    })
}

/// Write a file readable by its owner only (0600), atomically (temp file + rename).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_sha256_unpadded_base64() {
        // SHA-256("") = e3b0c442...; base64 without padding is 43 characters.
        assert_eq!(
            fingerprint(b""),
            "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"
        );
    }

    #[test]
    fn self_signed_is_made_once_private_and_remade_for_other_names() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let a = TlsServer::new(
            TlsSource::SelfSigned {
                names: names.clone(),
            },
            dir.path(),
        )
        .unwrap();
        let b = TlsServer::new(
            TlsSource::SelfSigned {
                names: names.clone(),
            },
            dir.path(),
        )
        .unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint(), "made once, then kept");
        let (cert, key) = self_signed_paths(dir.path());
        for p in [&cert, &key] {
            let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
        assert_eq!(
            cert_file_fingerprint(&cert, "tls-cert").unwrap(),
            a.fingerprint()
        );
        let c = TlsServer::new(
            TlsSource::SelfSigned {
                names: vec!["relay.example".into()],
            },
            dir.path(),
        )
        .unwrap();
        assert_ne!(a.fingerprint(), c.fingerprint());
    }

    #[test]
    fn server_info_prints_id_and_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let out = server_info(dir.path(), None).unwrap();
        assert!(
            out.contains("server_id: none yet") && out.contains("fingerprint: none"),
            "{out}"
        );
        std::fs::write(dir.path().join("server_id"), "abc123\n").unwrap();
        let tls = TlsServer::new(
            TlsSource::SelfSigned {
                names: vec!["localhost".into()],
            },
            dir.path(),
        )
        .unwrap();
        let out = server_info(dir.path(), None).unwrap();
        assert_eq!(
            out,
            format!("server_id: abc123\nfingerprint: {}\n", tls.fingerprint())
        );
        let e = server_info(dir.path(), Some(&dir.path().join("missing.pem"))).unwrap_err();
        assert_eq!(e.setting(), "tls-cert");
    }

    #[test]
    fn bad_files_name_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        let source = || TlsSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        };
        let e = TlsServer::new(source(), dir.path()).unwrap_err();
        assert_eq!(e.setting(), "tls-cert", "{e}");
        std::fs::write(&cert, "not pem").unwrap();
        let e = TlsServer::new(source(), dir.path()).unwrap_err();
        assert_eq!(e.setting(), "tls-cert", "{e}");
        assert!(e.to_string().contains("no certificate"), "{e}");

        let one = rcgen::generate_simple_self_signed(vec!["a.example".into()]).unwrap();
        let two = rcgen::generate_simple_self_signed(vec!["b.example".into()]).unwrap();
        std::fs::write(&cert, one.cert.pem()).unwrap();
        std::fs::write(&key, "garbage").unwrap();
        let e = TlsServer::new(source(), dir.path()).unwrap_err();
        assert_eq!(e.setting(), "tls-key", "{e}");
        // A key that belongs to another certificate.
        std::fs::write(&key, two.signing_key.serialize_pem()).unwrap();
        let e = TlsServer::new(source(), dir.path()).unwrap_err();
        assert_eq!(e.setting(), "tls-key", "{e}");
        std::fs::write(&key, one.signing_key.serialize_pem()).unwrap();
        let tls = TlsServer::new(source(), dir.path()).unwrap();
        assert_eq!(tls.fingerprint(), fingerprint(one.cert.der()));

        // Reload: a corrupt replacement keeps the old pair, a good one is taken.
        std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
        assert!(tls.reload().is_err());
        assert_eq!(tls.fingerprint(), fingerprint(one.cert.der()));
        std::fs::write(&cert, two.cert.pem()).unwrap();
        std::fs::write(&key, two.signing_key.serialize_pem()).unwrap();
        assert_eq!(tls.reload().unwrap(), fingerprint(two.cert.der()));
    }

    /// A handshake over a socket pair: ALPN, TLS 1.3, and both ends derive the
    /// same exporter; TLS 1.2 gives none.
    #[tokio::test]
    async fn exporter_agrees_on_both_ends_over_tls13_only() {
        let dir = tempfile::tempdir().unwrap();
        let tls = Arc::new(
            TlsServer::new(
                TlsSource::SelfSigned {
                    names: vec!["localhost".into()],
                },
                dir.path(),
            )
            .unwrap(),
        );
        let (cert, _) = self_signed_paths(dir.path());
        let chain = read_chain(&cert, "tls-cert").unwrap();
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = {
                let tls = tls.clone();
                tokio::spawn(async move {
                    let (tcp, _) = listener.accept().await.unwrap();
                    let s = tls.accept(tcp).await.unwrap();
                    let conn = s.get_ref().1;
                    (
                        server_exporter(conn),
                        conn.alpn_protocol().map(<[u8]>::to_vec),
                    )
                })
            };
            let mut roots = rustls::RootCertStore::empty();
            roots.add(chain[0].clone()).unwrap();
            let mut config = rustls::ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(&[version])
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
            let tcp = TcpStream::connect(addr).await.unwrap();
            let client = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect("localhost".try_into().unwrap(), tcp)
                .await
                .unwrap();
            let client_value = client_exporter(client.get_ref().1);
            let (server_value, alpn) = server.await.unwrap();
            assert_eq!(alpn.as_deref(), Some(ALPN_HTTP11));
            assert_eq!(client_value, server_value);
            assert_eq!(client_value.is_some(), version == &rustls::version::TLS13);
        }
    }
}
