//! The `gpu_stats` processor: joins the latest GPU reading onto data points that carry a GPU
//! id, so request latency can be sliced by GPU model (and, optionally, by how busy or hot the
//! GPU was).
//!
//! The readings are the [`GpuSnapshot`] the `nvml` receiver publishes on every good poll
//! (`vla_pipeline::gpu`); the snapshot is loaded once per batch, never waited on. The GPU id is
//! looked up under `gpu_id_key` on the point's attributes, then on its resource's. It is a
//! decimal index (`"0"`, or an integer attribute), matched on the GPU's index, or a UUID
//! (`GPU-...`, `MIG-...`), matched on its UUID. Points of an unknown GPU, and every point before
//! the first snapshot, are left untouched and counted.
//!
//! Added attributes (string values, so they become Prometheus labels):
//! - `model_key` (default `gpu_model`): the product name, e.g. `NVIDIA H100 80GB HBM3`;
//! - `gpu_utilization_bucket` with `utilization_buckets: [50, 80]`: `<50`, `50-80` or `>=80`
//!   (a value on a bound belongs to the bucket above it); likewise `gpu_temperature_bucket`.
//!
//! With `on_existing: keep` (the default) an attribute the point already has is left as is;
//! `overwrite` replaces it.
//!
//! ```yaml
//! processors:
//!   gpu_stats:
//!     gpu_id_key: gpu_id              # looked up on the point's attributes, then the resource's
//!     model_key: gpu_model
//!     on_existing: keep               # keep | overwrite
//!     metrics: ["vla.inference.*"]    # optional: only these metrics (exact or * globs)
//!     utilization_buckets: [50, 80]   # optional
//!     temperature_buckets: [70, 85]   # optional
//! ```

use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use serde::Deserialize;
use vla_pipeline::config::ConfigProblem;
use vla_pipeline::gpu::{GpuReading, GpuSnapshot, GpuSnapshots};
use vla_pipeline::telemetry::Counter;
use vla_pipeline::{ComponentId, MetricBatch, Processor, Telemetry, upsert_str};

/// The config `type` of this processor.
pub const TYPE: &str = "gpu_stats";
/// The attribute `utilization_buckets` adds.
pub const UTILIZATION_BUCKET_KEY: &str = "gpu_utilization_bucket";
/// The attribute `temperature_buckets` adds.
pub const TEMPERATURE_BUCKET_KEY: &str = "gpu_temperature_bucket";

/// The `gpu_stats` processor's settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The attribute holding the GPU id (index or UUID).
    pub gpu_id_key: String,
    /// The attribute added with the GPU's product name.
    pub model_key: String,
    /// What to do when the point already has an attribute this processor adds.
    pub on_existing: OnExisting,
    /// Only the metrics with these names (exact, or globs with `*`); `None` = every metric.
    pub metrics: Option<Vec<String>>,
    /// Bounds of `gpu_utilization_bucket`, percent, strictly increasing.
    pub utilization_buckets: Option<Vec<f64>>,
    /// Bounds of `gpu_temperature_bucket`, °C, strictly increasing.
    pub temperature_buckets: Option<Vec<f64>>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            gpu_id_key: "gpu_id".to_owned(),
            model_key: "gpu_model".to_owned(),
            on_existing: OnExisting::Keep,
            metrics: None,
            utilization_buckets: None,
            temperature_buckets: None,
        }
    }
}

/// What to do with an attribute the point already has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnExisting {
    /// Leave the point's value.
    #[default]
    Keep,
    /// Replace it with the GPU's.
    Overwrite,
}

impl Config {
    /// Checks the settings without I/O; problems are reported under `path` (e.g.
    /// `processors.gpu_stats`).
    pub fn validate(&self, path: &str) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if !is_attribute_key(&self.gpu_id_key) {
            problems.push(ConfigProblem::new(
                format!("{path}.gpu_id_key"),
                format!(
                    "{:?} is not an attribute name: expected letters, digits, `_` and `.`, not \
                     starting with a digit, e.g. gpu_id",
                    self.gpu_id_key
                ),
            ));
        }
        if !is_attribute_key(&self.model_key) {
            problems.push(ConfigProblem::new(
                format!("{path}.model_key"),
                format!(
                    "{:?} is not an attribute name: expected letters, digits, `_` and `.`, not \
                     starting with a digit, e.g. gpu_model",
                    self.model_key
                ),
            ));
        } else if [
            self.gpu_id_key.as_str(),
            UTILIZATION_BUCKET_KEY,
            TEMPERATURE_BUCKET_KEY,
        ]
        .contains(&self.model_key.as_str())
        {
            problems.push(ConfigProblem::new(
                format!("{path}.model_key"),
                format!(
                    "{:?} is already used for the GPU id or a bucket; choose another name",
                    self.model_key
                ),
            ));
        }
        if let Some(metrics) = &self.metrics {
            if metrics.is_empty() {
                problems.push(ConfigProblem::new(
                    format!("{path}.metrics"),
                    "must list at least one metric name (leave it out for every metric)",
                ));
            }
            for (i, m) in metrics.iter().enumerate() {
                if m.trim().is_empty() {
                    problems.push(ConfigProblem::new(
                        format!("{path}.metrics[{i}]"),
                        "must not be empty; write a metric name or a glob such as vla.inference.*",
                    ));
                }
            }
        }
        check_bounds(
            &mut problems,
            &format!("{path}.utilization_buckets"),
            self.utilization_buckets.as_deref(),
            Some((0.0, 100.0)),
        );
        check_bounds(
            &mut problems,
            &format!("{path}.temperature_buckets"),
            self.temperature_buckets.as_deref(),
            None,
        );
        problems
    }
}

fn is_attribute_key(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

fn check_bounds(
    problems: &mut Vec<ConfigProblem>,
    path: &str,
    bounds: Option<&[f64]>,
    range: Option<(f64, f64)>,
) {
    let Some(bounds) = bounds else {
        return;
    };
    if bounds.is_empty() {
        problems.push(ConfigProblem::new(
            path,
            "must list at least one bound, e.g. [50, 80] (leave it out for no bucket)",
        ));
        return;
    }
    if let Some(bad) = bounds.iter().find(|b| !b.is_finite()) {
        problems.push(ConfigProblem::new(
            path,
            format!("bounds must be finite numbers, got {bad}"),
        ));
        return;
    }
    if let Some((lo, hi)) = range
        && let Some(bad) = bounds.iter().find(|b| **b < lo || **b > hi)
    {
        problems.push(ConfigProblem::new(
            path,
            format!("bounds must be between {lo} and {hi}, got {bad}"),
        ));
    }
    if let Some(w) = bounds.windows(2).find(|w| w[1] <= w[0]) {
        problems.push(ConfigProblem::new(
            path,
            format!(
                "bounds must be strictly increasing, but {} follows {}",
                w[1], w[0]
            ),
        ));
    }
}

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

/// A metric-name pattern: exact, or a glob whose `*` matches any run of characters.
#[derive(Debug, Clone)]
struct NamePattern {
    /// The text between the `*`s; one part means no `*`.
    parts: Vec<String>,
}

impl NamePattern {
    fn new(pattern: &str) -> Self {
        Self {
            parts: pattern.split('*').map(str::to_owned).collect(),
        }
    }

    fn matches(&self, name: &str) -> bool {
        let Some((first, rest)) = self.parts.split_first() else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            return name == first;
        };
        let Some(mut tail) = name.strip_prefix(first.as_str()) else {
            return false;
        };
        for part in middle {
            match tail.find(part.as_str()) {
                Some(at) => tail = &tail[at + part.len()..],
                None => return false,
            }
        }
        tail.len() >= last.len() && tail.ends_with(last.as_str())
    }
}

/// The `gpu_stats` processor.
#[derive(Debug)]
pub struct GpuStats {
    gpu_id_key: String,
    model_key: String,
    overwrite: bool,
    metrics: Option<Vec<NamePattern>>,
    buckets: Vec<Buckets>,
    gpus: GpuSnapshots,
    joined: Counter,
    unknown_gpu: Counter,
    no_snapshot: Counter,
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
                .map(|m| m.iter().map(|p| NamePattern::new(p)).collect()),
            buckets,
            gpus,
            joined: Counter::default(),
            unknown_gpu: Counter::default(),
            no_snapshot: Counter::default(),
        }
    }

    /// Registers the processor's counters as `vla_collector_processor_gpu_join_data_points_total
    /// {processor, result=joined|unknown_gpu|no_snapshot}` (points carrying a GPU id).
    pub fn with_telemetry(mut self, id: &ComponentId, telemetry: &Telemetry) -> Self {
        let counter = |result| {
            telemetry.counter(
                "vla_collector_processor_gpu_join_data_points_total",
                "Data points with a GPU id seen by gpu_stats, by result (joined, unknown_gpu, no_snapshot).",
                &[("processor", id), ("result", result)],
            )
        };
        self.joined = counter("joined");
        self.unknown_gpu = counter("unknown_gpu");
        self.no_snapshot = counter("no_snapshot");
        self
    }

    fn selects(&self, metric_name: &str) -> bool {
        self.metrics
            .as_ref()
            .is_none_or(|ps| ps.iter().any(|p| p.matches(metric_name)))
    }

    /// Adds the GPU's attributes to one point's.
    fn join(&self, attrs: &mut Vec<KeyValue>, gpu: &GpuReading) {
        if !gpu.model.is_empty() {
            self.set(attrs, &self.model_key, &gpu.model);
        }
        for buckets in &self.buckets {
            if let Some(label) = (buckets.value)(gpu).and_then(|v| buckets.label(v)) {
                self.set(attrs, buckets.key, label);
            }
        }
    }

    fn set(&self, attrs: &mut Vec<KeyValue>, key: &str, value: &str) {
        if self.overwrite || !attrs.iter().any(|kv| kv.key == key) {
            upsert_str(attrs, key, value);
        }
    }
}

/// Finds the GPU that `attrs[key]` names in `snapshot`: `Ok(None)` when the key is absent,
/// `Err(())` when it names no GPU of the snapshot.
fn find_gpu<'s>(
    snapshot: &'s GpuSnapshot,
    attrs: &[KeyValue],
    key: &str,
) -> Result<Option<&'s GpuReading>, ()> {
    let Some(value) = attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
    else {
        return Ok(None);
    };
    let found = match value {
        any_value::Value::IntValue(i) => u32::try_from(*i).ok().and_then(|i| snapshot.by_index(i)),
        any_value::Value::StringValue(s) => {
            let s = s.trim();
            if s.starts_with("GPU-") || s.starts_with("MIG-") {
                snapshot.by_uuid(s)
            } else {
                s.parse::<u32>().ok().and_then(|i| snapshot.by_index(i))
            }
        }
        _ => None,
    };
    found.map(Some).ok_or(())
}

impl Processor for GpuStats {
    fn process(&mut self, batch: &mut MetricBatch) {
        let snapshot = self.gpus.load();
        let (mut joined, mut unknown, mut waiting) = (0u64, 0u64, 0u64);
        let this = &*self;
        batch.for_each_point_mut(|ctx, attrs| {
            if !this.selects(ctx.metric_name) {
                return;
            }
            let found = match find_gpu(&snapshot, attrs, &this.gpu_id_key) {
                Ok(None) => match ctx.resource {
                    Some(r) => find_gpu(&snapshot, &r.attributes, &this.gpu_id_key),
                    None => Ok(None),
                },
                other => other,
            };
            match found {
                Ok(None) => {}
                // Before the first poll every id is unknown: count that apart.
                Err(()) if snapshot.taken_at.is_none() => waiting += 1,
                Err(()) => unknown += 1,
                Ok(Some(gpu)) => {
                    this.join(attrs, gpu);
                    joined += 1;
                }
            }
        });
        self.joined.add(joined);
        self.unknown_gpu.add(unknown);
        self.no_snapshot.add(waiting);
    }
}

#[cfg(test)]
mod tests;
