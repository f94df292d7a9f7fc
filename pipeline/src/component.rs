//! The component traits: `Receiver`, `Processor`, `Exporter`, with their written contracts.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::{MetricBatch, PipelineSender};

/// A component's id as written in the config: `type` or `type/name`.
pub type ComponentId = Arc<str>;

/// A boxed, sendable future (the traits stay object-safe without a macro).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a receiver gets to run with.
pub struct ReceiverContext {
    /// Where accepted batches go; it counts accepted and refused points.
    pub output: PipelineSender,
    /// Cancelled when the collector shuts down.
    pub shutdown: CancellationToken,
}

/// Why a receiver stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    /// The server failed while serving.
    #[error("receiver {receiver} failed while serving")]
    Serve {
        /// The receiver's id.
        receiver: ComponentId,
        /// The underlying failure.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A source of metric data.
///
/// Contract: `run` serves until `ctx.shutdown` is cancelled, then stops accepting new data,
/// finishes the requests in flight, and returns. Network receivers are built with an
/// already-bound listener, so port clashes fail at start-up, not here. When `ctx.output`
/// refuses a batch the receiver answers its client with a retryable status.
pub trait Receiver: Send {
    /// Serves until shutdown.
    fn run(self: Box<Self>, ctx: ReceiverContext) -> BoxFuture<'static, Result<(), ReceiverError>>;
}

/// A synchronous, in-place transformation of batches.
///
/// Contract: `process` never awaits or blocks on I/O (lookups are refreshed into snapshots by
/// background tasks). It may remove points; the pipeline drops batches left empty.
pub trait Processor: Send {
    /// Transforms one batch in place.
    fn process(&mut self, batch: &mut MetricBatch);

    /// How often `flush` must be called; `None` for stateless processors.
    fn flush_interval(&self) -> Option<Duration> {
        None
    }

    /// Emits state accumulated so far (aggregations); the output continues through the
    /// processors after this one.
    fn flush(&mut self, _now: SystemTime) -> Option<MetricBatch> {
        None
    }

    /// Called once, after the pipeline's final flush at a clean stop: persists state
    /// (`deltatocumulative`'s snapshot). Not called when the pipeline is aborted.
    fn shutdown(&mut self) {}
}

/// Data points an exporter handled without sending a request: delivered already (a scrape
/// endpoint stores them while preparing) or deliberately not delivered, by reason (e.g.
/// `delta_temporality`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExportReport {
    /// Data points delivered.
    pub sent: u64,
    /// Data points deliberately not delivered, by reason.
    pub dropped: Vec<(&'static str, u64)>,
}

impl ExportReport {
    /// Everything in a batch of `points` points was delivered.
    pub fn all_sent(points: usize) -> Self {
        Self {
            sent: points as u64,
            dropped: Vec::new(),
        }
    }
}

/// One request an exporter prepared: the bytes it sends and what they carry. It holds no
/// reference to the batch or the exporter's state, so it can be written to disk and replayed
/// (the durable queue's record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What [`Exporter::send`] transmits (remote write: a snappy-compressed `WriteRequest`).
    pub payload: bytes::Bytes,
    /// Samples in it, as the backend counts them (remote write: one per series sample).
    pub samples: u64,
    /// Data points of the batch it carries: counted sent when it is delivered, dropped when
    /// it is refused or given up on.
    pub points: u64,
    /// Requests of one lane are sent one at a time, in order; lanes are sent concurrently
    /// (remote write's shards, so a series' samples stay in order).
    pub lane: u32,
}

/// A batch prepared for sending.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The requests, in send order within each lane.
    pub requests: Vec<Request>,
    /// Points handled while preparing (stored, or dropped by reason).
    pub done: ExportReport,
}

/// Why a batch could not be prepared at all (its points are dropped under `reason`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PrepareError {
    /// A short, fixed reason for the dropped counter (`encode_error`, ...).
    pub reason: &'static str,
    /// What happened, for the log.
    pub message: String,
}

/// Why sending one request failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Try again later (5xx, 429, transport error, timeout).
    #[error("retryable: {message}")]
    Retryable {
        /// A short, fixed reason for the failure counter (`http_503`, `timeout`, ...).
        reason: &'static str,
        /// What happened, for the log.
        message: String,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help (4xx other than 429); the request's points are dropped.
    #[error("permanent: {message}")]
    Permanent {
        /// A short, fixed reason for the dropped counter (`http_400`, ...).
        reason: &'static str,
        /// What happened, for the log (a server's response body, say).
        message: String,
    },
}

/// A destination for metric data, in two steps the shared driver (`crate::driver`) runs:
///
/// 1. [`prepare`](Exporter::prepare) turns a batch into self-contained [`Request`]s (and may
///    handle points on the spot: a scrape endpoint stores them, a translator drops what it
///    cannot express). It does no I/O and is called once per batch.
/// 2. [`send`](Exporter::send) makes exactly one attempt at one request and says whether it
///    may be retried; it never retries or sleeps itself.
///
/// The driver owns what is left to send: it keeps the undelivered requests, retries exactly
/// those with backoff, and counts every point as sent or dropped with a reason. Exporters
/// only read the batch: it is shared by every exporter of the pipeline.
pub trait Exporter: Send + Sync + 'static {
    /// Turns a batch into requests.
    fn prepare(&self, batch: &MetricBatch) -> Result<Prepared, PrepareError>;

    /// One attempt to deliver one request.
    fn send<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<(), ExportError>>;

    /// Releases resources after the last export (servers, connections).
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}
