//! Acknowledgements of durability: how a receiver learns that what it accepted is on disk.
//!
//! When a pipeline fans out to an exporter with a write-ahead log, the receiver must not tell
//! the client "accepted" until the batch is in that log. The receiver creates one [`Ack`] per
//! request and waits on its [`AckWaiter`]; the `Ack` travels inside the batch (merged by the
//! batcher, cloned with the batch), and the pipeline hands a clone to each durable exporter
//! at fan-out. The waiter resolves when the last clone is dropped: durable, unless some
//! holder called [`Ack::fail`] (a log that could not be written), in which case the client is
//! answered with a retryable error.
//!
//! Data that legitimately ends before any log (filtered out, absorbed into an aggregation's
//! state) drops its clones and so counts as handled, which is what it is.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tokio::sync::oneshot;

struct Inner {
    failed: AtomicBool,
    tx: Mutex<Option<oneshot::Sender<bool>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.get_mut().take() {
            let _ = tx.send(!self.failed.load(Ordering::Acquire));
        }
    }
}

/// One request's acknowledgement; resolved when its last clone is dropped.
#[derive(Clone)]
pub struct Ack(Arc<Inner>);

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ack")
            .field("failed", &self.0.failed.load(Ordering::Relaxed))
            .finish()
    }
}

/// The receiver's side: resolves to whether every durable exporter persisted the request.
#[derive(Debug)]
pub struct AckWaiter(oneshot::Receiver<bool>);

impl Ack {
    /// A new acknowledgement and its waiter.
    pub fn new() -> (Ack, AckWaiter) {
        let (tx, rx) = oneshot::channel();
        (
            Ack(Arc::new(Inner {
                failed: AtomicBool::new(false),
                tx: Mutex::new(Some(tx)),
            })),
            AckWaiter(rx),
        )
    }

    /// Marks the request as not persisted; the waiter then resolves to `false`.
    pub fn fail(&self) {
        self.0.failed.store(true, Ordering::Release);
    }
}

impl AckWaiter {
    /// Waits until every clone of the [`Ack`] is gone; `true` when none failed.
    pub async fn wait(self) -> bool {
        self.0.await.unwrap_or(false)
    }
}

/// The acknowledgements a batch carries (empty unless a durable exporter waits for it).
#[derive(Debug, Clone, Default)]
pub struct Acks(Vec<Ack>);

impl Acks {
    /// No acknowledgements.
    pub fn none() -> Self {
        Self(Vec::new())
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds one.
    pub fn push(&mut self, ack: Ack) {
        self.0.push(ack);
    }

    /// Moves all of `other`'s into these.
    pub fn extend(&mut self, other: Acks) {
        self.0.extend(other.0);
    }

    /// Marks every request as not persisted.
    pub fn fail(&self) {
        for a in &self.0 {
            a.fail();
        }
    }
}

/// The acknowledgements a durable exporter holds for a queued batch: dropped without
/// [`PendingAcks::confirm`] (the queue was abandoned, the log failed), they fail, so a client is
/// never told "stored" for data that could be stored. (Data the exporter cannot encode at
/// all is confirmed after it is dropped and counted, as a filter's drop would be: a retry
/// could not help.)
#[derive(Debug, Default)]
pub struct PendingAcks(Option<Acks>);

impl PendingAcks {
    /// Holds `acks` until confirmed.
    pub fn new(acks: Acks) -> Self {
        Self((!acks.is_empty()).then_some(acks))
    }

    /// Whether there are none (nobody waits on this batch).
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The data is persisted: the acknowledgements go (successfully, unless another holder
    /// fails them).
    pub fn confirm(mut self) {
        self.0 = None;
    }
}

impl Drop for PendingAcks {
    fn drop(&mut self) {
        if let Some(a) = self.0.take() {
            a.fail();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_when_the_last_clone_goes_and_reports_failure() {
        let (ack, waiter) = Ack::new();
        let mut acks = Acks::none();
        acks.push(ack.clone());
        let copy = acks.clone();
        drop(ack);
        drop(acks);
        let w = tokio::spawn(waiter.wait());
        tokio::task::yield_now().await;
        assert!(!w.is_finished(), "a clone is still held");
        drop(copy);
        assert!(w.await.expect("task"));

        let (ack, waiter) = Ack::new();
        let mut acks = Acks::none();
        acks.push(ack);
        let other = acks.clone();
        other.fail();
        drop((acks, other));
        assert!(!waiter.wait().await, "one holder failed");

        let (ack, waiter) = Ack::new();
        let mut acks = Acks::none();
        acks.push(ack);
        drop(PendingAcks::new(acks));
        assert!(!waiter.wait().await, "abandoned unconfirmed");
        let (ack, waiter) = Ack::new();
        let mut acks = Acks::none();
        acks.push(ack);
        PendingAcks::new(acks).confirm();
        assert!(waiter.wait().await, "confirmed");
    }
}
