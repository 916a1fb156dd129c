//! The byte threshold of `--bytes` and `-T/--threshold` (design §3.5): a number
//! with an optional decimal or binary suffix, rounded down to whole bytes.

/// Default threshold: 25 GB, as the original tool documented.
pub const DEFAULT_BYTES: u64 = 25_000_000_000;

/// Parses a `--bytes` value: `1000`, `25G`, `25Gb`, `1.5G`, `10GiB` …
/// The error message quotes the value.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let bad = |why: &str| format!("invalid byte count '{s}': {why}");
    let t = s.trim();
    if t.is_empty() {
        return Err(bad("empty value"));
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    if num.is_empty() {
        return Err(bad(
            "expected a non-negative number, optionally with K, M, G, T, Ki, Mi, Gi or Ti",
        ));
    }
    let value: f64 = num.parse().map_err(|_| bad("not a number"))?;
    let lower = suffix.to_ascii_lowercase();
    let unit = lower.strip_suffix('b').unwrap_or(&lower);
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "t" => 1e12,
        "ki" => 1024f64,
        "mi" => 1024f64.powi(2),
        "gi" => 1024f64.powi(3),
        "ti" => 1024f64.powi(4),
        _ => {
            return Err(bad(
                "unknown suffix (use K, M, G, T, Ki, Mi, Gi or Ti, optionally followed by B)",
            ));
        }
    };
    let bytes = exact_product(num, value, mult);
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(bad("too large"));
    }
    Ok(bytes.floor() as u64)
}

/// Parses `-T/--threshold` megabytes (10^6 bytes).
pub fn parse_megabytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let bad = || format!("invalid threshold '{s}': expected a non-negative number of megabytes");
    if t.is_empty() || !t.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(bad());
    }
    let v: f64 = t.parse().map_err(|_| bad())?;
    Ok(exact_product(t, v, 1e6).floor() as u64)
}

/// Multiplies without float noise when the number is an integer.
fn exact_product(text: &str, value: f64, mult: f64) -> f64 {
    if let Ok(i) = text.parse::<u64>()
        && let Some(p) = i.checked_mul(mult as u64).filter(|_| mult.fract() == 0.0)
    {
        return p as f64;
    }
    value * mult
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        assert_eq!(parse_bytes("0"), Ok(0));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert_eq!(parse_bytes("25Gb"), Ok(25_000_000_000));
        assert_eq!(parse_bytes("25G"), Ok(25_000_000_000));
        assert_eq!(parse_bytes("25gb"), Ok(25_000_000_000));
        assert_eq!(parse_bytes("1.5G"), Ok(1_500_000_000));
        assert_eq!(parse_bytes("10GiB"), Ok(10 * 1024 * 1024 * 1024));
        assert_eq!(parse_bytes("1GB"), Ok(1_000_000_000));
        for bad in ["-5", "12X", "", "G", "1.2.3"] {
            let e = parse_bytes(bad).unwrap_err();
            assert!(e.contains(&format!("'{bad}'")), "{e}");
        }
        assert_eq!(parse_megabytes("1000"), Ok(1_000_000_000));
        assert!(parse_megabytes("-1").is_err());
    }
}
