//! Byte-level splitting: a log's lines are cut at spaces eight bytes at a
//! time, and reads fill whole chunks. No UTF-8 or column knowledge here.

use std::io::{self, Read};

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte of `w` that is a space.
#[inline]
fn space_mask(w: u64) -> u64 {
    let v = w ^ (LO * u64::from(b' '));
    !(((v & !HI).wrapping_add(!HI)) | v | !HI)
}

/// Number of space-separated fields, eight bytes at a time.
pub(super) fn count_fields(line: &[u8]) -> usize {
    let mut chunks = line.chunks_exact(8);
    let mut n = 0usize;
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
        n += space_mask(w).count_ones() as usize;
    }
    n += chunks.remainder().iter().filter(|&&b| b == b' ').count();
    n + 1
}

/// Splits `line` at spaces into at most `limit` (start, end) fields.
pub(super) fn split_fields(line: &[u8], out: &mut Vec<(u32, u32)>, limit: usize) {
    out.clear();
    let mut start = 0usize;
    let mut i = 0usize;
    while i + 8 <= line.len() {
        let w = u64::from_le_bytes(line[i..i + 8].try_into().unwrap_or([0; 8]));
        let mut m = space_mask(w);
        while m != 0 {
            let pos = i + (m.trailing_zeros() / 8) as usize;
            out.push((start as u32, pos as u32));
            if out.len() == limit {
                return;
            }
            start = pos + 1;
            m &= m - 1;
        }
        i += 8;
    }
    for (j, &b) in line.iter().enumerate().skip(i) {
        if b == b' ' {
            out.push((start as u32, j as u32));
            if out.len() == limit {
                return;
            }
            start = j + 1;
        }
    }
    out.push((start as u32, line.len() as u32));
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
        ] {
            let want: Vec<&str> = line.split(' ').collect();
            assert_eq!(count_fields(line.as_bytes()), want.len(), "{line:?}");
            let mut f = Vec::new();
            split_fields(line.as_bytes(), &mut f, usize::MAX);
            let got: Vec<&str> = f
                .iter()
                .map(|&(s, e)| &line[s as usize..e as usize])
                .collect();
            assert_eq!(got, want);
            for limit in 1..want.len() {
                split_fields(line.as_bytes(), &mut f, limit);
                assert_eq!(f.len(), limit);
                let got: Vec<&str> = f
                    .iter()
                    .map(|&(s, e)| &line[s as usize..e as usize])
                    .collect();
                assert_eq!(got, want[..limit]);
            }
        }
    }
}
