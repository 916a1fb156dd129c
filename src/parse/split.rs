//! Byte-level splitting: a log's lines are cut at spaces eight bytes at a
//! time, and reads fill whole chunks. No UTF-8 or column knowledge here.

use std::io::{self, Read};

/// Bit `j` set for each byte `chunk[j]` that is a space: one vector compare
/// and a byte mask (SSE2 is part of every x86_64).
#[cfg(target_arch = "x86_64")]
#[inline]
fn space_mask(chunk: &[u8; 16]) -> u32 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
    };
    // SAFETY: `chunk` is 16 readable bytes and the load needs no
    // alignment; SSE2 is always there on x86_64.
    unsafe {
        let v = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
        _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b' ' as i8))) as u32
    }
}

/// Bit `j` set for each byte `chunk[j]` that is a space.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn space_mask(chunk: &[u8; 16]) -> u32 {
    let mut m = 0u32;
    for (j, &b) in chunk.iter().enumerate() {
        m |= u32::from(b == b' ') << j;
    }
    m
}

/// Number of space-separated fields.
pub(super) fn count_fields(line: &[u8]) -> usize {
    let mut chunks = line.chunks_exact(16);
    let mut n = 0usize;
    for c in &mut chunks {
        n += space_mask(c.try_into().unwrap_or(&[0; 16])).count_ones() as usize;
    }
    n += chunks.remainder().iter().filter(|&&b| b == b' ').count();
    n + 1
}

/// Splits `line` at spaces into its first `limit` (start, end) fields (all
/// of them when it has fewer), stored at the start of `out`; returns how
/// many were stored and how many fields the line has in all: after the last
/// field a row's documents use, spaces are only counted. `out` is only ever
/// grown, so a row stores its fields without a length update per field.
pub(super) fn split_count(line: &[u8], out: &mut Vec<(u32, u32)>, limit: usize) -> (usize, usize) {
    let want = limit.min(line.len() + 1);
    if out.len() < want {
        out.resize(want, (0, 0));
    }
    let slots = &mut out[..want];
    if want == 0 {
        return (0, count_fields(line));
    }
    let mut n = 0usize;
    let mut start = 0usize;
    let mut i = 0usize;
    while i + 16 <= line.len() {
        let mut m = space_mask(line[i..i + 16].try_into().unwrap_or(&[0; 16]));
        while m != 0 {
            let pos = i + m.trailing_zeros() as usize;
            slots[n] = (start as u32, pos as u32);
            n += 1;
            start = pos + 1;
            if n == want {
                return (n, n + count_fields(&line[start..]));
            }
            m &= m - 1;
        }
        i += 16;
    }
    for (j, &b) in line.iter().enumerate().skip(i) {
        if b == b' ' {
            slots[n] = (start as u32, j as u32);
            n += 1;
            start = j + 1;
            if n == want {
                return (n, n + count_fields(&line[start..]));
            }
        }
    }
    slots[n] = (start as u32, line.len() as u32);
    (n + 1, n + 1)
}

/// A line without the CR a log copied through Windows ends its lines with
/// (header too).
pub(super) fn trim_cr(line: &[u8]) -> &[u8] {
    match line {
        [rest @ .., b'\r'] => rest,
        _ => line,
    }
}

/// Reads until the buffer is full or the input ends.
pub(super) fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                if n > 0 {
                    // Hand back what was read; the error repeats on the next call.
                    return Ok(n);
                }
                return Err(e);
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitting_matches_split_on_space() {
        for line in [
            "",
            "a",
            "a b",
            " a  b ",
            "1 22 333 4444 55555 666666 7777777 88888888 999999999",
            "x y z w v u t s r q p o n m",
            "0123456789abcde f 0123456789abcdef  0123456789abcde x y z 0123456789abcdef0 1",
        ] {
            let want: Vec<&str> = line.split(' ').collect();
            assert_eq!(count_fields(line.as_bytes()), want.len(), "{line:?}");
            let mut f = Vec::new();
            for limit in 0..want.len() + 2 {
                let (split, n) = split_count(line.as_bytes(), &mut f, limit);
                assert_eq!(n, want.len(), "{line:?} {limit}");
                assert_eq!(split, limit.min(want.len()));
                let got: Vec<&str> = f[..split]
                    .iter()
                    .map(|&(s, e)| &line[s as usize..e as usize])
                    .collect();
                assert_eq!(got, want[..split]);
            }
        }
    }
}
