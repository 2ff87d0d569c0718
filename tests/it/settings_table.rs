//! The settings table (`ccrelay::config::settings`) against what users read:
//! `ccrelay serve --help` lists every setting's option, env var and default, the
//! options table of docs/operations.md has exactly one row per setting (as the
//! table renders it), and every option the README or docs/operations.md names
//! is one the binary has.

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use ccrelay::config::settings::{DefaultValue, SETTINGS, Shape};
use common::ccrelay_bin;

/// Options named in docs that belong to other programs.
const OTHER_PROGRAMS: &[&str] = &[
    // `docker run --ulimit`, in the sizing section.
    "--ulimit",
];

fn help(args: &[&str]) -> String {
    let out = Command::new(ccrelay_bin())
        .args(args)
        .arg("--help")
        .output()
        .expect("ccrelay runs");
    assert!(out.status.success(), "{args:?} --help failed");
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

fn read_doc(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Help text with its line wrapping undone (clap wraps long help lines).
fn unwrapped(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn serve_help_lists_every_setting_with_its_env_var_and_default() {
    let text = help(&["serve"]);
    let flat = unwrapped(&text);
    for s in SETTINGS {
        match s.shape {
            Shape::Trailing => assert!(
                text.contains(&format!("[{}]...", s.value_name)),
                "serve --help lacks the trailing {}",
                s.value_name
            ),
            Shape::Switch => assert!(
                text.lines().any(|l| l.trim() == format!("--{}", s.name)),
                "serve --help lacks the switch --{}",
                s.name
            ),
            Shape::One(_) | Shape::List => assert!(
                text.contains(&format!("--{} <{}>", s.name, s.value_name)),
                "serve --help lacks --{} <{}>",
                s.name,
                s.value_name
            ),
        }
        if let Some(env) = s.env {
            assert!(
                text.contains(&format!("[env: {env}=")),
                "serve --help lacks {env}"
            );
        }
        if let DefaultValue::Value(d) | DefaultValue::Computed(d) = s.default {
            assert!(
                flat.contains(&unwrapped(&format!("[default: {d}]"))),
                "serve --help lacks the default of --{}: {d}",
                s.name
            );
        }
    }
    // And nothing the table does not have (besides clap's own -h/-V).
    let listed: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("--"))
        .map(|l| l.split([' ', ',']).next().unwrap_or(l))
        .collect();
    for option in listed {
        assert!(
            option == "help" || option == "version" || SETTINGS.iter().any(|s| s.name == option),
            "serve --help lists --{option}, which the settings table lacks"
        );
    }
}

#[test]
fn operations_doc_has_one_row_per_setting() {
    let doc = read_doc("docs/operations.md");
    let expected = ccrelay::config::settings::docs_table();
    let rows: Vec<&str> = doc
        .lines()
        .filter(|l| l.starts_with("| `--") || l.starts_with("| `-- "))
        .collect();
    let mut missing = Vec::new();
    for s in SETTINGS {
        if !rows.contains(&s.docs_row().as_str()) {
            missing.push(s.docs_row());
        }
    }
    let extra: Vec<&&str> = rows
        .iter()
        .filter(|r| !SETTINGS.iter().any(|s| s.docs_row() == **r))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && doc.contains(&expected),
        "docs/operations.md's options table differs from the settings table.\n\
         Missing or changed rows: {missing:#?}\nRows of no setting: {extra:#?}\n\
         The table as the settings declare it:\n{expected}"
    );
}

/// Every `--option` the README or docs/operations.md names is a setting of
/// `serve` or an option of another `ccrelay` command (`--tls-*` stands for the
/// settings it prefixes).
#[test]
fn documented_options_exist() {
    let mut known: BTreeSet<String> = SETTINGS.iter().map(|s| format!("--{}", s.name)).collect();
    for sub in [
        vec!["attach"],
        vec!["keys", "check"],
        vec!["keys", "add"],
        vec!["keys", "list"],
        vec!["keys", "remove"],
        vec!["demo"],
        vec!["server-info"],
        vec!["mock-agent"],
        vec!["sessions"],
    ] {
        for line in help(&sub).lines() {
            let line = line.trim_start();
            let line = line
                .strip_prefix('-')
                .filter(|l| l.len() > 2 && l.as_bytes()[1] == b',')
                .map(|l| l[2..].trim_start())
                .unwrap_or(line);
            if let Some(rest) = line.strip_prefix("--") {
                let name = rest.split([' ', '=', ',']).next().unwrap_or(rest);
                known.insert(format!("--{name}"));
            }
        }
    }
    // The fanout bench's own options (`cargo bench --bench fanout -- --preset ...`):
    // the arms of its argument parser's match (`"--clients" =>`, `"--help" | "-h" =>`),
    // not the serve options it passes to the server.
    let bench = read_doc("benches/fanout.rs");
    for (i, _) in bench.match_indices("\"--") {
        let name: String = bench[i + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        let after = bench[i + 1 + name.len()..].strip_prefix('"').unwrap_or("");
        let after = after.trim_start();
        if after.starts_with("=>") || after.starts_with('|') {
            known.insert(name);
        }
    }
    let mut unknown = Vec::new();
    for doc in ["README.md", "docs/operations.md"] {
        let text = read_doc(doc);
        for (i, _) in text.match_indices("`--") {
            let token: String = text[i + 1..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '*')
                .collect();
            if token == "--" || OTHER_PROGRAMS.contains(&token.as_str()) {
                continue;
            }
            let ok = match token.strip_suffix('*') {
                Some(prefix) => known.iter().any(|k| k.starts_with(prefix)),
                None => known.contains(&token),
            };
            if !ok {
                unknown.push(format!("{doc}: {token}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "documented options the binary does not have: {unknown:?}"
    );
}
