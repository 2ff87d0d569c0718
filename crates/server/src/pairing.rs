//! Device pairing (docs/protocol.md, Authentication: "Pairing a new device" and
//! "Pairing invites"): the pending pair requests, the owner connections that are
//! told about them, the addresses owners denied, and the open invites.
//!
//! Owns: the registry (one small lock around its maps: pending requests by
//! `pair_id`, owner connections by connection id, recent denials by address,
//! unexpired invites), the pairing code rule, the one-per-address and
//! server-wide limits, the hour an owner's `block` lasts, and the
//! `pair.requested` / `pair.resolved` frames every owner receives. The waiting
//! connection learns the outcome through a oneshot channel; dropping its
//! [`PairTicket`] (it disconnected) withdraws the request. Must not: verify
//! signatures, write keys files or touch the throttle — the connection's auth
//! phase does that.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use ssh_key::public::KeyData;
use subtle::ConstantTimeEq as _;
use tokio::sync::oneshot;

use crate::address::{AddressGrouping, AddressKey};
use crate::auth::Role;
use crate::metrics::{Metrics, PairResult, PairResultLabel};
use crate::session::Outbox;
use ccrelay_protocol::{FrameType, ServerMsg};

/// At most this many pair requests may be pending server-wide.
pub const MAX_PENDING: usize = 8;

/// How long an owner's denial is remembered for `denied_recently`, and how long
/// a `block` refuses the address's pair requests.
pub const DENIAL_MEMORY: Duration = Duration::from_secs(3600);

/// At most this many denied addresses are remembered: past it the oldest
/// denial is forgotten first, so the map costs a bounded amount of memory.
pub const MAX_DENIALS: usize = 4096;

/// At most this many invites may be unexpired at once.
pub const MAX_INVITES: usize = 8;

/// The longest (and default) lifetime of an invite.
pub const MAX_INVITE_TTL: Duration = Duration::from_secs(600);

/// `pair.resolved`'s `by` for a device paired with an invite: this, then the
/// inviter's client id.
pub const INVITE_BY_PREFIX: &str = "invite:";

/// Random bytes in an invite token (192 bits; 32 base64url characters).
const INVITE_BYTES: usize = 24;

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
    /// An owner denied a request from this address with `block` less than an
    /// hour ago (`rate_limited`).
    #[error("pair requests from this address are blocked")]
    Blocked,
    /// This address already has one pending (`rate_limited`).
    #[error("a pair request from this address is already pending")]
    AddressBusy,
    /// [`MAX_PENDING`] are pending (`overloaded`).
    #[error("too many pair requests are pending")]
    Full,
}

/// [`MAX_INVITES`] invites are unexpired (`overloaded`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many pairing invites are open")]
pub struct InvitesFull;

/// A redeemed invite: what the device is allowed as, and who made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redeemed {
    pub role: Role,
    /// The inviter's `client_id` (for `pair.resolved`'s `by`).
    pub inviter: String,
    /// The inviter's key fingerprint (recorded in the paired keys line).
    pub inviter_fingerprint: String,
}

struct Pending {
    request: Request,
    tx: oneshot::Sender<Outcome>,
}

/// The last owner denial of a pair request from one address.
#[derive(Debug, Clone, Copy)]
struct Denial {
    at: Instant,
    /// The owner asked to refuse this address's pair requests.
    blocked: bool,
}

struct Invite {
    token: [u8; INVITE_BYTES],
    expires_at: Instant,
    redeemed: Redeemed,
}

#[derive(Default)]
struct Inner {
    pending: HashMap<String, Pending>,
    owners: HashMap<u64, Outbox>,
    /// Keyed by the address a request counts under (docs/protocol.md, IPv6 grouping).
    denials: HashMap<AddressKey, Denial>,
    invites: Vec<Invite>,
}

impl Inner {
    /// The address's denial, if it is less than [`DENIAL_MEMORY`] old.
    fn recent_denial(&self, address: AddressKey, now: Instant) -> Option<Denial> {
        self.denials
            .get(&address)
            .copied()
            .filter(|d| now.saturating_duration_since(d.at) < DENIAL_MEMORY)
    }

    fn forget_old_denials(&mut self, now: Instant) {
        self.denials
            .retain(|_, d| now.saturating_duration_since(d.at) < DENIAL_MEMORY);
    }
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

    fn count(&self, result: PairResult) {
        self.metrics
            .pair_requests
            .get_or_create(&PairResultLabel { result })
            .inc();
    }

    /// Register a pair request and tell every owner. The ticket withdraws it when dropped.
    pub fn open(
        self: &Arc<Self>,
        request: Request,
    ) -> Result<(PairTicket, oneshot::Receiver<Outcome>), OpenError> {
        let mut inner = self.lock();
        let now = Instant::now();
        let address = self.grouping.key(request.peer);
        let denial = inner.recent_denial(address, now);
        let refusal = if denial.is_some_and(|d| d.blocked) {
            Some(OpenError::Blocked)
        } else if inner
            .pending
            .values()
            .any(|p| self.grouping.key(p.request.peer) == address)
        {
            Some(OpenError::AddressBusy)
        } else if inner.pending.len() >= MAX_PENDING {
            Some(OpenError::Full)
        } else {
            None
        };
        if let Some(e) = refusal {
            drop(inner);
            self.count(PairResult::Refused);
            return Err(e);
        }
        let pair_id = uuid::Uuid::new_v4().simple().to_string();
        let frame = requested_frame(&pair_id, &request, denial.is_some());
        for outbox in inner.owners.values() {
            let _ = outbox.frame(FrameType::PairRequested, frame.clone());
        }
        let (tx, rx) = oneshot::channel();
        inner
            .pending
            .insert(pair_id.clone(), Pending { request, tx });
        drop(inner);
        self.count(PairResult::Pending);
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
        let now = Instant::now();
        for (pair_id, p) in &inner.pending {
            let denied = inner
                .recent_denial(self.grouping.key(p.request.peer), now)
                .is_some();
            let _ = outbox.frame(
                FrameType::PairRequested,
                requested_frame(pair_id, &p.request, denied),
            );
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

    /// Tell every owner how a request ended. `by` is a client id, `relay`, or
    /// [`INVITE_BY_PREFIX`] and the inviter's client id.
    pub fn announce_resolved(&self, pair_id: &str, allow: bool, role: Option<Role>, by: &str) {
        if by.starts_with(INVITE_BY_PREFIX) {
            self.count(PairResult::Invited);
        } else if by != "relay" {
            self.count(if allow {
                PairResult::Allowed
            } else {
                PairResult::Denied
            });
        }
        let frame = ServerMsg::PairResolved {
            pair_id: pair_id.to_string(),
            allow,
            role: if allow { role } else { None },
            by: by.to_string(),
        }
        .to_json();
        for outbox in self.lock().owners.values() {
            let _ = outbox.frame(FrameType::PairResolved, frame.clone());
        }
    }

    /// Number of pending requests (tests, logs).
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// An owner denied a request from `peer`: remember it for an hour
    /// (`denied_recently`), refusing the address's pair requests meanwhile when
    /// `block`. A timeout or a withdrawal is not a denial and is not recorded.
    pub fn record_denial(&self, peer: IpAddr, block: bool) {
        let mut inner = self.lock();
        let now = Instant::now();
        let address = self.grouping.key(peer);
        if !inner.denials.contains_key(&address) && inner.denials.len() >= MAX_DENIALS {
            inner.forget_old_denials(now);
            if inner.denials.len() >= MAX_DENIALS {
                let oldest = inner
                    .denials
                    .iter()
                    .min_by_key(|(_, d)| d.at)
                    .map(|(a, _)| *a);
                if let Some(a) = oldest {
                    inner.denials.remove(&a);
                }
            }
        }
        // A later plain denial does not lift an earlier block.
        let blocked = block || inner.recent_denial(address, now).is_some_and(|d| d.blocked);
        inner.denials.insert(address, Denial { at: now, blocked });
    }

    /// Are `peer`'s pair requests refused by an owner's `block`?
    pub fn is_blocked(&self, peer: IpAddr) -> bool {
        self.lock()
            .recent_denial(self.grouping.key(peer), Instant::now())
            .is_some_and(|d| d.blocked)
    }

    /// Open an invite: a fresh random token that pairs one device as `role`
    /// without an owner's answer, until `ttl` (capped at [`MAX_INVITE_TTL`]) passes.
    pub fn create_invite(
        &self,
        role: Role,
        ttl: Duration,
        inviter: &str,
        inviter_fingerprint: &str,
    ) -> Result<(String, Duration), InvitesFull> {
        let ttl = ttl.min(MAX_INVITE_TTL);
        let now = Instant::now();
        let mut inner = self.lock();
        inner.invites.retain(|i| i.expires_at > now);
        if inner.invites.len() >= MAX_INVITES {
            return Err(InvitesFull);
        }
        let mut token = [0u8; INVITE_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut token);
        inner.invites.push(Invite {
            token,
            expires_at: now + ttl,
            redeemed: Redeemed {
                role,
                inviter: inviter.to_string(),
                inviter_fingerprint: inviter_fingerprint.to_string(),
            },
        });
        Ok((URL_SAFE_NO_PAD.encode(token), ttl))
    }

    /// Use an invite up: `Some` when `token` is one that is open and unexpired.
    /// Every open token is compared, each in constant time, so the time taken
    /// says nothing about how close a guess came.
    pub fn redeem_invite(&self, token: &str) -> Option<Redeemed> {
        let presented = URL_SAFE_NO_PAD.decode(token).ok()?;
        let now = Instant::now();
        let mut inner = self.lock();
        inner.invites.retain(|i| i.expires_at > now);
        let mut found = None;
        for (i, invite) in inner.invites.iter().enumerate() {
            if bool::from(invite.token.as_slice().ct_eq(&presented)) {
                found = Some(i);
            }
        }
        Some(inner.invites.swap_remove(found?).redeemed)
    }
}

fn requested_frame(pair_id: &str, r: &Request, denied_recently: bool) -> String {
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
        denied_recently: denied_recently.then_some(true),
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
        self.end(PairResult::Expired);
        self.pair_id.clear();
    }

    fn end(&mut self, result: PairResult) {
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
        self.end(PairResult::Withdrawn);
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
        for i in 2..=MAX_PENDING {
            held.push(p.open(request(&format!("10.0.0.{i}"))).unwrap());
        }
        assert_eq!(p.open(request("10.0.0.99")).unwrap_err(), OpenError::Full);
        assert_eq!(p.pending(), MAX_PENDING);
        drop(t1);
        assert_eq!(p.pending(), MAX_PENDING - 1);
        assert!(p.open(request("10.0.0.1")).is_ok());
        // Answered: taking it leaves nothing for the ticket to withdraw.
        let (ticket, rx) = held.pop().unwrap();
        let (_, tx) = p.take(ticket.pair_id()).unwrap();
        tx.send(Outcome::Denied).unwrap();
        assert!(p.take(ticket.pair_id()).is_none());
        drop(ticket);
        assert_eq!(rx.blocking_recv().unwrap(), Outcome::Denied);
    }

    #[test]
    fn a_block_refuses_the_address_and_a_denial_is_remembered() {
        let p = Pairing::new(Arc::new(Metrics::new()));
        p.record_denial("10.0.0.1".parse().unwrap(), false);
        assert!(!p.is_blocked("10.0.0.1".parse().unwrap()));
        // A plain denial leaves the address free to ask again.
        let held = p.open(request("10.0.0.1")).unwrap();
        drop(held);
        p.record_denial("::ffff:10.0.0.2".parse().unwrap(), true);
        assert!(p.is_blocked("10.0.0.2".parse().unwrap()));
        assert_eq!(p.open(request("10.0.0.2")).unwrap_err(), OpenError::Blocked);
        // A later plain denial does not lift the block.
        p.record_denial("10.0.0.2".parse().unwrap(), false);
        assert!(p.is_blocked("10.0.0.2".parse().unwrap()));
    }

    #[test]
    fn denials_are_bounded() {
        let p = Pairing::new(Arc::new(Metrics::new()));
        for i in 0..(MAX_DENIALS as u32 + 10) {
            p.record_denial(IpAddr::V4(std::net::Ipv4Addr::from(i)), i == 0);
        }
        assert_eq!(p.lock().denials.len(), MAX_DENIALS);
        // The oldest went first.
        assert!(!p.is_blocked(IpAddr::V4(std::net::Ipv4Addr::from(0))));
    }

    #[test]
    fn invites_are_single_use_bounded_and_capped() {
        let p = Pairing::new(Arc::new(Metrics::new()));
        let (token, ttl) = p
            .create_invite(Role::Viewer, Duration::from_secs(3600), "c1", "SHA256:o")
            .unwrap();
        assert_eq!(ttl, MAX_INVITE_TTL);
        assert!(URL_SAFE_NO_PAD.decode(&token).unwrap().len() * 8 >= 128);
        assert!(!token.contains(['+', '/', '=']));
        assert!(p.redeem_invite("AAAA").is_none());
        assert!(p.redeem_invite("not base64!").is_none());
        let used = p.redeem_invite(&token).unwrap();
        assert_eq!(used.role, Role::Viewer);
        assert_eq!(used.inviter, "c1");
        assert!(p.redeem_invite(&token).is_none(), "single use");
        for _ in 0..MAX_INVITES {
            p.create_invite(Role::Owner, MAX_INVITE_TTL, "c1", "SHA256:o")
                .unwrap();
        }
        assert_eq!(
            p.create_invite(Role::Owner, MAX_INVITE_TTL, "c1", "SHA256:o"),
            Err(InvitesFull)
        );
        // Expired invites free their place and are not accepted.
        let p = Pairing::new(Arc::new(Metrics::new()));
        let (gone, _) = p
            .create_invite(Role::Owner, Duration::ZERO, "c1", "SHA256:o")
            .unwrap();
        assert!(p.redeem_invite(&gone).is_none());
    }
}
