//! The bytes of the documents of one row (design §4.2): key order, which
//! column each key takes its value from, the arithmetic per direction, and
//! the threshold test. It never counts rows or decides where a document
//! goes: each direction's fate is handed to a [`RowOut`].

use crate::flow::{self, Num, Val};

/// How a TCP key gets its value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Extra {
    /// Its column, cast.
    Col,
    /// `pkts_retx / pkts_data`.
    RexmitRate,
    /// The smaller MSS of the two sides.
    Mss,
    /// The larger SACK count of the two sides.
    Sack,
}

/// JSON key and column suffix (after `c_`/`s_`) of the TCP fields, in order.
const TCP_FIELDS: &[(&str, &str, Extra)] = &[
    ("tcp_rexmit_bytes", "bytes_retx", Extra::Col),
    ("tcp_rexmit_pkts", "pkts_retx", Extra::Col),
    ("tcp_rexmit_rate", "", Extra::RexmitRate),
    ("tcp_syn_cnt", "syn_cnt", Extra::Col),
    ("tcp_rtt_avg", "rtt_avg", Extra::Col),
    ("tcp_rtt_min", "rtt_min", Extra::Col),
    ("tcp_rtt_max", "rtt_max", Extra::Col),
    ("tcp_rtt_std", "rtt_std", Extra::Col),
    ("tcp_pkts_rto", "pkts_rto", Extra::Col),
    ("tcp_pkts_fs", "pkts_fs", Extra::Col),
    ("tcp_pkts_reor", "pkts_reor", Extra::Col),
    ("tcp_pkts_dup", "pkts_dup", Extra::Col),
    ("tcp_pkts_unk", "pkts_unk", Extra::Col),
    ("tcp_pkts_fc", "pkts_fc", Extra::Col),
    ("tcp_pkts_unrto", "pkts_unrto", Extra::Col),
    ("tcp_pkts_unfs", "pkts_unfs", Extra::Col),
    ("tcp_cwin_min", "cwin_min", Extra::Col),
    ("tcp_cwin_max", "cwin_max", Extra::Col),
    ("tcp_out_seq_pkts", "pkts_ooo", Extra::Col),
    ("tcp_window_scale", "win_scl", Extra::Col),
    ("tcp_mss", "", Extra::Mss),
    ("tcp_max_seg_size", "mss_max", Extra::Col),
    ("tcp_min_seg_size", "mss_min", Extra::Col),
    ("tcp_win_max", "cwin_max", Extra::Col),
    ("tcp_win_min", "cwin_min", Extra::Col),
    ("tcp_initial_cwin", "cwin_ini", Extra::Col),
    ("tcp_sack_cnt", "", Extra::Sack),
];

/// One TCP key after `num_packets…`: `,"key":` ready to copy, its column
/// (`None` = missing from the header) and how the value is made.
pub(crate) type TcpField = (Key, Option<usize>, Extra);

/// A `,"key":` text padded to a fixed size, so that it is copied with a few
/// stores and no call to a copy routine (the padding is cut off again).
#[derive(Clone, Debug)]
pub(crate) struct Key {
    text: [u8; Key::SIZE],
    len: usize,
}

impl Key {
    const SIZE: usize = 32;

    fn new(key: &str) -> Key {
        let json = format!(",\"{key}\":");
        let mut text = [b' '; Key::SIZE];
        text[..json.len()].copy_from_slice(json.as_bytes());
        Key {
            text,
            len: json.len(),
        }
    }

    #[inline]
    fn write(&self, out: &mut Vec<u8>) {
        let at = out.len();
        out.extend_from_slice(&self.text);
        out.truncate(at + self.len);
    }
}

/// The TCP keys in document order; `column` finds the column of a suffix
/// such as `rtt_avg` for this direction.
pub(crate) fn tcp_fields(column: impl Fn(&str) -> Option<usize>) -> Vec<TcpField> {
    TCP_FIELDS
        .iter()
        .map(|&(key, suffix, extra)| {
            let col = if extra == Extra::Col {
                column(suffix)
            } else {
                None
            };
            (Key::new(key), col, extra)
        })
        .collect()
}

/// The columns a TCP direction needs.
#[derive(Clone, Debug)]
pub(crate) struct TcpDir {
    pub(crate) ip: usize,
    pub(crate) port: usize,
    pub(crate) bytes: usize,
    pub(crate) pkts: usize,
    pub(crate) pkts_retx: Option<usize>,
    pub(crate) fields: Vec<TcpField>,
}

/// The columns of a TCP row.
#[derive(Clone, Debug)]
pub(crate) struct TcpCols {
    pub(crate) durat: usize,
    pub(crate) first: usize,
    pub(crate) last: usize,
    pub(crate) mss: Option<(usize, usize)>,
    pub(crate) sack: Option<(usize, usize)>,
    pub(crate) dirs: [TcpDir; 2],
}

/// The columns a UDP direction needs.
#[derive(Clone, Debug)]
pub(crate) struct UdpDir {
    pub(crate) ip: usize,
    pub(crate) port: usize,
    pub(crate) first_abs: usize,
    pub(crate) durat: usize,
    pub(crate) bytes: usize,
    pub(crate) pkts: usize,
}

/// Where a row's values are, by protocol (client side first).
#[derive(Clone, Debug)]
pub(crate) enum Columns {
    Tcp(Box<TcpCols>),
    Udp([UdpDir; 2]),
}

impl Columns {
    /// The two byte-count columns the threshold looks at.
    pub(crate) fn byte_columns(&self) -> [usize; 2] {
        match self {
            Columns::Tcp(c) => [c.dirs[0].bytes, c.dirs[1].bytes],
            Columns::Udp(d) => [d[0].bytes, d[1].bytes],
        }
    }

    /// The last column a document reads: a row is split up to it only.
    pub(crate) fn last_column(&self) -> usize {
        match self {
            Columns::Tcp(c) => {
                let dir = |d: &TcpDir| {
                    let fields = d.fields.iter().filter_map(|f| f.1);
                    [d.ip, d.port, d.bytes, d.pkts]
                        .into_iter()
                        .chain(d.pkts_retx)
                        .chain(fields)
                        .max()
                        .unwrap_or(0)
                };
                let pairs = [c.mss, c.sack].into_iter().flatten();
                [c.durat, c.first, c.last, dir(&c.dirs[0]), dir(&c.dirs[1])]
                    .into_iter()
                    .chain(pairs.flat_map(|(a, b)| [a, b]))
                    .max()
                    .unwrap_or(0)
            }
            Columns::Udp(d) => d
                .iter()
                .flat_map(|d| [d.ip, d.port, d.first_abs, d.durat, d.bytes, d.pkts])
                .max()
                .unwrap_or(0),
        }
    }
}

/// One split row.
pub(crate) struct Row<'a> {
    /// The line.
    pub(crate) text: &'a str,
    /// (start, end) of each field in `text`.
    pub(crate) fields: &'a [(u32, u32)],
}

impl<'a> Row<'a> {
    fn raw(&self, i: usize) -> &'a str {
        let (s, e) = self.fields[i];
        &self.text[s as usize..e as usize]
    }

    /// Appends the cast of field `i` (see [`flow::write_field`]).
    #[inline]
    fn write(&self, out: &mut Vec<u8>, i: usize) -> bool {
        let (s, e) = self.fields[i];
        flow::write_field(out, self.text, s as usize, e as usize)
    }

    fn val(&self, i: usize) -> Val<'a> {
        flow::cast(self.raw(i))
    }
}

/// Receives what became of each direction of a row that reached the
/// threshold. Documents are written straight into its buffer, so a document
/// bound for an output buffer is never copied there from elsewhere.
pub(crate) trait RowOut {
    /// Why the receiver can fail (the output).
    type Error;
    /// The buffer the next document is appended to.
    fn buf(&mut self) -> &mut Vec<u8>;
    /// The document in `buf()[start..]` is finished (compact JSON, no
    /// newline); the receiver keeps it or cuts it off.
    fn doc(&mut self, start: usize) -> Result<(), Self::Error>;
    /// `n` directions dropped because a value cannot be computed.
    fn dropped(&mut self, n: u64, why: &str);
}

const DOC_HEAD: &[u8] = br#"{"type":"flow","interval":600,"values":{"duration":"#;

/// Writes the documents of rows into the buffer of a [`RowOut`].
pub(crate) struct DocWriter {
    /// `,"protocol":"tcp","sensor_id":…,"flow_type":"tstat"},"start":`
    tail_tcp: Vec<u8>,
    tail_udp: Vec<u8>,
    threshold: u64,
    legacy_udp: bool,
}

impl DocWriter {
    /// A writer for documents with this metadata (`instance`: a string, or
    /// the integer 0 when `None`), keeping directions of at least
    /// `threshold` bytes; `legacy_udp`: UDP durations in milliseconds.
    pub(crate) fn new(
        sensor: &str,
        instance: Option<&str>,
        threshold: u64,
        legacy_udp: bool,
    ) -> DocWriter {
        let tail = |proto: &str| {
            let mut t = Vec::new();
            t.extend_from_slice(b",\"protocol\":\"");
            t.extend_from_slice(proto.as_bytes());
            t.extend_from_slice(b"\",\"sensor_id\":");
            flow::write_str(&mut t, sensor);
            t.extend_from_slice(b",\"instance_id\":");
            match instance {
                Some(i) => flow::write_str(&mut t, i),
                None => t.push(b'0'),
            }
            t.extend_from_slice(b",\"flow_type\":\"tstat\"},\"start\":");
            t
        };
        DocWriter {
            tail_tcp: tail("tcp"),
            tail_udp: tail("udp"),
            threshold,
            legacy_udp,
        }
    }

    /// True when neither direction reaches the threshold; only the byte
    /// columns of `row` need to be split.
    pub(crate) fn below_threshold(&self, row: &Row<'_>, cols: &Columns) -> bool {
        cols.byte_columns()
            .iter()
            .all(|&i| keeps(row.val(i), self.threshold) == Keep::No)
    }

    /// Writes the documents of a row's kept directions to `out`.
    pub(crate) fn write<O: RowOut>(
        &mut self,
        row: &Row<'_>,
        cols: &Columns,
        out: &mut O,
    ) -> Result<(), O::Error> {
        match cols {
            Columns::Tcp(cols) => self.tcp(row, cols, out),
            Columns::Udp(dirs) => self.udp(row, dirs, out),
        }
    }

    fn tcp<O: RowOut>(
        &mut self,
        row: &Row<'_>,
        cols: &TcpCols,
        out: &mut O,
    ) -> Result<(), O::Error> {
        // Cheap threshold check first: most rows are rejected here.
        let keep = [0, 1].map(|d| keeps(row.val(cols.dirs[d].bytes), self.threshold));
        if keep == [Keep::No, Keep::No] {
            return Ok(());
        }
        let shared = (|| {
            let durat = row.val(cols.durat).num()?;
            let first = row.val(cols.first).num()?;
            let last = row.val(cols.last).num()?;
            let secs = durat.as_f64() / 1000.0;
            let start = flow::trunc(Num::Float(first.as_f64() / 1000.0))?;
            let end = flow::trunc(Num::Float(last.as_f64() / 1000.0))?;
            let mss = match cols.mss {
                Some((c, s)) => Some(flow::min_pref_second(row.val(s), row.val(c))?),
                None => None,
            };
            let sack = match cols.sack {
                Some((c, s)) => Some(flow::max_pref_second(row.val(s), row.val(c))?),
                None => None,
            };
            secs.is_finite()
                .then_some((durat, secs, start, end, mss, sack))
        })();
        let Some((durat, secs, start, end, mss, sack)) = shared else {
            let n = keep.iter().filter(|k| **k != Keep::No).count() as u64;
            out.dropped(n, "durat, first, last, mss or sack_cnt cannot be computed");
            return Ok(());
        };
        for (d, &k) in keep.iter().enumerate() {
            match k {
                Keep::No => continue,
                Keep::Bad => {
                    out.dropped(1, "bytes_uniq is not a number");
                    continue;
                }
                Keep::Yes => {}
            }
            let me = &cols.dirs[d];
            let other = &cols.dirs[1 - d];
            let doc = out.buf();
            let at = doc.len();
            let ok = (|| {
                let bytes = row.val(me.bytes).num()?;
                let pkts = row.val(me.pkts).num()?;
                let bits = flow::times8(bytes)?;
                doc.extend_from_slice(DOC_HEAD);
                flow::write_rounded(doc, secs, 2)?;
                write_counts(doc, durat, Num::Float(secs), bits, pkts)?;
                for (key, col, extra) in &me.fields {
                    let (col, extra) = (*col, *extra);
                    key.write(doc);
                    let written = match extra {
                        Extra::Col => match col {
                            Some(i) => row.write(doc, i),
                            None => {
                                doc.extend_from_slice(b"null");
                                true
                            }
                        },
                        Extra::RexmitRate => {
                            let retx = me.pkts_retx.map(|i| row.val(i));
                            let rate = match retx {
                                None => None,
                                Some(r) => {
                                    let falsy = |v: Val<'_>| v.num().is_some_and(Num::is_zero);
                                    if falsy(row.val(me.pkts)) || falsy(r) {
                                        Some(Num::Int(0))
                                    } else {
                                        Some(Num::Float(flow::div(r.num()?, pkts)?))
                                    }
                                }
                            };
                            match rate {
                                Some(n) => flow::write_num(doc, n),
                                None => {
                                    doc.extend_from_slice(b"null");
                                    true
                                }
                            }
                        }
                        Extra::Mss | Extra::Sack => {
                            match if extra == Extra::Mss { mss } else { sack } {
                                Some(v) => flow::write_val(doc, v),
                                None => {
                                    doc.extend_from_slice(b"null");
                                    true
                                }
                            }
                        }
                    };
                    written.then_some(())?;
                }
                let ends = ((me.ip, me.port), (other.ip, other.port));
                finish_doc(doc, row, ends, &self.tail_tcp, start, end)
            })();
            deliver(ok, at, out)?;
        }
        Ok(())
    }

    fn udp<O: RowOut>(
        &mut self,
        row: &Row<'_>,
        dirs: &[UdpDir; 2],
        out: &mut O,
    ) -> Result<(), O::Error> {
        for d in 0..2 {
            let me = &dirs[d];
            let other = &dirs[1 - d];
            match keeps(row.val(me.bytes), self.threshold) {
                Keep::No => continue,
                Keep::Bad => {
                    out.dropped(1, "bytes_all is not a number");
                    continue;
                }
                Keep::Yes => {}
            }
            let doc = out.buf();
            let at = doc.len();
            let ok = (|| {
                let durat = row.val(me.durat).num()?;
                let bytes = row.val(me.bytes).num()?;
                let pkts = row.val(me.pkts).num()?;
                let first = row.val(me.first_abs).num()?;
                let secs = if self.legacy_udp {
                    Num::Float(durat.as_f64() / 1000.0)
                } else {
                    durat
                };
                let duration = flow::round2(secs);
                let bits = flow::times8(bytes)?;
                let start = flow::trunc(Num::Float(first.as_f64() / 1000.0))?;
                let end = flow::trunc(flow::add(Num::Int(start), duration)?)?;
                doc.extend_from_slice(DOC_HEAD);
                flow::write_num(doc, duration).then_some(())?;
                write_counts(doc, durat, secs, bits, pkts)?;
                let ends = ((me.ip, me.port), (other.ip, other.port));
                finish_doc(doc, row, ends, &self.tail_udp, start, end)
            })();
            deliver(ok, at, out)?;
        }
        Ok(())
    }
}

/// Hands the document written from `start` on, or cuts it off and drops
/// its direction.
fn deliver<O: RowOut>(ok: Option<()>, start: usize, out: &mut O) -> Result<(), O::Error> {
    match ok {
        Some(()) => out.doc(start),
        None => {
            out.buf().truncate(start);
            out.dropped(1, "a value of this direction cannot be computed");
            Ok(())
        }
    }
}

/// Writes `num_bits` … `packets_per_second` of a document: the rates are
/// `round(x / secs, 2)`, or the integer 0 when the duration column is zero.
fn write_counts(doc: &mut Vec<u8>, durat: Num, secs: Num, bits: Num, pkts: Num) -> Option<()> {
    doc.extend_from_slice(b",\"num_bits\":");
    flow::write_num(doc, bits).then_some(())?;
    doc.extend_from_slice(b",\"num_packets\":");
    flow::write_num(doc, pkts).then_some(())?;
    for (key, x) in [
        (&b",\"bits_per_second\":"[..], bits),
        (&b",\"packets_per_second\":"[..], pkts),
    ] {
        doc.extend_from_slice(key);
        if durat.is_zero() {
            doc.push(b'0');
        } else {
            flow::write_rounded(doc, flow::div(x, secs)?, 2)?;
        }
    }
    Some(())
}

/// Writes the rest of a document after its values: the endpoints, the
/// metadata tail, start and end.
fn finish_doc(
    doc: &mut Vec<u8>,
    row: &Row<'_>,
    (src, dst): ((usize, usize), (usize, usize)),
    tail: &[u8],
    start: i128,
    end: i128,
) -> Option<()> {
    doc.extend_from_slice(b"},\"meta\":{\"src_ip\":");
    row.write(doc, src.0).then_some(())?;
    doc.extend_from_slice(b",\"src_port\":");
    row.write(doc, src.1).then_some(())?;
    doc.extend_from_slice(b",\"dst_ip\":");
    row.write(doc, dst.0).then_some(())?;
    doc.extend_from_slice(b",\"dst_port\":");
    row.write(doc, dst.1).then_some(())?;
    doc.extend_from_slice(tail);
    flow::write_int(doc, start);
    doc.extend_from_slice(b",\"end\":");
    flow::write_int(doc, end);
    doc.push(b'}');
    Some(())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Keep {
    Yes,
    No,
    /// The byte count is not a number: the direction is dropped and counted.
    Bad,
}

/// The threshold test `bytes × 8 / 8 ≥ N`.
fn keeps(bytes: Val<'_>, threshold: u64) -> Keep {
    match bytes {
        Val::Int(b) => {
            if b >= threshold as i128 {
                Keep::Yes
            } else {
                Keep::No
            }
        }
        Val::Float(f) if f.is_finite() => {
            if f * 8.0 / 8.0 >= threshold as f64 {
                Keep::Yes
            } else {
                Keep::No
            }
        }
        _ => Keep::Bad,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps documents and drops as text.
    #[derive(Default)]
    struct Out(Vec<String>, Vec<u8>);

    impl RowOut for Out {
        type Error = ();
        fn buf(&mut self) -> &mut Vec<u8> {
            &mut self.1
        }
        fn doc(&mut self, start: usize) -> Result<(), ()> {
            let doc = self.1.split_off(start);
            self.0.push(String::from_utf8(doc).unwrap());
            Ok(())
        }
        fn dropped(&mut self, n: u64, why: &str) {
            self.0.push(format!("dropped {n}: {why}"));
        }
    }

    fn udp(line: &str, threshold: u64) -> Vec<String> {
        let dir = |o: usize| UdpDir {
            ip: o,
            port: o + 1,
            first_abs: o + 2,
            durat: o + 3,
            bytes: o + 4,
            pkts: o + 5,
        };
        let cols = Columns::Udp([dir(0), dir(6)]);
        let mut fields = Vec::new();
        let mut start = 0;
        for f in line.split(' ') {
            fields.push((start as u32, (start + f.len()) as u32));
            start += f.len() + 1;
        }
        let row = Row {
            text: line,
            fields: &fields,
        };
        let mut w = DocWriter::new("s", Some("1"), threshold, false);
        let mut out = Out::default();
        if !w.below_threshold(&row, &cols) {
            w.write(&row, &cols, &mut out).unwrap();
        }
        out.0
    }

    #[test]
    fn udp_document_keys_in_wire_order() {
        let docs = udp(
            "10.0.0.1 5353 1000000.5 2.5 100 2 10.0.0.2 53 1000001.0 0 0 0",
            1,
        );
        assert_eq!(
            docs,
            [concat!(
                r#"{"type":"flow","interval":600,"values":{"duration":2.5,"num_bits":800,"#,
                r#""num_packets":2,"bits_per_second":320.0,"packets_per_second":0.8},"#,
                r#""meta":{"src_ip":"10.0.0.1","src_port":5353,"dst_ip":"10.0.0.2","#,
                r#""dst_port":53,"protocol":"udp","sensor_id":"s","instance_id":"1","#,
                r#""flow_type":"tstat"},"start":1000,"end":1002}"#
            )]
        );
    }

    #[test]
    fn threshold_keeps_drops_or_passes_each_direction() {
        let low = "a 1 1000000.5 2.5 30 2 b 2 1000001.0 1.0 40 1";
        assert_eq!(udp(low, 50), Vec::<String>::new());
        let row = "a 1 1000000.5 2.5 - 2 b 2 1000001.0 1.0 40 1";
        let docs = udp(row, 0);
        assert_eq!(docs[0], "dropped 1: bytes_all is not a number");
        assert!(docs[1].contains(r#""src_ip":"b""#), "{docs:?}");
        assert_eq!(udp(row, 41), ["dropped 1: bytes_all is not a number"]);
    }
}
