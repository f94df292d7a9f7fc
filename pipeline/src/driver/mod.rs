//! The exporter driver: one bounded queue and one worker per exporter. The worker has the
//! exporter [prepare](crate::Exporter::prepare) each batch into requests, keeps the requests
//! still to send, sends each lane's requests in order (lanes concurrently), retries exactly
//! the undelivered request with capped, jittered exponential backoff (honouring a server's
//! `Retry-After`), and counts every point as sent or dropped with a reason. Retry logic lives
//! here and nowhere else.
//!
//! One worker per exporter takes batches in order and a lane's requests are sent one at a
//! time, so a series (always in the same lane) never has its samples reordered by retries.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::ratelimit::LogLimiter;
use crate::self_metrics::{Counter, SelfMetrics};
use parking_lot::Mutex;

use crate::{ComponentId, ExportError, Exporter, MetricBatch, Request};

/// Retry settings (`retry_on_failure` in the config).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Whether retryable failures are retried at all.
    pub enabled: bool,
    /// Wait before the first retry.
    pub initial_interval: Duration,
    /// Cap on any single wait (also caps a server's `Retry-After`).
    pub max_interval: Duration,
    /// Growth factor between waits.
    pub multiplier: f64,
    /// Jitter: each wait is scaled by a random factor in `[1 - r, 1 + r]`.
    pub randomization_factor: f64,
    /// Give up (and count the batch dropped) once this much time has gone by; zero = never.
    pub max_elapsed_time: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            initial_interval: Duration::from_millis(100),
            max_interval: Duration::from_secs(30),
            multiplier: 2.0,
            randomization_factor: 0.2,
            max_elapsed_time: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (0-based), jittered with `rng`, capped.
    pub fn backoff(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let base =
            self.initial_interval.as_secs_f64() * self.multiplier.powi(attempt.min(64) as i32);
        let capped = base.min(self.max_interval.as_secs_f64());
        let r = self.randomization_factor.clamp(0.0, 1.0);
        let factor = if r > 0.0 {
            rng.random_range(1.0 - r..=1.0 + r)
        } else {
            1.0
        };
        Duration::from_secs_f64((capped * factor).min(self.max_interval.as_secs_f64()))
    }
}

/// What the driver does when the exporter's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// Wait for room: the pipeline slows down and receivers refuse with retryable statuses.
    #[default]
    Block,
    /// Drop the batch for this exporter only, counted with reason `queue_full`.
    Drop,
}

/// Queue and retry settings of one exporter.
#[derive(Debug, Clone, PartialEq)]
pub struct DriverConfig {
    /// Capacity of the queue, in batches. With the batcher's default of 8192 points a batch of
    /// decoded OTLP holds a few MB, so the default of 32 allows roughly 100 MB at worst; a
    /// `memory_limiter` in the pipeline bounds what all queues hold together in bytes
    /// (`crate::memory`).
    pub queue_size: usize,
    /// What to do when the queue is full.
    pub when_full: WhenFull,
    /// Retry settings.
    pub retry: RetryPolicy,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            queue_size: 32,
            when_full: WhenFull::Block,
            retry: RetryPolicy::default(),
        }
    }
}

const DROPPED: &str = "vla_collector_exporter_dropped_data_points_total";
const DROPPED_HELP: &str = "Data points an exporter did not deliver, by reason.";

/// The pipeline's side of an exporter: enqueue batches. Cheap to clone; the worker stops
/// after every handle is dropped and the queue is drained.
#[derive(Clone)]
pub struct ExporterHandle {
    id: ComponentId,
    tx: mpsc::Sender<Arc<MetricBatch>>,
    when_full: WhenFull,
    dropped_full: Counter,
    dropped_stopped: Counter,
}

impl std::fmt::Debug for ExporterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExporterHandle")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl ExporterHandle {
    /// The exporter's id.
    pub fn id(&self) -> &ComponentId {
        &self.id
    }

    /// Queues a batch, waiting for room or dropping it per `when_full`.
    pub async fn enqueue(&self, batch: Arc<MetricBatch>) {
        let points = batch.data_points() as u64;
        let full = match self.when_full {
            WhenFull::Block => match self.tx.send(batch).await {
                Ok(()) => return,
                Err(_) => false,
            },
            WhenFull::Drop => match self.tx.try_send(batch) {
                Ok(()) => return,
                Err(e) => matches!(e, mpsc::error::TrySendError::Full(_)),
            },
        };
        if full {
            self.dropped_full.add(points);
        } else {
            // The worker is gone (it failed or was aborted).
            self.dropped_stopped.add(points);
        }
    }
}

/// Starts the worker of `exporter`. After `hard_stop` is cancelled (the shutdown deadline
/// passed) the worker stops retrying and counts what is left as dropped with reason
/// `shutdown`.
pub fn spawn_exporter(
    id: ComponentId,
    exporter: Arc<dyn Exporter>,
    config: DriverConfig,
    telemetry: &SelfMetrics,
    hard_stop: CancellationToken,
) -> (ExporterHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(config.queue_size.max(1));
    let labels = [("exporter", &*id)];
    telemetry.channel_gauges(
        (
            "vla_collector_exporter_queue_length",
            "Batches waiting in an exporter's queue.",
        ),
        (
            "vla_collector_exporter_queue_capacity",
            "Capacity of an exporter's queue, in batches.",
        ),
        &labels,
        &tx,
    );
    let handle = ExporterHandle {
        id: id.clone(),
        tx,
        when_full: config.when_full,
        dropped_full: telemetry.counter(
            DROPPED,
            DROPPED_HELP,
            &[("exporter", &id), ("reason", "queue_full")],
        ),
        dropped_stopped: telemetry.counter(
            DROPPED,
            DROPPED_HELP,
            &[("exporter", &id), ("reason", "exporter_stopped")],
        ),
    };
    let worker = Worker {
        sent: telemetry.counter(
            "vla_collector_exporter_sent_data_points_total",
            "Data points an exporter delivered.",
            &labels,
        ),
        id,
        exporter,
        retry: config.retry,
        telemetry: telemetry.clone(),
        dropped: Mutex::new(HashMap::new()),
        failed: Mutex::new(HashMap::new()),
        hard_stop,
        retry_log: LogLimiter::default(),
        drop_log: LogLimiter::default(),
        rx,
        in_flight: AtomicU64::new(0),
    };
    (handle, tokio::spawn(worker.run()))
}

struct Worker {
    id: ComponentId,
    exporter: Arc<dyn Exporter>,
    retry: RetryPolicy,
    telemetry: SelfMetrics,
    sent: Counter,
    dropped: Mutex<HashMap<&'static str, Counter>>,
    failed: Mutex<HashMap<&'static str, Counter>>,
    hard_stop: CancellationToken,
    retry_log: LogLimiter,
    drop_log: LogLimiter,
    rx: mpsc::Receiver<Arc<MetricBatch>>,
    /// Points of the batch being delivered not yet counted (0 when idle), counted as dropped
    /// if the task is aborted.
    in_flight: AtomicU64,
}

impl Worker {
    async fn run(mut self) {
        while let Some(batch) = self.rx.recv().await {
            self.in_flight
                .store(batch.data_points() as u64, Ordering::Relaxed);
            self.deliver(&batch).await;
            self.in_flight.store(0, Ordering::Relaxed);
        }
        let exporter = self.exporter.clone();
        tokio::select! {
            _ = exporter.shutdown() => {}
            _ = self.hard_stop.cancelled() => {}
        }
        debug!(exporter = %self.id, "exporter stopped");
    }

    fn dropped(&self, reason: &'static str, n: u64) {
        if n == 0 {
            return;
        }
        self.in_flight.fetch_sub(
            n.min(self.in_flight.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        let (t, id) = (&self.telemetry, &self.id);
        self.dropped
            .lock()
            .entry(reason)
            .or_insert_with(|| {
                t.counter(
                    DROPPED,
                    DROPPED_HELP,
                    &[("exporter", id), ("reason", reason)],
                )
            })
            .add(n);
    }

    fn sent(&self, n: u64) {
        self.in_flight.fetch_sub(
            n.min(self.in_flight.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        self.sent.add(n);
    }

    fn failed(&self, reason: &'static str) {
        let (t, id) = (&self.telemetry, &self.id);
        self.failed
            .lock()
            .entry(reason)
            .or_insert_with(|| {
                t.counter(
                    "vla_collector_exporter_failed_attempts_total",
                    "Export attempts that failed and were retried or dropped, by reason.",
                    &[("exporter", id), ("reason", reason)],
                )
            })
            .inc();
    }

    /// Prepares the batch, then sends its lanes concurrently until every request is
    /// delivered, refused or given up on.
    async fn deliver(&self, batch: &MetricBatch) {
        let points = batch.data_points() as u64;
        if self.hard_stop.is_cancelled() {
            self.give_up("shutdown", points, "shutdown deadline passed");
            return;
        }
        let prepared = match self.exporter.prepare(batch) {
            Ok(p) => p,
            Err(e) => {
                self.give_up(e.reason, points, &e.message);
                return;
            }
        };
        self.sent(prepared.done.sent);
        for (reason, n) in prepared.done.dropped {
            self.dropped(reason, n);
        }
        let mut lanes: BTreeMap<u32, Vec<Request>> = BTreeMap::new();
        for r in prepared.requests {
            lanes.entry(r.lane).or_default().push(r);
        }
        let started = Instant::now();
        futures_util::future::join_all(
            lanes
                .into_values()
                .map(|requests| self.send_lane(requests, started)),
        )
        .await;
        // Whatever prepare did not account for (an exporter's bookkeeping slip) is not lost
        // silently.
        let left = self.in_flight.load(Ordering::Relaxed);
        if left > 0 {
            self.dropped("unaccounted", left);
        }
    }

    /// Sends one lane's requests in order; a retryable failure retries that request (the
    /// ones after it wait), a permanent one drops it and goes on.
    async fn send_lane(&self, requests: Vec<Request>, started: Instant) {
        let mut rng = StdRng::from_rng(&mut rand::rng());
        let left = |from: usize| requests[from..].iter().map(|r| r.points).sum::<u64>();
        for (i, request) in requests.iter().enumerate() {
            let mut attempt = 0u32;
            loop {
                if self.hard_stop.is_cancelled() {
                    self.give_up("shutdown", left(i), "shutdown deadline passed");
                    return;
                }
                let result = tokio::select! {
                    r = self.exporter.send(request) => r,
                    _ = self.hard_stop.cancelled() => {
                        // The attempt is abandoned; whether it reached the backend is unknown.
                        self.give_up("shutdown", left(i), "shutdown deadline passed during an export");
                        return;
                    }
                };
                match result {
                    Ok(()) => {
                        self.sent(request.points);
                        break;
                    }
                    Err(ExportError::Permanent { reason, message }) => {
                        self.failed(reason);
                        self.give_up(reason, request.points, &message);
                        break;
                    }
                    Err(ExportError::Retryable {
                        reason,
                        message,
                        retry_after,
                    }) => {
                        self.failed(reason);
                        if !self.retry.enabled {
                            self.give_up("retry_disabled", left(i), &message);
                            return;
                        }
                        // A server's Retry-After lengthens the wait (up to max_interval) but
                        // never shortens it below the backoff: `Retry-After: 0` must not spin.
                        let backoff = self.retry.backoff(attempt, &mut rng);
                        let wait = retry_after
                            .map_or(backoff, |ra| backoff.max(ra.min(self.retry.max_interval)));
                        let max = self.retry.max_elapsed_time;
                        if !max.is_zero() && started.elapsed() + wait > max {
                            self.give_up("retries_exhausted", left(i), &message);
                            return;
                        }
                        if let Some(suppressed) = self.retry_log.allow() {
                            warn!(
                                exporter = %self.id,
                                reason,
                                attempt = attempt + 1,
                                wait_ms = wait.as_millis() as u64,
                                suppressed,
                                error = %message,
                                "export failed, retrying"
                            );
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = self.hard_stop.cancelled() => {}
                        }
                        attempt = attempt.saturating_add(1);
                    }
                }
            }
        }
    }

    fn give_up(&self, reason: &'static str, points: u64, message: &str) {
        self.dropped(reason, points);
        if let Some(suppressed) = self.drop_log.allow() {
            error!(exporter = %self.id, reason, points, suppressed, error = %message, "dropping data");
        }
    }
}

impl Drop for Worker {
    /// An aborted worker (the shutdown grace ran out, or a panic) still counts what it held.
    fn drop(&mut self) {
        let mut lost = std::mem::take(self.in_flight.get_mut());
        // Closed first, so nothing can slip in between the drain and the drop.
        self.rx.close();
        while let Ok(batch) = self.rx.try_recv() {
            lost += batch.data_points() as u64;
        }
        if lost > 0 {
            self.dropped("shutdown", lost);
            error!(exporter = %self.id, points = lost, "exporter stopped with data still queued; counted as dropped");
        }
    }
}

#[cfg(test)]
mod tests;
