//! The confirm window as a pure state machine: which ids are in flight, what
//! the broker's acks, nacks and returns do to them, what a lost link leaves to
//! resend and in which order, how far the write-ahead record lets ids go out,
//! and when the progress record is due. No lapin, no tokio, no I/O: the
//! publisher drives it and does the sending, waiting and writing.

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use crate::resume::Mark;

/// Longest time confirmed messages wait to be recorded while confirms arrive.
pub(crate) const RECORD_INTERVAL: Duration = Duration::from_secs(1);

/// How the broker answered for a message in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// A plain basic.ack: the broker took responsibility. The only success.
    Ack,
    /// basic.nack: the broker could not take it.
    Nack,
    /// basic.return (then an ack): no queue is bound for its routing key.
    Returned,
    /// No usable confirm: it timed out or the channel failed.
    Lost,
}

/// A message in the window.
struct Slot<T> {
    id: u64,
    /// Kept for a resend until acked.
    body: Vec<u8>,
    mark: Mark,
    /// What the driver waits on while the message is in flight on the
    /// current link; `None` when it is to be (re)sent or acked.
    ticket: Option<T>,
    acked: bool,
}

/// The messages of one stream that are sent but not yet confirmed, and the
/// counters of the progress record. `T` is the driver's handle on a message
/// in flight (its confirm future); tests use `()`.
pub(crate) struct Window<T> {
    slots: VecDeque<Slot<T>>,
    /// Most messages in the window.
    size: usize,
    /// Most unconfirmed body bytes (one message is always allowed).
    max_bytes: usize,
    /// Whether a progress record is kept: only then does `reserved` limit
    /// what goes out and is a record ever due.
    recording: bool,
    /// Bytes of the bodies in the window not yet confirmed.
    bytes: usize,
    next: u64,
    confirmed: u64,
    /// Mark after the last confirmed message.
    confirmed_mark: Mark,
    /// Confirmed ids the record holds.
    recorded: u64,
    /// Ids below this are covered by a record written before sending.
    reserved: u64,
    /// When the record was last written.
    last_write: Instant,
    input_done: bool,
}

impl<T> Window<T> {
    /// An empty window whose first id is `start` (the mark before it is
    /// `mark`); everything before is confirmed and recorded, nothing beyond
    /// is reserved yet.
    pub(crate) fn new(
        start: u64,
        mark: Mark,
        size: NonZeroUsize,
        max_bytes: usize,
        recording: bool,
        now: Instant,
    ) -> Self {
        Window {
            slots: VecDeque::with_capacity(size.get()),
            size: size.get(),
            max_bytes,
            recording,
            bytes: 0,
            next: start,
            confirmed: start,
            confirmed_mark: mark,
            recorded: start,
            reserved: start,
            last_write: now,
            input_done: false,
        }
    }

    /// Id after the last confirmed message of the contiguous prefix.
    pub(crate) fn confirmed(&self) -> u64 {
        self.confirmed
    }

    /// Mark after the last confirmed message.
    pub(crate) fn confirmed_mark(&self) -> Mark {
        self.confirmed_mark
    }

    /// Ids below this may have been sent (what the record must say).
    pub(crate) fn reserved(&self) -> u64 {
        self.reserved
    }

    /// The first id not confirmed (the next id when the window is empty).
    pub(crate) fn first_unconfirmed(&self) -> u64 {
        self.slots.front().map_or(self.next, |s| s.id)
    }

    /// Messages taken and not confirmed.
    pub(crate) fn pending(&self) -> u64 {
        self.next - self.confirmed
    }

    /// True when the input ended and every message is confirmed.
    pub(crate) fn is_drained(&self) -> bool {
        self.input_done && self.slots.is_empty()
    }

    /// No more messages will be taken.
    pub(crate) fn end_input(&mut self) {
        self.input_done = true;
    }

    /// True when another message may be taken: room in the window (by count
    /// and by bytes) and, with a record, an id below `reserved`.
    pub(crate) fn wants_input(&self) -> bool {
        !self.input_done
            && self.slots.len() < self.size
            && (self.bytes < self.max_bytes || self.slots.is_empty())
            && (self.next < self.reserved || !self.recording)
    }

    /// Takes the next message into the window, not yet sent; returns its id.
    pub(crate) fn push(&mut self, body: Vec<u8>, mark: Mark) -> u64 {
        let id = self.next;
        debug_assert!(
            !self.recording || id < self.reserved,
            "id {id} not reserved"
        );
        self.next += 1;
        self.bytes += body.len();
        self.slots.push_back(Slot {
            id,
            body,
            mark,
            ticket: None,
            acked: false,
        });
        id
    }

    fn slot(&self, id: u64) -> Option<&Slot<T>> {
        let front = self.slots.front()?.id;
        self.slots
            .get(usize::try_from(id.checked_sub(front)?).ok()?)
    }

    fn slot_mut(&mut self, id: u64) -> Option<&mut Slot<T>> {
        let front = self.slots.front()?.id;
        self.slots
            .get_mut(usize::try_from(id.checked_sub(front)?).ok()?)
    }

    /// The body of `id` while it is unconfirmed (for a send or a resend).
    pub(crate) fn body(&self, id: u64) -> &[u8] {
        self.slot(id).map_or(&[], |s| &s.body)
    }

    /// `id` went out on the current link; `ticket` waits for its confirm.
    pub(crate) fn sent(&mut self, id: u64, ticket: T) {
        if let Some(slot) = self.slot_mut(id) {
            slot.ticket = Some(ticket);
        }
    }

    /// Ids in flight on the current link, in order.
    pub(crate) fn in_flight(&self) -> Vec<u64> {
        self.slots
            .iter()
            .filter(|s| s.ticket.is_some())
            .map(|s| s.id)
            .collect()
    }

    /// Ids that must be sent again before anything new, in order.
    pub(crate) fn unsent(&self) -> Vec<u64> {
        self.slots
            .iter()
            .filter(|s| !s.acked && s.ticket.is_none())
            .map(|s| s.id)
            .collect()
    }

    /// The first unconfirmed id and its ticket, if it is in flight.
    pub(crate) fn first_mut(&mut self) -> Option<(u64, Option<&mut T>)> {
        self.slots
            .iter_mut()
            .find(|s| !s.acked)
            .map(|s| (s.id, s.ticket.as_mut()))
    }

    /// The ticket of `id`, if it is in flight.
    pub(crate) fn ticket_mut(&mut self, id: u64) -> Option<&mut T> {
        self.slot_mut(id).and_then(|s| s.ticket.as_mut())
    }

    /// Applies the broker's answer for `id` (with `multiple`, for every id
    /// in flight up to it) and returns how many messages it settled. Only
    /// [`Answer::Ack`] confirms; any other answer leaves them unconfirmed
    /// and out of flight, to be resent. Ids not in flight (answers from a
    /// link that is gone) are ignored.
    pub(crate) fn settle(&mut self, id: u64, multiple: bool, answer: Answer) -> usize {
        let mut settled = 0;
        for slot in self.slots.iter_mut() {
            let hit = if multiple {
                slot.id <= id
            } else {
                slot.id == id
            };
            if !hit || slot.ticket.is_none() {
                continue;
            }
            slot.ticket = None;
            settled += 1;
            if answer == Answer::Ack {
                slot.acked = true;
                self.bytes -= slot.body.len();
                slot.body = Vec::new();
            }
        }
        self.advance();
        settled
    }

    /// The link is gone: nothing sent on it can be confirmed any more, so
    /// every unconfirmed message is resent on the next one.
    pub(crate) fn lose_link(&mut self) {
        for slot in self.slots.iter_mut() {
            slot.ticket = None;
        }
    }

    /// Moves the confirmed prefix out of the window.
    fn advance(&mut self) {
        while self.slots.front().is_some_and(|s| s.acked) {
            if let Some(slot) = self.slots.pop_front() {
                self.confirmed = slot.id + 1;
                self.confirmed_mark = slot.mark;
            }
        }
    }

    /// Lets the next window of ids go out: the record about to be written
    /// says they may have been sent.
    pub(crate) fn reserve(&mut self) {
        self.reserved = self.reserved.max(self.confirmed + self.size as u64);
    }

    /// The record now holds what is confirmed.
    pub(crate) fn recorded(&mut self, now: Instant) {
        self.recorded = self.confirmed;
        self.last_write = now;
    }

    /// True when the record should be written now (with
    /// [`reserve`](Self::reserve)): sending is held up by `reserved` and
    /// half a window (or all that was sent) was confirmed since the last
    /// write, or confirms waited [`RECORD_INTERVAL`]. This keeps the record
    /// close behind the confirms at a few durable writes per window, and a
    /// resumed run sends at most a window twice.
    pub(crate) fn record_now(&self, now: Instant) -> bool {
        if !self.recording {
            return false;
        }
        let lag = self.confirmed - self.recorded;
        let held_up = !self.input_done && self.next >= self.reserved;
        let half = (self.size as u64 / 2).max(1);
        let stale = lag > 0 && now.saturating_duration_since(self.last_write) >= RECORD_INTERVAL;
        (held_up && (lag >= half || self.confirmed == self.next)) || stale
    }

    /// When confirms not yet recorded must be written even if nothing else
    /// happens: [`RECORD_INTERVAL`] after the last write.
    pub(crate) fn record_due(&self) -> Option<Instant> {
        (self.recording && self.confirmed > self.recorded)
            .then(|| self.last_write + RECORD_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(items: u64) -> Mark {
        Mark {
            items,
            ..Mark::default()
        }
    }

    /// A window of `size` starting at id 10, without a record.
    fn window(size: usize) -> Window<()> {
        let size = NonZeroUsize::new(size).unwrap();
        Window::new(10, mark(0), size, 1 << 20, false, Instant::now())
    }

    /// The id the next message gets.
    fn next_id(w: &Window<()>) -> u64 {
        w.confirmed() + w.pending()
    }

    /// Takes and sends `n` messages of 3 bytes.
    fn send(w: &mut Window<()>, n: u64) {
        for _ in 0..n {
            let id = w.push(b"abc".to_vec(), mark(next_id(w) + 1));
            w.sent(id, ());
        }
    }

    #[test]
    fn acks_out_of_order_confirm_only_the_contiguous_prefix() {
        let mut w = window(8);
        send(&mut w, 4); // ids 10..14
        assert_eq!(w.settle(12, false, Answer::Ack), 1);
        assert_eq!(w.settle(11, false, Answer::Ack), 1);
        assert_eq!(w.confirmed(), 10, "10 is still unconfirmed");
        assert_eq!(w.first_unconfirmed(), 10);
        assert_eq!(w.in_flight(), vec![10, 13]);
        assert_eq!(w.settle(10, false, Answer::Ack), 1);
        assert_eq!(w.confirmed(), 13);
        assert_eq!(w.confirmed_mark(), mark(13));
        assert_eq!(w.bytes, 3);
        assert_eq!(w.settle(11, false, Answer::Ack), 0, "already confirmed");
    }

    #[test]
    fn a_multiple_ack_confirms_every_id_in_flight_up_to_it() {
        let mut w = window(8);
        send(&mut w, 5); // ids 10..15
        assert_eq!(w.settle(12, true, Answer::Ack), 3);
        assert_eq!(w.confirmed(), 13);
        assert_eq!(w.in_flight(), vec![13, 14]);
        assert_eq!(w.settle(14, true, Answer::Ack), 2);
        assert_eq!(w.confirmed(), 15);
        assert_eq!(w.pending(), 0);
        assert_eq!(w.bytes, 0);
    }

    #[test]
    fn a_nack_leaves_the_message_unconfirmed_for_a_resend() {
        let mut w = window(8);
        send(&mut w, 3); // ids 10..13
        assert_eq!(w.settle(10, false, Answer::Nack), 1);
        assert_eq!(w.settle(11, false, Answer::Ack), 1);
        assert_eq!(w.confirmed(), 10);
        assert_eq!(w.in_flight(), vec![12]);
        assert_eq!(w.unsent(), vec![10]);
        assert_eq!(w.body(10), b"abc");
        assert_eq!(w.pending(), 3);
        // A late ack for the nacked id is not believed.
        assert_eq!(w.settle(10, false, Answer::Ack), 0);
        assert_eq!(w.confirmed(), 10);
    }

    #[test]
    fn a_multiple_nack_takes_every_id_up_to_it_out_of_flight() {
        let mut w = window(8);
        send(&mut w, 4);
        assert_eq!(w.settle(12, true, Answer::Nack), 3);
        assert_eq!(w.unsent(), vec![10, 11, 12]);
        assert_eq!(w.in_flight(), vec![13]);
        assert_eq!(w.confirmed(), 10);
    }

    #[test]
    fn a_returned_message_is_not_delivered() {
        let mut w = window(8);
        send(&mut w, 2);
        assert_eq!(w.settle(10, false, Answer::Returned), 1);
        assert_eq!(w.settle(11, false, Answer::Ack), 1);
        assert_eq!(w.confirmed(), 10);
        assert_eq!(w.first_unconfirmed(), 10);
        assert_eq!(w.unsent(), vec![10]);
        assert!(!w.is_drained());
    }

    #[test]
    fn a_lost_link_with_partial_acks_resends_the_rest_in_order() {
        let mut w = window(8);
        send(&mut w, 6); // ids 10..16
        w.settle(10, false, Answer::Ack);
        w.settle(12, false, Answer::Ack);
        w.settle(14, false, Answer::Ack);
        w.lose_link();
        assert!(w.in_flight().is_empty());
        assert_eq!(w.confirmed(), 11);
        assert_eq!(w.unsent(), vec![11, 13, 15]);
        // Answers from the old link are ignored.
        assert_eq!(w.settle(15, true, Answer::Ack), 0);
        // Resent in that order on the new link; the acked ones are not.
        for id in w.unsent() {
            w.sent(id, ());
        }
        assert_eq!(w.in_flight(), vec![11, 13, 15]);
        assert_eq!(w.settle(15, true, Answer::Ack), 3);
        assert_eq!(w.confirmed(), 16);
        assert!(w.unsent().is_empty());
    }

    #[test]
    fn a_failed_send_is_kept_for_the_resend() {
        let mut w = window(8);
        send(&mut w, 1);
        let id = w.push(b"xy".to_vec(), mark(12));
        assert_eq!(w.unsent(), vec![id]);
        assert_eq!(w.bytes, 5);
        assert_eq!(
            w.first_mut().map(|(id, t)| (id, t.is_some())),
            Some((10, true))
        );
    }

    #[test]
    fn the_window_limits_count_and_bytes() {
        let size = NonZeroUsize::new(3).unwrap();
        let mut w: Window<()> = Window::new(0, mark(0), size, 7, false, Instant::now());
        assert!(w.wants_input());
        w.push(vec![0; 10], mark(1));
        assert!(!w.wants_input(), "over the byte bound");
        w.sent(0, ());
        w.settle(0, false, Answer::Ack);
        send(&mut w, 2);
        assert!(w.wants_input());
        send(&mut w, 1);
        assert!(!w.wants_input(), "three in the window");
        w.end_input();
        w.settle(3, true, Answer::Ack);
        assert!(!w.wants_input());
        assert!(w.is_drained());
    }

    #[test]
    fn no_id_goes_out_beyond_what_the_record_reserved() {
        let size = NonZeroUsize::new(4).unwrap();
        let t0 = Instant::now();
        let mut w: Window<()> = Window::new(10, mark(0), size, 1 << 20, true, t0);
        assert!(!w.wants_input(), "nothing reserved before the first write");
        assert!(w.record_now(t0), "held up with everything confirmed");
        w.reserve();
        w.recorded(t0);
        assert_eq!(w.reserved(), 14);
        send(&mut w, 4);
        assert_eq!(next_id(&w), w.reserved());
        assert!(!w.wants_input(), "id 14 is not reserved");
        w.settle(10, false, Answer::Ack);
        w.reserve();
        assert_eq!(w.reserved(), 15, "one window beyond the confirms");
        assert!(w.wants_input());
    }

    #[test]
    fn the_record_is_written_at_half_a_window_when_held_up() {
        let size = NonZeroUsize::new(4).unwrap();
        let t0 = Instant::now();
        let mut w: Window<()> = Window::new(0, mark(0), size, 1 << 20, true, t0);
        w.reserve();
        w.recorded(t0);
        send(&mut w, 4); // held up: next == reserved
        assert!(!w.record_now(t0));
        w.settle(0, false, Answer::Ack);
        assert!(!w.record_now(t0), "lag 1 of half 2");
        assert_eq!(w.record_due(), Some(t0 + RECORD_INTERVAL));
        w.settle(1, false, Answer::Ack);
        assert!(w.record_now(t0), "lag 2 = half a window");
        w.reserve();
        w.recorded(t0);
        assert_eq!(w.reserved(), 6);
        assert_eq!(w.record_due(), None, "all confirms recorded");
    }

    #[test]
    fn the_record_follows_within_a_second_when_not_held_up() {
        let size = NonZeroUsize::new(8).unwrap();
        let t0 = Instant::now();
        let mut w: Window<()> = Window::new(0, mark(0), size, 1 << 20, true, t0);
        w.reserve();
        w.recorded(t0);
        send(&mut w, 2);
        w.settle(1, true, Answer::Ack);
        let almost = t0 + RECORD_INTERVAL - Duration::from_millis(1);
        assert!(!w.record_now(almost));
        assert!(w.record_now(t0 + RECORD_INTERVAL));
        assert_eq!(w.record_due(), Some(t0 + RECORD_INTERVAL));
        w.end_input();
        assert!(!w.record_now(almost), "input done: only staleness writes");
    }

    #[test]
    fn without_a_record_nothing_is_reserved_or_due() {
        let mut w = window(2);
        send(&mut w, 2);
        w.settle(11, true, Answer::Ack);
        assert!(!w.record_now(Instant::now() + RECORD_INTERVAL * 2));
        assert_eq!(w.record_due(), None);
        assert!(w.wants_input());
    }
}
