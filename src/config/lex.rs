//! Reading the INI text: comments, rust-ini, `${VAR}` interpolation.

use std::collections::HashMap;

use super::validate::edit_distance;
use super::{QUEUE_OPTIONS, RABBIT, Report, SSL_OPTIONS, STREAM_OPTIONS, Section};

/// The sections this program reads; others are another program's.
const KNOWN: [&str; 4] = [RABBIT, QUEUE_OPTIONS, SSL_OPTIONS, STREAM_OPTIONS];

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
pub(super) fn read_sections(
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
        if !KNOWN.contains(&name) {
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
        let near = KNOWN
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::check;
    use crate::config::test_util::*;
    use std::path::Path;

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
}
