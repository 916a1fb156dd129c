//! Integration tests for `tstat-cull`: the real binary on fixture trees made
//! in temporary directories, with `.processed` modification times set instead
//! of sleeping.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use common::run::{Cmd, program};
use common::trees::{HOUR, ago, set_mtime};
use tempfile::TempDir;

fn tstat_cull() -> Cmd {
    program("tstat-cull")
}

/// A tstat directory `parent/name` with a log file (and a histogram
/// subdirectory, as Tstat writes).
fn tstat_dir(parent: &Path, name: &str) -> PathBuf {
    let d = parent.join(name);
    fs::create_dir_all(d.join("LAST")).expect("mkdir");
    fs::write(d.join("log_tcp_complete"), b"#c_ip:1\n").expect("write");
    fs::write(d.join("LAST").join("histo"), b"").expect("write");
    d
}

/// Marks `d` processed at time `t`. The log files are left fresh on purpose:
/// only the marker's age may count.
fn processed_at(d: &Path, t: SystemTime) {
    let p = d.join(".processed");
    fs::write(&p, b"processed").expect("write");
    set_mtime(&p, t);
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(args: &[&std::ffi::OsStr]) -> Run {
    let out = tstat_cull().args(args).run();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).expect("utf8"),
        stderr: String::from_utf8(out.stderr).expect("utf8"),
    }
}

#[test]
fn removes_only_processed_directories_older_than_the_ttl() {
    let tmp = TempDir::new().expect("tempdir");
    let r = tmp.path();
    let old = tstat_dir(r, "2024_01_01_00_00.out");
    processed_at(&old, ago(49 * HOUR));
    let nested_old = tstat_dir(&r.join("trace.pcap.out"), "2024_01_01_01_00.out");
    processed_at(&nested_old, ago(100 * HOUR));
    let young = tstat_dir(r, "2024_01_01_02_00.out");
    processed_at(&young, ago(47 * HOUR));
    // Old log files, but never shipped.
    let unprocessed = tstat_dir(r, "2024_01_01_03_00.out");
    set_mtime(&unprocessed.join("log_tcp_complete"), ago(1000 * HOUR));
    // Processed-looking, but not a tstat directory.
    let not_tstat = r.join("notes.out");
    fs::create_dir(&not_tstat).expect("mkdir");
    processed_at(&not_tstat, ago(1000 * HOUR));

    let got = run(&["-d".as_ref(), r.as_os_str()]);
    assert_eq!(got.code, Some(0), "{}", got.stderr);
    assert!(got.stderr.is_empty(), "{}", got.stderr);
    let mut lines: Vec<_> = got.stdout.lines().collect();
    lines.sort();
    let mut expected = [
        format!("removing {}", old.display()),
        format!("removing {}", nested_old.display()),
    ];
    expected.sort();
    assert_eq!(lines, expected);
    assert!(!old.exists() && !nested_old.exists());
    assert!(r.join("trace.pcap.out").is_dir(), "the parent stays");
    assert!(young.join("log_tcp_complete").is_file());
    assert!(unprocessed.join("log_tcp_complete").is_file());
    assert!(not_tstat.join(".processed").is_file());

    // A shorter, fractional TTL takes the young one too.
    let got = run(&["-d".as_ref(), r.as_os_str(), "-t".as_ref(), "46.5".as_ref()]);
    assert_eq!(got.code, Some(0), "{}", got.stderr);
    assert_eq!(got.stdout, format!("removing {}\n", young.display()));
    assert!(!young.exists());
    assert!(unprocessed.is_dir());
}

#[test]
fn dry_run_removes_nothing_but_says_what_it_would() {
    let tmp = TempDir::new().expect("tempdir");
    let r = tmp.path();
    let old = tstat_dir(r, "2024_01_01_00_00.out");
    processed_at(&old, ago(3 * HOUR));
    let young = tstat_dir(r, "2024_01_01_01_00.out");
    processed_at(&young, ago(HOUR / 2));

    let got = run(&[
        "--directory".as_ref(),
        r.as_os_str(),
        "--ttl".as_ref(),
        "1".as_ref(),
        "--dry-run".as_ref(),
        "--verbose".as_ref(),
    ]);
    assert_eq!(got.code, Some(0), "{}", got.stderr);
    assert_eq!(got.stdout, format!("would remove {}\n", old.display()));
    assert!(old.join("log_tcp_complete").is_file());
    assert!(old.join("LAST").join("histo").is_file());
    assert_eq!(
        got.stderr,
        "tstat-cull: 2 tstat directories examined, would remove 1, kept 0 not processed, \
         kept 1 processed within 1 h, 0 errors\n"
    );
}

#[test]
fn never_removes_a_directory_without_processed() {
    let tmp = TempDir::new().expect("tempdir");
    let d = tstat_dir(tmp.path(), "2024_01_01_00_00.out");
    set_mtime(&d.join("log_tcp_complete"), ago(10_000 * HOUR));
    let got = run(&[
        "-d".as_ref(),
        tmp.path().as_os_str(),
        "-t".as_ref(),
        "0".as_ref(),
    ]);
    assert_eq!(got.code, Some(0), "{}", got.stderr);
    assert!(got.stdout.is_empty());
    assert!(d.join("log_tcp_complete").is_file());
}

#[test]
fn never_removes_the_root_itself() {
    let tmp = TempDir::new().expect("tempdir");
    let d = tstat_dir(tmp.path(), "2024_01_01_00_00.out");
    processed_at(&d, ago(100 * HOUR));
    let got = run(&["-d".as_ref(), d.as_os_str()]);
    assert_eq!(got.code, Some(0), "{}", got.stderr);
    assert!(got.stdout.is_empty());
    assert!(d.join("log_tcp_complete").is_file());
}

#[cfg(unix)]
#[test]
fn never_follows_a_symlink_out_of_root() {
    let tmp = TempDir::new().expect("tempdir");
    let root = tmp.path().join("root");
    fs::create_dir(&root).expect("mkdir");
    let outside = tmp.path().join("outside");
    // Processed-looking directories outside ROOT, reachable only by links.
    let target = tstat_dir(&outside, "2024_01_01_00_00.out");
    processed_at(&target, ago(1000 * HOUR));
    std::os::unix::fs::symlink(&target, root.join("2024_01_01_00_00.out")).expect("symlink");
    std::os::unix::fs::symlink(&outside, root.join("tree")).expect("symlink");
    // A processed directory inside ROOT that holds a link out of it.
    let inside = tstat_dir(&root, "2024_01_01_01_00.out");
    processed_at(&inside, ago(1000 * HOUR));
    let precious = tmp.path().join("precious");
    fs::create_dir(&precious).expect("mkdir");
    fs::write(precious.join("data"), b"keep me").expect("write");
    std::os::unix::fs::symlink(&precious, inside.join("escape")).expect("symlink");
    std::os::unix::fs::symlink(precious.join("data"), inside.join("escape-file")).expect("symlink");

    let got = run(&["-d".as_ref(), root.as_os_str(), "-t".as_ref(), "0".as_ref()]);
    assert_eq!(got.code, Some(0), "{}", got.stderr);
    assert_eq!(got.stdout, format!("removing {}\n", inside.display()));
    assert!(!inside.exists());
    assert!(target.join("log_tcp_complete").is_file());
    assert!(target.join(".processed").is_file());
    assert_eq!(fs::read(precious.join("data")).expect("read"), b"keep me");
    // The links in ROOT are left alone as well.
    assert!(fs::symlink_metadata(root.join("tree")).is_ok());
    assert!(fs::symlink_metadata(root.join("2024_01_01_00_00.out")).is_ok());
}

#[cfg(unix)]
#[test]
fn root_given_as_a_symlink_is_walked() {
    let tmp = TempDir::new().expect("tempdir");
    let real = tmp.path().join("real");
    let d = tstat_dir(&real, "2024_01_01_00_00.out");
    processed_at(&d, ago(100 * HOUR));
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let got = run(&["-d".as_ref(), link.as_os_str()]);
    assert_eq!(got.code, Some(0), "{}", got.stderr);
    assert_eq!(
        got.stdout,
        format!("removing {}\n", link.join("2024_01_01_00_00.out").display())
    );
    assert!(!d.exists());
}

#[test]
fn missing_root_is_a_clear_error() {
    let tmp = TempDir::new().expect("tempdir");
    let missing = tmp.path().join("nope");
    let got = run(&["-d".as_ref(), missing.as_os_str()]);
    assert_eq!(got.code, Some(1));
    assert!(
        got.stderr
            .starts_with(&format!("tstat-cull: error: {}: ", missing.display())),
        "{}",
        got.stderr
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["-d"],
        &["-d", ".", "-t", "-3"],
        &["-d", ".", "-t", "soon"],
        &["-d", ".", "-t", "inf"],
        &["-d", ".", "--bogus"],
    ] {
        let got = run(&args.iter().map(|a| a.as_ref()).collect::<Vec<_>>());
        assert_eq!(got.code, Some(2), "{args:?}: {}", got.stderr);
        assert!(got.stdout.is_empty(), "{args:?}");
        assert!(
            got.stderr.starts_with("tstat-cull: error: "),
            "{args:?}: {}",
            got.stderr
        );
    }
}
