//! Reading the stream protocol's frames (size prefix included). The codec
//! crate decodes most of them; it keeps a few fields private
//! (`QueryPublisherResponse`'s and `CloseResponse`'s response code,
//! `MetadataUpdateCommand`'s stream and code, the reason of a close the
//! broker starts) and refuses a whole frame over one response code it does
//! not know (a publish error), so those fixed-offset fields are read here.
//! Layout: `size:u32 key:u16 version:u16` then, for a response,
//! `correlation:u32 code:u16 …`.

use rabbitmq_stream_protocol::codec::Decoder;
use rabbitmq_stream_protocol::{Response, ResponseKind};

use super::conn::Event;

/// Response code "ok".
pub(crate) const OK: u16 = 1;
/// Stream does not exist.
pub(crate) const STREAM_DOES_NOT_EXIST: u16 = 2;
/// Stream already exists.
pub(crate) const STREAM_ALREADY_EXISTS: u16 = 5;
/// Stream not available (no leader yet, leader moving).
pub(crate) const STREAM_NOT_AVAILABLE: u16 = 6;
/// Wrong user name or password.
pub(crate) const AUTHENTICATION_FAILURE: u16 = 8;
/// SASL error.
pub(crate) const SASL_ERROR: u16 = 9;
/// Login over loopback only.
pub(crate) const AUTHENTICATION_FAILURE_LOOPBACK: u16 = 11;
/// No access to the vhost.
pub(crate) const VIRTUAL_HOST_ACCESS_FAILURE: u16 = 12;
/// Internal error.
pub(crate) const INTERNAL_ERROR: u16 = 15;
/// Response code: precondition failed (a declare the broker cannot take
/// now: a stream still electing its leader, or the same producer on a
/// connection it has not yet seen die).
pub(crate) const PRECONDITION_FAILED: u16 = 17;
/// Publisher does not exist (this connection lost it).
pub(crate) const PUBLISHER_DOES_NOT_EXIST: u16 = 18;

/// Offset not found (no offset stored under a reference).
pub(crate) const NO_OFFSET: u16 = 19;

/// Command keys the publisher and the reader meet.
pub(crate) const PUBLISH_CONFIRM: u16 = 3;
/// Deliver (a chunk for a subscription).
pub(crate) const DELIVER: u16 = 8;
/// Credit (its response only comes when the broker refuses it).
pub(crate) const CREDIT: u16 = 9;
/// Publish error.
pub(crate) const PUBLISH_ERROR: u16 = 4;
/// Metadata update.
pub(crate) const METADATA_UPDATE: u16 = 16;
/// Tune.
pub(crate) const TUNE: u16 = 20;
/// Close (from the broker).
pub(crate) const CLOSE: u16 = 22;
/// Heartbeat.
pub(crate) const HEARTBEAT: u16 = 23;
/// Metadata (response key without the response bit).
pub(crate) const METADATA: u16 = 15;
const RESPONSE: u16 = 0x8000;

fn u16_at(f: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(f.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(f: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(f.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(f: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(f.get(at..at + 8)?.try_into().ok()?))
}

/// A protocol string (i16 length, -1 for null) at `at`; returns it and the
/// offset after it.
fn string_at(f: &[u8], at: usize) -> Option<(String, usize)> {
    let len = i16::from_be_bytes(f.get(at..at + 2)?.try_into().ok()?);
    let len = usize::try_from(len).unwrap_or(0);
    let bytes = f.get(at + 2..at + 2 + len)?;
    Some((String::from_utf8_lossy(bytes).into_owned(), at + 2 + len))
}

/// The frame's command key as sent (response bit included).
pub(crate) fn key(f: &[u8]) -> Option<u16> {
    u16_at(f, 4)
}

/// The correlation id of a response to one of our requests.
pub(crate) fn correlation(f: &[u8]) -> Option<u32> {
    let k = key(f)?;
    // Credit responses carry no correlation id.
    (k & RESPONSE != 0 && k != RESPONSE | CREDIT).then(|| u32_at(f, 8))?
}

/// The response code of a response (not for metadata, which has none).
pub(crate) fn code(f: &[u8]) -> Option<u16> {
    let k = key(f)?;
    (k & RESPONSE != 0 && k & !RESPONSE != METADATA).then(|| u16_at(f, 12))?
}

/// The offset in a query-offset response.
pub(crate) fn offset(f: &[u8]) -> Option<u64> {
    u64_at(f, 14)
}

/// The sequence in a query-publisher-sequence response.
pub(crate) fn sequence(f: &[u8]) -> Option<u64> {
    u64_at(f, 14)
}

/// The broker's tune: (frame max, heartbeat seconds).
pub(crate) fn tune(f: &[u8]) -> Option<(u32, u32)> {
    (key(f)? == TUNE).then_some(())?;
    Some((u32_at(f, 8)?, u32_at(f, 12)?))
}

/// A close the broker starts: (code, reason).
pub(crate) fn close(f: &[u8]) -> (u16, String) {
    let code = u16_at(f, 12).unwrap_or(0);
    let reason = string_at(f, 14).map(|(s, _)| s).unwrap_or_default();
    (code, reason)
}

/// The correlation id of a close the broker starts.
pub(crate) fn close_correlation(f: &[u8]) -> Option<u32> {
    u32_at(f, 8)
}

/// Our answer to the broker's close.
pub(crate) fn close_response(correlation: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(14);
    b.extend_from_slice(&10u32.to_be_bytes());
    b.extend_from_slice(&(CLOSE | RESPONSE).to_be_bytes());
    b.extend_from_slice(&1u16.to_be_bytes());
    b.extend_from_slice(&correlation.to_be_bytes());
    b.extend_from_slice(&OK.to_be_bytes());
    b
}

/// A frame the broker sends unasked, as an event (`None`: nothing for the
/// publisher, e.g. a heartbeat).
pub(crate) fn unasked(f: &[u8]) -> Option<Event> {
    match key(f)? {
        PUBLISH_CONFIRM => match Response::decode(f).ok()?.1.kind() {
            ResponseKind::PublishConfirm(c) => Some(Event::Confirm {
                publisher: c.publisher_id,
                ids: c.publishing_ids,
            }),
            _ => None,
        },
        PUBLISH_ERROR => {
            let publisher = *f.get(8)?;
            let n = u32_at(f, 9)? as usize;
            let errors = (0..n.min(f.len() / 10))
                .filter_map(|i| {
                    let at = 13 + i * 10;
                    Some((u64_at(f, at)?, u16_at(f, at + 8)?))
                })
                .collect();
            Some(Event::Refused { publisher, errors })
        }
        k if k == RESPONSE | CREDIT => Some(Event::CreditRefused {
            code: u16_at(f, 8)?,
            subscription: *f.get(10)?,
        }),
        METADATA_UPDATE => {
            let code = u16_at(f, 8)?;
            let stream = string_at(f, 10).map(|(s, _)| s).unwrap_or_default();
            Some(Event::MetadataUpdate { stream, code })
        }
        _ => None,
    }
}

/// The leader of `stream` in a metadata response: Ok((host, port)), or
/// Err(response code) when the broker has none for it.
pub(crate) fn leader(f: &[u8], stream: &str) -> Result<(String, u32), u16> {
    let Some(ResponseKind::Metadata(m)) = Response::decode(f).ok().map(|(_, r)| r.kind()) else {
        return Err(0);
    };
    let Some(meta) = m.stream_metadata.iter().find(|s| s.stream_name == stream) else {
        return Err(STREAM_DOES_NOT_EXIST);
    };
    let code = u16::from(&meta.code);
    if code != OK {
        return Err(code);
    }
    m.brokers
        .iter()
        .find(|b| b.reference == meta.leader_reference)
        .map(|b| (b.host.clone(), b.port))
        .ok_or(STREAM_NOT_AVAILABLE)
}

/// The nodes holding `stream` in a metadata response (advertised host and
/// port; the leader first, then the replicas): Ok, or Err(response code)
/// when the broker has none for it.
pub(crate) fn members(f: &[u8], stream: &str) -> Result<Vec<(String, u32)>, u16> {
    let Some(ResponseKind::Metadata(m)) = Response::decode(f).ok().map(|(_, r)| r.kind()) else {
        return Err(0);
    };
    let Some(meta) = m.stream_metadata.iter().find(|s| s.stream_name == stream) else {
        return Err(STREAM_DOES_NOT_EXIST);
    };
    let code = u16::from(&meta.code);
    if code != OK {
        return Err(code);
    }
    let out: Vec<(String, u32)> = std::iter::once(meta.leader_reference)
        .chain(meta.replicas_references.iter().copied())
        .filter_map(|r| m.brokers.iter().find(|b| b.reference == r))
        .map(|b| (b.host.clone(), b.port))
        .collect();
    if out.is_empty() {
        return Err(STREAM_NOT_AVAILABLE);
    }
    Ok(out)
}

/// A response code in words, with its number: `stream does not exist (code 2)`.
pub(crate) fn code_name(code: u16) -> String {
    let name = match code {
        1 => "ok",
        2 => "stream does not exist",
        3 => "subscription id already exists",
        4 => "subscription id does not exist",
        5 => "stream already exists",
        6 => "stream not available",
        7 => "SASL mechanism not supported",
        8 => "authentication failure (wrong user name or password)",
        9 => "SASL error",
        10 => "SASL challenge",
        11 => "authentication failure: this user may only connect from localhost",
        12 => "virtual host access failure",
        13 => "unknown frame",
        14 => "frame too large",
        15 => "internal error",
        16 => "access refused",
        17 => "precondition failed",
        18 => "publisher does not exist",
        19 => "offset not found",
        _ => "unknown response code",
    };
    format!("{name} (code {code})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rabbitmq_stream_protocol::codec::Encoder;
    use rabbitmq_stream_protocol::commands::query_publisher_sequence::QueryPublisherRequest;

    #[test]
    fn fixed_fields_are_read_from_a_frame() {
        // A query-publisher-sequence response: code 1, sequence 42.
        let mut f = Vec::new();
        f.extend_from_slice(&16u32.to_be_bytes());
        f.extend_from_slice(&(0x8005u16).to_be_bytes());
        f.extend_from_slice(&1u16.to_be_bytes());
        f.extend_from_slice(&7u32.to_be_bytes());
        f.extend_from_slice(&1u16.to_be_bytes());
        f.extend_from_slice(&42u64.to_be_bytes());
        assert_eq!(correlation(&f), Some(7));
        assert_eq!(code(&f), Some(OK));
        assert_eq!(sequence(&f), Some(42));
        // A request we encode has no response bit: no correlation read.
        let mut req = Vec::new();
        rabbitmq_stream_protocol::Request::from(QueryPublisherRequest::new(
            3,
            "p".into(),
            "s".into(),
        ))
        .encode(&mut req)
        .unwrap();
        assert_eq!(correlation(&req), None);
    }

    #[test]
    fn publish_errors_and_closes_decode() {
        let mut f = Vec::new();
        f.extend_from_slice(&0u32.to_be_bytes());
        f.extend_from_slice(&PUBLISH_ERROR.to_be_bytes());
        f.extend_from_slice(&1u16.to_be_bytes());
        f.push(3);
        f.extend_from_slice(&1u32.to_be_bytes());
        f.extend_from_slice(&99u64.to_be_bytes());
        f.extend_from_slice(&STREAM_NOT_AVAILABLE.to_be_bytes());
        assert_eq!(
            unasked(&f),
            Some(Event::Refused {
                publisher: 3,
                errors: vec![(99, STREAM_NOT_AVAILABLE)]
            })
        );
        let mut c = Vec::new();
        c.extend_from_slice(&0u32.to_be_bytes());
        c.extend_from_slice(&CLOSE.to_be_bytes());
        c.extend_from_slice(&1u16.to_be_bytes());
        c.extend_from_slice(&5u32.to_be_bytes());
        c.extend_from_slice(&OK.to_be_bytes());
        c.extend_from_slice(&4i16.to_be_bytes());
        c.extend_from_slice(b"bye!");
        assert_eq!(close(&c), (OK, "bye!".to_string()));
        assert_eq!(close_correlation(&c), Some(5));
        assert_eq!(code_name(2), "stream does not exist (code 2)");
    }
}
