//! The worker of an exporter with a write-ahead log: intake (prepare, append, confirm),
//! feeder (read the log back within the in-memory budget) and one task per lane (send,
//! retry, acknowledge).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

use super::wal::{AppendError, Wal, WalError, WalRecord, WalSync};
use super::{Attempted, Bounds, Queued, WalHealth, Worker};
use crate::Request;
use crate::ack::PendingAcks;

/// Bytes of records read back and not yet acknowledged.
struct Budget {
    used: AtomicU64,
    max: u64,
    freed: Notify,
}

impl Budget {
    fn room(&self) -> u64 {
        self.max.saturating_sub(self.used.load(Ordering::Acquire))
    }

    fn take(&self, n: u64) {
        self.used.fetch_add(n, Ordering::AcqRel);
    }

    fn release(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::AcqRel);
        self.freed.notify_one();
    }
}

impl Worker {
    /// Runs until the queue is closed and everything in it is in the log, then sends what
    /// the log holds until it is empty, the backend fails, or the shutdown deadline passes;
    /// what is left stays in the log for the next start.
    pub(super) async fn run_durable(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<Queued>,
        wal: Arc<Wal>,
        health: WalHealth,
    ) {
        let me = self;
        let budget = Arc::new(Budget {
            used: AtomicU64::new(0),
            max: wal.config().max_in_memory_bytes.max(1),
            freed: Notify::new(),
        });
        let labels = [("exporter", &*me.id)];
        {
            let b = Arc::downgrade(&budget);
            me.telemetry.gauge_fn(
                "vla_collector_exporter_wal_in_memory_bytes",
                "Bytes of write-ahead log records read back into memory and not yet acknowledged.",
                &labels,
                move || {
                    b.upgrade()
                        .map_or(0, |b| b.used.load(Ordering::Relaxed) as i64)
                },
            );
        }
        let input_closed = CancellationToken::new();
        let stop_feeding = CancellationToken::new();
        let feeder = tokio::spawn(me.clone().feed(
            wal.clone(),
            budget.clone(),
            input_closed.clone(),
            stop_feeding.clone(),
        ));
        let sync_every = match wal.config().sync {
            WalSync::Interval(every) => Some(every),
            _ => None,
        };
        let maintainer = tokio::spawn(maintain(
            wal.clone(),
            sync_every,
            health.clone(),
            input_closed.clone(),
        ));
        // Wake an append waiting for room when the deadline passes.
        let closer = {
            let (wal, stop, done) = (wal.clone(), me.hard_stop.clone(), input_closed.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {
                        let _ = tokio::task::spawn_blocking(move || wal.close()).await;
                    }
                    _ = done.cancelled() => {}
                }
            })
        };
        while let Some(q) = rx.recv().await {
            me.persist(&wal, &health, q).await;
        }
        input_closed.cancel();
        closer.abort();
        if feeder.await.is_err() {
            error!(exporter = %me.id, "write-ahead log feeder failed");
        }
        let _ = maintainer.await;
        let pending = wal.pending_records();
        let w = wal.clone();
        match tokio::task::spawn_blocking(move || w.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!(exporter = %me.id, error = %e, "closing the write-ahead log"),
            Err(e) => error!(exporter = %me.id, error = %e, "closing the write-ahead log"),
        }
        if pending > 0 {
            info!(exporter = %me.id, records = pending, "write-ahead log keeps unsent records for the next start");
        }
        let exporter = me.exporter.clone();
        tokio::select! {
            _ = exporter.shutdown() => {}
            _ = me.hard_stop.cancelled() => {}
        }
        debug!(exporter = %me.id, "exporter stopped");
    }

    /// Prepares a batch and appends its requests; confirms its acknowledgements once they
    /// are in the log (synced, with `sync: always`).
    async fn persist(&self, wal: &Arc<Wal>, health: &WalHealth, q: Queued) {
        let Queued { batch, acks, slot } = q;
        // Out of the queue: the log holds it from here.
        drop(slot);
        let points = batch.data_points() as u64;
        let prepared = match self.exporter.prepare(&batch) {
            Ok(p) => p,
            Err(e) => {
                // Data that cannot be encoded is not worth a client's retry: it is dropped
                // (counted) and the client is answered as for data a filter dropped.
                self.give_up(e.reason, points, &e.message);
                acks.confirm();
                return;
            }
        };
        // The decoded batch is not needed any more: its memory goes back now.
        drop(batch);
        self.sent(prepared.done.sent);
        for (reason, n) in prepared.done.dropped {
            self.dropped(reason, n);
        }
        if prepared.requests.is_empty() {
            acks.confirm();
            return;
        }
        let mut records: Vec<WalRecord> = prepared
            .requests
            .into_iter()
            .map(|r| WalRecord {
                seq: 0,
                lane: r.lane,
                samples: r.samples,
                points: r.points,
                written_unix_ms: 0,
                payload: r.payload,
                replayed: false,
            })
            .collect();
        let w = wal.clone();
        let appended = tokio::task::spawn_blocking(move || {
            let r = w.append(&mut records);
            (r, records)
        })
        .await;
        match appended {
            Ok((Ok(done), _)) => {
                health.report(None);
                if done.dropped_points > 0 || done.dropped_records > 0 {
                    self.give_up(
                        "wal_full",
                        done.dropped_points,
                        "the write-ahead log is full: its oldest unsent records were dropped (when_full: drop_oldest)",
                    );
                }
                acks.confirm();
            }
            Ok((Err(AppendError { done, error }), records)) => {
                let lost: u64 = records[done.records as usize..]
                    .iter()
                    .map(|r| r.points)
                    .sum();
                if done.dropped_points > 0 {
                    self.dropped("wal_full", done.dropped_points);
                }
                let (reason, message) = match &error {
                    WalError::Closed => (
                        "shutdown",
                        "shutdown deadline passed while waiting for room in the write-ahead log"
                            .to_owned(),
                    ),
                    e => {
                        health.report(Some(e.to_string()));
                        ("wal_write_error", e.to_string())
                    }
                };
                self.not_persisted(acks, reason, lost, &message);
            }
            Err(e) => {
                health.report(Some(format!("append task failed: {e}")));
                self.not_persisted(acks, "wal_write_error", points, &e.to_string());
            }
        }
    }

    /// What could not be appended: with clients waiting, they are told to retry (the
    /// receivers count the refusal; the records already appended are sent, so a retry may
    /// send those twice); with nobody waiting (a processor's flush), it is dropped here.
    fn not_persisted(&self, acks: PendingAcks, reason: &'static str, points: u64, message: &str) {
        if acks.is_empty() {
            self.give_up(reason, points, message);
        } else {
            error!(exporter = %self.id, reason, points, error = %message, "write-ahead log append failed; the clients are told to retry");
        }
        drop(acks);
    }

    /// Reads the log back in order, within the budget, and hands each record to its lane.
    async fn feed(
        self: Arc<Self>,
        wal: Arc<Wal>,
        budget: Arc<Budget>,
        input_closed: CancellationToken,
        stop_feeding: CancellationToken,
    ) {
        let mut lanes: HashMap<u32, mpsc::UnboundedSender<WalRecord>> = HashMap::new();
        let mut tasks = Vec::new();
        loop {
            if self.hard_stop.is_cancelled() || stop_feeding.is_cancelled() {
                break;
            }
            let room = budget.room();
            if room == 0 {
                tokio::select! {
                    _ = budget.freed.notified() => {}
                    _ = self.hard_stop.cancelled() => break,
                    _ = stop_feeding.cancelled() => break,
                }
                continue;
            }
            let w = wal.clone();
            let read = tokio::task::spawn_blocking(move || w.read(room)).await;
            let records = match read {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    error!(exporter = %self.id, error = %e, "reading the write-ahead log back; retrying in 1s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = self.hard_stop.cancelled() => break,
                    }
                    continue;
                }
                Err(e) => {
                    error!(exporter = %self.id, error = %e, "write-ahead log reader failed");
                    break;
                }
            };
            let lost = wal.take_lost_points();
            if lost > 0 {
                self.give_up(
                    "wal_corrupt",
                    lost,
                    "write-ahead log records unreadable at run time were skipped",
                );
            }
            if records.is_empty() {
                if input_closed.is_cancelled() && !wal.has_unread() {
                    break;
                }
                tokio::select! {
                    _ = wal.appended() => {}
                    _ = input_closed.cancelled() => {}
                    _ = self.hard_stop.cancelled() => break,
                    _ = stop_feeding.cancelled() => break,
                }
                continue;
            }
            for r in records {
                budget.take(r.stored_len());
                let lane = lanes.entry(r.lane).or_insert_with(|| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    tasks.push(tokio::spawn(self.clone().send_lane_from_wal(
                        wal.clone(),
                        rx,
                        budget.clone(),
                        input_closed.clone(),
                        stop_feeding.clone(),
                    )));
                    tx
                });
                if let Err(mpsc::error::SendError(r)) = lane.send(r) {
                    // The lane stopped (shutdown): the record stays in the log.
                    budget.release(r.stored_len());
                }
            }
        }
        drop(lanes);
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Sends one lane's records in order and acknowledges each one the backend took or
    /// refused for good.
    async fn send_lane_from_wal(
        self: Arc<Self>,
        wal: Arc<Wal>,
        mut rx: mpsc::UnboundedReceiver<WalRecord>,
        budget: Arc<Budget>,
        draining: CancellationToken,
        stop_feeding: CancellationToken,
    ) {
        while let Some(record) = rx.recv().await {
            let len = record.stored_len();
            let request = Request {
                payload: record.payload,
                samples: record.samples,
                points: record.points,
                lane: record.lane,
            };
            let too_old_at = self.sample_age_limit.map(|limit| {
                let written = SystemTime::UNIX_EPOCH
                    + Duration::from_millis(record.written_unix_ms.max(0) as u64);
                let age = SystemTime::now()
                    .duration_since(written)
                    .unwrap_or_default();
                Instant::now() + limit.saturating_sub(age)
            });
            let bounds = Bounds {
                give_up_at: None,
                too_old_at,
                stop_retrying: Some(&draining),
            };
            match self.attempt(&request, bounds).await {
                Attempted::Sent => self.sent(request.points),
                Attempted::Refused { message, .. } if record.replayed => {
                    // Most likely taken before the restart, and refused now as out of order:
                    // counted apart, it is not a loss.
                    self.give_up(
                        "replay_rejected",
                        request.points,
                        &format!("a record replayed after a restart was refused (the backend probably stored it before): {message}"),
                    );
                }
                Attempted::Refused { reason, message } | Attempted::GaveUp { reason, message } => {
                    self.give_up(reason, request.points, &message);
                }
                Attempted::Stopped => {
                    // Left in the log; the lanes stop feeding and the rest stays there too.
                    budget.release(len);
                    stop_feeding.cancel();
                    rx.close();
                    while let Ok(r) = rx.try_recv() {
                        budget.release(r.stored_len());
                    }
                    return;
                }
            }
            // Truncation deletes files and writes the watermark: off the async threads.
            let (w, seq) = (wal.clone(), record.seq);
            match tokio::task::spawn_blocking(move || w.ack(seq)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    error!(exporter = %self.id, error = %e, "write-ahead log truncation failed");
                }
                Err(e) => {
                    error!(exporter = %self.id, error = %e, "write-ahead log truncation failed")
                }
            }
            budget.release(len);
        }
    }
}

/// Until the input closes (the close does both last): writes the acknowledgement watermark
/// when it moved, and with `sync: interval` syncs every `sync_every`.
async fn maintain(
    wal: Arc<Wal>,
    sync_every: Option<Duration>,
    health: WalHealth,
    done: CancellationToken,
) {
    let mut tick = tokio::time::interval(super::wal::WATERMARK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sync = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = done.cancelled() => return,
        }
        let sync = sync_every.is_some_and(|e| last_sync.elapsed() >= e);
        if sync {
            last_sync = Instant::now();
        }
        let w = wal.clone();
        let result = tokio::task::spawn_blocking(move || {
            w.flush_watermark()?;
            if sync { w.sync() } else { Ok(()) }
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                error!(error = %e, "write-ahead log maintenance failed");
                health.report(Some(e.to_string()));
            }
            Err(_) => return,
        }
    }
}
