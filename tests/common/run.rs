//! Running the programs in tests: with a deadline, optional environment,
//! and exit-status assertions that show stderr.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use super::rabbit::{RabbitNode, run_with_deadline};

/// Bound on one run of a program.
pub const RUN_DEADLINE: Duration = Duration::from_secs(240);

/// Runs `program args` with `envs` added, killed after [`RUN_DEADLINE`].
pub fn run_env(program: &str, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    run_with_deadline(cmd, None, RUN_DEADLINE).unwrap_or_else(|e| panic!("{program} {args:?}: {e}"))
}

/// Runs `program args`, killed after [`RUN_DEADLINE`].
pub fn run(program: &str, args: &[&str]) -> Output {
    run_env(program, args, &[])
}

/// Bytes as text, for messages.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts the exit status, showing stderr when it differs.
#[track_caller]
pub fn assert_status(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: exit status {:?}\nstderr:\n{}",
        out.status,
        text(&out.stderr)
    );
}

/// A config for `node` publishing to `queue`, owner-only (it holds a
/// password), in `dir`.
pub fn write_config(dir: &Path, node: &RabbitNode, queue: &str) -> PathBuf {
    let p = dir.join(format!("{queue}.ini"));
    fs::write(&p, node.config(queue, "")).expect("write config");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).expect("chmod config");
    p
}
