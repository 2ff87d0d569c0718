//! A loopback Web Push service for tests (RFC 8030 push resource, RFC 8291
//! `aes128gcm`, RFC 8292 VAPID), in the role a browser vendor's push service
//! plays.
//!
//! Each fake device has a real P-256 key pair and auth secret, and an endpoint
//! `http://127.0.0.1:PORT/push/<name>`. A request is checked like a push service
//! would: `Authorization: vapid t=<JWT>, k=<key>` with `k` the server's
//! `/v1/push/key`, an ES256 signature that verifies with it, `aud` = this
//! service's origin, `exp` in the future and at most 24 h away, `sub` a
//! `mailto:` or `https:` contact; `Content-Encoding: aes128gcm`; a body that
//! decrypts with the device's private key. What passes is recorded (topic,
//! urgency, TTL, plaintext); what fails is recorded in `errors` and answered 400.
//! Each device can be told to answer 201 (default), any other status, or to hang.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Verifier as _;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// What a device's endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// Answer with this status (201 is a push service's "created").
    Status(u16),
    /// Never answer (until the mock stops).
    Hang,
}

/// One push that passed every check.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub device: String,
    pub topic: Option<String>,
    pub urgency: Option<String>,
    pub ttl: Option<String>,
    pub plaintext: Vec<u8>,
    /// The JWT claims (aud, exp, sub).
    pub claims: Value,
    /// The status answered.
    pub answered: Behavior,
}

impl Pushed {
    /// The plaintext as JSON (panics if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.plaintext).expect("push payload is JSON")
    }
}

/// A fake browser subscription.
#[derive(Clone)]
pub struct FakeDevice {
    pub name: String,
    pub endpoint: String,
    pub secret: p256::SecretKey,
    pub auth: [u8; 16],
}

impl FakeDevice {
    /// The subscription as `PushSubscription.toJSON()` gives it.
    pub fn subscription(&self) -> Value {
        json!({
            "endpoint": self.endpoint,
            "expirationTime": null,
            "keys": {
                "p256dh": URL_SAFE_NO_PAD.encode(self.secret.public_key().to_encoded_point(false).as_bytes()),
                "auth": URL_SAFE_NO_PAD.encode(self.auth),
            }
        })
    }
}

#[derive(Default)]
struct Inner {
    devices: HashMap<String, (p256::SecretKey, [u8; 16])>,
    behavior: HashMap<String, Behavior>,
    pushed: Vec<Pushed>,
    errors: Vec<String>,
    /// Requests seen, verified or not.
    requests: usize,
}

struct Shared {
    vapid_key: String,
    origin: String,
    port: u16,
    inner: Mutex<Inner>,
    stop: CancellationToken,
}

/// The running mock. Stops (and releases hanging requests) on drop.
pub struct MockPush {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Drop for MockPush {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

impl MockPush {
    /// Start on 127.0.0.1:0, accepting pushes signed by `vapid_public_key`
    /// (base64url of the uncompressed point, as `/v1/push/key` gives it).
    pub async fn start(vapid_public_key: &str) -> MockPush {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("mock push binds");
        let addr = listener.local_addr().expect("address");
        let shared = Arc::new(Shared {
            vapid_key: vapid_public_key.to_string(),
            origin: format!("http://{addr}"),
            port: addr.port(),
            inner: Mutex::new(Inner::default()),
            stop: CancellationToken::new(),
        });
        let app = Router::new()
            .route("/push/{device}", post(push))
            .with_state(shared.clone());
        let stop = shared.stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        MockPush { addr, shared }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap()
    }

    /// A new fake device with a fresh key pair and auth secret.
    pub fn device(&self, name: &str) -> FakeDevice {
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let mut auth = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut auth);
        self.lock()
            .devices
            .insert(name.to_string(), (secret.clone(), auth));
        FakeDevice {
            name: name.to_string(),
            endpoint: format!("http://{}/push/{name}", self.addr),
            secret,
            auth,
        }
    }

    /// Script what `device`'s endpoint answers from now on.
    pub fn set_behavior(&self, device: &str, behavior: Behavior) {
        self.lock().behavior.insert(device.to_string(), behavior);
    }

    /// Every push that passed the checks, in arrival order.
    pub fn pushed(&self) -> Vec<Pushed> {
        self.lock().pushed.clone()
    }

    /// Pushes to one device.
    pub fn pushed_to(&self, device: &str) -> Vec<Pushed> {
        self.pushed()
            .into_iter()
            .filter(|p| p.device == device)
            .collect()
    }

    /// Verification failures (a correct server causes none).
    pub fn errors(&self) -> Vec<String> {
        self.lock().errors.clone()
    }

    /// Requests received, verified or not.
    pub fn requests(&self) -> usize {
        self.lock().requests
    }

    /// Wait (polling, bounded) until at least `n` pushes passed; returns them.
    pub async fn wait_pushed(&self, n: usize, timeout: Duration) -> Vec<Pushed> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.pushed();
            if got.len() >= n || Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn push(
    State(shared): State<Arc<Shared>>,
    Path(device): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let checked = verify(&shared, &device, &headers, &body);
    let behavior = record(&shared, device, &headers, checked);
    let Some(behavior) = behavior else {
        return StatusCode::BAD_REQUEST;
    };
    match behavior {
        Behavior::Status(code) => StatusCode::from_u16(code).unwrap_or(StatusCode::CREATED),
        Behavior::Hang => {
            shared.stop.cancelled().await;
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

/// Record one request; None when it failed the checks.
fn record(
    shared: &Shared,
    device: String,
    headers: &HeaderMap,
    checked: Result<(Vec<u8>, Value), String>,
) -> Option<Behavior> {
    let mut inner = shared.inner.lock().unwrap();
    inner.requests += 1;
    let (plaintext, claims) = match checked {
        Ok(v) => v,
        Err(e) => {
            inner.errors.push(format!("{device}: {e}"));
            return None;
        }
    };
    let behavior = inner
        .behavior
        .get(&device)
        .copied()
        .unwrap_or(Behavior::Status(201));
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    inner.pushed.push(Pushed {
        device,
        topic: header("topic"),
        urgency: header("urgency"),
        ttl: header("ttl"),
        plaintext,
        claims,
        answered: behavior,
    });
    Some(behavior)
}

/// The checks a push service makes; Ok((plaintext, JWT claims)).
fn verify(
    shared: &Shared,
    device: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Vec<u8>, Value), String> {
    let (secret, auth) = shared
        .inner
        .lock()
        .unwrap()
        .devices
        .get(device)
        .cloned()
        .ok_or("unknown device")?;
    let authz = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or("no Authorization")?;
    let rest = authz
        .strip_prefix("vapid t=")
        .ok_or("Authorization is not `vapid t=..., k=...`")?;
    let (jwt, k) = rest.split_once(", k=").ok_or("no k=")?;
    if k != shared.vapid_key {
        return Err(format!("k={k} is not the server's VAPID key"));
    }
    let parts: Vec<&str> = jwt.split('.').collect();
    let [h, c, s] = parts[..] else {
        return Err("the JWT does not have three parts".into());
    };
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    if header["alg"] != "ES256" {
        return Err(format!("JWT alg {}", header["alg"]));
    }
    let key_bytes = URL_SAFE_NO_PAD.decode(k).map_err(|e| e.to_string())?;
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&key_bytes).map_err(|e| e.to_string())?;
    let sig =
        p256::ecdsa::Signature::from_slice(&URL_SAFE_NO_PAD.decode(s).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    key.verify(format!("{h}.{c}").as_bytes(), &sig)
        .map_err(|_| "the JWT signature does not verify".to_string())?;
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    // The origin the request was sent to: this service's address, by the name
    // the client used (the Host header).
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .ok_or("no Host")?;
    let origin = format!("http://{host}");
    let port = shared.port.to_string();
    if host.rsplit_once(':').map(|(_, p)| p) != Some(port.as_str()) {
        return Err(format!(
            "Host {host} is not this service ({})",
            shared.origin
        ));
    }
    if claims["aud"] != origin.as_str() {
        return Err(format!("aud {} is not {origin}", claims["aud"]));
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let exp = claims["exp"].as_u64().ok_or("no exp")?;
    if exp <= now || exp > now + 24 * 3600 {
        return Err(format!("exp {exp} is not within 24 h of now ({now})"));
    }
    let sub = claims["sub"].as_str().ok_or("no sub")?;
    if !(sub.starts_with("mailto:") || sub.starts_with("https:")) {
        return Err(format!("sub {sub:?} is not a mailto: or https: contact"));
    }
    if headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        != Some("aes128gcm")
    {
        return Err("Content-Encoding is not aes128gcm".into());
    }
    if body.len() > 4096 {
        return Err(format!("body of {} bytes is over 4096", body.len()));
    }
    let auth_arr = web_push_native::Auth::clone_from_slice(&auth);
    let plaintext = web_push_native::decrypt(body.to_vec(), &secret, &auth_arr)
        .map_err(|e| format!("the body does not decrypt: {e}"))?;
    Ok((plaintext, claims))
}
