//! The baseline the fan-out bench compares ccrelay with: the least a relay can do.
//! An axum WebSocket endpoint and a `tokio::sync::broadcast` channel, the same
//! minimal agent, and nothing else — no authentication, no journal, no presence,
//! no per-client queue budget. It runs as a second process (this bench executable
//! with [`HUB_ENV`] set), so the bench measures it exactly as it measures the relay.
//!
//! Its frames mimic the relay's just enough for the bench's clients: on connect an
//! `{"type":"attached","head":N}`; then every agent line as
//! `{"type":"event","session":"default","seq":N,"event":<line>}`; a text frame
//! starting with `{"type":"prompt"` from any client becomes one `user` line to the agent.

use std::io::Write;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use futures_util::SinkExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{broadcast, mpsc};

/// Set (to anything) in the environment: this executable acts as the baseline hub.
pub const HUB_ENV: &str = "CCRELAY_FANOUT_HUB";
/// Frames the broadcast channel keeps for a slow client before it lags (then it is closed).
const BROADCAST_CAPACITY: usize = 4096;
/// Prompts waiting for the agent's stdin.
const PROMPT_QUEUE: usize = 1024;
/// At most this many queued frames join one write.
const WRITE_BATCH: usize = 64;

#[derive(Clone)]
struct Hub {
    /// The last seq broadcast; held while a frame is numbered and sent, and while a
    /// newcomer subscribes, so its `head` and its first frame meet exactly.
    head: Arc<Mutex<u64>>,
    /// Each frame is serialized once; every client sends the same bytes.
    events: broadcast::Sender<Utf8Bytes>,
    prompts: mpsc::Sender<String>,
}

/// Serve until the bench ends this process (SIGTERM). `agent_env` marks the agent
/// child (this executable again). Prints the relay's listening line on stdout.
pub fn run_hub(agent_env: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(serve(agent_env));
}

async fn serve(agent_env: &str) {
    let me = std::env::current_exe().expect("own path");
    let mut agent = tokio::process::Command::new(me)
        .env(agent_env, "1")
        .env_remove(HUB_ENV)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("agent starts");
    let mut agent_in = agent.stdin.take().expect("agent stdin");
    let agent_out = agent.stdout.take().expect("agent stdout");
    let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
    let (prompts, mut prompt_rx) = mpsc::channel::<String>(PROMPT_QUEUE);
    let hub = Hub {
        head: Arc::new(Mutex::new(0)),
        events,
        prompts,
    };
    tokio::spawn(async move {
        while let Some(line) = prompt_rx.recv().await {
            if agent_in.write_all(line.as_bytes()).await.is_err() {
                break;
            }
        }
    });
    let numbering = hub.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(agent_out).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(mut head) = numbering.head.lock() else {
                break;
            };
            *head += 1;
            let frame = format!(
                r#"{{"type":"event","session":"default","seq":{},"event":{line}}}"#,
                *head
            );
            // No receivers is fine: nobody is attached yet.
            let _ = numbering.events.send(Utf8Bytes::from(frame));
        }
    });
    let app = axum::Router::new()
        .route("/v1/ws", get(upgrade))
        .with_state(hub);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ccrelay listening on ws://{addr}/v1/ws");
    let _ = out.flush();
    let _ = axum::serve(listener, app).await;
    drop(agent);
}

async fn upgrade(ws: WebSocketUpgrade, State(hub): State<Hub>) -> Response {
    ws.on_upgrade(move |socket| client(socket, hub))
}

async fn client(mut socket: WebSocket, hub: Hub) {
    let (mut events, head) = {
        let Ok(head) = hub.head.lock() else { return };
        (hub.events.subscribe(), *head)
    };
    let attached = format!(r#"{{"type":"attached","session":"default","head":{head}}}"#);
    if socket.send(Message::Text(attached.into())).await.is_err() {
        return;
    }
    let mut prompt_counter = 0u64;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(frame) => {
                    // Written as a competent hub would: whatever else is already
                    // queued goes out in the same write, one flush for the batch.
                    if socket.feed(Message::Text(frame)).await.is_err() {
                        return;
                    }
                    for _ in 0..WRITE_BATCH {
                        match events.try_recv() {
                            Ok(more) => {
                                if socket.feed(Message::Text(more)).await.is_err() {
                                    return;
                                }
                            }
                            Err(broadcast::error::TryRecvError::Empty) => break,
                            Err(_) => return,
                        }
                    }
                    if socket.flush().await.is_err() {
                        return;
                    }
                }
                // Lagged or closed: the baseline has no resume; the client is dropped.
                Err(_) => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(t))) if t.starts_with(r#"{"type":"prompt""#) => {
                    prompt_counter += 1;
                    let user = serde_json::json!({
                        "type": "user",
                        "uuid": format!("hub-{prompt_counter}"),
                        "message": {"role": "user", "content": t.as_str()},
                    });
                    if hub.prompts.send(format!("{user}\n")).await.is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                _ => return,
            },
        }
    }
}
