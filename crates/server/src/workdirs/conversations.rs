//! `conversations.list` (docs/protocol.md §4): the Claude Code conversations the
//! CLI recorded for a directory, read from its transcripts.
//!
//! Where they are: `<config dir>/projects/<encoded dir>/<id>.jsonl`, the config dir
//! as [`super::claude_config_dir`] finds it. The pinned CLI (tools/claude-cli/package.json)
//! encodes the directory by replacing every UTF-16 code unit that is not an ASCII
//! letter or digit with `-`; when that is longer than 200 characters it keeps the
//! first 200 and appends `-` and a hash of the whole path (the absolute value of
//! the Java-style string hash `h = 31·h + unit` over the UTF-16 units, as 32-bit
//! signed, in base 36). Since the CLI itself also looks for any directory starting
//! with the first 200 characters and a `-` (earlier versions hashed differently),
//! so does [`list`]. The encoding maps several directories to one name, so a
//! transcript is listed only when the working directory it records (`cwd`) is the
//! directory asked about.
//!
//! What is read: the first [`HEAD_BYTES`] and the last [`TAIL_BYTES`] of each file
//! (the CLI appends its title records, and they may come late) and its
//! modification time, never a whole transcript. Titles: the CLI's own when it
//! recorded one (`custom-title`, the user's rename, before `ai-title`, its
//! generated one; the `summary` records of older versions last), else the first
//! line of the first user prompt, at most [`TITLE_CHARS`] characters.
//!
//! Everything here is blocking (file I/O): callers run it off the network threads.

use super::error::WorkdirError;
use serde::Serialize;
use serde_json::Value;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// How much of a transcript's beginning is read.
pub const HEAD_BYTES: usize = 64 * 1024;
/// How much of a transcript's end is read.
pub const TAIL_BYTES: usize = 64 * 1024;
/// The longest title, in characters.
pub const TITLE_CHARS: usize = 80;
/// `limit` when the client gives none, and its largest value.
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 200;
/// The CLI keeps this many characters of a long encoded directory name.
const ENCODED_PREFIX_CHARS: usize = 200;
/// At most this many directory entries are examined per listing (transcripts and
/// project directories together), however many the CLI has written.
const MAX_EXAMINED: usize = 100_000;

/// One conversation as `conversations.list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conversation {
    /// The CLI's session id (what `--resume` takes).
    pub conversation: String,
    pub title: String,
    /// RFC 3339, UTC, from the transcript's modification time.
    pub updated_at: String,
    /// The session running it, if any.
    pub in_use_by: Option<String>,
}

/// One page, newest first; `more` when older ones remain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConversationPage {
    pub conversations: Vec<Conversation>,
    pub more: bool,
}

/// A conversation id as the CLI makes them (a UUID) and `--resume` takes:
/// `[A-Za-z0-9-]{1,64}`; anything else is `bad_message`.
pub fn validate_conversation_id(id: &str) -> Result<(), WorkdirError> {
    let ok =
        (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(WorkdirError::BadConversationId(id.to_owned()))
    }
}

/// The name of the directory under `projects/` where the CLI records the
/// conversations run in `workdir` (see the module doc). A path that is not UTF-8
/// is encoded from its lossy text (the CLI sees such paths the same way).
pub fn encode_project_dir(workdir: &Path) -> String {
    let text = workdir.to_string_lossy();
    let units: Vec<u16> = text.encode_utf16().collect();
    let encoded: String = units
        .iter()
        .map(|&u| match u {
            0x30..=0x39 | 0x41..=0x5a | 0x61..=0x7a => char::from(u as u8),
            _ => '-',
        })
        .collect();
    if encoded.len() <= ENCODED_PREFIX_CHARS {
        return encoded;
    }
    let hash = units
        .iter()
        .fold(0i32, |h, &u| h.wrapping_mul(31).wrapping_add(i32::from(u)));
    format!(
        "{}-{}",
        &encoded[..ENCODED_PREFIX_CHARS],
        base36(u64::from(hash.unsigned_abs()))
    )
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

/// RFC 3339 in UTC (fractional seconds kept, so a page's last `updated_at` is an
/// exact `before` for the next page).
pub fn format_time(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A client's `before` (RFC 3339); `bad_message` when it is not one.
pub fn parse_before(text: &str) -> Result<SystemTime, WorkdirError> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(SystemTime::from)
        .map_err(|_| WorkdirError::BadTime(text.to_owned()))
}

/// A transcript file found on disk, before it is read.
struct Candidate {
    id: String,
    path: PathBuf,
    modified: SystemTime,
}

/// The project directories that may hold `workdir`'s transcripts.
fn project_dirs(config_dir: &Path, workdir: &Path, examined: &mut usize) -> Vec<PathBuf> {
    let projects = config_dir.join("projects");
    let encoded = encode_project_dir(workdir);
    let mut dirs = vec![projects.join(&encoded)];
    if encoded.len() > ENCODED_PREFIX_CHARS {
        let prefix = format!("{}-", &encoded[..ENCODED_PREFIX_CHARS]);
        if let Ok(reader) = std::fs::read_dir(&projects) {
            for entry in reader.flatten() {
                *examined += 1;
                if *examined > MAX_EXAMINED {
                    break;
                }
                let name = entry.file_name();
                if let Some(name) = name.to_str()
                    && name.starts_with(&prefix)
                    && name != encoded
                {
                    dirs.push(entry.path());
                }
            }
        }
    }
    dirs
}

/// Every transcript in the project directories, newest first (one per id).
fn candidates(config_dir: &Path, workdir: &Path) -> Vec<Candidate> {
    let mut examined = 0;
    let mut found: Vec<Candidate> = Vec::new();
    for dir in project_dirs(config_dir, workdir, &mut examined) {
        let Ok(reader) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in reader.flatten() {
            examined += 1;
            if examined > MAX_EXAMINED {
                break;
            }
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".jsonl")) else {
                continue;
            };
            if validate_conversation_id(id).is_err() {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let Ok(modified) = meta.modified() else {
                continue;
            };
            found.push(Candidate {
                id: id.to_owned(),
                path: entry.path(),
                modified,
            });
        }
    }
    found.sort_by(|a, b| b.modified.cmp(&a.modified).then_with(|| a.id.cmp(&b.id)));
    let mut seen = std::collections::HashSet::new();
    found.retain(|c| seen.insert(c.id.clone()));
    found
}

/// Blocking. The conversations recorded for `workdir` (canonical, as
/// [`super::Roots::resolve_dir`] gives it) under `config_dir`, newest first, at most
/// `limit` (clamped to 1..=[`MAX_LIMIT`]), modified before `before`; `in_use`
/// names the session running a conversation id, if any.
pub fn list(
    config_dir: &Path,
    workdir: &Path,
    limit: usize,
    before: Option<SystemTime>,
    in_use: &dyn Fn(&str) -> Option<String>,
) -> Result<ConversationPage, WorkdirError> {
    let limit = limit.clamp(1, MAX_LIMIT);
    let mut conversations = Vec::new();
    let mut more = false;
    for candidate in candidates(config_dir, workdir) {
        if before.is_some_and(|b| candidate.modified >= b) {
            continue;
        }
        let Some(summary) = read_summary(&candidate.path, &candidate.id) else {
            continue;
        };
        if summary.cwd.as_deref() != Some(workdir) {
            continue;
        }
        if conversations.len() == limit {
            more = true;
            break;
        }
        conversations.push(Conversation {
            in_use_by: in_use(&candidate.id),
            conversation: candidate.id,
            title: summary.title,
            updated_at: format_time(candidate.modified),
        });
    }
    Ok(ConversationPage {
        conversations,
        more,
    })
}

/// Blocking. Whether the CLI recorded conversation `id` for `workdir` (false for
/// an id [`validate_conversation_id`] refuses).
pub fn exists(config_dir: &Path, workdir: &Path, id: &str) -> bool {
    if validate_conversation_id(id).is_err() {
        return false;
    }
    let mut examined = 0;
    project_dirs(config_dir, workdir, &mut examined)
        .iter()
        .map(|dir| dir.join(format!("{id}.jsonl")))
        .filter(|path| path.is_file())
        .any(|path| read_summary(&path, id).is_some_and(|s| s.cwd.as_deref() == Some(workdir)))
}

/// Blocking. [`validate_conversation_id`], then [`exists`]: `Ok` when `id` may be
/// resumed in `workdir`, else `bad_message` or `no_such_conversation`.
pub fn require(config_dir: &Path, workdir: &Path, id: &str) -> Result<(), WorkdirError> {
    validate_conversation_id(id)?;
    if exists(config_dir, workdir, id) {
        Ok(())
    } else {
        Err(WorkdirError::NoSuchConversation(id.to_owned()))
    }
}

/// Blocking. The CLI's own title for conversation `id` run in `workdir`
/// (`custom-title`, then `ai-title`, then `summary`; never the first prompt),
/// read as boundedly as [`list`] reads; `None` when it recorded none or the
/// transcript is not there.
pub fn cli_title_of(config_dir: &Path, workdir: &Path, id: &str) -> Option<String> {
    validate_conversation_id(id).ok()?;
    let mut examined = 0;
    project_dirs(config_dir, workdir, &mut examined)
        .iter()
        .map(|dir| dir.join(format!("{id}.jsonl")))
        .filter(|path| path.is_file())
        .find_map(|path| {
            let ends = read_ends(&path).ok()?;
            let (head, _) = records(&ends.head, !ends.whole);
            let (tail, _) = records(&ends.tail, false);
            cli_title(&tail, &head, id)
        })
}

/// What one transcript says about itself.
#[derive(Debug, Default)]
struct Summary {
    cwd: Option<PathBuf>,
    title: String,
}

/// The beginning and end of a file: `head` holds its first bytes, `tail` its last
/// ones when the file is longer than the head (else empty); `whole` when `head` is
/// the whole file.
struct Ends {
    head: Vec<u8>,
    tail: Vec<u8>,
    whole: bool,
}

fn read_ends(path: &Path) -> std::io::Result<Ends> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut head = Vec::with_capacity(HEAD_BYTES.min(len as usize));
    (&mut file).take(HEAD_BYTES as u64).read_to_end(&mut head)?;
    let whole = (head.len() as u64) >= len && head.len() < HEAD_BYTES;
    let mut tail = Vec::new();
    if !whole && len > head.len() as u64 {
        let start = len.saturating_sub(TAIL_BYTES as u64).max(head.len() as u64);
        file.seek(SeekFrom::Start(start))?;
        file.take(TAIL_BYTES as u64).read_to_end(&mut tail)?;
        // The first tail line is cut unless the tail starts right after the head.
        if start > head.len() as u64 {
            let cut = tail
                .iter()
                .position(|&b| b == b'\n')
                .map_or(tail.len(), |i| i + 1);
            tail.drain(..cut);
        }
    }
    Ok(Ends { head, tail, whole })
}

/// The complete lines of `bytes` parsed as JSON objects (others skipped), and the
/// cut last line when `cut_last` (the buffer ends mid-line).
fn records(bytes: &[u8], cut_last: bool) -> (Vec<Value>, Option<&[u8]>) {
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    let cut = if cut_last && !bytes.ends_with(b"\n") {
        lines.pop()
    } else {
        None
    };
    let values = lines
        .into_iter()
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
        .filter(Value::is_object)
        .collect();
    (values, cut)
}

/// Reads one transcript's ends; `None` when it cannot be read.
fn read_summary(path: &Path, id: &str) -> Option<Summary> {
    let ends = read_ends(path).ok()?;
    let (head, cut_head) = records(&ends.head, !ends.whole);
    let (tail, _) = records(&ends.tail, false);
    let cwd = head
        .iter()
        .find_map(|r| r.get("cwd").and_then(Value::as_str))
        .or_else(|| {
            tail.iter()
                .rev()
                .find_map(|r| r.get("cwd").and_then(Value::as_str))
        })
        .map(PathBuf::from);
    let title = cli_title(&tail, &head, id)
        .or_else(|| head.iter().find_map(first_prompt))
        .or_else(|| cut_head.and_then(cut_prompt))
        .unwrap_or_default();
    Some(Summary { cwd, title })
}

/// The CLI's own title for conversation `id`, the latest record of the most
/// preferred kind: the tail's records come after the head's.
fn cli_title(tail: &[Value], head: &[Value], id: &str) -> Option<String> {
    let latest = |kind: &str, field: &str| {
        tail.iter()
            .rev()
            .chain(head.iter().rev())
            .filter(|r| r.get("type").and_then(Value::as_str) == Some(kind))
            .filter(|r| {
                r.get("sessionId")
                    .and_then(Value::as_str)
                    .is_none_or(|s| s == id)
            })
            .find_map(|r| r.get(field).and_then(Value::as_str).and_then(title_line))
    };
    latest("custom-title", "customTitle")
        .or_else(|| latest("ai-title", "aiTitle"))
        .or_else(|| latest("summary", "summary"))
}

/// The first line of a user prompt record, skipping the CLI's own injected
/// messages (meta, sidechains, command and reminder wrappers) and tool results.
fn first_prompt(record: &Value) -> Option<String> {
    if record.get("type").and_then(Value::as_str) != Some("user")
        || record.get("isMeta").and_then(Value::as_bool) == Some(true)
        || record.get("isSidechain").and_then(Value::as_bool) == Some(true)
    {
        return None;
    }
    let content = record.get("message")?.get("content")?;
    let text = match content {
        Value::String(s) => s.as_str(),
        Value::Array(blocks) => blocks
            .iter()
            .find(|b| b.get("type").and_then(Value::as_str) == Some("text"))?
            .get("text")?
            .as_str()?,
        _ => return None,
    };
    if is_injected(text) {
        return None;
    }
    title_line(text)
}

/// Text the CLI puts in a user message itself rather than the person typing.
fn is_injected(text: &str) -> bool {
    let t = text.trim_start();
    [
        "<command-",
        "<local-command-",
        "<system-reminder>",
        "<bash-",
        "Caveat:",
    ]
    .iter()
    .any(|p| t.starts_with(p))
}

/// A user record (or the queue record the CLI writes before it, holding the same
/// prompt) too long for the head, as with a huge pasted prompt: its prompt text
/// decoded up to where the head ends.
fn cut_prompt(line: &[u8]) -> Option<String> {
    let line = String::from_utf8_lossy(line);
    if !line.contains("\"type\":\"user\"") && !line.contains("\"type\":\"queue-operation\"") {
        return None;
    }
    let key = "\"content\":\"";
    let start = line.find(key)? + key.len();
    let text = decode_json_string_prefix(&line[start..]);
    if is_injected(&text) {
        return None;
    }
    title_line(&text)
}

/// The characters of a JSON string literal's body up to its closing quote or the
/// end of `s`, escapes decoded (a cut escape is dropped).
fn decode_json_string_prefix(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('u') => {
                    let hex: String = chars.by_ref().take(4).collect();
                    if let Some(c) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                        out.push(c);
                    }
                }
                Some(other) => out.push(other),
                None => break,
            },
            c => out.push(c),
        }
        // Only the first line is ever shown.
        if out.contains('\n') {
            break;
        }
    }
    out
}

/// The first non-empty line of `text`, trimmed, without control characters, at most
/// [`TITLE_CHARS`] characters; `None` when nothing is left.
fn title_line(text: &str) -> Option<String> {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let title: String = line
        .chars()
        .filter(|c| !crate::escape::is_dangerous(*c))
        .take(TITLE_CHARS)
        .collect();
    let title = title.trim().to_owned();
    (!title.is_empty()).then_some(title)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ccrelay_protocol::ErrorCode;
    use std::time::Duration;

    const ID_A: &str = "42576fe8-f071-4610-b9ef-e04e21fb4de2";
    const ID_B: &str = "5d762d31-74e6-4aef-9e38-5d3419304e0c";
    const ID_C: &str = "feaa62b2-4ded-40a1-8dc1-b3503f06e08d";

    /// The records a real CLI (the pinned version) writes at a conversation's start,
    /// shortened: a queue operation without `cwd`, then the user's prompt.
    fn opening(id: &str, cwd: &Path, prompt: &str) -> String {
        let queue = serde_json::json!({"type":"queue-operation","operation":"enqueue","timestamp":"2026-12-07T01:12:30.747Z","sessionId":id,"content":prompt});
        let user = serde_json::json!({"parentUuid":null,"isSidechain":false,"type":"user","message":{"role":"user","content":prompt},"uuid":"93e8a4e5-685c-4163-a8c5-12fa9c4537df","timestamp":"2026-12-07T01:12:30.792Z","userType":"external","entrypoint":"sdk-cli","cwd":cwd,"sessionId":id,"version":"2.1.332","gitBranch":"HEAD"});
        format!("{queue}\n{user}\n")
    }

    fn assistant(id: &str, cwd: &Path, text: &str) -> String {
        let r = serde_json::json!({"parentUuid":"x","isSidechain":false,"type":"assistant","message":{"role":"assistant","content":[{"type":"text","text":text}]},"cwd":cwd,"sessionId":id});
        format!("{r}\n")
    }

    struct Fixture {
        _tmp: tempfile::TempDir,
        config: PathBuf,
        workdir: PathBuf,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        let workdir = base.join("src/my.api");
        std::fs::create_dir_all(&workdir).unwrap();
        let config = base.join("claude");
        Fixture {
            _tmp: tmp,
            config,
            workdir,
        }
    }

    fn write(f: &Fixture, dir_for: &Path, id: &str, body: &str, age_secs: u64) -> PathBuf {
        let dir = f.config.join("projects").join(encode_project_dir(dir_for));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{id}.jsonl"));
        std::fs::write(&path, body).unwrap();
        let t = SystemTime::now() - Duration::from_secs(age_secs);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(t)
            .unwrap();
        path
    }

    fn nobody(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_cli_title_of_one_conversation_is_never_its_first_prompt() {
        let f = fixture();
        let untitled = opening(ID_A, &f.workdir, "first prompt");
        write(&f, &f.workdir, ID_A, &untitled, 10);
        assert_eq!(cli_title_of(&f.config, &f.workdir, ID_A), None);
        let ai = serde_json::json!({"type":"ai-title","aiTitle":"Generated","sessionId":ID_B});
        let custom = serde_json::json!({"type":"custom-title","customTitle":"Renamed\nsecond line","sessionId":ID_B});
        let body = format!("{}{ai}\n{custom}\n", opening(ID_B, &f.workdir, "p"));
        write(&f, &f.workdir, ID_B, &body, 10);
        assert_eq!(
            cli_title_of(&f.config, &f.workdir, ID_B).as_deref(),
            Some("Renamed")
        );
        assert_eq!(cli_title_of(&f.config, &f.workdir, ID_C), None);
        assert_eq!(cli_title_of(&f.config, &f.workdir, "../x"), None);
    }

    #[test]
    fn encodes_like_the_cli() {
        // Observed with the pinned CLI: its projects/ directory names.
        assert_eq!(
            encode_project_dir(Path::new("/tmp/wdx/proj.x y")),
            "-tmp-wdx-proj-x-y"
        );
        let long = format!("/tmp/wdx/{}", ["a_very.long-directory name é"; 9].join("/"));
        assert_eq!(
            encode_project_dir(Path::new(&long)),
            "-tmp-wdx-a-very-long-directory-name---a-very-long-directory-name---a-very-long-directory-name---a-very-long-directory-name---a-very-long-directory-name---a-very-long-directory-name---a-very-long-direc-hkqndj"
        );
        // A character outside the BMP is two UTF-16 units, so two dashes.
        assert_eq!(encode_project_dir(Path::new("/a😀b")), "-a--b");
    }

    #[test]
    fn lists_newest_first_with_titles_and_in_use() {
        let f = fixture();
        let w = &f.workdir;
        write(
            &f,
            w,
            ID_A,
            &opening(ID_A, w, "Fix the login bug\nsecond line"),
            300,
        );
        let renamed = format!(
            "{}{}{}\n{}\n",
            opening(ID_B, w, "original prompt"),
            assistant(ID_B, w, "ok"),
            serde_json::json!({"type":"ai-title","aiTitle":"Generated title","sessionId":ID_B}),
            serde_json::json!({"type":"custom-title","customTitle":"Renamed by me","sessionId":ID_B}),
        );
        write(&f, w, ID_B, &renamed, 200);
        let ai = format!(
            "{}{}\n",
            opening(ID_C, w, "prompt"),
            serde_json::json!({"type":"ai-title","aiTitle":"Generated title","sessionId":ID_C})
        );
        write(&f, w, ID_C, &ai, 100);
        let in_use = |id: &str| (id == ID_B).then(|| "api".to_owned());
        let page = list(&f.config, w, 50, None, &in_use).unwrap();
        let got: Vec<(&str, &str, Option<&str>)> = page
            .conversations
            .iter()
            .map(|c| {
                (
                    c.conversation.as_str(),
                    c.title.as_str(),
                    c.in_use_by.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (ID_C, "Generated title", None),
                (ID_B, "Renamed by me", Some("api")),
                (ID_A, "Fix the login bug", None)
            ]
        );
        assert!(!page.more);
        assert!(page.conversations[0].updated_at.ends_with('Z'));

        // Paging: limit and before.
        let first = list(&f.config, w, 2, None, &nobody).unwrap();
        assert_eq!(first.conversations.len(), 2);
        assert!(first.more);
        let before = parse_before(&first.conversations[1].updated_at).unwrap();
        let rest = list(&f.config, w, 2, Some(before), &nobody).unwrap();
        assert_eq!(rest.conversations.len(), 1);
        assert_eq!(rest.conversations[0].conversation, ID_A);
        assert!(!rest.more);
    }

    #[test]
    fn another_directory_with_the_same_encoding_is_not_listed() {
        let f = fixture();
        let w = &f.workdir;
        // "/…/src/my-api" encodes like "/…/src/my.api".
        let other = w.with_file_name("my-api");
        assert_eq!(encode_project_dir(&other), encode_project_dir(w));
        write(&f, w, ID_A, &opening(ID_A, &other, "not mine"), 10);
        write(&f, w, ID_B, &opening(ID_B, w, "mine"), 20);
        let page = list(&f.config, w, 50, None, &nobody).unwrap();
        assert_eq!(page.conversations.len(), 1);
        assert_eq!(page.conversations[0].title, "mine");
        assert!(exists(&f.config, w, ID_B));
        assert!(!exists(&f.config, w, ID_A));
        assert!(!exists(&f.config, w, ID_C));
        assert!(!exists(&f.config, w, "../../etc/passwd"));
    }

    #[test]
    fn garbage_and_truncated_lines_are_skipped() {
        let f = fixture();
        let w = &f.workdir;
        let body = format!(
            "not json at all\n{{\"type\":\"user\",\"message\":{{\"content\":\"cut\n[1,2]\n{}{{\"type\":\"custom-title\",\"customTi",
            opening(ID_A, w, "the real prompt")
        );
        write(&f, w, ID_A, &body, 10);
        // A file with no cwd at all is not listed; neither is an empty one.
        write(&f, w, ID_B, "garbage\n", 5);
        write(&f, w, ID_C, "", 1);
        // Not a transcript name.
        write(&f, w, "notes.txt", "x", 1);
        let page = list(&f.config, w, 50, None, &nobody).unwrap();
        assert_eq!(page.conversations.len(), 1);
        assert_eq!(page.conversations[0].title, "the real prompt");
    }

    #[test]
    fn a_huge_transcript_reads_only_its_ends() {
        let f = fixture();
        let w = &f.workdir;
        let mut body = opening(ID_A, w, "huge one");
        let filler = assistant(ID_A, w, &"x".repeat(10_000));
        while body.len() < 8 * 1024 * 1024 {
            body.push_str(&filler);
        }
        body.push_str(&format!(
            "{}\n",
            serde_json::json!({"type":"custom-title","customTitle":"Title at the end","sessionId":ID_A})
        ));
        body.push_str(&filler);
        write(&f, w, ID_A, &body, 10);
        // A first prompt bigger than the head: its beginning is the title, and the
        // working directory comes from the records at the end.
        let big_prompt = format!("Big paste {}", "y".repeat(200_000));
        let body = opening(ID_B, w, &big_prompt) + &assistant(ID_B, w, "done");
        write(&f, w, ID_B, &body, 20);
        let page = list(&f.config, w, 50, None, &nobody).unwrap();
        let titles: Vec<&str> = page
            .conversations
            .iter()
            .map(|c| c.title.as_str())
            .collect();
        assert_eq!(titles.len(), 2);
        assert_eq!(titles[0], "Title at the end");
        assert!(titles[1].starts_with("Big paste yyy"), "{}", titles[1]);
        assert_eq!(titles[1].chars().count(), TITLE_CHARS);
    }

    #[test]
    fn long_workdirs_use_the_hashed_name_and_any_name_with_its_prefix() {
        let f = fixture();
        let long = f.workdir.join("d".repeat(120)).join("e".repeat(120));
        write(&f, &long, ID_A, &opening(ID_A, &long, "hashed"), 10);
        // An earlier CLI's hash: same 200-character prefix, another suffix.
        let encoded = encode_project_dir(&long);
        let other = f
            .config
            .join("projects")
            .join(format!("{}-zzzz", &encoded[..ENCODED_PREFIX_CHARS]));
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(
            other.join(format!("{ID_B}.jsonl")),
            opening(ID_B, &long, "older hash"),
        )
        .unwrap();
        let page = list(&f.config, &long, 50, None, &nobody).unwrap();
        let mut titles: Vec<&str> = page
            .conversations
            .iter()
            .map(|c| c.title.as_str())
            .collect();
        titles.sort();
        assert_eq!(titles, ["hashed", "older hash"]);
    }

    #[test]
    fn titles_skip_injected_messages_and_are_bounded() {
        let f = fixture();
        let w = &f.workdir;
        let meta = serde_json::json!({"type":"user","isMeta":true,"message":{"role":"user","content":"Caveat: meta"},"cwd":w,"sessionId":ID_A});
        let cmd = serde_json::json!({"type":"user","message":{"role":"user","content":"<command-name>/clear</command-name>"},"cwd":w,"sessionId":ID_A});
        let blocks = serde_json::json!({"type":"user","message":{"role":"user","content":[{"type":"text","text":format!("  \n{}\u{202e}", "z".repeat(300))}]},"cwd":w,"sessionId":ID_A});
        write(&f, w, ID_A, &format!("{meta}\n{cmd}\n{blocks}\n"), 10);
        let page = list(&f.config, w, 50, None, &nobody).unwrap();
        assert_eq!(page.conversations[0].title, "z".repeat(TITLE_CHARS));
    }

    #[test]
    fn ids_and_times_are_validated() {
        assert!(validate_conversation_id(ID_A).is_ok());
        for bad in ["", "a/b", "..", &"a".repeat(65), "a b", "é"] {
            assert_eq!(
                validate_conversation_id(bad).unwrap_err().code(),
                ErrorCode::BadMessage,
                "{bad}"
            );
        }
        assert_eq!(
            parse_before("yesterday").unwrap_err().code(),
            ErrorCode::BadMessage
        );
        let t = parse_before("2026-12-01T10:00:00.5Z").unwrap();
        assert_eq!(format_time(t), "2026-12-01T10:00:00.5Z");
    }

    /// The first and last lines of a transcript the pinned CLI wrote (`claude -p`
    /// against a mock API), unchanged but for its working directory.
    const REAL_TRANSCRIPT: &str = r#"{"type":"queue-operation","operation":"enqueue","timestamp":"2026-12-07T01:12:30.747Z","sessionId":"42576fe8-f071-4610-b9ef-e04e21fb4de2","content":"first line of prompt\nsecond line"}
{"type":"queue-operation","operation":"dequeue","timestamp":"2026-12-07T01:12:30.750Z","sessionId":"42576fe8-f071-4610-b9ef-e04e21fb4de2"}
{"parentUuid":null,"isSidechain":false,"promptId":"f190e001-1873-4fb9-b47c-70ac700a3130","type":"user","message":{"role":"user","content":"first line of prompt\nsecond line"},"uuid":"93e8a4e5-685c-4163-a8c5-12fa9c4537df","timestamp":"2026-12-07T01:12:30.792Z","permissionMode":"default","promptSource":"sdk","sentAtMs":1796605950744,"rowSource":"local","turnOrigin":"sdk","turnPosition":{"promptIndex":0,"turnIndex":1},"userType":"external","entrypoint":"sdk-cli","cwd":"/tmp/wdx/proj.x y","sessionId":"42576fe8-f071-4610-b9ef-e04e21fb4de2","version":"2.1.332","gitBranch":"HEAD"}
{"type":"last-prompt","lastPrompt":"first line of prompt second line","leafUuid":"a95a64d1-4099-4af5-8bb4-8500a3b0ce35","sessionId":"42576fe8-f071-4610-b9ef-e04e21fb4de2"}
{"type":"atis-latch","atis":"","sessionId":"42576fe8-f071-4610-b9ef-e04e21fb4de2"}
{"type":"cost-state","sessionId":"42576fe8-f071-4610-b9ef-e04e21fb4de2","totalCostUSD":0,"totalAPIDuration":0,"totalAPIDurationWithoutRetries":0,"totalToolDuration":0,"totalLinesAdded":0,"totalLinesRemoved":0,"totalDuration":60046,"startTime":1796605950463,"modelUsage":{},"hasUnknownModelCost":false}
"#;

    #[test]
    fn reads_a_transcript_the_cli_wrote() {
        let f = fixture();
        let w = &f.workdir;
        let body = REAL_TRANSCRIPT.replace("/tmp/wdx/proj.x y", w.to_str().unwrap());
        write(&f, w, ID_A, &body, 10);
        let page = list(&f.config, w, 50, None, &nobody).unwrap();
        assert_eq!(page.conversations.len(), 1);
        assert_eq!(page.conversations[0].conversation, ID_A);
        assert_eq!(page.conversations[0].title, "first line of prompt");
        assert!(exists(&f.config, w, ID_A));
        assert!(require(&f.config, w, ID_A).is_ok());
        assert_eq!(
            require(&f.config, w, ID_B).unwrap_err().code(),
            ErrorCode::NoSuchConversation
        );
        assert_eq!(
            require(&f.config, w, "a/b").unwrap_err().code(),
            ErrorCode::BadMessage
        );
    }

    #[test]
    fn a_missing_config_dir_lists_nothing() {
        let f = fixture();
        let page = list(&f.config, &f.workdir, 50, None, &nobody).unwrap();
        assert!(page.conversations.is_empty() && !page.more);
    }
}
