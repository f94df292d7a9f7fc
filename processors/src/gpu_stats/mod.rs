//! The `gpu_stats` processor: joins the latest GPU reading onto data points that carry a GPU
//! id, so request latency can be sliced by GPU model (and, optionally, by how busy or hot the
//! GPU was). The readings are the [`GpuSnapshot`] the `nvml` receiver publishes on every good
//! poll (`vla_pipeline::gpu`), loaded once per batch and never waited on. The id (a UUID
//! `GPU-...`, or NVML's index, not a CUDA ordinal) is looked up on the point, then on its
//! resource. Bucket labels go on gauges only; points of an unknown GPU, or with no recent
//! snapshot, are left untouched and counted.
//!
//! ```yaml
//! processors:
//!   gpu_stats:
//!     gpu_id_key: gpu_id
//!     model_key: gpu_model
//!     max_age: 1m
//!     utilization_buckets: [50, 80]   # optional; gauges only
//! ```
//!
//! The full manual: `docs/components/gpu_stats.md`.

use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Metric, ResourceMetrics, metric,
};
use vla_pipeline::gpu::{GpuReading, GpuSnapshot, GpuSnapshots};
use vla_pipeline::self_metrics::Counter;
use vla_pipeline::{ComponentId, MetricBatch, Processor, SelfMetrics};

use crate::pattern::MetricGlob;

mod config;

pub use config::{Config, DEFAULT_MAX_AGE, OnExisting};

/// The config `type` of this processor.
pub const TYPE: &str = "gpu_stats";
/// The attribute `utilization_buckets` adds.
pub const UTILIZATION_BUCKET_KEY: &str = "gpu_utilization_bucket";
/// The attribute `temperature_buckets` adds.
pub const TEMPERATURE_BUCKET_KEY: &str = "gpu_temperature_bucket";
/// Bucket bounds and their labels (`labels[i]` for values with `i` bounds at or below them).
#[derive(Debug, Clone)]
struct Buckets {
    key: &'static str,
    /// The reading the buckets classify.
    value: fn(&GpuReading) -> Option<f64>,
    bounds: Vec<f64>,
    labels: Vec<String>,
}

impl Buckets {
    fn new(key: &'static str, value: fn(&GpuReading) -> Option<f64>, bounds: &[f64]) -> Self {
        let mut labels = Vec::with_capacity(bounds.len() + 1);
        if let (Some(first), Some(last)) = (bounds.first(), bounds.last()) {
            labels.push(format!("<{first}"));
            labels.extend(bounds.windows(2).map(|w| format!("{}-{}", w[0], w[1])));
            labels.push(format!(">={last}"));
        }
        Self {
            key,
            value,
            bounds: bounds.to_vec(),
            labels,
        }
    }

    /// The label of `v`: a value on a bound belongs to the bucket above it.
    fn label(&self, v: f64) -> Option<&str> {
        let i = self.bounds.partition_point(|b| *b <= v);
        self.labels.get(i).map(String::as_str)
    }
}

/// The `gpu_stats` processor.
#[derive(Debug)]
pub struct GpuStats {
    gpu_id_key: String,
    model_key: String,
    overwrite: bool,
    metrics: Option<Vec<MetricGlob>>,
    max_age: Duration,
    buckets: Vec<Buckets>,
    gpus: GpuSnapshots,
    joined: Counter,
    unknown_gpu: Counter,
    no_snapshot: Counter,
    stale_snapshot: Counter,
    bucket_skipped: Counter,
}

impl GpuStats {
    /// A processor joining `gpus`' latest snapshot as the (validated) `config` says.
    pub fn new(config: &Config, gpus: GpuSnapshots) -> Self {
        let mut buckets = Vec::new();
        if let Some(b) = &config.utilization_buckets {
            buckets.push(Buckets::new(
                UTILIZATION_BUCKET_KEY,
                |g| g.utilization_percent,
                b,
            ));
        }
        if let Some(b) = &config.temperature_buckets {
            buckets.push(Buckets::new(
                TEMPERATURE_BUCKET_KEY,
                |g| g.temperature_celsius,
                b,
            ));
        }
        Self {
            gpu_id_key: config.gpu_id_key.clone(),
            model_key: config.model_key.clone(),
            overwrite: config.on_existing == OnExisting::Overwrite,
            metrics: config
                .metrics
                .as_ref()
                .map(|m| m.iter().map(|p| MetricGlob::new(p)).collect()),
            max_age: config.max_age,
            buckets,
            gpus,
            joined: Counter::default(),
            unknown_gpu: Counter::default(),
            no_snapshot: Counter::default(),
            stale_snapshot: Counter::default(),
            bucket_skipped: Counter::default(),
        }
    }

    /// Registers the processor's counters: `vla_collector_processor_gpu_stats_data_points_total
    /// {processor, result=joined|unknown_gpu|no_snapshot|stale_snapshot}` (points carrying a
    /// GPU id) and `vla_collector_processor_gpu_stats_bucket_skipped_data_points_total{processor,
    /// reason=cumulative}` (joined points of cumulative metrics, left without bucket labels).
    pub fn with_telemetry(mut self, id: &ComponentId, telemetry: &SelfMetrics) -> Self {
        let counter = |result| {
            telemetry.counter(
                "vla_collector_processor_gpu_stats_data_points_total",
                "Data points with a GPU id seen by gpu_stats, by result (joined, unknown_gpu, \
                 no_snapshot, stale_snapshot).",
                &[("processor", id), ("result", result)],
            )
        };
        self.joined = counter("joined");
        self.unknown_gpu = counter("unknown_gpu");
        self.no_snapshot = counter("no_snapshot");
        self.stale_snapshot = counter("stale_snapshot");
        self.bucket_skipped = telemetry.counter(
            "vla_collector_processor_gpu_stats_bucket_skipped_data_points_total",
            "Joined data points of cumulative sums/histograms/summaries that gpu_stats left \
             without GPU bucket labels (a bucket would split one cumulative series).",
            &[("processor", id), ("reason", "cumulative")],
        );
        self
    }

    fn selects(&self, metric_name: &str) -> bool {
        self.metrics
            .as_ref()
            .is_none_or(|ps| ps.iter().any(|p| p.matches(metric_name)))
    }

    /// What to add for each GPU of `snapshot`, computed once per batch.
    fn plans<'a>(&'a self, snapshot: &'a GpuSnapshot) -> Vec<Plan<'a>> {
        snapshot
            .gpus
            .iter()
            .map(|gpu| {
                let mut plan = Plan {
                    model: (!gpu.model.is_empty()).then_some(gpu.model.as_str()),
                    buckets: [None, None],
                };
                let labels = self
                    .buckets
                    .iter()
                    .map(|b| (b.value)(gpu).and_then(|v| b.label(v)).map(|l| (b.key, l)));
                for (slot, label) in plan.buckets.iter_mut().zip(labels) {
                    *slot = label;
                }
                plan
            })
            .collect()
    }

    /// Adds a GPU's attributes to one point's; bucket labels only with `buckets`.
    fn join(&self, attrs: &mut Vec<KeyValue>, plan: &Plan<'_>, buckets: bool) {
        let model = plan.model.map(|m| (self.model_key.as_str(), m));
        let labels = plan.buckets.iter().filter(|_| buckets).flatten().copied();
        let mut reserved = false;
        let mut pending = model.into_iter().chain(labels).peekable();
        while let Some((key, value)) = pending.next() {
            match attrs.iter_mut().find(|kv| kv.key == key) {
                Some(kv) => {
                    if self.overwrite {
                        set_value(kv, value);
                    }
                }
                None => {
                    if !reserved {
                        // One growth for this and every attribute still to come.
                        attrs.reserve(1 + pending.clone().count());
                        reserved = true;
                    }
                    attrs.push(KeyValue {
                        key: key.to_owned(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(value.to_owned())),
                        }),
                        ..Default::default()
                    });
                }
            }
        }
    }
}

/// What to add for one GPU, borrowed from the snapshot and the bucket labels, so joining
/// copies only into the point.
#[derive(Debug, Clone, Copy)]
struct Plan<'a> {
    /// The product name, when known.
    model: Option<&'a str>,
    /// `(key, label)` of the utilization and temperature buckets, where configured and known.
    buckets: [Option<(&'static str, &'a str)>; 2],
}

/// Sets a string attribute's value without allocating when it already holds it (or a string
/// whose buffer can take it).
fn set_value(kv: &mut KeyValue, value: &str) {
    if let Some(AnyValue {
        value: Some(any_value::Value::StringValue(s)),
    }) = &mut kv.value
    {
        if s != value {
            s.clear();
            s.push_str(value);
        }
        return;
    }
    kv.value = Some(AnyValue {
        value: Some(any_value::Value::StringValue(value.to_owned())),
    });
}

/// The GPU an attribute list names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lookup {
    /// No `gpu_id_key` attribute.
    Absent,
    /// An id that names no GPU of the snapshot.
    Unknown,
    /// The position of the GPU in the snapshot.
    Found(usize),
}

/// Finds the GPU that `attrs[key]` names in `snapshot`.
fn find_gpu(snapshot: &GpuSnapshot, attrs: &[KeyValue], key: &str) -> Lookup {
    let Some(value) = attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
    else {
        return Lookup::Absent;
    };
    let by_index = |i: u32| snapshot.gpus.iter().position(|g| g.index == i);
    let found = match value {
        any_value::Value::IntValue(i) => u32::try_from(*i).ok().and_then(by_index),
        any_value::Value::StringValue(s) => {
            let s = s.trim();
            if s.starts_with("GPU-") || s.starts_with("MIG-") {
                snapshot.gpus.iter().position(|g| g.uuid == s)
            } else {
                s.parse::<u32>().ok().and_then(by_index)
            }
        }
        _ => None,
    };
    found.map_or(Lookup::Unknown, Lookup::Found)
}

/// Whether bucket labels may go on a metric's points: gauges, and sums and histograms that
/// cover one interval (delta; the exporters drop those today). `None` for a metric without
/// data.
fn takes_buckets(data: Option<&metric::Data>) -> Option<bool> {
    let delta = |t: i32| t == AggregationTemporality::Delta as i32;
    Some(match data? {
        metric::Data::Gauge(_) => true,
        metric::Data::Sum(s) => delta(s.aggregation_temporality),
        metric::Data::Histogram(h) => delta(h.aggregation_temporality),
        metric::Data::ExponentialHistogram(h) => delta(h.aggregation_temporality),
        metric::Data::Summary(_) => false,
    })
}

/// Calls `f` with every point's attributes of one metric.
fn for_each_attrs(data: &mut metric::Data, mut f: impl FnMut(&mut Vec<KeyValue>)) {
    match data {
        metric::Data::Gauge(g) => g.data_points.iter_mut().for_each(|p| f(&mut p.attributes)),
        metric::Data::Sum(s) => s.data_points.iter_mut().for_each(|p| f(&mut p.attributes)),
        metric::Data::Histogram(h) => h.data_points.iter_mut().for_each(|p| f(&mut p.attributes)),
        metric::Data::ExponentialHistogram(h) => {
            h.data_points.iter_mut().for_each(|p| f(&mut p.attributes));
        }
        metric::Data::Summary(s) => s.data_points.iter_mut().for_each(|p| f(&mut p.attributes)),
    }
}

/// The snapshot's state for this batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freshness {
    /// Nothing published yet.
    None,
    /// Older than `max_age`.
    Stale,
    /// Joinable.
    Fresh,
}

/// One batch's counts.
#[derive(Debug, Default)]
struct Counts {
    joined: u64,
    unknown: u64,
    no_snapshot: u64,
    stale: u64,
    bucket_skipped: u64,
}

impl Processor for GpuStats {
    fn process(&mut self, batch: &mut MetricBatch) {
        let snapshot = self.gpus.load();
        let freshness = match snapshot.taken_at {
            None => Freshness::None,
            // A snapshot from the future (clock stepped back) counts as fresh.
            Some(t) if SystemTime::now().duration_since(t).unwrap_or_default() > self.max_age => {
                Freshness::Stale
            }
            Some(_) => Freshness::Fresh,
        };
        let plans = match freshness {
            Freshness::Fresh => self.plans(&snapshot),
            _ => Vec::new(),
        };
        let key = self.gpu_id_key.as_str();
        let mut counts = Counts::default();
        let mut rms = batch.resource_metrics_mut();
        // Metrics come in runs of the same name (one per resource): reuse the last decision.
        let mut last: Option<(&str, bool)> = None;
        for rm in rms.iter_mut() {
            let ResourceMetrics {
                resource,
                scope_metrics,
                ..
            } = rm;
            let resource_gpu = resource
                .as_ref()
                .map_or(Lookup::Absent, |r| find_gpu(&snapshot, &r.attributes, key));
            for sm in scope_metrics.iter_mut() {
                for m in sm.metrics.iter_mut() {
                    let Metric { name, data, .. } = m;
                    let name: &str = name;
                    let selected = match last {
                        Some((n, d)) if n == name => d,
                        _ => {
                            let d = self.selects(name);
                            last = Some((name, d));
                            d
                        }
                    };
                    if !selected {
                        continue;
                    }
                    let Some(buckets) = takes_buckets(data.as_ref()) else {
                        continue;
                    };
                    let Some(data) = data.as_mut() else {
                        continue;
                    };
                    for_each_attrs(data, |attrs| {
                        let gpu = match find_gpu(&snapshot, attrs, key) {
                            Lookup::Absent => resource_gpu,
                            found => found,
                        };
                        match (gpu, freshness) {
                            (Lookup::Absent, _) => {}
                            (_, Freshness::None) => counts.no_snapshot += 1,
                            (_, Freshness::Stale) => counts.stale += 1,
                            (Lookup::Unknown, Freshness::Fresh) => counts.unknown += 1,
                            (Lookup::Found(i), Freshness::Fresh) => {
                                if let Some(plan) = plans.get(i) {
                                    self.join(attrs, plan, buckets);
                                    counts.joined += 1;
                                    if !buckets && plan.buckets.iter().any(Option::is_some) {
                                        counts.bucket_skipped += 1;
                                    }
                                }
                            }
                        }
                    });
                }
            }
        }
        drop(rms);
        self.joined.add(counts.joined);
        self.unknown_gpu.add(counts.unknown);
        self.no_snapshot.add(counts.no_snapshot);
        self.stale_snapshot.add(counts.stale);
        self.bucket_skipped.add(counts.bucket_skipped);
    }
}

impl vla_pipeline::registry::Component for GpuStats {
    const TYPE: &'static str = TYPE;
    const EXAMPLE: &'static str = "\
gpu_id_key: gpu_id
model_key: gpu_model
on_existing: keep
metrics: [\"vla.inference.*\"]
max_age: 1m
utilization_buckets: [50, 80]
temperature_buckets: [70, 85]
";
    type Config = Config;

    fn validate(config: &Config, path: &str) -> Vec<vla_pipeline::config::ConfigProblem> {
        config.validate(path)
    }
}

impl vla_pipeline::registry::ProcessorType for GpuStats {
    fn build(
        config: &Config,
        ctx: vla_pipeline::registry::BuildContext<'_>,
    ) -> Result<Box<dyn vla_pipeline::registry::ProcessorFactory>, vla_pipeline::registry::BuildError>
    {
        let (config, id, metrics) = (config.clone(), ctx.id.clone(), ctx.self_metrics.clone());
        let gpus = ctx.gpus.clone();
        Ok(Box::new(vla_pipeline::registry::PerPipeline(move || {
            Box::new(GpuStats::new(&config, gpus.clone()).with_telemetry(&id, &metrics))
                as Box<dyn vla_pipeline::Processor>
        })))
    }
}

#[cfg(test)]
mod tests;
