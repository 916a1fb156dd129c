//! What flows through [`publish_stream`](super::Publisher::publish_stream):
//! messages in ([`Item`], [`Outgoing`]) with where the stream starts
//! ([`StreamStart`]), the progress record it keeps ([`Recorder`]) and the
//! report out ([`StreamReport`]). Plain data; no broker, no I/O of its own.

use std::path::PathBuf;

use tokio::sync::mpsc;

use crate::parse::DocAt;
use crate::resume::Mark;

/// One message for [`publish_stream`](super::Publisher::publish_stream),
/// with where it ends in its stream (what the progress record stores once
/// it is confirmed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The body.
    pub body: Vec<u8>,
    /// Its end in the stream.
    pub mark: Mark,
    /// Where its last document comes from, when it comes from a log (for a
    /// destination that names messages by source position, design §14.3);
    /// nothing the queue sends or records.
    pub source: Option<Source>,
}

/// The source of a document: its log and its row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Source {
    /// The log: 0 the TCP log, 1 the UDP log (the part of its [`Mark`]).
    pub log: u32,
    /// The row: its line in the log, and which of its documents.
    pub at: DocAt,
}

/// What a producer hands the publisher: a message, or the reason the stream
/// stops early (the publisher then drains its window, records what was
/// confirmed and returns [`PublishError::Input`](super::PublishError::Input)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// The next message.
    Message(Outgoing),
    /// The producer failed; nothing more comes.
    Failed(String),
}

/// The messages of a stream: the channel a producer fills, after a first
/// item the caller may already have taken from it (to learn whether there
/// is any).
#[derive(Debug)]
pub struct Input {
    first: Option<Item>,
    rx: mpsc::Receiver<Item>,
}

impl Input {
    /// `first`, then what `rx` brings.
    pub fn new(first: Option<Item>, rx: mpsc::Receiver<Item>) -> Input {
        Input { first, rx }
    }

    /// The next item; `None` when the producer is done.
    pub async fn recv(&mut self) -> Option<Item> {
        match self.first.take() {
            Some(item) => Some(item),
            None => self.rx.recv().await,
        }
    }

    /// The next item if one is waiting; `None` when none is yet, or the
    /// producer is done.
    pub fn try_recv(&mut self) -> Option<Item> {
        self.first.take().or_else(|| self.rx.try_recv().ok())
    }
}

impl From<mpsc::Receiver<Item>> for Input {
    fn from(rx: mpsc::Receiver<Item>) -> Input {
        Input::new(None, rx)
    }
}

impl Item {
    /// A message without a stream position (for callers that keep no record).
    pub fn message(body: Vec<u8>) -> Item {
        Item::Message(Outgoing {
            body,
            mark: Mark::default(),
            source: None,
        })
    }
}

/// Where a stream starts: the id index of its first message and the mark
/// before it (from the progress record of an earlier run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStart {
    /// Id index of the first message.
    pub index: u64,
    /// Mark of the stream before it.
    pub mark: Mark,
}

/// Keeps the progress record of a stream (see [`crate::resume::RecordFile`]).
pub trait Recorder {
    /// Records that ids below `confirmed` are confirmed, the last ending at
    /// `mark`, and that ids below `reserved` may have been sent. Called
    /// before any id at or above the previous `reserved` is sent, and as
    /// confirms arrive.
    fn save(&mut self, confirmed: u64, mark: Mark, reserved: u64) -> std::io::Result<()>;
    /// The record's file, for messages.
    fn path(&self) -> PathBuf;

    /// Records, before any message of it is sent, the stream producers'
    /// epoch the rest of the directory goes under (design §14.3); nothing
    /// for a record that keeps none.
    fn stream_epoch(&mut self, epoch: u32) -> std::io::Result<()> {
        let _ = epoch;
        Ok(())
    }
}

impl Recorder for crate::resume::RecordFile {
    fn save(&mut self, confirmed: u64, mark: Mark, reserved: u64) -> std::io::Result<()> {
        crate::resume::RecordFile::save(self, confirmed, mark, reserved)
    }

    fn path(&self) -> PathBuf {
        crate::resume::RecordFile::path(self).to_path_buf()
    }

    fn stream_epoch(&mut self, epoch: u32) -> std::io::Result<()> {
        self.set_stream_epoch(epoch)
    }
}

/// What a [`publish_stream`](super::Publisher::publish_stream) call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamReport {
    /// Distinct messages published by this call (resends not counted).
    pub published: u64,
    /// Messages published again after a reconnect.
    pub resent: u64,
    /// Bytes of the distinct message bodies published by this call.
    pub bytes: u64,
    /// Id index after the last confirmed message (a contiguous prefix,
    /// including what earlier runs confirmed): what the record holds.
    pub confirmed: u64,
    /// Reconnects made during the call.
    pub reconnects: u32,
}
