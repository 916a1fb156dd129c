//! One test per kind of bad input (design §3.3, §4.1): what is emitted, what
//! is skipped, and what stderr says about it.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::docs::{self, col, ndjson, parse, tcp_sample, udp_sample, with};
use common::run::program;
use serde_json::Value;

/// Writes a tstat directory with the given log texts.
fn tree(tcp: Option<&[u8]>, udp: Option<&[u8]>) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("2026_01_01_00_00.out");
    std::fs::create_dir(&dir).unwrap();
    if let Some(t) = tcp {
        std::fs::write(dir.join("log_tcp_complete"), t).unwrap();
    }
    if let Some(u) = udp {
        std::fs::write(dir.join("log_udp_complete"), u).unwrap();
    }
    (tmp, dir)
}

struct Run {
    code: i32,
    docs: Vec<Value>,
    stderr: String,
}

fn run_on(path: &Path, extra: &[&str]) -> Run {
    let p = path.display().to_string();
    let mut args = vec!["--bytes", "0", "-S", "s"];
    args.extend_from_slice(extra);
    args.push(&p);
    let out = parse(&args);
    Run {
        code: out.status.code().unwrap(),
        docs: ndjson(&String::from_utf8(out.stdout).unwrap()),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn tcp_log(rows: &[String]) -> Vec<u8> {
    let (h, _) = tcp_sample();
    let mut s = h + "\n";
    for r in rows {
        s.push_str(r);
        s.push('\n');
    }
    s.into_bytes()
}

fn good_row() -> String {
    tcp_sample().1.join(" ")
}

fn udp_log(rows: &[String]) -> Vec<u8> {
    let (h, _) = udp_sample();
    let mut s = h + "\n";
    for r in rows {
        s.push_str(r);
        s.push('\n');
    }
    s.into_bytes()
}

fn values(doc: &Value) -> &serde_json::Map<String, Value> {
    doc["values"].as_object().unwrap()
}

#[test]
fn row_too_short_is_skipped_and_reported() {
    let short: String = good_row()
        .split(' ')
        .take(100)
        .collect::<Vec<_>>()
        .join(" ");
    let (_t, dir) = tree(Some(&tcp_log(&[good_row(), short, good_row()])), None);
    let r = run_on(&dir, &[]);
    assert_eq!(r.code, 0);
    assert_eq!(r.docs.len(), 4, "two good rows, two directions each");
    assert!(
        r.stderr
            .contains("log_tcp_complete: 1 malformed row skipped (first at line 3)"),
        "{}",
        r.stderr
    );
    let v = run_on(&dir, &["--verbose"]);
    assert!(
        v.stderr.contains("line 3: expected 130 fields, got 100"),
        "{}",
        v.stderr
    );
}

#[test]
fn row_too_long_is_skipped() {
    let long = format!("{} extra 1 2", good_row());
    let (_t, dir) = tree(Some(&tcp_log(&[long, good_row()])), None);
    let r = run_on(&dir, &["-v"]);
    assert_eq!(r.code, 0);
    assert_eq!(r.docs.len(), 2);
    assert!(
        r.stderr.contains("line 2: expected 130 fields, got 133"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("1 malformed row skipped (first at line 2)"),
        "{}",
        r.stderr
    );
}

#[test]
fn repeated_header_is_skipped() {
    let (h, _) = tcp_sample();
    let (_t, dir) = tree(Some(&tcp_log(&[good_row(), h, good_row()])), None);
    let r = run_on(&dir, &["-v"]);
    assert_eq!(r.code, 0);
    assert_eq!(r.docs.len(), 4);
    assert!(
        r.stderr.contains("line 3: repeated header line"),
        "{}",
        r.stderr
    );
}

#[test]
fn blank_lines_are_ignored_silently() {
    let (_t, dir) = tree(
        Some(&tcp_log(&[
            good_row(),
            String::new(),
            String::new(),
            good_row(),
        ])),
        None,
    );
    let r = run_on(&dir, &[]);
    assert_eq!(r.code, 0);
    assert_eq!(r.docs.len(), 4);
    assert_eq!(r.stderr, "", "blank lines are not malformed rows");
}

#[test]
fn non_utf8_row_is_skipped() {
    let mut log = tcp_log(&[good_row()]);
    let bad = good_row().replacen("-", "\u{fffd}", 1).into_bytes();
    // Replace the marker's UTF-8 with a lone invalid byte.
    let mut bad_bytes = Vec::new();
    let marker = "\u{fffd}".as_bytes();
    let at = bad
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("row has a '-' field");
    bad_bytes.extend_from_slice(&bad[..at]);
    bad_bytes.push(0xff);
    bad_bytes.extend_from_slice(&bad[at + marker.len()..]);
    log.extend_from_slice(&bad_bytes);
    log.push(b'\n');
    log.extend_from_slice(good_row().as_bytes());
    log.push(b'\n');
    let (_t, dir) = tree(Some(&log), None);
    let r = run_on(&dir, &["-v"]);
    assert_eq!(r.code, 0);
    assert_eq!(r.docs.len(), 4);
    assert!(r.stderr.contains("line 3: not valid UTF-8"), "{}", r.stderr);
}

#[test]
fn truncated_last_line_without_newline_is_skipped() {
    let mut log = tcp_log(&[good_row()]);
    let row = good_row();
    log.extend_from_slice(&row.as_bytes()[..row.len() / 2]);
    let (_t, dir) = tree(Some(&log), None);
    let r = run_on(&dir, &["-v"]);
    assert_eq!(r.code, 0);
    assert_eq!(r.docs.len(), 2);
    assert!(
        r.stderr.contains("line 3: incomplete last line"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("1 malformed row skipped (first at line 3)"),
        "{}",
        r.stderr
    );
}

/// A dash in a shared TCP column drops both directions of that row only.
#[test]
fn dash_in_shared_tcp_columns_drops_the_row() {
    let (h, row) = tcp_sample();
    for name in ["durat", "first", "c_mss"] {
        let bad = with(&h, &row, &[(name, "-")]);
        let (_t, dir) = tree(Some(&tcp_log(&[bad, good_row()])), None);
        let r = run_on(&dir, &["-v"]);
        assert_eq!(r.code, 0, "{name}");
        assert_eq!(r.docs.len(), 2, "{name}: only the good row remains");
        assert!(
            r.stderr.contains("2 flow directions dropped"),
            "{name}: {}",
            r.stderr
        );
        assert!(r.stderr.contains("line 2:"), "{name}: {}", r.stderr);
    }
}

#[test]
fn dash_in_c_bytes_uniq_drops_only_the_in_direction() {
    let (h, row) = tcp_sample();
    let bad = with(&h, &row, &[("c_bytes_uniq", "-")]);
    let (_t, dir) = tree(Some(&tcp_log(&[bad])), None);
    let r = run_on(&dir, &[]);
    assert_eq!(r.code, 0);
    assert_eq!(r.docs.len(), 1);
    assert_eq!(
        r.docs[0]["meta"]["src_ip"],
        Value::from(row[col(&h, "s_ip")].as_str()),
        "the out direction stays"
    );
    assert!(
        r.stderr.contains("1 flow direction dropped"),
        "{}",
        r.stderr
    );
}

#[test]
fn dash_in_udp_c_durat_drops_only_that_direction() {
    let (h, row) = udp_sample();
    let bad = with(&h, &row, &[("c_durat", "-")]);
    let (_t, dir) = tree(None, Some(&udp_log(&[bad])));
    let r = run_on(&dir, &[]);
    assert_eq!(r.code, 0);
    assert_eq!(r.docs.len(), 1);
    assert_eq!(
        r.docs[0]["meta"]["src_ip"],
        Value::from(row[col(&h, "s_ip")].as_str())
    );
    assert_eq!(r.docs[0]["meta"]["protocol"], "udp");
    assert!(
        r.stderr.contains("1 flow direction dropped"),
        "{}",
        r.stderr
    );
}

#[test]
fn zero_durat_gives_integer_zero_rates_and_float_zero_duration() {
    let (h, row) = tcp_sample();
    let zero = with(&h, &row, &[("durat", "0")]);
    let (_t, dir) = tree(Some(&tcp_log(&[zero])), None);
    let r = run_on(&dir, &[]);
    assert_eq!(r.code, 0);
    assert_eq!(r.docs.len(), 2);
    for d in &r.docs {
        let v = values(d);
        assert!(
            v["duration"].is_f64() && v["duration"].as_f64() == Some(0.0),
            "{d}"
        );
        assert!(
            v["bits_per_second"].is_u64() && v["bits_per_second"] == 0,
            "{d}"
        );
        assert!(
            v["packets_per_second"].is_u64() && v["packets_per_second"] == 0,
            "{d}"
        );
    }
}

#[test]
fn zero_pkts_data_with_retransmissions_gives_integer_zero_rate() {
    let (h, row) = tcp_sample();
    let r0 = with(
        &h,
        &row,
        &[
            ("c_pkts_data", "0"),
            ("c_pkts_retx", "5"),
            ("s_pkts_data", "10"),
            ("s_pkts_retx", "3"),
        ],
    );
    let (_t, dir) = tree(Some(&tcp_log(&[r0])), None);
    let r = run_on(&dir, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.docs.len(), 2);
    let rate_in = &values(&r.docs[0])["tcp_rexmit_rate"];
    assert!(rate_in.is_u64() && *rate_in == 0, "{rate_in}");
    let rate_out = &values(&r.docs[1])["tcp_rexmit_rate"];
    assert_eq!(rate_out.as_f64(), Some(0.3));
    assert!(rate_out.is_f64());
}

#[test]
fn header_lacking_c_bytes_uniq_fails_that_file_only() {
    let (h, row) = tcp_sample();
    let h2 = h.replace("c_bytes_uniq:7", "c_bytes_xxx:7");
    let log = format!("{h2}\n{}\n", row.join(" "));
    let (_t, dir) = tree(
        Some(log.as_bytes()),
        Some(&udp_log(&[udp_sample().1.join(" ")])),
    );
    let (_t2, other) = tree(Some(&tcp_log(&[good_row()])), None);
    let p1 = dir.display().to_string();
    let p2 = other.display().to_string();
    let out = parse(&["--bytes", "0", &p1, &p2]);
    assert_eq!(out.status.code(), Some(1));
    let docs = ndjson(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(
        docs.len(),
        4,
        "the UDP log of the same dir and the other dir are still parsed"
    );
    assert_eq!(docs[0]["meta"]["protocol"], "udp");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("tstat-parse: error: ")
            && err.contains("log_tcp_complete: header lacks column c_bytes_uniq"),
        "{err}"
    );
}

#[test]
fn missing_path_is_named() {
    let (_t, dir) = tree(Some(&tcp_log(&[good_row()])), None);
    let p = dir.display().to_string();
    let out = parse(&["--bytes", "0", "/no/such/2026.out", &p]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(ndjson(&String::from_utf8(out.stdout).unwrap()).len(), 2);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("tstat-parse: error: /no/such/2026.out: no such file or directory"),
        "{err}"
    );
}

#[test]
fn log_with_only_a_header_gives_nothing_quietly() {
    let (_t, dir) = tree(Some(&tcp_log(&[])), Some(&udp_log(&[])));
    let r = run_on(&dir, &[]);
    assert_eq!(r.code, 0);
    assert!(r.docs.is_empty());
    assert_eq!(r.stderr, "");
}

#[test]
fn directory_without_logs_is_an_error() {
    let (_t, dir) = tree(None, None);
    let r = run_on(&dir, &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("no log_tcp_complete or log_udp_complete"),
        "{}",
        r.stderr
    );
}

#[test]
fn headerless_log_is_refused() {
    let (_t, dir) = tree(Some(format!("{}\n", good_row()).as_bytes()), None);
    let r = run_on(&dir, &[]);
    assert_eq!(r.code, 1);
    assert!(r.docs.is_empty());
    assert!(
        r.stderr.contains("no header line") && r.stderr.contains("before 2.4"),
        "{}",
        r.stderr
    );
}

#[test]
fn tstat_24_log_is_refused() {
    let h =
        "#c_ip:1 c_port:2 c_bytes_uniq:7 s_ip:45 s_port:46 durat:89 first:90 last:91 first_abs:98";
    let (_t, dir) = tree(Some(format!("{h}\n").as_bytes()), None);
    let r = run_on(&dir, &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("Tstat 2.4") && r.stderr.contains("not supported"),
        "{}",
        r.stderr
    );
}

/// `#03#` logs (Core+E2E+Layer7, 82 columns) lack the Options block: its
/// fields are null, tcp_mss and tcp_sack_cnt included, the rest is computed.
#[test]
fn layout_03_gives_nulls_for_missing_columns() {
    let (h, row) = tcp_sample();
    let names: Vec<&str> = h.split(' ').collect();
    // Drop P2P (59-64) and Options (65-110) of the 130-column layout.
    let keep: Vec<usize> = (0..names.len())
        .filter(|&i| !(58..110).contains(&i))
        .collect();
    let h03: Vec<String> = keep
        .iter()
        .enumerate()
        .map(|(n, &i)| {
            let name = names[i]
                .rsplit('#')
                .next()
                .unwrap()
                .split(':')
                .next()
                .unwrap();
            if n == 0 {
                format!("#03#{name}:1")
            } else {
                format!("{name}:{}", n + 1)
            }
        })
        .collect();
    let r03: Vec<&str> = keep.iter().map(|&i| row[i].as_str()).collect();
    assert_eq!(h03.len(), 78);
    let log = format!("{}\n{}\n", h03.join(" "), r03.join(" "));
    let (_t, dir) = tree(Some(log.as_bytes()), None);
    let r = run_on(&dir, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.docs.len(), 2);
    let v = values(&r.docs[0]);
    for k in [
        "tcp_mss",
        "tcp_sack_cnt",
        "tcp_window_scale",
        "tcp_cwin_min",
        "tcp_pkts_rto",
        "tcp_initial_cwin",
    ] {
        assert!(v[k].is_null(), "{k}: {}", v[k]);
    }
    assert!(
        v["tcp_rtt_avg"].is_number() && v["num_bits"].is_u64() && v["tcp_rexmit_bytes"].is_u64()
    );
    // Every other value equals the full layout's.
    let full_dir = tree(Some(&tcp_log(&[good_row()])), None);
    let full = run_on(&full_dir.1, &[]);
    let fv = values(&full.docs[0]);
    for (k, val) in v {
        if !val.is_null() {
            assert_eq!(val, &fv[k], "{k}");
        }
    }
    assert_eq!(r.docs[0]["meta"], full.docs[0]["meta"]);
}

#[test]
fn single_file_and_stdin_with_protocol() {
    let (_t, dir) = tree(None, Some(&udp_log(&[udp_sample().1.join(" ")])));
    let f = dir.join("log_udp_complete");
    let r = run_on(&f, &[]);
    assert_eq!((r.code, r.docs.len()), (0, 2));
    let renamed = dir.join("udp.log");
    std::fs::copy(&f, &renamed).unwrap();
    let r = run_on(&renamed, &[]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("--protocol"), "{}", r.stderr);
    let r = run_on(&renamed, &["--protocol", "udp"]);
    assert_eq!((r.code, r.docs.len()), (0, 2));
    let input = std::fs::read(&f).unwrap();
    let out = program("tstat-parse")
        .args(["-b", "0", "--protocol", "udp", "-"])
        .stdin(input.clone())
        .run();
    assert!(out.status.success());
    assert_eq!(ndjson(&String::from_utf8(out.stdout).unwrap()).len(), 2);
    let out = program("tstat-parse")
        .args(["-b", "0", "-"])
        .stdin(input)
        .run();
    assert_eq!(out.status.code(), Some(2), "stdin needs --protocol");
}

#[test]
fn truncated_gzip_keeps_complete_rows_and_fails() {
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;
    let rows: Vec<String> = (0..2000).map(|_| good_row()).collect();
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(&tcp_log(&rows)).unwrap();
    let gz = enc.finish().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("2026_01_01_00_00.out");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("log_tcp_complete.gz"), &gz[..gz.len() * 2 / 3]).unwrap();
    let r = run_on(&dir, &[]);
    assert_eq!(r.code, 1);
    assert!(
        !r.docs.is_empty() && r.docs.len() < 4000 && r.docs.len().is_multiple_of(2),
        "{}",
        r.docs.len()
    );
    assert!(
        r.stderr
            .contains("log_tcp_complete.gz: compressed stream ends early"),
        "{}",
        r.stderr
    );
}

/// `tstat-parse` with extra environment variables.
fn parse_env(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    program("tstat-parse")
        .args(args)
        .envs(env.iter().copied())
        .run()
}

/// A TCP log several read chunks long, so worker threads take part.
fn large_tcp_log(rows: usize) -> Vec<u8> {
    let log = tcp_log(&vec![good_row(); rows]);
    assert!(log.len() > 4 * 256 * 1024, "{} bytes", log.len());
    log
}

/// A worker thread that panics fails its file (exit 1, the file named),
/// instead of the run ending with exit 0 and fewer rows.
#[cfg(debug_assertions)]
#[test]
fn failing_parser_worker_is_an_error_for_its_file() {
    let (_t, dir) = tree(Some(&large_tcp_log(3000)), None);
    let p = dir.display().to_string();
    let args = ["--bytes", "0", "-S", "s", &p];
    let ok = parse_env(&args, &[("TSTAT_PARSE_THREADS", "2")]);
    assert_eq!(ok.status.code(), Some(0));
    assert_eq!(ndjson(&String::from_utf8(ok.stdout).unwrap()).len(), 6000);

    let out = parse_env(
        &args,
        &[
            ("TSTAT_PARSE_THREADS", "2"),
            ("TSTAT_TEST_WORKER_PANIC", "1"),
        ],
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "tstat-parse: error: {p}/log_tcp_complete: a parser thread failed: panicked: forced failure"
        )),
        "{err}"
    );
    assert!(ndjson(&String::from_utf8(out.stdout).unwrap()).len() < 6000);
}

#[test]
fn many_forced_workers_give_the_same_output() {
    let (_t, dir) = tree(Some(&large_tcp_log(3000)), None);
    let p = dir.display().to_string();
    let args = ["--bytes", "0", "-S", "s", &p];
    let one = parse_env(&args, &[("TSTAT_PARSE_THREADS", "1")]);
    assert_eq!(one.status.code(), Some(0));
    for n in ["2", "16", "64"] {
        let many = parse_env(&args, &[("TSTAT_PARSE_THREADS", n)]);
        assert_eq!(many.status.code(), Some(0), "{n}");
        assert!(many.stdout == one.stdout, "{n} threads: output differs");
    }
    for bad in ["0", "x", "-1"] {
        let out = parse_env(&args, &[("TSTAT_PARSE_THREADS", bad)]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains("TSTAT_PARSE_THREADS"), "{err}");
    }
}

/// The rows read before a `.gz` ends early still count: the end-of-file
/// summary of the part that was read is printed with the error.
#[test]
fn truncated_gzip_still_reports_the_rows_before_the_cut() {
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;
    let mut rows: Vec<String> = vec![good_row(), "short row".into()];
    rows.extend((0..2000).map(|_| good_row()));
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(&tcp_log(&rows)).unwrap();
    let gz = enc.finish().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("2026_01_01_00_00.out");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("log_tcp_complete.gz"), &gz[..gz.len() / 2]).unwrap();
    for threads in ["1", "2"] {
        let p = dir.display().to_string();
        let out = parse_env(
            &["--bytes", "0", "-S", "s", &p],
            &[("TSTAT_PARSE_THREADS", threads)],
        );
        assert_eq!(out.status.code(), Some(1));
        let docs = ndjson(&String::from_utf8(out.stdout).unwrap()).len();
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.contains(&format!(
                "log_tcp_complete.gz: compressed stream ends early (Tstat may still be writing it); kept the {} complete rows",
                docs / 2
            )),
            "{err}"
        );
        assert!(
            err.contains(
                "tstat-parse: warning: {p}/log_tcp_complete.gz: 1 malformed row skipped (first at line 3)"
                    .replace("{p}", &p)
                    .as_str()
            ),
            "{threads} threads: {err}"
        );
    }
}

/// Runs tstat-parse on `paths`, failing the test if it does not end within
/// a minute (a FIFO opened for reading would block forever).
fn parse_with_deadline(paths: &[&Path]) -> Run {
    let out = program("tstat-parse")
        .args(["--bytes", "0", "-S", "s"])
        .args(paths)
        .deadline(Duration::from_secs(60))
        .run();
    Run {
        code: out.status.code().unwrap(),
        docs: ndjson(&String::from_utf8(out.stdout).unwrap()),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// A log name that is not a regular file fails its directory (exit 1, the
/// file and what it is named) instead of being taken as absent; other
/// directories are still parsed, and nothing blocks on a FIFO.
#[test]
fn log_that_is_not_a_regular_file_fails_its_directory() {
    use std::os::unix::fs::symlink;
    let outside = tempfile::tempdir().unwrap();
    let stray = outside
        .path()
        .canonicalize()
        .unwrap()
        .join("log_tcp_complete");
    std::fs::write(&stray, tcp_log(&[good_row()])).unwrap();
    type Make<'a> = Box<dyn Fn(&Path) + 'a>;
    let cases: Vec<(&str, Make, &str)> = vec![
        (
            "fifo",
            Box::new(|p| {
                let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
            }),
            "is a FIFO (named pipe), not a regular file",
        ),
        (
            "directory",
            Box::new(|p| std::fs::create_dir(p).unwrap()),
            "is a directory, not a regular file",
        ),
        (
            "socket",
            Box::new(|p| {
                std::mem::forget(std::os::unix::net::UnixListener::bind(p).unwrap());
            }),
            "is a socket, not a regular file",
        ),
        (
            "device",
            Box::new(|p| symlink("/dev/null", p).unwrap()),
            "is a symbolic link to a character device, not a regular file",
        ),
        (
            "dangling",
            Box::new(|p| symlink(p.with_file_name("nothing"), p).unwrap()),
            "is a symbolic link whose target does not exist, not a regular file",
        ),
        (
            "outside",
            Box::new(|p| symlink(&stray, p).unwrap()),
            "is a symbolic link to {stray}, outside its directory; refusing to follow it",
        ),
    ];
    let (_g, good) = tree(Some(&tcp_log(&[good_row()])), None);
    for (what, make, msg) in cases {
        let (_t, dir) = tree(None, Some(&udp_log(&[udp_sample().1.join(" ")])));
        let log = dir.join("log_tcp_complete");
        make(&log);
        // The plain name wins over a valid .gz beside it: still an error.
        std::fs::write(dir.join("log_tcp_complete.gz"), b"").unwrap();
        let r = parse_with_deadline(&[&dir, &good]);
        assert_eq!(r.code, 1, "{what}: {}", r.stderr);
        assert!(
            r.stderr.contains(&format!(
                "tstat-parse: error: {}: {}",
                log.display(),
                msg.replace("{stray}", &stray.display().to_string())
            )),
            "{what}: {}",
            r.stderr
        );
        assert_eq!(r.docs.len(), 2, "{what}: only the other directory's flows");
    }
}

/// A log that is a symbolic link inside its own directory is followed.
#[test]
fn log_linked_inside_its_directory_is_read() {
    let (_t, dir) = tree(None, None);
    std::fs::create_dir(dir.join("keep")).unwrap();
    std::fs::write(dir.join("keep/tcp"), tcp_log(&[good_row()])).unwrap();
    std::os::unix::fs::symlink("keep/tcp", dir.join("log_tcp_complete")).unwrap();
    let r = parse_with_deadline(&[&dir]);
    assert_eq!((r.code, r.docs.len()), (0, 2), "{}", r.stderr);
}

/// A value whose result does not fit an `i128` (start, end) drops that
/// direction and counts it; it never wraps or saturates into a document.
#[test]
fn overflowing_values_drop_the_direction_and_are_counted() {
    let (h, row) = udp_sample();
    let huge_start = with(&h, &row, &[("c_first_abs", "1e300")]);
    let huge_end = with(
        &h,
        &row,
        &[("s_first_abs", "1.7e41"), ("s_durat", &"9".repeat(38))],
    );
    let (_t, dir) = tree(None, Some(&udp_log(&[huge_start, huge_end])));
    let r = run_on(&dir, &["-v"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.docs.len(), 2, "the other direction of each row stays");
    assert_eq!(
        r.docs[0]["meta"]["src_ip"],
        Value::from(row[col(&h, "s_ip")].as_str())
    );
    assert_eq!(
        r.docs[1]["meta"]["src_ip"],
        Value::from(row[col(&h, "c_ip")].as_str())
    );
    assert!(
        r.stderr.contains("2 flow directions dropped"),
        "{}",
        r.stderr
    );

    let (h, row) = tcp_sample();
    let bad = with(&h, &row, &[("first", "1e300")]);
    let (_t, dir) = tree(Some(&tcp_log(&[bad, good_row()])), None);
    let r = run_on(&dir, &[]);
    assert_eq!(r.code, 0);
    assert_eq!(r.docs.len(), 2, "only the good row");
    assert!(
        r.stderr.contains(
            "2 flow directions dropped (values that cannot be computed) (first at line 2)"
        ),
        "{}",
        r.stderr
    );
}

/// CRLF line ends (header included) give the same documents as LF.
#[test]
fn crlf_logs_parse_like_lf_logs() {
    let tcp = tcp_log(&[good_row(), good_row()]);
    let udp = udp_log(&[udp_sample().1.join(" ")]);
    let crlf = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap().replace('\n', "\r\n");
    let (_t1, lf_dir) = tree(Some(&tcp), Some(&udp));
    let (_t2, crlf_dir) = tree(Some(crlf(&tcp).as_bytes()), Some(crlf(&udp).as_bytes()));
    let lf = run_on(&lf_dir, &[]);
    let cr = run_on(&crlf_dir, &[]);
    assert_eq!((cr.code, cr.stderr.as_str()), (0, ""));
    assert_eq!(cr.docs.len(), 6);
    for (a, b) in lf.docs.iter().zip(&cr.docs) {
        assert!(docs::same(a, b), "{a}\n{b}");
    }
    // A log whose last column is used: `20\r` must not become a string.
    let small = "#c_ip:1 c_port:2 c_first_abs:3 c_durat:4 c_bytes_all:5 c_pkts_all:6 \
                 s_ip:7 s_port:8 s_first_abs:9 s_durat:10 s_bytes_all:11 s_pkts_all:12\r\n\
                 10.0.0.1 5353 1000000.5 2.5 100 2 10.0.0.2 53 1000001.0 1.0 300 20\r\n";
    let (_t3, dir) = tree(None, Some(small.as_bytes()));
    let r = run_on(&dir, &[]);
    assert_eq!((r.code, r.stderr.as_str(), r.docs.len()), (0, "", 2));
    assert_eq!(r.docs[1]["values"]["num_packets"], 20);
}

/// A log whose only line is longer than 1 MiB has no header, like a log
/// whose only line is short garbage: exit 1, "no header".
#[test]
fn only_line_longer_than_1_mib_is_no_header() {
    let short = b"garbage\n".to_vec();
    let mut long = vec![b'x'; 3 << 20];
    long.push(b'\n');
    let mut long_hash = long.clone();
    long_hash[0] = b'#';
    let long_no_newline = vec![b'x'; 3 << 20];
    for (what, log, msg) in [
        (
            "short",
            short,
            "no header line: the first line does not start with '#'",
        ),
        (
            "long",
            long,
            "no header line: the first line does not start with '#'",
        ),
        (
            "long without newline",
            long_no_newline,
            "no header line: the first line does not start with '#'",
        ),
        (
            "long '#' line",
            long_hash,
            "the first line is longer than 1 MiB, so it is no Tstat header",
        ),
    ] {
        let (_t, dir) = tree(Some(&log), None);
        let r = run_on(&dir, &[]);
        assert_eq!(r.code, 1, "{what}: {}", r.stderr);
        assert!(r.docs.is_empty());
        assert!(
            r.stderr.contains(&format!("log_tcp_complete: {msg}")),
            "{what}: {}",
            r.stderr
        );
    }
}
