//! `--from`: where a stream is read from. A number is an offset; a time is
//! RFC 3339 (`2026-03-01T12:00:00Z`, `2026-03-01T14:00:00+02:00`, fractions
//! of a second allowed), never a bare number, which would read as an
//! offset.

use std::fmt;
use std::str::FromStr;

/// Where a stream is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The first message the stream still holds.
    First,
    /// The last chunk of messages written so far.
    Last,
    /// Only messages that arrive from now on.
    Next,
    /// This offset (the first held when it is older).
    Offset(u64),
    /// The first messages stored at or after this time, in milliseconds
    /// since the Unix epoch (the broker goes by chunk times).
    Time(i64),
}

impl FromStr for Start {
    type Err = String;

    fn from_str(s: &str) -> Result<Start, String> {
        match s {
            "first" => return Ok(Start::First),
            "last" => return Ok(Start::Last),
            "next" => return Ok(Start::Next),
            _ => {}
        }
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse()
                .map(Start::Offset)
                .map_err(|_| format!("offset '{s}' is too large"));
        }
        rfc3339_ms(s).map(Start::Time).ok_or_else(|| {
            format!(
                "expected first, last, next, an offset (a number) or a time in RFC 3339 \
                 (2026-03-01T12:00:00Z), got '{s}'"
            )
        })
    }
}

impl fmt::Display for Start {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Start::First => f.write_str("the first message"),
            Start::Last => f.write_str("the last chunk"),
            Start::Next => f.write_str("the next message to arrive"),
            Start::Offset(o) => write!(f, "offset {o}"),
            Start::Time(ms) => write!(f, "time {ms} ms since the epoch"),
        }
    }
}

/// Milliseconds since the Unix epoch of an RFC 3339 date-time
/// (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`; `t` and a space are taken for
/// `T`, `z` for `Z`).
fn rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let sep = |at: usize, ok: &[u8]| b.get(at).is_some_and(|c| ok.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if sep(i, b".") {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 3 {
                millis = millis * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..3 {
            millis *= 10;
        }
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        c @ (b'+' | b'-') if i + 6 == b.len() && sep(i + 3, b":") => {
            let (h, m) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let sign = if *c == b'-' { -1 } else { 1 };
            sign * (h * 60 + m)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    Some(secs * 1000 + millis)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_offsets_and_times() {
        let p = |s: &str| s.parse::<Start>();
        assert_eq!(p("first"), Ok(Start::First));
        assert_eq!(p("last"), Ok(Start::Last));
        assert_eq!(p("next"), Ok(Start::Next));
        assert_eq!(p("0"), Ok(Start::Offset(0)));
        assert_eq!(p("123456"), Ok(Start::Offset(123_456)));
        assert_eq!(p("1970-01-01T00:00:00Z"), Ok(Start::Time(0)));
        assert_eq!(
            p("2026-03-01T12:00:00Z"),
            Ok(Start::Time(1_772_366_400_000))
        );
        assert_eq!(
            p("2026-03-01T14:00:00.25+02:00"),
            Ok(Start::Time(1_772_366_400_250))
        );
        assert_eq!(
            p("2000-02-29 23:59:59.999z"),
            Ok(Start::Time(951_868_799_999))
        );
        for bad in [
            "",
            "First",
            "-1",
            "99999999999999999999999",
            "2026-02-30T00:00:00Z",
            "2026-03-01T12:00:00",
            "2026-03-01",
            "2026-03-01T24:00:00Z",
            "2026-03-01T12:00:00+2:00",
            "2026-03-01T12:00:00.Z",
        ] {
            assert!(p(bad).is_err(), "{bad:?}");
        }
    }
}
