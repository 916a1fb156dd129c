//! The `config.ini` file (design §7): reading with rust-ini, `${VAR}`
//! interpolation, and validation of every key before anything is touched.
//! It owns the typed broker settings; it never opens a connection.
//!
//! Rules decided here (and explained in `config.ini.example`):
//!
//! - Comments: a line whose first non-blank character is `#` or `;` is a
//!   comment, and so is everything from a `#` or `;` that follows a space or
//!   tab (`host = x   # note`). rust-ini only does that with a cargo feature
//!   we do not enable, so the text is cleaned before rust-ini reads it.
//!   A value that must contain ` #` or ` ;` can come from `${VAR}`.
//! - Values are literal: no quotes, no backslash escapes (passwords and paths
//!   are taken as written). Key names are case-insensitive (as in Python's
//!   configparser), section names are not.
//! - `${VAR}` / `${VAR:default}` are replaced from the environment, once, no
//!   nesting; a set but empty variable gives an empty value; `$${` is a
//!   literal `${`; any other `$` is literal.
//! - An optional text or path key with an empty value counts as absent; a
//!   boolean or number key, once present, must be valid.
//! - Unknown keys in `[rabbit]`, `[ssl_options]` and `[rabbit_queue_options]`
//!   (other than `x-` arguments) are errors, with the closest known key: a
//!   typo would otherwise be silently ignored. A section whose name is close
//!   to a known one (`[rabit_queue_options]`) is an error too; other
//!   unknown sections are warnings (the file may be shared).
//! - Queue, exchange, routing key, vhost and argument names longer than an
//!   AMQP short string (255 bytes) are errors.
//! - A password written in a file that others can read gets a warning.
//! - `[ssl_options]` is only checked when `use_ssl` is true; otherwise it is
//!   ignored with a warning. Relative certificate paths are relative to the
//!   directory of the config file.
//! - Problems never quote the password.

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// One broker address from `host = a,b:5673`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or IP address.
    pub host: String,
    /// TCP port (from `host` when given there, else `port`).
    pub port: u16,
}

/// How the server certificate is checked (`cert_reqs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CertReqs {
    /// Verify the chain and the host name (default; `CERT_REQUIRED`).
    #[default]
    Required,
    /// Verify when offered (`CERT_OPTIONAL`); treated as `Required` for a server cert.
    Optional,
    /// No verification (`CERT_NONE`): a warning is printed on every run.
    None,
}

/// `[ssl_options]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file with the CA certificates to trust; system roots when absent.
    pub ca_certs: Option<PathBuf>,
    /// PEM client certificate chain.
    pub certfile: Option<PathBuf>,
    /// PEM client private key.
    pub keyfile: Option<PathBuf>,
    /// Name to verify instead of the host name.
    pub server_hostname: Option<String>,
    /// Verification mode.
    pub cert_reqs: CertReqs,
}

/// A typed `x-` queue argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueArg {
    /// A value that parsed as an integer.
    Int(i64),
    /// `true` or `false` (any case): RabbitMQ wants booleans for arguments
    /// such as `x-single-active-consumer`.
    Bool(bool),
    /// Anything else.
    Str(String),
}

/// `[rabbit_queue_options]`; `None` fields were not given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueOptions {
    /// `durable`.
    pub durable: Option<bool>,
    /// `exclusive`.
    pub exclusive: Option<bool>,
    /// `auto_delete`.
    pub auto_delete: Option<bool>,
    /// `passive`.
    pub passive: Option<bool>,
    /// Every other key, in file order, e.g. `x-queue-type = quorum`.
    pub arguments: Vec<(String, QueueArg)>,
}

impl QueueOptions {
    /// True when the section was absent or empty (design §6.4 default rule).
    pub fn is_empty(&self) -> bool {
        self.durable.is_none()
            && self.exclusive.is_none()
            && self.auto_delete.is_none()
            && self.passive.is_none()
            && self.arguments.is_empty()
    }
}

/// The validated `[rabbit]` settings.
#[derive(Clone, PartialEq, Eq)]
pub struct RabbitConfig {
    /// The file it came from (for messages).
    pub path: PathBuf,
    /// Brokers in failover order.
    pub endpoints: Vec<Endpoint>,
    /// User name.
    pub username: String,
    /// Password; never printed (see the `Debug` impl).
    pub password: String,
    /// Virtual host (default `/`).
    pub vhost: String,
    /// TLS settings when `use_ssl = true`.
    pub tls: Option<TlsOptions>,
    /// Queue to check/declare; `None` when empty.
    pub queue: Option<String>,
    /// Routing key for publishing (default: the queue name).
    pub routing_key: String,
    /// Exchange; empty is the default exchange.
    pub exchange: String,
    /// `delivery_mode = 2` unless `persistent = false`.
    pub persistent: bool,
    /// Queue declaration options.
    pub queue_options: QueueOptions,
}

impl std::fmt::Debug for RabbitConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitConfig")
            .field("path", &self.path)
            .field("endpoints", &self.endpoints)
            .field("username", &self.username)
            .field("password", &"***")
            .field("vhost", &self.vhost)
            .field("tls", &self.tls)
            .field("queue", &self.queue)
            .field("routing_key", &self.routing_key)
            .field("exchange", &self.exchange)
            .field("persistent", &self.persistent)
            .field("queue_options", &self.queue_options)
            .finish()
    }
}

impl fmt::Display for Endpoint {
    /// `host:port`, with an IPv6 address in brackets (`[::1]:5672`), ready
    /// for an `amqp://` URI or a message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl CertReqs {
    /// The name used in the config file (`CERT_REQUIRED`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            CertReqs::Required => "CERT_REQUIRED",
            CertReqs::Optional => "CERT_OPTIONAL",
            CertReqs::None => "CERT_NONE",
        }
    }
}

impl fmt::Display for QueueArg {
    /// The value as written in the config file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueArg::Int(n) => write!(f, "{n}"),
            QueueArg::Bool(b) => write!(f, "{b}"),
            QueueArg::Str(s) => f.write_str(s),
        }
    }
}

/// One problem with the config file, located as precisely as known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The config file.
    pub file: PathBuf,
    /// The section, when the problem is in one.
    pub section: Option<String>,
    /// The key, when the problem is about one.
    pub key: Option<String>,
    /// What is wrong and, where it helps, how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    /// `FILE: [section] key: message`, leaving out what is not known, so a
    /// program can print `prog: error: ` in front of each line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        match (&self.section, &self.key) {
            (Some(s), Some(k)) => write!(f, "[{s}] {k}: ")?,
            (Some(s), None) => write!(f, "[{s}]: ")?,
            (None, Some(k)) => write!(f, "{k}: ")?,
            (None, None) => {}
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a config file, reported together so one edit can
/// fix them all. `Display` prints one problem per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in the order they were found (never empty).
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// A valid config and the warnings found while checking it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The validated settings.
    pub config: RabbitConfig,
    /// Things that are allowed but probably not meant (unknown section, a
    /// file readable by others that holds a password, `[ssl_options]` while
    /// `use_ssl` is off).
    pub warnings: Vec<Problem>,
    /// The password (or part of it) is written in the file rather than
    /// taken from the environment.
    pub password_in_file: bool,
}

/// Looks a variable up in the process environment; the default lookup for
/// `${VAR}`. A value that is not UTF-8 counts as unset.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Reads and validates `path`, looking `${VAR}` up with `env` (usually
/// [`process_env`]); the caller prints the warnings. A file that cannot be
/// read is one problem naming the file and the OS reason. A file that holds
/// a password and that others can read gets a warning.
pub fn load_with_env(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Checked, ConfigError> {
    let read = || -> std::io::Result<(String, std::fs::Metadata)> {
        use std::io::Read as _;
        let mut file = std::fs::File::open(path)?;
        let meta = file.metadata()?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        Ok((text, meta))
    };
    match read() {
        Ok((text, meta)) => {
            let mut checked = check(&text, path, env)?;
            if checked.password_in_file
                && let Some(who) = readable_by_others(&meta)
            {
                checked.warnings.push(Problem {
                    file: path.to_path_buf(),
                    section: Some(RABBIT.into()),
                    key: Some("password".into()),
                    message: format!(
                        "the file holds a password and is readable by {who} (mode {:04o}): \
                         chmod 600 {}, or write password = ${{RABBIT_PASSWORD}} and set that \
                         variable",
                        meta.permissions().mode() & 0o7777,
                        path.display()
                    ),
                });
            }
            Ok(checked)
        }
        Err(e) => Err(ConfigError {
            problems: vec![Problem {
                file: path.to_path_buf(),
                section: None,
                key: None,
                message: format!("cannot read the config file: {e}"),
            }],
        }),
    }
}

/// Who besides its owner can read a file: "others", "its group" or both;
/// `None` when nobody else can. Group access is not counted when it is how
/// this process reads a file that belongs to another user (a service's
/// `root:tstat 0640` config): then it is needed, not an oversight.
fn readable_by_others(meta: &std::fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::MetadataExt as _;
    let mode = meta.permissions().mode();
    // SAFETY: geteuid and getegid have no preconditions and cannot fail.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let read_through_group = meta.uid() != euid && meta.gid() == egid;
    let group = mode & 0o040 != 0 && !read_through_group;
    let others = mode & 0o004 != 0;
    match (group, others) {
        (true, true) => Some("its group and others"),
        (false, true) => Some("others"),
        (true, false) => Some("its group"),
        (false, false) => None,
    }
}

const RABBIT: &str = "rabbit";
const QUEUE_OPTIONS: &str = "rabbit_queue_options";
const SSL_OPTIONS: &str = "ssl_options";

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

/// Collects errors and warnings while checking.
struct Report<'a> {
    file: &'a Path,
    errors: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Report<'_> {
    fn problem(&self, section: Option<&str>, key: Option<&str>, message: String) -> Problem {
        Problem {
            file: self.file.to_path_buf(),
            section: section.map(str::to_owned),
            key: key.map(str::to_owned),
            message,
        }
    }

    fn error(&mut self, section: &str, key: Option<&str>, message: impl Into<String>) {
        let p = self.problem(Some(section), key, message.into());
        self.errors.push(p);
    }

    fn warn(&mut self, section: &str, key: Option<&str>, message: impl Into<String>) {
        let p = self.problem(Some(section), key, message.into());
        self.warnings.push(p);
    }
}

/// A section after interpolation: keys lower-cased, in file order. `None`
/// marks a value whose interpolation failed (already reported), so later
/// checks stay quiet about it instead of piling on.
struct Section {
    entries: Vec<(String, Option<String>)>,
    /// Keys whose value takes text from the file, not only from the
    /// environment (see [`has_literal_text`]).
    literal: Vec<String>,
}

/// What a key lookup found.
enum Lookup<'s> {
    Missing,
    Failed,
    Value(&'s str),
}

impl Section {
    fn get(&self, key: &str) -> Lookup<'_> {
        match self.entries.iter().find(|(k, _)| k == key) {
            None => Lookup::Missing,
            Some((_, None)) => Lookup::Failed,
            Some((_, Some(v))) => Lookup::Value(v),
        }
    }

    /// The value of an optional text key; empty counts as absent.
    fn optional(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Lookup::Value(v) if !v.is_empty() => Some(v),
            _ => None,
        }
    }
}

/// Validates config text, looking `${VAR}` up with `env`, and returns the
/// config with its warnings, or every problem found.
pub fn check(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Checked, ConfigError> {
    let mut rep = Report {
        file: path,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let sections = read_sections(text, env, &mut rep);
    let password_in_file = sections
        .as_ref()
        .and_then(|s| s.get(RABBIT))
        .is_some_and(|r| r.literal.iter().any(|k| k == "password"));
    let config = sections.and_then(|s| validate(&s, path, &mut rep));
    match config {
        Some(config) if rep.errors.is_empty() => Ok(Checked {
            config,
            warnings: rep.warnings,
            password_in_file,
        }),
        _ => Err(ConfigError {
            problems: rep.errors,
        }),
    }
}

/// Strips comments, flags lines that are not `[section]` or `key = value`,
/// and keeps the line count so rust-ini's line numbers stay right.
fn clean_text(text: &str, rep: &mut Report<'_>) -> String {
    let mut out = String::with_capacity(text.len());
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (n, line) in text.lines().enumerate() {
        let line = strip_comment(line).trim();
        let ok = line.is_empty()
            || (line.starts_with('[') && line.ends_with(']'))
            || (!line.starts_with('[')
                && line
                    .find(['=', ':'])
                    .is_some_and(|i| !line[..i].trim().is_empty()));
        if ok {
            out.push_str(line);
        } else {
            let what = if line.starts_with('[') {
                "a section header must end with ']'"
            } else {
                "expected `key = value`, `[section]` or a comment"
            };
            let p = rep.problem(None, None, format!("line {}: {what}", n + 1));
            rep.errors.push(p);
        }
        out.push('\n');
    }
    out
}

/// Cuts a line at a comment: a leading `#`/`;`, or one after a blank.
fn strip_comment(line: &str) -> &str {
    let t = line.trim_start();
    if t.starts_with('#') || t.starts_with(';') {
        return "";
    }
    let b = line.as_bytes();
    for i in 1..b.len() {
        if (b[i] == b'#' || b[i] == b';') && (b[i - 1] == b' ' || b[i - 1] == b'\t') {
            return &line[..i];
        }
    }
    line
}

/// Parses with rust-ini and interpolates every value of the sections we
/// use. Returns `None` when the text could not be parsed at all.
fn read_sections(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    rep: &mut Report<'_>,
) -> Option<HashMap<String, Section>> {
    let cleaned = clean_text(text, rep);
    let opt = ini::ParseOption {
        enabled_quote: false,
        enabled_escape: false,
        enabled_indented_mutiline_value: false,
        enabled_preserve_key_leading_whitespace: false,
    };
    let parsed = match ini::Ini::load_from_str_opt(&cleaned, opt) {
        Ok(p) => p,
        Err(e) => {
            let p = rep.problem(
                None,
                None,
                format!("line {} column {}: {}", e.line, e.col, e.msg),
            );
            rep.errors.push(p);
            return None;
        }
    };
    let mut sections: HashMap<String, Section> = HashMap::new();
    let mut unknown: Vec<String> = Vec::new();
    for (name, props) in parsed.iter() {
        let Some(name) = name else {
            for (k, _) in props.iter() {
                let p = rep.problem(
                    None,
                    Some(k),
                    "key outside any section (put it under [rabbit])".into(),
                );
                rep.errors.push(p);
            }
            continue;
        };
        if ![RABBIT, QUEUE_OPTIONS, SSL_OPTIONS].contains(&name) {
            if !unknown.iter().any(|u| u == name) {
                unknown.push(name.to_owned());
            }
            continue;
        }
        let sec = sections.entry(name.to_owned()).or_insert(Section {
            entries: Vec::new(),
            literal: Vec::new(),
        });
        for (k, raw) in props.iter() {
            let key = k.to_ascii_lowercase();
            if sec.entries.iter().any(|(e, _)| *e == key) {
                rep.error(name, Some(&key), "given more than once");
                continue;
            }
            let value = match interpolate(raw, env) {
                Ok(v) => Some(v),
                Err(msgs) => {
                    for m in msgs {
                        rep.error(name, Some(&key), m);
                    }
                    None
                }
            };
            if has_literal_text(raw, env) {
                sec.literal.push(key.clone());
            }
            sec.entries.push((key, value));
        }
    }
    for name in unknown {
        let near = [RABBIT, QUEUE_OPTIONS, SSL_OPTIONS]
            .into_iter()
            .find(|known| known.eq_ignore_ascii_case(&name) || edit_distance(known, &name) <= 2);
        match near {
            // A misspelt section would silently drop its settings. A
            // missing [rabbit] is reported by `validate`, naming this one.
            Some(k) if k != RABBIT || sections.contains_key(RABBIT) => rep.error(
                &name,
                None,
                format!(
                    "unknown section (did you mean [{k}]? section names are case-sensitive; \
                     its settings would be ignored)"
                ),
            ),
            Some(k) => rep.warn(
                &name,
                None,
                format!("unknown section, ignored (did you mean [{k}]?)"),
            ),
            // Another program's section in a shared file is fine.
            None => rep.warn(&name, None, "unknown section, ignored"),
        }
    }
    Some(sections)
}

/// Replaces `${VAR}` and `${VAR:default}`; `$${` is a literal `${`. Errors
/// name variables, never the surrounding text (it may be a password).
fn interpolate(raw: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(raw.len());
    let mut errors = Vec::new();
    let mut rest = raw;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(r) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = r;
        } else if let Some(r) = after.strip_prefix("${") {
            let Some(close) = r.find('}') else {
                errors.push("unterminated \"${\" (write \"$${\" for a literal \"${\")".to_owned());
                return Err(errors);
            };
            let inner = &r[..close];
            let (name, default) = match inner.split_once(':') {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if !is_var_name(name) {
                errors.push(
                    "bad variable name in \"${...}\" (letters, digits and _, not starting \
                     with a digit; write \"$${\" for a literal \"${\")"
                        .to_owned(),
                );
            } else {
                match (env(name), default) {
                    (Some(v), _) => out.push_str(&v),
                    (None, Some(d)) => out.push_str(d),
                    (None, None) => errors.push(format!(
                        "environment variable {name} is not set and ${{{name}}} has no \
                         default (set it, or write ${{{name}:default}})"
                    )),
                }
            }
            rest = &r[close + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// True when a raw value takes text from the file itself, not only from
/// the environment: literal characters, or the default of a `${VAR:default}`
/// whose variable is unset.
fn has_literal_text(raw: &str, env: &dyn Fn(&str) -> Option<String>) -> bool {
    let mut rest = raw.trim();
    while let Some(r) = rest.strip_prefix("${") {
        let Some(close) = r.find('}') else {
            return true;
        };
        if let Some((name, default)) = r[..close].split_once(':')
            && !default.is_empty()
            && env(name).is_none()
        {
            return true;
        }
        rest = r[close + 1..].trim_start();
    }
    !rest.is_empty()
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

/// A TCP port in 1..=65535.
fn parse_port(value: &str) -> Result<u16, String> {
    match value.trim().parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        _ => Err(format!("{value:?} is not a port number (1..65535)")),
    }
}

/// Checks a host name (letters, digits, `-`, `_`, dot-separated labels) or
/// an IPv4 address. Dotted numbers that are not an IPv4 address are
/// rejected rather than looked up as a name.
fn check_host_name(host: &str) -> Result<(), String> {
    if host.parse::<Ipv4Addr>().is_ok() {
        return Ok(());
    }
    let bad = || format!("{host:?} is not a valid host name or IP address");
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() || host.len() > 253 {
        return Err(bad());
    }
    let labels: Vec<&str> = name.split('.').collect();
    for label in &labels {
        let ok = (1..=63).contains(&label.len())
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(bad());
        }
    }
    if labels
        .last()
        .is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(format!("{host:?} is not a valid IPv4 address"));
    }
    Ok(())
}

/// Parses `host = rmq1,rmq2:5673,[::1]:5674`. `default_port` is `None`
/// when `port` itself is bad (already reported): entries without their own
/// port then yield nothing, without a second error.
fn parse_hosts(value: &str, default_port: Option<u16>) -> (Vec<Endpoint>, Vec<String>) {
    let mut endpoints = Vec::new();
    let mut errors = Vec::new();
    if value.trim().is_empty() {
        errors.push("is empty (give a host name or address)".to_owned());
        return (endpoints, errors);
    }
    for entry in value.split(',').map(str::trim) {
        if entry.is_empty() {
            errors.push(format!("{value:?} has an empty entry between commas"));
            continue;
        }
        match parse_host_entry(entry) {
            Ok((host, port)) => {
                if let Some(port) = port.or(default_port) {
                    endpoints.push(Endpoint { host, port });
                }
            }
            Err(e) => errors.push(e),
        }
    }
    (endpoints, errors)
}

/// One `host[:port]`, `[v6][:port]` or bare IPv6 entry.
fn parse_host_entry(entry: &str) -> Result<(String, Option<u16>), String> {
    let port_of = |p: &str| parse_port(p).map_err(|e| format!("in {entry:?}: {e}"));
    if let Some(r) = entry.strip_prefix('[') {
        let Some((addr, after)) = r.split_once(']') else {
            return Err(format!("{entry:?}: missing ']' after the IPv6 address"));
        };
        if addr.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{addr:?} is not a valid IPv6 address"));
        }
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(p) => Some(port_of(p)?),
                None => return Err(format!("{entry:?}: expected ':PORT' after ']'")),
            },
        };
        return Ok((addr.to_owned(), port));
    }
    if entry.matches(':').count() > 1 {
        return match entry.parse::<Ipv6Addr>() {
            Ok(_) => Ok((entry.to_owned(), None)),
            Err(_) => Err(format!(
                "{entry:?} is not a valid address (write an IPv6 address with a port \
                 in brackets, e.g. [::1]:5672)"
            )),
        };
    }
    let (host, port) = match entry.split_once(':') {
        Some((h, p)) => (h.trim(), Some(port_of(p)?)),
        None => (entry, None),
    };
    check_host_name(host)?;
    Ok((host.to_owned(), port))
}

/// Number of single-character edits between two short strings (for "did you
/// mean" hints).
fn edit_distance(a: &str, b: &str) -> usize {
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

fn unknown_key_message(key: &str, known: &[&str]) -> String {
    match known.iter().min_by_key(|k| edit_distance(k, key)) {
        Some(k) if edit_distance(k, key) <= 3 => {
            format!("unknown key (did you mean {k}?)")
        }
        _ => format!("unknown key (known keys: {})", known.join(", ")),
    }
}

/// Checks every key and builds the config; `None` when something required
/// could not be built (the reason is in `rep.errors`).
fn validate(
    sections: &HashMap<String, Section>,
    path: &Path,
    rep: &mut Report<'_>,
) -> Option<RabbitConfig> {
    let Some(rabbit) = sections.get(RABBIT) else {
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
            format!(
                "section is missing (it holds host, port, username, password and exchange{near})"
            ),
        );
        return None;
    };
    for (key, _) in &rabbit.entries {
        if !RABBIT_KEYS.contains(&key.as_str()) {
            rep.error(RABBIT, Some(key), unknown_key_message(key, RABBIT_KEYS));
        }
    }
    // Required keys: report every missing one; `None` = missing or bad.
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
    let exchange = required("exchange", rep);

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

    // AMQP short strings: longer ones cannot be sent at all.
    for key in ["vhost", "queue", "routing_key", "exchange"] {
        if let Lookup::Value(v) = rabbit.get(key) {
            check_short_string(rep, RABBIT, key, v);
        }
    }

    let use_ssl = bool_key(rabbit, RABBIT, "use_ssl", rep).unwrap_or(false);
    let persistent = bool_key(rabbit, RABBIT, "persistent", rep).unwrap_or(true);
    let vhost = rabbit.optional("vhost").unwrap_or("/").to_owned();
    let queue = rabbit.optional("queue").map(str::to_owned);
    let routing_key = rabbit
        .optional("routing_key")
        .map(str::to_owned)
        .or_else(|| queue.clone())
        .unwrap_or_default();
    if exchange.as_deref() == Some("")
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

    Some(RabbitConfig {
        path: path.to_path_buf(),
        endpoints,
        username: username?,
        password: password?,
        vhost,
        tls,
        queue,
        routing_key,
        exchange: exchange?,
        persistent,
        queue_options,
    })
}

/// The longest AMQP "short string" (names of queues, exchanges, routing keys,
/// the vhost, argument keys), in bytes.
pub const MAX_SHORT_STRING: usize = 255;

/// Reports a value that is too long to be an AMQP short string.
fn check_short_string(rep: &mut Report<'_>, section: &str, key: &str, value: &str) {
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

/// ` value`, or nothing for an empty value (no trailing blank in `key =`).
fn spaced(value: &str) -> String {
    if value.is_empty() {
        String::new()
    } else {
        format!(" {}", escaped(value))
    }
}

/// The value with control characters escaped (`\n`, `\t`, `\u{1b}`), so a
/// value from the environment cannot break or forge lines of a dump.
fn escaped(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

impl RabbitConfig {
    /// An ini-like dump of the validated settings for `--verbose`, with
    /// `password = ***`, ports resolved and defaults filled in, and control
    /// characters escaped. With the password put back it reads as the same
    /// config (used in the tests) unless a value held a control character.
    pub fn describe(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let hosts: Vec<String> = self.endpoints.iter().map(Endpoint::to_string).collect();
        let path = self.path.display().to_string();
        let _ = writeln!(s, "# {} (validated)", escaped(&path));
        let _ = writeln!(s, "[rabbit]");
        let _ = writeln!(s, "host = {}", hosts.join(","));
        // Every host above carries its port; this keeps the dump a valid file.
        let port = self.endpoints.first().map_or(5672, |e| e.port);
        let _ = writeln!(s, "port = {port}");
        let _ = writeln!(s, "username = {}", escaped(&self.username));
        let _ = writeln!(s, "password = ***");
        let _ = writeln!(s, "vhost = {}", escaped(&self.vhost));
        let _ = writeln!(s, "use_ssl = {}", self.tls.is_some());
        let _ = writeln!(s, "queue ={}", spaced(self.queue.as_deref().unwrap_or("")));
        let _ = writeln!(s, "routing_key ={}", spaced(&self.routing_key));
        let _ = writeln!(s, "exchange ={}", spaced(&self.exchange));
        let _ = writeln!(s, "persistent = {}", self.persistent);
        let q = &self.queue_options;
        if q.is_empty() {
            let _ = writeln!(
                s,
                "# [rabbit_queue_options] absent: the queue is checked and created durable if missing"
            );
        } else {
            let _ = writeln!(s, "[rabbit_queue_options]");
            for (k, v) in [
                ("durable", q.durable),
                ("exclusive", q.exclusive),
                ("auto_delete", q.auto_delete),
                ("passive", q.passive),
            ] {
                if let Some(v) = v {
                    let _ = writeln!(s, "{k} = {v}");
                }
            }
            for (k, v) in &q.arguments {
                let _ = writeln!(s, "{k} = {}", escaped(&v.to_string()));
            }
        }
        if let Some(t) = &self.tls {
            let _ = writeln!(s, "[ssl_options]");
            for (k, v) in [
                ("ca_certs", &t.ca_certs),
                ("certfile", &t.certfile),
                ("keyfile", &t.keyfile),
            ] {
                if let Some(p) = v {
                    let _ = writeln!(s, "{k} = {}", escaped(&p.display().to_string()));
                }
            }
            if let Some(h) = &t.server_hostname {
                let _ = writeln!(s, "server_hostname = {h}");
            }
            let _ = writeln!(s, "cert_reqs = {}", t.cert_reqs.as_str());
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    const PASSWORD: &str = "s3cr3t-Pa55";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn ok(text: &str) -> Checked {
        match check(text, Path::new("test.ini"), &no_env) {
            Ok(c) => c,
            Err(e) => panic!("expected a valid config, got:\n{e}"),
        }
    }

    fn errors(text: &str) -> Vec<String> {
        errors_env(text, &no_env)
    }

    fn errors_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
        match check(text, Path::new("test.ini"), env) {
            Ok(_) => panic!("expected errors for:\n{text}"),
            Err(e) => e.to_string().lines().map(str::to_owned).collect(),
        }
    }

    fn base(extra: &str) -> String {
        format!(
            "[rabbit]\nhost = localhost\nport = 5672\nusername = u\npassword = {PASSWORD}\n\
             exchange =\nqueue = q\n{extra}"
        )
    }

    fn has(lines: &[String], prefix: &str, needle: &str) -> bool {
        lines
            .iter()
            .any(|l| l.starts_with(prefix) && l.contains(needle))
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = ok(&base("")).config;
        assert_eq!(
            c.endpoints,
            vec![Endpoint {
                host: "localhost".into(),
                port: 5672
            }]
        );
        assert_eq!(c.vhost, "/");
        assert_eq!(c.queue.as_deref(), Some("q"));
        assert_eq!(c.routing_key, "q");
        assert_eq!(c.exchange, "");
        assert!(c.persistent);
        assert!(c.tls.is_none());
        assert!(c.queue_options.is_empty());
    }

    #[test]
    fn spec_example_with_inline_comments_parses() {
        let text = "\
[rabbit]
host = localhost                # several: host = rmq1,rmq2:5673 (tried in order, failover)
port = 5672
username = guest
password = ${RABBIT_PASSWORD:guest}
use_ssl = false
vhost = /
queue = netsage_tstat
routing_key = netsage_tstat
exchange =                       # required key, may be empty (default exchange)
[rabbit_queue_options]           # optional
  ; indented comment
[ssl_options]                    # optional: ca_certs, certfile, keyfile, server_hostname, cert_reqs
";
        let c = ok(text).config;
        assert_eq!(c.endpoints[0].host, "localhost");
        assert_eq!(c.exchange, "");
        assert_eq!(c.password, "guest");
        assert_eq!(c.queue.as_deref(), Some("netsage_tstat"));
        assert!(c.queue_options.is_empty());
    }

    #[test]
    fn hash_without_blank_before_is_part_of_the_value() {
        let c = ok(&base("vhost = a#b;c\n")).config;
        assert_eq!(c.vhost, "a#b;c");
    }

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
    fn port_must_be_in_range() {
        for bad in ["0", "65536", "-1", "abc", "5672.0", ""] {
            let text = base("").replace("port = 5672", &format!("port = {bad}"));
            assert!(
                has(
                    &errors(&text),
                    "test.ini: [rabbit] port: ",
                    "not a port number"
                ),
                "{bad}"
            );
        }
        let text = base("").replace("port = 5672", "port = 65535");
        assert_eq!(ok(&text).config.endpoints[0].port, 65535);
    }

    #[test]
    fn invalid_hosts_are_rejected() {
        for bad in [
            "bad host",
            "-lead.example",
            "a..b",
            "256.1.1.1",
            "rmq1,,rmq2",
            "[::1",
            "[nothex]:5672",
            "fe80::1:5672:x",
            "",
        ] {
            let text = base("").replace("host = localhost", &format!("host = {bad}"));
            assert!(
                has(&errors(&text), "test.ini: [rabbit] host: ", ""),
                "accepted {bad:?}"
            );
        }
    }

    #[test]
    fn multi_host_with_ports_and_ipv6() {
        let text = base("").replace(
            "host = localhost",
            "host = rmq1, rmq2:5673,[::1]:5674,10.0.0.7,[fe80::2],2001:db8::9",
        );
        let eps = ok(&text).config.endpoints;
        let shown: Vec<String> = eps.iter().map(Endpoint::to_string).collect();
        assert_eq!(
            shown,
            [
                "rmq1:5672",
                "rmq2:5673",
                "[::1]:5674",
                "10.0.0.7:5672",
                "[fe80::2]:5672",
                "[2001:db8::9]:5672"
            ]
        );
        assert_eq!(eps[2].host, "::1");
    }

    #[test]
    fn interpolation_default_used_when_unset_and_env_wins_when_set() {
        let text = base("vhost = ${VH:/fallback}\n");
        assert_eq!(ok(&text).config.vhost, "/fallback");
        let env = |n: &str| (n == "VH").then(|| "/prod".to_owned());
        let c = check(&text, Path::new("t"), &env).unwrap();
        assert_eq!(c.config.vhost, "/prod");
        // Set but empty is empty (the default is only for unset).
        let env = |n: &str| (n == "VH").then(String::new);
        let c = check(&text, Path::new("t"), &env).unwrap();
        assert_eq!(c.config.vhost, "/", "empty optional value means default");
    }

    #[test]
    fn interpolation_unset_without_default_names_var_section_and_key() {
        let text = base("").replace("username = u", "username = ${TSTAT_USER}");
        let lines = errors(&text);
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(lines[0].starts_with("test.ini: [rabbit] username: "));
        assert!(lines[0].contains("TSTAT_USER is not set"));
    }

    #[test]
    fn interpolation_literal_dollars() {
        assert_eq!(interpolate("a$b$$c", &no_env).unwrap(), "a$b$$c");
        assert_eq!(interpolate("$${X}", &no_env).unwrap(), "${X}");
        assert_eq!(interpolate("${X:a:b}-${Y:}", &no_env).unwrap(), "a:b-");
        assert!(interpolate("${X", &no_env).is_err());
        assert!(interpolate("${1X}", &no_env).is_err());
    }

    #[test]
    fn password_never_in_errors_describe_or_debug() {
        let text = base("").replace(
            &format!("password = {PASSWORD}"),
            &format!("password = {PASSWORD}${{BAD NAME}}${{"),
        );
        for line in errors(&text) {
            assert!(!line.contains(PASSWORD), "{line}");
        }
        let c = ok(&base("")).config;
        assert!(!c.describe().contains(PASSWORD));
        assert!(c.describe().contains("password = ***"));
        assert!(!format!("{c:?}").contains(PASSWORD));
        assert!(!format!("{c:#?}").contains(PASSWORD));
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
    fn password_from_the_file_or_from_the_environment() {
        let from_file = |raw: &str, env: &dyn Fn(&str) -> Option<String>| {
            let text = base("").replace(
                &format!("password = {PASSWORD}"),
                &format!("password = {raw}"),
            );
            check(&text, Path::new("t"), env).unwrap().password_in_file
        };
        let set = |n: &str| (n == "PW").then(|| "from-env".to_owned());
        assert!(from_file("secret", &no_env));
        assert!(from_file("a${PW}", &set));
        assert!(from_file("${PW:guest}", &no_env), "the default is used");
        assert!(!from_file("${PW:guest}", &set), "the default is not used");
        assert!(!from_file("${PW}", &set));
        assert!(!from_file(" ${PW} ", &set));
    }

    #[test]
    fn literal_password_in_a_file_others_can_read_is_warned_about() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.ini");
        let env = |n: &str| (n == "PW").then(|| "from-env".to_owned());
        let warned = |text: &str, mode: u32| -> Vec<String> {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let c = load_with_env(&path, &env).unwrap();
            c.warnings.iter().map(Problem::to_string).collect()
        };
        let lines = warned(&base(""), 0o644);
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(lines[0].starts_with(&format!("{}: [rabbit] password: ", path.display())));
        assert!(
            lines[0].contains("readable by its group and others (mode 0644)"),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("chmod 600"));
        assert!(!lines[0].contains(PASSWORD));
        assert!(warned(&base(""), 0o604)[0].contains("readable by others (mode 0604)"));
        assert!(warned(&base(""), 0o640)[0].contains("readable by its group (mode 0640)"));
        assert!(warned(&base(""), 0o600).is_empty());
        let from_env = base("").replace(&format!("password = {PASSWORD}"), "password = ${PW}");
        assert!(warned(&from_env, 0o644).is_empty());
    }

    #[test]
    fn describe_escapes_control_characters() {
        let env = |n: &str| (n == "VH").then(|| "/a\nhost = evil\t\u{1b}[31m".to_owned());
        let c = check(&base("vhost = ${VH}\n"), Path::new("t"), &env).unwrap();
        let d = c.config.describe();
        assert!(
            d.contains("\nvhost = /a\\nhost = evil\\t\\u{1b}[31m\n"),
            "{d}"
        );
        assert!(!d.contains('\u{1b}'));
        assert_eq!(d.lines().filter(|l| l.starts_with("host = ")).count(), 1);
    }

    #[test]
    fn duplicate_keys_and_keys_outside_sections() {
        let lines = errors(&format!("port = 1\n{}", base("port = 5673\n")));
        assert!(has(&lines, "test.ini: port: ", "outside any section"));
        assert!(has(&lines, "test.ini: [rabbit] port: ", "more than once"));
    }

    #[test]
    fn malformed_line_is_reported_with_its_number() {
        let lines = errors(&base("just words\n[broken\n"));
        assert!(has(&lines, "test.ini: line 8: ", "expected `key = value`"));
        assert!(has(&lines, "test.ini: line 9: ", "must end with ']'"));
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

    #[test]
    fn unreadable_config_file_is_one_problem() {
        let err = load_with_env(Path::new("/nonexistent/dir/config.ini"), &no_env).unwrap_err();
        assert_eq!(err.problems.len(), 1);
        let line = err.to_string();
        assert!(line.starts_with("/nonexistent/dir/config.ini: cannot read the config file: "));
        assert!(line.contains("No such file"), "{line}");
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

    #[test]
    fn describe_shows_resolved_settings() {
        let text = base("[rabbit_queue_options]\ndurable = true\nx-max-length = 10\n")
            .replace("host = localhost", "host = a,[::1]:5674");
        let d = ok(&text).config.describe();
        assert!(d.contains("\n[rabbit]\nhost = a:5672,[::1]:5674\n"), "{d}");
        assert!(d.contains("\nvhost = /\n"));
        assert!(d.contains("\n[rabbit_queue_options]\ndurable = true\nx-max-length = 10\n"));
        let mut again = ok(&d.replace("password = ***", &format!("password = {PASSWORD}"))).config;
        again.path = PathBuf::from("test.ini");
        assert_eq!(again, ok(&text).config, "describe output reads back");
    }

    #[test]
    fn no_input_makes_the_checker_panic() {
        // Fragments that have tripped parsers: brackets, separators, `${`,
        // comments, multi-byte and control characters, long names.
        const TOKENS: &[&str] = &[
            "[rabbit]",
            "[rabbit_queue_options]",
            "[ssl_options]",
            "[",
            "]",
            "[]",
            "=",
            ":",
            " = ",
            "host",
            "port",
            "5672",
            "password",
            "username",
            "queue",
            "exchange",
            "vhost",
            "use_ssl",
            "true",
            "x-",
            "durable",
            "${",
            "}",
            "${A:",
            "$${",
            "$",
            "#",
            ";",
            " #",
            "\t",
            "\n",
            "\r\n",
            "\u{0}",
            "\u{feff}",
            "é",
            "\u{1b}",
            "\\",
            "\"",
            "'",
            "[::1]",
            ",",
            "ca_certs",
            "/",
            ".",
            "..",
            "-",
        ];
        let long = "z".repeat(300);
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let env = |n: &str| (n == "A").then(|| "\n[x]\n".to_owned());
        let template = base("[rabbit_queue_options]\nx-a = 1\n");
        for round in 0..3000 {
            // Half from scratch, half a valid file with fragments put in.
            let mut text = if round % 2 == 0 {
                String::new()
            } else {
                template.clone()
            };
            for _ in 0..(next() % 40) {
                let i = (next() % (TOKENS.len() as u64 + 1)) as usize;
                let token = TOKENS.get(i).copied().unwrap_or(&long);
                let mut at = (next() % (text.len() as u64 + 1)) as usize;
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                if round % 2 == 0 {
                    at = text.len();
                }
                text.insert_str(at, token);
            }
            if let Ok(c) = check(&text, Path::new("fuzz.ini"), &env) {
                let _ = c.config.describe();
            }
        }
    }

    #[test]
    fn example_file_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.ini.example");
        // The text only: the checkout's file mode is not the example's business.
        let text = std::fs::read_to_string(&path).unwrap();
        let c = match check(&text, &path, &no_env) {
            Ok(c) => c,
            Err(e) => panic!("config.ini.example does not validate:\n{e}"),
        };
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let c = c.config;
        assert_eq!(c.queue.as_deref(), Some("netsage_deidentifier_raw"));
        assert_eq!(c.routing_key, "netsage_deidentifier_raw");
        assert_eq!(c.exchange, "amq.direct");
        assert_eq!(c.queue_options.durable, Some(true));
        assert_eq!(c.password, "guest");
        assert!(c.tls.is_none());
    }
}
