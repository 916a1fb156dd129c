//! The README shows what the programs really do: every example marked
//! `<!-- tests/readme.rs runs this and compares: COMMAND -->` is run on the
//! bundled samples and its block compared with what the command prints, so
//! an example cannot drift from the program. Every `sh` block is valid
//! shell (it can be pasted), and every table row has its header's cells.

mod common;

use std::path::Path;

use common::run::{bin_dir, command, text};
use serde_json::Value;

const MARK: &str = "<!-- tests/readme.rs runs this and compares: ";

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md")
}

/// A fenced block: its info string, its text and the line it starts on.
struct Block {
    lang: String,
    text: String,
    line: usize,
}

/// Every fenced block, with the marker comment right above it, if any.
fn blocks(readme: &str) -> Vec<(Option<String>, Block)> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(lang) = lines[i].strip_prefix("```") else {
            i += 1;
            continue;
        };
        let start = i;
        let mut body = Vec::new();
        i += 1;
        while i < lines.len() && !lines[i].starts_with("```") {
            body.push(lines[i]);
            i += 1;
        }
        let command = start
            .checked_sub(1)
            .and_then(|p| lines[p].strip_prefix(MARK))
            .map(|c| c.trim_end().trim_end_matches("-->").trim().to_string());
        out.push((
            command,
            Block {
                lang: lang.trim().to_string(),
                text: body.join("\n"),
                line: start + 1,
            },
        ));
        i += 1;
    }
    out
}

/// `shown` matches `real` where the README's `"…"` stands for a left-out
/// value and a `"…"` key for left-out keys (without one, no key may be
/// missing).
fn matches(shown: &Value, real: &Value, at: &str) -> Result<(), String> {
    match (shown, real) {
        (Value::String(s), _) if s == "…" => Ok(()),
        (Value::Object(s), Value::Object(r)) => {
            for (k, v) in s {
                if k == "…" {
                    continue;
                }
                let Some(rv) = r.get(k) else {
                    return Err(format!("{at}.{k}: the program prints no such key"));
                };
                matches(v, rv, &format!("{at}.{k}"))?;
            }
            if !s.contains_key("…")
                && let Some(k) = r.keys().find(|k| !s.contains_key(*k))
            {
                return Err(format!("{at}.{k}: printed, missing in the README"));
            }
            Ok(())
        }
        _ if shown == real => Ok(()),
        _ => Err(format!(
            "{at}: the README shows {shown}, the program prints {real}"
        )),
    }
}

/// Runs a README command with this build's programs first in PATH, in the
/// source tree (where the bundled samples are).
fn run(cmd: &str) -> String {
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = command("bash")
        .args(["-o", "pipefail", "-c", cmd])
        .env("PATH", path)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .run();
    assert!(
        out.status.success() || out.status.code() == Some(141),
        "{cmd}: {:?}\n{}",
        out.status,
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn marked_examples_are_what_the_programs_print() {
    let readme = readme();
    let marked: Vec<(String, Block)> = blocks(&readme)
        .into_iter()
        .filter_map(|(c, b)| c.map(|c| (c, b)))
        .collect();
    assert!(
        marked.len() >= 2,
        "the flow document and the malformed-row warning are checked"
    );
    for (cmd, block) in marked {
        let printed = run(&cmd);
        let at = format!("README.md line {}: {cmd}", block.line);
        if block.lang == "json" {
            let shown: Value = serde_json::from_str(&block.text)
                .unwrap_or_else(|e| panic!("{at}: the block is not JSON: {e}"));
            let first = printed.lines().next().unwrap_or_default();
            let real: Value = serde_json::from_str(first)
                .unwrap_or_else(|e| panic!("{at}: printed no JSON ({e}): {printed}"));
            if let Err(e) = matches(&shown, &real, "") {
                panic!("{at}: {e}\nprinted: {first}");
            }
            // The command the text shows is the one checked.
            let flat = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
            let before = &readme[..readme.find(&cmd).expect("marker")];
            assert!(
                flat(before).contains(&flat(&cmd)),
                "{at}: the text above the block shows another command"
            );
        } else {
            for line in block.text.lines().filter(|l| !l.trim().is_empty()) {
                assert!(
                    printed.lines().any(|p| p == line),
                    "{at}: the README shows\n{line}\nthe program prints\n{printed}"
                );
            }
        }
    }
}

#[test]
fn every_sh_block_can_be_pasted_into_a_shell() {
    let readme = readme();
    let mut checked = 0;
    for (_, block) in blocks(&readme) {
        if block.lang != "sh" {
            continue;
        }
        // A prompt would be pasted too; output lines are comments.
        assert!(
            !block.text.lines().any(|l| l.starts_with("$ ")),
            "README.md line {}: a sh block with a $ prompt cannot be pasted:\n{}",
            block.line,
            block.text
        );
        let out = command("bash").args(["-n", "-c", &block.text]).run();
        assert!(
            out.status.success(),
            "README.md line {}: not valid shell: {}\n{}",
            block.line,
            text(&out.stderr),
            block.text
        );
        checked += 1;
    }
    assert!(checked > 5, "only {checked} sh blocks found");
}

/// The cells of a table row: split at every `|` not escaped as `\|`.
fn cells(row: &str) -> usize {
    let row = row.trim();
    let inner = row
        .strip_prefix('|')
        .and_then(|r| r.strip_suffix('|'))
        .unwrap_or(row);
    let mut n = 1;
    let mut escaped = false;
    for c in inner.chars() {
        match c {
            '\\' => escaped = !escaped,
            '|' if !escaped => n += 1,
            _ => escaped = false,
        }
        if c != '\\' {
            escaped = false;
        }
    }
    n
}

#[test]
fn every_table_row_has_the_cells_of_its_header() {
    let readme = readme();
    let mut in_code = false;
    let mut header: Option<(usize, usize)> = None;
    let mut tables = 0;
    for (i, line) in readme.lines().enumerate() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code || !line.starts_with('|') {
            header = None;
            continue;
        }
        match header {
            None => {
                header = Some((i + 1, cells(line)));
                tables += 1;
            }
            Some((at, n)) => assert_eq!(
                cells(line),
                n,
                "README.md line {}: a row of the table at line {at} has another number of cells:\n{line}",
                i + 1
            ),
        }
    }
    assert!(tables >= 4, "found {tables} tables");
}
