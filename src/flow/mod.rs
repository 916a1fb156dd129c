//! The flow document (design §4): value casts of §3.4, the arithmetic of §4.2
//! with the reference's number kinds, and the JSON wire layout with its key
//! order (the documents of a row are written in `doc`). It owns the bytes of
//! one document; it never reads files or counts rows.

use std::io::Write;

pub(crate) mod doc;

/// Version of the flow document layout. It is one of the settings in the
/// progress record (design §8.7): a changed layout never resumes an old count.
pub const DOCUMENT_VERSION: u32 = 1;

/// A raw field after the reference's cast: an integer, a float rounded to 3
/// decimals, or the string itself (e.g. `-`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Val<'a> {
    /// The field parsed as an integer.
    Int(i128),
    /// The field parsed as a float (already rounded to 3 decimals).
    Float(f64),
    /// Anything else.
    Str(&'a str),
}

/// Casts a raw field like the reference: integer, else float rounded to 3
/// decimals, else the string.
pub fn cast(field: &str) -> Val<'_> {
    if let Some(i) = parse_int(field.as_bytes()) {
        return Val::Int(i);
    }
    match parse_float(field) {
        Some(f) => Val::Float(round_to(f, 3)),
        None => Val::Str(field),
    }
}

/// Parses an optionally signed decimal integer (no other syntax).
fn parse_int(b: &[u8]) -> Option<i128> {
    let (neg, digits) = match b.first()? {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    if digits.is_empty() || digits.len() > 38 {
        return None;
    }
    let mut v: i128 = 0;
    for &c in digits {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + d as i128;
    }
    Some(if neg { -v } else { v })
}

/// Parses a float as Python's `float()` would for Tstat's fields.
fn parse_float(s: &str) -> Option<f64> {
    // Rust accepts what Python accepts here (digits, `.5`, `5.`, exponents,
    // inf/nan); it needs a digit or a letter to start a number.
    let b = s.as_bytes();
    let first = *b.first()?;
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.' | b'i' | b'I' | b'n' | b'N'))
    {
        return None;
    }
    s.parse::<f64>().ok()
}

/// Rounds to `digits` decimals, half to even on the exact binary value, like
/// Python's `round(x, digits)`.
pub fn round_to(x: f64, digits: u32) -> f64 {
    match round_parts(x, digits) {
        // k and 10^digits are exact, so one division gives the nearest double
        // to the decimal k / 10^digits, which is what Python returns.
        Some(k) => signed_zero(k as f64 / POW10[digits as usize], k, x),
        None => slow_round(x, digits),
    }
}

const POW10: [f64; 4] = [1.0, 10.0, 100.0, 1000.0];

/// `-0.0` where Python keeps the sign of a negative value rounded to zero.
fn signed_zero(r: f64, k: i64, x: f64) -> f64 {
    if k == 0 && x.is_sign_negative() {
        -0.0
    } else {
        r
    }
}

/// The integer k with `round(x, digits) == k / 10^digits`, computed exactly
/// from the binary value (half to even), when |k| < 2^53 so that `k / 10^d`
/// is one correctly rounded division; `None` sends the caller to the slow path.
fn round_parts(x: f64, digits: u32) -> Option<i64> {
    const POW10_INT: [u128; 4] = [1, 10, 100, 1000];
    let bits = x.to_bits();
    let neg = bits >> 63 == 1;
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1u64 << 52) - 1);
    if exp == 0x7ff {
        return None;
    }
    // x = m × 2^e exactly.
    let (m, e) = if exp == 0 {
        (frac, -1074)
    } else {
        (frac | (1u64 << 52), exp - 1075)
    };
    let p = u128::from(m) * POW10_INT[digits as usize];
    let k: u128 = if e >= 0 {
        if e > 10 {
            return None;
        }
        p << e
    } else {
        let shift = (-e) as u32;
        if shift >= 127 {
            0
        } else {
            let q = p >> shift;
            let r = p & ((1u128 << shift) - 1);
            let half = 1u128 << (shift - 1);
            if r > half || (r == half && q & 1 == 1) {
                q + 1
            } else {
                q
            }
        }
    };
    if k >= 1u128 << 53 {
        return None;
    }
    let k = k as i64;
    Some(if neg { -k } else { k })
}

/// Writes `round(x, digits)` as JSON and returns it; `None` (nothing
/// written) when `x` is NaN or infinite.
pub fn write_rounded(out: &mut Vec<u8>, x: f64, digits: u32) -> Option<f64> {
    if !x.is_finite() {
        return None;
    }
    let Some(k) = round_parts(x, digits) else {
        let r = slow_round(x, digits);
        write_f64(out, r);
        return Some(r);
    };
    let r = signed_zero(k as f64 / POW10[digits as usize], k, x);
    if k.unsigned_abs() >= 1_000_000_000_000_000 {
        // Beyond 15 digits a shorter text may read back as r: let ryu choose.
        write_f64(out, r);
        return Some(r);
    }
    if r.is_sign_negative() {
        out.push(b'-');
    }
    // With at most 15 significant digits, the decimal k / 10^digits is the
    // shortest text that reads back as r, so it is what ryu would print.
    let mut s = [b'0'; 20];
    let len = decimal_digits(k.unsigned_abs(), &mut s);
    let d = digits as usize;
    let mut frac = [b'0'; 3];
    if len > d {
        push_prefix(out, &s, len - d);
        frac[..d].copy_from_slice(&s[len - d..len]);
    } else {
        out.push(b'0');
        frac[d - len..d].copy_from_slice(&s[..len]);
    }
    out.push(b'.');
    let mut keep = d;
    while keep > 1 && frac[keep - 1] == b'0' {
        keep -= 1;
    }
    push_prefix(out, &frac, keep);
    Some(r)
}

/// Writes the decimal digits of `v` at the start of `buf`; returns how many.
#[inline]
fn decimal_digits(mut v: u64, buf: &mut [u8; 20]) -> usize {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let n = v.checked_ilog10().unwrap_or(0) as usize + 1;
    let mut i = n;
    while v >= 100 {
        let r = (v % 100) as usize * 2;
        v /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[r..r + 2]);
    }
    if v >= 10 {
        let r = v as usize * 2;
        buf[..2].copy_from_slice(&PAIRS[r..r + 2]);
    } else {
        buf[0] = b'0' + v as u8;
    }
    n
}

/// Appends `buf[..n]` with one fixed-size copy (the rest cut off again):
/// no call to a copy routine for a few bytes.
#[inline]
fn push_prefix<const N: usize>(out: &mut Vec<u8>, buf: &[u8; N], n: usize) {
    let at = out.len();
    out.extend_from_slice(buf);
    out.truncate(at + n);
}

fn slow_round(x: f64, digits: u32) -> f64 {
    let s = format!("{:.*}", digits as usize, x);
    s.parse().unwrap_or(x)
}

/// A number taking part in the document arithmetic.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Num {
    /// An integer (stays an integer under `× 8`).
    Int(i128),
    /// A float.
    Float(f64),
}

impl Num {
    /// The value as a float (true division in the reference converts ints).
    pub fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    /// Python truthiness: zero is false.
    pub fn is_zero(self) -> bool {
        match self {
            Num::Int(i) => i == 0,
            Num::Float(f) => f == 0.0,
        }
    }
}

impl<'a> Val<'a> {
    /// The value as a number, or `None` for a string (arithmetic on it would
    /// fail in the reference).
    pub fn num(self) -> Option<Num> {
        match self {
            Val::Int(i) => Some(Num::Int(i)),
            Val::Float(f) => Some(Num::Float(f)),
            Val::Str(_) => None,
        }
    }
}

/// `x × 8` keeping the kind.
pub fn times8(x: Num) -> Option<Num> {
    Some(match x {
        Num::Int(i) => Num::Int(i.checked_mul(8)?),
        Num::Float(f) => Num::Float(f * 8.0),
    })
}

/// True division; `None` on division by zero (the reference's crash).
pub fn div(a: Num, b: Num) -> Option<f64> {
    if b.is_zero() {
        return None;
    }
    Some(a.as_f64() / b.as_f64())
}

/// `round(x, 2)`: ints stay ints, floats are rounded.
pub fn round2(x: Num) -> Num {
    match x {
        Num::Int(_) => x,
        Num::Float(f) => Num::Float(round_to(f, 2)),
    }
}

/// `int(x)`: truncation toward zero; `None` for NaN, infinity, or a value
/// outside the `i128` range (a cast would saturate to a wrong number).
pub fn trunc(x: Num) -> Option<i128> {
    /// 2^127: the first float above `i128::MAX`; `-2^127` is `i128::MIN`.
    const LIMIT: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;
    match x {
        Num::Int(i) => Some(i),
        Num::Float(f) if (-LIMIT..LIMIT).contains(&f) => Some(f.trunc() as i128),
        Num::Float(_) => None,
    }
}

/// `a + b` with Python's kinds; `None` when an integer sum overflows `i128`.
pub fn add(a: Num, b: Num) -> Option<Num> {
    Some(match (a, b) {
        (Num::Int(x), Num::Int(y)) => Num::Int(x.checked_add(y)?),
        _ => Num::Float(a.as_f64() + b.as_f64()),
    })
}

/// Python's `a < b` for cast values; `None` when the kinds cannot be compared
/// (a string against a number raises in the reference).
fn less<'a>(a: Val<'a>, b: Val<'a>) -> Option<bool> {
    match (a, b) {
        (Val::Str(x), Val::Str(y)) => Some(x < y),
        (Val::Str(_), _) | (_, Val::Str(_)) => None,
        (Val::Int(x), Val::Int(y)) => Some(x < y),
        _ => {
            let (x, y) = (a.num()?.as_f64(), b.num()?.as_f64());
            Some(x < y)
        }
    }
}

/// `min(s, c)` as the reference computes tcp_mss: `c` only when strictly smaller.
pub fn min_pref_second<'a>(s: Val<'a>, c: Val<'a>) -> Option<Val<'a>> {
    Some(if less(c, s)? { c } else { s })
}

/// `max(s, c)` as the reference computes tcp_sack_cnt: `c` only when strictly larger.
pub fn max_pref_second<'a>(s: Val<'a>, c: Val<'a>) -> Option<Val<'a>> {
    Some(if less(s, c)? { c } else { s })
}

/// Appends a float as JSON (shortest round-trip form, always marked as a
/// float). Non-finite values must be rejected before.
pub fn write_f64(out: &mut Vec<u8>, f: f64) {
    let mut b = ryu::Buffer::new();
    out.extend_from_slice(b.format_finite(f).as_bytes());
}

/// Appends an integer as JSON.
pub fn write_int(out: &mut Vec<u8>, i: i128) {
    match u64::try_from(i.unsigned_abs()) {
        Ok(abs) => {
            if i < 0 {
                out.push(b'-');
            }
            let mut s = [b'0'; 20];
            let len = decimal_digits(abs, &mut s);
            push_prefix(out, &s, len);
        }
        Err(_) => out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes()),
    }
}

/// Appends a JSON string literal.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    if !bytes.iter().any(|&c| c == b'"' || c == b'\\' || c < 0x20) {
        out.extend_from_slice(bytes);
    } else {
        for ch in s.chars() {
            match ch {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => {
                    let mut tmp = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
                }
            }
        }
    }
    out.push(b'"');
}

/// Appends a number; `false` (nothing written) when it is NaN or infinite.
pub fn write_num(out: &mut Vec<u8>, n: Num) -> bool {
    match n {
        Num::Int(i) => write_int(out, i),
        Num::Float(f) if f.is_finite() => write_f64(out, f),
        Num::Float(_) => return false,
    }
    true
}

/// Appends a cast field; `false` when it is a non-finite float.
pub fn write_val(out: &mut Vec<u8>, v: Val<'_>) -> bool {
    match v {
        Val::Int(i) => write_int(out, i),
        Val::Float(f) if f.is_finite() => write_f64(out, f),
        Val::Float(_) => return false,
        Val::Str(s) => write_str(out, s),
    }
    true
}

/// Appends the cast of a raw field, copying plain integers and taking a fast
/// decimal path for typical floats; `false` when the value is not finite.
pub fn write_raw(out: &mut Vec<u8>, field: &str) -> bool {
    let b = field.as_bytes();
    // Plain canonical integers are copied as they are.
    if !b.is_empty()
        && b.len() <= 18
        && b.iter().all(u8::is_ascii_digit)
        && (b[0] != b'0' || b.len() == 1)
    {
        out.extend_from_slice(b);
        return true;
    }
    if fast_decimal3(out, b) {
        return true;
    }
    // Addresses (a colon, or a second dot) can be neither int nor float.
    if b.contains(&b':') || b.iter().filter(|&&c| c == b'.').count() > 1 {
        write_str(out, field);
        return true;
    }
    write_val(out, cast(field))
}

/// Appends the cast of the field `line[start..end]`, like [`write_raw`].
/// A field of at most 16 bytes is looked at 16 bytes at a time when the
/// line has that many from its start: a plain integer (the most common
/// field), a `digits.digits` float and a dotted address are written with
/// fixed-size copies (the bytes after the field cut off again), with no
/// call to a copy routine for a few bytes. Anything else, and a float
/// whose rounding carries into its integer part or is a decimal tie, takes
/// [`write_raw`].
#[inline]
pub fn write_field(out: &mut Vec<u8>, line: &str, start: usize, end: usize) -> bool {
    let n = end - start;
    if (1..=16).contains(&n)
        && let Some(chunk) = line.as_bytes().get(start..start + 16)
        && let Ok(chunk) = <&[u8; 16]>::try_from(chunk)
    {
        let bad = non_digits16(chunk, n);
        let done = if bad == 0 {
            (chunk[0] != b'0' || n == 1) && {
                let at = out.len();
                out.extend_from_slice(chunk);
                out.truncate(at + n);
                true
            }
        } else {
            decimal16(out, chunk, n, bad) || address16(out, chunk, n)
        };
        if done {
            return true;
        }
    }
    write_raw(out, &line[start..end])
}

/// A mark (some of bits 4 to 7) in each of the first `n` (1 to 16) bytes
/// of `chunk` that is not an ASCII digit; zero when all are digits. All
/// bytes at once: a byte is a digit when, xor `'0'`, its high nibble is
/// zero and adding 6 does not carry into bit 4. A carry out of a byte
/// happens only for a non-digit, and can only mark a byte after it too.
#[inline]
fn non_digits16(chunk: &[u8; 16], n: usize) -> u128 {
    const ONES: u128 = u128::MAX / 0xff;
    let keep = if n >= 16 {
        u128::MAX
    } else {
        (1u128 << (8 * n)) - 1
    };
    let v = (u128::from_le_bytes(*chunk) ^ (ONES * 0x30)) & keep;
    (v & (ONES * 0xf0)) | (v.wrapping_add(ONES * 0x06) & (ONES * 0x10))
}

/// [`fast_decimal3`] for a field of `n` bytes at the start of `chunk`
/// whose one non-digit (marked in `bad`) is a dot: the integer part and the
/// first three decimals are copied as they are and the decimals rounded in
/// place. `false` (nothing written) where `fast_decimal3` would say no, and
/// when rounding up carries into the integer part.
#[inline]
fn decimal16(out: &mut Vec<u8>, chunk: &[u8; 16], n: usize, bad: u128) -> bool {
    let dot = (bad.trailing_zeros() / 8) as usize;
    if chunk[dot] != b'.' || bad & !(0xffu128 << (8 * dot)) != 0 {
        return false;
    }
    // At most 15 digits in 16 bytes: the significant digits are never too
    // many for fast_decimal3, and a 12-digit integer part cannot reach 10^13.
    if dot == 0 || dot > 12 || n - dot - 1 < 4 || (chunk[0] == b'0' && dot > 1) {
        return false;
    }
    let d = |i: usize| u32::from(chunk[dot + i] - b'0');
    let round_up = match chunk[dot + 4] {
        b'0'..=b'4' => false,
        b'6'..=b'9' => true,
        _ => {
            if chunk[dot + 5..n].iter().all(|&c| c == b'0') {
                return false; // an exact decimal tie: the binary value decides
            }
            true
        }
    };
    let mut fp = d(1) * 100 + d(2) * 10 + d(3);
    if round_up {
        fp += 1;
        if fp == 1000 {
            return false;
        }
    }
    let digits = [(fp / 100) as u8, ((fp / 10) % 10) as u8, (fp % 10) as u8];
    let keep = if digits[2] != 0 {
        3
    } else if digits[1] != 0 {
        2
    } else {
        1
    };
    let at = out.len();
    out.extend_from_slice(chunk);
    let frac = at + dot + 1;
    for (k, digit) in digits.iter().enumerate() {
        out[frac + k] = b'0' + digit;
    }
    out.truncate(frac + keep);
    true
}

/// A dotted address (digits and at least two dots, such as an IPv4
/// address) of `n` bytes at the start of `chunk`, written as the JSON
/// string [`write_raw`] makes of it (it needs no escapes); `false`
/// (nothing written) for anything else.
#[inline]
fn address16(out: &mut Vec<u8>, chunk: &[u8; 16], n: usize) -> bool {
    let field = &chunk[..n];
    if !field.iter().all(|&c| c.is_ascii_digit() || c == b'.')
        || field.iter().filter(|&&c| c == b'.').count() < 2
    {
        return false;
    }
    out.push(b'"');
    let at = out.len();
    out.extend_from_slice(chunk);
    out.truncate(at + n);
    out.push(b'"');
    true
}

/// Writes `round(float(field), 3)` for a plain `digits.digits` field whose
/// rounding the decimal digits alone decide, as the shortest form of the
/// resulting float; `false` (nothing written) when the slow path is needed.
fn fast_decimal3(out: &mut Vec<u8>, b: &[u8]) -> bool {
    let Some(dot) = b.iter().position(|&c| c == b'.') else {
        return false;
    };
    let (int, frac) = (&b[..dot], &b[dot + 1..]);
    if int.is_empty()
        || int.len() > 12
        || frac.len() < 4
        || (int[0] == b'0' && int.len() > 1)
        || !int.iter().all(u8::is_ascii_digit)
        || !frac.iter().all(u8::is_ascii_digit)
    {
        return false;
    }
    // With at most 15 significant digits, the double nearest to the decimal
    // cannot reach the rounding tie, so the decimal digits decide it.
    let sig_int = if int == b"0" { 0 } else { int.len() };
    let sig = if sig_int == 0 {
        let lead = frac.iter().take_while(|&&c| c == b'0').count();
        frac.len() - lead
    } else {
        sig_int + frac.len()
    };
    if sig > 15 {
        return false;
    }
    let rest = &frac[3..];
    let round_up = match rest[0] {
        b'0'..=b'4' => false,
        b'6'..=b'9' => true,
        _ => {
            if rest[1..].iter().all(|&c| c == b'0') {
                return false; // an exact decimal tie: the binary value decides
            }
            true
        }
    };
    let mut ip: u64 = 0;
    for &c in int {
        ip = ip * 10 + (c - b'0') as u64;
    }
    let mut fp: u64 =
        ((frac[0] - b'0') as u64) * 100 + ((frac[1] - b'0') as u64) * 10 + (frac[2] - b'0') as u64;
    if round_up {
        fp += 1;
        if fp == 1000 {
            fp = 0;
            ip += 1;
        }
    }
    if ip >= 10_000_000_000_000 {
        return false;
    }
    let mut ib = itoa::Buffer::new();
    out.extend_from_slice(ib.format(ip).as_bytes());
    out.push(b'.');
    let digits = [(fp / 100) as u8, ((fp / 10) % 10) as u8, (fp % 10) as u8];
    let keep = if digits[2] != 0 {
        3
    } else if digits[1] != 0 {
        2
    } else {
        1
    };
    for d in &digits[..keep] {
        out.push(b'0' + d);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casts_keep_kinds() {
        assert_eq!(cast("0"), Val::Int(0));
        assert_eq!(cast("-12"), Val::Int(-12));
        assert_eq!(cast("0.0"), Val::Float(0.0));
        assert_eq!(cast("51.4071234"), Val::Float(51.407));
        assert_eq!(cast("-"), Val::Str("-"));
        assert_eq!(cast("---"), Val::Str("---"));
        assert_eq!(cast("1e3"), Val::Float(1000.0));
        assert_eq!(cast("10.0.0.1"), Val::Str("10.0.0.1"));
    }

    #[test]
    fn rounding_is_half_even_on_binary_value() {
        assert_eq!(round_to(0.125, 2), 0.12);
        assert_eq!(round_to(0.375, 2), 0.38);
        assert_eq!(round_to(2.675, 2), 2.67);
        assert_eq!(round_to(0.0005, 3), 0.001);
        assert_eq!(round_to(1772324365123.4567, 3), 1772324365123.457);
        assert!(round_to(-0.001, 2).is_sign_negative());
        for i in 0..200_000u32 {
            let x = i as f64 * 0.000731 + (i % 7) as f64 * 1e3;
            let s: f64 = format!("{x:.3}").parse().unwrap();
            assert_eq!(round_to(x, 3), s, "{x}");
        }
        // Every exact tie at 3 and 2 places, and timestamps in epoch ms.
        for i in 0..20_000i64 {
            for (x, d) in [
                (i as f64 / 16.0, 3),
                (i as f64 / 8.0, 2),
                (1.7e12 + i as f64 * 0.000244140625, 3),
                (-(i as f64) / 64.0, 3),
            ] {
                assert_eq!(
                    round_to(x, d).to_bits(),
                    slow_round(x, d).to_bits(),
                    "{x} {d}"
                );
            }
        }
    }

    fn raw(s: &str) -> String {
        let mut v = Vec::new();
        assert!(write_raw(&mut v, s));
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn integers_are_written_like_itoa() {
        let mut values = vec![
            0i128,
            9,
            10,
            99,
            100,
            999,
            1000,
            -1,
            -10,
            i128::MAX,
            i128::MIN,
        ];
        values.extend([u64::MAX, u64::MAX - 1].map(i128::from));
        values.extend([u64::MAX, 1 << 63].map(|v| -i128::from(v)));
        let mut p = 1i128;
        for _ in 0..20 {
            values.extend([p - 1, p, p + 1, 7 * p + 3, -p]);
            p *= 10;
        }
        for v in values {
            let mut out = b"x".to_vec();
            write_int(&mut out, v);
            assert_eq!(out[1..], *itoa::Buffer::new().format(v).as_bytes(), "{v}");
        }
    }

    #[test]
    fn field_path_equals_raw() {
        let fields = [
            "0",
            "7",
            "00",
            "0007",
            "10",
            "1234567890123456",
            "12345678901234567",
            "1a",
            "a1",
            "9/",
            ":9",
            "51.407123",
            "-",
            "-5",
            "+5",
            "1e3",
            "10.0.0.1",
            "::1",
            "99999999",
        ];
        let mut x = 0.0001f64;
        let mut floats = Vec::new();
        while x < 1e12 {
            for d in [4, 6, 7] {
                floats.push(format!("{x:.d$}"));
            }
            x *= 1.0137;
        }
        let more = [
            "0.0005",
            "0.00050",
            "0.00051",
            "0.9995",
            "0.99951",
            "9.9995001",
            "1.2345",
            "00.1234",
            ".1234",
            "1.",
            "1.234",
            "123456789012.3456",
            "1234567890123.456",
            "0.000000",
            "1.23456789012345",
            "1.2.3.4",
            "10.0.0.1",
            "192.168.100.200",
            "1..2",
            "..",
            "1.2e3",
            "-1.2345",
            "1.2345 ",
            "255.255.255.255",
        ];
        let floats = floats.iter().map(String::as_str).chain(more);
        for f in fields.into_iter().chain(floats) {
            for pad in ["", " ", " 0123456789abcdefghij"] {
                let line = format!("x {f}{pad}");
                let mut v = Vec::new();
                assert!(write_field(&mut v, &line, 2, 2 + f.len()));
                assert_eq!(String::from_utf8(v).unwrap(), raw(f), "{line:?}");
            }
        }
        for b in 0..=255u8 {
            let mut chunk = *b"1234567890123456";
            for n in 1..=16 {
                for at in 0..n {
                    chunk[at] = b;
                    let digits = chunk[..n].iter().all(u8::is_ascii_digit);
                    let bad = non_digits16(&chunk, n);
                    assert_eq!(bad == 0, digits, "{chunk:?} {n}");
                    if !digits {
                        // The first mark is on the first non-digit.
                        assert_eq!((bad.trailing_zeros() / 8) as usize, at, "{chunk:?}");
                    }
                    chunk[at] = b'1';
                }
            }
        }
    }

    fn slow(s: &str) -> String {
        let mut v = Vec::new();
        assert!(write_val(&mut v, cast(s)));
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn fast_raw_equals_cast() {
        for s in [
            "0",
            "7",
            "0007",
            "123456789",
            "51.407123",
            "51.400000",
            "0.000400",
            "0.000500",
            "0.001500",
            "2.999999",
            "9.999500",
            "1772324365123.445068",
            "-",
            "---",
            "-1000.000000",
            "0.0",
            "12.3456",
            "0.0625",
            "1.0625000",
        ] {
            assert_eq!(raw(s), slow(s), "{s}");
        }
        let mut x = 0.0001f64;
        while x < 1e9 {
            let s = format!("{x:.6}");
            assert_eq!(raw(&s), slow(&s), "{s}");
            x *= 1.0137;
        }
    }

    #[test]
    fn write_rounded_equals_ryu_of_round() {
        let mut x = -5.0f64;
        while x < 1e13 {
            for d in [2u32, 3] {
                let mut fast = Vec::new();
                let r = write_rounded(&mut fast, x, d).unwrap();
                let mut slow = Vec::new();
                write_f64(&mut slow, slow_round(x, d));
                assert_eq!(
                    String::from_utf8(fast).unwrap(),
                    String::from_utf8(slow).unwrap(),
                    "{x} {d}"
                );
                assert_eq!(r.to_bits(), slow_round(x, d).to_bits(), "{x}");
            }
            x = if x < 0.0 {
                x + 0.0371
            } else {
                x * 1.0007 + 0.00013
            };
        }
    }

    #[test]
    fn results_outside_i128_are_none_never_wrapped() {
        assert_eq!(trunc(Num::Float(1e300)), None);
        assert_eq!(trunc(Num::Float(-1e300)), None);
        assert_eq!(trunc(Num::Float(f64::NAN)), None);
        assert_eq!(trunc(Num::Float(2f64.powi(127))), None);
        assert_eq!(trunc(Num::Float(-(2f64.powi(127)))), Some(i128::MIN));
        assert_eq!(
            trunc(Num::Float(2f64.powi(126))),
            Some(1i128 << 126),
            "exact below the limit"
        );
        assert_eq!(trunc(Num::Float(-2.9)), Some(-2));
        assert_eq!(add(Num::Int(i128::MAX), Num::Int(1)), None);
        assert_eq!(add(Num::Int(i128::MIN), Num::Int(-1)), None);
        assert_eq!(add(Num::Int(2), Num::Int(3)), Some(Num::Int(5)));
        assert_eq!(add(Num::Int(2), Num::Float(0.5)), Some(Num::Float(2.5)));
        assert_eq!(times8(Num::Int(i128::MAX / 4)), None);
        // The longest accepted integer (38 digits) fits.
        assert_eq!(
            cast(&"9".repeat(38)).num().map(|n| n.is_zero()),
            Some(false)
        );
        assert_eq!(cast(&"9".repeat(39)), Val::Float(1e39));
    }

    #[test]
    fn min_max_prefer_server_on_ties() {
        assert_eq!(
            min_pref_second(Val::Int(1460), Val::Float(1460.0)),
            Some(Val::Int(1460))
        );
        assert_eq!(
            min_pref_second(Val::Int(1460), Val::Int(536)),
            Some(Val::Int(536))
        );
        assert_eq!(
            max_pref_second(Val::Float(3.0), Val::Int(3)),
            Some(Val::Float(3.0))
        );
        assert_eq!(min_pref_second(Val::Str("-"), Val::Int(3)), None);
    }
}
