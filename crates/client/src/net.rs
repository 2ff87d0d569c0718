//! The connection task: pumps frames between the socket and the session, and
//! reconnects with backoff (0.5 s doubling to 10 s, or the server's Retry-After)
//! when the connection drops.
//!
//! Owns: the socket after authentication, client-side liveness (our own pings),
//! and the decision whether a drop is worth reconnecting. Frames to send are
//! tagged with the connection generation they were meant for, so a request made
//! for a dead connection is never sent on the next one before it is attached.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::connect::{AuthOk, Connected, Connector};
use ccrelay_protocol::close_code;

/// First reconnect delay; doubled after each failed attempt.
const BACKOFF_INITIAL: Duration = Duration::from_millis(500);
/// Longest reconnect delay.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Our WebSocket ping period (keeps NATs open, proves the server is there).
const PING_EVERY: Duration = Duration::from_secs(20);
/// How long a client that closes waits for the server's close before it drops
/// the socket.
const CLOSE_DRAIN: Duration = Duration::from_secs(2);
/// Nothing at all from the server for this long: the connection is dead.
const DEAD_AFTER: Duration = Duration::from_secs(60);
/// Frames read from the socket and not yet shown, at most (as many as the
/// server's own per-client queue holds by default). A display that falls this
/// far behind closes the connection as lagging and resumes from its last seq,
/// as the server does with a slow client (docs/protocol.md, close code 4008),
/// instead of buffering without limit.
pub const INBOUND_QUEUE_FRAMES: usize = 8192;
/// Test builds only: `CCRELAY_TEST_ATTACH_QUEUE=N` makes the queue N frames, so a
/// test can make `attach` fall behind with a small flood.
#[cfg(feature = "test-hooks")]
const TEST_QUEUE_ENV: &str = "CCRELAY_TEST_ATTACH_QUEUE";

/// How many frames the inbound queue holds.
pub fn inbound_queue_frames() -> usize {
    #[cfg(feature = "test-hooks")]
    if let Some(n) = std::env::var(TEST_QUEUE_ENV)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        return n;
    }
    INBOUND_QUEUE_FRAMES
}

/// What the connection task reports to the session loop.
#[derive(Debug)]
pub enum NetEvent {
    /// Authenticated; frames for this connection carry `generation`.
    Connected {
        generation: u64,
        auth: AuthOk,
    },
    Frame(String),
    /// The connection dropped; a reconnect follows.
    Disconnected {
        reason: String,
    },
    /// A reconnect attempt failed; the next one is in `delay`.
    Retrying {
        error: String,
        delay: Duration,
    },
    /// Nothing more will come: exit with an error.
    Fatal {
        message: String,
    },
}

/// A frame to send on connection `generation`.
pub type Outbound = (u64, String);

/// How one connection ended.
enum Ending {
    /// The session loop is gone.
    Stop,
    Lost(String),
    /// Closed with 1008 after authentication (key revoked, abuse): do not retry.
    Refused(String),
}

/// Run until the session loop goes away or a fatal error. `first` is the
/// connection `mod.rs` opened itself (so passphrase prompts happen before the
/// editor takes the terminal). `give_up_after`: stop reconnecting after this
/// long without a connection.
pub async fn run(
    mut connector: Connector,
    first: Connected,
    events: mpsc::Sender<NetEvent>,
    mut outbound: mpsc::UnboundedReceiver<Outbound>,
    give_up_after: Option<Duration>,
) {
    let mut next = Some(first);
    let mut generation = 0;
    let mut backoff = BACKOFF_INITIAL;
    let mut lost_at = Instant::now();
    loop {
        if let Some(conn) = next.take() {
            generation += 1;
            let sent = events
                .send(NetEvent::Connected {
                    generation,
                    auth: conn.auth,
                })
                .await;
            if sent.is_err() {
                return;
            }
            let ending = pump(conn.ws, generation, &events, &mut outbound).await;
            let message = match ending {
                Ending::Stop => return,
                Ending::Refused(reason) => {
                    let _ = events
                        .send(NetEvent::Fatal {
                            message: format!("the server closed the connection: {reason}"),
                        })
                        .await;
                    return;
                }
                Ending::Lost(reason) => NetEvent::Disconnected { reason },
            };
            if events.send(message).await.is_err() {
                return;
            }
            lost_at = Instant::now();
            backoff = BACKOFF_INITIAL;
        }
        tokio::time::sleep(backoff).await;
        if events.is_closed() {
            return;
        }
        match connector.connect().await {
            Ok(conn) => next = Some(conn),
            Err(e) if !e.is_transient() => {
                let _ = events
                    .send(NetEvent::Fatal {
                        message: e.to_string(),
                    })
                    .await;
                return;
            }
            Err(e) => {
                if give_up_after.is_some_and(|limit| lost_at.elapsed() >= limit) {
                    let _ = events
                        .send(NetEvent::Fatal {
                            message: format!("gave up reconnecting: {e}"),
                        })
                        .await;
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                let delay = e.retry_after().map_or(backoff, |r| r.max(backoff));
                backoff = delay;
                let report = NetEvent::Retrying {
                    error: e.to_string(),
                    delay,
                };
                if events.send(report).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn pump(
    ws: super::connect::Ws,
    generation: u64,
    events: &mpsc::Sender<NetEvent>,
    outbound: &mut mpsc::UnboundedReceiver<Outbound>,
) -> Ending {
    let (mut sink, mut stream) = ws.split();
    let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    last_heard = Instant::now();
                    match events.try_send(NetEvent::Frame(t.to_string())) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Closed(_)) => return Ending::Stop,
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            // The display is a whole queue behind: drop this
                            // connection rather than buffer without limit. The
                            // frames already queued are shown; the reconnect
                            // attaches from the last seq shown, so nothing is lost.
                            let close = CloseFrame {
                                code: CloseCode::from(close_code::LAGGING),
                                reason: "lagging: this client's display fell behind".into(),
                            };
                            let _ = sink.send(Message::Close(Some(close))).await;
                            // The closing handshake: read (and drop: the reconnect
                            // replays them) what the server still sends until its
                            // close. Dropping the socket with unread data would
                            // reset the connection, and the server would see a
                            // broken connection instead of this client's close.
                            let _ = tokio::time::timeout(CLOSE_DRAIN, async {
                                while let Some(Ok(msg)) = stream.next().await {
                                    if matches!(msg, Message::Close(_)) {
                                        break;
                                    }
                                }
                            })
                            .await;
                            return Ending::Lost(format!(
                                "this client fell {} frames behind; resuming from its last event",
                                events.max_capacity()
                            ));
                        }
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((0, String::new()));
                    return close_ending(code, &reason);
                }
                // Pings are answered by tungstenite; any frame proves liveness.
                Some(Ok(_)) => last_heard = Instant::now(),
                Some(Err(e)) => return Ending::Lost(e.to_string()),
                None => return Ending::Lost("connection closed".into()),
            },
            out = outbound.recv() => match out {
                Some((g, text)) if g == generation => {
                    if let Err(e) = sink.send(Message::Text(text.into())).await {
                        return Ending::Lost(e.to_string());
                    }
                }
                // Meant for an earlier connection: the session resends what matters.
                Some(_) => {}
                None => {
                    let _ = sink.close().await;
                    return Ending::Stop;
                }
            },
            _ = ping.tick() => {
                if last_heard.elapsed() >= DEAD_AFTER {
                    return Ending::Lost(format!("no answer from the server for {} s", DEAD_AFTER.as_secs()));
                }
                if let Err(e) = sink.send(Message::Ping(Vec::new().into())).await {
                    return Ending::Lost(e.to_string());
                }
            }
        }
    }
}

/// Words for a close code (docs/protocol.md §2.3); 1008 is final.
fn close_ending(code: u16, reason: &str) -> Ending {
    // The reason is the server's text (or a proxy's): one line, escaped.
    let reason = ccrelay_server::escape::line(reason);
    let why = |s: &str| {
        if reason.is_empty() {
            s.to_string()
        } else {
            format!("{s}: {reason}")
        }
    };
    match code {
        close_code::POLICY => Ending::Refused(why("policy violation or key revoked")),
        close_code::GOING_AWAY => Ending::Lost(why("server shutting down")),
        close_code::LAGGING => Ending::Lost(why("this client fell behind")),
        close_code::SHED => Ending::Lost(why("connection shed under load")),
        close_code::INTERNAL => Ending::Lost(why("server error")),
        close_code::TOO_BIG => Ending::Lost(why("frame too large")),
        0 => Ending::Lost("closed without a code".into()),
        other => Ending::Lost(why(&format!("closed with code {other}"))),
    }
}
