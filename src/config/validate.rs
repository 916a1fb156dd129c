//! Checking every key of the read sections and building the typed config;
//! every problem is collected with its file, section and key.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::path::Path;

use super::hosts::{check_host_name, parse_hosts, parse_port};
use super::stream::{stream_config, warn_stream_settings_ignored};
use super::{
    CertReqs, Endpoint, Lookup, MAX_SHORT_STRING, QUEUE_OPTIONS, QueueArg, QueueOptions, RABBIT,
    RabbitConfig, Report, SSL_OPTIONS, Section, TlsOptions,
};

const RABBIT_KEYS: &[&str] = &[
    "host",
    "port",
    "username",
    "password",
    "use_ssl",
    "vhost",
    "queue",
    "routing_key",
    "exchange",
    "persistent",
    "transport",
    "stream",
    "stream_port",
];
const SSL_KEYS: &[&str] = &[
    "ca_certs",
    "certfile",
    "keyfile",
    "server_hostname",
    "cert_reqs",
];
/// Python `ssl.wrap_socket` options the reference accepted; rustls has no
/// equivalent, so they are ignored with a warning rather than rejected.
const SSL_IGNORED_KEYS: &[&str] = &["ssl_version", "ciphers"];

/// `[rabbit] transport`: where the messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// AMQP 0-9-1 to an exchange and queue (the default).
    Queue,
    /// The stream protocol to `stream = NAME` (design §14.2).
    Stream,
}

/// Checks every key and builds the config; `None` when something required
/// could not be built (the reason is in `rep.errors`).
pub(super) fn validate(
    sections: &HashMap<String, Section>,
    path: &Path,
    rep: &mut Report<'_>,
) -> Option<RabbitConfig> {
    let rabbit = rabbit_section(sections, rep)?;
    for (key, _) in &rabbit.entries {
        if !RABBIT_KEYS.contains(&key.as_str()) {
            rep.error(RABBIT, Some(key), unknown_key_message(key, RABBIT_KEYS));
        }
    }
    let transport = transport(rabbit, rep);
    let login = login(rabbit, transport, rep);
    // AMQP short strings: longer ones cannot be sent at all.
    for key in ["vhost", "queue", "routing_key", "exchange"] {
        if let Lookup::Value(v) = rabbit.get(key) {
            check_short_string(rep, RABBIT, key, v);
        }
    }
    let use_ssl = bool_key(rabbit, RABBIT, "use_ssl", rep).unwrap_or(false);
    let persistent = bool_key(rabbit, RABBIT, "persistent", rep).unwrap_or(true);
    let vhost = rabbit.optional("vhost").unwrap_or("/").to_owned();
    let (queue, routing_key) = routing(rabbit, login.exchange.as_deref(), transport, rep);

    let queue_options = match sections.get(QUEUE_OPTIONS) {
        Some(sec) => queue_options(sec, rep),
        None => QueueOptions::default(),
    };
    let tls = match (use_ssl, sections.get(SSL_OPTIONS)) {
        (true, sec) => tls_options(sec, path, rep),
        (false, Some(sec)) if !sec.entries.is_empty() => {
            rep.warn(
                SSL_OPTIONS,
                None,
                "ignored because use_ssl is false in [rabbit]",
            );
            None
        }
        (false, _) => None,
    };
    let stream = match transport? {
        Transport::Queue => {
            warn_stream_settings_ignored(sections, rabbit, rep);
            None
        }
        Transport::Stream => Some(stream_config(sections, rabbit, use_ssl, rep)?),
    };

    Some(RabbitConfig {
        path: path.to_path_buf(),
        endpoints: login.endpoints,
        username: login.username?,
        password: login.password?,
        vhost,
        tls,
        queue,
        routing_key,
        exchange: login.exchange?,
        persistent,
        queue_options,
        stream,
    })
}

/// `[rabbit]`, or an error that names a near miss such as `[Rabbit]`.
fn rabbit_section<'s>(
    sections: &'s HashMap<String, Section>,
    rep: &mut Report<'_>,
) -> Option<&'s Section> {
    if let Some(rabbit) = sections.get(RABBIT) {
        return Some(rabbit);
    }
    // Warnings are dropped on error, so a near miss is named here.
    let near = rep
        .warnings
        .iter()
        .filter_map(|w| w.section.as_deref())
        .find(|s| s.eq_ignore_ascii_case(RABBIT) || edit_distance(s, RABBIT) <= 2)
        .map(|s| format!("; found [{s}], section names are case-sensitive"))
        .unwrap_or_default();
    rep.error(
        RABBIT,
        None,
        format!("section is missing (it holds host, port, username, password and exchange{near})"),
    );
    None
}

/// `transport = queue | stream` (default queue); `None` when the value is
/// neither (reported), so no transport's own rules are applied.
fn transport(rabbit: &Section, rep: &mut Report<'_>) -> Option<Transport> {
    let Some(v) = rabbit.optional("transport") else {
        return match rabbit.get("transport") {
            Lookup::Failed => None,
            _ => Some(Transport::Queue),
        };
    };
    match v.trim().to_ascii_lowercase().as_str() {
        "queue" => Some(Transport::Queue),
        "stream" => Some(Transport::Stream),
        _ => {
            rep.error(
                RABBIT,
                Some("transport"),
                format!("{v:?} is not one of queue, stream"),
            );
            None
        }
    }
}

/// Where and as whom to connect: the required keys (every missing one is
/// reported), the host list with its ports, and the exchange (not required
/// for a stream). `None` fields are missing or bad.
struct Login {
    endpoints: Vec<Endpoint>,
    username: Option<String>,
    password: Option<String>,
    exchange: Option<String>,
}

fn login(rabbit: &Section, transport: Option<Transport>, rep: &mut Report<'_>) -> Login {
    let required = |key: &str, rep: &mut Report<'_>| -> Option<String> {
        match rabbit.get(key) {
            Lookup::Missing => {
                let msg = if key == "exchange" {
                    "missing (required; leave it empty, `exchange =`, for the default exchange)"
                } else {
                    "missing (required)"
                };
                rep.error(RABBIT, Some(key), msg);
                None
            }
            Lookup::Failed => None,
            Lookup::Value(v) => Some(v.to_owned()),
        }
    };
    let port_raw = required("port", rep);
    let host_raw = required("host", rep);
    let username = required("username", rep);
    let password = required("password", rep);
    let exchange = match transport {
        Some(Transport::Queue) => required("exchange", rep),
        // A stream has no exchange; a bad transport is reported already.
        _ => match rabbit.get("exchange") {
            Lookup::Failed => None,
            Lookup::Missing => Some(String::new()),
            Lookup::Value(v) => Some(v.to_owned()),
        },
    };

    let port = port_raw.as_deref().and_then(|p| match parse_port(p) {
        Ok(n) => Some(n),
        Err(e) => {
            rep.error(RABBIT, Some("port"), e);
            None
        }
    });
    let mut endpoints = Vec::new();
    if let Some(h) = &host_raw {
        let (eps, errs) = parse_hosts(h, port);
        for e in errs {
            rep.error(RABBIT, Some("host"), e);
        }
        endpoints = eps;
    }
    if username.as_deref() == Some("") {
        rep.error(RABBIT, Some("username"), "is empty");
    }
    if password.as_deref() == Some("") {
        rep.error(RABBIT, Some("password"), "is empty");
    }
    Login {
        endpoints,
        username,
        password,
        exchange,
    }
}

/// The queue and the routing key (default: the queue name). With the
/// queue transport and the default exchange, one of them must name a queue.
fn routing(
    rabbit: &Section,
    exchange: Option<&str>,
    transport: Option<Transport>,
    rep: &mut Report<'_>,
) -> (Option<String>, String) {
    let queue = rabbit.optional("queue").map(str::to_owned);
    let routing_key = rabbit
        .optional("routing_key")
        .map(str::to_owned)
        .or_else(|| queue.clone())
        .unwrap_or_default();
    if transport == Some(Transport::Queue)
        && exchange == Some("")
        && routing_key.is_empty()
        && matches!(rabbit.get("queue"), Lookup::Missing | Lookup::Value(_))
        && matches!(
            rabbit.get("routing_key"),
            Lookup::Missing | Lookup::Value(_)
        )
    {
        rep.error(
            RABBIT,
            Some("routing_key"),
            "is empty and so is queue: with the default exchange (exchange empty) \
             the routing key must name a queue",
        );
    }
    (queue, routing_key)
}

/// Reports a value that is too long to be an AMQP short string.
pub(super) fn check_short_string(rep: &mut Report<'_>, section: &str, key: &str, value: &str) {
    if value.len() > MAX_SHORT_STRING {
        rep.error(
            section,
            Some(key),
            format!(
                "is {} bytes long; AMQP allows at most {MAX_SHORT_STRING} bytes here",
                value.len()
            ),
        );
    }
}

/// An optional boolean key; a bad value is reported and gives `None`.
fn bool_key(sec: &Section, section: &str, key: &str, rep: &mut Report<'_>) -> Option<bool> {
    match sec.get(key) {
        Lookup::Value(v) => {
            let b = parse_bool(v);
            if b.is_none() {
                rep.error(section, Some(key), bool_problem(v));
            }
            b
        }
        _ => None,
    }
}

/// The flags of `[rabbit_queue_options]`; every other key is an `x-` argument.
const QUEUE_FLAGS: &[&str] = &["durable", "exclusive", "auto_delete", "passive"];

/// `[rabbit_queue_options]`: four booleans, every `x-` key a typed argument;
/// any other key is an error (`durabel = true` would otherwise be sent as
/// an argument and the queue created non-durable).
fn queue_options(sec: &Section, rep: &mut Report<'_>) -> QueueOptions {
    let mut opts = QueueOptions {
        durable: bool_key(sec, QUEUE_OPTIONS, "durable", rep),
        exclusive: bool_key(sec, QUEUE_OPTIONS, "exclusive", rep),
        auto_delete: bool_key(sec, QUEUE_OPTIONS, "auto_delete", rep),
        passive: bool_key(sec, QUEUE_OPTIONS, "passive", rep),
        arguments: Vec::new(),
    };
    for (key, value) in &sec.entries {
        if QUEUE_FLAGS.contains(&key.as_str()) {
            continue;
        }
        if !key.starts_with("x-") {
            let known = unknown_key_message(key, QUEUE_FLAGS);
            rep.error(
                QUEUE_OPTIONS,
                Some(key),
                format!("{known}; queue arguments start with \"x-\", e.g. x-queue-type"),
            );
            continue;
        }
        check_short_string(rep, QUEUE_OPTIONS, key, key);
        let Some(value) = value else { continue };
        if value.is_empty() {
            rep.error(QUEUE_OPTIONS, Some(key), "has no value");
            continue;
        }
        let arg = match value.parse::<i64>() {
            Ok(n) => QueueArg::Int(n),
            Err(_) if value.eq_ignore_ascii_case("true") => QueueArg::Bool(true),
            Err(_) if value.eq_ignore_ascii_case("false") => QueueArg::Bool(false),
            Err(_) => QueueArg::Str(value.clone()),
        };
        opts.arguments.push((key.clone(), arg));
    }
    opts
}

/// `[ssl_options]` when `use_ssl` is true; the section may be absent
/// (system roots, no client certificate).
fn tls_options(sec: Option<&Section>, path: &Path, rep: &mut Report<'_>) -> Option<TlsOptions> {
    let empty = Section {
        entries: Vec::new(),
        literal: Vec::new(),
    };
    let sec = sec.unwrap_or(&empty);
    for (key, _) in &sec.entries {
        if SSL_IGNORED_KEYS.contains(&key.as_str()) {
            rep.warn(
                SSL_OPTIONS,
                Some(key),
                "ignored: rustls negotiates TLS 1.2 or 1.3 with its own cipher suites",
            );
        } else if !SSL_KEYS.contains(&key.as_str()) {
            rep.error(SSL_OPTIONS, Some(key), unknown_key_message(key, SSL_KEYS));
        }
    }
    let base = path.parent().unwrap_or(Path::new(""));
    // Reads a PEM file and checks it holds `marker`; `None` when it can't.
    let pem = |key: &str, marker: &str, what: &str, rep: &mut Report<'_>| {
        let value = sec.optional(key)?;
        let file = base.join(value);
        let bytes = match std::fs::metadata(&file) {
            Ok(m) if m.is_dir() => Err(format!("{} is a directory", file.display())),
            _ => std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display())),
        };
        match bytes {
            Ok(b) => {
                if memchr::memmem::find(&b, marker.as_bytes()).is_none() {
                    rep.error(
                        SSL_OPTIONS,
                        Some(key),
                        format!(
                            "{} holds no PEM {what} ({marker:?} not found)",
                            file.display()
                        ),
                    );
                    None
                } else {
                    let has_key = memchr::memmem::find(&b, b"PRIVATE KEY-----").is_some();
                    Some((file, has_key))
                }
            }
            Err(e) => {
                rep.error(SSL_OPTIONS, Some(key), e);
                None
            }
        }
    };
    // Given = a non-empty value, or one whose interpolation failed.
    let given = |key: &str| sec.optional(key).is_some() || matches!(sec.get(key), Lookup::Failed);
    let ca_certs = pem("ca_certs", "CERTIFICATE-----", "certificate", rep).map(|(f, _)| f);
    let cert = pem("certfile", "CERTIFICATE-----", "certificate", rep);
    let mut keyfile = pem("keyfile", "PRIVATE KEY-----", "private key", rep).map(|(f, _)| f);
    let certfile = cert.as_ref().map(|(f, _)| f.clone());
    // Like Python's load_cert_chain: a certfile may carry its own key.
    match (&cert, &keyfile) {
        (Some((f, true)), None) if !given("keyfile") => keyfile = Some(f.clone()),
        (Some(_), None) if !given("keyfile") => {
            rep.error(
                SSL_OPTIONS,
                Some("certfile"),
                "given without keyfile (client certificate auth needs both, or a \
                 certfile that also holds the private key)",
            );
        }
        (None, Some(_)) if !given("certfile") => {
            rep.error(
                SSL_OPTIONS,
                Some("keyfile"),
                "given without certfile (client certificate auth needs both)",
            );
        }
        _ => {}
    }
    let server_hostname = sec
        .optional("server_hostname")
        .and_then(|h| match check_host_name(h) {
            Ok(()) => Some(h.to_owned()),
            Err(_) if h.parse::<Ipv6Addr>().is_ok() => Some(h.to_owned()),
            Err(e) => {
                rep.error(SSL_OPTIONS, Some("server_hostname"), e);
                None
            }
        });
    let cert_reqs = match sec.optional("cert_reqs") {
        None => CertReqs::Required,
        Some(v) => match v.trim().to_ascii_uppercase().as_str() {
            "CERT_REQUIRED" => CertReqs::Required,
            "CERT_OPTIONAL" => CertReqs::Optional,
            "CERT_NONE" => CertReqs::None,
            _ => {
                rep.error(
                    SSL_OPTIONS,
                    Some("cert_reqs"),
                    format!("{v:?} is not one of CERT_REQUIRED, CERT_OPTIONAL, CERT_NONE"),
                );
                CertReqs::Required
            }
        },
    };
    Some(TlsOptions {
        ca_certs,
        certfile,
        keyfile,
        server_hostname,
        cert_reqs,
    })
}

/// Parses `true/false/yes/no/on/off/1/0`, any case.
fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

fn bool_problem(value: &str) -> String {
    format!("{value:?} is not a boolean (use true/false, yes/no, on/off or 1/0)")
}

pub(super) fn unknown_key_message(key: &str, known: &[&str]) -> String {
    match known.iter().min_by_key(|k| edit_distance(k, key)) {
        Some(k) if edit_distance(k, key) <= 3 => {
            format!("unknown key (did you mean {k}?)")
        }
        _ => format!("unknown key (known keys: {})", known.join(", ")),
    }
}

/// Number of single-character edits between two short strings (for "did you
/// mean" hints).
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_util::*;
    use crate::config::{Problem, check};
    use std::io::Write as _;
    use std::path::PathBuf;

    #[test]
    fn every_problem_is_reported_in_one_run() {
        let text = "\
[rabbit]
host = bad host!,rmq2:99999
port = 70000
use_ssl = maybe
password = ${NOPE}
hots = typo
[rabbit_queue_options]
durable = sure
[ssl_options]
cert_reqs = CERT_SOMETIMES
";
        let lines = errors(text);
        let want = [
            ("test.ini: [rabbit] port: ", "not a port number"),
            (
                "test.ini: [rabbit] host: ",
                "\"bad host!\" is not a valid host name",
            ),
            (
                "test.ini: [rabbit] host: ",
                "\"99999\" is not a port number",
            ),
            ("test.ini: [rabbit] username: ", "missing"),
            ("test.ini: [rabbit] exchange: ", "missing"),
            ("test.ini: [rabbit] password: ", "NOPE is not set"),
            ("test.ini: [rabbit] use_ssl: ", "not a boolean"),
            ("test.ini: [rabbit] hots: ", "did you mean host?"),
            (
                "test.ini: [rabbit_queue_options] durable: ",
                "not a boolean",
            ),
        ];
        for (prefix, needle) in want {
            assert!(
                has(&lines, prefix, needle),
                "no {prefix}{needle} in {lines:#?}"
            );
        }
        // use_ssl is bad, so [ssl_options] is not checked (nor warned about).
        assert!(!lines.iter().any(|l| l.contains("cert_reqs")), "{lines:#?}");
        // The password key is missing once, not also "missing" after failing.
        assert_eq!(lines.iter().filter(|l| l.contains("password")).count(), 1);
    }

    #[test]
    fn missing_rabbit_section() {
        let lines = errors("[other]\nhost = x\n");
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(lines[0].starts_with("test.ini: [rabbit]: section is missing"));
        let lines = errors("[Rabbit]\nhost = x\n");
        assert!(lines[0].contains("found [Rabbit]"), "{lines:#?}");
    }

    #[test]
    fn missing_required_keys_each_named() {
        let lines = errors("[rabbit]\n");
        for key in ["host", "port", "username", "password", "exchange"] {
            assert!(
                has(&lines, &format!("test.ini: [rabbit] {key}: "), "missing"),
                "{key}: {lines:#?}"
            );
        }
        assert_eq!(lines.len(), 5);
    }

    #[test]
    fn exchange_may_be_empty_but_not_missing() {
        assert_eq!(ok(&base("")).config.exchange, "");
        let text = base("").replace("exchange =\n", "");
        assert!(has(
            &errors(&text),
            "test.ini: [rabbit] exchange: ",
            "missing"
        ));
    }

    #[test]
    fn booleans_false_spellings() {
        for f in ["False", "no", "0", "OFF", " false "] {
            let c = ok(&base(&format!(
                "persistent = {f}\n[rabbit_queue_options]\ndurable = {f}\nexclusive = {f}\n\
                 auto_delete = {f}\npassive = {f}\n"
            )))
            .config;
            assert!(!c.persistent, "{f}");
            let q = c.queue_options;
            assert_eq!(
                (q.durable, q.exclusive, q.auto_delete, q.passive),
                (Some(false), Some(false), Some(false), Some(false)),
                "{f}"
            );
        }
        for t in ["True", "YES", "1", "on"] {
            let q = ok(&base(&format!("[rabbit_queue_options]\ndurable = {t}\n")))
                .config
                .queue_options;
            assert_eq!(q.durable, Some(true), "{t}");
        }
    }

    #[test]
    fn bad_boolean_in_queue_options() {
        let lines = errors(&base("[rabbit_queue_options]\nauto_delete = nope\n"));
        assert!(has(
            &lines,
            "test.ini: [rabbit_queue_options] auto_delete: ",
            "\"nope\" is not a boolean"
        ));
    }

    #[test]
    fn x_arguments_are_typed_in_file_order() {
        let c = ok(&base(
            "[rabbit_queue_options]\nx-queue-type = quorum\nX-Max-Length = 1000\n\
             x-message-ttl = -5\nx-ratio = 1.5\n",
        ));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(
            c.config.queue_options.arguments,
            vec![
                ("x-queue-type".into(), QueueArg::Str("quorum".into())),
                ("x-max-length".into(), QueueArg::Int(1000)),
                ("x-message-ttl".into(), QueueArg::Int(-5)),
                ("x-ratio".into(), QueueArg::Str("1.5".into())),
            ]
        );
    }

    #[test]
    fn boolean_queue_arguments_are_booleans() {
        let c = ok(&base(
            "[rabbit_queue_options]\nx-single-active-consumer = True\nx-other = false\n",
        ));
        assert_eq!(
            c.config.queue_options.arguments,
            vec![
                ("x-single-active-consumer".into(), QueueArg::Bool(true)),
                ("x-other".into(), QueueArg::Bool(false)),
            ]
        );
    }

    #[test]
    fn queue_option_without_x_prefix_is_an_error_with_the_closest_flag() {
        let lines = errors(&base(
            "[rabbit_queue_options]\ndurabel = true\nmaxlength = 5\nx-max-length = 5\n",
        ));
        assert!(
            has(
                &lines,
                "test.ini: [rabbit_queue_options] durabel: ",
                "unknown key (did you mean durable?)"
            ),
            "{lines:#?}"
        );
        assert!(has(
            &lines,
            "test.ini: [rabbit_queue_options] maxlength: ",
            "queue arguments start with \"x-\""
        ));
        assert_eq!(lines.len(), 2, "x-max-length is fine: {lines:#?}");
    }

    #[test]
    fn unknown_keys_are_errors_and_unknown_sections_warnings() {
        let lines = errors(&base("usename = x\n"));
        assert!(has(
            &lines,
            "test.ini: [rabbit] usename: ",
            "did you mean username?"
        ));
        // A near miss of a known section would drop its settings: an error.
        let lines = errors(&base("[rabit_queue_options]\ndurable = true\n"));
        assert!(
            has(
                &lines,
                "test.ini: [rabit_queue_options]: ",
                "did you mean [rabbit_queue_options]"
            ),
            "{lines:#?}"
        );
        let lines = errors(&base("[SSL_options]\nca_certs = x\n"));
        assert!(has(&lines, "test.ini: [SSL_options]: ", "[ssl_options]"));
        // Another program's section in a shared file: a warning.
        let c = ok(&base("[tstat_cull]\ndays = 7\n"));
        assert_eq!(c.warnings.len(), 1);
        assert!(
            c.warnings[0]
                .to_string()
                .contains("unknown section, ignored")
        );
    }

    #[test]
    fn names_longer_than_an_amqp_short_string_are_all_reported() {
        let long = "q".repeat(256);
        let text = base(&format!(
            "vhost = /{long}\nrouting_key = {long}\nexchange = {long}\n\
             [rabbit_queue_options]\nx-{long} = 1\n"
        ))
        .replace("exchange =\n", "")
        .replace("queue = q", &format!("queue = {long}"));
        let lines = errors(&text);
        for key in ["vhost", "queue", "routing_key", "exchange"] {
            assert!(
                has(
                    &lines,
                    &format!("test.ini: [rabbit] {key}: "),
                    "AMQP allows at most 255 bytes"
                ),
                "{key}: {lines:#?}"
            );
        }
        assert!(has(
            &lines,
            &format!("test.ini: [rabbit_queue_options] x-{long}: "),
            "is 258 bytes long"
        ));
        assert_eq!(lines.len(), 5, "{lines:#?}");
        // 255 bytes is fine; a multi-byte character counts as its bytes.
        let ok255 = base("").replace("queue = q", &format!("queue = {}", "q".repeat(255)));
        assert_eq!(ok(&ok255).config.queue.map(|q| q.len()), Some(255));
        let wide = base("").replace("queue = q", &format!("queue = {}", "é".repeat(128)));
        assert!(has(
            &errors(&wide),
            "test.ini: [rabbit] queue: ",
            "256 bytes"
        ));
    }

    #[test]
    fn routing_key_defaults_to_queue_and_empty_queue_is_none() {
        let c = ok(&base("routing_key =\n")).config;
        assert_eq!(c.routing_key, "q");
        let text = base("routing_key = rk\n").replace("queue = q", "queue =");
        let c = ok(&text).config;
        assert_eq!((c.queue, c.routing_key.as_str()), (None, "rk"));
        // Default exchange and nothing to route to: an error.
        let text = base("").replace("queue = q", "queue =");
        assert!(has(
            &errors(&text),
            "test.ini: [rabbit] routing_key: ",
            "must name a queue"
        ));
    }

    fn pem_file(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        let mut f = std::fs::File::create(&p).unwrap();
        f.write_all(body.as_bytes()).unwrap();
        p
    }

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

    #[test]
    fn tls_files_resolved_relative_to_the_config_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        pem_file(dir.path(), "ca.pem", CERT);
        pem_file(dir.path(), "client.pem", CERT);
        pem_file(dir.path(), "client.key", KEY);
        let cfg = dir.path().join("config.ini");
        let text = base(
            "use_ssl = yes\n[ssl_options]\nca_certs = ca.pem\ncertfile = client.pem\n\
             keyfile = client.key\nserver_hostname = rabbit.example.net\ncert_reqs = cert_none\n",
        );
        let c = check(&text, &cfg, &no_env).unwrap().config;
        let tls = c.tls.unwrap();
        assert_eq!(tls.ca_certs, Some(dir.path().join("ca.pem")));
        assert_eq!(tls.keyfile, Some(dir.path().join("client.key")));
        assert_eq!(tls.server_hostname.as_deref(), Some("rabbit.example.net"));
        assert_eq!(tls.cert_reqs, CertReqs::None);
    }

    #[test]
    fn tls_problems_all_reported() {
        let dir = tempfile::tempdir().unwrap();
        pem_file(dir.path(), "cert.pem", CERT);
        pem_file(dir.path(), "notpem.txt", "hello");
        let cfg = dir.path().join("c.ini");
        let run = |ssl: &str| -> Vec<String> {
            let text = base(&format!("use_ssl = true\n[ssl_options]\n{ssl}"));
            match check(&text, &cfg, &no_env) {
                Ok(_) => panic!("accepted {ssl}"),
                Err(e) => e.problems.iter().map(Problem::to_string).collect(),
            }
        };
        let p = format!("{}: [ssl_options] ", cfg.display());
        let lines = run("ca_certs = missing.pem\ncert_reqs = CERT_MAYBE\nverify = 1\n");
        assert!(
            has(&lines, &format!("{p}ca_certs: "), "cannot read"),
            "{lines:#?}"
        );
        assert!(has(&lines, &format!("{p}cert_reqs: "), "not one of"));
        assert!(has(&lines, &format!("{p}verify: "), "unknown key"));
        let lines = run("certfile = cert.pem\n");
        assert!(has(&lines, &format!("{p}certfile: "), "without keyfile"));
        let lines = run("keyfile = cert.pem\n");
        assert!(has(&lines, &format!("{p}keyfile: "), "no PEM private key"));
        let lines = run("ca_certs = notpem.txt\nkeyfile = .\n");
        assert!(has(&lines, &format!("{p}ca_certs: "), "no PEM certificate"));
        assert!(has(&lines, &format!("{p}keyfile: "), "is a directory"));
    }

    #[test]
    fn certfile_holding_its_key_stands_alone() {
        let dir = tempfile::tempdir().unwrap();
        let both = pem_file(dir.path(), "both.pem", &format!("{CERT}{KEY}"));
        let text = base(&format!(
            "use_ssl = on\n[ssl_options]\ncertfile = {}\n",
            both.display()
        ));
        let tls = ok(&text).config.tls.unwrap();
        assert_eq!(tls.keyfile, Some(both));
        assert_eq!(tls.cert_reqs, CertReqs::Required);
    }

    #[test]
    fn ssl_options_ignored_with_a_warning_when_tls_is_off() {
        let c = ok(&base("[ssl_options]\nca_certs = /nonexistent.pem\n"));
        assert!(c.config.tls.is_none());
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].to_string().contains("use_ssl is false"));
    }
}
