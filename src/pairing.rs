//! Device pairing (PROTOCOL.md §3 "Pairing a new device"): the pending pair
//! requests and the owner connections that are told about them.
//!
//! Owns: the registry (one small lock around two maps: pending requests by
//! `pair_id`, owner connections by connection id), the pairing code rule, the
//! one-per-address and server-wide limits, and the `pair.requested` /
//! `pair.resolved` frames every owner receives. The waiting connection learns
//! the outcome through a oneshot channel; dropping its [`PairTicket`] (it
//! disconnected) withdraws the request. Must not: verify signatures, write keys
//! files or touch the throttle — the connection's auth phase does that.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sha2::{Digest, Sha256};
use ssh_key::public::KeyData;
use tokio::sync::oneshot;

use crate::address::AddressGrouping;
use crate::auth::Role;
use crate::metrics::{Metrics, ResultLabel};
use crate::protocol::ServerMsg;
use crate::session::Outbox;

/// At most this many pair requests may be pending server-wide (§3).
pub const MAX_PENDING: usize = 4;

/// The six-digit code both screens show: the first 4 bytes of
/// SHA-256(`ccrelay-pair-v1:<nonce>:<fingerprint>`) as a big-endian u32,
/// modulo 1,000,000, zero-padded.
pub fn pair_code(nonce: &str, fingerprint: &str) -> String {
    let digest = Sha256::digest(format!("ccrelay-pair-v1:{nonce}:{fingerprint}").as_bytes());
    let n = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    format!("{:06}", n % 1_000_000)
}

/// What the waiting connection is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An owner allowed it with this role; the key is in the paired file now.
    Allowed { role: Role },
    /// An owner denied it (or allowing failed).
    Denied,
}

/// One pair request as owners see it.
#[derive(Debug, Clone)]
pub struct Request {
    pub fingerprint: String,
    pub key_type: String,
    pub key: KeyData,
    pub device: String,
    pub code: String,
    /// The peer address (per-address limit, and shown to owners).
    pub peer: IpAddr,
    pub expires_at: Instant,
}

/// Why a pair request could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// This address already has one pending (`rate_limited`).
    #[error("a pair request from this address is already pending")]
    AddressBusy,
    /// [`MAX_PENDING`] are pending (`overloaded`).
    #[error("too many pair requests are pending")]
    Full,
}

struct Pending {
    request: Request,
    tx: oneshot::Sender<Outcome>,
}

#[derive(Default)]
struct Inner {
    pending: HashMap<String, Pending>,
    owners: HashMap<u64, Outbox>,
}

/// The registry. One per server, shared by every connection.
pub struct Pairing {
    inner: Mutex<Inner>,
    metrics: Arc<Metrics>,
    /// What "one address" is for the one-pending-per-address limit.
    grouping: AddressGrouping,
}

impl std::fmt::Debug for Pairing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("Pairing")
            .field("pending", &inner.pending.len())
            .field("owners", &inner.owners.len())
            .finish()
    }
}

impl Pairing {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Pairing> {
        Self::with_grouping(metrics, AddressGrouping::default())
    }

    /// A registry counting addresses by `grouping` (`--ipv6-prefix-len`).
    pub fn with_grouping(metrics: Arc<Metrics>, grouping: AddressGrouping) -> Arc<Pairing> {
        Arc::new(Pairing {
            inner: Mutex::new(Inner::default()),
            metrics,
            grouping,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update is a single map operation: the maps stay consistent under a panic elsewhere.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, result: &'static str) {
        self.metrics
            .pair_requests
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Register a pair request and tell every owner. The ticket withdraws it when dropped.
    pub fn open(
        self: &Arc<Self>,
        request: Request,
    ) -> Result<(PairTicket, oneshot::Receiver<Outcome>), OpenError> {
        let mut inner = self.lock();
        let peer = self.grouping.key(request.peer);
        if inner
            .pending
            .values()
            .any(|p| self.grouping.key(p.request.peer) == peer)
        {
            drop(inner);
            self.count("refused");
            return Err(OpenError::AddressBusy);
        }
        if inner.pending.len() >= MAX_PENDING {
            drop(inner);
            self.count("refused");
            return Err(OpenError::Full);
        }
        let pair_id = uuid::Uuid::new_v4().simple().to_string();
        let frame = requested_frame(&pair_id, &request);
        for outbox in inner.owners.values() {
            let _ = outbox.frame("pair.requested", frame.clone());
        }
        let (tx, rx) = oneshot::channel();
        inner
            .pending
            .insert(pair_id.clone(), Pending { request, tx });
        drop(inner);
        self.count("pending");
        Ok((
            PairTicket {
                pairing: self.clone(),
                pair_id,
            },
            rx,
        ))
    }

    /// An owner connection authenticated: it hears about pair requests from now on,
    /// starting with those already pending. Unregistered when the guard drops.
    pub fn add_owner(self: &Arc<Self>, conn_id: u64, outbox: Outbox) -> OwnerGuard {
        let mut inner = self.lock();
        for (pair_id, p) in &inner.pending {
            let _ = outbox.frame("pair.requested", requested_frame(pair_id, &p.request));
        }
        inner.owners.insert(conn_id, outbox);
        OwnerGuard {
            pairing: self.clone(),
            conn_id,
        }
    }

    /// Take a pending request to answer it (None: not pending any more).
    pub fn take(&self, pair_id: &str) -> Option<(Request, oneshot::Sender<Outcome>)> {
        self.lock()
            .pending
            .remove(pair_id)
            .map(|p| (p.request, p.tx))
    }

    /// Tell every owner how a request ended. `by` is a client id or `relay`.
    pub fn announce_resolved(&self, pair_id: &str, allow: bool, role: Option<Role>, by: &str) {
        if by != "relay" {
            self.count(if allow { "allowed" } else { "denied" });
        }
        let frame = ServerMsg::PairResolved {
            pair_id: pair_id.to_string(),
            allow,
            role: if allow { role } else { None },
            by: by.to_string(),
        }
        .to_json();
        for outbox in self.lock().owners.values() {
            let _ = outbox.frame("pair.resolved", frame.clone());
        }
    }

    /// Number of pending requests (tests, logs).
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }
}

fn requested_frame(pair_id: &str, r: &Request) -> String {
    ServerMsg::PairRequested {
        pair_id: pair_id.to_string(),
        fingerprint: r.fingerprint.clone(),
        key_type: r.key_type.clone(),
        device: r.device.clone(),
        code: r.code.clone(),
        peer: crate::auth::canonical_ip(r.peer).to_string(),
        expires_in_ms: r
            .expires_at
            .saturating_duration_since(Instant::now())
            .as_millis() as u64,
    }
    .to_json()
}

/// Held by the waiting connection. Dropping it while the request is still
/// pending withdraws it (`pair.resolved` by `relay`).
#[derive(Debug)]
pub struct PairTicket {
    pairing: Arc<Pairing>,
    pair_id: String,
}

impl PairTicket {
    pub fn pair_id(&self) -> &str {
        &self.pair_id
    }

    /// The pair timeout passed: withdraw the request (consumes the ticket).
    pub fn expire(mut self) {
        self.end("expired");
        self.pair_id.clear();
    }

    fn end(&mut self, result: &'static str) {
        if !self.pair_id.is_empty() && self.pairing.take(&self.pair_id).is_some() {
            self.pairing.count(result);
            self.pairing
                .announce_resolved(&self.pair_id, false, None, "relay");
        }
    }
}

impl Drop for PairTicket {
    fn drop(&mut self) {
        // The device disconnected (or was closed) while its request was pending.
        self.end("withdrawn");
    }
}

/// Keeps an owner connection registered for `pair.requested`.
pub struct OwnerGuard {
    pairing: Arc<Pairing>,
    conn_id: u64,
}

impl std::fmt::Debug for OwnerGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnerGuard")
            .field("conn_id", &self.conn_id)
            .finish()
    }
}

impl Drop for OwnerGuard {
    fn drop(&mut self) {
        self.pairing.lock().owners.remove(&self.conn_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_rule() {
        // Computed independently: sha256("ccrelay-pair-v1:n:SHA256:x")[0..4] big-endian mod 1e6.
        let digest = Sha256::digest(b"ccrelay-pair-v1:n:SHA256:x");
        let n = u32::from_be_bytes(digest[..4].try_into().unwrap()) % 1_000_000;
        let code = pair_code("n", "SHA256:x");
        assert_eq!(code.len(), 6);
        assert_eq!(code.parse::<u32>().unwrap(), n);
        assert_ne!(pair_code("m", "SHA256:x"), code);
    }

    fn request(peer: &str) -> Request {
        let key = ssh_key::PrivateKey::random(&mut rand::rngs::OsRng, ssh_key::Algorithm::Ed25519)
            .unwrap()
            .public_key()
            .key_data()
            .clone();
        Request {
            fingerprint: "SHA256:x".into(),
            key_type: "ssh-ed25519".into(),
            key,
            device: "phone".into(),
            code: "123456".into(),
            peer: peer.parse().unwrap(),
            expires_at: Instant::now() + std::time::Duration::from_secs(60),
        }
    }

    #[test]
    fn limits_and_withdrawal() {
        let p = Pairing::new(Arc::new(Metrics::new()));
        let (t1, _rx1) = p.open(request("10.0.0.1")).unwrap();
        assert_eq!(
            p.open(request("10.0.0.1")).unwrap_err(),
            OpenError::AddressBusy
        );
        assert_eq!(
            p.open(request("::ffff:10.0.0.1")).unwrap_err(),
            OpenError::AddressBusy
        );
        // A global IPv6 /64 is one address; unique-local addresses are not grouped.
        let (v6, _) = p.open(request("2001:db8:1:1::1")).unwrap();
        assert_eq!(
            p.open(request("2001:db8:1:1::2")).unwrap_err(),
            OpenError::AddressBusy
        );
        drop(v6);
        let (ula, _) = p.open(request("fd7a:115c:a1e0::1")).unwrap();
        let (ula2, _) = p.open(request("fd7a:115c:a1e0::2")).unwrap();
        drop((ula, ula2));
        let mut held = vec![];
        for i in 2..=4 {
            held.push(p.open(request(&format!("10.0.0.{i}"))).unwrap());
        }
        assert_eq!(p.open(request("10.0.0.9")).unwrap_err(), OpenError::Full);
        assert_eq!(p.pending(), 4);
        drop(t1);
        assert_eq!(p.pending(), 3);
        assert!(p.open(request("10.0.0.1")).is_ok());
        // Answered: taking it leaves nothing for the ticket to withdraw.
        let (ticket, rx) = held.pop().unwrap();
        let (_, tx) = p.take(ticket.pair_id()).unwrap();
        tx.send(Outcome::Denied).unwrap();
        assert!(p.take(ticket.pair_id()).is_none());
        drop(ticket);
        assert_eq!(rx.blocking_recv().unwrap(), Outcome::Denied);
    }
}
