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
}

/// What one successful export did with the batch's points.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExportReport {
    /// Data points delivered.
    pub sent: u64,
    /// Data points deliberately not delivered, by reason (e.g. `delta_temporality`).
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

/// Why an export attempt failed.
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
    /// Retrying cannot help (4xx other than 429, unencodable data); the batch is dropped.
    #[error("permanent: {message}")]
    Permanent {
        /// A short, fixed reason for the dropped counter (`http_400`, ...).
        reason: &'static str,
        /// What happened, for the log (a server's response body, say).
        message: String,
    },
}

/// A destination for metric data.
///
/// Contract: `export` makes exactly one attempt and says whether it may be retried; it never
/// retries or sleeps itself. The shared driver (`crate::driver`) owns queueing, retries,
/// backoff and the counters. Exporters only read the batch: it is shared by every exporter of
/// the pipeline.
pub trait Exporter: Send + Sync + 'static {
    /// One attempt to deliver the batch.
    fn export(&self, batch: Arc<MetricBatch>) -> BoxFuture<'_, Result<ExportReport, ExportError>>;

    /// Releases resources after the last export (servers, connections).
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}
