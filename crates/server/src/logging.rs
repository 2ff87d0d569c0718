//! Structured logging to stderr (stdout carries only the listening line).
//!
//! Every field value is escaped with [`crate::escape`] on its way out, in both
//! formats, so a string a peer controls (device name, key comment, key type,
//! Origin, close reason, forwarded address) can never start a new log line, send
//! terminal escapes or reorder text with bidi controls — whichever call site logs
//! it. Pretty: a field formatter; JSON: a writer that rewrites string values.

use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::{FmtSpan, FormatFields, Writer};

use crate::escape;

/// How a log line is formatted (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for machines.
    Json,
    /// Human-readable, one event per line.
    Pretty,
}

impl LogFormat {
    /// Every format by its setting value, with what it means (for `--help`).
    pub const CHOICES: &[(&str, &str)] = &[
        ("json", "one JSON object per line, for machines"),
        ("pretty", "human-readable, one event per line"),
    ];

    /// The format a setting value names (case-insensitive).
    pub fn from_name(name: &str) -> Option<LogFormat> {
        match name.to_ascii_lowercase().as_str() {
            "json" => Some(LogFormat::Json),
            "pretty" => Some(LogFormat::Pretty),
            _ => None,
        }
    }
}

/// Send logs to a file instead of stderr (the demo, whose terminal belongs to the client).
pub fn init_to_file(level: &str, path: &std::path::Path) -> std::io::Result<()> {
    let file = crate::datadir::open_options()
        .create(true)
        .append(true)
        .open(path)?;
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .with_target(false)
        .fmt_fields(EscapingFields)
        .try_init();
    Ok(())
}

/// Install the global subscriber. `level` is a level or a tracing filter directive.
pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(FmtSpan::NONE)
        .with_target(false);
    let result = match format {
        LogFormat::Json => builder
            .with_writer(JsonEscaping(std::io::stderr))
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .compact()
            .fmt_fields(EscapingFields)
            .try_init(),
    };
    // A second init (tests running several commands in one process) keeps the first.
    let _ = result;
}

/// Field formatter of the pretty format: `message key=value ...` with the message
/// and every value escaped; string values are quoted (as the default formatter
/// does), so a value cannot forge the start of another field.
#[derive(Debug, Default, Clone, Copy)]
pub struct EscapingFields;

impl<'w> FormatFields<'w> for EscapingFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> std::fmt::Result {
        let mut v = EscapingVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }
}

struct EscapingVisitor<'w> {
    writer: Writer<'w>,
    first: bool,
    result: std::fmt::Result,
}

impl EscapingVisitor<'_> {
    fn write(&mut self, name: &str, value: &str) {
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let sep = if self.first { "" } else { " " };
        self.first = false;
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.result = if name == "message" {
            write!(self.writer, "{sep}{value}")
        } else {
            write!(self.writer, "{sep}{name}={value}")
        };
    }
}

impl Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.write(field.name(), &escape::line(value));
        } else {
            self.write(field.name(), &escape::quoted(value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // `%x` fields arrive here as Display, `?x` as Debug: escape either way.
        let text = format!("{value:?}");
        self.write(field.name(), &escape::line(&text));
    }
}

/// `MakeWriter` for the JSON format: each event (one JSON object per write) has
/// its string values escaped with [`escape::line`] before it reaches stderr.
#[derive(Debug, Clone, Copy)]
pub struct JsonEscaping<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for JsonEscaping<M> {
    type Writer = JsonEscapingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        JsonEscapingWriter(self.0.make_writer())
    }
}

/// See [`JsonEscaping`].
#[derive(Debug)]
pub struct JsonEscapingWriter<W>(W);

impl<W: std::io::Write> std::io::Write for JsonEscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(&escape_json_lines(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Rewrite JSON log lines so that no string value holds a dangerous character.
/// Fast path: JSON text without backslashes, DEL or non-ASCII cannot hold one.
pub fn escape_json_lines(buf: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !buf.iter().any(|b| *b == b'\\' || *b >= 0x7f) {
        return std::borrow::Cow::Borrowed(buf);
    }
    let text = String::from_utf8_lossy(buf);
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.split_inclusive('\n') {
        let (body, nl) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        match serde_json::from_str::<serde_json::Value>(body) {
            Ok(mut v) => {
                escape_strings(&mut v);
                out.push_str(&v.to_string());
            }
            // Not JSON (cannot happen with the JSON formatter): escape it whole.
            Err(_) => out.push_str(&escape::line(body)),
        }
        out.push_str(nl);
    }
    std::borrow::Cow::Owned(out.into_bytes())
}

fn escape_strings(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => {
            if let std::borrow::Cow::Owned(e) = escape::line(s) {
                *s = e;
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(escape_strings),
        serde_json::Value::Object(m) => m.values_mut().for_each(escape_strings),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_get_escaped_values_and_stay_json() {
        let line = serde_json::json!({"message": "authenticated", "device": "a\nb\u{1b}[2J\u{202e}", "n": 3}).to_string() + "\n";
        let out = escape_json_lines(line.as_bytes());
        let text = std::str::from_utf8(&out).unwrap();
        assert_eq!(text.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["device"], "a\\nb\\u{1b}[2J\\u{202e}");
        assert_eq!(v["n"], 3);
        assert!(!text.contains('\u{1b}') && !text.contains('\u{202e}'));
    }

    #[test]
    fn plain_json_lines_pass_through_untouched() {
        let line = b"{\"message\":\"listening\",\"addr\":\"127.0.0.1:1\"}\n";
        assert!(matches!(
            escape_json_lines(line),
            std::borrow::Cow::Borrowed(_)
        ));
        let line = "{\"message\":\"caf\u{e9} \\\"q\\\"\"}\n".as_bytes();
        assert_eq!(&*escape_json_lines(line), line);
    }

    #[test]
    fn pretty_fields_are_escaped_and_quoted() {
        #[derive(Clone, Default)]
        struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .compact()
            .fmt_fields(EscapingFields)
            .finish();
        let device = "ph\none\u{1b}]0;x\u{7}";
        let key_type = "ssh-\u{202e}rsa";
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(device, key_type = %key_type, "who {}", "a\nb");
        });
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.matches('\n').count(), 1, "{out:?}");
        assert!(out.contains(r#"device="ph\none\u{1b}]0;x\u{7}""#), "{out}");
        assert!(out.contains(r"key_type=ssh-\u{202e}rsa"), "{out}");
        assert!(out.contains(r"who a\nb"), "{out}");
        assert!(!out.contains('\u{1b}'));
    }
}
