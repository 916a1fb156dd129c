//! Flow documents in tests: comparing them as JSON values with their number
//! kinds and key order, and building Tstat log rows from the fixtures.

use std::process::Output;

use serde_json::Value;

use super::run::program;
pub use super::trees::fixtures;

/// `tstat-parse` with args, run to completion.
pub fn parse(args: &[&str]) -> Output {
    program("tstat-parse").args(args).run()
}

/// Exact equality of JSON values including number kinds (`0` ≠ `0.0`) and
/// object key order.
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|((ka, va), (kb, vb))| ka == kb && same(va, vb))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (Value::Number(x), Value::Number(y)) => {
            (x.is_f64() == y.is_f64())
                && (x.is_i64() == y.is_i64())
                && x.as_f64() == y.as_f64()
                && x.to_string().parse::<f64>().ok() == y.to_string().parse::<f64>().ok()
                && (x.is_f64() || x == y)
        }
        _ => a == b,
    }
}

/// Parses NDJSON text into values (panics with the line on bad JSON).
pub fn ndjson(text: &str) -> Vec<Value> {
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("line {}: {e}: {l}", i + 1))
        })
        .collect()
}

/// Asserts two NDJSON texts hold the same documents line by line.
pub fn assert_same_docs(ours: &str, expected: &str, what: &str) {
    let a = ndjson(ours);
    let b = ndjson(expected);
    assert_eq!(a.len(), b.len(), "{what}: line count differs");
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            same(x, y),
            "{what}: line {} differs\n ours: {x}\n want: {y}",
            i + 1
        );
    }
}

/// The netsage TCP header line (130 columns) and its first data row.
pub fn tcp_sample() -> (String, Vec<String>) {
    let text = std::fs::read_to_string(fixtures().join("netsage/parse_data.out/log_tcp_complete"))
        .unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap().to_string();
    let row = lines.next().unwrap().split(' ').map(String::from).collect();
    (header, row)
}

/// The synthetic UDP header line (19 columns) and its first data row.
pub fn udp_sample() -> (String, Vec<String>) {
    let text =
        std::fs::read_to_string(fixtures().join("synthetic/2026_03_01_00_00.out/log_udp_complete"))
            .unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap().to_string();
    let row = lines.next().unwrap().split(' ').map(String::from).collect();
    (header, row)
}

/// Index of a column by name in a header line.
pub fn col(header: &str, name: &str) -> usize {
    header
        .split(' ')
        .position(|t| t.rsplit('#').next().unwrap().split(':').next().unwrap() == name)
        .unwrap_or_else(|| panic!("no column {name}"))
}

/// A copy of `row` with column `name` set to `value`.
pub fn with(header: &str, row: &[String], sets: &[(&str, &str)]) -> String {
    let mut r = row.to_vec();
    for (name, value) in sets {
        r[col(header, name)] = value.to_string();
    }
    r.join(" ")
}
