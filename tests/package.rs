//! The Debian package (design §13.2), built once with `scripts/package.sh`
//! and inspected, never installed: `dpkg-deb -c`/`-I` must show every
//! program, man page, completion, unit and the conffile with its owner and
//! mode set up by the maintainer scripts, and the unpacked programs must run.
//!
//! The tests package the debug build the test run already made (`--profile
//! dev`), so CI does not build everything a second time.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::Duration;

use common::run::{PROGRAMS, bin, command, text};

const PACKAGE_SH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/package.sh");
const UNITS: [&str; 5] = [
    "tstat-send.service",
    "tstat-send.timer",
    "tstat-send-follow.service",
    "tstat-cull.service",
    "tstat-cull.timer",
];

fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The .deb, built once for all tests here.
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        // The target directory of this test build, wherever cargo put it.
        let target = bin("tstat_send")
            .parent()
            .and_then(Path::parent)
            .expect("target dir")
            .to_path_buf();
        // The debug build this test run already has: no second, release
        // build in CI (scripts/package.sh alone makes the release package).
        // It builds the man pages and completions first: minutes on a busy
        // machine.
        let out = command(PACKAGE_SH)
            .args(["--profile", "dev", "--fast"])
            .env("CARGO_TARGET_DIR", &target)
            .deadline(Duration::from_secs(1800))
            .run();
        let stdout = ok("scripts/package.sh", out);
        let path = PathBuf::from(stdout.lines().last().expect("package path").trim());
        assert!(
            path.extension().is_some_and(|e| e == "deb") && path.is_file(),
            "package.sh names the .deb it built: {stdout}"
        );
        assert!(
            path.starts_with(&target),
            "{} is under {}",
            path.display(),
            target.display()
        );
        path
    })
}

/// `dpkg-deb -c`: path (without the leading `.`) → (mode, owner).
fn contents() -> BTreeMap<String, (String, String)> {
    let out = command("dpkg-deb").arg("-c").arg(deb()).run();
    ok("dpkg-deb -c", out)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = f.last().expect("path").trim_start_matches('.').to_string();
            (path, (f[0].to_string(), f[1].to_string()))
        })
        .collect()
}

fn control_file(name: &str) -> String {
    let out = command("dpkg-deb").arg("-I").arg(deb()).arg(name).run();
    ok(&format!("dpkg-deb -I {name}"), out)
}

/// The package unpacked (no install), beside the .deb in the target
/// directory: a temp dir held in a static is never dropped, and would leave
/// the unpacked package in /tmp after every test run.
fn unpacked() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = deb()
            .parent()
            .expect("the .deb's directory")
            .join("unpacked-by-tests");
        if dir.exists() {
            fs::remove_dir_all(&dir).expect("remove the last unpacked copy");
        }
        fs::create_dir_all(&dir).expect("mkdir");
        let out = command("dpkg-deb").arg("-x").arg(deb()).arg(&dir).run();
        ok("dpkg-deb -x", out);
        dir
    })
}

#[test]
fn package_holds_programs_docs_completions_units_and_config() {
    let files = contents();
    let has = |p: &str| {
        assert!(
            files.contains_key(p),
            "the package lacks {p}; it holds:\n{files:#?}"
        );
        &files[p]
    };
    for prog in PROGRAMS {
        assert_eq!(has(&format!("/usr/bin/{prog}")).0, "-rwxr-xr-x", "{prog}");
        has(&format!("/usr/share/man/man1/{prog}.1.gz"));
        has(&format!("/usr/share/bash-completion/completions/{prog}"));
        has(&format!("/usr/share/zsh/vendor-completions/_{prog}"));
        has(&format!("/usr/share/fish/vendor_completions.d/{prog}.fish"));
    }
    assert_eq!(has("/usr/bin/tstat_send.sh").0, "-rwxr-xr-x");
    for unit in UNITS {
        has(&format!("/usr/lib/systemd/system/{unit}"));
    }
    for doc in ["README.md", "config.ini.example", "design.md", "copyright"] {
        has(&format!("/usr/share/doc/tstat-transport/{doc}"));
    }
    // Unreadable for others in the archive; postinst gives the group to tstat.
    assert_eq!(has("/etc/tstat-transport/config.ini").0, "-rw-r-----");
}

#[test]
fn control_files_declare_the_conffile_user_and_units() {
    let control = control_file("control");
    assert!(control.contains("Package: tstat-transport"), "{control}");
    assert!(control.contains("adduser"), "depends on adduser: {control}");

    let conffiles = control_file("conffiles");
    assert!(
        conffiles
            .lines()
            .any(|l| l.trim() == "/etc/tstat-transport/config.ini"),
        "{conffiles}"
    );

    let postinst = control_file("postinst");
    assert!(
        postinst.contains("adduser --system --group") && postinst.contains(" tstat"),
        "postinst creates the tstat system user:\n{postinst}"
    );
    assert!(
        postinst.contains("dpkg-statoverride --update --add root tstat 0640 \"$CONFIG\"")
            && postinst.contains("CONFIG=/etc/tstat-transport/config.ini"),
        "postinst makes the config root:tstat 0640:\n{postinst}"
    );
    // Units are reloaded, nothing is enabled or started by installing.
    assert!(postinst.contains("daemon-reload"), "{postinst}");
    assert!(
        !postinst.contains("systemctl --system start")
            && !postinst.contains("deb-systemd-invoke start"),
        "{postinst}"
    );
    let postrm = control_file("postrm");
    assert!(postrm.contains("dpkg-statoverride --remove"), "{postrm}");

    // The metrics directory the units write to exists for runs by hand too
    // (not only while systemd's StateDirectory makes it), owned by tstat.
    let root = unpacked();
    let mut dirs = std::collections::BTreeSet::new();
    for unit in UNITS.iter().filter(|u| u.ends_with(".service")) {
        let text = fs::read_to_string(root.join("usr/lib/systemd/system").join(unit)).unwrap();
        for line in text.lines().filter(|l| l.starts_with("ExecStart=")) {
            if let Some(m) = line
                .split_whitespace()
                .skip_while(|w| *w != "--metrics-file")
                .nth(1)
            {
                dirs.insert(Path::new(m).parent().expect("a directory").to_path_buf());
            }
        }
    }
    assert!(!dirs.is_empty(), "the units write metrics");
    for d in dirs {
        let d = d.display();
        assert!(
            postinst.contains(&format!("install -d -o tstat -g tstat -m 0755 {d}\n")),
            "postinst creates {d} owned by tstat:\n{postinst}"
        );
        assert!(
            postrm.contains(&format!("rm -rf {d}\n")),
            "postrm purges {d}:\n{postrm}"
        );
    }

    // The default config is the commented example.
    let config = fs::read_to_string(unpacked().join("etc/tstat-transport/config.ini")).unwrap();
    let example =
        fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.ini.example")).unwrap();
    assert_eq!(config, example);
}

#[test]
fn units_point_at_installed_things_and_only_optional_write_paths() {
    let root = unpacked();
    let files = contents();
    for unit in UNITS {
        let text = fs::read_to_string(root.join("usr/lib/systemd/system").join(unit)).unwrap();
        for line in text.lines() {
            if let Some(docs) = line.strip_prefix("Documentation=") {
                for d in docs.split_whitespace() {
                    let path = if let Some(page) = d.strip_prefix("man:") {
                        let (name, section) = page
                            .trim_end_matches(')')
                            .split_once('(')
                            .expect("man:NAME(N)");
                        format!("/usr/share/man/man{section}/{name}.{section}.gz")
                    } else {
                        d.strip_prefix("file://")
                            .expect("man: or file://")
                            .to_string()
                    };
                    assert!(
                        files.contains_key(&path),
                        "{unit}: {d} is not in the package"
                    );
                }
            }
            if let Some(paths) = line.strip_prefix("ReadWritePaths=") {
                for p in paths.split_whitespace() {
                    assert!(
                        p.starts_with('-'),
                        "{unit}: {p} may not exist: prefix it with -"
                    );
                }
            }
            if let Some(cmd) = line.strip_prefix("ExecStart=") {
                let prog = cmd.split_whitespace().next().expect("a program");
                assert!(
                    files.contains_key(prog),
                    "{unit}: {prog} is not in the package"
                );
            }
            if let Some(config) = line.split_whitespace().skip_while(|w| *w != "-c").nth(1) {
                assert_eq!(config, "/etc/tstat-transport/config.ini", "{unit}");
            }
        }
        if unit.ends_with(".service") {
            assert!(text.contains("\nUser=tstat\n"), "{unit} runs as tstat");
        }
    }
}

#[test]
fn unpacked_programs_run_and_their_docs_match_their_flags() {
    let root = unpacked();
    let version = env!("CARGO_PKG_VERSION");
    for prog in PROGRAMS {
        let bin = root.join("usr/bin").join(prog);
        let out = command(&bin).arg("--version").run();
        assert_eq!(
            ok(&format!("{prog} --version"), out).trim(),
            format!("{prog} {version}")
        );

        // Generated, not written by hand: every long flag of --help is in the
        // man page and in the bash completion.
        let help = ok(&format!("{prog} --help"), command(&bin).arg("--help").run());
        let mut man = String::new();
        flate2::read::GzDecoder::new(
            fs::File::open(root.join(format!("usr/share/man/man1/{prog}.1.gz"))).unwrap(),
        )
        .read_to_string(&mut man)
        .expect("gzip man page");
        let bash = fs::read_to_string(
            root.join("usr/share/bash-completion/completions")
                .join(prog),
        )
        .unwrap();
        // The long flags of the option lines (`  -b, --bytes <N>`, `      --all`).
        let flags: Vec<&str> = help
            .lines()
            .map(str::trim_start)
            .filter(|l| l.starts_with('-'))
            .flat_map(|l| l.split([' ', ',', '=']))
            .filter(|w| w.starts_with("--") && w.len() > 2)
            .collect();
        assert!(flags.contains(&"--help"), "{prog}: {help}");
        for flag in flags {
            // roff escapes the dashes of a flag.
            let in_man = man.contains(flag) || man.contains(&flag.replace('-', "\\-"));
            assert!(in_man, "{prog}: man page lacks {flag}");
            assert!(bash.contains(flag), "{prog}: bash completion lacks {flag}");
        }
        assert!(
            man.contains("Exit status:"),
            "{prog}: man page has the exit statuses"
        );
    }
}
