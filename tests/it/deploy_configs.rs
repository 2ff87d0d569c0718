//! The example configurations in deploy/config/ each start the real server.
//!
//! Every setting is taken from the file except what ties a run to this machine,
//! which flags override (flags beat the file): the listen address (127.0.0.1:0),
//! a metrics listener (127.0.0.1:0), the keys files, data dir, workdir and the
//! agent (the mock). `HOME` points into the test's directory, so `~` paths in a
//! file land there too. The test then checks what the file asked for: the log
//! format, `/healthz`, a separate metrics listener, TLS (`wss://`) when the file
//! enables it, that an owner key authenticates, and that the names the file gives
//! clients to dial (`public-url`, `server-name`, `tls-name`) are the server's own:
//! a signature bound to one of them is accepted on this listener, one bound to
//! another name is refused (docs/protocol.md, "Origin binding"); SIGTERM then
//! stops it with exit 0.
//!
//! A file naming an option this build does not have (one another branch adds)
//! is reported as SKIPPED with the missing options listed.

use crate::common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Fixture, TestClient, ccrelay_bin, http_request, mock_agent_bin, origin_of_url};
use serde_json::Value;

fn config_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/config")
        .join(name)
}

/// The file's top-level keys.
fn file_keys(path: &Path) -> toml::Table {
    let text = std::fs::read_to_string(path).expect("config readable");
    text.parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("{} is not TOML: {e}", path.display()))
}

/// Keys of the file that `ccrelay serve --help` does not list as options.
fn unsupported_keys(keys: &toml::Table) -> Vec<String> {
    let help = Command::new(ccrelay_bin())
        .args(["serve", "--help"])
        .output()
        .expect("serve --help runs");
    let help = String::from_utf8_lossy(&help.stdout);
    keys.keys()
        .filter(|k| {
            // List spellings of repeatable options.
            let option = match k.as_str() {
                "allowed-origins" => "allowed-origin",
                "sessions" => "session",
                "tls-names" => "tls-name",
                other => other,
            };
            !help.contains(&format!("--{option} ")) && !help.contains(&format!("--{option}\n"))
        })
        .cloned()
        .collect()
}

/// A server started from a config file.
struct Started {
    child: std::process::Child,
    scheme: String,
    addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Started {
    fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// GET `path` from the main listener: (status, body). TLS goes through curl
    /// (the certificate is self-signed: `-k`; this checks serving, not trust).
    async fn get(&self, path: &str) -> (u16, String) {
        if self.scheme == "ws" {
            let (status, _, body) = http_request(
                self.addr,
                &format!(
                    "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                    self.addr
                ),
            )
            .await;
            return (status, body);
        }
        let out = Command::new("curl")
            .args(["-sk", "--max-time", "10", "-w", "\n%{http_code}"])
            .arg(format!("https://{}{path}", self.addr))
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

fn start(fx: &Fixture, config: &Path, keys: &toml::Table) -> Started {
    // A `session-root` of the examples is under the home directory (`~/src`): it
    // must exist, as on the machine the example is written for.
    std::fs::create_dir_all(fx.path().join("src")).expect("~/src");
    let mut cmd = fx.serve_command();
    cmd.arg("--config")
        .arg(config)
        .arg("--agent-cmd")
        .arg(mock_agent_bin())
        .env("HOME", fx.path())
        .env("CCRELAY_MOCK_STATE_DIR", fx.path().join("mock-state"));
    if keys.contains_key("viewer-keys") {
        cmd.arg("--viewer-keys").arg(fx.path().join("viewer_keys"));
    }
    if keys.contains_key("metrics-listen") {
        cmd.args(["--metrics-listen", "127.0.0.1:0"]);
    }
    // The test's own CCRELAY_* environment must not change what the file says.
    for (k, _) in std::env::vars() {
        if k.starts_with("CCRELAY_") && k != "CCRELAY_MOCK_STATE_DIR" {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().expect("ccrelay starts");
    let logs = Arc::new(Mutex::new(Vec::new()));
    let sink = logs.clone();
    let stderr = child.stderr.take().expect("stderr piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Some(Ok(line)) = BufReader::new(stdout).lines().next() {
            let _ = tx.send(line);
        }
    });
    let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) else {
        let _ = child.kill();
        let status = child.wait();
        panic!(
            "{} did not start ({status:?}); logs:\n{}",
            config.display(),
            logs.lock().unwrap().join("\n")
        );
    };
    let rest = line
        .strip_prefix("ccrelay listening on ")
        .unwrap_or_else(|| panic!("unexpected listening line {line:?}"));
    let (scheme, rest) = rest.split_once("://").expect("a URL");
    let addr: SocketAddr = rest
        .strip_suffix("/v1/ws")
        .expect("/v1/ws")
        .parse()
        .expect("address");
    Started {
        child,
        scheme: scheme.to_string(),
        addr,
        logs,
    }
}

/// The origins a client dialing one of the names the file gives would bind, as
/// seen by a server listening on `addr`: the `public-url`, each `server-name`
/// (`wss`: TLS may end at a proxy in front) and, with TLS, each `tls-name` with
/// the listen port.
fn declared_origins(keys: &toml::Table, addr: SocketAddr, tls: bool) -> Vec<String> {
    let strings = |key: &str| -> Vec<String> {
        match keys.get(key) {
            Some(toml::Value::String(s)) => vec![s.clone()],
            Some(toml::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    };
    let mut origins: Vec<String> = strings("public-url")
        .iter()
        .map(|url| origin_of_url(url))
        .collect();
    for name in strings("server-name")
        .into_iter()
        .chain(strings("server-names"))
    {
        origins.push(origin_of_url(&format!("wss://{name}/")));
    }
    if tls {
        for name in strings("tls-name").into_iter().chain(strings("tls-names")) {
            origins.push(origin_of_url(&format!("wss://{name}:{}/", addr.port())));
        }
    }
    origins
}

/// Authenticate the owner over the server's own listener with a signature bound
/// to `origin`: the server's answer.
async fn authenticate_bound(server: &Started, fx: &Fixture, origin: &str) -> Value {
    let mut client =
        TestClient::connect(&format!("{}://{}/v1/ws", server.scheme, server.addr)).await;
    client.origin = origin.to_string();
    client.authenticate(&fx.owner, Some("config-test")).await
}

/// Start the server with `name`, check what the file asked for, stop it.
async fn check_config(name: &str) -> Option<Started> {
    let path = config_path(name);
    let keys = file_keys(&path);
    let missing = unsupported_keys(&keys);
    assert!(
        missing.is_empty(),
        "{name} sets keys this build has no option for: {missing:?}"
    );
    let fx = Fixture::new();
    let server = start(&fx, &path, &keys);

    let tls = keys.get("tls-self-signed") == Some(&toml::Value::Boolean(true))
        || keys.contains_key("tls-cert");
    assert_eq!(
        server.scheme,
        if tls { "wss" } else { "ws" },
        "{name}: TLS as configured"
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = server.get("/healthz").await;
        if status == 200 {
            let health: Value = serde_json::from_str(&body).expect("healthz JSON");
            assert_eq!(health["status"], "ok", "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "{name}: /healthz never 200");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Log format as the file says (pretty is the default).
    let json_logs = keys.get("log-format").and_then(|v| v.as_str()) == Some("json");
    let first = server
        .logs()
        .into_iter()
        .find(|l| !l.trim().is_empty())
        .expect("the server logged something");
    assert_eq!(
        serde_json::from_str::<Value>(&first).is_ok(),
        json_logs,
        "{name}: log format; first line {first:?}"
    );

    if keys.contains_key("metrics-listen") {
        assert!(json_logs, "this test reads metrics_addr from JSON logs");
        // The log line may trail the stdout line a little.
        let deadline = Instant::now() + Duration::from_secs(10);
        let metrics_addr: SocketAddr = loop {
            let found = server
                .logs()
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|l| l["message"] == "listening")
                .and_then(|l| l["metrics_addr"].as_str().map(str::to_string));
            if let Some(addr) = found {
                break addr.parse().expect("metrics address");
            }
            assert!(Instant::now() < deadline, "{name}: no listening log line");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_ne!(metrics_addr, server.addr, "{name}: metrics apart");
        let (status, _, body) = http_request(
            metrics_addr,
            &format!("GET /metrics HTTP/1.1\r\nHost: {metrics_addr}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 200);
        assert!(body.contains("ccrelay_connections_open"), "{body}");
        let (status, _) = server.get("/metrics").await;
        assert_eq!(status, 404, "{name}: no metrics on the public listener");
    }

    let url = format!("{}://{}/v1/ws", server.scheme, server.addr);
    let mut client = TestClient::connect(&url).await;
    let ok = client.authenticate(&fx.owner, Some("config-test")).await;
    assert_eq!(ok["type"], "auth.ok", "{name}: {ok}");

    // The names the file tells clients to dial are the server's own names.
    for origin in declared_origins(&keys, server.addr, tls) {
        let ok = authenticate_bound(&server, &fx, &origin).await;
        assert_eq!(ok["type"], "auth.ok", "{name}: bound to {origin}: {ok}");
    }
    let scheme = if tls { "wss" } else { "ws" };
    let other = format!("{scheme}://not-a-name.example:{}", server.addr.port());
    let refused = authenticate_bound(&server, &fx, &other).await;
    assert_eq!(
        refused["code"], "auth_failed",
        "{name}: bound to {other}: {refused}"
    );

    // SIGTERM: a clean stop, exit 0.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal delivered");
    let mut server = server;
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "{name}: no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0), "{name}: {:?}", server.logs());
    Some(server)
}

#[tokio::test]
async fn laptop_config_starts() {
    assert!(check_config("laptop.toml").await.is_some());
}

#[tokio::test]
async fn shared_server_config_starts() {
    assert!(check_config("shared-server.toml").await.is_some());
}

#[tokio::test]
async fn devbox_phone_config_starts() {
    assert!(check_config("devbox-phone.toml").await.is_some());
}

#[test]
fn every_example_config_is_covered() {
    let mut files: Vec<String> = std::fs::read_dir(config_path(""))
        .expect("deploy/config exists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["devbox-phone.toml", "laptop.toml", "shared-server.toml"],
        "a new example config needs its test here"
    );
}
