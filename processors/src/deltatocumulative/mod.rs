//! The `deltatocumulative` processor (the OpenTelemetry Collector's type and field names):
//! turns delta sums, histograms and exponential histograms into cumulative ones by keeping a
//! running total per stream, so Prometheus, which stores only cumulative series, gets them.
//!
//! A stream is a resource, scope, metric (name, unit, kind, monotonic) and the point's
//! attributes. A delta that starts at or after the stream's last point is added (a gap, such
//! as a restarted client, continues the series); one that starts before it is out of order
//! and dropped; every emitted point starts at the stream's first start. Past `max_streams`,
//! points of new streams are dropped and counted while every existing stream keeps working:
//! a live stream is never evicted, only one not seen for `max_stale`. With `storage`, the
//! state survives restarts and `kill -9` (a snapshot plus a journal, see `storage.rs`).
//!
//! ```yaml
//! processors:
//!   deltatocumulative:
//!     max_stale: 5m          # default; a stream not seen this long is forgotten
//!     max_streams: 100000    # default
//!     storage:               # optional
//!       directory: /var/lib/vla-collector/deltatocumulative
//!       snapshot_interval: 30s   # default
//! ```
//!
//! The full manual: `docs/components/deltatocumulative.md`.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogramDataPoint, HistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, metric,
};
use serde::Deserialize;
use vla_pipeline::config::ConfigProblem;
use vla_pipeline::self_metrics::{Counter, Gauge};
use vla_pipeline::{ComponentId, MetricBatch, Processor, SelfMetrics, is_delta};

mod state;
mod storage;

use state::{Acc, Outcome, Stream, first_start, in_order};
use storage::{Storage, Streams};

use crate::identity::{Identity, Key};

/// The config `type` of this processor.
pub const TYPE: &str = "deltatocumulative";
/// Default of `max_stale`.
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(300);
/// Default of `max_streams`.
pub const DEFAULT_MAX_STREAMS: usize = 100_000;
/// Default of `storage.snapshot_interval`.
pub const DEFAULT_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(30);
/// OTLP's `DataPointFlags.NO_RECORDED_VALUE_MASK`.
const NO_RECORDED_VALUE: u32 = 1;

/// The `deltatocumulative` processor's settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// A stream that received no point for this long is forgotten (its next point starts it
    /// over).
    #[serde(deserialize_with = "vla_pipeline::config::duration")]
    pub max_stale: Duration,
    /// The most streams held; points of new streams past it are dropped and counted.
    pub max_streams: usize,
    /// Where the state is persisted; `None` keeps it in memory only.
    pub storage: Option<StorageConfig>,
}

/// `storage`: where and how often the state is snapshotted.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// The directory of the snapshot and journal files (created when missing).
    pub directory: PathBuf,
    /// How often the full state is written (and the journal emptied).
    #[serde(
        default = "default_snapshot_interval",
        deserialize_with = "vla_pipeline::config::duration"
    )]
    pub snapshot_interval: Duration,
}

fn default_snapshot_interval() -> Duration {
    DEFAULT_SNAPSHOT_INTERVAL
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_stale: DEFAULT_MAX_STALE,
            max_streams: DEFAULT_MAX_STREAMS,
            storage: None,
        }
    }
}

impl Config {
    /// Checks the settings without I/O; problems are reported under `path`.
    pub fn validate(&self, path: &str) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.max_stale < Duration::from_secs(1) {
            problems.push(ConfigProblem::new(
                format!("{path}.max_stale"),
                "must be at least 1s (streams are swept with a resolution of seconds), e.g. 5m",
            ));
        }
        if self.max_streams == 0 {
            problems.push(ConfigProblem::new(
                format!("{path}.max_streams"),
                "must be at least 1, e.g. 100000",
            ));
        }
        if let Some(s) = &self.storage {
            if s.directory.as_os_str().is_empty() {
                problems.push(ConfigProblem::new(
                    format!("{path}.storage.directory"),
                    "must name a directory, e.g. /var/lib/vla-collector/deltatocumulative",
                ));
            }
            if s.snapshot_interval < Duration::from_secs(1) {
                problems.push(ConfigProblem::new(
                    format!("{path}.storage.snapshot_interval"),
                    "must be at least 1s, e.g. 30s",
                ));
            }
        }
        problems
    }
}

/// The self-metrics of one instance.
#[derive(Debug, Default)]
struct Counters {
    accumulated: Counter,
    out_of_order: Counter,
    stream_limit: Counter,
    layout_reset: Counter,
    invalid: Counter,
    no_value: Counter,
    expired: Counter,
    streams: Gauge,
    snapshots_ok: Counter,
    snapshots_error: Counter,
    journal_errors: Counter,
}

/// Per-batch tallies, added to the counters once per batch.
#[derive(Debug, Default)]
struct Tally {
    accumulated: u64,
    out_of_order: u64,
    stream_limit: u64,
    layout_reset: u64,
    invalid: u64,
    no_value: u64,
}

/// The persisted part of an instance.
#[derive(Debug)]
struct Persisted {
    storage: Storage,
    interval: Duration,
    last_snapshot: Instant,
    /// Whether the last journal write failed (logged once per streak).
    failing: bool,
}

/// The `deltatocumulative` processor for one pipeline.
#[derive(Debug)]
pub struct DeltaToCumulative {
    max_stale: u64,
    max_streams: usize,
    streams: Streams,
    /// Streams changed by the current batch, journalled after it.
    touched: Vec<Key>,
    /// Reused buffers for stream keys.
    ident: Identity,
    persisted: Option<Persisted>,
    tick: Duration,
    counters: Counters,
}

impl DeltaToCumulative {
    /// An in-memory instance (the `storage` setting is ignored; see [`Self::open`]).
    pub fn new(config: &Config) -> Self {
        let tick = config.max_stale.min(Duration::from_secs(30));
        Self {
            max_stale: config.max_stale.as_secs().max(1),
            max_streams: config.max_streams,
            streams: Streams::new(),
            touched: Vec::new(),
            ident: Identity::default(),
            persisted: None,
            tick,
            counters: Counters::default(),
        }
    }

    /// The instance of processor `id` in `pipeline`: with `storage`, its files are locked and
    /// restored (streams older than `max_stale` are dropped), and a fresh snapshot is written
    /// at once. Fails when the directory cannot be used.
    pub fn open(
        config: &Config,
        id: &ComponentId,
        pipeline: &str,
        telemetry: &SelfMetrics,
    ) -> Result<Self, std::io::Error> {
        let mut me = Self::new(config).with_telemetry(id, pipeline, telemetry);
        if let Some(sc) = &config.storage {
            let (storage, restored) = Storage::open(&sc.directory, id, pipeline)?;
            let now = unix_secs(SystemTime::now());
            let before = restored.streams.len();
            me.streams = restored.streams;
            me.streams
                .retain(|_, s| s.seen.saturating_add(me.max_stale) >= now);
            let corrupt = telemetry.counter(
                "vla_collector_processor_deltatocumulative_corrupt_files_total",
                "State files deltatocumulative found corrupt at start and renamed *.corrupt.",
                &[("processor", id), ("pipeline", pipeline)],
            );
            corrupt.add(restored.corrupt.len() as u64);
            telemetry
                .counter(
                    "vla_collector_processor_deltatocumulative_restored_streams_total",
                    "Streams deltatocumulative restored from its storage at start.",
                    &[("processor", id), ("pipeline", pipeline)],
                )
                .add(me.streams.len() as u64);
            tracing::info!(
                processor = %id,
                pipeline,
                streams = me.streams.len(),
                stale = before - me.streams.len(),
                journal_records = restored.records,
                directory = %sc.directory.display(),
                "deltatocumulative state restored"
            );
            let mut persisted = Persisted {
                storage,
                interval: sc.snapshot_interval,
                last_snapshot: Instant::now(),
                failing: false,
            };
            // A fresh snapshot drops a torn journal tail before anything is appended to it.
            persisted.storage.snapshot(&me.streams)?;
            me.tick = me.tick.min(sc.snapshot_interval);
            me.persisted = Some(persisted);
            me.counters.streams.set(me.streams.len() as i64);
        }
        Ok(me)
    }

    /// Registers the self-metrics: `vla_collector_processor_deltatocumulative_data_points_total
    /// {processor, result}` for delta points, `..._streams{processor, pipeline}`,
    /// `..._expired_streams_total`, `..._snapshots_total{result}` and
    /// `..._journal_errors_total`.
    pub fn with_telemetry(mut self, id: &str, pipeline: &str, telemetry: &SelfMetrics) -> Self {
        let points = |result| {
            telemetry.counter(
                "vla_collector_processor_deltatocumulative_data_points_total",
                "Delta data points seen by deltatocumulative, by result (accumulated, \
                 out_of_order, stream_limit, layout_reset, invalid, no_value).",
                &[("processor", id), ("result", result)],
            )
        };
        let labels = [("processor", id), ("pipeline", pipeline)];
        let snapshots = |result| {
            telemetry.counter(
                "vla_collector_processor_deltatocumulative_snapshots_total",
                "Snapshots of the deltatocumulative state written, by result.",
                &[
                    ("processor", id),
                    ("pipeline", pipeline),
                    ("result", result),
                ],
            )
        };
        self.counters = Counters {
            accumulated: points("accumulated"),
            out_of_order: points("out_of_order"),
            stream_limit: points("stream_limit"),
            layout_reset: points("layout_reset"),
            invalid: points("invalid"),
            no_value: points("no_value"),
            expired: telemetry.counter(
                "vla_collector_processor_deltatocumulative_expired_streams_total",
                "Streams deltatocumulative forgot after max_stale without a point.",
                &labels,
            ),
            streams: telemetry.gauge(
                "vla_collector_processor_deltatocumulative_streams",
                "Streams deltatocumulative holds.",
                &labels,
            ),
            snapshots_ok: snapshots("ok"),
            snapshots_error: snapshots("error"),
            journal_errors: telemetry.counter(
                "vla_collector_processor_deltatocumulative_journal_errors_total",
                "Batches whose state changes deltatocumulative could not append to its journal.",
                &labels,
            ),
        };
        self
    }

    /// Streams held.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// The identity hash of a point under `prefix` (its resource, scope and metric).
    fn key(&mut self, prefix: Key, attrs: &[KeyValue]) -> Key {
        self.ident.point(prefix, attrs)
    }

    /// Finds or creates the stream of a delta point and applies `add` (or `first` for a new
    /// stream); `None` when the point is dropped.
    #[allow(clippy::too_many_arguments)]
    fn admit(
        &mut self,
        key: Key,
        start: u64,
        time: u64,
        now: u64,
        tally: &mut Tally,
        first: impl FnOnce() -> Acc,
        add: impl FnOnce(&mut Acc) -> Outcome,
    ) -> Option<&Stream> {
        let len = self.streams.len();
        match self.streams.entry(key) {
            hashbrown::hash_map::Entry::Occupied(e) => {
                let s = e.into_mut();
                if !in_order(s, start, time) {
                    tally.out_of_order += 1;
                    return None;
                }
                match add(&mut s.acc) {
                    Outcome::Accumulated => tally.accumulated += 1,
                    Outcome::LayoutReset => {
                        tally.layout_reset += 1;
                        s.start = first_start(start, time);
                    }
                }
                s.last = time;
                s.seen = now;
                self.touched.push(key);
                Some(s)
            }
            hashbrown::hash_map::Entry::Vacant(e) => {
                if len >= self.max_streams {
                    tally.stream_limit += 1;
                    return None;
                }
                tally.accumulated += 1;
                self.touched.push(key);
                Some(e.insert(Stream {
                    start: first_start(start, time),
                    last: time,
                    seen: now,
                    acc: first(),
                }))
            }
        }
    }

    fn number(&mut self, prefix: Key, p: &mut NumberDataPoint, now: u64, t: &mut Tally) -> bool {
        let v = match p.value {
            Some(v) if p.flags & NO_RECORDED_VALUE == 0 => v,
            _ => {
                t.no_value += 1;
                return true;
            }
        };
        if matches!(v, Value::AsDouble(d) if !d.is_finite()) {
            t.invalid += 1;
            return false;
        }
        let key = self.key(prefix, &p.attributes);
        let (start, time) = (p.start_time_unix_nano, p.time_unix_nano);
        match self.admit(
            key,
            start,
            time,
            now,
            t,
            || Acc::number(v),
            |a| a.add_number(v),
        ) {
            Some(s) => {
                p.start_time_unix_nano = s.start;
                p.value = s.acc.value();
                true
            }
            None => false,
        }
    }

    fn hist(&mut self, prefix: Key, p: &mut HistogramDataPoint, now: u64, t: &mut Tally) -> bool {
        if p.flags & NO_RECORDED_VALUE != 0 {
            t.no_value += 1;
            return true;
        }
        if p.bucket_counts.len() != p.explicit_bounds.len() + 1 && !p.bucket_counts.is_empty() {
            t.invalid += 1;
            return false;
        }
        let key = self.key(prefix, &p.attributes);
        let (start, time) = (p.start_time_unix_nano, p.time_unix_nano);
        let point = &*p;
        match self.admit(
            key,
            start,
            time,
            now,
            t,
            || Acc::hist(point),
            |a| a.add_hist(point),
        ) {
            Some(s) => {
                p.start_time_unix_nano = s.start;
                s.acc.write_hist(p);
                true
            }
            None => false,
        }
    }

    fn exp(
        &mut self,
        prefix: Key,
        p: &mut ExponentialHistogramDataPoint,
        now: u64,
        t: &mut Tally,
    ) -> bool {
        if p.flags & NO_RECORDED_VALUE != 0 {
            t.no_value += 1;
            return true;
        }
        if !(-10..=20).contains(&p.scale) {
            t.invalid += 1;
            return false;
        }
        let key = self.key(prefix, &p.attributes);
        let (start, time) = (p.start_time_unix_nano, p.time_unix_nano);
        let point = &*p;
        match self.admit(
            key,
            start,
            time,
            now,
            t,
            || Acc::exp(point),
            |a| a.add_exp(point),
        ) {
            Some(s) => {
                p.start_time_unix_nano = s.start;
                s.acc.write_exp(p);
                true
            }
            None => false,
        }
    }

    /// Accumulates the delta points of one metric in place; returns whether it has any left.
    fn metric(&mut self, scope: Key, m: &mut Metric, now: u64, t: &mut Tally) -> bool {
        const DELTA: i32 = AggregationTemporality::Delta as i32;
        const CUMULATIVE: i32 = AggregationTemporality::Cumulative as i32;
        let (kind, monotonic) = match &m.data {
            Some(metric::Data::Sum(s)) if s.aggregation_temporality == DELTA => {
                (1u8, s.is_monotonic)
            }
            Some(metric::Data::Histogram(h)) if h.aggregation_temporality == DELTA => (2, false),
            Some(metric::Data::ExponentialHistogram(h)) if h.aggregation_temporality == DELTA => {
                (3, false)
            }
            _ => return true,
        };
        let prefix = self.ident.metric(scope, &m.name, &m.unit, kind, monotonic);
        match &mut m.data {
            Some(metric::Data::Sum(s)) => {
                s.data_points.retain_mut(|p| self.number(prefix, p, now, t));
                s.aggregation_temporality = CUMULATIVE;
                !s.data_points.is_empty()
            }
            Some(metric::Data::Histogram(h)) => {
                h.data_points.retain_mut(|p| self.hist(prefix, p, now, t));
                h.aggregation_temporality = CUMULATIVE;
                !h.data_points.is_empty()
            }
            Some(metric::Data::ExponentialHistogram(h)) => {
                h.data_points.retain_mut(|p| self.exp(prefix, p, now, t));
                h.aggregation_temporality = CUMULATIVE;
                !h.data_points.is_empty()
            }
            _ => true,
        }
    }

    fn resource(&mut self, rm: &mut ResourceMetrics, now: u64, t: &mut Tally) {
        let resource = self.ident.resource(rm.resource.as_ref());
        for sm in &mut rm.scope_metrics {
            if !sm.metrics.iter().any(is_delta) {
                continue;
            }
            let scope = self.ident.scope(resource, sm.scope.as_ref());
            sm.metrics.retain_mut(|m| self.metric(scope, m, now, t));
        }
        rm.scope_metrics.retain(|sm| !sm.metrics.is_empty());
    }

    /// Drops streams not seen for `max_stale`.
    fn sweep(&mut self, now: u64) {
        let before = self.streams.len();
        let max_stale = self.max_stale;
        self.streams
            .retain(|_, s| s.seen.saturating_add(max_stale) >= now);
        self.counters
            .expired
            .add((before - self.streams.len()) as u64);
        self.counters.streams.set(self.streams.len() as i64);
    }

    /// Writes a snapshot now (when storage is configured).
    fn snapshot(&mut self) {
        let Some(p) = &mut self.persisted else {
            return;
        };
        p.last_snapshot = Instant::now();
        match p.storage.snapshot(&self.streams) {
            Ok(()) => self.counters.snapshots_ok.inc(),
            Err(e) => {
                self.counters.snapshots_error.inc();
                tracing::warn!(error = %e, "deltatocumulative could not write its snapshot; the journal keeps growing until one succeeds");
            }
        }
    }
}

impl Processor for DeltaToCumulative {
    fn process(&mut self, batch: &mut MetricBatch) {
        // Known without decoding a batch still encoded as received.
        if !batch.has_delta() {
            return;
        }
        let now = unix_secs(batch.meta().received_at);
        let mut tally = Tally::default();
        self.touched.clear();
        {
            let mut rms = batch.resource_metrics_mut();
            for rm in rms.iter_mut() {
                self.resource(rm, now, &mut tally);
            }
            rms.retain(|rm| !rm.scope_metrics.is_empty());
        }
        let c = &self.counters;
        c.accumulated.add(tally.accumulated);
        c.out_of_order.add(tally.out_of_order);
        c.stream_limit.add(tally.stream_limit);
        c.layout_reset.add(tally.layout_reset);
        c.invalid.add(tally.invalid);
        c.no_value.add(tally.no_value);
        c.streams.set(self.streams.len() as i64);
        if let Some(p) = &mut self.persisted {
            match p.storage.append(&self.touched, &self.streams) {
                Ok(()) => p.failing = false,
                Err(e) => {
                    self.counters.journal_errors.inc();
                    if !p.failing {
                        tracing::warn!(error = %e, "deltatocumulative could not append to its journal; the state is kept in memory and written by the next snapshot");
                    }
                    p.failing = true;
                }
            }
        }
    }

    fn flush_interval(&self) -> Option<Duration> {
        Some(self.tick)
    }

    fn flush(&mut self, now: SystemTime) -> Option<MetricBatch> {
        self.sweep(unix_secs(now));
        if self
            .persisted
            .as_ref()
            .is_some_and(|p| p.last_snapshot.elapsed() >= p.interval)
        {
            self.snapshot();
        }
        None
    }

    fn shutdown(&mut self) {
        self.snapshot();
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Builds one instance per pipeline.
struct Factory {
    config: Config,
    id: ComponentId,
    telemetry: SelfMetrics,
}

impl vla_pipeline::registry::ProcessorFactory for Factory {
    fn stage(
        &self,
        pipeline: &str,
    ) -> Result<vla_pipeline::runner::Stage, vla_pipeline::registry::BuildError> {
        let p = DeltaToCumulative::open(&self.config, &self.id, pipeline, &self.telemetry)?;
        Ok(vla_pipeline::runner::Stage::Process(Box::new(p)))
    }
}

impl vla_pipeline::registry::Component for DeltaToCumulative {
    const TYPE: &'static str = TYPE;
    const EXAMPLE: &'static str = "\
max_stale: 5m
max_streams: 100000
";
    type Config = Config;

    fn validate(config: &Config, path: &str) -> Vec<ConfigProblem> {
        config.validate(path)
    }
}

impl vla_pipeline::registry::ProcessorType for DeltaToCumulative {
    fn build(
        config: &Config,
        ctx: vla_pipeline::registry::BuildContext<'_>,
    ) -> Result<Box<dyn vla_pipeline::registry::ProcessorFactory>, vla_pipeline::registry::BuildError>
    {
        Ok(Box::new(Factory {
            config: config.clone(),
            id: ctx.id.clone(),
            telemetry: ctx.self_metrics.clone(),
        }))
    }
}

#[cfg(test)]
mod tests;
