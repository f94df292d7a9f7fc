//! The exporter driver: one bounded queue and one worker per exporter. The queue counts its
//! capacity in data points by default ([`QueueSizer`]), so how much it holds through an
//! outage does not depend on the batch size. The worker has the
//! exporter [prepare](crate::Exporter::prepare) each batch into requests, keeps the requests
//! still to send, sends each lane's requests in order (lanes concurrently), retries exactly
//! the undelivered request with capped, jittered exponential backoff (honouring a server's
//! `Retry-After`), and counts every point as sent or dropped with a reason. Retry logic lives
//! here and nowhere else.
//!
//! One worker per exporter takes batches in order and a lane's requests are sent one at a
//! time, so a series (always in the same lane) never has its samples reordered by retries.
//!
//! With a write-ahead log ([`wal`]) the worker appends each batch's prepared requests to the
//! log and only then lets the batch's acknowledgements go ([`crate::ack`]: the receivers
//! answer their clients then). A feeder reads the log back in order, within an in-memory
//! budget, and hands each record to its lane; a record leaves the log once the backend took
//! it (or refused it for good). Retries never give up on time then: the log's cap and
//! `sample_age_limit` bound what is kept.
//!
//! Recovery after an outage is prompt: a lane waiting out a long backoff makes a probe
//! attempt every [`PROBE_EVERY`] (one lane at a time, never against a server's
//! `Retry-After`), and when any lane gets through after failing, every waiting lane retries
//! at once with its backoff reset.

pub mod wal;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::ratelimit::LogLimiter;
use crate::self_metrics::{Counter, Gauge, SelfMetrics};
use parking_lot::Mutex;

use crate::ack::{Acks, PendingAcks};
use crate::{ComponentId, ExportError, Exporter, MetricBatch, Request};

use wal::Wal;

/// How often a lane in a long backoff may probe the backend (one lane at a time).
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

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

/// What an exporter's queue capacity (`sending_queue.queue_size`) counts
/// (`sending_queue.sizer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueSizer {
    /// Data points: a batch takes as many units as it has points (at least one), so the
    /// queue holds the same data whatever the batch size. A batch larger than the whole
    /// queue waits until the queue is empty and then takes all of it.
    #[default]
    Points,
    /// Batches, whatever their size.
    Batches,
}

impl QueueSizer {
    /// The default capacity in this unit: 65 536 points (32 batches of the batch
    /// processor's default of 2048), or 32 batches. In a run that saturates the collector the
    /// queue stays full, and each queued point costs about 170 bytes of RSS (docs/benchmarks.md,
    /// seventh sitting): 65 536 points keep 100 k series within the RSS budget, 262 144 did
    /// not, at the same throughput. A longer outage slows the clients down (retryable
    /// refusals) or, with a write-ahead log, waits on disk.
    pub fn default_queue_size(self) -> usize {
        match self {
            QueueSizer::Points => 32 * 2048,
            QueueSizer::Batches => 32,
        }
    }

    /// The config name (`points`, `batches`), also the `sizer` label of the capacity gauge.
    pub fn name(self) -> &'static str {
        match self {
            QueueSizer::Points => "points",
            QueueSizer::Batches => "batches",
        }
    }
}

/// The largest queue, in either unit: a batch's share of a points queue is taken in one go,
/// and the semaphore behind it counts in `u32`.
pub const MAX_QUEUE_POINTS: usize = u32::MAX as usize;

/// Queue and retry settings of one exporter.
#[derive(Debug, Clone, PartialEq)]
pub struct DriverConfig {
    /// Capacity of the queue, in `sizer` units. Decoded OTLP takes a few hundred bytes a
    /// point, so the default of 65 536 points holds a few tens of MB at worst; a
    /// `memory_limiter` in the pipeline bounds what all queues hold together in bytes
    /// (`crate::memory`).
    pub queue_size: usize,
    /// What `queue_size` counts.
    pub sizer: QueueSizer,
    /// What to do when the queue is full.
    pub when_full: WhenFull,
    /// Retry settings.
    pub retry: RetryPolicy,
    /// Requests older than this are dropped (counted, reason `sample_age_limit`) instead of
    /// sent: the age counts from when the batch was prepared (written to the log).
    pub sample_age_limit: Option<Duration>,
    /// The write-ahead log, when the exporter has one.
    pub wal: Option<wal::WalConfig>,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            queue_size: QueueSizer::Points.default_queue_size(),
            sizer: QueueSizer::Points,
            when_full: WhenFull::Block,
            retry: RetryPolicy::default(),
            sample_age_limit: None,
            wal: None,
        }
    }
}

/// Whether an exporter's write-ahead log can be written, for `/ready`.
#[derive(Debug, Clone, Default)]
pub struct WalHealth(Arc<Mutex<Option<String>>>);

impl WalHealth {
    /// The last write error, while the log cannot be written.
    pub fn error(&self) -> Option<String> {
        self.0.lock().clone()
    }

    /// Records the outcome of the last write: an error, or `None` once writes succeed.
    pub fn report(&self, error: Option<String>) {
        *self.0.lock() = error;
    }
}

/// A batch in an exporter's queue, with the acknowledgements a durable exporter confirms
/// once the batch is in its log.
struct Queued {
    batch: Arc<MetricBatch>,
    acks: PendingAcks,
    /// Its room in the queue, given back when the worker takes it out.
    slot: Slot,
}

/// A batch's room in an exporter's queue: its points counted in the points gauge and, with
/// [`QueueSizer::Points`], its share of the capacity. Dropping it gives both back.
struct Slot {
    points: i64,
    queued: Gauge,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.queued.add(-self.points);
    }
}

const DROPPED: &str = "vla_collector_exporter_dropped_data_points_total";
const DROPPED_HELP: &str = "Data points an exporter did not deliver, by reason.";

/// The pipeline's side of an exporter: enqueue batches. Cheap to clone; the worker stops
/// after every handle is dropped and the queue is drained.
#[derive(Clone)]
pub struct ExporterHandle {
    id: ComponentId,
    tx: mpsc::Sender<Queued>,
    /// With [`QueueSizer::Points`]: the queue's capacity in points, and what is free of it.
    points: Option<(Arc<Semaphore>, u32)>,
    /// Points waiting in the queue.
    queued: Gauge,
    when_full: WhenFull,
    wal: Option<WalHealth>,
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

    /// Whether the exporter has a write-ahead log (the pipeline then hands it the batch's
    /// acknowledgements).
    pub fn is_durable(&self) -> bool {
        self.wal.is_some()
    }

    /// Whether its write-ahead log can be written (`None` without a log).
    pub fn wal_health(&self) -> Option<WalHealth> {
        self.wal.clone()
    }

    /// Queues a batch, waiting for room or dropping it per `when_full`.
    pub async fn enqueue(&self, batch: Arc<MetricBatch>) {
        self.enqueue_with(batch, Acks::none()).await;
    }

    /// Queues a batch with the acknowledgements this exporter confirms once it is in its
    /// write-ahead log (failed if it never gets there).
    pub async fn enqueue_with(&self, batch: Arc<MetricBatch>, acks: Acks) {
        let points = batch.data_points() as u64;
        // Pending from here: if this future is dropped while it waits for room, or gives up,
        // the acknowledgements fail (the clients retry) instead of reading as success.
        let acks = PendingAcks::new(acks);
        // With a points sizer the room is taken first; the channel behind it has a slot for
        // every point of capacity, so it never waits then.
        let permit = match &self.points {
            None => None,
            Some((room, capacity)) => {
                let share = points.clamp(1, u64::from(*capacity)) as u32;
                let room = room.clone();
                // Only `drop` can come back empty-handed (nothing closes the semaphore: a gone
                // worker shows in the channel below).
                let taken = match self.when_full {
                    WhenFull::Block => room.acquire_many_owned(share).await.ok(),
                    WhenFull::Drop => room.try_acquire_many_owned(share).ok(),
                };
                if taken.is_none() {
                    self.dropped_full.add(points);
                    return;
                }
                taken
            }
        };
        self.queued.add(points as i64);
        let queued = Queued {
            batch,
            acks,
            slot: Slot {
                points: points as i64,
                queued: self.queued.clone(),
                _permit: permit,
            },
        };
        let full = match self.when_full {
            WhenFull::Block => match self.tx.send(queued).await {
                Ok(()) => return,
                Err(_) => false,
            },
            WhenFull::Drop => match self.tx.try_send(queued) {
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
    spawn(id, exporter, config, telemetry, hard_stop, None)
}

/// Starts the worker of `exporter` with its write-ahead log, opened beforehand with
/// [`Wal::open`] from `config.wal` (so a log that cannot be opened fails the start-up, before
/// anything runs); the records a previous run left are sent first. Without a log, the same
/// as [`spawn_exporter`].
pub fn spawn_exporter_with_wal(
    id: ComponentId,
    exporter: Arc<dyn Exporter>,
    config: DriverConfig,
    telemetry: &SelfMetrics,
    hard_stop: CancellationToken,
    wal: Option<Arc<Wal>>,
) -> (ExporterHandle, JoinHandle<()>) {
    spawn(id, exporter, config, telemetry, hard_stop, wal)
}

fn spawn(
    id: ComponentId,
    exporter: Arc<dyn Exporter>,
    mut config: DriverConfig,
    telemetry: &SelfMetrics,
    hard_stop: CancellationToken,
    wal: Option<Arc<Wal>>,
) -> (ExporterHandle, JoinHandle<()>) {
    if wal.is_some() {
        // The log's own policy decides what happens when it is full; the queue in front of
        // it only waits.
        config.when_full = WhenFull::Block;
    }
    let capacity = config.queue_size.clamp(1, MAX_QUEUE_POINTS);
    // With points, every batch takes at least one point of room, so as many channel slots
    // as points never fill before the room does (tokio allocates them only as they are used).
    let points = (config.sizer == QueueSizer::Points)
        .then(|| (Arc::new(Semaphore::new(capacity)), capacity as u32));
    let (tx, rx) = mpsc::channel(capacity);
    let labels = [("exporter", &*id)];
    let weak = tx.downgrade();
    telemetry.gauge_fn(
        "vla_collector_exporter_queue_length",
        "Batches waiting in an exporter's queue.",
        &labels,
        move || {
            weak.upgrade()
                .map(|s| (s.max_capacity() - s.capacity()) as i64)
                .unwrap_or(0)
        },
    );
    let queued = telemetry.gauge(
        "vla_collector_exporter_queue_points",
        "Data points waiting in an exporter's queue.",
        &labels,
    );
    let capacity = capacity as i64;
    telemetry.gauge_fn(
        "vla_collector_exporter_queue_capacity",
        "Capacity of an exporter's queue, in the unit its sizer label names (points or batches).",
        &[("exporter", &*id), ("sizer", config.sizer.name())],
        move || capacity,
    );
    let wal_health = wal.as_ref().map(|_| WalHealth::default());
    let handle = ExporterHandle {
        id: id.clone(),
        tx,
        points,
        queued,
        when_full: config.when_full,
        wal: wal_health.clone(),
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
        sample_age_limit: config.sample_age_limit,
        telemetry: telemetry.clone(),
        dropped: Mutex::new(HashMap::new()),
        failed: Mutex::new(HashMap::new()),
        hard_stop,
        retry_log: LogLimiter::default(),
        drop_log: LogLimiter::default(),
        rx: Some(rx),
        in_flight: AtomicU64::new(0),
        recovered: tokio::sync::watch::channel(0).0,
        next_probe: Mutex::new(Instant::now()),
    };
    let join = match (wal, wal_health) {
        (Some(wal), Some(health)) => {
            let mut worker = worker;
            // The durable worker's intake owns the queue (an aborted one drops it, and the
            // acknowledgements in it fail: the clients retry).
            match worker.rx.take() {
                Some(rx) => tokio::spawn(Arc::new(worker).run_durable(rx, wal, health)),
                None => tokio::spawn(worker.run()),
            }
        }
        _ => tokio::spawn(worker.run()),
    };
    (handle, join)
}

struct Worker {
    id: ComponentId,
    exporter: Arc<dyn Exporter>,
    retry: RetryPolicy,
    sample_age_limit: Option<Duration>,
    telemetry: SelfMetrics,
    sent: Counter,
    dropped: Mutex<HashMap<&'static str, Counter>>,
    failed: Mutex<HashMap<&'static str, Counter>>,
    hard_stop: CancellationToken,
    retry_log: LogLimiter,
    drop_log: LogLimiter,
    /// The queue (taken out by the durable worker, which keeps it in its intake).
    rx: Option<mpsc::Receiver<Queued>>,
    /// Points of the batch being delivered not yet counted (0 when idle), counted as dropped
    /// if the task is aborted.
    in_flight: AtomicU64,
    /// Bumped when a lane gets through after failing: waiting lanes retry at once.
    recovered: tokio::sync::watch::Sender<u64>,
    /// When the next probe of a failing backend may go out.
    next_probe: Mutex<Instant>,
}

/// How one request's attempts ended.
enum Attempted {
    Sent,
    /// The backend refused it for good.
    Refused {
        reason: &'static str,
        message: String,
    },
    /// Not retried any more (disabled, out of time, too old).
    GaveUp {
        reason: &'static str,
        message: String,
    },
    /// The shutdown deadline passed, or (with a log) draining met a failing backend.
    Stopped,
}

/// When a request's retries end.
#[derive(Clone, Copy, Default)]
struct Bounds<'a> {
    /// `max_elapsed_time`.
    give_up_at: Option<Instant>,
    /// `sample_age_limit`.
    too_old_at: Option<Instant>,
    /// With a log, at shutdown: a retryable failure stops (the record stays in the log).
    stop_retrying: Option<&'a CancellationToken>,
}

/// Why a wait before a retry ended.
enum Woken {
    Backoff,
    Probe,
    Recovered,
    Stop,
}

impl Worker {
    async fn run(mut self) {
        loop {
            let Some(rx) = self.rx.as_mut() else { return };
            let Some(Queued { batch, acks, slot }) = rx.recv().await else {
                break;
            };
            drop(slot);
            self.in_flight
                .store(batch.data_points() as u64, Ordering::Relaxed);
            self.deliver(&batch).await;
            self.in_flight.store(0, Ordering::Relaxed);
            // Not durable: nothing waits on these, but never leave them failing.
            acks.confirm();
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
        let left = |from: usize| requests[from..].iter().map(|r| r.points).sum::<u64>();
        let max = self.retry.max_elapsed_time;
        let bounds = Bounds {
            give_up_at: (!max.is_zero()).then(|| started + max),
            too_old_at: self.sample_age_limit.map(|l| started + l),
            stop_retrying: None,
        };
        for (i, request) in requests.iter().enumerate() {
            match self.attempt(request, bounds).await {
                Attempted::Sent => self.sent(request.points),
                Attempted::Refused { reason, message } => {
                    self.give_up(reason, request.points, &message);
                }
                Attempted::GaveUp { reason, message } => {
                    self.give_up(reason, left(i), &message);
                    return;
                }
                Attempted::Stopped => {
                    self.give_up("shutdown", left(i), "shutdown deadline passed");
                    return;
                }
            }
        }
    }

    /// Attempts `request` until it is delivered, refused, or `bounds` end the retries.
    async fn attempt(&self, request: &Request, bounds: Bounds<'_>) -> Attempted {
        let mut rng = StdRng::from_rng(&mut rand::rng());
        let mut attempt = 0u32;
        let mut failed_before = false;
        loop {
            if self.hard_stop.is_cancelled() {
                return Attempted::Stopped;
            }
            if bounds.too_old_at.is_some_and(|t| Instant::now() >= t) {
                return Attempted::GaveUp {
                    reason: "sample_age_limit",
                    message: "older than sample_age_limit".into(),
                };
            }
            let result = tokio::select! {
                r = self.exporter.send(request) => r,
                // The attempt is abandoned; whether it reached the backend is unknown.
                _ = self.hard_stop.cancelled() => return Attempted::Stopped,
            };
            match result {
                Ok(()) => {
                    if failed_before {
                        self.recovered.send_modify(|g| *g = g.wrapping_add(1));
                    }
                    return Attempted::Sent;
                }
                Err(ExportError::Permanent { reason, message }) => {
                    self.failed(reason);
                    return Attempted::Refused { reason, message };
                }
                Err(ExportError::Retryable {
                    reason,
                    message,
                    retry_after,
                }) => {
                    self.failed(reason);
                    failed_before = true;
                    if !self.retry.enabled {
                        return Attempted::GaveUp {
                            reason: "retry_disabled",
                            message,
                        };
                    }
                    if bounds.stop_retrying.is_some_and(|t| t.is_cancelled()) {
                        return Attempted::Stopped;
                    }
                    // A server's Retry-After lengthens the wait (up to max_interval) but
                    // never shortens it below the backoff: `Retry-After: 0` must not spin.
                    let backoff = self.retry.backoff(attempt, &mut rng);
                    let wait = retry_after
                        .map_or(backoff, |ra| backoff.max(ra.min(self.retry.max_interval)));
                    if bounds.give_up_at.is_some_and(|g| Instant::now() + wait > g) {
                        return Attempted::GaveUp {
                            reason: "retries_exhausted",
                            message,
                        };
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
                    match self
                        .wait_before_retry(wait, retry_after.is_none(), bounds.stop_retrying)
                        .await
                    {
                        Woken::Stop => return Attempted::Stopped,
                        Woken::Recovered => attempt = 0,
                        Woken::Backoff | Woken::Probe => attempt = attempt.saturating_add(1),
                    }
                }
            }
        }
    }

    /// Waits out `wait`, unless another lane gets through first (recovered), a probe slot
    /// comes up (`may_probe`: no `Retry-After` to honour), draining begins (`stop_retrying`:
    /// one last attempt), or the worker stops.
    async fn wait_before_retry(
        &self,
        wait: Duration,
        may_probe: bool,
        stop_retrying: Option<&CancellationToken>,
    ) -> Woken {
        let mut recovered = self.recovered.subscribe();
        recovered.mark_unchanged();
        let deadline = Instant::now() + wait;
        let stop = async {
            match stop_retrying {
                Some(t) => t.cancelled().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(stop);
        loop {
            let check = if may_probe {
                (Instant::now() + PROBE_EVERY).min(deadline)
            } else {
                deadline
            };
            tokio::select! {
                _ = tokio::time::sleep_until(check) => {
                    if Instant::now() >= deadline {
                        return Woken::Backoff;
                    }
                    if self.claim_probe() {
                        return Woken::Probe;
                    }
                }
                // A lane honouring a server's Retry-After waits it out, recovery or not.
                changed = recovered.changed(), if may_probe => {
                    if changed.is_ok() {
                        return Woken::Recovered;
                    }
                }
                _ = self.hard_stop.cancelled() => return Woken::Stop,
                // Draining: one more attempt now; if it fails too, the lane stops.
                _ = &mut stop => return Woken::Probe,
            }
        }
    }

    /// Takes the next probe slot, if it is due.
    fn claim_probe(&self) -> bool {
        let mut next = self.next_probe.lock();
        let now = Instant::now();
        if now >= *next {
            *next = now + PROBE_EVERY;
            true
        } else {
            false
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
        if let Some(rx) = self.rx.as_mut() {
            // Closed first, so nothing can slip in between the drain and the drop.
            rx.close();
            while let Ok(q) = rx.try_recv() {
                // Its acknowledgements fail as `q.acks` drops: the clients retry.
                lost += q.batch.data_points() as u64;
            }
        }
        if lost > 0 {
            self.dropped("shutdown", lost);
            error!(exporter = %self.id, points = lost, "exporter stopped with data still queued; counted as dropped");
        }
    }
}

mod durable;

#[cfg(test)]
mod tests;
