//! The `gpu_stats` processor's config and its validation (see the module doc of `gpu_stats`).
//!
//! ```yaml
//! gpu_stats:
//!   gpu_id_key: gpu_id            # default; send the UUID (GPU-...) or the NVML index, not a CUDA ordinal
//!   model_key: gpu_model          # default
//!   on_existing: keep             # default; keep | overwrite
//!   metrics: ["vla.inference.*"]  # default: every metric
//!   max_age: 1m                   # default; an older snapshot is not joined (stale_snapshot)
//!   utilization_buckets: [50, 80] # default none; gauges only: skipped (and counted) on
//!   temperature_buckets: [70, 85] #   cumulative points and summaries; delta points (which
//!                                 #   the exporters drop today) get them too
//! ```

use std::time::Duration;

use serde::Deserialize;
use vla_pipeline::config::ConfigProblem;

use super::{TEMPERATURE_BUCKET_KEY, UTILIZATION_BUCKET_KEY};
pub use crate::OnExisting;
use crate::pattern::MetricGlob;

/// Default of `max_age`.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(60);

/// The `gpu_stats` processor's settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The attribute holding the GPU id (the UUID `GPU-...`, or the NVML index).
    pub gpu_id_key: String,
    /// The attribute added with the GPU's product name (not a label Prometheus reserves).
    pub model_key: String,
    /// What to do when the point already has an attribute this processor adds.
    pub on_existing: OnExisting,
    /// Only the metrics with these names (exact, or globs with `*`); `None` = every metric.
    pub metrics: Option<Vec<String>>,
    /// A snapshot taken longer ago than this (NVML polls failing) is not joined.
    #[serde(deserialize_with = "vla_pipeline::config::duration")]
    pub max_age: Duration,
    /// Bounds of `gpu_utilization_bucket`, percent, strictly increasing; added to gauges (and
    /// to delta sums/histograms, which the exporters drop today), never to cumulative points.
    pub utilization_buckets: Option<Vec<f64>>,
    /// Bounds of `gpu_temperature_bucket`, °C, strictly increasing; added to gauges (and to
    /// delta sums/histograms, which the exporters drop today), never to cumulative points.
    pub temperature_buckets: Option<Vec<f64>>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            gpu_id_key: "gpu_id".to_owned(),
            model_key: "gpu_model".to_owned(),
            on_existing: OnExisting::Keep,
            metrics: None,
            max_age: DEFAULT_MAX_AGE,
            utilization_buckets: None,
            temperature_buckets: None,
        }
    }
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
        } else if let Some(why) = reserved_label(&self.model_key) {
            problems.push(ConfigProblem::new(
                format!("{path}.model_key"),
                format!("{why}; choose another name, e.g. gpu_model"),
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
                if let Err(why) = MetricGlob::check(m) {
                    problems.push(ConfigProblem::new(format!("{path}.metrics[{i}]"), why));
                }
            }
        }
        if self.max_age.is_zero() {
            problems.push(ConfigProblem::new(
                format!("{path}.max_age"),
                "must be longer than 0, e.g. 1m (a few times the nvml receiver's \
                 collection_interval)",
            ));
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

/// Label names Prometheus or its exposition set themselves.
const RESERVED_LABELS: [&str; 4] = ["job", "instance", "le", "quantile"];

/// Why `key` would make a label Prometheus reserves. (A valid attribute name keeps its letters
/// when exported, `.` becoming `_`, so the key itself is checked.)
fn reserved_label(key: &str) -> Option<String> {
    if key.starts_with("__") {
        return Some(format!(
            "{key:?}: names starting with `__` are reserved by Prometheus"
        ));
    }
    RESERVED_LABELS
        .contains(&key)
        .then(|| format!("{key:?} is reserved: Prometheus sets the label {key:?} itself"))
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
