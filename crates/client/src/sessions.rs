//! `ccrelay sessions`: list a relay's sessions (a table, or `--json`), close or
//! rename one, or resume a past conversation of a directory in a new session and
//! attach to it (docs/protocol.md §4); and `session.create` for `attach --new`.
//!
//! Owns: these one-request commands and their exit codes (0 done, 1 the server
//! refused, 2 usage, connection or authentication). Must not: open connections
//! its own way (the crate root's `open` does, as for `attach`) or print anything
//! from the server unescaped (`table`).

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::process::ExitCode;

use ccrelay_protocol::{
    ClientMsg, ConversationEntry, ErrorCode, RequestId, ServerMsg, SessionCreate, WorktreeRequest,
};
use time::OffsetDateTime;

use super::connect::{self, ConnectError, Ws};
use super::session::exit;
use super::{AttachSettings, NewSession, ServerOptions, table};

/// What `ccrelay sessions` was asked to do.
#[derive(Debug, Clone)]
pub struct SessionsSettings {
    pub server: ServerOptions,
    pub task: SessionsTask,
}

/// One `ccrelay sessions` command.
#[derive(Debug, Clone)]
pub enum SessionsTask {
    /// The sessions as a table, or with `json` as one JSON document.
    List {
        json: bool,
    },
    Close {
        name: String,
        remove_worktree: bool,
    },
    Rename {
        name: String,
        title: String,
    },
    /// Pick a past conversation of a directory and resume it in a new session.
    Resume(Resume),
}

/// `sessions --resume DIR`.
#[derive(Debug, Clone)]
pub struct Resume {
    pub workdir: String,
    /// `--pick N` (1-based) instead of asking.
    pub pick: Option<usize>,
    /// `--conversation ID` instead of listing.
    pub conversation: Option<String>,
    pub name: Option<String>,
    pub fork: bool,
}

/// Exit code: the server refused the request (its error code is printed).
pub const REFUSED: u8 = 1;

/// Why a request of these commands did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("{0}")]
    Connect(#[from] ConnectError),
    /// The server answered `error`; `code` as it spelled it.
    #[error("the server refused: {code}: {message}")]
    Refused { code: String, message: String },
    /// Anything else (the options, or the user's choice).
    #[error("{0}")]
    Usage(String),
}

impl RequestError {
    /// 1 for a refusal by the server, 2 for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            RequestError::Refused { .. } => REFUSED,
            RequestError::Connect(_) | RequestError::Usage(_) => exit::ERROR,
        }
    }

    fn refused(code: ErrorCode, message: &str, frame: &str) -> RequestError {
        RequestError::Refused {
            code: table::cell(&code_text(code, frame), 64),
            message: table::cell(message, 500),
        }
    }

    fn unexpected(url: &str, what: &str) -> RequestError {
        RequestError::Connect(ConnectError::Protocol {
            url: url.to_string(),
            reason: format!("unexpected reply to {what}"),
        })
    }
}

/// An error code as the frame spelled it (a newer server's code is still shown
/// by its name).
fn code_text(code: ErrorCode, frame: &str) -> String {
    #[derive(serde::Deserialize)]
    struct CodeOnly {
        code: String,
    }
    match code {
        ErrorCode::Unrecognized => serde_json::from_str::<CodeOnly>(frame)
            .map(|c| c.code)
            .unwrap_or_default(),
        known => known.as_str().to_string(),
    }
}

/// A session the server created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub session: String,
    pub uid: String,
    pub workdir: String,
    /// The worktree's branch, for a worktree session.
    pub branch: Option<String>,
    pub duplicate: bool,
    /// The `session.created` frame as received (printed by `attach --json`).
    pub frame: String,
}

/// A fresh retry key for one `session.create`.
pub fn create_key() -> String {
    format!("create-{}", uuid::Uuid::new_v4().simple())
}

/// The `session.create` request for a [`NewSession`]; `key` makes a retry after
/// a lost reply create nothing twice.
pub fn create_request(new: &NewSession, key: String) -> ClientMsg {
    ClientMsg::SessionCreate {
        id: Some(RequestId::Text("create".into())),
        create: Box::new(SessionCreate {
            workdir: new.workdir.clone(),
            name: new.name.clone(),
            worktree: new.worktree.as_ref().map(|branch| WorktreeRequest {
                branch: Some(branch.clone()),
                base: None,
            }),
            resume: new.resume.clone(),
            fork: new.fork,
            settings: None,
            key: Some(key),
        }),
    }
}

/// Create a session on an authenticated connection. The caller makes `key` once
/// (see [`create_key`]) and sends it again after a lost reply: the server then
/// answers with the same session (`"duplicate":true`), never a second one.
pub async fn create(
    ws: &mut Ws,
    url: &str,
    new: &NewSession,
    key: &str,
) -> Result<Created, RequestError> {
    let (reply, frame) = connect::request(ws, url, &create_request(new, key.into())).await?;
    created(reply, &frame, url)
}

fn created(reply: ServerMsg, frame: &str, url: &str) -> Result<Created, RequestError> {
    match reply {
        ServerMsg::SessionCreated {
            session,
            uid,
            workdir,
            worktree,
            duplicate,
            ..
        } => Ok(Created {
            session,
            uid,
            workdir,
            branch: worktree.map(|w| w.branch),
            duplicate: duplicate == Some(true),
            frame: frame.to_string(),
        }),
        ServerMsg::Error { code, message, .. } => Err(RequestError::refused(code, &message, frame)),
        _ => Err(RequestError::unexpected(url, "session.create")),
    }
}

/// "ccrelay: created session api in /home/u/src/api (branch fix-login)", escaped.
pub fn created_line(c: &Created) -> String {
    let branch = c
        .branch
        .as_deref()
        .map(|b| format!(" (branch {})", table::cell(b, 100)))
        .unwrap_or_default();
    format!(
        "ccrelay: {} session {} in {}{branch}",
        if c.duplicate { "found" } else { "created" },
        table::cell(&c.session, 64),
        table::cell(&c.workdir, 300),
    )
}

/// Run `ccrelay sessions` on its own runtime; exit codes as in its `--help`.
pub fn run_sessions(settings: SessionsSettings) -> ExitCode {
    super::on_runtime(sessions(settings))
}

async fn sessions(settings: SessionsSettings) -> u8 {
    let (connector, mut first) = match super::open(&settings.server).await {
        Ok(opened) => opened,
        Err(e) => {
            eprintln!("ccrelay: {e}");
            return exit::ERROR;
        }
    };
    let url = connector.url();
    let done = match &settings.task {
        SessionsTask::List { json } => list(&mut first.ws, &url, *json).await,
        SessionsTask::Close {
            name,
            remove_worktree,
        } => {
            let ask = ClientMsg::SessionClose {
                id: Some(RequestId::Text("close".into())),
                session: name.clone(),
                remove_worktree: *remove_worktree,
            };
            expect_ok(&mut first.ws, &url, &ask, "session.close").await
        }
        SessionsTask::Rename { name, title } => {
            let ask = ClientMsg::SessionRename {
                id: Some(RequestId::Text("rename".into())),
                session: name.clone(),
                title: title.clone(),
            };
            expect_ok(&mut first.ws, &url, &ask, "session.rename").await
        }
        SessionsTask::Resume(resume) => {
            return match pick(&mut first.ws, &url, resume).await {
                Ok(conversation) => {
                    let args = AttachSettings {
                        server: settings.server.clone(),
                        session: String::new(),
                        new: Some(NewSession {
                            workdir: resume.workdir.clone(),
                            name: resume.name.clone(),
                            worktree: None,
                            resume: Some(conversation),
                            fork: resume.fork,
                        }),
                        prompt: None,
                        allow: false,
                        deny: false,
                        json: false,
                        tail: None,
                        invite: false,
                        viewer: false,
                    };
                    match super::start_on(args, connector, first).await {
                        Ok(code) => code,
                        Err(e) => {
                            eprintln!("ccrelay: {e}");
                            exit::ERROR
                        }
                    }
                }
                Err(e) => {
                    let _ = first.ws.close(None).await;
                    eprintln!("ccrelay: {e}");
                    e.exit_code()
                }
            };
        }
    };
    let _ = first.ws.close(None).await;
    match done {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("ccrelay: {e}");
            e.exit_code()
        }
    }
}

/// `session.list`, printed as a table or (`json`) as the server's entries.
async fn list(ws: &mut Ws, url: &str, json: bool) -> Result<(), RequestError> {
    let ask = ClientMsg::SessionList {
        id: Some(RequestId::Text("list".into())),
    };
    let (reply, frame) = connect::request(ws, url, &ask).await?;
    let text = match reply {
        ServerMsg::SessionList { sessions, .. } => {
            if json {
                // The entries as the server wrote them (fields this build does
                // not know included), one document.
                let raw: serde_json::Value =
                    serde_json::from_str(&frame).map_err(|e| RequestError::Usage(e.to_string()))?;
                let entries = raw.get("sessions").cloned().unwrap_or_default();
                let pretty = serde_json::to_string_pretty(&entries).unwrap_or_default();
                format!("{}\n", table::terminal_safe_json(&pretty))
            } else {
                table::sessions(&sessions, now())
            }
        }
        ServerMsg::Error { code, message, .. } => {
            return Err(RequestError::refused(code, &message, &frame));
        }
        _ => return Err(RequestError::unexpected(url, "session.list")),
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    Ok(())
}

/// Send a request whose success is `ok`.
async fn expect_ok(
    ws: &mut Ws,
    url: &str,
    ask: &ClientMsg,
    what: &str,
) -> Result<(), RequestError> {
    let (reply, frame) = connect::request(ws, url, ask).await?;
    match reply {
        ServerMsg::Ok { .. } => Ok(()),
        ServerMsg::Error { code, message, .. } => {
            Err(RequestError::refused(code, &message, &frame))
        }
        _ => Err(RequestError::unexpected(url, what)),
    }
}

/// The conversation to resume: `--conversation`, else the `--pick`th of the
/// list, else one the user picks on the terminal.
async fn pick(ws: &mut Ws, url: &str, resume: &Resume) -> Result<String, RequestError> {
    if let Some(id) = &resume.conversation {
        return Ok(id.clone());
    }
    let ask = ClientMsg::ConversationsList {
        id: Some(RequestId::Text("conversations".into())),
        workdir: resume.workdir.clone(),
        limit: None,
        before: None,
    };
    let (reply, frame) = connect::request(ws, url, &ask).await?;
    let (workdir, list) = match reply {
        ServerMsg::ConversationsList {
            workdir,
            conversations,
            ..
        } => (workdir, conversations),
        ServerMsg::Error { code, message, .. } => {
            return Err(RequestError::refused(code, &message, &frame));
        }
        _ => return Err(RequestError::unexpected(url, "conversations.list")),
    };
    if list.is_empty() {
        return Err(RequestError::Usage(format!(
            "no past conversations in {}",
            table::cell(&workdir, 300)
        )));
    }
    let choice = match resume.pick {
        Some(n) => n,
        None => {
            let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
            let shown = table::conversations(&list, now());
            if !interactive {
                print!("{shown}");
                return Err(RequestError::Usage(
                    "not on a terminal: choose one with --pick N or --conversation ID".into(),
                ));
            }
            eprintln!("past conversations in {}:", table::cell(&workdir, 300));
            eprint!("{shown}");
            tokio::task::block_in_place(|| ask_number(list.len()))?
        }
    };
    chosen(&list, choice)
}

/// The `n`th (1-based) conversation's id.
fn chosen(list: &[ConversationEntry], n: usize) -> Result<String, RequestError> {
    n.checked_sub(1)
        .and_then(|i| list.get(i))
        .map(|c| c.conversation.clone())
        .ok_or_else(|| {
            RequestError::Usage(format!(
                "no conversation {n}: pick 1 to {} of the list",
                list.len()
            ))
        })
}

/// Ask on the terminal for a number in 1..=max (three tries).
fn ask_number(max: usize) -> Result<usize, RequestError> {
    let stdin = std::io::stdin();
    for _ in 0..3 {
        eprint!("resume which conversation? [1-{max}] ");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        match stdin.lock().read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        match line.trim().parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => return Ok(n),
            _ => eprintln!("a number from 1 to {max}, please"),
        }
    }
    Err(RequestError::Usage("no conversation chosen".into()))
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn create_request_carries_the_options_and_a_key() {
        let new = NewSession {
            workdir: "~/src/api".into(),
            name: Some("api".into()),
            worktree: Some("fix-login".into()),
            resume: None,
            fork: false,
        };
        let v = serde_json::to_value(create_request(&new, "k1".into())).unwrap();
        assert_eq!(
            v,
            json!({"type":"session.create","id":"create","workdir":"~/src/api","name":"api",
                "worktree":{"branch":"fix-login"},"key":"k1"})
        );
        // What the server parses is what was meant.
        let text = create_request(&new, "k1".into()).to_json();
        assert!(ccrelay_protocol::parse_request(&text).is_ok());
        let resume = NewSession {
            workdir: "/w".into(),
            resume: Some("c1".into()),
            fork: true,
            ..NewSession::default()
        };
        let v = serde_json::to_value(create_request(&resume, "k2".into())).unwrap();
        assert_eq!(v["resume"], "c1");
        assert_eq!(v["fork"], true);
        assert!(v.get("name").is_none() && v.get("worktree").is_none());
    }

    #[test]
    fn replies_and_refusals_of_create() {
        let frame = r#"{"type":"session.created","id":"create","session":"api","uid":"u1","workdir":"/w/api-wt","worktree":{"path":"/w/api-wt","branch":"fix\u001b[2J","repository":"/w/api"}}"#;
        let reply = ccrelay_protocol::parse_server_frame(frame)
            .unwrap()
            .unwrap();
        let c = created(reply, frame, "ws://x").unwrap();
        assert_eq!(c.session, "api");
        assert_eq!(c.uid, "u1");
        let line = created_line(&c);
        assert!(
            line.contains("session api in /w/api-wt (branch fix\\u{1b}[2J)"),
            "{line}"
        );
        let frame = r#"{"type":"error","id":"create","code":"outside_roots","message":"/etc is outside\u202e the roots"}"#;
        let reply = ccrelay_protocol::parse_server_frame(frame)
            .unwrap()
            .unwrap();
        let e = created(reply, frame, "ws://x").unwrap_err();
        assert_eq!(e.exit_code(), REFUSED);
        let text = e.to_string();
        assert!(
            text.contains("outside_roots: /etc is outside\\u{202e} the roots"),
            "{text}"
        );
        // A code this build does not know is still shown by its name.
        let frame = r#"{"type":"error","id":"create","code":"quota_exceeded","message":"m"}"#;
        let reply = ccrelay_protocol::parse_server_frame(frame)
            .unwrap()
            .unwrap();
        let text = created(reply, frame, "ws://x").unwrap_err().to_string();
        assert!(text.contains("quota_exceeded: m"), "{text}");
    }

    #[test]
    fn picking_a_conversation_by_number() {
        let list: Vec<ConversationEntry> = serde_json::from_value(json!([
            {"conversation":"c1","title":"a","updated_at":"2026-12-01T09:00:00Z","in_use_by":null},
            {"conversation":"c2","title":"b","updated_at":"2026-11-30T10:00:00Z","in_use_by":null},
        ]))
        .unwrap();
        assert_eq!(chosen(&list, 1).unwrap(), "c1");
        assert_eq!(chosen(&list, 2).unwrap(), "c2");
        for bad in [0, 3] {
            let e = chosen(&list, bad).unwrap_err();
            assert_eq!(e.exit_code(), exit::ERROR);
            assert!(e.to_string().contains("pick 1 to 2"), "{e}");
        }
    }
}
