//! Where the driver's arrays go: a [`Destination`], chosen by the program
//! and handed to [`Sender`](super::Sender). The driver plans a directory,
//! starts its producer and hands the destination the arrays; everything
//! that depends on where they go (a record or none, connecting, confirms,
//! what a failure means) is the destination's. A new transport is a new
//! implementation, not a new branch in the driver.

use std::error::Error;
use std::path::Path;
use std::time::Instant;

use crate::publish::{Input, Recorder, StreamStart};
use crate::resume::{Plan, RecordFile};
use crate::shutdown::Shutdown;

/// A destination for the arrays of each directory.
///
/// For one directory the driver calls, in order: [`prepare`] (once the
/// resume plan is made, before any log is read), then [`drain`] (only
/// when the directory gave at least one array), then marks the directory
/// when [`keeps_record`] says so and all went well.
///
/// [`prepare`]: Destination::prepare
/// [`drain`]: Destination::drain
/// [`keeps_record`]: Destination::keeps_record
#[allow(async_fn_in_trait)] // used generically by the driver, never boxed
pub trait Destination {
    /// Whether directories shipped here keep a progress record (design
    /// §8.7) and are marked `.processed` once everything is delivered.
    /// Without one every run sends a directory from its start and nothing
    /// is written into the tree (stdout).
    fn keeps_record(&self) -> bool;

    /// What the producer must do for this destination.
    fn producer(&self) -> ProducerNeeds {
        ProducerNeeds::default()
    }

    /// Called with the directory's resume plan before its producer starts:
    /// may connect, and may replace the plan (the queue the record's
    /// messages went to is gone: rewind `record` and start over). `record`
    /// is `Some` exactly when [`keeps_record`](Destination::keeps_record).
    /// An error leaves the directory unmarked and fails the pass.
    async fn prepare(
        &mut self,
        dir: &Path,
        plan: Plan,
        record: Option<&mut RecordFile>,
    ) -> Result<Plan, Box<dyn Error + Send + Sync>> {
        let _ = (dir, record);
        Ok(plan)
    }

    /// Delivers every array of one directory, in order, and returns when
    /// all are delivered, the input ends early ([`crate::publish::Item::Failed`]),
    /// `shutdown` is triggered or delivery fails.
    async fn drain(&mut self, job: Drain<'_>) -> Result<Delivered, Undelivered>;

    /// Ends the run: closes connections.
    async fn close(self);

    /// What this destination counted of its own (the stream's resumes and
    /// repeats avoided), for the metrics file.
    fn stream_metrics(&self) -> crate::metrics::StreamMetrics {
        crate::metrics::StreamMetrics::default()
    }
}

/// Options of the producer a destination needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProducerNeeds {
    /// Never let an array hold documents of two logs: the pending array is
    /// sent when a directory's TCP log ends (a followed directory has one
    /// array per log anyway). Off, the arrays of a directory run across
    /// its logs (the queue's byte-identical default).
    pub arrays_within_one_log: bool,
    /// Per log (TCP, UDP): the destination already holds the documents at
    /// or before this position ([`crate::identity::ordinal`]; 0: none) of
    /// the files the directory's record names, so a follower drops them
    /// instead of forming arrays that would carry them again. Asked after
    /// [`Destination::prepare`].
    pub stored_through: [u64; 2],
}

/// One directory's arrays, for [`Destination::drain`].
pub struct Drain<'a> {
    /// The directory.
    pub dir: &'a Path,
    /// Message ids are `PREFIX:INDEX` (`SENSOR:DIR`, with `~GENERATION`
    /// after a re-ship).
    pub id_prefix: &'a str,
    /// The plan the producer follows (what an earlier run confirmed).
    pub plan: &'a Plan,
    /// The arrays, each with its mark and the source of its last document.
    pub input: Input,
    /// Keeps the progress record as confirms arrive (with
    /// [`Destination::keeps_record`]).
    pub recorder: Option<&'a mut dyn Recorder>,
    /// When triggered: stop taking arrays, settle what is in flight, record
    /// it and return [`Undelivered::Interrupted`].
    pub shutdown: &'a Shutdown,
}

impl Drain<'_> {
    /// Where the stream starts: the plan's next id index and mark.
    pub fn start(&self) -> StreamStart {
        StreamStart {
            index: self.plan.next_index,
            mark: self.plan.expect,
        }
    }
}

/// What a destination took of one directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Messages delivered (confirmed, or written) by this run.
    pub messages: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Why a destination did not take all of a directory.
#[derive(Debug)]
pub enum Undelivered {
    /// The shutdown came: `confirmed` messages of the directory are
    /// delivered and recorded.
    Interrupted {
        /// Id index after the last confirmed message.
        confirmed: u64,
    },
    /// The producer stopped early; its own report says why.
    ProducerFailed,
    /// Delivery failed: the directory stays unmarked with its record.
    Failed {
        /// Why.
        source: Box<dyn Error + Send + Sync>,
        /// Messages sent and never confirmed.
        unconfirmed: u64,
    },
    /// What was delivered since `since` is probably gone (the queue was
    /// deleted or lost by the broker): the driver rewinds the directory's
    /// record and names the directories marked since then.
    Lost {
        /// Why.
        source: Box<dyn Error + Send + Sync>,
        /// When the destination was last seen holding what it confirmed.
        since: Instant,
        /// Messages sent and never confirmed.
        unconfirmed: u64,
    },
    /// Writing the output failed (stdout).
    Io {
        /// What was being written.
        what: String,
        /// Why.
        source: std::io::Error,
    },
}
