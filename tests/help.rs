//! What a newcomer sees first: every program's --help has examples, exit
//! statuses and a pointer to config.ini.example; the filters typed alone on
//! a terminal say they are reading stdin instead of waiting in silence; and
//! `tstat-parse ROOT` on a tree root suggests `tstat-find --all ROOT`.

mod common;
#[path = "support/pty.rs"]
mod pty;

use std::fs;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use common::run::{PROGRAMS, program, text, wait_until};

const PARSE: &str = "tstat-parse";
const CHUNK: &str = "tstat-chunk";

#[test]
fn every_help_has_examples_exit_statuses_and_the_config_pointer() {
    for prog in PROGRAMS {
        for flag in ["-h", "--help"] {
            let out = program(prog).arg(flag).run();
            assert!(out.status.success(), "{prog} {flag}: {:?}", out.status);
            let text = text(&out.stdout);
            for want in ["Examples:", "Exit status:", "config.ini.example"] {
                assert!(text.contains(want), "{prog} {flag} lacks {want:?}:\n{text}");
            }
        }
    }
}

/// The lines of a `--help` text's "Examples:" section, without their indent.
fn example_lines(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Examples:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .collect()
}

#[test]
fn every_help_example_can_be_pasted_into_a_shell() {
    for prog in PROGRAMS {
        let help = text(&program(prog).arg("--help").run().stdout);
        let examples = example_lines(&help);
        assert!(
            !examples.is_empty(),
            "{prog} --help has no examples:\n{help}"
        );
        for line in examples {
            // What follows a command is a comment, not words the shell would
            // take as arguments (aligned columns: several spaces, then text).
            if let Some(gap) = line.find("   ") {
                let rest = line[gap..].trim_start();
                assert!(
                    rest.starts_with("# "),
                    "{prog} --help: the text after the command is not a # comment: {line:?}"
                );
            }
            let out = common::run::command("bash").args(["-n", "-c", &line]).run();
            assert!(
                out.status.success(),
                "{prog} --help: {line:?} is not valid shell: {}",
                text(&out.stderr)
            );
        }
    }
}

#[test]
fn no_help_suggests_publishing_a_message_as_a_check() {
    for prog in PROGRAMS {
        let help = text(&program(prog).arg("--help").run().stdout);
        assert!(
            !help.contains("echo '[]'"),
            "{prog} --help: an empty array piped into tstat-rabbit is published, not a check"
        );
    }
}

#[test]
fn parse_on_a_tree_root_suggests_tstat_find() {
    let tree = tempfile::tempdir().unwrap();
    for d in ["2026_03_01_00_00.out", "2026_03_01_01_00.out"] {
        let dir = tree.path().join("sensor").join(d);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("log_tcp_complete"), "").unwrap();
    }
    let root = tree.path().display().to_string();
    let out = program(PARSE).arg(&root).run();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "tstat-parse: hint: {root} holds 2 tstat directories below it; to parse them all: \
             tstat-find --all {root} | tstat-parse"
        )),
        "{err}"
    );

    // A directory with nothing of Tstat's below it gets the error only.
    let empty = tempfile::tempdir().unwrap();
    let out = program(PARSE).arg(empty.path()).run();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("no log_tcp_complete or log_udp_complete"),
        "{err}"
    );
    assert!(!err.contains("hint"), "{err}");
}

/// Runs `prog` with a pseudo-terminal as stdin, waits for its first stderr
/// line, then types Ctrl-D; returns that line and the exit status.
fn on_a_terminal(prog: &str) -> (String, Option<i32>) {
    let (mut master, slave) = pty::open();
    let run = program(prog)
        .stdin_from(slave)
        .stdout(Stdio::null())
        .spawn();
    wait_until(
        &format!("{prog} to print a line on a terminal"),
        Duration::from_secs(30),
        || run.stderr_so_far().contains('\n'),
    );
    let err = run.stderr_so_far();
    let first = err
        .split_inclusive('\n')
        .next()
        .unwrap_or_default()
        .to_string();
    // Ctrl-D at the start of a line: end of input for the program.
    master.write_all(&[4]).expect("type Ctrl-D");
    let out = run.wait(Duration::from_secs(30));
    drop(master);
    (first, out.status.code())
}

#[test]
fn filters_typed_alone_on_a_terminal_say_they_read_stdin() {
    let (line, code) = on_a_terminal(PARSE);
    assert!(
        line.starts_with("tstat-parse: reading tstat directory paths from stdin"),
        "{line}"
    );
    assert!(line.contains("tstat-find ROOT | tstat-parse"), "{line}");
    assert_eq!(code, Some(0), "an empty stdin is not an error");

    let (line, code) = on_a_terminal(CHUNK);
    assert!(
        line.starts_with("tstat-chunk: reading NDJSON flow documents from stdin"),
        "{line}"
    );
    assert_eq!(code, Some(0));
}

#[test]
fn filters_on_a_pipe_print_no_hint() {
    for prog in [PARSE, CHUNK] {
        let out = program(prog).run();
        assert!(out.status.success(), "{prog}: {:?}", out.status);
        assert!(out.stderr.is_empty(), "{prog}: {}", text(&out.stderr));
    }
}
