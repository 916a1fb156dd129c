//! The stream transport's keys (design §14.2): `stream`, `stream_port` and
//! `[rabbit_stream_options]` with `transport = stream`; with the queue
//! transport they are ignored with a warning.

use std::collections::HashMap;

use super::hosts::parse_port;
use super::validate::unknown_key_message;
use super::{Lookup, RABBIT, Report, STREAM_OPTIONS, Section, StreamConfig, StreamOptions};

/// The longest stream name, in bytes (a queue name: an AMQP short string).
const MAX_STREAM_NAME: usize = 255;
/// Stream protocol ports: plain and TLS.
const STREAM_PORT: u16 = 5552;
const STREAM_TLS_PORT: u16 = 5551;

const STREAM_KEYS: &[&str] = &[
    "max-length-bytes",
    "max-age",
    "stream-max-segment-size-bytes",
    "initial-cluster-size",
];

const IGNORED: &str = "ignored because transport is queue (set transport = stream in [rabbit] to publish to a stream)";

/// With the queue transport: a `stream`/`stream_port` key or a non-empty
/// `[rabbit_stream_options]` gets a warning (not checked, as
/// `[ssl_options]` without `use_ssl`).
pub(super) fn warn_stream_settings_ignored(
    sections: &HashMap<String, Section>,
    rabbit: &Section,
    rep: &mut Report<'_>,
) {
    for key in ["stream", "stream_port"] {
        if !matches!(rabbit.get(key), Lookup::Missing | Lookup::Value("")) {
            rep.warn(RABBIT, Some(key), IGNORED);
        }
    }
    if sections
        .get(STREAM_OPTIONS)
        .is_some_and(|sec| !sec.entries.is_empty())
    {
        rep.warn(STREAM_OPTIONS, None, IGNORED);
    }
}

/// With `transport = stream`: the stream's name (required), its port and
/// options; `None` when the name or port is missing or bad (reported).
pub(super) fn stream_config(
    sections: &HashMap<String, Section>,
    rabbit: &Section,
    use_ssl: bool,
    rep: &mut Report<'_>,
) -> Option<StreamConfig> {
    let name = match rabbit.get("stream") {
        Lookup::Missing => {
            rep.error(
                RABBIT,
                Some("stream"),
                "missing (required with transport = stream: the stream to publish to)",
            );
            None
        }
        Lookup::Failed => None,
        Lookup::Value("") => {
            rep.error(
                RABBIT,
                Some("stream"),
                "is empty (required with transport = stream: the stream to publish to)",
            );
            None
        }
        Lookup::Value(v) if v.len() > MAX_STREAM_NAME => {
            rep.error(
                RABBIT,
                Some("stream"),
                format!(
                    "is {} bytes long; a stream name is at most {MAX_STREAM_NAME} bytes",
                    v.len()
                ),
            );
            None
        }
        Lookup::Value(v) => Some(v.to_owned()),
    };
    let port = match rabbit.get("stream_port") {
        Lookup::Missing if use_ssl => Some(STREAM_TLS_PORT),
        Lookup::Missing => Some(STREAM_PORT),
        Lookup::Failed => None,
        Lookup::Value(v) => match parse_port(v) {
            Ok(p) => Some(p),
            Err(e) => {
                rep.error(RABBIT, Some("stream_port"), e);
                None
            }
        },
    };
    let options = match sections.get(STREAM_OPTIONS) {
        Some(sec) => stream_options(sec, rep),
        None => StreamOptions::default(),
    };
    Some(StreamConfig {
        name: name?,
        port: port?,
        options,
    })
}

/// `[rabbit_stream_options]`: four typed keys; any other key is an error
/// with the closest known one (a typo would otherwise create the stream
/// without the retention it was meant to have).
fn stream_options(sec: &Section, rep: &mut Report<'_>) -> StreamOptions {
    for (key, _) in &sec.entries {
        if !STREAM_KEYS.contains(&key.as_str()) {
            rep.error(
                STREAM_OPTIONS,
                Some(key),
                unknown_key_message(key, STREAM_KEYS),
            );
        }
    }
    StreamOptions {
        max_length_bytes: option(sec, "max-length-bytes", bytes, rep),
        max_age: option(sec, "max-age", age, rep),
        max_segment_size_bytes: option(sec, "stream-max-segment-size-bytes", bytes, rep),
        initial_cluster_size: option(sec, "initial-cluster-size", cluster_size, rep),
    }
}

/// One key of `[rabbit_stream_options]` read with `parse`; absent is
/// `None`, and so is an empty or bad value (reported).
fn option<T>(
    sec: &Section,
    key: &str,
    parse: fn(&str) -> Result<T, String>,
    rep: &mut Report<'_>,
) -> Option<T> {
    match sec.get(key) {
        Lookup::Missing | Lookup::Failed => None,
        Lookup::Value("") => {
            rep.error(STREAM_OPTIONS, Some(key), "has no value");
            None
        }
        Lookup::Value(v) => parse(v)
            .map_err(|e| rep.error(STREAM_OPTIONS, Some(key), e))
            .ok(),
    }
}

/// A size in bytes, with the suffixes of `--bytes` (`20G`, `500M`, `1GiB`).
fn bytes(value: &str) -> Result<u64, String> {
    match crate::bytesize::parse_bytes(value)? {
        0 => Err(format!("{value:?} is no size: give more than 0 bytes")),
        n => Ok(n),
    }
}

/// RabbitMQ's age: a positive whole number and one of Y, M, D, h, m, s.
fn age(value: &str) -> Result<String, String> {
    let v = value.trim();
    let unit = v.chars().last().filter(|c| "YMDhms".contains(*c));
    let number = &v[..v.len() - unit.map_or(0, char::len_utf8)];
    let positive = !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
        && number.parse::<u64>().is_ok_and(|n| n > 0);
    if unit.is_some() && positive {
        Ok(v.to_owned())
    } else {
        Err(format!(
            "{value:?} is not an age: a positive whole number followed by Y, M, D, h, m or s \
             (years, months, days, hours, minutes, seconds), e.g. 7D or 12h"
        ))
    }
}

/// The number of replicas: a positive whole number.
fn cluster_size(value: &str) -> Result<u32, String> {
    match value.trim().parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "{value:?} is not a positive whole number (the stream's replicas, e.g. 3)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_util::*;

    fn stream_base(extra: &str) -> String {
        base(&format!("transport = stream\nstream = flows\n{extra}"))
    }

    #[test]
    fn a_valid_stream_config_parses_into_its_settings() {
        let text = "[rabbit]\nhost = rmq1,rmq2:5673\nport = 5672\nusername = u\n\
                    password = p\ntransport = Stream\nstream = netsage_flows\n\
                    stream_port = 5553\n\
                    [rabbit_stream_options]\nmax-length-bytes = 20G\nmax-age = 7D\n\
                    stream-max-segment-size-bytes = 500000000\ninitial-cluster-size = 3\n";
        let c = ok(text);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let c = c.config;
        assert_eq!(
            c.stream,
            Some(StreamConfig {
                name: "netsage_flows".into(),
                port: 5553,
                options: StreamOptions {
                    max_length_bytes: Some(20_000_000_000),
                    max_age: Some("7D".into()),
                    max_segment_size_bytes: Some(500_000_000),
                    initial_cluster_size: Some(3),
                },
            })
        );
        // No queue, routing key or exchange is needed for a stream.
        assert_eq!((c.queue, c.routing_key.as_str()), (None, ""));
        assert_eq!(c.exchange, "");
        assert_eq!(
            c.stream.as_ref().map(|s| s.options.arguments()),
            Some(vec![
                ("max-length-bytes", "20000000000".to_owned()),
                ("max-age", "7D".to_owned()),
                ("stream-max-segment-size-bytes", "500000000".to_owned()),
                ("initial-cluster-size", "3".to_owned()),
            ])
        );
    }

    #[test]
    fn stream_port_defaults_to_5552_and_5551_with_tls() {
        let c = ok(&stream_base("")).config;
        assert_eq!(
            c.stream.map(|s| (s.port, s.options)),
            Some((5552, StreamOptions::default()))
        );
        let dir = tempfile::tempdir().unwrap();
        let text = stream_base("use_ssl = true\n");
        let c = crate::config::check(&text, &dir.path().join("c.ini"), &no_env).unwrap();
        assert_eq!(c.config.stream.map(|s| s.port), Some(5551));
    }

    #[test]
    fn the_queue_transport_is_the_default_and_has_no_stream() {
        assert_eq!(ok(&base("")).config.stream, None);
        assert_eq!(ok(&base("transport = queue\n")).config.stream, None);
        assert_eq!(ok(&base("transport =\n")).config.stream, None);
    }

    #[test]
    fn describe_of_a_stream_config_reads_back() {
        let text = stream_base(
            "stream_port = 5553\n[rabbit_stream_options]\nmax-age = 12h\nmax-length-bytes = 1G\n",
        )
        .replace("exchange =\n", "");
        let c = ok(&text).config;
        let d = c.describe();
        assert!(
            d.contains("\ntransport = stream\nstream = flows\nstream_port = 5553\n"),
            "{d}"
        );
        assert!(
            d.contains("\n[rabbit_stream_options]\nmax-length-bytes = 1000000000\nmax-age = 12h\n"),
            "{d}"
        );
        let back = d.replace("password = ***", &format!("password = {PASSWORD}"));
        let mut again = ok(&back).config;
        again.path = c.path.clone();
        assert_eq!(again, c, "describe output reads back");
        let plain = ok(&stream_base("")).config.describe();
        assert!(
            plain.contains("# [rabbit_stream_options] absent"),
            "{plain}"
        );
        assert!(!plain.contains("rabbit_queue_options"), "{plain}");
    }

    #[test]
    fn ages_in_rabbitmq_syntax() {
        for good in ["7D", "12h", "30m", "1Y", "6M", "3600s", "07D"] {
            assert_eq!(age(good).as_deref(), Ok(good), "{good}");
        }
        for bad in ["", "7", "D", "0D", "7d", "7 D", "-1D", "1.5h", "7Dh", "7é"] {
            assert!(age(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn bytes_take_suffixes_and_are_positive() {
        assert_eq!(bytes("20G"), Ok(20_000_000_000));
        assert_eq!(bytes("1GiB"), Ok(1 << 30));
        assert!(bytes("0").is_err());
        assert!(bytes("12X").is_err());
        assert_eq!(cluster_size("3"), Ok(3));
        assert!(cluster_size("0").is_err() && cluster_size("-1").is_err());
    }
}
