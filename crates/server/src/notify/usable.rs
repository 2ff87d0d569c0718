//! Whether a push subscription's key may still be notified and answer
//! (docs/protocol.md, "Notifications"): a subscription acts for the key that
//! registered it, so it is only as good as that key is now.
//!
//! A key is usable for notifications when it is still listed with the owner role,
//! not expired, carries no option ccrelay refuses (`command=`, `principals=`, ...),
//! and its `from=` (if any) admits the address the subscription was registered
//! from. An answer through `POST /v1/push/respond` must also come from an address
//! the key's `from=` admits. A key with several lines counts as usable when one of
//! its owner lines allows it, as sshd scans its file.
//!
//! Owns: that rule. Must not: keep state (the notifier records which subscriptions
//! are suspended), or read the keys files (it is handed the set in force).

use std::net::{IpAddr, Ipv4Addr};
use std::time::SystemTime;

use crate::auth::{KeySet, Role};

/// Why a key is not usable for notifications now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    #[error("the key is not in the keys files")]
    NotListed,
    #[error("the key is listed as a viewer only")]
    NotOwner,
    #[error(
        "the key has a from= option and the subscription was registered before its address was recorded"
    )]
    NoAddress,
    /// Expired, a refused option or key type, or `from=` not matching.
    #[error("{0}")]
    Refused(String),
}

/// Is the key with this fingerprint usable now for an address? `address` is where
/// the subscription was registered from, or where an answer comes from; `None`
/// (a subscription stored by an older version) passes only keys without `from=`.
pub fn check(
    keys: &KeySet,
    fingerprint: &str,
    address: Option<IpAddr>,
    now: SystemTime,
) -> Result<(), Unusable> {
    let mut listed = false;
    let mut first_refusal = None;
    for entry in keys.entries_of_fingerprint(fingerprint) {
        listed = true;
        if entry.role != Role::Owner {
            continue;
        }
        let outcome = match address {
            Some(peer) => entry
                .check(peer, now)
                .map_err(|e| Unusable::Refused(e.to_string())),
            None if entry.options().from.is_some() => Err(Unusable::NoAddress),
            // No from= on this line: the address plays no part in the check.
            None => entry
                .check(IpAddr::V4(Ipv4Addr::UNSPECIFIED), now)
                .map_err(|e| Unusable::Refused(e.to_string())),
        };
        match outcome {
            Ok(()) => return Ok(()),
            Err(e) => {
                first_refusal.get_or_insert(e);
            }
        }
    }
    Err(match (listed, first_refusal) {
        (false, _) => Unusable::NotListed,
        (true, None) => Unusable::NotOwner,
        (true, Some(e)) => e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    fn fingerprint() -> String {
        ssh_key::PublicKey::from_openssh(KEY)
            .unwrap()
            .fingerprint(ssh_key::HashAlg::Sha256)
            .to_string()
    }

    fn set(owner: &str, viewer: &str) -> KeySet {
        KeySet::from_texts("owner", owner, Some(("viewer", viewer)))
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn usable_only_as_a_listed_unexpired_unrestricted_owner_from_an_admitted_address() {
        let fp = fingerprint();
        let now = SystemTime::now();
        let plain = set(&format!("{KEY} phone\n"), "");
        assert_eq!(check(&plain, &fp, ip("203.0.113.7"), now), Ok(()));
        assert_eq!(check(&plain, &fp, None, now), Ok(()));
        assert_eq!(
            check(&set("", &format!("{KEY}\n")), &fp, ip("127.0.0.1"), now),
            Err(Unusable::NotOwner)
        );
        assert_eq!(
            check(&set("", ""), &fp, ip("127.0.0.1"), now),
            Err(Unusable::NotListed)
        );
        let expired = set(&format!("expiry-time=\"20200101\" {KEY}\n"), "");
        assert!(matches!(
            check(&expired, &fp, ip("127.0.0.1"), now),
            Err(Unusable::Refused(_))
        ));
        // Expiry is a time: the same set is usable before it.
        let future = set(&format!("expiry-time=\"20990101Z\" {KEY}\n"), "");
        assert_eq!(check(&future, &fp, ip("127.0.0.1"), now), Ok(()));
        let year_2100 = SystemTime::UNIX_EPOCH + Duration::from_secs(4_102_444_800);
        assert!(check(&future, &fp, ip("127.0.0.1"), year_2100).is_err());
        let command = set(&format!("command=\"/bin/true\" {KEY}\n"), "");
        assert!(matches!(
            check(&command, &fp, ip("127.0.0.1"), now),
            Err(Unusable::Refused(_))
        ));
        let from = set(&format!("from=\"10.9.9.9\" {KEY}\n"), "");
        assert_eq!(check(&from, &fp, ip("10.9.9.9"), now), Ok(()));
        assert_eq!(check(&from, &fp, ip("::ffff:10.9.9.9"), now), Ok(()));
        assert!(matches!(
            check(&from, &fp, ip("127.0.0.1"), now),
            Err(Unusable::Refused(_))
        ));
        assert_eq!(check(&from, &fp, None, now), Err(Unusable::NoAddress));
        // Two lines for one key: one that allows is enough (as sshd).
        let two = set(&format!("from=\"10.9.9.9\" {KEY}\n{KEY}\n"), "");
        assert_eq!(check(&two, &fp, ip("127.0.0.1"), now), Ok(()));
    }
}
