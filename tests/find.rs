//! Integration tests for `tstat-find`: the real binary on fixture trees made
//! in temporary directories, with modification times set instead of sleeping.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::run::{Cmd, bin, command, program, text};
use common::trees::{HOUR, ago, set_mtime};
use tempfile::TempDir;

fn tstat_find() -> Cmd {
    program("tstat-find")
}

/// Creates `parent/name` holding the given log files, each modified at
/// `mtime`.
fn make_dir(parent: &Path, name: &str, logs: &[&str], mtime: SystemTime) -> PathBuf {
    let d = parent.join(name);
    fs::create_dir_all(&d).expect("mkdir");
    for log in logs {
        let p = d.join(log);
        fs::write(&p, b"#c_ip:1\n").expect("write log");
        set_mtime(&p, mtime);
    }
    d
}

fn tstat_dir(parent: &Path, name: &str, mtime: SystemTime) -> PathBuf {
    make_dir(
        parent,
        name,
        &["log_tcp_complete", "log_udp_complete"],
        mtime,
    )
}

/// Runs tstat-find with `args` and returns the listed paths; the run must
/// succeed with nothing on stderr.
fn list(args: &[&std::ffi::OsStr]) -> Vec<PathBuf> {
    let out = tstat_find().args(args).run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "status {:?}: {stderr}", out.status);
    assert!(stderr.is_empty(), "stderr: {stderr}");
    String::from_utf8(out.stdout)
        .expect("utf8")
        .lines()
        .map(PathBuf::from)
        .collect()
}

fn root_arg(tmp: &TempDir) -> &std::ffi::OsStr {
    tmp.path().as_os_str()
}

#[test]
fn newest_directory_waits_until_settled() {
    let tmp = TempDir::new().expect("tempdir");
    let a = tstat_dir(tmp.path(), "2024_05_22_08_55.out", ago(3 * HOUR));
    let b = tstat_dir(tmp.path(), "2024_05_22_09_55.out", ago(2 * HOUR));
    // The live one: just written.
    let c = tstat_dir(tmp.path(), "2024_05_22_10_55.out", SystemTime::now());

    assert_eq!(list(&[root_arg(&tmp)]), [a.clone(), b.clone()]);

    // Still live with a short quiet time that has not passed.
    set_mtime(&c.join("log_tcp_complete"), ago(Duration::from_secs(30)));
    set_mtime(&c.join("log_udp_complete"), ago(Duration::from_secs(30)));
    assert_eq!(
        list(&["--settle".as_ref(), "60".as_ref(), root_arg(&tmp)]),
        [a.clone(), b.clone()]
    );
    // Passed --settle: listed too.
    assert_eq!(
        list(&["--settle".as_ref(), "20".as_ref(), root_arg(&tmp)]),
        [a.clone(), b.clone(), c.clone()]
    );
    // The default (7200 s) after the files have been quiet long enough.
    set_mtime(&c.join("log_tcp_complete"), ago(2 * HOUR + HOUR / 60));
    set_mtime(&c.join("log_udp_complete"), ago(2 * HOUR + HOUR / 60));
    assert_eq!(list(&[root_arg(&tmp)]), [a, b, c]);
}

#[test]
fn any_recent_log_keeps_the_newest_directory_live() {
    let tmp = TempDir::new().expect("tempdir");
    let d = tstat_dir(tmp.path(), "2024_05_22_08_55.out", ago(3 * HOUR));
    // Tstat is still writing another log in the same directory.
    make_dir(
        tmp.path(),
        "2024_05_22_08_55.out",
        &["log_tcp_nocomplete"],
        SystemTime::now(),
    );
    assert!(list(&[root_arg(&tmp)]).is_empty());
    assert_eq!(list(&["--all".as_ref(), root_arg(&tmp)]), [d]);
}

#[test]
fn all_lists_the_live_directory() {
    let tmp = TempDir::new().expect("tempdir");
    let a = tstat_dir(tmp.path(), "2024_05_22_08_55.out", SystemTime::now());
    let b = tstat_dir(tmp.path(), "2024_05_22_09_55.out", SystemTime::now());
    assert_eq!(list(&[root_arg(&tmp)]), std::slice::from_ref(&a));
    assert_eq!(list(&["--all".as_ref(), root_arg(&tmp)]), [a, b]);
}

#[test]
fn processed_directories_are_listed_only_with_include_done() {
    let tmp = TempDir::new().expect("tempdir");
    let a = tstat_dir(tmp.path(), "2024_05_22_08_55.out", ago(5 * HOUR));
    let b = tstat_dir(tmp.path(), "2024_05_22_09_55.out", ago(4 * HOUR));
    let c = tstat_dir(tmp.path(), "2024_05_22_10_55.out", ago(3 * HOUR));
    fs::write(b.join(".processed"), b"processed").expect("write");
    fs::write(c.join(".processed"), b"processed").expect("write");

    assert_eq!(list(&[root_arg(&tmp)]), std::slice::from_ref(&a));
    assert_eq!(
        list(&["--all".as_ref(), root_arg(&tmp)]),
        std::slice::from_ref(&a)
    );
    assert_eq!(
        list(&["--include-done".as_ref(), root_arg(&tmp)]),
        [a, b, c]
    );
}

#[test]
fn a_processed_newer_sibling_still_means_rotated() {
    let tmp = TempDir::new().expect("tempdir");
    let a = tstat_dir(tmp.path(), "2024_05_22_08_55.out", SystemTime::now());
    let b = tstat_dir(tmp.path(), "2024_05_22_09_55.out", SystemTime::now());
    fs::write(b.join(".processed"), b"processed").expect("write");
    assert_eq!(list(&[root_arg(&tmp)]), [a]);
}

#[test]
fn rotation_is_judged_within_one_parent_only() {
    let tmp = TempDir::new().expect("tempdir");
    tstat_dir(
        &tmp.path().join("s1"),
        "2024_05_22_08_55.out",
        SystemTime::now(),
    );
    tstat_dir(
        &tmp.path().join("s2"),
        "2024_05_22_09_55.out",
        SystemTime::now(),
    );
    assert!(list(&[root_arg(&tmp)]).is_empty());
}

#[test]
fn mark_writes_exactly_processed_and_no_temporary_file() {
    let tmp = TempDir::new().expect("tempdir");
    let a = tstat_dir(tmp.path(), "2024_05_22_08_55.out", ago(3 * HOUR));
    let b = tstat_dir(tmp.path(), "2024_05_22_09_55.out", ago(3 * HOUR));

    let out = tstat_find().arg("--mark").arg(&a).run();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    assert_eq!(fs::read(a.join(".processed")).expect("read"), b"processed");
    let mut names: Vec<_> = fs::read_dir(&a)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [".processed", "log_tcp_complete", "log_udp_complete"]
    );

    // Marking again is harmless, and the marked one is no longer listed.
    let out = tstat_find().arg("--mark").arg(&a).run();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(list(&[root_arg(&tmp)]), [b]);
}

#[test]
fn mark_refuses_what_is_not_a_tstat_directory() {
    let tmp = TempDir::new().expect("tempdir");
    let good = tstat_dir(tmp.path(), "2024_05_22_08_55.out", ago(3 * HOUR));
    let not_out = tstat_dir(tmp.path(), "logs", ago(3 * HOUR));
    let no_logs = make_dir(tmp.path(), "trace.pcap.out", &[], ago(3 * HOUR));
    let missing = tmp.path().join("missing.out");

    let out = tstat_find()
        .arg("--mark")
        .args([&not_out, &good, &no_logs, &missing])
        .run();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8(out.stderr).expect("utf8");
    for bad in [&not_out, &no_logs, &missing] {
        assert!(
            stderr.contains(&format!(
                "tstat-find: error: {}: not a tstat directory",
                bad.display()
            )),
            "{stderr}"
        );
        assert!(!bad.join(".processed").exists());
    }
    assert_eq!(stderr.lines().count(), 3, "{stderr}");
    // The valid one among them is still marked.
    assert_eq!(
        fs::read(good.join(".processed")).expect("read"),
        b"processed"
    );
}

#[cfg(unix)]
#[test]
fn mark_refuses_a_symlink_to_a_tstat_directory() {
    let tmp = TempDir::new().expect("tempdir");
    let real = tstat_dir(tmp.path(), "2024_05_22_08_55.out", ago(3 * HOUR));
    let link = tmp.path().join("2024_05_22_09_55.out");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let out = tstat_find().arg("--mark").arg(&link).run();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        text(&out.stderr),
        format!(
            "tstat-find: error: {}: not a tstat directory (expected a directory named *.out \
             holding log_tcp_complete or log_udp_complete); not marked\n",
            link.display()
        )
    );
    assert!(!real.join(".processed").exists());
}

#[test]
fn out_directories_without_logs_are_ignored() {
    let tmp = TempDir::new().expect("tempdir");
    make_dir(tmp.path(), "empty.out", &[], ago(3 * HOUR));
    make_dir(
        tmp.path(),
        "other.out",
        &["log_tcp_nocomplete", "README"],
        ago(3 * HOUR),
    );
    // Logs in a directory whose name does not end in .out do not count.
    tstat_dir(tmp.path(), "2024_05_22_08_55", ago(3 * HOUR));
    tstat_dir(tmp.path(), "2024_05_22_08_55.out.bak", ago(3 * HOUR));
    assert!(list(&["--all".as_ref(), root_arg(&tmp)]).is_empty());
}

#[test]
fn gz_logs_and_single_logs_count() {
    let tmp = TempDir::new().expect("tempdir");
    let a = make_dir(
        tmp.path(),
        "2024_05_22_08_55.out",
        &["log_tcp_complete.gz"],
        ago(3 * HOUR),
    );
    let b = make_dir(
        tmp.path(),
        "2024_05_22_09_55.out",
        &["log_udp_complete.gz"],
        ago(3 * HOUR),
    );
    let c = make_dir(
        tmp.path(),
        "2024_05_22_10_55.out",
        &["log_udp_complete"],
        ago(3 * HOUR),
    );
    assert_eq!(list(&[root_arg(&tmp)]), [a, b, c]);
}

#[test]
fn nested_trace_layout() {
    let tmp = TempDir::new().expect("tempdir");
    // tstat -s dir on a trace file: <trace>.out/<time>.out/log_*
    let trace = tmp.path().join("wireshark_trace-0.pcap.out");
    let a = tstat_dir(&trace, "2024_05_22_08_55.out", SystemTime::now());
    let b = tstat_dir(&trace, "2024_05_22_09_55.out", SystemTime::now());
    // Histogram subdirectories of a tstat directory are not candidates.
    make_dir(&a, "LAST", &["log_tcp_complete"], ago(3 * HOUR));
    assert_eq!(list(&[root_arg(&tmp)]), std::slice::from_ref(&a));
    assert_eq!(list(&["--all".as_ref(), root_arg(&tmp)]), [a, b]);
}

#[test]
fn oldest_first_across_parents() {
    let tmp = TempDir::new().expect("tempdir");
    let r = tmp.path();
    let old = ago(3 * HOUR);
    let x3 = tstat_dir(&r.join("x"), "2024_01_01_03_00.out", old);
    let y1 = tstat_dir(&r.join("y"), "2024_01_01_01_00.out", old);
    let z2 = tstat_dir(&r.join("z/deeper"), "2024_01_01_02_00.out", old);
    let x1 = tstat_dir(&r.join("x"), "2024_01_01_01_00.out", old);
    let w2 = tstat_dir(&r.join("w"), "2024_01_01_02_00.out", old);
    assert_eq!(list(&[root_arg(&tmp)]), [x1, y1, w2, z2, x3]);
}

#[test]
fn several_roots_are_merged_in_order() {
    let one = TempDir::new().expect("tempdir");
    let two = TempDir::new().expect("tempdir");
    let old = ago(3 * HOUR);
    let a2 = tstat_dir(one.path(), "2024_01_01_02_00.out", old);
    let b1 = tstat_dir(two.path(), "2024_01_01_01_00.out", old);
    let b3 = tstat_dir(two.path(), "2024_01_01_03_00.out", old);
    assert_eq!(list(&[root_arg(&one), root_arg(&two)]), [b1, a2, b3]);
}

#[test]
fn root_that_is_itself_a_tstat_directory_is_listed() {
    let tmp = TempDir::new().expect("tempdir");
    let a = tstat_dir(tmp.path(), "2024_01_01_02_00.out", ago(3 * HOUR));
    assert_eq!(list(&[a.as_os_str()]), std::slice::from_ref(&a));
}

#[test]
fn paths_are_printed_as_joined_not_canonicalised() {
    let tmp = TempDir::new().expect("tempdir");
    tstat_dir(
        &tmp.path().join("sub"),
        "2024_01_01_02_00.out",
        ago(3 * HOUR),
    );
    let out = tstat_find()
        .current_dir(tmp.path())
        .arg("./sub/../sub")
        .run();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"./sub/../sub/2024_01_01_02_00.out\n");
}

#[test]
fn null_terminated_output() {
    let tmp = TempDir::new().expect("tempdir");
    let a = tstat_dir(tmp.path(), "2024_01_01_01_00.out", ago(3 * HOUR));
    let b = tstat_dir(tmp.path(), "2024_01_01_02 00.out", ago(3 * HOUR));
    let out = tstat_find().arg("-0").arg(tmp.path()).run();
    assert!(out.status.success(), "{out:?}");
    let expected = format!("{}\0{}\0", a.display(), b.display());
    assert_eq!(String::from_utf8(out.stdout).expect("utf8"), expected);
}

#[cfg(unix)]
#[test]
fn symlinked_directories_are_not_followed() {
    let tmp = TempDir::new().expect("tempdir");
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    // Being written: listed only when something newer appears beside it.
    let live = tstat_dir(&root, "2024_01_01_01_00.out", SystemTime::now());
    tstat_dir(&outside, "2024_01_01_00_00.out", ago(3 * HOUR));
    let lone = tstat_dir(&outside.join("lone"), "2024_01_01_05_00.out", ago(3 * HOUR));
    // A link to a tree of tstat directories, and a link that itself looks
    // like a (newer) tstat directory.
    std::os::unix::fs::symlink(&outside, root.join("elsewhere")).expect("symlink");
    std::os::unix::fs::symlink(&lone, root.join("2024_01_01_09_00.out")).expect("symlink");
    assert_eq!(list(&["--all".as_ref(), root.as_os_str()]), [live]);
    // The link did not count as a newer sibling either.
    assert!(list(&[root.as_os_str()]).is_empty());
}

#[cfg(unix)]
#[test]
fn root_given_as_a_symlink_is_walked() {
    let tmp = TempDir::new().expect("tempdir");
    let real = tmp.path().join("real");
    tstat_dir(&real, "2024_01_01_01_00.out", ago(3 * HOUR));
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    assert_eq!(
        list(&[link.as_os_str()]),
        [link.join("2024_01_01_01_00.out")]
    );
}

#[test]
fn missing_root_is_named_and_the_others_still_listed() {
    let tmp = TempDir::new().expect("tempdir");
    let a = tstat_dir(tmp.path(), "2024_01_01_01_00.out", ago(3 * HOUR));
    let missing = tmp.path().join("no-such-root");
    let out = tstat_find().arg(&missing).arg(tmp.path()).run();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).expect("utf8"),
        format!("{}\n", a.display())
    );
    let stderr = String::from_utf8(out.stderr).expect("utf8");
    assert!(
        stderr.starts_with(&format!("tstat-find: error: {}: ", missing.display())),
        "{stderr}"
    );
    assert!(stderr.contains("No such file or directory"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn root_that_is_a_file_is_an_error() {
    let tmp = TempDir::new().expect("tempdir");
    let f = tmp.path().join("file");
    fs::write(&f, b"").expect("write");
    let out = tstat_find().arg(&f).run();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8(out.stderr).expect("utf8");
    assert!(
        stderr.starts_with(&format!("tstat-find: error: {}: ", f.display())),
        "{stderr}"
    );
}

#[cfg(unix)]
#[test]
fn unreadable_subdirectory_is_reported_and_skipped() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new().expect("tempdir");
    let a = tstat_dir(
        &tmp.path().join("ok"),
        "2024_01_01_01_00.out",
        ago(3 * HOUR),
    );
    let locked = tmp.path().join("locked");
    tstat_dir(&locked, "2024_01_01_00_00.out", ago(3 * HOUR));
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).expect("chmod");
    // Root reads any directory: then run tstat-find as `nobody`, for whom
    // the mode is enforced.
    let as_root = fs::read_dir(&locked).is_ok();
    let out = if as_root {
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        command("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin("tstat-find"))
            .arg(tmp.path())
            .run()
    } else {
        tstat_find().arg(tmp.path()).run()
    };
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).expect("chmod");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).expect("utf8"),
        format!("{}\n", a.display())
    );
    let stderr = String::from_utf8(out.stderr).expect("utf8");
    assert!(
        stderr.starts_with(&format!("tstat-find: error: {}", locked.display())),
        "{stderr}"
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["--settle", "soon", "."],
        &["--settle", "-1", "."],
        &["--mark", "--all", "x.out"],
        &["--mark", "--include-done", "x.out"],
        &["--no-such-flag", "."],
    ] {
        let out = tstat_find().args(args).run();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with("tstat-find: error: "),
            "{args:?}: {stderr}"
        );
    }
}
