//! The filters composed as an operator runs them: find | parse | chunk, a
//! closed stdout, and the --bytes flag table.

mod common;

use std::io::Read;
use std::process::Stdio;

use common::docs::{self, fixtures, ndjson, parse, same};
use common::run::{RUN_DEADLINE, bin, command, program, text};
use common::trees::copy_fixture;
use serde_json::Value;

const PARSE: &str = "tstat-parse";
const CHUNK: &str = "tstat-chunk";
const FIND: &str = "tstat-find";

/// Where program `name` is, for a shell command line.
fn sh(name: &str) -> String {
    bin(name).display().to_string()
}

/// A copy of the synthetic golden tree in a temp dir.
fn synthetic_tree() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for d in ["2026_03_01_00_00.out", "2026_03_01_01_00.out"] {
        copy_fixture(&format!("synthetic/{d}"), &tmp.path().join(d), None);
    }
    tmp
}

#[test]
fn find_parse_chunk_gives_bounded_arrays_equal_to_plain_parse() {
    let tree = synthetic_tree();
    let root = tree.path().display().to_string();
    let line = format!(
        "set -o pipefail; '{}' --all '{root}' | '{}' --bytes 0 -S s | '{}'",
        sh(FIND),
        sh(PARSE),
        sh(CHUNK)
    );
    let out = command("bash").args(["-c", &line]).run();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let arrays = ndjson(&String::from_utf8(out.stdout).unwrap());
    let mut flat = Vec::new();
    for a in &arrays {
        let a = a.as_array().expect("each line is an array");
        assert!(!a.is_empty() && a.len() <= 100, "{}", a.len());
        flat.extend(a.iter().cloned());
    }
    assert!(
        arrays[..arrays.len() - 1]
            .iter()
            .all(|a| a.as_array().unwrap().len() == 100)
    );
    let d0 = tree
        .path()
        .join("2026_03_01_00_00.out")
        .display()
        .to_string();
    let d1 = tree
        .path()
        .join("2026_03_01_01_00.out")
        .display()
        .to_string();
    let plain = parse(&["--bytes", "0", "-S", "s", &d0, &d1]);
    let plain = ndjson(&String::from_utf8(plain.stdout).unwrap());
    assert_eq!(flat.len(), plain.len());
    assert!(flat.iter().zip(&plain).all(|(a, b)| same(a, b)));
    let gold = std::fs::read_to_string(
        fixtures().join("synthetic/expected.bytes0.sensor-s.instance-1.ndjson"),
    )
    .unwrap();
    assert_eq!(plain.len(), gold.lines().count());
}

#[test]
fn closed_stdout_is_a_quiet_success() {
    let d = fixtures()
        .join("synthetic/2026_03_01_00_00.out")
        .display()
        .to_string();
    let line = format!(
        "'{}' --bytes 0 '{d}' | head -n 1; exit ${{PIPESTATUS[0]}}",
        sh(PARSE)
    );
    let out = command("bash").args(["-c", &line]).run();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);
    // The file has malformed rows, but a reader that left early hears nothing.
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn chunk_closed_stdout_is_quiet() {
    let mut run = program(CHUNK)
        .args(["--size", "1"])
        .stdin_pipe()
        .stdout(Stdio::piped())
        .spawn();
    let mut stdout = run.take_stdout();
    let mut first = [0u8; 1];
    let mut stdin = run.stdin();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        for _ in 0..200_000 {
            if stdin.write_all(b"{\"a\":1}\n").is_err() {
                break;
            }
        }
    });
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let out = run.wait(RUN_DEADLINE);
    writer.join().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn chunk_sizes_and_byte_limit() {
    let input: String = (0..250).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    let out = program(CHUNK).stdin(input.as_bytes()).run();
    assert!(out.status.success());
    let arrays = ndjson(&String::from_utf8(out.stdout).unwrap());
    let lens: Vec<usize> = arrays.iter().map(|a| a.as_array().unwrap().len()).collect();
    assert_eq!(lens, [100, 100, 50]);
    let out = program(CHUNK)
        .args(["--size", "7", "--max-bytes", "40"])
        .stdin(input.as_bytes())
        .run();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut n = 0;
    for line in text.lines() {
        assert!(line.len() <= 40, "{line}");
        let a: Value = serde_json::from_str(line).unwrap();
        let a = a.as_array().unwrap();
        assert!(a.len() <= 7);
        for v in a {
            assert_eq!(v["i"], n);
            n += 1;
        }
    }
    assert_eq!(n, 250);
    let out = program(CHUNK).stdin("").run();
    assert!(out.status.success() && out.stdout.is_empty());
}

#[test]
fn chunk_rejects_non_objects_naming_the_line() {
    for (bad, why) in [
        ("[1,2]", "not a JSON object"),
        ("{\"a\":", "invalid JSON"),
        ("", "empty line"),
    ] {
        let input = format!("{{\"a\":1}}\n{{\"a\":2}}\n{bad}\n{{\"a\":3}}\n");
        let out = program(CHUNK)
            .args(["--size", "1"])
            .stdin(input.as_bytes())
            .run();
        assert_eq!(out.status.code(), Some(1), "{bad}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.starts_with("tstat-chunk: error: stdin: line 3: ") && err.contains(why),
            "{err}"
        );
        // What came before stays written.
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "[{\"a\":1}]\n[{\"a\":2}]\n"
        );
    }
}

/// The byte-count table of design §3.5, through the real flag.
#[test]
fn bytes_flag_table() {
    let tmp = tempfile::tempdir().unwrap();
    let (h, row) = docs::tcp_sample();
    let dir = tmp.path().join("x.out");
    std::fs::create_dir(&dir).unwrap();
    // One flow of exactly 25e9 bytes in, 10 GiB out.
    let r = docs::with(
        &h,
        &row,
        &[
            ("c_bytes_uniq", "25000000000"),
            ("s_bytes_uniq", "10737418240"),
        ],
    );
    std::fs::write(dir.join("log_tcp_complete"), format!("{h}\n{r}\n")).unwrap();
    let d = dir.display().to_string();
    let kept = |v: &str| -> usize {
        let out = parse(&["--bytes", v, &d]);
        assert!(
            out.status.success(),
            "{v}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ndjson(&String::from_utf8(out.stdout).unwrap()).len()
    };
    assert_eq!(kept("0"), 2);
    assert_eq!(kept("1000"), 2);
    for v in ["25Gb", "25G", "25gb"] {
        assert_eq!(
            kept(v),
            1,
            "{v} = 25,000,000,000 keeps only the 25 GB direction"
        );
    }
    assert_eq!(kept("1.5G"), 2);
    assert_eq!(
        kept("10GiB"),
        2,
        "10 GiB = 10737418240 keeps the out direction too"
    );
    assert_eq!(kept("10.1GiB"), 1);
    assert_eq!(kept("25000000001"), 0);
    let default = parse(&[&d]);
    assert_eq!(
        ndjson(&String::from_utf8(default.stdout).unwrap()).len(),
        1,
        "default is 25Gb"
    );
    for bad in ["-5", "12X", ""] {
        let out = parse(&["--bytes", bad, &d]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.starts_with("tstat-parse: error: ") && err.contains(&format!("'{bad}'")),
            "{err}"
        );
        assert!(out.stdout.is_empty());
    }
    let out = parse(&["--bytes", "1G", "-T", "5", &d]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("cannot be used with")
    );
    assert_eq!(kept_t(&d, "25000"), 1);
}

fn kept_t(d: &str, mb: &str) -> usize {
    let out = parse(&["-T", mb, d]);
    assert!(out.status.success());
    ndjson(&String::from_utf8(out.stdout).unwrap()).len()
}

#[test]
fn directories_from_stdin() {
    let tree = synthetic_tree();
    let list = format!(
        "{}\n\n{}\n",
        tree.path().join("2026_03_01_00_00.out").display(),
        tree.path().join("2026_03_01_01_00.out").display()
    );
    let out = program(PARSE)
        .args(["--bytes", "0", "-S", "s", "-I", "1"])
        .stdin(list.as_bytes())
        .run();
    assert!(out.status.success());
    let want = std::fs::read_to_string(
        fixtures().join("synthetic/expected.bytes0.sensor-s.instance-1.ndjson"),
    )
    .unwrap();
    docs::assert_same_docs(&String::from_utf8(out.stdout).unwrap(), &want, "stdin list");
}

#[test]
fn instance_is_a_string_only_when_given() {
    let d = fixtures()
        .join("netsage/parse_data.out")
        .display()
        .to_string();
    let with_i = ndjson(&String::from_utf8(parse(&["-b", "0", "-I", "7", &d]).stdout).unwrap());
    assert_eq!(with_i[0]["meta"]["instance_id"], Value::from("7"));
    let without = ndjson(&String::from_utf8(parse(&["-b", "0", &d]).stdout).unwrap());
    assert!(without[0]["meta"]["instance_id"].is_u64() && without[0]["meta"]["instance_id"] == 0);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(without[0]["meta"]["sensor_id"], Value::from(host.trim()));
}

/// `tstat-find ROOT | tstat-parse` with directory names that are not UTF-8
/// (byte 0xff) or hold a newline: paths pass as bytes, and `-0` on both
/// sides carries any name. The output equals tstat-parse given the same
/// directories as arguments.
#[test]
fn find_parse_pipeline_carries_any_directory_name() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let copy = |src: &str, dst: &std::path::Path| {
        copy_fixture(&format!("synthetic/{src}"), dst, None);
    };
    let eth = root.join(OsStr::from_bytes(b"eth\xff"));
    copy("2026_03_01_00_00.out", &eth.join("2026_03_01_00_00.out"));
    copy(
        "2026_03_01_01_00.out",
        &root.join(OsStr::from_bytes(b"2026_03_01_01_00\xff.out")),
    );
    let newline = root.join("line\nbreak");
    let root_s = root.display().to_string();
    let run_pipe = |find_args: &str, parse_args: &str| {
        let line = format!(
            "set -o pipefail; '{}' --all {find_args} '{root_s}' | '{}' --bytes 0 -S s {parse_args}",
            sh(FIND),
            sh(PARSE)
        );
        command("bash").args(["-c", &line]).run()
    };
    // What tstat-find lists, NUL-separated, given back as arguments.
    let listed = |root: &str| -> Vec<std::ffi::OsString> {
        let out = program(FIND).args(["--all", "-0", root]).run();
        assert!(out.status.success());
        out.stdout
            .split(|&b| b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| OsStr::from_bytes(p).to_os_string())
            .collect()
    };
    let by_args = |dirs: &[std::ffi::OsString]| {
        let out = program(PARSE)
            .args(["--bytes", "0", "-S", "s"])
            .args(dirs)
            .run();
        assert!(out.status.success());
        out.stdout
    };

    let dirs = listed(&root_s);
    assert_eq!(dirs.len(), 2, "{dirs:?}");
    let expected = by_args(&dirs);
    assert!(expected.len() > 1000);
    for (find_args, parse_args) in [("", ""), ("-0", "-0")] {
        let out = run_pipe(find_args, parse_args);
        assert!(
            out.status.success(),
            "{find_args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout == expected, "{find_args}: output differs");
    }

    // A newline in a name needs -0 on both sides.
    copy(
        "2026_03_01_00_00.out",
        &newline.join("2026_03_01_02_00.out"),
    );
    let dirs = listed(&root_s);
    assert_eq!(dirs.len(), 3, "{dirs:?}");
    let out = run_pipe("-0", "-0");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == by_args(&dirs), "-0: output differs");
}
