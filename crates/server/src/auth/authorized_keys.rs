//! authorized_keys lines, parsed the way OpenSSH's sshd reads them.
//!
//! Owns: splitting a line into options, key and comment, and giving the options
//! a meaning ([`KeyOptions`]). ssh-key's own `AuthorizedKeys` is not used: it
//! mis-parses valid lines (`restrict ssh-ed25519 AAAA…` with no comment,
//! quoted values with spaces, a `#` inside quotes). Deciding whether a key may log
//! in is `keystore`'s job; this file only describes what the line says.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ssh_key::PublicKey;

/// Options ccrelay has no use for, accepted and ignored (names lowercased).
const IGNORED_OPTIONS: &[&str] = &[
    "restrict",
    "no-pty",
    "pty",
    "no-port-forwarding",
    "port-forwarding",
    "no-agent-forwarding",
    "agent-forwarding",
    "no-x11-forwarding",
    "x11-forwarding",
    "no-user-rc",
    "user-rc",
];

/// Key type names that may start the key part of a line (as OpenSSH knows them).
const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-xmss@openssh.com",
];

/// What the options of one line say.
#[derive(Debug, Clone, Default)]
pub struct KeyOptions {
    /// The options text exactly as written ("" if none).
    pub raw: String,
    /// `from="..."` pattern list, unparsed (matched per connection by `hostmatch`).
    pub from: Option<String>,
    /// `expiry-time`: the key is refused after this instant.
    pub expiry: Option<SystemTime>,
    /// `no-touch-required`: an sk- signature need not carry the user-presence flag.
    pub no_touch_required: bool,
    /// `verify-required`: the signature must carry the user-verified flag.
    pub verify_required: bool,
    /// Options that make the key unusable for ccrelay (`command`, unknown ones, ...).
    pub disallowed: Vec<String>,
}

/// One key line of an authorized_keys file.
#[derive(Debug, Clone)]
pub struct KeyLine {
    /// 1-based line number in its file.
    pub line: usize,
    /// The key, comment included.
    pub key: PublicKey,
    /// The key's comment ("" if none).
    pub comment: String,
    /// What the options say.
    pub options: KeyOptions,
}

/// One meaningful line of an authorized_keys file (blank and comment lines are dropped).
#[derive(Debug, Clone)]
pub enum ParsedLine {
    /// A key (usable or not: `keystore` decides). Boxed: a key is large, a malformed line small.
    Key(Box<KeyLine>),
    /// A line that could not be read; it is skipped.
    Malformed {
        /// 1-based line number.
        line: usize,
        /// Why, for the log and `keys check`.
        reason: String,
    },
}

/// Parse a whole file's text. Never fails: bad lines come back as `Malformed`.
pub fn parse(text: &str) -> Vec<ParsedLine> {
    let mut out = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = i + 1;
        let l = raw.strip_suffix('\r').unwrap_or(raw);
        let l = l.trim_start_matches([' ', '\t']);
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        match parse_line(l, line) {
            Ok(k) => out.push(ParsedLine::Key(Box::new(k))),
            Err(reason) => out.push(ParsedLine::Malformed { line, reason }),
        }
    }
    out
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn parse_line(l: &str, line: usize) -> Result<KeyLine, String> {
    let first = l.split(is_blank).next().unwrap_or("");
    let (options_text, key_part) = if is_key_type(first) {
        ("", l)
    } else {
        let end = options_end(l)?;
        let rest = l[end..].trim_start_matches(is_blank);
        if rest.is_empty() {
            return Err("no key after the options".into());
        }
        (&l[..end], rest)
    };
    let options = parse_options(options_text)?;
    let (key, comment) = parse_key(key_part)?;
    Ok(KeyLine {
        line,
        key,
        comment,
        options,
    })
}

fn is_key_type(word: &str) -> bool {
    KEY_TYPES.contains(&word) || word.ends_with("-cert-v01@openssh.com")
}

/// Byte index where the options end: the first blank outside double quotes
/// (`\"` inside quotes does not end them), as `sshkey_advance_past_options`.
fn options_end(l: &str) -> Result<usize, String> {
    let bytes = l.as_bytes();
    let mut quoted = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if bytes.get(i + 1) == Some(&b'"') => i += 1,
            b'"' => quoted = !quoted,
            b' ' | b'\t' if !quoted => return Ok(i),
            _ => {}
        }
        i += 1;
    }
    if quoted {
        Err("unterminated quote in options".into())
    } else {
        Ok(bytes.len())
    }
}

/// Split `name[="value"],...` into (name, value) pairs; `\"` in a value is `"`.
fn split_options(text: &str) -> Result<Vec<(String, Option<String>)>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            name.push(c);
            chars.next();
        }
        if name.is_empty() {
            return Err("empty option name".into());
        }
        let mut value = None;
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.next() != Some('"') {
                return Err(format!("option {name}: value must be in double quotes"));
            }
            let mut v = String::new();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' if chars.peek() == Some(&'"') => {
                        chars.next();
                        v.push('"');
                    }
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => v.push(c),
                }
            }
            if !closed {
                return Err(format!("option {name}: unterminated quote"));
            }
            value = Some(v);
        }
        match chars.next() {
            None | Some(',') => {}
            Some(c) => return Err(format!("option {name}: unexpected {c:?} after it")),
        }
        out.push((name, value));
    }
    Ok(out)
}

fn parse_options(text: &str) -> Result<KeyOptions, String> {
    let mut opts = KeyOptions {
        raw: text.to_owned(),
        ..KeyOptions::default()
    };
    for (name, value) in split_options(text)? {
        let lname = name.to_ascii_lowercase();
        match (lname.as_str(), value) {
            (n, None) if IGNORED_OPTIONS.contains(&n) => {}
            ("no-touch-required", None) => opts.no_touch_required = true,
            ("verify-required", None) => opts.verify_required = true,
            (n, Some(_))
                if IGNORED_OPTIONS.contains(&n)
                    || n == "no-touch-required"
                    || n == "verify-required" =>
            {
                return Err(format!("option {name} takes no value"));
            }
            ("from", Some(v)) => {
                if opts.from.is_some() {
                    return Err("more than one from= option".into());
                }
                opts.from = Some(v);
            }
            ("expiry-time", Some(v)) => {
                let t = parse_expiry_time(&v).map_err(|e| format!("expiry-time=\"{v}\": {e}"))?;
                // Several expiry-time options: the earliest wins, as in OpenSSH.
                opts.expiry = Some(opts.expiry.map_or(t, |old| old.min(t)));
            }
            ("from" | "expiry-time", None) => return Err(format!("option {name} needs a value")),
            (_, Some(_)) => opts.disallowed.push(format!("{name}=")),
            (_, None) => opts.disallowed.push(name),
        }
    }
    Ok(opts)
}

fn parse_key(part: &str) -> Result<(PublicKey, String), String> {
    let mut it = part.splitn(2, is_blank);
    let key_type = it.next().unwrap_or("");
    let rest = it.next().unwrap_or("").trim_start_matches(is_blank);
    if !is_key_type(key_type) {
        return Err(format!("unknown key type {key_type:?}"));
    }
    if key_type.ends_with("-cert-v01@openssh.com") {
        return Err(format!("certificate keys ({key_type}) are not supported"));
    }
    let mut it = rest.splitn(2, is_blank);
    let b64 = it.next().unwrap_or("");
    let comment = it.next().unwrap_or("").trim_matches(is_blank).to_owned();
    if b64.is_empty() {
        return Err(format!("{key_type}: no key data"));
    }
    let blob = STANDARD
        .decode(b64)
        .map_err(|e| format!("{key_type}: key data is not base64: {e}"))?;
    let inner = blob_key_type(&blob);
    if inner != Some(key_type) {
        return Err(format!(
            "key type {key_type} does not match the key data ({})",
            inner.unwrap_or("unreadable")
        ));
    }
    let mut key =
        PublicKey::from_bytes(&blob).map_err(|e| format!("{key_type}: bad key data: {e}"))?;
    key.set_comment(comment.clone());
    Ok((key, comment))
}

/// The algorithm name that starts an SSH public key blob.
fn blob_key_type(blob: &[u8]) -> Option<&str> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    std::str::from_utf8(blob.get(4..4usize.checked_add(len)?)?).ok()
}

/// `YYYYMMDD[HHMM[SS]][Z]`: local time unless suffixed Z (UTC), as OpenSSH reads it.
pub fn parse_expiry_time(s: &str) -> Result<SystemTime, String> {
    let (digits, utc) = match s.strip_suffix(['Z', 'z']) {
        Some(d) => (d, true),
        None => (s, false),
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) || ![8, 12, 14].contains(&digits.len()) {
        return Err("expected YYYYMMDD[HHMM[SS]][Z]".into());
    }
    let num = |r: std::ops::Range<usize>| {
        digits
            .get(r)
            .and_then(|d| d.parse::<u32>().ok())
            .unwrap_or(0)
    };
    let (year, month, day) = (num(0..4), num(4..6), num(6..8));
    let (hour, minute, second) = (num(8..10), num(10..12), num(12..14));
    let month_t = u8::try_from(month)
        .ok()
        .and_then(|m| time::Month::try_from(m).ok())
        .ok_or("month out of range")?;
    let date = time::Date::from_calendar_date(year as i32, month_t, day as u8)
        .map_err(|e| e.to_string())?;
    let tod =
        time::Time::from_hms(hour as u8, minute as u8, second as u8).map_err(|e| e.to_string())?;
    let secs: i64 = if utc {
        time::PrimitiveDateTime::new(date, tod)
            .assume_utc()
            .unix_timestamp()
    } else {
        local_mktime(year as i32, month, day, hour, minute, second)?
    };
    Ok(if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    })
}

/// Local civil time to Unix time with the C library, as OpenSSH does. (`time`'s
/// local offset is refused in multi-threaded programs, and would ignore DST rules.)
fn local_mktime(
    year: i32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
) -> Result<i64, String> {
    // SAFETY: `tm` is a plain C struct; all-zero is a valid value for it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = year - 1900;
    tm.tm_mon = month as i32 - 1;
    tm.tm_mday = day as i32;
    tm.tm_hour = hour as i32;
    tm.tm_min = minute as i32;
    tm.tm_sec = second as i32;
    tm.tm_isdst = -1; // let the zone rules say whether DST applies
    // SAFETY: mktime only reads and normalises the struct we own.
    let t = unsafe { libc::mktime(&mut tm) };
    if t == -1 {
        return Err("not representable in local time".into());
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOfXN2TSEmO465XhAvih0RjRIuN+6iec1QeA+nuI8D7c";

    fn keys(text: &str) -> Vec<KeyLine> {
        parse(text)
            .into_iter()
            .filter_map(|p| match p {
                ParsedLine::Key(k) => Some(*k),
                ParsedLine::Malformed { .. } => None,
            })
            .collect()
    }

    fn malformed(text: &str) -> Vec<(usize, String)> {
        parse(text)
            .into_iter()
            .filter_map(|p| match p {
                ParsedLine::Malformed { line, reason } => Some((line, reason)),
                ParsedLine::Key(_) => None,
            })
            .collect()
    }

    #[test]
    fn plain_line_without_options_or_comment() {
        let k = keys(&format!("ssh-ed25519 {ED}\n"));
        assert_eq!(k.len(), 1);
        assert_eq!(k[0].comment, "");
        assert_eq!(k[0].options.raw, "");
        assert_eq!(k[0].key.algorithm().as_str(), "ssh-ed25519");
    }

    #[test]
    fn comment_with_spaces_is_kept_whole() {
        let k = keys(&format!("ssh-ed25519 {ED}   alice on the  laptop  \n"));
        assert_eq!(k[0].comment, "alice on the  laptop");
        assert_eq!(k[0].key.comment(), "alice on the  laptop");
    }

    #[test]
    fn restrict_without_comment() {
        let k = keys(&format!("restrict ssh-ed25519 {ED}"));
        assert_eq!(k.len(), 1);
        assert_eq!(k[0].comment, "");
        assert_eq!(k[0].options.raw, "restrict");
        assert!(k[0].options.disallowed.is_empty());
    }

    #[test]
    fn quoted_values_with_commas_spaces_hash_and_escapes() {
        let text = format!(
            "from=\"10.0.0.0/8,192.168.1.?\",command=\"echo a, b # \\\"c\\\"\",no-pty ssh-ed25519 {ED} bob # not a comment marker\n"
        );
        let k = keys(&text);
        assert_eq!(k.len(), 1, "{:?}", parse(&text));
        let o = &k[0].options;
        assert_eq!(o.from.as_deref(), Some("10.0.0.0/8,192.168.1.?"));
        assert_eq!(o.disallowed, vec!["command=".to_owned()]);
        assert_eq!(k[0].comment, "bob # not a comment marker");
        // The escaped quote and the '#' stayed inside the options.
        assert!(o.raw.contains("\\\"c\\\""));
    }

    #[test]
    fn options_and_comment_crlf_and_comment_lines() {
        let text = format!(
            "# owner keys\r\n\r\n   \r\nno-agent-forwarding,expiry-time=\"20990101Z\" ssh-ed25519 {ED} carol@phone\r\n  # indented comment\r\n"
        );
        let k = keys(&text);
        assert_eq!(k.len(), 1);
        assert_eq!(k[0].line, 4);
        assert_eq!(k[0].comment, "carol@phone");
        assert!(k[0].options.expiry.is_some());
        assert!(malformed(&text).is_empty());
    }

    #[test]
    fn option_names_are_case_insensitive() {
        let k = keys(&format!(
            "No-Touch-Required,VERIFY-REQUIRED,Restrict,FROM=\"127.0.0.1\",No-X11-Forwarding ssh-ed25519 {ED}"
        ));
        assert_eq!(k.len(), 1);
        let o = &k[0].options;
        assert!(o.no_touch_required && o.verify_required);
        assert_eq!(o.from.as_deref(), Some("127.0.0.1"));
        assert!(o.disallowed.is_empty(), "{:?}", o.disallowed);
    }

    #[test]
    fn disallowed_and_unknown_options_are_recorded() {
        let k = keys(&format!(
            "cert-authority,principals=\"a\",permitopen=\"h:1\",environment=\"A=b\",tunnel=\"1\",frobnicate ssh-ed25519 {ED}"
        ));
        assert_eq!(
            k[0].options.disallowed,
            vec![
                "cert-authority",
                "principals=",
                "permitopen=",
                "environment=",
                "tunnel=",
                "frobnicate"
            ]
        );
    }

    #[test]
    fn malformed_lines_are_skipped_and_the_rest_load() {
        let text = format!(
            "ssh-ed25519 {ED} good1\n\
             ssh-ed25519 !!!notbase64 bad\n\
             from=\"unterminated ssh-ed25519 {ED}\n\
             ssh-rsa {ED} type-mismatch\n\
             no-pty\n\
             expiry-time=\"2024\" ssh-ed25519 {ED}\n\
             pty=\"x\" ssh-ed25519 {ED}\n\
             from=\"a\",from=\"b\" ssh-ed25519 {ED}\n\
             ssh-ed25519\n\
             ssh-ed25519 {ED} good2\n"
        );
        let k = keys(&text);
        assert_eq!(
            k.iter().map(|k| k.comment.as_str()).collect::<Vec<_>>(),
            ["good1", "good2"]
        );
        let bad: Vec<usize> = malformed(&text).into_iter().map(|(l, _)| l).collect();
        assert_eq!(bad, vec![2, 3, 4, 5, 6, 7, 8, 9]);
    }

    #[test]
    fn expiry_time_formats() {
        let utc = |s| {
            parse_expiry_time(s)
                .unwrap()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
        };
        assert_eq!(utc("20300101Z"), 1_893_456_000);
        assert_eq!(utc("203001010130Z"), 1_893_456_000 + 5400);
        assert_eq!(utc("20300101013007z"), 1_893_456_000 + 5407);
        assert!(parse_expiry_time("20300101").is_ok());
        for bad in [
            "2030010",
            "20301301Z",
            "20300230Z",
            "2030010125Z",
            "203001011260Z",
            "abc",
            "",
        ] {
            assert!(parse_expiry_time(bad).is_err(), "{bad}");
        }
    }
}
