//! The `config.ini` file (design §7): reading with rust-ini, `${VAR}`
//! interpolation, and validation of every key before anything is touched.
//! It owns the typed broker settings; it never opens a connection, and it
//! never prints: problems and warnings are returned to the caller.
//!
//! `lex` reads the text and interpolates, `hosts` parses addresses,
//! `validate` checks every key and builds the [`RabbitConfig`].
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
//! - Unknown keys in `[rabbit]`, `[ssl_options]`, `[rabbit_queue_options]`
//!   (other than `x-` arguments) and `[rabbit_stream_options]` are errors,
//!   with the closest known key: a typo would otherwise be silently ignored.
//!   A section whose name is close to a known one (`[rabit_queue_options]`)
//!   is an error too; other unknown sections are warnings (the file may be
//!   shared).
//! - `transport = queue` (the default) or `stream`. With `stream`, `stream`
//!   names the stream (at most 255 bytes), `stream_port` defaults to 5552
//!   (5551 with `use_ssl`), `[rabbit_stream_options]` is typed, and
//!   `queue`, `routing_key` and `exchange` may be empty or absent. With
//!   `queue`, the stream keys and section are ignored with a warning.
//! - Queue, exchange, routing key, vhost and argument names longer than an
//!   AMQP short string (255 bytes) are errors.
//! - A password written in a file that others can read gets a warning.
//! - `[ssl_options]` is only checked when `use_ssl` is true; otherwise it is
//!   ignored with a warning. Relative certificate paths are relative to the
//!   directory of the config file.
//! - Problems never quote the password.

use std::fmt;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

mod describe;
mod hosts;
mod lex;
mod stream;
mod validate;

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
    /// `transport = stream` (design §14.2): publish to this stream over the
    /// stream protocol instead of to the queue; `None` for the queue
    /// transport (the default).
    pub stream: Option<StreamConfig>,
}

/// The stream transport's settings (`transport = stream`, design §14.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// The stream (`stream = NAME`), created when absent.
    pub name: String,
    /// Stream protocol port on every host of the list (`stream_port`;
    /// default 5552, or 5551 with `use_ssl`).
    pub port: u16,
    /// `[rabbit_stream_options]`.
    pub options: StreamOptions,
}

/// `[rabbit_stream_options]`, typed; `None` fields were not given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamOptions {
    /// `max-length-bytes`: retention by size.
    pub max_length_bytes: Option<u64>,
    /// `max-age`: retention by age, RabbitMQ's syntax (`7D`, `12h`, `30m`).
    pub max_age: Option<String>,
    /// `stream-max-segment-size-bytes`.
    pub max_segment_size_bytes: Option<u64>,
    /// `initial-cluster-size`: replicas in a cluster.
    pub initial_cluster_size: Option<u32>,
}

impl StreamOptions {
    /// The options as the stream protocol's `create` arguments (name, value).
    pub fn arguments(&self) -> Vec<(&'static str, String)> {
        let mut args = Vec::new();
        if let Some(n) = self.max_length_bytes {
            args.push(("max-length-bytes", n.to_string()));
        }
        if let Some(a) = &self.max_age {
            args.push(("max-age", a.clone()));
        }
        if let Some(n) = self.max_segment_size_bytes {
            args.push(("stream-max-segment-size-bytes", n.to_string()));
        }
        if let Some(n) = self.initial_cluster_size {
            args.push(("initial-cluster-size", n.to_string()));
        }
        args
    }
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
            .field("stream", &self.stream)
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
const STREAM_OPTIONS: &str = "rabbit_stream_options";

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
    let sections = lex::read_sections(text, env, &mut rep);
    let password_in_file = sections
        .as_ref()
        .and_then(|s| s.get(RABBIT))
        .is_some_and(|r| r.literal.iter().any(|k| k == "password"));
    let config = sections.and_then(|s| validate::validate(&s, path, &mut rep));
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

/// The longest AMQP "short string" (names of queues, exchanges, routing keys,
/// the vhost, argument keys), in bytes.
pub const MAX_SHORT_STRING: usize = 255;

/// Config texts and checks shared by the unit tests of every config module.
#[cfg(test)]
mod test_util {
    use super::{Checked, check};
    use std::path::Path;

    pub(super) const PASSWORD: &str = "s3cr3t-Pa55";

    pub(super) fn no_env(_: &str) -> Option<String> {
        None
    }

    pub(super) fn ok(text: &str) -> Checked {
        match check(text, Path::new("test.ini"), &no_env) {
            Ok(c) => c,
            Err(e) => panic!("expected a valid config, got:\n{e}"),
        }
    }

    pub(super) fn errors(text: &str) -> Vec<String> {
        errors_env(text, &no_env)
    }

    pub(super) fn errors_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
        match check(text, Path::new("test.ini"), env) {
            Ok(_) => panic!("expected errors for:\n{text}"),
            Err(e) => e.to_string().lines().map(str::to_owned).collect(),
        }
    }

    pub(super) fn base(extra: &str) -> String {
        format!(
            "[rabbit]\nhost = localhost\nport = 5672\nusername = u\npassword = {PASSWORD}\n\
             exchange =\nqueue = q\n{extra}"
        )
    }

    pub(super) fn has(lines: &[String], prefix: &str, needle: &str) -> bool {
        lines
            .iter()
            .any(|l| l.starts_with(prefix) && l.contains(needle))
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;

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
    fn unreadable_config_file_is_one_problem() {
        let err = load_with_env(Path::new("/nonexistent/dir/config.ini"), &no_env).unwrap_err();
        assert_eq!(err.problems.len(), 1);
        let line = err.to_string();
        assert!(line.starts_with("/nonexistent/dir/config.ini: cannot read the config file: "));
        assert!(line.contains("No such file"), "{line}");
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
            "[rabbit_stream_options]",
            "transport",
            "stream",
            "max-age",
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
        assert!(c.stream.is_none());
    }

    #[test]
    fn example_file_with_its_stream_lines_uncommented_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.ini.example");
        let text = std::fs::read_to_string(&path).unwrap();
        let keys = [
            "transport =",
            "stream =",
            "stream_port =",
            "[rabbit_stream_options]",
            "max-length-bytes =",
            "max-age =",
            "stream-max-segment-size-bytes =",
            "initial-cluster-size =",
        ];
        let mut found = 0;
        let text: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if keys.iter().any(|k| rest.starts_with(k)) => {
                    found += 1;
                    format!("{rest}\n")
                }
                _ => format!("{l}\n"),
            })
            .collect();
        assert_eq!(found, keys.len(), "each stream key is documented once");
        let c = match check(&text, &path, &no_env) {
            Ok(c) => c,
            Err(e) => panic!("config.ini.example's stream lines do not validate:\n{e}"),
        };
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let stream = c.config.stream.expect("transport = stream");
        assert_eq!((stream.name.as_str(), stream.port), ("netsage_flows", 5552));
        assert_eq!(stream.options.max_age.as_deref(), Some("7D"));
        assert_eq!(stream.options.max_length_bytes, Some(20_000_000_000));
        assert_eq!(stream.options.max_segment_size_bytes, Some(500_000_000));
        assert_eq!(stream.options.initial_cluster_size, Some(3));
    }
}
