//! `tstat_send -N`: each array as one line on a writer the program hands
//! in (its stdout). No record, no marks: every run prints a directory from
//! its start.

use std::io::Write;

use super::dest::{Delivered, Destination, Drain, Undelivered};
use crate::publish::Item;

/// Prints each array as a line on `W`.
pub struct PrintArrays<W: Write> {
    out: W,
}

impl<W: Write> PrintArrays<W> {
    /// Arrays go to `out` (buffered by the caller, flushed here whenever
    /// no array is waiting).
    pub fn new(out: W) -> PrintArrays<W> {
        PrintArrays { out }
    }

    fn flush(&mut self) -> Result<(), Undelivered> {
        self.out.flush().map_err(stdout)
    }
}

fn stdout(source: std::io::Error) -> Undelivered {
    Undelivered::Io {
        what: "writing stdout".into(),
        source,
    }
}

impl<W: Write> Destination for PrintArrays<W> {
    fn keeps_record(&self) -> bool {
        false
    }

    /// Writes arrays until the producer ends (a failed producer ends the
    /// output after what it formed; its own report says why). A signal
    /// stops the producer, which ends the input.
    async fn drain(&mut self, mut job: Drain<'_>) -> Result<Delivered, Undelivered> {
        let mut n = Delivered::default();
        let mut next = job.input.recv().await;
        while let Some(Item::Message(m)) = next {
            self.out
                .write_all(&m.body)
                .and_then(|()| self.out.write_all(b"\n"))
                .map_err(stdout)?;
            n.messages += 1;
            n.bytes += m.body.len() as u64;
            // What is written goes out before waiting (a followed
            // directory's arrays come as Tstat writes).
            next = match job.input.try_recv() {
                Some(item) => Some(item),
                None => {
                    self.flush()?;
                    job.input.recv().await
                }
            };
        }
        self.flush()?;
        Ok(n)
    }

    async fn close(mut self) {
        let _ = self.out.flush();
    }
}
