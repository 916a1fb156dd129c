//! tstat-rabbit over TLS (design §7.3) against private nodes with an AMQPS
//! listener and certificates made by rcgen: a CA-verified server
//! certificate, a wrong CA, the host name check and server_hostname,
//! CERT_NONE (works, warns) and client-certificate authentication.

mod common;

use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::rabbit::{
    NodeOptions, RabbitNode, TlsListener, shared_tls_node as node, write_private,
};
use common::run::{program, text};
use common::tls::TlsFiles;

const DEADLINE: Duration = Duration::from_secs(120);

fn certs(node: &RabbitNode) -> &TlsFiles {
    node.certs.as_ref().expect("node has certificates")
}

fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}_{}", N.fetch_add(1, Ordering::SeqCst))
}

/// Runs tstat-rabbit over TLS to `node` with `host` and `[ssl_options]`
/// lines; returns the output and the queue used.
fn run_tls(node: &RabbitNode, host: &str, ssl_options: &str) -> (Output, String) {
    let queue = unique("tls");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = format!(
        "[rabbit]\nhost = {host}\nport = {}\nusername = guest\npassword = guest\nuse_ssl = true\n\
         queue = {queue}\nrouting_key = {queue}\nexchange =\n[ssl_options]\n{ssl_options}",
        node.tls_port.expect("TLS port")
    );
    let path = write_private(&dir.path().join("config.ini"), &cfg);
    let out = program("tstat-rabbit")
        .arg("-c")
        .arg(&path)
        .args(["--connect-timeout", "10", "--retries", "0"])
        .stdin("[1]\n[2]\n[3]\n")
        .deadline(DEADLINE)
        .run();
    (out, queue)
}

fn err(out: &Output) -> String {
    text(&out.stderr)
}

#[test]
fn ca_verified_server_certificate_works() {
    let node = node();
    let c = certs(node);
    let (out, queue) = run_tls(
        node,
        "localhost",
        &format!("ca_certs = {}\n", c.ca.display()),
    );
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
    assert!(err(&out).is_empty(), "no warnings expected: {}", err(&out));
    // Read back over the plain listener.
    assert_eq!(node.drain(&queue, DEADLINE).len(), 3);
}

#[test]
fn wrong_ca_fails_with_a_certificate_error() {
    let node = node();
    let c = certs(node);
    let (out, _) = run_tls(
        node,
        "localhost",
        &format!("ca_certs = {}\n", c.other_ca.display()),
    );
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    let e = err(&out);
    assert!(
        e.starts_with("tstat-rabbit: error: cannot connect to RabbitMQ: localhost:"),
        "{e}"
    );
    assert!(
        e.contains("TLS handshake failed: invalid peer certificate: UnknownIssuer"),
        "{e}"
    );
}

#[test]
fn host_name_is_checked_and_server_hostname_overrides_it() {
    let node = node();
    let c = certs(node);
    let ca = format!("ca_certs = {}\n", c.ca.display());
    // The certificate is for localhost and 127.0.0.1, not this name.
    let (out, _) = run_tls(
        node,
        "127.0.0.1",
        &format!("{ca}server_hostname = broker.example.net\n"),
    );
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert!(
        err(&out).contains(
            "invalid peer certificate: certificate not valid for name \"broker.example.net\""
        ),
        "{}",
        err(&out)
    );
    let (out, queue) = run_tls(
        node,
        "127.0.0.1",
        &format!("{ca}server_hostname = localhost\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
    assert_eq!(node.drain(&queue, DEADLINE).len(), 3);
}

#[test]
fn cert_none_connects_without_verification_and_warns() {
    let node = node();
    let c = certs(node);
    let (out, queue) = run_tls(
        node,
        "localhost",
        &format!(
            "ca_certs = {}\ncert_reqs = CERT_NONE\n",
            c.other_ca.display()
        ),
    );
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
    assert!(
        err(&out).contains("tstat-rabbit: warning: ")
            && err(&out)
                .contains("cert_reqs = CERT_NONE: the broker's TLS certificate is NOT verified"),
        "{}",
        err(&out)
    );
    assert_eq!(node.drain(&queue, DEADLINE).len(), 3);
}

#[test]
fn client_certificate_authentication() {
    let node = RabbitNode::start_with(NodeOptions {
        tls: Some(TlsListener {
            fail_if_no_peer_cert: true,
        }),
        ..NodeOptions::default()
    });
    let c = certs(&node);
    let ca = format!("ca_certs = {}\n", c.ca.display());

    let (out, queue) = run_tls(
        &node,
        "localhost",
        &format!(
            "{ca}certfile = {}\nkeyfile = {}\n",
            c.client_cert.display(),
            c.client_key.display()
        ),
    );
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
    assert_eq!(node.drain(&queue, DEADLINE).len(), 3);

    // The same without a client certificate is refused by the broker.
    let (out, _) = run_tls(&node, "localhost", &ca);
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    let e = err(&out);
    assert!(
        e.starts_with("tstat-rabbit: error: cannot connect to RabbitMQ: localhost:"),
        "{e}"
    );
    // TLS 1.3: the broker's alert or its TCP reset, whichever comes first.
    assert!(
        e.contains("TLS handshake failed: received fatal alert: CertificateRequired")
            || e.contains("does the broker require a client certificate?"),
        "{e}"
    );
}
