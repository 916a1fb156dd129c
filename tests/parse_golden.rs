//! Every golden file of the original implementation is reproduced by the
//! tstat-parse process, line by line, with equal number kinds and key order.

mod common;

use common::docs::{assert_same_docs, fixtures, parse};

fn check(expected: &str, dirs: &[&str], flags: &[&str]) {
    let root = fixtures();
    let paths: Vec<String> = dirs
        .iter()
        .map(|d| root.join(d).display().to_string())
        .collect();
    let mut args: Vec<&str> = flags.to_vec();
    args.extend(paths.iter().map(String::as_str));
    let out = parse(&args);
    assert!(
        out.status.success(),
        "{expected}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = std::fs::read_to_string(root.join(expected)).unwrap();
    assert_same_docs(&String::from_utf8(out.stdout).unwrap(), &want, expected);
}

const SYNTH: &[&str] = &[
    "synthetic/2026_03_01_00_00.out",
    "synthetic/2026_03_01_01_00.out",
];

#[test]
fn golden_synthetic_bytes0() {
    check(
        "synthetic/expected.bytes0.sensor-s.instance-1.ndjson",
        SYNTH,
        &["--bytes", "0", "-S", "s", "-I", "1"],
    );
}

#[test]
fn golden_synthetic_legacy_udp() {
    check(
        "synthetic/expected.legacy-udp.bytes0.sensor-s.instance-1.ndjson",
        SYNTH,
        &[
            "--bytes",
            "0",
            "-S",
            "s",
            "-I",
            "1",
            "--legacy-udp-duration",
        ],
    );
}

#[test]
fn golden_synthetic_bytes_1gb() {
    check(
        "synthetic/expected.bytes1GB.sensor-s.ndjson",
        SYNTH,
        &["--bytes", "1GB", "-S", "s"],
    );
}

#[test]
fn golden_synthetic_threshold_mb_equals_bytes() {
    check(
        "synthetic/expected.bytes1GB.sensor-s.ndjson",
        SYNTH,
        &["-T", "1000", "-S", "s"],
    );
}

#[test]
fn golden_real_33() {
    check(
        "real-3.3/expected.bytes0.sensor-s.instance-1.ndjson",
        &["real-3.3/2024_06_08_09_10.out"],
        &["--bytes", "0", "--sensor", "s", "--instance", "1"],
    );
}

#[test]
fn golden_real_33_legacy_udp() {
    check(
        "real-3.3/expected.legacy-udp.bytes0.sensor-s.instance-1.ndjson",
        &["real-3.3/2024_06_08_09_10.out"],
        &[
            "--bytes",
            "0",
            "--sensor",
            "s",
            "--instance",
            "1",
            "--legacy-udp-duration",
        ],
    );
}

#[test]
fn golden_netsage_30() {
    check(
        "netsage/expected.bytes0.sensor-s.instance-1.ndjson",
        &["netsage/parse_data.out"],
        &["-b", "0", "-S", "s", "-I", "1"],
    );
    check(
        "netsage/expected.bytes0.sensor-s.ndjson",
        &["netsage/parse_data.out"],
        &["-b", "0", "-S", "s"],
    );
}

#[test]
fn golden_from_gzip_logs() {
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let mut dirs = Vec::new();
    for d in SYNTH {
        let src = fixtures().join(d);
        let dst = tmp.path().join(src.file_name().unwrap());
        std::fs::create_dir(&dst).unwrap();
        for log in ["log_tcp_complete", "log_udp_complete"] {
            let data = std::fs::read(src.join(log)).unwrap();
            // Two gzip members, as Tstat's gzopen(…, "a") writes after a restart.
            let (a, b) = data.split_at(data.len() / 2);
            let mut f = std::fs::File::create(dst.join(format!("{log}.gz"))).unwrap();
            for part in [a, b] {
                let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
                enc.write_all(part).unwrap();
                f.write_all(&enc.finish().unwrap()).unwrap();
            }
        }
        dirs.push(dst.display().to_string());
    }
    let mut args = vec!["--bytes", "0", "-S", "s", "-I", "1"];
    args.extend(dirs.iter().map(String::as_str));
    let out = parse(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = std::fs::read_to_string(
        fixtures().join("synthetic/expected.bytes0.sensor-s.instance-1.ndjson"),
    )
    .unwrap();
    assert_same_docs(&String::from_utf8(out.stdout).unwrap(), &want, "gzip");
}
