//! The `cardinality_limit` processor: caps the distinct series (label sets, within each
//! resource and scope) of chosen metrics. Past `max_series` active series of a metric, the
//! points of any further series fold into one overflow series per resource, labelled
//! `otel_metric_overflow="true"` (the OpenTelemetry SDKs' convention), so totals stay right
//! while the series count stays bounded: a `sum()` over the metric equals the input's.
//!
//! Counting is exact (a set of 128-bit series keys, not a sketch). A series is active while it
//! received a point in the current or the previous `window`; one that did not is forgotten and
//! frees its slot. A series that overflowed stays in the overflow series while it is active,
//! so it never jumps between the two.
//!
//! Folding: cumulative sums and histograms are summed over every overflowed series' latest
//! point (the processor keeps each one's last value, up to `max_overflow_series` in all: past
//! that, points of further series are dropped and counted); delta sums and histograms are
//! summed per batch; gauges keep the last value of the batch. Exponential histograms and
//! summaries past the limit are dropped and counted (`unsupported`). Histograms fold when
//! their bounds equal the overflow series' bounds (the first one's); others are `unsupported`.
//!
//! ```yaml
//! processors:
//!   cardinality_limit:
//!     window: 1h                     # default
//!     max_overflow_series: 100000    # default
//!     limits:                        # the first whose metrics match applies
//!       - { metrics: ["vla.customer.*"], max_series: 1000 }
//!       - { metrics: ["*"], max_series: 10000 }
//! ```

use std::time::{Duration, SystemTime};

use hashbrown::HashMap;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, HistogramDataPoint, Metric, NumberDataPoint, metric,
};
use serde::Deserialize;
use vla_pipeline::config::ConfigProblem;
use vla_pipeline::self_metrics::{Counter, Gauge};
use vla_pipeline::{ComponentId, MetricBatch, Processor, SelfMetrics};

use crate::identity::{Identity, Key};
use crate::pattern::MetricGlob;

/// The config `type` of this processor.
pub const TYPE: &str = "cardinality_limit";
/// The attribute of the overflow series.
pub const OVERFLOW_KEY: &str = "otel_metric_overflow";
/// Default of `window`.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);
/// Default of `max_overflow_series`.
pub const DEFAULT_MAX_OVERFLOW_SERIES: usize = 100_000;
/// OTLP's `DataPointFlags.NO_RECORDED_VALUE_MASK`.
const NO_RECORDED_VALUE: u32 = 1;

/// The `cardinality_limit` processor's settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A series not seen for a whole window (up to two windows) is forgotten.
    #[serde(
        default = "default_window",
        deserialize_with = "vla_pipeline::config::duration"
    )]
    pub window: Duration,
    /// How many overflowed cumulative series' last values are kept, in all.
    #[serde(default = "default_max_overflow")]
    pub max_overflow_series: usize,
    /// The limits; the first whose `metrics` match a metric's name applies to it.
    pub limits: Vec<Limit>,
}

fn default_window() -> Duration {
    DEFAULT_WINDOW
}

fn default_max_overflow() -> usize {
    DEFAULT_MAX_OVERFLOW_SERIES
}

/// One limit.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Metric names (OpenTelemetry names; exact, or `*` globs).
    pub metrics: Vec<String>,
    /// The most active series of each matching metric.
    pub max_series: usize,
}

impl Config {
    /// Checks the settings without I/O; problems are reported under `path`.
    pub fn validate(&self, path: &str) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.window < Duration::from_secs(1) {
            problems.push(ConfigProblem::new(
                format!("{path}.window"),
                "must be at least 1s, e.g. 1h",
            ));
        }
        if self.limits.is_empty() {
            problems.push(ConfigProblem::new(
                format!("{path}.limits"),
                "must list at least one limit, e.g. { metrics: [\"vla.customer.*\"], max_series: 1000 }",
            ));
        }
        for (i, l) in self.limits.iter().enumerate() {
            let at = format!("{path}.limits[{i}]");
            problems.extend(MetricGlob::check_list(&format!("{at}.metrics"), &l.metrics));
            if l.max_series == 0 {
                problems.push(ConfigProblem::new(
                    format!("{at}.max_series"),
                    "must be at least 1 (use the filter processor to drop a metric)",
                ));
            }
        }
        problems
    }
}

/// A folded value.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Num(f64),
    Hist {
        count: u64,
        sum: f64,
        buckets: Vec<u64>,
    },
}

/// An overflowed series' latest point (cumulative metrics).
#[derive(Debug, Clone)]
struct Member {
    start: u64,
    time: u64,
    seen: u64,
    val: Val,
}

/// The overflow series of one metric in one resource and scope.
#[derive(Debug, Default)]
struct Group {
    members: HashMap<Key, Member>,
    /// The overflow series' histogram bounds (the first overflowed point's).
    bounds: Option<Vec<f64>>,
}

/// What the processor tracks for one limited metric.
#[derive(Debug, Default)]
struct MetricState {
    /// Admitted series → the window they were last seen in.
    admitted: HashMap<Key, u64>,
    /// Overflow series by metric key (resource, scope, metric).
    groups: HashMap<Key, Group>,
}

/// How a metric's points fold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fold {
    Gauge,
    Cumulative,
    Delta,
    Unsupported,
}

/// Per-batch tallies.
#[derive(Debug, Default)]
struct Tally {
    admitted: u64,
    overflowed: u64,
    unsupported: u64,
    overflow_limit: u64,
}

/// The `cardinality_limit` processor.
#[derive(Debug)]
pub struct CardinalityLimit {
    limits: Vec<(Vec<MetricGlob>, usize)>,
    max_overflow: usize,
    window: Duration,
    /// The current window's number.
    current: u64,
    metrics: HashMap<String, MetricState>,
    /// Overflowed cumulative series tracked, over all metrics.
    overflow_members: usize,
    ident: Identity,
    keys: Vec<Key>,
    series: Gauge,
    admitted: Counter,
    overflowed: Counter,
    unsupported: Counter,
    overflow_limit: Counter,
}

impl CardinalityLimit {
    /// A processor for a validated `config`.
    pub fn new(config: &Config) -> Self {
        Self {
            limits: config
                .limits
                .iter()
                .map(|l| {
                    (
                        l.metrics.iter().map(|m| MetricGlob::new(m)).collect(),
                        l.max_series,
                    )
                })
                .collect(),
            max_overflow: config.max_overflow_series,
            window: config.window,
            current: 0,
            metrics: HashMap::new(),
            overflow_members: 0,
            ident: Identity::default(),
            keys: Vec::new(),
            series: Gauge::default(),
            admitted: Counter::default(),
            overflowed: Counter::default(),
            unsupported: Counter::default(),
            overflow_limit: Counter::default(),
        }
    }

    /// Registers `vla_collector_processor_cardinality_limit_data_points_total{processor,
    /// result=admitted|overflowed|unsupported|overflow_limit}` (points of limited metrics) and
    /// `vla_collector_processor_cardinality_limit_series{processor, pipeline}` (admitted series).
    pub fn with_telemetry(mut self, id: &str, pipeline: &str, telemetry: &SelfMetrics) -> Self {
        let points = |result| {
            telemetry.counter(
                "vla_collector_processor_cardinality_limit_data_points_total",
                "Data points of limited metrics seen by cardinality_limit, by result (admitted, \
                 overflowed into the overflow series, unsupported past the limit, \
                 overflow_limit: dropped past max_overflow_series).",
                &[("processor", id), ("result", result)],
            )
        };
        self.admitted = points("admitted");
        self.overflowed = points("overflowed");
        self.unsupported = points("unsupported");
        self.overflow_limit = points("overflow_limit");
        self.series = telemetry.gauge(
            "vla_collector_processor_cardinality_limit_series",
            "Active series of limited metrics that cardinality_limit admitted.",
            &[("processor", id), ("pipeline", pipeline)],
        );
        self
    }

    fn limit_of(&self, name: &str) -> Option<usize> {
        self.limits
            .iter()
            .find(|(globs, _)| globs.iter().any(|g| g.matches(name)))
            .map(|(_, max)| *max)
    }

    /// Applies the limit to one metric's points.
    fn metric(&mut self, scope: Key, m: &mut Metric, max: usize, t: &mut Tally) {
        const CUMULATIVE: i32 = AggregationTemporality::Cumulative as i32;
        const DELTA: i32 = AggregationTemporality::Delta as i32;
        let (kind, monotonic, fold) = match &m.data {
            Some(metric::Data::Gauge(_)) => (0u8, false, Fold::Gauge),
            Some(metric::Data::Sum(s)) => (
                1,
                s.is_monotonic,
                match s.aggregation_temporality {
                    CUMULATIVE => Fold::Cumulative,
                    DELTA => Fold::Delta,
                    _ => Fold::Unsupported,
                },
            ),
            Some(metric::Data::Histogram(h)) => (
                2,
                false,
                match h.aggregation_temporality {
                    CUMULATIVE => Fold::Cumulative,
                    DELTA => Fold::Delta,
                    _ => Fold::Unsupported,
                },
            ),
            Some(metric::Data::ExponentialHistogram(_)) => (3, false, Fold::Unsupported),
            Some(metric::Data::Summary(_)) => (4, false, Fold::Unsupported),
            None => return,
        };
        let prefix = self.ident.metric(scope, &m.name, &m.unit, kind, monotonic);
        // The points' keys, in order.
        let Self {
            ident,
            keys,
            metrics,
            current,
            ..
        } = self;
        keys.clear();
        match &m.data {
            Some(metric::Data::Gauge(g)) => keys.extend(
                g.data_points
                    .iter()
                    .map(|p| ident.point(prefix, &p.attributes)),
            ),
            Some(metric::Data::Sum(s)) => keys.extend(
                s.data_points
                    .iter()
                    .map(|p| ident.point(prefix, &p.attributes)),
            ),
            Some(metric::Data::Histogram(h)) => keys.extend(
                h.data_points
                    .iter()
                    .map(|p| ident.point(prefix, &p.attributes)),
            ),
            Some(metric::Data::ExponentialHistogram(h)) => keys.extend(
                h.data_points
                    .iter()
                    .map(|p| ident.point(prefix, &p.attributes)),
            ),
            Some(metric::Data::Summary(s)) => keys.extend(
                s.data_points
                    .iter()
                    .map(|p| ident.point(prefix, &p.attributes)),
            ),
            None => {}
        }
        let state = metrics.entry_ref(m.name.as_str()).or_default();
        // Which points overflow: a series already in the overflow series stays there.
        let group = state.groups.get(&prefix);
        let mut over = Vec::with_capacity(keys.len());
        for k in keys.iter() {
            let in_overflow = group.is_some_and(|g| g.members.contains_key(k));
            if !in_overflow {
                if let Some(w) = state.admitted.get_mut(k) {
                    *w = *current;
                    over.push(false);
                    continue;
                }
                if state.admitted.len() < max {
                    state.admitted.insert(*k, *current);
                    over.push(false);
                    continue;
                }
            }
            over.push(true);
        }
        t.admitted += over.iter().filter(|o| !**o).count() as u64;
        if !over.iter().any(|o| *o) {
            return;
        }
        let over_keys: Vec<Key> = keys
            .iter()
            .zip(&over)
            .filter(|(_, o)| **o)
            .map(|(k, _)| *k)
            .collect();
        let window = *current;
        let group = state.groups.entry(prefix).or_default();
        // Overflow members the limit still allows; what folding adds is counted after.
        let budget = self.max_overflow.saturating_sub(self.overflow_members);
        let before = group.members.len();
        match &mut m.data {
            Some(metric::Data::Gauge(g)) => {
                let taken = take(&mut g.data_points, &over);
                t.overflowed += taken.len() as u64;
                if let Some(p) = fold_gauge(taken) {
                    g.data_points.push(p);
                }
            }
            Some(metric::Data::Sum(s)) if fold != Fold::Unsupported => {
                let taken = take(&mut s.data_points, &over);
                let p = fold_numbers(group, taken, &over_keys, fold, window, t, budget);
                s.data_points.extend(p);
            }
            Some(metric::Data::Histogram(h)) if fold != Fold::Unsupported => {
                let taken = take(&mut h.data_points, &over);
                let p = fold_hists(group, taken, &over_keys, fold, window, t, budget);
                h.data_points.extend(p);
            }
            Some(metric::Data::Sum(s)) => {
                t.unsupported += take(&mut s.data_points, &over).len() as u64
            }
            Some(metric::Data::Histogram(h)) => {
                t.unsupported += take(&mut h.data_points, &over).len() as u64
            }
            Some(metric::Data::ExponentialHistogram(h)) => {
                t.unsupported += take(&mut h.data_points, &over).len() as u64
            }
            Some(metric::Data::Summary(s)) => {
                t.unsupported += take(&mut s.data_points, &over).len() as u64
            }
            None => {}
        }
        self.overflow_members += group.members.len() - before;
    }

    /// Ends the current window: forgets series not seen in it.
    fn end_window(&mut self) {
        let current = self.current;
        let mut members = 0;
        self.metrics.retain(|_, st| {
            st.admitted.retain(|_, w| *w == current);
            st.groups.retain(|_, g| {
                g.members.retain(|_, m| m.seen == current);
                members += g.members.len();
                !g.members.is_empty()
            });
            !st.admitted.is_empty() || !st.groups.is_empty()
        });
        self.overflow_members = members;
        self.current += 1;
        self.series.set(self.admitted_series() as i64);
    }

    fn admitted_series(&self) -> usize {
        self.metrics.values().map(|s| s.admitted.len()).sum()
    }
}

/// Removes the points marked in `over`, in order.
fn take<P: Default>(points: &mut Vec<P>, over: &[bool]) -> Vec<P> {
    let mut taken = Vec::new();
    let mut i = 0;
    points.retain_mut(|p| {
        let o = over.get(i).copied().unwrap_or(false);
        i += 1;
        if o {
            taken.push(std::mem::take(p));
        }
        !o
    });
    taken
}

fn overflow_attrs() -> Vec<KeyValue> {
    let mut attrs = Vec::with_capacity(1);
    vla_pipeline::upsert_str(&mut attrs, OVERFLOW_KEY, "true");
    attrs
}

fn number(p: &NumberDataPoint) -> Option<f64> {
    if p.flags & NO_RECORDED_VALUE != 0 {
        return None;
    }
    match p.value? {
        Value::AsInt(i) => Some(i as f64),
        Value::AsDouble(d) => Some(d),
    }
}

/// The last value of the batch's overflowed gauge points.
fn fold_gauge(taken: Vec<NumberDataPoint>) -> Option<NumberDataPoint> {
    let last = taken
        .into_iter()
        .filter(|p| number(p).is_some())
        .max_by_key(|p| p.time_unix_nano)?;
    Some(NumberDataPoint {
        attributes: overflow_attrs(),
        exemplars: Vec::new(),
        ..last
    })
}

/// The overflow sum: over every member's latest point (cumulative), or over the batch (delta).
#[allow(clippy::too_many_arguments)]
fn fold_numbers(
    group: &mut Group,
    taken: Vec<NumberDataPoint>,
    keys: &[Key],
    fold: Fold,
    window: u64,
    t: &mut Tally,
    room: usize,
) -> Option<NumberDataPoint> {
    let (mut start, mut time, mut total) = (u64::MAX, 0u64, 0f64);
    let mut any = false;
    let mut room = room;
    for (p, k) in taken.iter().zip(keys) {
        let Some(v) = number(p) else { continue };
        if fold == Fold::Cumulative {
            if !group.members.contains_key(k) {
                if room == 0 {
                    t.overflow_limit += 1;
                    continue;
                }
                room -= 1;
            }
            group.members.insert(
                *k,
                Member {
                    start: p.start_time_unix_nano,
                    time: p.time_unix_nano,
                    seen: window,
                    val: Val::Num(v),
                },
            );
        } else {
            total += v;
            start = start.min(p.start_time_unix_nano);
        }
        time = time.max(p.time_unix_nano);
        t.overflowed += 1;
        any = true;
    }
    if !any {
        return None;
    }
    if fold == Fold::Cumulative {
        total = 0.0;
        for m in group.members.values() {
            if let Val::Num(v) = m.val {
                total += v;
            }
            start = start.min(m.start);
            time = time.max(m.time);
        }
    }
    Some(NumberDataPoint {
        attributes: overflow_attrs(),
        start_time_unix_nano: start,
        time_unix_nano: time,
        value: Some(Value::AsDouble(total)),
        ..Default::default()
    })
}

/// The overflow histogram, as [`fold_numbers`]; points whose bounds differ from the overflow
/// series' are `unsupported`.
#[allow(clippy::too_many_arguments)]
fn fold_hists(
    group: &mut Group,
    taken: Vec<HistogramDataPoint>,
    keys: &[Key],
    fold: Fold,
    window: u64,
    t: &mut Tally,
    room: usize,
) -> Option<HistogramDataPoint> {
    let (mut start, mut time) = (u64::MAX, 0u64);
    let (mut room, mut any) = (room, false);
    let mut batch: Option<(u64, f64, Vec<u64>)> = None;
    for (p, k) in taken.iter().zip(keys) {
        if p.flags & NO_RECORDED_VALUE != 0 {
            continue;
        }
        let bounds = group
            .bounds
            .get_or_insert_with(|| p.explicit_bounds.clone());
        if *bounds != p.explicit_bounds || p.bucket_counts.len() != bounds.len() + 1 {
            t.unsupported += 1;
            continue;
        }
        if fold == Fold::Cumulative {
            if !group.members.contains_key(k) {
                if room == 0 {
                    t.overflow_limit += 1;
                    continue;
                }
                room -= 1;
            }
            group.members.insert(
                *k,
                Member {
                    start: p.start_time_unix_nano,
                    time: p.time_unix_nano,
                    seen: window,
                    val: Val::Hist {
                        count: p.count,
                        sum: p.sum.unwrap_or(0.0),
                        buckets: p.bucket_counts.clone(),
                    },
                },
            );
        } else {
            let b = batch.get_or_insert_with(|| (0, 0.0, vec![0; p.bucket_counts.len()]));
            add_hist(b, p.count, p.sum.unwrap_or(0.0), &p.bucket_counts);
            start = start.min(p.start_time_unix_nano);
        }
        time = time.max(p.time_unix_nano);
        t.overflowed += 1;
        any = true;
    }
    if !any {
        return None;
    }
    let bounds = group.bounds.clone().unwrap_or_default();
    if fold == Fold::Cumulative {
        let mut b = (0, 0.0, vec![0; bounds.len() + 1]);
        for m in group.members.values() {
            if let Val::Hist {
                count,
                sum,
                buckets,
            } = &m.val
            {
                add_hist(&mut b, *count, *sum, buckets);
            }
            start = start.min(m.start);
            time = time.max(m.time);
        }
        batch = Some(b);
    }
    let (count, sum, bucket_counts) = batch?;
    Some(HistogramDataPoint {
        attributes: overflow_attrs(),
        start_time_unix_nano: start,
        time_unix_nano: time,
        count,
        sum: Some(sum),
        bucket_counts,
        explicit_bounds: bounds,
        ..Default::default()
    })
}

fn add_hist(into: &mut (u64, f64, Vec<u64>), count: u64, sum: f64, buckets: &[u64]) {
    into.0 += count;
    into.1 += sum;
    for (a, b) in into.2.iter_mut().zip(buckets) {
        *a += b;
    }
}

impl Processor for CardinalityLimit {
    fn process(&mut self, batch: &mut MetricBatch) {
        let limited = batch
            .resource_metrics()
            .iter()
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .any(|m| self.limit_of(&m.name).is_some());
        if !limited {
            return;
        }
        let mut t = Tally::default();
        {
            let mut rms = batch.resource_metrics_mut();
            for rm in rms.iter_mut() {
                let resource = self.ident.resource(rm.resource.as_ref());
                for sm in &mut rm.scope_metrics {
                    let scope = self.ident.scope(resource, sm.scope.as_ref());
                    for m in &mut sm.metrics {
                        if let Some(max) = self.limit_of(&m.name) {
                            self.metric(scope, m, max, &mut t);
                        }
                    }
                    sm.metrics
                        .retain(|m| vla_pipeline::metric_data_points(m) > 0);
                }
                rm.scope_metrics.retain(|sm| !sm.metrics.is_empty());
            }
            rms.retain(|rm| !rm.scope_metrics.is_empty());
        }
        self.admitted.add(t.admitted);
        self.overflowed.add(t.overflowed);
        self.unsupported.add(t.unsupported);
        self.overflow_limit.add(t.overflow_limit);
        self.series.set(self.admitted_series() as i64);
    }

    fn flush_interval(&self) -> Option<Duration> {
        Some(self.window)
    }

    fn flush(&mut self, _now: SystemTime) -> Option<MetricBatch> {
        self.end_window();
        None
    }
}

impl vla_pipeline::registry::Component for CardinalityLimit {
    const TYPE: &'static str = TYPE;
    const EXAMPLE: &'static str = "\
window: 1h
max_overflow_series: 100000
limits:
  - { metrics: [\"vla.customer.*\"], max_series: 1000 }
  - { metrics: [\"*\"], max_series: 10000 }
";
    type Config = Config;

    fn validate(config: &Config, path: &str) -> Vec<ConfigProblem> {
        config.validate(path)
    }
}

/// One instance per pipeline.
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
        let p =
            CardinalityLimit::new(&self.config).with_telemetry(&self.id, pipeline, &self.telemetry);
        Ok(vla_pipeline::runner::Stage::Process(Box::new(p)))
    }
}

impl vla_pipeline::registry::ProcessorType for CardinalityLimit {
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
