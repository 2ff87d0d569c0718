//! [`WorkdirError`]: every way a workdir request can fail, with its wire code and
//! a message safe to send to the client that asked.

use ccrelay_protocol::ErrorCode;

/// At most this many characters of client- or git-provided text go into a message.
const SHOWN_CHARS: usize = 200;

/// `s` on one line, dangerous characters escaped, cut to [`SHOWN_CHARS`] characters
/// (with `…` when cut): how a path or git's words appear in an error message, so a
/// client's megabyte of text is never echoed back or logged whole.
pub fn bounded(s: &str) -> String {
    let mut out: String = s.chars().take(SHOWN_CHARS).collect();
    if s.chars().nth(SHOWN_CHARS).is_some() {
        out.push('…');
    }
    crate::escape::quoted(&out)
}

/// A failed workdir request. `Display` is the client-facing message: it names only
/// what the client sent (bounded) or what git said (its first line, bounded), never
/// a path the client could not already see.
#[derive(Debug, thiserror::Error)]
pub enum WorkdirError {
    /// Neither absolute nor `~`/`~/`-relative.
    #[error("the path must be absolute or start with ~/: {}", bounded(.0))]
    NotAbsolute(String),
    /// A NUL byte (no path can contain one).
    #[error("the path contains a NUL character")]
    Nul,
    /// Longer than [`super::roots::MAX_PATH_BYTES`].
    #[error("the path is longer than {} bytes", super::roots::MAX_PATH_BYTES)]
    TooLong,
    /// `~/` but the server has no home directory.
    #[error("the server has no home directory to expand ~ in {}", bounded(.0))]
    NoHome(String),
    /// Not a name `git check-ref-format --branch` accepts, or one starting with `-`.
    #[error("not a valid branch name: {}", bounded(.0))]
    BadBranch(String),
    /// Not an RFC 3339 time.
    #[error("not an RFC 3339 time: {}", bounded(.0))]
    BadTime(String),
    /// Not `[A-Za-z0-9-]{1,64}`.
    #[error("not a valid conversation id: {}", bounded(.0))]
    BadConversationId(String),
    /// Outside every session root, or inside an excluded directory.
    #[error("{} is not inside a session root", bounded(.0))]
    OutsideRoots(String),
    /// Does not exist (inside the roots).
    #[error("{} does not exist", bounded(.0))]
    NotFound(String),
    /// Exists but is not a directory.
    #[error("{} is not a directory", bounded(.0))]
    NotADirectory(String),
    /// Not inside a git repository the server may use.
    #[error("{} is not inside a git repository", bounded(.0))]
    NotARepository(String),
    /// git exited unsuccessfully: its first line of error output.
    #[error("git: {}", bounded(.0))]
    GitFailed(String),
    /// git ran out of its time limit (and was killed).
    #[error("git {what} timed out after {secs} s")]
    GitTimedOut { what: &'static str, secs: u64 },
    /// A worktree with changes other than ignored files is not removed.
    #[error("the worktree {} has uncommitted changes", bounded(.0))]
    Dirty(String),
    /// No transcript of that id for that directory.
    #[error("no conversation {} in this directory", bounded(.0))]
    NoSuchConversation(String),
    /// The server's own I/O failed (logged by the caller with its source).
    #[error("internal error while {context}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl WorkdirError {
    /// The wire code of this error (docs/protocol.md §4).
    pub fn code(&self) -> ErrorCode {
        match self {
            WorkdirError::NotAbsolute(_)
            | WorkdirError::Nul
            | WorkdirError::TooLong
            | WorkdirError::NoHome(_)
            | WorkdirError::BadBranch(_)
            | WorkdirError::BadTime(_)
            | WorkdirError::BadConversationId(_) => ErrorCode::BadMessage,
            WorkdirError::OutsideRoots(_) => ErrorCode::OutsideRoots,
            WorkdirError::NotFound(_) | WorkdirError::NotADirectory(_) => ErrorCode::NotFound,
            WorkdirError::NotARepository(_) => ErrorCode::NotARepository,
            WorkdirError::GitFailed(_)
            | WorkdirError::GitTimedOut { .. }
            | WorkdirError::Dirty(_) => ErrorCode::GitFailed,
            WorkdirError::NoSuchConversation(_) => ErrorCode::NoSuchConversation,
            WorkdirError::Io { .. } => ErrorCode::Internal,
        }
    }

    pub(crate) fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> WorkdirError {
        move |source| WorkdirError::Io { context, source }
    }
}

/// A path shown in a message: lossily as text (messages are text).
pub(crate) fn shown(path: &std::path::Path) -> String {
    path.to_string_lossy().into_owned()
}

impl From<&WorkdirError> for ccrelay_protocol::ProtocolError {
    fn from(e: &WorkdirError) -> Self {
        ccrelay_protocol::ProtocolError::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_bounded_and_escaped() {
        let long = "a".repeat(100_000);
        let msg = WorkdirError::OutsideRoots(long).to_string();
        assert!(msg.len() < 300, "{}", msg.len());
        assert!(msg.contains('…'));
        let msg = WorkdirError::NotFound("x\ny\u{202e}".into()).to_string();
        assert!(!msg.contains('\n') && !msg.contains('\u{202e}'), "{msg}");
    }

    #[test]
    fn codes() {
        assert_eq!(WorkdirError::Nul.code(), ErrorCode::BadMessage);
        assert_eq!(
            WorkdirError::NotADirectory("x".into()).code(),
            ErrorCode::NotFound
        );
        assert_eq!(WorkdirError::Dirty("x".into()).code(), ErrorCode::GitFailed);
        assert_eq!(
            WorkdirError::GitTimedOut {
                what: "worktree add",
                secs: 60
            }
            .code(),
            ErrorCode::GitFailed
        );
    }
}
