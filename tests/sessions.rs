//! Issue 5 acceptance with the mock agent: fan-out, replay, lagging clients, prompts,
//! permission prompts, roles, presence.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Fixture, ServerOptions, TestClient, seq_of};
use serde_json::{Value, json};

/// Events (type == "event") from a list of frames.
fn events(frames: &[Value]) -> Vec<Value> {
    frames
        .iter()
        .filter(|f| f["type"] == "event")
        .cloned()
        .collect()
}

#[tokio::test]
async fn three_clients_see_identical_event_streams() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let mut a = server.client(&fx.owner, Some("laptop")).await;
    let mut b = server.client(&fx.owner2, Some("phone")).await;
    let mut c = server.client(&fx.viewer, Some("tablet")).await;
    let mut heads = Vec::new();
    for cl in [&mut a, &mut b, &mut c] {
        heads.push(cl.attach("default", None).await["head"].as_u64().unwrap());
    }
    // Let the agent settle (its startup events) before the prompt.
    let head = *heads.iter().max().unwrap();
    let ok = a.prompt("hello there").await;
    let prompt_id = ok["prompt_id"].as_str().unwrap().to_string();
    let mut streams = Vec::new();
    for cl in [&mut a, &mut b, &mut c] {
        let (end, before) = cl.wait_turn(&prompt_id, &["ended"]).await;
        let mut evs = events(&before);
        evs.push(end);
        // Only events after the common head: clients attached at slightly different times.
        evs.retain(|e| seq_of(e) > head);
        streams.push(evs);
    }
    assert_eq!(streams[0], streams[1]);
    assert_eq!(streams[0], streams[2]);
    let first_prompt_event = streams[0]
        .iter()
        .find(|e| e["event"]["type"] == "relay.prompt")
        .unwrap();
    assert_eq!(first_prompt_event["event"]["prompt_id"], prompt_id.as_str());
    assert_eq!(first_prompt_event["event"]["device"], "laptop");
    let kinds: Vec<&str> = streams[0]
        .iter()
        .map(|e| e["event"]["type"].as_str().unwrap())
        .collect();
    let pos = |k: &str| {
        kinds
            .iter()
            .position(|x| *x == k)
            .unwrap_or_else(|| panic!("{k} missing in {kinds:?}"))
    };
    assert!(pos("relay.prompt") < pos("relay.turn"));
    assert!(pos("relay.turn") < pos("system"));
    assert!(pos("stream_event") < pos("result"));
    let seqs: Vec<u64> = streams[0].iter().map(seq_of).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "seqs contiguous: {seqs:?}"
    );
}
