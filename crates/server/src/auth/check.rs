//! `ccrelay keys check [PATH]`: say, per line, whether ccrelay accepts each key and why not.

use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use ssh_key::HashAlg;

use super::authorized_keys::{self, ParsedLine};
use super::keystore::key_refusal;
use super::verify::key_type_name;

/// Print one line per entry (type, fingerprint, comment, options, verdict) and a
/// summary. Exit code: 0 if at least one key is usable, 1 if none, 2 if the file is unreadable.
pub fn run_keys_check(path: &Path, out: &mut impl Write) -> anyhow::Result<i32> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            writeln!(out, "{}: cannot read: {e}", path.display())?;
            return Ok(2);
        }
    };
    let now = SystemTime::now();
    let (mut usable, mut total) = (0usize, 0usize);
    for parsed in authorized_keys::parse(&text) {
        total += 1;
        match parsed {
            ParsedLine::Malformed { line, reason } => {
                // Keys files can hold peer-chosen text (paired keys): escape it.
                let reason = crate::escape::line(&reason);
                writeln!(out, "line {line}: refused: malformed line: {reason}")?;
            }
            ParsedLine::Key(k) => {
                let data = k.key.key_data();
                let key_type = match key_type_name(data) {
                    "other" => data.algorithm().as_str().to_owned(),
                    name => name.to_owned(),
                };
                let bits = match data {
                    ssh_key::public::KeyData::Rsa(rsa) => {
                        format!(" ({} bits)", super::keystore::rsa_bits(rsa))
                    }
                    _ => String::new(),
                };
                let mut verdict = match key_refusal(&k) {
                    Some(why) => format!("refused: {why}"),
                    None => match k.options.expiry {
                        Some(exp) if now > exp => "refused: expiry-time has passed".to_owned(),
                        _ => {
                            usable += 1;
                            "accepted".to_owned()
                        }
                    },
                };
                if verdict == "accepted" {
                    if k.options.from.is_some() {
                        verdict.push_str(" (only from the from= addresses)");
                    }
                    if k.options.verify_required
                        && !data.is_sk_ed25519()
                        && !data.is_sk_ecdsa_p256()
                    {
                        verdict.push_str(
                            " (verify-required on a non-security key: no signature can satisfy it)",
                        );
                    }
                }
                let comment = if k.comment.is_empty() {
                    "-".into()
                } else {
                    crate::escape::line(&k.comment)
                };
                let options = if k.options.raw.is_empty() {
                    "-".into()
                } else {
                    crate::escape::line(&k.options.raw)
                };
                writeln!(
                    out,
                    "line {}: {verdict} | {key_type}{bits} {} | comment: {comment} | options: {options}",
                    k.line,
                    data.fingerprint(HashAlg::Sha256),
                )?;
            }
        }
    }
    writeln!(
        out,
        "{}: {usable} of {total} entries usable",
        path.display()
    )?;
    Ok(if usable > 0 { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::testutil::*;

    #[test]
    fn mixed_file_report() {
        let dir = tempdir();
        let ed = keygen(&dir, "ed", "ed25519", None);
        let rsa = keygen(&dir, "rsa", "rsa", Some(2048));
        let path = dir.path().join("authorized_keys");
        let text = format!(
            "# a comment line\n\
             {ed}\n\
             ssh-dss {DSA_FIXTURE} old-dsa\n\
             command=\"uptime\" {rsa_no_comment} cmd-key\n\
             this is not a key line\n\
             from=\"10.0.0.0/8\",no-pty {rsa_no_comment}\n\
             expiry-time=\"20000101Z\" {ed}\n",
            ed = ed.pub_line,
            rsa_no_comment = rsa.pub_line_no_comment(),
        );
        std::fs::write(&path, text).unwrap();
        let mut out = Vec::new();
        let code = run_keys_check(&path, &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(code, 0, "{out}");
        assert_eq!(lines.len(), 7, "{out}");
        assert!(
            lines[0].starts_with("line 2: accepted | ssh-ed25519 "),
            "{out}"
        );
        assert!(
            lines[0].contains(&ed.fingerprint)
                && lines[0].contains("comment: ed |")
                && lines[0].ends_with("options: -")
        );
        assert!(
            lines[1].starts_with("line 3: refused: unsupported key type ssh-dss | ssh-dss SHA256:"),
            "{out}"
        );
        assert!(lines[1].contains("comment: old-dsa"));
        assert!(
            lines[2].starts_with("line 4: refused: key has option command= "),
            "{out}"
        );
        assert!(lines[2].contains("ssh-rsa (2048 bits)") && lines[2].contains(&rsa.fingerprint));
        assert!(lines[2].ends_with("options: command=\"uptime\""), "{out}");
        assert!(
            lines[3].starts_with("line 5: refused: malformed line: "),
            "{out}"
        );
        assert!(
            lines[4].starts_with("line 6: accepted (only from the from= addresses) | ssh-rsa"),
            "{out}"
        );
        assert!(
            lines[4].contains("comment: - |")
                && lines[4].ends_with("options: from=\"10.0.0.0/8\",no-pty")
        );
        assert!(
            lines[5].starts_with("line 7: refused: expiry-time has passed"),
            "{out}"
        );
        assert!(lines[6].ends_with(": 2 of 6 entries usable"), "{out}");
    }

    #[test]
    fn peer_chosen_text_is_escaped_in_the_report() {
        let dir = tempdir();
        let ed = keygen(&dir, "ed", "ed25519", None);
        let path = dir.path().join("paired_keys");
        let line = ed.pub_line_no_comment();
        std::fs::write(
            &path,
            format!("{line} ph\u{1b}[2Jone\u{202e}\nssh-x\u{1b} AAAA\n"),
        )
        .unwrap();
        let mut out = Vec::new();
        run_keys_check(&path, &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(
            !out.contains('\u{1b}') && !out.contains('\u{202e}'),
            "{out:?}"
        );
        assert!(out.contains("comment: ph\\u{1b}[2Jone\\u{202e}"), "{out}");
    }

    #[test]
    fn exit_codes() {
        let dir = tempdir();
        let mut out = Vec::new();
        assert_eq!(
            run_keys_check(&dir.path().join("missing"), &mut out).unwrap(),
            2
        );
        assert!(String::from_utf8_lossy(&out).contains("cannot read"));
        let path = dir.path().join("bad");
        std::fs::write(&path, format!("ssh-dss {DSA_FIXTURE}\n")).unwrap();
        let mut out = Vec::new();
        assert_eq!(run_keys_check(&path, &mut out).unwrap(), 1);
        std::fs::write(&path, "").unwrap();
        assert_eq!(run_keys_check(&path, &mut Vec::new()).unwrap(), 1);
    }
}
