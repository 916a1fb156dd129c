//! The stream publisher's bookkeeping as a pure state machine: which
//! messages of which producer are pending, what the broker's confirms and
//! publish errors do to them, the window bound (messages and bytes across
//! all producers), and the reconnect rule: after a new link the broker's
//! sequence for each producer says which pending messages it already
//! stored (confirmed now, never resent) and which go out again, in id
//! order. No sockets, no tokio: the publisher does the sending and waiting.

use std::collections::VecDeque;

/// What the publisher has done so far, for metrics and reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamCounts {
    /// Messages the broker confirmed (including those found stored after a
    /// reconnect and those it dropped as repeats).
    pub confirmed: u64,
    /// Messages sent again on a new link.
    pub resent: u64,
    /// Pending messages a reconnect found already stored by the broker (its
    /// sequence for the producer was at or above their id): counted as
    /// confirmed, not resent.
    pub already_stored: u64,
    /// Messages sent with an id at or below the producer's sequence as the
    /// broker last reported it: the broker confirms them without storing
    /// them again (deduplication).
    pub below_sequence: u64,
    /// New links after a failure.
    pub reconnects: u64,
}

/// Why a message cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Publishing ids start at 1.
    Zero,
    /// Not above the producer's previous id (they must increase).
    NotIncreasing {
        /// The producer's previous id.
        last: u64,
    },
    /// No such producer.
    UnknownProducer,
}

struct Slot<T> {
    id: u64,
    payload: T,
    len: usize,
    /// Written on the current link and not answered yet.
    sent: bool,
    acked: bool,
}

struct Book<T> {
    name: String,
    slots: VecDeque<Slot<T>>,
    /// Last id taken (0: none).
    last: u64,
    /// Highest id such that it and every id taken before it is confirmed.
    done: u64,
    /// The broker's sequence for this producer when last asked.
    sequence: u64,
}

/// Pending messages per producer; `T` is what a resend needs (the encoded
/// message), `len` its size for the byte bound.
pub(crate) struct Ledger<T> {
    books: Vec<Book<T>>,
    size: usize,
    max_bytes: usize,
    count: usize,
    bytes: usize,
    counts: StreamCounts,
}

impl<T> Ledger<T> {
    /// An empty ledger holding at most `size` unconfirmed messages and
    /// `max_bytes` of them (one message is always allowed).
    pub(crate) fn new(size: usize, max_bytes: usize) -> Self {
        Ledger {
            books: Vec::new(),
            size: size.max(1),
            max_bytes,
            count: 0,
            bytes: 0,
            counts: StreamCounts::default(),
        }
    }

    /// Adds a producer named `name`; returns its index.
    pub(crate) fn add(&mut self, name: &str) -> usize {
        self.books.push(Book {
            name: name.to_string(),
            slots: VecDeque::new(),
            last: 0,
            done: 0,
            sequence: 0,
        });
        self.books.len() - 1
    }

    /// Removes the last producer added when nothing of it is pending (a
    /// declare that failed).
    pub(crate) fn forget_last(&mut self) {
        if self.books.last().is_some_and(|b| b.slots.is_empty()) {
            self.books.pop();
        }
    }

    /// Number of producers.
    pub(crate) fn producers(&self) -> usize {
        self.books.len()
    }

    /// The name of producer `p`.
    pub(crate) fn name(&self, p: usize) -> &str {
        self.books.get(p).map_or("", |b| b.name.as_str())
    }

    /// Counters so far.
    pub(crate) fn counts(&self) -> StreamCounts {
        self.counts
    }

    /// Notes a new link (for the counters).
    pub(crate) fn reconnected(&mut self) {
        self.counts.reconnects += 1;
    }

    /// Messages taken and not confirmed, all producers.
    pub(crate) fn pending(&self) -> usize {
        self.count
    }

    /// True when another message may be taken (room by count and bytes).
    pub(crate) fn has_room(&self) -> bool {
        self.count == 0 || (self.count < self.size && self.bytes < self.max_bytes)
    }

    /// Highest id of `p` such that it and every id taken before it are
    /// confirmed (or the broker's sequence, when that is higher and nothing
    /// is pending); 0 when none.
    pub(crate) fn confirmed(&self, p: usize) -> u64 {
        self.books.get(p).map_or(0, |b| b.done)
    }

    /// The broker's sequence for `p` as last asked.
    pub(crate) fn sequence(&self, p: usize) -> u64 {
        self.books.get(p).map_or(0, |b| b.sequence)
    }

    /// The first pending message: (producer, id).
    pub(crate) fn first_pending(&self) -> Option<(usize, u64)> {
        self.books
            .iter()
            .enumerate()
            .find_map(|(p, b)| b.slots.iter().find(|s| !s.acked).map(|s| (p, s.id)))
    }

    /// Takes message `id` of `p` into the window, not yet sent.
    pub(crate) fn take(
        &mut self,
        p: usize,
        id: u64,
        payload: T,
        len: usize,
    ) -> Result<(), Refusal> {
        let book = self.books.get_mut(p).ok_or(Refusal::UnknownProducer)?;
        if id == 0 {
            return Err(Refusal::Zero);
        }
        if id <= book.last {
            return Err(Refusal::NotIncreasing { last: book.last });
        }
        if id <= book.sequence {
            self.counts.below_sequence += 1;
        }
        book.last = id;
        book.slots.push_back(Slot {
            id,
            payload,
            len,
            sent: false,
            acked: false,
        });
        self.count += 1;
        self.bytes += len;
        Ok(())
    }

    fn slot_mut(&mut self, p: usize, id: u64) -> Option<&mut Slot<T>> {
        let book = self.books.get_mut(p)?;
        let at = book.slots.binary_search_by_key(&id, |s| s.id).ok()?;
        book.slots.get_mut(at)
    }

    /// What a send of `id` of `p` needs, while it is pending.
    pub(crate) fn payload(&self, p: usize, id: u64) -> Option<&T> {
        let book = self.books.get(p)?;
        let at = book.slots.binary_search_by_key(&id, |s| s.id).ok()?;
        book.slots.get(at).map(|s| &s.payload)
    }

    /// `id` of `p` went out on the current link.
    pub(crate) fn sent(&mut self, p: usize, id: u64) {
        if let Some(s) = self.slot_mut(p, id) {
            s.sent = true;
        }
    }

    /// The broker confirmed `ids` of `p`; returns how many were pending and
    /// in flight (confirms for anything else — an earlier link's — are
    /// ignored).
    pub(crate) fn confirm(&mut self, p: usize, ids: &[u64]) -> usize {
        let mut n = 0;
        for &id in ids {
            if let Some(s) = self.slot_mut(p, id)
                && s.sent
                && !s.acked
            {
                s.acked = true;
                s.sent = false;
                n += 1;
            }
        }
        self.counts.confirmed += n as u64;
        self.advance(p);
        n
    }

    /// The broker refused `id` of `p` (a publish error): not confirmed, no
    /// longer in flight (a reconnect resends it). Returns whether it was in
    /// flight.
    pub(crate) fn refused(&mut self, p: usize, id: u64) -> bool {
        match self.slot_mut(p, id) {
            Some(s) if s.sent && !s.acked => {
                s.sent = false;
                true
            }
            _ => false,
        }
    }

    /// The link is gone: nothing on it will be answered.
    pub(crate) fn lose_link(&mut self) {
        for book in &mut self.books {
            for s in &mut book.slots {
                s.sent = false;
            }
        }
    }

    /// After a new link: the broker holds `p` up to `sequence`. Pending
    /// messages at or below it are stored (confirmed now, counted in
    /// `already_stored`); returns the ids to send again, in order.
    pub(crate) fn resume(&mut self, p: usize, sequence: u64) -> Vec<u64> {
        let Some(book) = self.books.get_mut(p) else {
            return Vec::new();
        };
        book.sequence = sequence;
        let mut stored = 0;
        let mut resend = Vec::new();
        for s in &mut book.slots {
            if s.acked {
                continue;
            }
            if s.id <= sequence {
                s.acked = true;
                s.sent = false;
                stored += 1;
            } else if !s.sent {
                resend.push(s.id);
            }
        }
        self.counts.already_stored += stored;
        self.counts.confirmed += stored;
        self.advance(p);
        if let Some(book) = self.books.get_mut(p)
            && book.slots.is_empty()
        {
            book.done = book.done.max(sequence);
        }
        resend
    }

    /// Counts a message sent again.
    pub(crate) fn resent(&mut self) {
        self.counts.resent += 1;
    }

    /// Moves the confirmed prefix of `p` out of the window.
    fn advance(&mut self, p: usize) {
        let Some(book) = self.books.get_mut(p) else {
            return;
        };
        while book.slots.front().is_some_and(|s| s.acked) {
            if let Some(s) = book.slots.pop_front() {
                book.done = book.done.max(s.id);
                self.count -= 1;
                self.bytes -= s.len;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger() -> Ledger<()> {
        Ledger::new(4, 1000)
    }

    #[test]
    fn confirms_advance_the_contiguous_mark_per_producer() {
        let mut l = ledger();
        let a = l.add("a");
        let b = l.add("b");
        for id in [10, 20, 30] {
            l.take(a, id, (), 1).unwrap();
            l.sent(a, id);
        }
        l.take(b, 5, (), 1).unwrap();
        l.sent(b, 5);
        assert!(!l.has_room());
        // Out of order: 20 first leaves the mark at 0.
        assert_eq!(l.confirm(a, &[20]), 1);
        assert_eq!(l.confirmed(a), 0);
        assert_eq!(l.confirm(a, &[10]), 1);
        assert_eq!(l.confirmed(a), 20);
        assert_eq!(l.confirmed(b), 0);
        assert_eq!(l.pending(), 2);
        assert!(l.has_room());
        // A repeated or unknown confirm counts nothing.
        assert_eq!(l.confirm(a, &[10, 99]), 0);
        assert_eq!(l.counts().confirmed, 2);
        assert_eq!(l.first_pending(), Some((a, 30)));
    }

    #[test]
    fn ids_must_increase_and_start_at_one() {
        let mut l = ledger();
        let a = l.add("a");
        assert_eq!(l.take(a, 0, (), 1), Err(Refusal::Zero));
        l.take(a, 7, (), 1).unwrap();
        assert_eq!(l.take(a, 7, (), 1), Err(Refusal::NotIncreasing { last: 7 }));
        assert_eq!(l.take(a, 3, (), 1), Err(Refusal::NotIncreasing { last: 7 }));
        assert_eq!(l.take(5, 9, (), 1), Err(Refusal::UnknownProducer));
    }

    #[test]
    fn the_byte_bound_holds_but_one_message_always_goes() {
        let mut l = Ledger::<()>::new(10, 100);
        let a = l.add("a");
        l.take(a, 1, (), 500).unwrap();
        assert!(!l.has_room());
        l.sent(a, 1);
        l.confirm(a, &[1]);
        assert!(l.has_room());
        l.take(a, 2, (), 60).unwrap();
        assert!(l.has_room());
        l.take(a, 3, (), 60).unwrap();
        assert!(!l.has_room());
    }

    #[test]
    fn a_publish_error_is_not_a_confirm() {
        let mut l = ledger();
        let a = l.add("a");
        l.take(a, 1, (), 1).unwrap();
        l.sent(a, 1);
        assert!(l.refused(a, 1));
        assert!(!l.refused(a, 1), "no longer in flight");
        assert_eq!(l.confirmed(a), 0);
        assert_eq!(l.pending(), 1);
        // A late confirm for it (it is not in flight) is ignored too.
        assert_eq!(l.confirm(a, &[1]), 0);
        assert_eq!(l.counts().confirmed, 0);
    }

    #[test]
    fn reconnect_counts_what_the_broker_stored_and_resends_the_rest_in_order() {
        let mut l = Ledger::<()>::new(10, 1000);
        let a = l.add("a");
        let b = l.add("b");
        for id in 1..=6 {
            l.take(a, id, (), 1).unwrap();
            l.sent(a, id);
        }
        l.confirm(a, &[1, 2]);
        l.take(b, 100, (), 1).unwrap();
        l.sent(b, 100);
        l.lose_link();
        // Confirms from the old link no longer count.
        assert_eq!(l.confirm(a, &[3]), 0);
        // The broker stored a up to 4 (3 and 4 were never confirmed to us).
        assert_eq!(l.resume(a, 4), vec![5, 6]);
        assert_eq!(l.confirmed(a), 4);
        assert_eq!(l.counts().already_stored, 2);
        assert_eq!(l.counts().confirmed, 4);
        // b's broker sequence is older: everything goes again.
        assert_eq!(l.resume(b, 50), vec![100]);
        assert_eq!(l.confirmed(b), 0);
        for id in [5, 6] {
            l.sent(a, id);
            l.resent();
        }
        l.sent(b, 100);
        l.confirm(a, &[5, 6]);
        l.confirm(b, &[100]);
        assert_eq!(l.pending(), 0);
        assert_eq!(l.confirmed(a), 6);
        assert_eq!(l.confirmed(b), 100);
        let c = l.counts();
        assert_eq!((c.confirmed, c.resent, c.already_stored), (7, 2, 2));
    }

    #[test]
    fn the_sequence_counts_repeats_and_raises_an_idle_mark() {
        let mut l = ledger();
        let a = l.add("a");
        assert!(l.resume(a, 40).is_empty());
        assert_eq!(l.confirmed(a), 40);
        assert_eq!(l.sequence(a), 40);
        // Below the broker's sequence: it will drop it (and confirm it).
        l.take(a, 39, (), 1).unwrap();
        l.take(a, 41, (), 1).unwrap();
        assert_eq!(l.counts().below_sequence, 1);
    }

    #[test]
    fn a_resume_while_messages_are_in_flight_leaves_them_in_flight() {
        let mut l = ledger();
        let a = l.add("a");
        l.take(a, 1, (), 1).unwrap();
        l.sent(a, 1);
        l.take(a, 2, (), 1).unwrap();
        // 2 was never sent: the resume lists it, 1 stays in flight.
        assert_eq!(l.resume(a, 0), vec![2]);
        assert_eq!(l.confirm(a, &[1]), 1);
    }
}
