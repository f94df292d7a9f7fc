//! OpenTelemetry → Prometheus translation, written once for both Prometheus exporters.
//!
//! Follows the OpenTelemetry "Prometheus and OpenMetrics Compatibility" spec (metric points
//! to Prometheus), with the choices of the OpenTelemetry Collector's translator where the spec
//! leaves room:
//!
//! - **Metric names**: characters outside `[a-zA-Z0-9_:]` become `_`, runs of `_` collapse and
//!   leading/trailing `_` are trimmed; a leading digit gets a `_` prefix; the optional
//!   `namespace` is prefixed as `namespace_`.
//! - **Units** (UCUM) become a suffix unless the name already has that word as one of its
//!   `_`-separated tokens: `s`→`seconds`, `ms`→`milliseconds`, `By`→`bytes`, `Cel`→`celsius`,
//!   `%`→`percent`, `X/Y`→`X_per_Y` (`m/s`→`meters_per_second`), `{annotation}` dropped,
//!   unknown units sanitised and appended as they are; `1` becomes `ratio` for gauges only.
//! - **Types**: a monotonic cumulative sum is a counter and gets `_total` after the unit (a
//!   trailing `_total` already in the name is stripped first); a non-monotonic cumulative sum is
//!   a gauge; histograms become `_bucket{le}` (cumulative, `+Inf` = count), `_sum`, `_count`;
//!   summaries `{quantile}`, `_sum`, `_count`. Delta sums and histograms are dropped with reason
//!   `delta_temporality` (the `deltatocumulative` processor before the exporter converts them);
//!   exponential histograms become native histograms or classic buckets at fixed bounds, as
//!   the exporter is configured (see `exponential.rs`).
//! - **Labels**: attribute keys have characters outside `[a-zA-Z0-9_]` replaced by `_` and runs
//!   of `_` collapsed (so attributes can never produce the reserved `__` prefix); a leading
//!   digit gets a `key_` prefix. Two attributes that sanitise to the same name keep one label
//!   whose value is their values joined by `;`, in the order of the original keys. Empty values
//!   are left out (Prometheus treats them as absent).
//! - **Resource**: `job` = `service.namespace/service.name` (or `service.name`), `instance` =
//!   `service.instance.id`; these win over point attributes of the same name. The other resource
//!   attributes go on one `target_info` gauge (value 1) per resource, emitted only when there
//!   are any. `otel_scope_name` / `otel_scope_version` are added unless `disable_scope_info`
//!   (the spec's current recommendation is to add them).
//! - **External labels** (remote write) and **const labels** (scrape) never override a series'
//!   own labels, as in the OpenTelemetry Collector.
//! - **Name collisions**: two different OTel metrics can translate to overlapping Prometheus
//!   names (a gauge and a histogram both named `x`; counters `y` and `y.total`, both
//!   `y_total`; `a.seconds` and `a` with unit `s`; a gauge `x_count` and a histogram `x`'s
//!   `x_count`; anything named `target_info` while `target_info` is emitted). As the spec
//!   requires, the later one is dropped whole, so there is never a second `# TYPE` for a family
//!   and never two values for one remote-write series: the first identity (OTel name, unit,
//!   Prometheus type) to produce a name keeps it across batches, the other's points are counted
//!   with reason `name_collision` and the exporter warns (rate-limited) naming both metrics and
//!   the name. The same identity from several resources or scopes is one family with different
//!   labels, not a collision. Claims are cleared together with the name cache when it reaches
//!   its size limit (16 384 distinct metrics), which bounds them; after such a reset the first
//!   of two colliding metrics to arrive claims the name afresh. **Not handled**: with
//!   `disable_scope_info`, the same metric from two scopes with identical attributes gives
//!   identical series (remote write rejects the duplicate samples; the scrape endpoint keeps the
//!   last value); telling them apart needs the scope labels.
//! - **Values**: a point flagged "no recorded value" becomes the Prometheus stale marker
//!   (NaN `0x7ff0000000000002`); timestamps are milliseconds.
//!
//! Hot path: names are translated once per metric (and cached across batches), the label set
//! of a point is built once into reused buffers and shared by all the series the point yields
//! (`_bucket`×n, `_sum`, `_count`), and sinks see it as a sorted slice with the series' own
//! `__name__` and `le`/`quantile` merged in on the fly; nothing is formatted per point except
//! non-string attribute values and bucket bounds that differ from the previous point's.

mod claims;
mod exponential;
mod families;
mod float_labels;
mod labels;
mod names;
mod point_key;
mod sink;
mod walk;

pub use claims::{Claimant, MetricIdentity, NameCollision};
pub use exponential::{
    DEFAULT_CLASSIC_BOUNDS, ExponentialHistograms, MAX_SCHEMA, MIN_SCHEMA, NativeBuckets,
    NativeHistogram,
};
pub use labels::LabelSet;
pub use names::{
    PromType, is_valid_label_name, is_valid_metric_name, metric_name, sanitize_label_name,
    sanitize_metric_name, unit_suffix,
};
pub use sink::{Family, Sample, SampleSink};
pub use walk::{TranslateOptions, TranslateStats, Translator};

/// The Prometheus stale marker (a NaN with a fixed bit pattern).
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Drop reason: delta temporality sums and histograms.
pub const DROP_DELTA: &str = "delta_temporality";
/// Drop reason: a metric whose Prometheus names belong to another metric (dropped whole).
pub const DROP_NAME_COLLISION: &str = "name_collision";
/// Drop reason: an exponential histogram whose scale is below what Prometheus can express
/// (native histogram schemas start at -4).
pub const DROP_UNSUPPORTED_SCHEMA: &str = "unsupported_schema";
/// Drop reason: temporality unspecified.
pub const DROP_UNSPECIFIED_TEMPORALITY: &str = "unspecified_temporality";
/// Drop reason: a number point without a value.
pub const DROP_NO_VALUE: &str = "missing_value";

/// Checks the settings both exporters share: the `namespace` prefix and a map of labels added
/// to every series (`external_labels` / `const_labels`), reporting under `path`.
pub fn check_naming_settings(
    path: &str,
    namespace: Option<&str>,
    labels_field: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> Vec<vla_pipeline::config::ConfigProblem> {
    use vla_pipeline::config::ConfigProblem;
    let mut problems = Vec::new();
    if let Some(ns) = namespace
        && !is_valid_metric_name(ns)
    {
        problems.push(ConfigProblem::new(
            format!("{path}.namespace"),
            format!("{ns:?} is not a valid metric name prefix: expected [a-zA-Z_:][a-zA-Z0-9_:]*"),
        ));
    }
    for (name, value) in labels {
        let at = format!("{path}.{labels_field}.{name}");
        if !is_valid_label_name(name) || name.starts_with("__") {
            problems.push(ConfigProblem::new(
                at,
                format!(
                    "{name:?} is not a valid label name: expected [a-zA-Z_][a-zA-Z0-9_]* \
                     not starting with \"__\""
                ),
            ));
        } else if value.is_empty() {
            problems.push(ConfigProblem::new(at, "the label value must not be empty"));
        }
    }
    problems
}

/// Checks `exponential_histogram_bounds` (at `path`): finite, strictly increasing, at least one.
pub fn check_classic_bounds(
    path: &str,
    bounds: &[f64],
) -> Vec<vla_pipeline::config::ConfigProblem> {
    use vla_pipeline::config::ConfigProblem;
    let mut problems = Vec::new();
    if bounds.is_empty() {
        problems.push(ConfigProblem::new(
            path,
            "must list at least one bound (leave it out for the OpenTelemetry SDKs' defaults)",
        ));
    }
    if let Some(i) = bounds.iter().position(|b| !b.is_finite()) {
        problems.push(ConfigProblem::new(
            format!("{path}[{i}]"),
            "must be a finite number (+Inf is always added)",
        ));
    } else if let Some(i) = bounds.windows(2).position(|w| w[0] >= w[1]) {
        problems.push(ConfigProblem::new(
            format!("{path}[{}]", i + 1),
            format!(
                "bounds must increase strictly: {} follows {}",
                bounds[i + 1],
                bounds[i]
            ),
        ));
    }
    problems
}

/// Logs, at most once per `limiter` interval, that delta points were dropped.
pub(crate) fn warn_delta_dropped(
    exporter: &str,
    delta: u64,
    limiter: &vla_pipeline::ratelimit::LogLimiter,
) {
    if delta > 0
        && let Some(suppressed) = limiter.allow()
    {
        tracing::warn!(
            exporter,
            points = delta,
            suppressed,
            "delta temporality cannot be written to Prometheus: add the \
             deltatocumulative processor to the pipeline; {delta} points dropped"
        );
    }
}

/// Logs, at most once per `limiter` interval, a metric dropped for a name collision, naming
/// both OTel metrics and the Prometheus name.
/// `points` is how many points the batch dropped for [`DROP_NAME_COLLISION`].
pub(crate) fn warn_name_collision(
    exporter: &str,
    collision: Option<&NameCollision>,
    points: u64,
    limiter: &vla_pipeline::ratelimit::LogLimiter,
) {
    if let Some(c) = collision
        && let Some(suppressed) = limiter.allow()
    {
        tracing::warn!(
            exporter,
            prometheus_name = %c.prometheus_name,
            dropped = %c.dropped,
            kept = %c.kept,
            points,
            suppressed,
            "two OpenTelemetry metrics translate to the same Prometheus name; the later one \
             is dropped whole"
        );
    }
}

#[cfg(test)]
mod tests;
