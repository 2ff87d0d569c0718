//! The "Devices" extension (docs/protocol.md): `keys.list`, `keys.rename` and
//! `keys.revoke`, against the real binary over real sockets. Paired keys are
//! seeded in the paired files exactly as pairing writes them.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// `<type> <base64>` of a key (no comment).
fn bare(key: &KeyPair) -> String {
    key.public_line
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A fixture whose paired_keys holds `phone` and `tablet` between comments and
/// a blank line (no trailing newline), and paired_viewers holds `tv`.
struct Devices {
    fx: Fixture,
    phone: KeyPair,
    tablet: KeyPair,
    tv: KeyPair,
    before: String,
}

impl Devices {
    fn new() -> Devices {
        let fx = Fixture::new();
        let phone = keygen(fx.path(), "phone", "ed25519", &[]);
        let tablet = keygen(fx.path(), "tablet", "ed25519", &[]);
        let tv = keygen(fx.path(), "tv", "ed25519", &[]);
        std::fs::create_dir_all(fx.data_dir()).unwrap();
        let before = format!(
            "# paired devices\n{} Pixel 9 (paired 2026-11-01 by SHA256:approver)\n\n  # keep me\n{} old tablet (paired 2026-10-02 by ccrelay-keys-add)",
            bare(&phone),
            bare(&tablet)
        );
        std::fs::write(fx.data_dir().join("paired_keys"), &before).unwrap();
        std::fs::write(
            fx.data_dir().join("paired_viewers"),
            format!(
                "{} living room (paired 2026-09-03 by SHA256:z)\n",
                bare(&tv)
            ),
        )
        .unwrap();
        Devices {
            fx,
            phone,
            tablet,
            tv,
            before,
        }
    }

    fn paired_keys(&self) -> String {
        std::fs::read_to_string(self.fx.data_dir().join("paired_keys")).unwrap()
    }
}

fn entry<'a>(list: &'a Value, fingerprint: &str, source: &str) -> &'a Value {
    list["keys"]
        .as_array()
        .expect("keys is an array")
        .iter()
        .find(|k| k["fingerprint"] == fingerprint && k["source"] == source)
        .unwrap_or_else(|| panic!("no {fingerprint} from {source} in {list}"))
}

/// An owner sees every key with its source, role and pairing details; only the
/// paired files' keys are editable. A viewer gets `forbidden`.
#[tokio::test]
async fn owners_list_every_key_viewers_are_forbidden() {
    let d = Devices::new();
    let server = d.fx.start(ServerOptions::default());
    let mut owner = server.client(&d.fx.owner, Some("laptop")).await;
    let list = owner.request(json!({"type": "keys.list"}), "l1").await;
    assert_eq!(list["type"], "keys.list", "{list}");
    assert_eq!(list["keys"].as_array().unwrap().len(), 6, "{list}");

    let o = entry(&list, &d.fx.owner.fingerprint, "authorized_keys");
    assert_eq!(o["role"], "owner");
    assert_eq!(o["key_type"], "ssh-ed25519");
    assert_eq!(o["comment"], "owner@test");
    assert_eq!(o["editable"], false);
    assert!(o.get("paired").is_none(), "{o}");
    let v = entry(&list, &d.fx.viewer.fingerprint, "viewer_keys");
    assert_eq!(v["role"], "viewer");
    assert_eq!(v["editable"], false);

    let p = entry(&list, &d.phone.fingerprint, "paired_keys");
    assert_eq!(p["role"], "owner");
    assert_eq!(p["editable"], true);
    assert_eq!(
        p["comment"],
        "Pixel 9 (paired 2026-11-01 by SHA256:approver)"
    );
    assert_eq!(p["device"], "Pixel 9");
    assert_eq!(p["paired"], "2026-11-01");
    assert_eq!(p["paired_by"], "SHA256:approver");
    let t = entry(&list, &d.tablet.fingerprint, "paired_keys");
    assert_eq!(t["paired_by"], "ccrelay-keys-add");
    let tv = entry(&list, &d.tv.fingerprint, "paired_viewers");
    assert_eq!(tv["role"], "viewer");
    assert_eq!(tv["device"], "living room");
    assert_eq!(tv["editable"], true);

    let mut viewer = server.client(&d.fx.viewer, None).await;
    for req in [
        json!({"type": "keys.list"}),
        json!({"type": "keys.rename", "fingerprint": d.phone.fingerprint, "device": "x"}),
        json!({"type": "keys.revoke", "fingerprint": d.phone.fingerprint}),
    ] {
        let reply = viewer.request(req, "v").await;
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["code"], "forbidden", "{reply}");
    }
    // A paired viewer is a viewer too.
    let mut tv_client = server.client(&d.tv, Some("tv")).await;
    let reply = tv_client.request(json!({"type": "keys.list"}), "tv").await;
    assert_eq!(reply["code"], "forbidden", "{reply}");
    assert_eq!(d.paired_keys(), d.before, "nothing was edited");
}

/// A rename rewrites only the device part of that key's line; the list shows
/// it; the renamed key still logs in.
#[tokio::test]
async fn rename_changes_only_the_device_part_of_one_line() {
    let d = Devices::new();
    let server = d.fx.start(ServerOptions::default());
    let mut owner = server.client(&d.fx.owner, Some("laptop")).await;
    let mut connected = server.client(&d.tablet, Some("tablet")).await;
    let reply = owner
        .request(
            json!({"type": "keys.rename", "fingerprint": d.tablet.fingerprint, "device": "  Kitchen iPad ✓ "}),
            "r1",
        )
        .await;
    assert_eq!(reply["type"], "ok", "{reply}");
    let expected = d.before.replace(
        "old tablet (paired 2026-10-02",
        "Kitchen iPad ✓ (paired 2026-10-02",
    );
    assert_ne!(expected, d.before);
    assert_eq!(d.paired_keys(), expected);

    let list = owner.request(json!({"type": "keys.list"}), "l").await;
    let t = entry(&list, &d.tablet.fingerprint, "paired_keys");
    assert_eq!(t["device"], "Kitchen iPad ✓");
    assert_eq!(t["paired"], "2026-10-02");
    // Still authorized under its new name: the open connection stays, a new one logs in.
    let pong = connected.request(json!({"type": "ping"}), "p0").await;
    assert_eq!(pong["type"], "pong", "{pong}");
    let mut tablet = server.client(&d.tablet, Some("tablet")).await;
    let pong = tablet.request(json!({"type": "ping"}), "p").await;
    assert_eq!(pong["type"], "pong");
}

/// Bad names, keys outside the paired files and unknown fingerprints are
/// refused with `bad_message`, and the file is left as it was.
#[tokio::test]
async fn bad_names_and_uneditable_keys_are_refused() {
    let d = Devices::new();
    let server = d.fx.start(ServerOptions::default());
    let mut owner = server.client(&d.fx.owner, None).await;
    let long = "x".repeat(65);
    for (i, device) in [
        json!(""),
        json!("   "),
        json!(long),
        json!("evil\nline"),
        json!("bidi\u{202E}txt"),
        json!("zero\u{200B}width"),
        json!(7),
    ]
    .into_iter()
    .enumerate()
    {
        let reply = owner
            .request(
                json!({"type": "keys.rename", "fingerprint": d.phone.fingerprint, "device": device}),
                &format!("b{i}"),
            )
            .await;
        assert_eq!(reply["type"], "error", "{device}: {reply}");
        assert_eq!(reply["code"], "bad_message", "{device}: {reply}");
    }
    let exactly_64 = "é".repeat(64);
    let reply = owner
        .request(
            json!({"type": "keys.rename", "fingerprint": d.phone.fingerprint, "device": exactly_64}),
            "ok64",
        )
        .await;
    assert_eq!(reply["type"], "ok", "64 scalar values are allowed: {reply}");
    let after_64 = d.paired_keys();

    for (i, req) in [
        json!({"type": "keys.rename", "fingerprint": d.fx.owner2.fingerprint, "device": "x"}),
        json!({"type": "keys.revoke", "fingerprint": d.fx.owner2.fingerprint}),
        json!({"type": "keys.revoke", "fingerprint": d.fx.viewer.fingerprint}),
        json!({"type": "keys.revoke", "fingerprint": d.fx.stranger.fingerprint}),
        json!({"type": "keys.rename", "fingerprint": "SHA256:nope", "device": "x"}),
        json!({"type": "keys.revoke"}),
    ]
    .into_iter()
    .enumerate()
    {
        let reply = owner.request(req.clone(), &format!("n{i}")).await;
        assert_eq!(reply["type"], "error", "{req}: {reply}");
        assert_eq!(reply["code"], "bad_message", "{req}: {reply}");
    }
    let reply = owner
        .request(
            json!({"type": "keys.revoke", "fingerprint": d.fx.owner2.fingerprint}),
            "msg",
        )
        .await;
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("authorized_keys"),
        "{reply}"
    );
    assert_eq!(d.paired_keys(), after_64);
    // The owner's own connection is unharmed.
    let pong = owner.request(json!({"type": "ping"}), "p").await;
    assert_eq!(pong["type"], "pong");
}

/// Revoking a paired key removes its line (every other byte kept) and closes
/// that key's live connection with 1008; other connections stay; the key can
/// no longer log in.
#[tokio::test]
async fn revoke_removes_the_line_and_closes_the_keys_connection() {
    let d = Devices::new();
    let server = d.fx.start(ServerOptions::default());
    let mut owner = server.client(&d.fx.owner, Some("laptop")).await;
    let mut phone = server.client(&d.phone, Some("phone")).await;
    let mut tablet = server.client(&d.tablet, Some("tablet")).await;

    let reply = owner
        .request(
            json!({"type": "keys.revoke", "fingerprint": d.phone.fingerprint}),
            "rv",
        )
        .await;
    assert_eq!(reply["type"], "ok", "{reply}");
    let phone_line = format!(
        "{} Pixel 9 (paired 2026-11-01 by SHA256:approver)\n",
        bare(&d.phone)
    );
    assert!(d.before.contains(&phone_line));
    assert_eq!(d.paired_keys(), d.before.replace(&phone_line, ""));

    let (code, _, frames) = phone.expect_close(Duration::from_secs(10)).await;
    assert_eq!(code, Some(1008), "{frames:?}");
    // The others are still connected.
    for (c, id) in [(&mut owner, "o"), (&mut tablet, "t")] {
        let pong = c.request(json!({"type": "ping"}), id).await;
        assert_eq!(pong["type"], "pong");
    }
    let list = owner.request(json!({"type": "keys.list"}), "l").await;
    assert!(
        !list["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["fingerprint"] == d.phone.fingerprint.as_str()),
        "{list}"
    );
    let mut again = server.connect().await;
    let answer = again.authenticate(&d.phone, None).await;
    assert_eq!(answer["code"], "auth_failed", "{answer}");
    // A second revoke has nothing to remove.
    let reply = owner
        .request(
            json!({"type": "keys.revoke", "fingerprint": d.phone.fingerprint}),
            "rv2",
        )
        .await;
    assert_eq!(reply["code"], "bad_message", "{reply}");
}

/// Two owners renaming different keys at the same moment, many times: the
/// file always ends with both last names and every other byte intact.
#[tokio::test]
async fn concurrent_renames_never_corrupt_the_file() {
    let d = Devices::new();
    let server = d.fx.start(ServerOptions::default());
    let mut a = server.client(&d.fx.owner, Some("a")).await;
    let mut b = server.client(&d.fx.owner2, Some("b")).await;
    const ROUNDS: usize = 10;
    for i in 0..ROUNDS {
        a.send(json!({"type": "keys.rename", "id": format!("a{i}"), "fingerprint": d.phone.fingerprint, "device": format!("phone {i}")}))
            .await;
        b.send(json!({"type": "keys.rename", "id": format!("b{i}"), "fingerprint": d.tablet.fingerprint, "device": format!("tablet {i}")}))
            .await;
    }
    for (c, p) in [(&mut a, "a"), (&mut b, "b")] {
        for i in 0..ROUNDS {
            let (reply, _) = c
                .recv_until("rename reply", |v| v["id"] == format!("{p}{i}").as_str())
                .await;
            assert_eq!(reply["type"], "ok", "{reply}");
        }
    }
    let last = ROUNDS - 1;
    let expected = d
        .before
        .replace("Pixel 9 (paired", &format!("phone {last} (paired"))
        .replace("old tablet (paired", &format!("tablet {last} (paired"));
    assert_eq!(d.paired_keys(), expected);
}
