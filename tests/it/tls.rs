//! TLS, server identity and channel binding, over real sockets against
//! the real binary: the plaintext-outside-loopback rule, `ccrelay server-info`,
//! and `ccrelay attach` over `wss://` — certificate checks (CA, `--ca-file`,
//! pinned fingerprints), known_servers records and the refusals when a URL's
//! certificate or server id changes. The TLS servers here are a TLS-terminating
//! proxy written in the test (rustls) in front of a plaintext `ccrelay serve`, as
//! a Caddy or nginx deployment is.

use crate::common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use common::{Fixture, KeyPair, ServerOptions, ccrelay_bin, ssh_keygen_sign};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};

/// How long one `ccrelay attach` run may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// A certificate and its key, PEM.
struct Cert {
    pem: String,
    key_pem: String,
    fingerprint: String,
}

impl Cert {
    fn from_rcgen(cert: &rcgen::Certificate, key: &rcgen::KeyPair) -> Cert {
        Cert {
            pem: cert.pem(),
            key_pem: key.serialize_pem(),
            fingerprint: ccrelay::tls::fingerprint(cert.der()),
        }
    }

    fn server_config(&self) -> Arc<ServerConfig> {
        let chain = CertificateDer::pem_slice_iter(self.pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("chain");
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("key");
        ccrelay::tls::server_config(chain, key).expect("server config")
    }
}

fn leaf_params(names: &[&str]) -> rcgen::CertificateParams {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("names");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params
}

fn self_signed(names: &[&str]) -> Cert {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = leaf_params(names).self_signed(&key).expect("cert");
    Cert::from_rcgen(&cert, &key)
}

/// A test CA: its certificate (PEM) and an issuer for leaves.
struct Ca {
    pem: String,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ccrelay test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().expect("key");
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).expect("CA");
        Ca {
            pem: issuer.pem(),
            issuer,
        }
    }

    fn leaf(&self, names: &[&str]) -> Cert {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = leaf_params(names)
            .signed_by(&key, &self.issuer)
            .expect("leaf");
        let mut c = Cert::from_rcgen(&cert, &key);
        // The chain as servers send it: leaf first.
        c.pem = format!("{}{}", c.pem, self.pem);
        c
    }

    fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, &self.pem).expect("write CA");
        path
    }
}

/// A TLS-terminating proxy (TLS to the client, plaintext to a ccrelay on
/// loopback), whose certificate and backend can be swapped between connections.
struct TlsProxy {
    addr: SocketAddr,
    config: Arc<RwLock<Arc<ServerConfig>>>,
    backend: Arc<RwLock<SocketAddr>>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsProxy {
    async fn start(cert: &Cert, backend: SocketAddr) -> TlsProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let config = Arc::new(RwLock::new(cert.server_config()));
        let backend = Arc::new(RwLock::new(backend));
        let task = tokio::spawn({
            let config = config.clone();
            let backend = backend.clone();
            async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        return;
                    };
                    let acceptor = tokio_rustls::TlsAcceptor::from(config.read().unwrap().clone());
                    let to = *backend.read().unwrap();
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let Ok(mut up) = TcpStream::connect(to).await else {
                            return;
                        };
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                    });
                }
            }
        });
        TlsProxy {
            addr,
            config,
            backend,
            task,
        }
    }

    fn set_cert(&self, cert: &Cert) {
        *self.config.write().unwrap() = cert.server_config();
    }

    fn set_backend(&self, addr: SocketAddr) {
        *self.backend.write().unwrap() = addr;
    }

    fn url(&self) -> String {
        format!("wss://{}/v1/ws", self.addr)
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One finished `ccrelay attach` run.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `ccrelay attach --prompt hello --json -i KEY ARGS...` with known_servers in
/// `known`, no terminal, no agent; bounded in time.
async fn attach(key: &KeyPair, known: &Path, args: &[&str]) -> Run {
    let home = known.parent().expect("parent").join("home");
    std::fs::create_dir_all(&home).expect("home");
    let mut cmd = tokio::process::Command::new(ccrelay_bin());
    cmd.arg("attach")
        .args(["--prompt", "hello", "--json", "-i"])
        .arg(&key.private)
        .arg("--known-servers")
        .arg(known)
        .args(args)
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("SSH_ASKPASS")
        .env_remove("XDG_CONFIG_HOME")
        .env("HOME", &home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(CLIENT_TIMEOUT, cmd.output())
        .await
        .expect("attach finished in time")
        .expect("attach ran");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Run {
    #[track_caller]
    fn assert_ok(&self) {
        assert_eq!(
            self.code,
            Some(0),
            "stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        assert!(self.stdout.contains("auth.ok"), "{}", self.stdout);
    }

    /// Exit 2, nothing signed (no auth.ok), and the message says `needles`.
    #[track_caller]
    fn assert_refused(&self, needles: &[&str]) {
        assert_eq!(self.code, Some(2), "stderr:\n{}", self.stderr);
        assert!(!self.stdout.contains("auth.ok"), "{}", self.stdout);
        for n in needles {
            assert!(self.stderr.contains(n), "{n:?} not in:\n{}", self.stderr);
        }
    }
}

/// The server id a server shows in its challenge.
async fn server_id_of(server: &common::TestServer) -> String {
    let mut c = server.connect().await;
    let challenge = c.recv().await;
    challenge["server_id"]
        .as_str()
        .expect("server_id")
        .to_string()
}

fn known_line(known: &Path, url: &str) -> (usize, String) {
    let text = std::fs::read_to_string(known).expect("known_servers written");
    text.lines()
        .enumerate()
        .find(|(_, l)| l.starts_with(&format!("{url} ")))
        .map(|(i, l)| (i + 1, l.to_string()))
        .unwrap_or_else(|| panic!("{url} not recorded:\n{text}"))
}

/// The plaintext-outside-loopback rule.
#[tokio::test]
async fn plaintext_outside_loopback_needs_tls_or_insecure_plaintext() {
    let fx = Fixture::new();
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(ccrelay_bin())
            .args(["serve", "--listen", "0.0.0.0:0", "--authorized-keys"])
            .arg(fx.authorized_keys())
            .arg("--data-dir")
            .arg(fx.data_dir())
            .arg("--workdir")
            .arg(fx.workdir())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("exits at once")
    .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--listen") && stderr.contains("--insecure-plaintext"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing started");
    assert!(!fx.data_dir().exists(), "nothing started");

    let server = fx.start(
        ServerOptions::default()
            .listen("0.0.0.0:0")
            .arg("--insecure-plaintext"),
    );
    assert!(server.url.starts_with("ws://0.0.0.0:"), "{}", server.url);
}

/// `ccrelay server-info` prints the id the challenges carry and a certificate's fingerprint.
#[tokio::test]
async fn server_info_prints_the_server_id_and_fingerprint() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let id = server_id_of(&server).await;
    let cert = self_signed(&["localhost"]);
    let cert_path = fx.path().join("cert.pem");
    std::fs::write(&cert_path, &cert.pem).unwrap();
    let out = tokio::process::Command::new(ccrelay_bin())
        .arg("server-info")
        .arg("--data-dir")
        .arg(fx.data_dir())
        .arg("--tls-cert")
        .arg(&cert_path)
        .output()
        .await
        .expect("runs");
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout,
        format!("server_id: {id}\nfingerprint: {}\n", cert.fingerprint)
    );
    let out = tokio::process::Command::new(ccrelay_bin())
        .arg("server-info")
        .arg("--tls-cert")
        .arg(fx.path().join("missing.pem"))
        .output()
        .await
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-cert"));
}

/// Trust on first use (and the client half of channel binding) through a TLS-terminating
/// proxy: a self-signed certificate is trusted on first use only when told to,
/// recorded with its fingerprint and server id, and a later change of either —
/// another certificate or another data dir at the same URL — is refused with
/// exit 2 naming the known_servers line, `--accept-new-server` notwithstanding;
/// a wrong `--server-fingerprint` refuses, a right one is enough by itself; a
/// CA-signed certificate needs the CA (`--ca-file`) and is recorded without a
/// fingerprint (renewals are fine), as unbound (TLS ends at the proxy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_checks_certificates_and_server_identity() {
    let fx = Fixture::new();
    // The proxies exist first, so that the server can be told their names (TLS
    // ends at them: clients bind wss://127.0.0.1:<proxy port>).
    let first = self_signed(&["localhost", "127.0.0.1"]);
    let nowhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let proxy = TlsProxy::start(&first, nowhere).await;
    let ca = Ca::new();
    let ca_proxy = TlsProxy::start(&ca.leaf(&["localhost", "127.0.0.1"]), nowhere).await;
    let names = [proxy.addr, ca_proxy.addr].map(|a| format!("127.0.0.1:{}", a.port()));
    let server = fx.start(ServerOptions::default().args(&[
        "--server-name",
        &names[0],
        "--server-name",
        &names[1],
    ]));
    proxy.set_backend(server.addr);
    ca_proxy.set_backend(server.addr);
    let id = server_id_of(&server).await;
    let known = fx.path().join("known_servers");
    let url = proxy.url();

    // Not seen before, no terminal, not told to: nothing is signed.
    let run = attach(&fx.owner, &known, &[&url]).await;
    run.assert_refused(&[
        "not seen before",
        &first.fingerprint,
        &id,
        "--accept-new-server",
        "unknown CA",
    ]);
    assert!(!known.exists(), "nothing recorded");

    // Trust on first use: recorded with fingerprint and id, as unbound.
    let run = attach(&fx.owner, &known, &[&url, "--accept-new-server"]).await;
    run.assert_ok();
    assert!(
        run.stderr.contains(&first.fingerprint) && run.stderr.contains(&id),
        "first use prints both: {}",
        run.stderr
    );
    let (_, line) = known_line(&known, &url);
    assert_eq!(
        line,
        format!(
            "{url} server_id={id} fingerprint={} binding=none",
            first.fingerprint
        )
    );
    // Known now: no flag needed; a bare HOST:PORT finds TLS and the same record.
    attach(&fx.owner, &known, &[&url]).await.assert_ok();
    attach(&fx.owner, &known, &[&proxy.addr.to_string()])
        .await
        .assert_ok();

    // Another certificate at the same URL: refused, naming the line to delete.
    let second = self_signed(&["localhost", "127.0.0.1"]);
    proxy.set_cert(&second);
    let (line_no, _) = known_line(&known, &url);
    let where_ = format!("line {line_no} of {}", known.display());
    for extra in [&[][..], &["--accept-new-server"][..]] {
        let mut args = vec![url.as_str()];
        args.extend_from_slice(extra);
        attach(&fx.owner, &known, &args).await.assert_refused(&[
            "CHANGED",
            &second.fingerprint,
            &where_,
        ]);
    }
    // A wrong pin refuses; the right pin is enough by itself (fresh records).
    let fresh = fx.path().join("fresh_known");
    attach(
        &fx.owner,
        &fresh,
        &[&url, "--server-fingerprint", &first.fingerprint],
    )
    .await
    .assert_refused(&["--server-fingerprint", &second.fingerprint]);
    attach(
        &fx.owner,
        &fresh,
        &[&url, "--server-fingerprint", &second.fingerprint],
    )
    .await
    .assert_ok();

    // Another server (other data dir) behind the same URL and certificate.
    proxy.set_cert(&first);
    let other_fx = Fixture::new();
    std::fs::copy(fx.authorized_keys(), other_fx.authorized_keys()).unwrap();
    let other = other_fx.start(ServerOptions::default());
    let other_id = server_id_of(&other).await;
    assert_ne!(other_id, id);
    proxy.set_backend(other.addr);
    attach(&fx.owner, &known, &[&url, "--accept-new-server"])
        .await
        .assert_refused(&["server_id", &other_id, &id, &where_]);
    proxy.set_backend(server.addr);
    attach(&fx.owner, &known, &[&url]).await.assert_ok();

    // A private CA: unknown without --ca-file; with it, recorded without a
    // fingerprint, so a renewed certificate from the same CA is fine.
    let ca_file = ca.write(fx.path());
    let ca_url = ca_proxy.url();
    attach(&fx.owner, &known, &[&ca_url])
        .await
        .assert_refused(&["unknown CA", "--ca-file"]);
    let ca_arg = ca_file.to_str().unwrap();
    attach(&fx.owner, &known, &[&ca_url, "--ca-file", ca_arg])
        .await
        .assert_refused(&["not seen before"]);
    attach(
        &fx.owner,
        &known,
        &[&ca_url, "--ca-file", ca_arg, "--accept-new-server"],
    )
    .await
    .assert_ok();
    let (_, line) = known_line(&known, &ca_url);
    assert_eq!(line, format!("{ca_url} server_id={id} binding=none"));
    ca_proxy.set_cert(&ca.leaf(&["localhost", "127.0.0.1"]));
    attach(&fx.owner, &known, &[&ca_url, "--ca-file", ca_arg])
        .await
        .assert_ok();
    // A CA certificate for another name does not vouch for this one.
    ca_proxy.set_cert(&ca.leaf(&["elsewhere.example"]));
    attach(&fx.owner, &known, &[&ca_url, "--ca-file", ca_arg])
        .await
        .assert_refused(&["not trusted", "not valid for this host name"]);
}

// ---------------------------------------------------------------------------
// The server's own TLS (needs the TLS accept path in `serve`).
// ---------------------------------------------------------------------------

type TlsWs = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// TLS to `addr` accepting any certificate: the stream, the certificate's
/// fingerprint and the RFC 9266 exporter (TLS 1.3).
async fn tls_to(
    addr: SocketAddr,
) -> (
    tokio_rustls::client::TlsStream<TcpStream>,
    String,
    Option<[u8; 32]>,
) {
    let provider = ccrelay::tls::provider();
    let verifier = Arc::new(common::any_cert::AnyCert {
        seen: std::sync::Mutex::new(None),
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("TLS handshake");
    let exporter = ccrelay::tls::client_exporter(tls.get_ref().1);
    let fp = verifier
        .seen
        .lock()
        .unwrap()
        .clone()
        .expect("certificate seen");
    (tls, fp, exporter)
}

/// A WebSocket over TLS to a ccrelay: (socket, certificate fingerprint, exporter).
async fn wss_connect(addr: SocketAddr) -> (TlsWs, String, Option<[u8; 32]>) {
    let (tls, fp, exporter) = tls_to(addr).await;
    let (ws, _) = tokio_tungstenite::client_async(format!("wss://{addr}/v1/ws"), tls)
        .await
        .expect("upgrade");
    (ws, fp, exporter)
}

async fn recv_json<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> serde_json::Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt as _;
    loop {
        let msg = tokio::time::timeout(common::FRAME_TIMEOUT, ws.next())
            .await
            .expect("a frame in time")
            .expect("connection open")
            .expect("frame");
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            return serde_json::from_str(&t).expect("JSON frame");
        }
    }
}

async fn send_json<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, v: serde_json::Value)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::SinkExt as _;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        v.to_string().into(),
    ))
    .await
    .expect("send");
}

/// The certificate fingerprint `serve` logged at start.
async fn logged_fingerprint(server: &common::TestServer) -> String {
    assert!(
        server
            .wait_log("tls_fingerprint", Duration::from_secs(20))
            .await,
        "no tls_fingerprint logged:\n{}",
        server.logs()
    );
    server
        .log_json()
        .iter()
        .find_map(|l| l["tls_fingerprint"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no tls_fingerprint logged:\n{}", server.logs()))
}

fn server_info(data_dir: &Path) -> String {
    let out = std::process::Command::new(ccrelay_bin())
        .arg("server-info")
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("server-info");
    assert_eq!(out.status.code(), Some(0));
    String::from_utf8(out.stdout).unwrap()
}

/// Run a command with no input, bounded in time; (exit code, stdout, stderr).
async fn run_tool(cmd: &mut tokio::process::Command) -> (Option<i32>, String, String) {
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(CLIENT_TIMEOUT, cmd.output())
        .await
        .expect("finished in time")
        .expect("ran");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `--tls-self-signed` serves TLS only; an outside client
/// (Python `ssl` + `websockets`, pinned to the logged fingerprint, signing with
/// `ssh-keygen -Y sign`) authenticates and attaches; plaintext gets no HTTP
/// answer; `openssl s_client` sees TLS 1.2+ (1.3 by default), ALPN http/1.1 and
/// the configured names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_tls_serves_a_pinned_outside_client_and_only_tls() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default().args(&[
        "--tls-self-signed",
        "--tls-name",
        "localhost",
        "--tls-name",
        "127.0.0.1",
        "--tls-name",
        "relay.test",
    ]));
    assert!(server.url.starts_with("wss://127.0.0.1:"), "{}", server.url);
    let fp = logged_fingerprint(&server).await;
    let info = server_info(&fx.data_dir());
    assert!(info.contains(&format!("fingerprint: {fp}\n")), "{info}");
    // The certificate and key are kept in the data dir, owner-only.
    use std::os::unix::fs::PermissionsExt as _;
    let (cert_path, key_path) = ccrelay::tls::self_signed_paths(&fx.data_dir());
    for p in [&cert_path, &key_path] {
        let mode = std::fs::metadata(p).expect("kept").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", p.display());
    }

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/wss_client.py");
    let (code, stdout, stderr) = run_tool(
        tokio::process::Command::new("python3")
            .arg(&script)
            .arg(&server.url)
            .arg(&fp)
            .arg(&fx.owner.private),
    )
    .await;
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON result");
    assert_eq!(result["fingerprint"], fp.as_str(), "{result}");
    assert_eq!(result["tls_version"], "TLSv1.3", "{result}");
    assert_eq!(result["challenge"]["channel_binding"], "tls-exporter");
    assert_eq!(result["auth"]["type"], "auth.ok", "{result}");
    assert_eq!(result["attach"]["type"], "attached", "{result}");
    // A wrong pin: the client stops before reading anything.
    let wrong = format!("SHA256:{}", "A".repeat(43));
    let (_, stdout, _) = run_tool(
        tokio::process::Command::new("python3")
            .arg(&script)
            .arg(&server.url)
            .arg(&wrong)
            .arg(&fx.owner.private),
    )
    .await;
    assert!(stdout.contains("fingerprint mismatch"), "{stdout}");

    // Plaintext HTTP to the TLS port: no HTTP answer.
    {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut answer)).await;
        assert!(
            !answer.starts_with(b"HTTP/"),
            "plaintext got an HTTP answer: {:?}",
            String::from_utf8_lossy(&answer)
        );
    }

    // openssl s_client: protocol, ALPN and the names in the certificate.
    let connect = server.addr.to_string();
    for (flag, version) in [("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")] {
        let (_, stdout, stderr) = run_tool(tokio::process::Command::new("openssl").args([
            "s_client",
            "-connect",
            &connect,
            "-servername",
            "localhost",
            "-alpn",
            "http/1.1",
            flag,
        ]))
        .await;
        assert!(
            stdout.contains(&format!("Protocol  : {version}"))
                || stdout.contains(&format!("New, {version}")),
            "{flag}:\n{stdout}\n{stderr}"
        );
        assert!(
            stdout.contains("ALPN protocol: http/1.1"),
            "{flag}:\n{stdout}"
        );
    }
    let (_, pem, _) = run_tool(tokio::process::Command::new("openssl").args([
        "s_client",
        "-connect",
        &connect,
        "-servername",
        "localhost",
    ]))
    .await;
    let pem_path = fx.path().join("served.pem");
    std::fs::write(&pem_path, &pem).unwrap();
    let (_, text, _) = run_tool(
        tokio::process::Command::new("openssl")
            .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
            .arg(&pem_path),
    )
    .await;
    for name in ["DNS:localhost", "IP Address:127.0.0.1", "DNS:relay.test"] {
        assert!(text.contains(name), "{name} not in:\n{text}");
    }

    // Made once: a restart on the same data dir serves the same certificate.
    drop(server);
    let again = fx.start(ServerOptions::default().args(&[
        "--tls-self-signed",
        "--tls-name",
        "localhost",
        "--tls-name",
        "127.0.0.1",
        "--tls-name",
        "relay.test",
    ]));
    assert_eq!(logged_fingerprint(&again).await, fp);
    let (_, seen, _) = wss_connect(again.addr).await;
    assert_eq!(seen, fp);
}

/// Write a certificate chain and key where `serve` reads them (key first: a
/// reload between the two writes fails and is retried on the next change).
fn install(cert: &Cert, cert_path: &Path, key_path: &Path) {
    std::fs::write(key_path, &cert.key_pem).unwrap();
    std::fs::write(cert_path, &cert.pem).unwrap();
}

/// `--tls-cert/--tls-key` from a test CA; `attach
/// --ca-file` works; new files + SIGHUP serve the new certificate to new
/// connections while an established one keeps working; a corrupt replacement
/// keeps the previous certificate and says so in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_files_are_reloaded_and_bad_ones_refused() {
    let fx = Fixture::new();
    let ca = Ca::new();
    let ca_file = ca.write(fx.path());
    let first = ca.leaf(&["localhost", "127.0.0.1"]);
    let cert_path = fx.path().join("cert.pem");
    let key_path = fx.path().join("key.pem");
    install(&first, &cert_path, &key_path);
    let server = fx.start(ServerOptions::default().args(&[
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
    ]));
    assert_eq!(logged_fingerprint(&server).await, first.fingerprint);
    let known = fx.path().join("known_servers");
    attach(
        &fx.owner,
        &known,
        &[
            &server.url,
            "--ca-file",
            ca_file.to_str().unwrap(),
            "--accept-new-server",
        ],
    )
    .await
    .assert_ok();
    let (_, line) = known_line(&known, &server.url);
    assert!(line.ends_with("binding=tls-exporter"), "{line}");

    // An authenticated connection made with the first certificate.
    let (mut old, fp, _) = wss_connect(server.addr).await;
    assert_eq!(fp, first.fingerprint);
    let challenge = recv_json(&mut old).await;
    let origin = common::origin_of_addr(server.addr, true);
    let text = common::bound_text(challenge["sign"].as_str().unwrap(), &origin);
    let signature = ssh_keygen_sign(&fx.owner, &text);
    send_json(
        &mut old,
        serde_json::json!({"type": "auth.response", "signature": signature, "origin": origin}),
    )
    .await;
    assert_eq!(recv_json(&mut old).await["type"], "auth.ok");

    // New files + SIGHUP: new connections get the new certificate.
    let second = ca.leaf(&["localhost", "127.0.0.1"]);
    install(&second, &cert_path, &key_path);
    server.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        server
            .wait_log(&second.fingerprint, Duration::from_secs(20))
            .await,
        "reload logged:\n{}",
        server.logs()
    );
    let (_, fp, _) = wss_connect(server.addr).await;
    assert_eq!(fp, second.fingerprint);
    // The established connection is untouched.
    send_json(&mut old, serde_json::json!({"type": "ping", "id": "p"})).await;
    let pong = recv_json(&mut old).await;
    assert_eq!(pong["type"], "pong", "{pong}");
    // The client keeps working: the CA vouches for the renewed certificate.
    attach(
        &fx.owner,
        &known,
        &[&server.url, "--ca-file", ca_file.to_str().unwrap()],
    )
    .await
    .assert_ok();

    // A corrupt replacement: logged, and the previous certificate stays.
    std::fs::write(&cert_path, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    server.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        server
            .wait_log("keeping the previous certificate", Duration::from_secs(20))
            .await,
        "{}",
        server.logs()
    );
    let (_, fp, _) = wss_connect(server.addr).await;
    assert_eq!(fp, second.fingerprint);
}

/// What the man in the middle does with the bytes.
#[derive(Clone)]
enum Mode {
    /// Relay TCP bytes: the client's TLS goes through to the server.
    Tcp,
    /// End the client's TLS with this certificate, open its own TLS connection to
    /// the server, and relay WebSocket frames — unchanged, or with the
    /// challenge's `channel_binding` offer removed.
    Relay {
        config: Arc<ServerConfig>,
        strip_offer: bool,
    },
}

/// A man in the middle on 127.0.0.1 in front of `backend`.
struct Mitm {
    addr: SocketAddr,
    mode: Arc<RwLock<Mode>>,
    task: tokio::task::JoinHandle<()>,
}

impl Mitm {
    async fn start(mode: Mode, backend: SocketAddr) -> Mitm {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Mitm::start_on(listener, mode, backend)
    }

    /// On a listener bound beforehand (its port can be named to the server first).
    fn start_on(listener: TcpListener, mode: Mode, backend: SocketAddr) -> Mitm {
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(RwLock::new(mode));
        let task = tokio::spawn({
            let mode = mode.clone();
            async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let mode = mode.read().unwrap().clone();
                    tokio::spawn(relay(tcp, mode, backend));
                }
            }
        });
        Mitm { addr, mode, task }
    }

    fn set(&self, mode: Mode) {
        *self.mode.write().unwrap() = mode;
    }
}

impl Drop for Mitm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(mut tcp: TcpStream, mode: Mode, backend: SocketAddr) {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    let (config, strip_offer) = match mode {
        Mode::Tcp => {
            if let Ok(mut up) = TcpStream::connect(backend).await {
                let _ = tokio::io::copy_bidirectional(&mut tcp, &mut up).await;
            }
            return;
        }
        Mode::Relay {
            config,
            strip_offer,
        } => (config, strip_offer),
    };
    let Ok(front) = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await else {
        return;
    };
    let Ok(client) = tokio_tungstenite::accept_async(front).await else {
        return;
    };
    let (server, _, _) = wss_connect(backend).await;
    let (mut to_client, mut from_client) = client.split();
    let (mut to_server, mut from_server) = server.split();
    let up = async {
        while let Some(Ok(m)) = from_client.next().await {
            if to_server.send(m).await.is_err() {
                break;
            }
        }
    };
    let down = async {
        while let Some(Ok(mut m)) = from_server.next().await {
            if strip_offer
                && let Message::Text(t) = &m
                && let Ok(mut v) = serde_json::from_str::<serde_json::Value>(t)
                && v["type"] == "auth.challenge"
            {
                v.as_object_mut().unwrap().remove("channel_binding");
                m = Message::Text(v.to_string().into());
            }
            if to_client.send(m).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

/// Channel binding and the client's downgrade refusal: a relaying man in
/// the middle, trusted by the client, cannot log in with the client's bound
/// signature (`auth_failed`), while the same client connected directly does;
/// a man in the middle that hides the binding offer from a client that saw the
/// server bind before is refused by the client; with `--require-channel-binding`
/// an unbound `ssh-keygen` signature over TLS is refused and a bound one, with
/// the exporter computed by the test client, accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_binding_defeats_a_relaying_man_in_the_middle() {
    let fx = Fixture::new();
    // A TCP forwarder in front (TLS still ends at the server) is a port mapping
    // the server is told about; the relaying man in the middle is not.
    let front_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_name = format!("127.0.0.1:{}", front_listener.local_addr().unwrap().port());
    let server = fx.start(
        ServerOptions::default()
            .arg("--tls-self-signed")
            .args(&["--server-name", &front_name]),
    );
    let real_fp = logged_fingerprint(&server).await;
    let known = fx.path().join("known_servers");

    // The man in the middle, with its own certificate the client trusts.
    let theirs = self_signed(&["localhost", "127.0.0.1"]);
    let mitm = Mitm::start(
        Mode::Relay {
            config: theirs.server_config(),
            strip_offer: false,
        },
        server.addr,
    )
    .await;
    let mitm_url = format!("wss://{}/v1/ws", mitm.addr);
    let run = attach(
        &fx.owner,
        &known,
        &[&mitm_url, "--server-fingerprint", &theirs.fingerprint],
    )
    .await;
    run.assert_refused(&["no authorized key"]);
    assert!(
        server
            .wait_log("authentication failed", Duration::from_secs(10))
            .await,
        "{}",
        server.logs()
    );

    // Directly: the same client and key succeed, bound.
    attach(
        &fx.owner,
        &known,
        &[&server.url, "--server-fingerprint", &real_fp],
    )
    .await
    .assert_ok();
    let (_, line) = known_line(&known, &server.url);
    assert!(line.ends_with("binding=tls-exporter"), "{line}");

    // Downgrade: at a URL where the client saw binding, a man in the middle
    // holding the server's own key hides the offer: refused before signing.
    let front = Mitm::start_on(front_listener, Mode::Tcp, server.addr);
    let front_url = format!("wss://{}/v1/ws", front.addr);
    attach(&fx.owner, &known, &[&front_url, "--accept-new-server"])
        .await
        .assert_ok();
    let (line_no, line) = known_line(&known, &front_url);
    assert!(line.ends_with("binding=tls-exporter"), "{line}");
    let (cert_path, key_path) = ccrelay::tls::self_signed_paths(&fx.data_dir());
    let stolen = Cert {
        pem: std::fs::read_to_string(&cert_path).unwrap(),
        key_pem: std::fs::read_to_string(&key_path).unwrap(),
        fingerprint: real_fp.clone(),
    };
    front.set(Mode::Relay {
        config: stolen.server_config(),
        strip_offer: true,
    });
    attach(&fx.owner, &known, &[&front_url])
        .await
        .assert_refused(&[
            "downgrade",
            &format!("line {line_no} of {}", known.display()),
        ]);
    drop(mitm);

    // --require-channel-binding: unbound refused, bound accepted.
    drop(server);
    let server = fx.start(
        ServerOptions::default()
            .arg("--tls-self-signed")
            .arg("--require-channel-binding"),
    );
    let origin = common::origin_of_addr(server.addr, true);
    let (mut ws, _, exporter) = wss_connect(server.addr).await;
    let challenge = recv_json(&mut ws).await;
    assert_eq!(challenge["channel_binding"], "tls-exporter");
    assert_eq!(
        challenge["bindings"],
        serde_json::json!(["origin", "tls-exporter"])
    );
    // Bound to the origin alone: not enough under --require-channel-binding.
    let text = common::bound_text(challenge["sign"].as_str().unwrap(), &origin);
    let signature = ssh_keygen_sign(&fx.owner, &text);
    send_json(
        &mut ws,
        serde_json::json!({"type": "auth.response", "signature": signature, "origin": origin}),
    )
    .await;
    let answer = recv_json(&mut ws).await;
    assert_eq!(answer["code"], "auth_failed", "{answer}");
    assert!(
        server
            .wait_log("--require-channel-binding", Duration::from_secs(5))
            .await
    );

    // Origin and exporter: accepted.
    let (mut ws, _, exporter3) = wss_connect(server.addr).await;
    let challenge = recv_json(&mut ws).await;
    use base64::Engine as _;
    let text = format!(
        "{}:tls-exporter:{}",
        common::bound_text(challenge["sign"].as_str().unwrap(), &origin),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(exporter3.expect("exporter"))
    );
    let signature = ssh_keygen_sign(&fx.owner, &text);
    send_json(
        &mut ws,
        serde_json::json!({"type": "auth.response", "signature": signature, "origin": origin,
            "channel_binding": "tls-exporter"}),
    )
    .await;
    let answer = recv_json(&mut ws).await;
    assert_eq!(answer["type"], "auth.ok", "{answer}");

    let (mut ws, _, exporter2) = wss_connect(server.addr).await;
    assert_ne!(exporter, exporter2, "each connection has its own exporter");
    let exporter = exporter2.expect("TLS 1.3 exporter");
    let challenge = recv_json(&mut ws).await;
    // Bound to the exporter alone, as clients made before origin binding sign: accepted.
    let bound = format!(
        "{}:tls-exporter:{}",
        challenge["sign"].as_str().unwrap(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(exporter)
    );
    let signature = ssh_keygen_sign(&fx.owner, &bound);
    send_json(
        &mut ws,
        serde_json::json!({"type": "auth.response", "signature": signature, "channel_binding": "tls-exporter"}),
    )
    .await;
    let answer = recv_json(&mut ws).await;
    assert_eq!(answer["type"], "auth.ok", "{answer}");
}
