//! The stream transport's settings in `config.ini` (design §14.2) through
//! the real program: `tstat_send --check` prints every problem with its
//! file, section and key (exit 2), and the warnings of stream settings a
//! queue config ignores. No broker is needed: the configs point at a port
//! nothing listens on.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::rabbit::{free_ports, write_private};
use common::run::{program, text};

const DEADLINE: Duration = Duration::from_secs(120);

/// `[rabbit]` with everything but the transport's keys, for a broker that
/// is not there.
fn login() -> String {
    format!(
        "[rabbit]\nhost = 127.0.0.1\nport = {}\nusername = guest\npassword = guest\n",
        free_ports(1)[0]
    )
}

/// Runs `tstat_send --check` on an empty root with `config`; returns the
/// exit status, stdout and stderr.
fn check(dir: &Path, config: &str) -> (Option<i32>, String, String, PathBuf) {
    let cfg = write_private(&dir.join("config.ini"), config);
    let out = program("tstat_send")
        .args(["--check", "--connect-timeout", "5", "-d"])
        .arg(dir)
        .arg("-c")
        .arg(&cfg)
        .deadline(DEADLINE)
        .run();
    (out.status.code(), text(&out.stdout), text(&out.stderr), cfg)
}

/// stderr's lines, with the config's path written as FILE.
fn lines(stderr: &str, cfg: &Path) -> Vec<String> {
    let file = cfg.display().to_string();
    stderr.lines().map(|l| l.replace(&file, "FILE")).collect()
}

#[test]
fn every_stream_setting_mistake_is_reported_at_once_with_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let long = "s".repeat(256);
    let config = format!(
        "{}transport = stream\nstream = {long}\nstream_port = 70000\n\
         [rabbit_stream_options]\nmax-length-bytes = 12X\nmax-age = 7d\n\
         stream-max-segment-size-bytes = 0\ninitial-cluster-size = 0\nmax-legth-bytes = 5\n\
         [rabbit_stream_option]\nmax-age = 1D\n",
        login()
    );
    let (code, out, err, cfg) = check(dir.path(), &config);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(out.contains("✗ config: "), "{out}");
    assert_eq!(
        lines(&err, &cfg),
        [
            "tstat_send: error: FILE: [rabbit_stream_option]: unknown section (did you mean \
             [rabbit_stream_options]? section names are case-sensitive; its settings would be \
             ignored)",
            "tstat_send: error: FILE: [rabbit] stream: is 256 bytes long; a stream name is at \
             most 255 bytes",
            "tstat_send: error: FILE: [rabbit] stream_port: \"70000\" is not a port number \
             (1..65535)",
            "tstat_send: error: FILE: [rabbit_stream_options] max-legth-bytes: unknown key (did \
             you mean max-length-bytes?)",
            "tstat_send: error: FILE: [rabbit_stream_options] max-length-bytes: invalid byte \
             count '12X': unknown suffix (use K, M, G, T, Ki, Mi, Gi or Ti, optionally followed \
             by B)",
            "tstat_send: error: FILE: [rabbit_stream_options] max-age: \"7d\" is not an age: a \
             positive whole number followed by Y, M, D, h, m or s (years, months, days, hours, \
             minutes, seconds), e.g. 7D or 12h",
            "tstat_send: error: FILE: [rabbit_stream_options] stream-max-segment-size-bytes: \
             \"0\" is no size: give more than 0 bytes",
            "tstat_send: error: FILE: [rabbit_stream_options] initial-cluster-size: \"0\" is not \
             a positive whole number (the stream's replicas, e.g. 3)",
        ]
    );
}

#[test]
fn a_bad_transport_lists_the_two_and_a_stream_needs_its_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |rabbit: &str| {
        let (code, out, err, cfg) = check(dir.path(), &format!("{}{rabbit}", login()));
        assert_eq!(code, Some(2), "{rabbit}: {out}{err}");
        lines(&err, &cfg)
    };
    // No complaint about the exchange either: the transport is unknown.
    assert_eq!(
        run("transport = kafka\n"),
        ["tstat_send: error: FILE: [rabbit] transport: \"kafka\" is not one of queue, stream"]
    );
    assert_eq!(
        run("transport = stream\n"),
        [
            "tstat_send: error: FILE: [rabbit] stream: missing (required with transport = \
             stream: the stream to publish to)"
        ]
    );
    assert_eq!(
        run("transport = stream\nstream =\nstram_port = 5552\n"),
        [
            "tstat_send: error: FILE: [rabbit] stram_port: unknown key (did you mean \
             stream_port?)",
            "tstat_send: error: FILE: [rabbit] stream: is empty (required with transport = \
             stream: the stream to publish to)",
        ]
    );
}

#[test]
fn stream_settings_in_a_queue_config_are_warnings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "{}queue = q\nexchange =\nstream = flows\nstream_port = 5552\n\
         [rabbit_stream_options]\nmax-age = 7D\n",
        login()
    );
    let (code, out, err, cfg) = check(dir.path(), &config);
    // The broker is not there: that is the failure, not the config.
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains(&format!("✓ config: {} is valid", cfg.display())),
        "{out}"
    );
    let ignored = "ignored because transport is queue (set transport = stream in [rabbit] to publish to a \
         stream)";
    assert_eq!(
        lines(&err, &cfg),
        [
            format!("tstat_send: warning: FILE: [rabbit] stream: {ignored}"),
            format!("tstat_send: warning: FILE: [rabbit] stream_port: {ignored}"),
            format!("tstat_send: warning: FILE: [rabbit_stream_options]: {ignored}"),
        ]
    );
}

#[test]
fn a_stream_config_needs_no_queue_routing_key_or_exchange() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "{}transport = stream\nstream = flows\nqueue =\nrouting_key =\n\
         [rabbit_stream_options]\nmax-length-bytes = 20GB\nmax-age = 7D\n\
         stream-max-segment-size-bytes = 500M\ninitial-cluster-size = 3\n",
        login()
    );
    let (_, out, err, cfg) = check(dir.path(), &config);
    assert!(
        out.contains(&format!("✓ config: {} is valid", cfg.display())),
        "{out}"
    );
    assert!(
        !err.contains("error: ") && !err.contains("warning: "),
        "{err}"
    );
}

#[test]
fn a_closed_stream_port_names_the_plugin_the_keys_and_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_ports(1)[0];
    let config = format!(
        "{}transport = stream\nstream = flows\nstream_port = {port}\n",
        login()
    );
    let (code, out, err, cfg) = check(dir.path(), &config);
    assert_eq!(code, Some(1), "{out}{err}");
    let broker: Vec<String> = lines(&out, &cfg)
        .into_iter()
        .filter(|l| l.contains("broker:"))
        .collect();
    assert_eq!(
        broker,
        [format!(
            "✗ broker: cannot connect to RabbitMQ: 127.0.0.1:{port}: connection refused: nothing \
             listens for the stream protocol there (is the rabbitmq_stream plugin enabled?) (is \
             the broker running there, and are host and stream_port right in FILE?)"
        )]
    );
}
