//! The `prometheusremotewrite` exporter: Prometheus remote write 1.0.
//!
//! Spec: the Prometheus Remote-Write 1.0 specification. Each request is a
//! snappy **block**-compressed `prometheus.WriteRequest` with the four reserved headers
//! (`Content-Encoding: snappy`, `Content-Type: application/x-protobuf`,
//! `User-Agent: vla-collector/<version>`, `X-Prometheus-Remote-Write-Version: 0.1.0`), which
//! custom `headers` cannot override; labels are sorted and unique with `__name__`; timestamps
//! are milliseconds; points flagged "no recorded value" become stale markers. Names and labels
//! follow the OpenTelemetry compatibility spec ([`crate::translate`]).
//!
//! ```yaml
//! exporters:
//!   prometheusremotewrite:
//!     endpoint: http://127.0.0.1:9090/api/v1/write
//!     timeout: 5s
//!     namespace: vla            # optional metric-name prefix
//!     external_labels: { cluster: eu-1 }
//!     headers: { X-Scope-OrgID: tenant-a }
//!     max_samples_per_send: 2000
//!     shards: 4
//!     target_info: { enabled: true }
//!     disable_scope_info: false
//!     send_native_histograms: false   # exponential histograms as native histograms
//!     exponential_histogram_bounds: [0, 5, 10, 25, 50, 75, 100, 250, 500, 1000]  # else classic
//!     sending_queue: { sizer: points, queue_size: 65536, when_full: block }
//!     retry_on_failure: { initial_interval: 100ms, max_interval: 30s, max_elapsed_time: 5m }
//! ```
//!
//! Batching: requests are cut at `max_samples_per_send`; the flush deadline is the pipeline's
//! `batch` processor (`timeout`, `send_batch_size`), which groups received requests before
//! they reach the exporter (`vla-collector validate` warns when a remote-write pipeline has
//! none).
//!
//! `prepare` translates the batch, splits its series into `shards` groups by a stable hash of
//! their point's identity, shared labels and family name (so one series always goes through
//! the same sender and its samples stay in order, and a histogram's series travel together)
//! and cuts each shard into requests of at most `max_samples_per_send` samples: one
//! driver lane per shard. `send` POSTs one request: 2xx is success; 5xx, 429 (with its
//! `Retry-After`), timeouts and transport errors are retryable (the driver retries exactly
//! that request); other 4xx are permanent: the request's points are counted dropped with the
//! status and the response excerpt is logged.
//!
//! Delta sums and histograms are not sent (they are reported dropped with reason
//! `delta_temporality`: put the `deltatocumulative` processor in the pipeline). Exponential
//! histograms are sent as classic buckets at `exponential_histogram_bounds`, or, with
//! `send_native_histograms: true`, as native histograms (the `histograms` field; Prometheus
//! needs `--enable-feature=native-histograms`, and without it answers 500, which is counted
//! as the permanent `native_histograms_disabled`, never retried). Scales below -4 cannot be
//! native histograms (`unsupported_schema`).
//!
//! Durability: retries and the queue live in memory (the pipeline's driver). The planned
//! write-ahead queue (byte-capped, CRC per record, replay on start) slots in between
//! encoding and sending: the compressed per-shard request bodies built here are exactly the
//! records it will append, and the senders will read them back from it; the fixed shard hash
//! seed keeps a series in the same shard across restarts.

mod client;
mod config;
mod encode;
pub mod proto;
mod stale;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use vla_pipeline::ratelimit::LogLimiter;
use vla_pipeline::self_metrics::Counter;
use vla_pipeline::{
    BoxFuture, ComponentId, ExportError, ExportReport, Exporter, MetricBatch, PrepareError,
    Prepared, Request, SelfMetrics,
};

pub use client::{USER_AGENT, parse_retry_after};
pub use config::{Config, RESERVED_HEADERS, TargetInfo};

use client::{Client, StatusClass};
use encode::ShardedEncoder;

use crate::ExporterBuildError;
use crate::translate::{
    DROP_DELTA, DROP_NAME_COLLISION, NameCollision, TranslateOptions, Translator,
};

/// One remote-write request, snappy-compressed, ready to POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedRequest {
    /// The snappy block-compressed `WriteRequest` (cheap to clone for a retry).
    pub body: bytes::Bytes,
    /// Samples in it.
    pub samples: usize,
}

/// A batch encoded for sending: requests per shard, in send order, and what was translated.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedBatch {
    /// `shards[i]` are the requests of shard `i`; a series is always in the same shard.
    pub shards: Vec<Vec<EncodedRequest>>,
    /// Points translated (`sent` once delivered) and points dropped by reason.
    pub report: ExportReport,
    /// Samples across all requests.
    pub samples: u64,
    /// The first metric dropped for a name collision, if any (for the warning).
    pub collision: Option<Arc<NameCollision>>,
}

/// Translation + protobuf encoding + snappy, with buffers reused between batches. The exporter
/// owns one; benchmarks and the planned write-ahead queue use it directly.
pub struct BatchEncoder {
    translator: Translator,
    encoder: ShardedEncoder,
    snappy: snap::raw::Encoder,
    /// Compression scratch, reused so large requests do not map fresh pages every time.
    scratch: Vec<u8>,
}

impl std::fmt::Debug for BatchEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchEncoder").finish_non_exhaustive()
    }
}

impl BatchEncoder {
    /// An encoder with the translation, sharding and request size of `config`.
    pub fn new(config: &Config) -> Self {
        let options = TranslateOptions {
            namespace: config.namespace.clone(),
            extra_labels: config
                .external_labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            target_info: config.target_info.enabled,
            scope_info: !config.disable_scope_info,
            exponential: config.exponential(),
        };
        Self {
            translator: Translator::new(options),
            encoder: ShardedEncoder::new(config.shards, config.max_samples_per_send)
                .with_stale_markers(config.stale_after),
            snappy: snap::raw::Encoder::new(),
            scratch: Vec::new(),
        }
    }

    /// Translates and encodes a batch into compressed requests per shard.
    pub fn encode(&mut self, batch: &MetricBatch) -> Result<EncodedBatch, snap::Error> {
        self.encode_at(batch, std::time::SystemTime::now())
    }

    /// [`BatchEncoder::encode`] as if at `now` (the time stale markers are judged by).
    pub fn encode_at(
        &mut self,
        batch: &MetricBatch,
        now: std::time::SystemTime,
    ) -> Result<EncodedBatch, snap::Error> {
        let now_ms = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.encoder.reset_at(now_ms);
        let stats = self.translator.translate(batch, &mut self.encoder);
        self.encoder.finish();
        let mut shards = Vec::with_capacity(self.encoder.shards().len());
        for shard in self.encoder.shards() {
            let mut requests = Vec::with_capacity(shard.used);
            for req in shard.filled() {
                let max = snap::raw::max_compress_len(req.body.len());
                if self.scratch.len() < max {
                    self.scratch.resize(max, 0);
                }
                let n = self.snappy.compress(&req.body, &mut self.scratch)?;
                requests.push(EncodedRequest {
                    body: bytes::Bytes::copy_from_slice(self.scratch.get(..n).unwrap_or_default()),
                    samples: req.samples,
                });
            }
            shards.push(requests);
        }
        Ok(EncodedBatch {
            shards,
            samples: stats.samples,
            collision: stats.collision,
            report: ExportReport {
                sent: stats.points,
                dropped: stats.dropped,
            },
        })
    }
}

/// Self-metrics of one remote-write exporter.
struct Metrics {
    samples_sent: Counter,
    samples_refused: Counter,
    requests: Vec<(StatusClass, Counter)>,
}

impl Metrics {
    fn request(&self, class: StatusClass) {
        if let Some((_, c)) = self.requests.iter().find(|(k, _)| *k == class) {
            c.inc();
        }
    }
}

/// The `prometheusremotewrite` exporter.
pub struct PrometheusRemoteWriteExporter {
    id: ComponentId,
    client: Client,
    encoder: Mutex<BatchEncoder>,
    metrics: Metrics,
    delta_log: LogLimiter,
    collision_log: LogLimiter,
}

impl std::fmt::Debug for PrometheusRemoteWriteExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusRemoteWriteExporter")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl PrometheusRemoteWriteExporter {
    /// Builds the exporter; `config` must have passed [`Config::validate`].
    pub fn new(
        id: ComponentId,
        config: &Config,
        telemetry: &SelfMetrics,
    ) -> Result<Self, ExporterBuildError> {
        let problems = config.validate(&format!("exporters.{id}"));
        if !problems.is_empty() {
            return Err(ExporterBuildError::InvalidConfig(problems));
        }
        let client = Client::new(config)?;
        let metrics = Metrics {
            samples_sent: telemetry.counter(
                "vla_collector_remote_write_samples_sent_total",
                "Samples delivered by remote write.",
                &[("exporter", &id)],
            ),
            samples_refused: telemetry.counter(
                "vla_collector_remote_write_samples_refused_total",
                "Samples the remote-write endpoint refused with a non-retryable status (4xx).",
                &[("exporter", &id)],
            ),
            requests: StatusClass::ALL
                .iter()
                .map(|&class| {
                    (
                        class,
                        telemetry.counter(
                            "vla_collector_remote_write_requests_total",
                            "Remote-write requests by outcome.",
                            &[("exporter", &id), ("status", class.label())],
                        ),
                    )
                })
                .collect(),
        };
        Ok(Self {
            id,
            client,
            encoder: Mutex::new(BatchEncoder::new(config)),
            metrics,
            delta_log: LogLimiter::new(Duration::from_secs(60)),
            collision_log: LogLimiter::new(Duration::from_secs(60)),
        })
    }

    fn encode(&self, batch: &MetricBatch) -> Result<EncodedBatch, PrepareError> {
        let encoded = self
            .encoder
            .lock()
            .encode(batch)
            .map_err(|e| PrepareError {
                reason: "encode_error",
                message: format!("snappy compression failed: {e}"),
            })?;
        let dropped_for = |reason: &str| {
            encoded
                .report
                .dropped
                .iter()
                .filter(|(r, _)| *r == reason)
                .map(|(_, n)| n)
                .sum::<u64>()
        };
        crate::translate::warn_delta_dropped(&self.id, dropped_for(DROP_DELTA), &self.delta_log);
        crate::translate::warn_name_collision(
            &self.id,
            encoded.collision.as_deref(),
            dropped_for(DROP_NAME_COLLISION),
            &self.collision_log,
        );
        Ok(encoded)
    }

    /// The batch's requests for the driver: lane = shard, each request carrying its share
    /// of the batch's points.
    fn prepare_batch(&self, batch: &MetricBatch) -> Result<Prepared, PrepareError> {
        let encoded = self.encode(batch)?;
        Ok(encoded.into_prepared())
    }

    async fn send_request(&self, request: &Request) -> Result<(), ExportError> {
        let (class, result) = self.client.send(request.payload.clone()).await;
        self.metrics.request(class);
        match &result {
            Ok(()) => self.metrics.samples_sent.add(request.samples),
            Err(ExportError::Permanent { .. }) => self.metrics.samples_refused.add(request.samples),
            Err(ExportError::Retryable { .. }) => {}
        }
        result
    }
}

impl EncodedBatch {
    /// The requests for the driver, lane = shard. The batch's translated points are shared
    /// out over the requests in proportion to their samples (one OTLP point's samples, a
    /// histogram's buckets, may travel in several requests, so an exact per-point split does
    /// not exist); the shares add up to exactly the points translated.
    pub fn into_prepared(self) -> Prepared {
        let points = self.report.sent;
        // Counted from the requests: they may hold stale markers the translation did not make.
        let total = self
            .shards
            .iter()
            .flatten()
            .map(|r| r.samples as u64)
            .sum::<u64>()
            .max(1);
        let mut done = ExportReport {
            sent: 0,
            dropped: self.report.dropped,
        };
        let mut requests = Vec::new();
        let (mut samples_before, mut points_before) = (0u64, 0u64);
        for (lane, shard) in self.shards.into_iter().enumerate() {
            for r in shard {
                samples_before += r.samples as u64;
                let upto =
                    (u128::from(points) * u128::from(samples_before) / u128::from(total)) as u64;
                requests.push(Request {
                    payload: r.body,
                    samples: r.samples as u64,
                    points: upto.saturating_sub(points_before),
                    lane: lane as u32,
                });
                points_before = upto.max(points_before);
            }
        }
        // Points that produced no sample at all (none today) count as delivered with nothing
        // to send.
        done.sent = points.saturating_sub(points_before);
        Prepared { requests, done }
    }
}

impl Exporter for PrometheusRemoteWriteExporter {
    fn prepare(&self, batch: &MetricBatch) -> Result<Prepared, PrepareError> {
        self.prepare_batch(batch)
    }

    fn send<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<(), ExportError>> {
        Box::pin(self.send_request(request))
    }
}

impl vla_pipeline::registry::Component for PrometheusRemoteWriteExporter {
    const TYPE: &'static str = "prometheusremotewrite";
    const EXAMPLE: &'static str = "\
endpoint: http://127.0.0.1:9090/api/v1/write
timeout: 5s
external_labels: { cluster: eu-1 }
max_samples_per_send: 2000
shards: 4
sending_queue: { sizer: points, queue_size: 65536, when_full: block }
retry_on_failure: { initial_interval: 100ms, max_interval: 30s, max_elapsed_time: 5m }
# Durable write-ahead queue (off unless set): clients are answered once the data is in the
# log (fsynced first with sync: always).
wal:
  directory: /var/lib/vla-collector/wal/prometheusremotewrite
  max_bytes: 1GiB
  sync: interval          # always | interval | never
  sync_interval: 1s
  when_full: block        # block | drop_oldest
  max_in_memory: 16MiB    # read-ahead of the senders; the backlog stays on disk
sample_age_limit: 1h
# A stale marker for a series that gets no sample for this long (off unless set).
stale_after: 2m
";
    type Config = Config;

    fn validate(config: &Config, path: &str) -> Vec<vla_pipeline::config::ConfigProblem> {
        config.validate(path)
    }
}

impl vla_pipeline::registry::ExporterType for PrometheusRemoteWriteExporter {
    fn driver(
        config: &Config,
        path: &str,
    ) -> Result<vla_pipeline::driver::DriverConfig, Vec<vla_pipeline::config::ConfigProblem>> {
        config.driver_config(path)
    }

    fn build(
        config: &Config,
        ctx: vla_pipeline::registry::BuildContext<'_>,
    ) -> Result<Arc<dyn Exporter>, vla_pipeline::registry::BuildError> {
        Ok(Arc::new(Self::new(
            ctx.id.clone(),
            config,
            ctx.self_metrics,
        )?))
    }
}

#[cfg(test)]
mod tests;
