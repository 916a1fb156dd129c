//! The one stop signal of a run: set once (by a signal, or a test), seen by
//! async code (the publisher, the pass loop) as a future and by threads
//! (the parser, a follower) as a flag they look at between reads. Every
//! stage takes a [`Shutdown`]; none bridges one kind of flag to another.
//! A [`child`](Shutdown::child) stops one piece of work (a directory's
//! producer) early without stopping the run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// A cloneable stop signal; all clones see the same one.
#[derive(Clone, Debug, Default)]
pub struct Shutdown(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    flag: AtomicBool,
    notify: Notify,
    /// Triggering the parent triggers this one too.
    parent: Option<Shutdown>,
}

impl Shutdown {
    /// A signal not given yet.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// A signal given when this one is, or on its own (then this one is
    /// not).
    pub fn child(&self) -> Shutdown {
        Shutdown(Arc::new(Inner {
            flag: AtomicBool::new(false),
            notify: Notify::new(),
            parent: Some(self.clone()),
        }))
    }

    /// Gives the signal: every clone sees it, and tasks waiting in
    /// [`Shutdown::triggered`] wake.
    pub fn trigger(&self) {
        self.0.flag.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    /// Gives the signal without waking waiting tasks: the only part that is
    /// safe inside a signal handler (an atomic store). For programs whose
    /// stages only look at [`Shutdown::is_triggered`].
    pub fn trigger_from_signal_handler(&self) {
        self.0.flag.store(true, Ordering::SeqCst);
    }

    /// True once the signal was given (to this one or a parent).
    pub fn is_triggered(&self) -> bool {
        self.0.flag.load(Ordering::Relaxed)
            || self.0.parent.as_ref().is_some_and(Shutdown::is_triggered)
    }

    /// Resolves once the signal is given (at once when it was).
    pub async fn triggered(&self) {
        match &self.0.parent {
            None => self.own().await,
            Some(parent) => {
                tokio::select! {
                    () = self.own() => {}
                    () = Box::pin(parent.triggered()) => {}
                }
            }
        }
    }

    /// Resolves once this one's own flag is set.
    async fn own(&self) {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            // Registered before the flag is looked at: a trigger in between
            // is not missed.
            notified.as_mut().enable();
            if self.0.flag.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_sees_one_trigger() {
        let s = Shutdown::new();
        let waiter = {
            let s = s.clone();
            tokio::spawn(async move { s.triggered().await })
        };
        assert!(!s.is_triggered());
        let c = s.clone();
        std::thread::spawn(move || c.trigger()).join().unwrap();
        waiter.await.unwrap();
        assert!(s.is_triggered());
        // Already given: resolves at once.
        s.triggered().await;
    }

    #[tokio::test]
    async fn a_child_stops_alone_or_with_its_parent() {
        let run = Shutdown::new();
        let dir = run.child();
        dir.trigger();
        assert!(dir.is_triggered() && !run.is_triggered());
        let next = run.child();
        let waiter = {
            let next = next.clone();
            tokio::spawn(async move { next.triggered().await })
        };
        run.trigger();
        waiter.await.unwrap();
        assert!(next.is_triggered());
    }
}
