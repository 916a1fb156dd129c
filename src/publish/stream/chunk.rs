//! Reading what a subscription receives (pure, no I/O): a deliver frame
//! carries one osiris chunk (header, then entries; an entry is one record
//! or a sub-entry batch of records, each record one AMQP 1.0 message), and
//! each message's data sections and `message-id` are read from its AMQP 1.0
//! encoding. The codec crate's own deliver decoder takes every entry as a
//! plain record (a batch would be misread) and hides the chunk's timestamp
//! and type, and its message type offers only the first data section and
//! no way to name the message id's type, so both are read here.
//!
//! Deliver frame (version 1): `size:u32 key:u16 version:u16
//! subscription:u8`, version 2 adds `committed:u64`, then the chunk:
//! `magic:i8 type:u8 entries:u16 records:u32 timestamp:i64 epoch:u64
//! first_offset:u64 crc:i32 data_length:u32 trailer_length:u32
//! reserved:u32` and the entries. A simple entry is `0:1 size:31 data`; a
//! sub-entry batch is `1:1 compression:3 reserved:4 records:u16
//! uncompressed:u32 length:u32 body`, its body (uncompressed) a run of
//! simple entries.

/// Chunk type of user data (the others carry the broker's offset
/// tracking and are never meant for consumers).
pub(crate) const USER_CHUNK: u8 = 0;

/// One chunk from a deliver frame; records borrow the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk<'a> {
    /// The subscription it was delivered to.
    pub subscription: u8,
    /// Chunk type ([`USER_CHUNK`] for messages).
    pub kind: u8,
    /// When the broker wrote the chunk (ms since the epoch).
    pub timestamp_ms: i64,
    /// Offset of its first record.
    pub first_offset: u64,
    /// Its records in offset order (the first at `first_offset`).
    pub records: Vec<&'a [u8]>,
}

fn u16_at(f: &[u8], at: usize) -> Result<u16, String> {
    f.get(at..at + 2)
        .and_then(|b| b.try_into().ok())
        .map(u16::from_be_bytes)
        .ok_or_else(short)
}

fn u32_at(f: &[u8], at: usize) -> Result<u32, String> {
    f.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or_else(short)
}

fn u64_at(f: &[u8], at: usize) -> Result<u64, String> {
    f.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(short)
}

fn short() -> String {
    "the deliver frame is shorter than its header says".to_string()
}

fn bytes(f: &[u8], at: usize, len: usize) -> Result<&[u8], String> {
    f.get(at..at.checked_add(len).ok_or_else(short)?)
        .ok_or_else(short)
}

/// Parses a deliver frame (size prefix included) into its chunk.
pub(crate) fn parse(frame: &[u8]) -> Result<Chunk<'_>, String> {
    let version = u16_at(frame, 6)?;
    let subscription = *frame.get(8).ok_or_else(short)?;
    let at = match version {
        1 => 9,
        2 => 17,
        v => return Err(format!("deliver frame version {v} is not supported")),
    };
    let kind = *frame.get(at + 1).ok_or_else(short)?;
    let entries = u16_at(frame, at + 2)?;
    let records = u32_at(frame, at + 4)?;
    let timestamp_ms = u64_at(frame, at + 8)? as i64;
    let first_offset = u64_at(frame, at + 24)?;
    let data_length = u32_at(frame, at + 36)? as usize;
    let data = bytes(frame, at + 48, data_length)?;
    let mut out = Vec::with_capacity(records.min(65_536) as usize);
    let mut pos = 0;
    for _ in 0..entries {
        let head = *data.get(pos).ok_or_else(short)?;
        if head & 0x80 == 0 {
            let size = (u32_at(data, pos)? & 0x7fff_ffff) as usize;
            out.push(bytes(data, pos + 4, size)?);
            pos += 4 + size;
        } else {
            let compression = (head >> 4) & 0x07;
            let n = u16_at(data, pos + 1)?;
            let length = u32_at(data, pos + 7)? as usize;
            let body = bytes(data, pos + 11, length)?;
            if compression != 0 {
                return Err(format!(
                    "offset {}: a sub-entry batch compressed with {} cannot be read \
                     (only uncompressed batches are supported)",
                    first_offset + out.len() as u64,
                    match compression {
                        1 => "gzip",
                        2 => "snappy",
                        3 => "lz4",
                        4 => "zstd",
                        _ => "an unknown codec",
                    }
                ));
            }
            let mut p = 0;
            for _ in 0..n {
                let size = (u32_at(body, p)? & 0x7fff_ffff) as usize;
                out.push(bytes(body, p + 4, size)?);
                p += 4 + size;
            }
            pos += 11 + length;
        }
    }
    if kind == USER_CHUNK && out.len() != records as usize {
        return Err(format!(
            "the chunk at offset {first_offset} says {records} records but holds {}",
            out.len()
        ));
    }
    Ok(Chunk {
        subscription,
        kind,
        timestamp_ms,
        first_offset,
        records: out,
    })
}

/// A message's body (its data sections, joined) and its `message-id` in
/// string form (a number in decimal, a UUID hyphenated, binary as UTF-8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Amqp {
    /// The data sections, in order, joined.
    pub body: Vec<u8>,
    /// `properties.message-id`.
    pub message_id: Option<String>,
}

/// Section descriptors (AMQP 1.0 §3.2).
const PROPERTIES: u64 = 0x73;
const DATA: u64 = 0x75;
const AMQP_SEQUENCE: u64 = 0x76;
const AMQP_VALUE: u64 = 0x77;

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.b.get(self.at).ok_or_else(truncated)?;
        self.at += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).ok_or_else(truncated)?;
        let s = self.b.get(self.at..end).ok_or_else(truncated)?;
        self.at = end;
        Ok(s)
    }

    fn size(&mut self, wide: bool) -> Result<usize, String> {
        if wide {
            let s = self.take(4)?;
            Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize)
        } else {
            Ok(usize::from(self.byte()?))
        }
    }

    /// Skips one encoded value (described values included); returns its
    /// constructor byte.
    fn skip(&mut self) -> Result<u8, String> {
        let code = self.byte()?;
        match code {
            0x00 => {
                self.skip()?;
                self.skip()?;
            }
            0x40..=0x4f => {}
            0x50..=0x5f => {
                self.take(1)?;
            }
            0x60..=0x6f => {
                self.take(2)?;
            }
            0x70..=0x7f => {
                self.take(4)?;
            }
            0x80..=0x8f => {
                self.take(8)?;
            }
            0x90..=0x9f => {
                self.take(16)?;
            }
            0xa0..=0xaf | 0xc0..=0xcf | 0xe0..=0xef => {
                let n = self.size(false)?;
                self.take(n)?;
            }
            0xb0..=0xbf | 0xd0..=0xdf | 0xf0..=0xff => {
                let n = self.size(true)?;
                self.take(n)?;
            }
            c => return Err(format!("unknown AMQP type code 0x{c:02x}")),
        }
        Ok(code)
    }

    /// A section's descriptor code (`0x00` then a ulong).
    fn descriptor(&mut self) -> Result<u64, String> {
        if self.byte()? != 0x00 {
            return Err("a message section without a descriptor".into());
        }
        match self.byte()? {
            0x53 => Ok(u64::from(self.byte()?)),
            0x80 => {
                let s = self.take(8)?;
                Ok(u64::from_be_bytes(s.try_into().map_err(|_| truncated())?))
            }
            // A symbolic descriptor: not one of the standard sections.
            0xa3 | 0xb3 => {
                self.at -= 1;
                self.skip()?;
                Ok(u64::MAX)
            }
            c => Err(format!("a section descriptor of AMQP type 0x{c:02x}")),
        }
    }
}

fn truncated() -> String {
    "the AMQP 1.0 message is truncated".to_string()
}

/// The message id (first field of the properties list at the cursor).
fn message_id(c: &mut Cursor<'_>) -> Result<Option<String>, String> {
    let count = match c.byte()? {
        0x45 => 0,
        0xc0 => {
            c.byte()?;
            usize::from(c.byte()?)
        }
        0xd0 => {
            c.take(4)?;
            c.size(true)?
        }
        t => {
            return Err(format!(
                "the properties section is AMQP type 0x{t:02x}, not a list"
            ));
        }
    };
    if count == 0 {
        return Ok(None);
    }
    let id = match c.byte()? {
        0x40 => None,
        0xa1 => {
            let n = c.size(false)?;
            Some(String::from_utf8_lossy(c.take(n)?).into_owned())
        }
        0xb1 => {
            let n = c.size(true)?;
            Some(String::from_utf8_lossy(c.take(n)?).into_owned())
        }
        0xa0 => {
            let n = c.size(false)?;
            Some(String::from_utf8_lossy(c.take(n)?).into_owned())
        }
        0xb0 => {
            let n = c.size(true)?;
            Some(String::from_utf8_lossy(c.take(n)?).into_owned())
        }
        0x44 => Some("0".into()),
        0x53 => Some(c.byte()?.to_string()),
        0x80 => {
            let s = c.take(8)?;
            Some(u64::from_be_bytes(s.try_into().map_err(|_| truncated())?).to_string())
        }
        0x98 => {
            let s = c.take(16)?;
            let h: String = s.iter().map(|b| format!("{b:02x}")).collect();
            Some(format!(
                "{}-{}-{}-{}-{}",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..]
            ))
        }
        t => return Err(format!("a message-id of AMQP type 0x{t:02x}")),
    };
    Ok(id)
}

/// Reads an AMQP 1.0 message: its data sections joined as the body (else
/// an `amqp-value` holding binary or a string) and its `message-id`. Any
/// other body (a sequence, a number, a map…) has no bytes to give: an
/// error.
pub(crate) fn amqp(message: &[u8]) -> Result<Amqp, String> {
    let mut c = Cursor { b: message, at: 0 };
    let mut body = Vec::new();
    let mut data = false;
    let mut other_body = None;
    let mut value = None;
    let mut id = None;
    while c.at < message.len() {
        let code = c.descriptor()?;
        match code {
            PROPERTIES => {
                let start = c.at;
                id = message_id(&mut c)?;
                c.at = start;
                c.skip()?;
            }
            DATA => {
                let n = match c.byte()? {
                    0xa0 => c.size(false)?,
                    0xb0 => c.size(true)?,
                    t => return Err(format!("a data section of AMQP type 0x{t:02x}")),
                };
                body.extend_from_slice(c.take(n)?);
                data = true;
            }
            AMQP_VALUE => {
                // Bytes or text sent as a value (some AMQP 1.0 clients do)
                // are the body as well; other values are not bytes.
                let start = c.at;
                let n = match c.byte()? {
                    0xa0 | 0xa1 => Some(c.size(false)?),
                    0xb0 | 0xb1 => Some(c.size(true)?),
                    _ => None,
                };
                match n {
                    Some(n) => value = Some(c.take(n)?),
                    None => {
                        c.at = start;
                        c.skip()?;
                        other_body =
                            Some("an amqp-value section of another type than binary or string");
                    }
                }
            }
            AMQP_SEQUENCE => {
                other_body = Some("an amqp-sequence section");
                c.skip()?;
            }
            _ => {
                c.skip()?;
            }
        }
    }
    if !data {
        if let Some(v) = value {
            body.extend_from_slice(v);
        } else if let Some(kind) = other_body {
            return Err(format!("its body is {kind}, not data"));
        }
    }
    Ok(Amqp {
        body,
        message_id: id,
    })
}

/// Deliver frames built by hand, for tests.
#[cfg(test)]
pub(crate) mod test_frames {
    use super::USER_CHUNK;

    /// A simple entry holding `data`.
    pub(crate) fn simple(data: &[u8]) -> Vec<u8> {
        let mut e = (data.len() as u32).to_be_bytes().to_vec();
        e.extend_from_slice(data);
        e
    }

    /// A deliver frame (version 1, subscription 7) of `entries` (already
    /// encoded) saying it holds `records` records.
    pub(crate) fn deliver(first: u64, ts: i64, entries: &[Vec<u8>], records: u32) -> Vec<u8> {
        let data: Vec<u8> = entries.concat();
        let mut f = Vec::new();
        f.extend_from_slice(&0u32.to_be_bytes());
        f.extend_from_slice(&8u16.to_be_bytes());
        f.extend_from_slice(&1u16.to_be_bytes());
        f.push(7);
        f.push(0x50); // magic
        f.push(USER_CHUNK);
        f.extend_from_slice(&(entries.len() as u16).to_be_bytes());
        f.extend_from_slice(&records.to_be_bytes());
        f.extend_from_slice(&ts.to_be_bytes());
        f.extend_from_slice(&3u64.to_be_bytes()); // epoch
        f.extend_from_slice(&first.to_be_bytes());
        f.extend_from_slice(&0i32.to_be_bytes()); // crc
        f.extend_from_slice(&(data.len() as u32).to_be_bytes());
        f.extend_from_slice(&0u32.to_be_bytes()); // trailer
        f.extend_from_slice(&0u32.to_be_bytes()); // reserved
        f.extend_from_slice(&data);
        let size = (f.len() - 4) as u32;
        f[..4].copy_from_slice(&size.to_be_bytes());
        f
    }
}

#[cfg(test)]
mod tests {
    use super::test_frames::{deliver, simple};
    use super::*;
    use rabbitmq_stream_protocol::codec::Encoder;
    use rabbitmq_stream_protocol::message::Message;

    fn encoded(m: &Message) -> Vec<u8> {
        let mut b = Vec::new();
        m.encode(&mut b).unwrap();
        b
    }

    #[test]
    fn a_chunk_of_simple_entries_gives_its_records_in_order() {
        let f = deliver(
            100,
            1_700_000_000_123,
            &[simple(b"a"), simple(b"bb"), simple(b"")],
            3,
        );
        let c = parse(&f).unwrap();
        assert_eq!(c.subscription, 7);
        assert_eq!(c.kind, USER_CHUNK);
        assert_eq!(c.first_offset, 100);
        assert_eq!(c.timestamp_ms, 1_700_000_000_123);
        assert_eq!(c.records, vec![&b"a"[..], b"bb", b""]);
    }

    #[test]
    fn an_uncompressed_sub_entry_batch_gives_each_record_its_offset() {
        let inner = [simple(b"x"), simple(b"yy")].concat();
        let mut batch = vec![0x80];
        batch.extend_from_slice(&2u16.to_be_bytes());
        batch.extend_from_slice(&(inner.len() as u32).to_be_bytes());
        batch.extend_from_slice(&(inner.len() as u32).to_be_bytes());
        batch.extend_from_slice(&inner);
        let f = deliver(10, 0, &[simple(b"w"), batch.clone(), simple(b"z")], 4);
        let c = parse(&f).unwrap();
        assert_eq!(c.records, vec![&b"w"[..], b"x", b"yy", b"z"]);
        // A compressed batch is named, with its offset.
        batch[0] = 0x80 | (1 << 4);
        let f = deliver(10, 0, &[simple(b"w"), batch], 3);
        let e = parse(&f).unwrap_err();
        assert!(e.contains("offset 11") && e.contains("gzip"), "{e}");
    }

    #[test]
    fn a_truncated_frame_is_an_error_not_a_panic() {
        let f = deliver(0, 0, &[simple(b"abc")], 1);
        for cut in 0..f.len() {
            let _ = parse(&f[..cut]);
        }
        assert!(parse(&f[..f.len() - 1]).is_err());
        // A record count that disagrees with the entries.
        assert!(parse(&deliver(0, 0, &[simple(b"abc")], 2)).is_err());
    }

    #[test]
    fn our_publisher_s_message_gives_back_its_body_and_id() {
        let m = Message::builder()
            .body(b"[{\"a\":1}]".to_vec())
            .properties()
            .message_id("tree:42".to_string())
            .content_type("application/json")
            .message_builder()
            .build();
        let got = amqp(&encoded(&m)).unwrap();
        assert_eq!(got.body, b"[{\"a\":1}]");
        assert_eq!(got.message_id.as_deref(), Some("tree:42"));
        // Large bodies use the 32-bit encodings.
        let big = vec![b'x'; 70_000];
        let m = Message::builder()
            .body(big.clone())
            .properties()
            .message_id("y".repeat(200))
            .message_builder()
            .build();
        let got = amqp(&encoded(&m)).unwrap();
        assert_eq!(got.body, big);
        assert_eq!(got.message_id, Some("y".repeat(200)));
        // A properties list over 255 bytes (list32, str32), by hand: the
        // codec crate writes a list8 constructor with 32-bit fields there.
        let id = "z".repeat(300);
        let mut m = vec![0x00, 0x53, 0x73, 0xd0];
        m.extend_from_slice(&(4 + 5 + 300u32).to_be_bytes());
        m.extend_from_slice(&1u32.to_be_bytes());
        m.push(0xb1);
        m.extend_from_slice(&300u32.to_be_bytes());
        m.extend_from_slice(id.as_bytes());
        m.extend_from_slice(&[0x00, 0x53, 0x75, 0xa0, 0x02, b'[', b']']);
        let got = amqp(&m).unwrap();
        assert_eq!(got.message_id, Some(id));
        assert_eq!(got.body, b"[]");
    }

    #[test]
    fn message_ids_of_other_types_read_as_text() {
        let m = Message::builder()
            .body(b"b".to_vec())
            .properties()
            .message_id(12_345u64)
            .message_builder()
            .build();
        assert_eq!(
            amqp(&encoded(&m)).unwrap().message_id.as_deref(),
            Some("12345")
        );
        let m = Message::builder().body(b"b".to_vec()).build();
        assert_eq!(amqp(&encoded(&m)).unwrap().message_id, None);
    }

    #[test]
    fn several_data_sections_are_joined_and_other_sections_skipped() {
        // header (list of one true), message annotations (map), two data
        // sections, a footer.
        let mut m = vec![0x00, 0x53, 0x70, 0xc0, 0x02, 0x01, 0x41];
        m.extend_from_slice(&[0x00, 0x53, 0x72, 0xc1, 0x05, 0x02, 0xa3, 0x01, b'k', 0x40]);
        m.extend_from_slice(&[
            0x00, 0x53, 0x73, 0xc0, 0x06, 0x01, 0xa1, 0x03, b'i', b'd', b'1',
        ]);
        m.extend_from_slice(&[0x00, 0x53, 0x75, 0xa0, 0x02, b'[', b'1']);
        m.extend_from_slice(&[0x00, 0x53, 0x75, 0xb0, 0, 0, 0, 0x01, b']']);
        m.extend_from_slice(&[0x00, 0x53, 0x78, 0xc1, 0x01, 0x00]);
        let got = amqp(&m).unwrap();
        assert_eq!(got.body, b"[1]");
        assert_eq!(got.message_id.as_deref(), Some("id1"));
    }

    #[test]
    fn a_body_that_is_not_bytes_is_an_error() {
        // A string or binary value is taken as the body.
        let m = [0x00, 0x53, 0x77, 0xa1, 0x02, b'[', b']'];
        assert_eq!(amqp(&m).unwrap().body, b"[]");
        let m = [0x00, 0x53, 0x77, 0xb0, 0, 0, 0, 1, b'x'];
        assert_eq!(amqp(&m).unwrap().body, b"x");
        // A number or a sequence is not.
        let m = [0x00, 0x53, 0x77, 0x52, 0x07];
        assert!(amqp(&m).unwrap_err().contains("amqp-value"));
        let m = [0x00, 0x53, 0x76, 0x45];
        assert!(amqp(&m).unwrap_err().contains("amqp-sequence"));
        assert!(amqp(&[0x00, 0x53, 0x75, 0xa0, 0x09, b'x']).is_err());
        assert!(amqp(&[0x12]).is_err());
    }
}
