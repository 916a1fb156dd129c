//! `--dedupe N`: the message ids of the last N messages written, so a
//! message delivered again (a redelivery after a reconnect, a publisher's
//! resend after a crash) is dropped instead of written twice. Memory is
//! bounded: N ids in a ring plus a set of the same ids.

use std::collections::{HashSet, VecDeque};

/// The last `capacity` message ids written.
#[derive(Debug, Default)]
pub struct Dedupe {
    capacity: usize,
    order: VecDeque<String>,
    seen: HashSet<String>,
}

impl Dedupe {
    /// Remembers the last `capacity` ids (0: remembers none, drops nothing).
    pub fn new(capacity: usize) -> Self {
        Dedupe {
            capacity,
            order: VecDeque::with_capacity(capacity.min(1 << 16)),
            seen: HashSet::with_capacity(capacity.min(1 << 16)),
        }
    }

    /// True when `id` is among the remembered ones (a repeat to drop).
    pub fn is_repeat(&self, id: &str) -> bool {
        self.capacity > 0 && self.seen.contains(id)
    }

    /// Remembers `id` as written, forgetting the oldest beyond capacity.
    pub fn remember(&mut self, id: &str) {
        if self.capacity == 0 || self.seen.contains(id) {
            return;
        }
        if self.order.len() == self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.order.push_back(id.to_string());
        self.seen.insert(id.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_only_the_last_n() {
        let mut d = Dedupe::new(2);
        assert!(!d.is_repeat("a"));
        d.remember("a");
        d.remember("b");
        assert!(d.is_repeat("a") && d.is_repeat("b"));
        d.remember("a");
        d.remember("c");
        assert!(!d.is_repeat("a") && d.is_repeat("b") && d.is_repeat("c"));
        assert_eq!((d.order.len(), d.seen.len()), (2, 2));
        let mut off = Dedupe::new(0);
        off.remember("a");
        assert!(!off.is_repeat("a"));
    }
}
