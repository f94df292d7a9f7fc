//! The `aggregate` processor: stream aggregation. Points of the chosen metrics are rolled up
//! by a subset of their labels (`group_by`) or without some (`without`), and the aggregates
//! are emitted every `interval` (as a batch that continues through the processors after this
//! one); the input points are dropped unless `keep_input`. Typical use: per-customer request
//! counts rolled up to per-tier series for long-term storage.
//!
//! - **Across resources.** By default each resource (each API instance) is aggregated on its
//!   own. With `resource_attributes`, resources that agree on those attributes are rolled up
//!   together and the aggregates' resource carries only them: `[service.name]` sums every
//!   instance of a service (inputs stay distinct series, so each instance's resets are read
//!   on their own).
//!
//! - **Counters** (monotonic sums, cumulative or delta): a running total of the inputs'
//!   increases, read as `increase()` does (see `rollup.rs`), so the output stays monotonic
//!   across input resets and series that start or stop mid-interval; emitted every interval
//!   as a cumulative counter that started when the group first appeared.
//! - **Gauges** (and non-monotonic sums): per interval, `last`, `min`, `max`, `avg`, `sum`,
//!   `count` as chosen by `outputs` (default `[last]`); `last` keeps the metric's name, the
//!   others become `<name>.<output>`. A group with no point in an interval emits nothing.
//! - **Histograms** (explicit buckets, cumulative or delta): bucket-wise running totals of the
//!   increases, like counters; an input whose bounds differ from its group's is dropped and
//!   counted (`bounds_mismatch`).
//! - Exponential histograms and summaries of a chosen metric pass through (`unsupported`).
//!
//! State is in memory: a restart starts the totals over (a reset Prometheus handles). Input
//! series and groups not seen for five intervals are forgotten.
//!
//! ```yaml
//! processors:
//!   aggregate/tiers:
//!     interval: 1m
//!     keep_input: false
//!     resource_attributes: [service.name, deployment.environment]   # roll instances up
//!     rules:
//!       - { metrics: ["vla.customer.requests"], group_by: [tier, model] }
//!       - { metrics: ["vla.inference.queue.depth"], without: [worker], outputs: [max, avg] }
//! ```

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hashbrown::HashMap;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde::Deserialize;
use vla_pipeline::config::ConfigProblem;
use vla_pipeline::self_metrics::{Counter, Gauge as SelfGauge};
use vla_pipeline::{ComponentId, MetricBatch, Processor, SelfMetrics};

use crate::identity::{Identity, Key};
use crate::pattern::MetricGlob;
use crate::rollup::{Last, increase};

/// The config `type` of this processor.
pub const TYPE: &str = "aggregate";
/// The scope of the emitted aggregates.
pub const SCOPE: &str = "vla-collector/aggregate";
/// Input series and groups not seen for this many intervals are forgotten.
const STALE_INTERVALS: u32 = 5;

/// The `aggregate` processor's settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How often aggregates are emitted.
    #[serde(
        default = "default_interval",
        deserialize_with = "vla_pipeline::config::duration"
    )]
    pub interval: Duration,
    /// Whether the input points pass on as well.
    #[serde(default)]
    pub keep_input: bool,
    /// The resource attributes the aggregates keep; resources that agree on them are rolled
    /// up together. Unset: every resource on its own, with all its attributes.
    #[serde(default)]
    pub resource_attributes: Option<Vec<String>>,
    /// The rules; the first whose `metrics` match a metric applies.
    pub rules: Vec<Rule>,
}

fn default_interval() -> Duration {
    Duration::from_secs(60)
}

/// One aggregation rule.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Metric names (OpenTelemetry names; exact or `*` globs).
    pub metrics: Vec<String>,
    /// The attributes kept; the others are aggregated away.
    #[serde(default)]
    pub group_by: Option<Vec<String>>,
    /// The attributes aggregated away; the others are kept.
    #[serde(default)]
    pub without: Option<Vec<String>>,
    /// For gauges: what each interval emits (default `[last]`).
    #[serde(default)]
    pub outputs: Option<Vec<GaugeOutput>>,
}

/// A gauge aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GaugeOutput {
    /// The latest value.
    Last,
    /// The smallest value.
    Min,
    /// The largest value.
    Max,
    /// The mean.
    Avg,
    /// The sum of the values.
    Sum,
    /// How many values.
    Count,
}

impl GaugeOutput {
    fn suffix(self) -> &'static str {
        match self {
            GaugeOutput::Last => "",
            GaugeOutput::Min => ".min",
            GaugeOutput::Max => ".max",
            GaugeOutput::Avg => ".avg",
            GaugeOutput::Sum => ".sum",
            GaugeOutput::Count => ".count",
        }
    }
}

impl Rule {
    /// The attribute keys this rule groups by (`None` with `without`).
    pub fn group_by_keys(&self) -> Option<&[String]> {
        self.group_by.as_deref()
    }
}

impl Config {
    /// Checks the settings without I/O; problems are reported under `path`.
    pub fn validate(&self, path: &str) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.interval < Duration::from_secs(1) {
            problems.push(ConfigProblem::new(
                format!("{path}.interval"),
                "must be at least 1s, e.g. 1m",
            ));
        }
        if self.rules.is_empty() {
            problems.push(ConfigProblem::new(
                format!("{path}.rules"),
                "must list at least one rule, e.g. { metrics: [\"vla.customer.requests\"], group_by: [tier] }",
            ));
        }
        for (i, r) in self.rules.iter().enumerate() {
            let at = format!("{path}.rules[{i}]");
            problems.extend(MetricGlob::check_list(&format!("{at}.metrics"), &r.metrics));
            match (&r.group_by, &r.without) {
                (Some(_), Some(_)) => problems.push(ConfigProblem::new(
                    at.clone(),
                    "set group_by or without, not both",
                )),
                (None, None) => problems.push(ConfigProblem::new(
                    at.clone(),
                    "needs group_by (the labels kept) or without (the labels aggregated away)",
                )),
                _ => {}
            }
            if r.outputs.as_ref().is_some_and(Vec::is_empty) {
                problems.push(ConfigProblem::new(
                    format!("{at}.outputs"),
                    "must list at least one of last, min, max, avg, sum, count",
                ));
            }
        }
        problems
    }
}

/// A rule, compiled.
#[derive(Debug)]
struct CompiledRule {
    metrics: Vec<MetricGlob>,
    group_by: Option<Vec<String>>,
    without: Vec<String>,
    outputs: Arc<[GaugeOutput]>,
}

/// What a group holds.
#[derive(Debug, Clone)]
enum Agg {
    Counter {
        total: f64,
    },
    Gauge {
        outputs: Arc<[GaugeOutput]>,
        last: Option<(u64, f64)>,
        min: f64,
        max: f64,
        sum: f64,
        count: u64,
    },
    Hist {
        bounds: Vec<f64>,
        count: u64,
        sum: f64,
        buckets: Vec<u64>,
    },
}

/// One output series.
#[derive(Debug, Clone)]
struct Group {
    resource: Key,
    name: String,
    unit: String,
    description: String,
    attrs: Vec<KeyValue>,
    start: u64,
    seen: u64,
    agg: Agg,
}

/// A histogram input series' previous point.
#[derive(Debug, Clone)]
struct LastHist {
    count: u64,
    sum: f64,
    buckets: Vec<u64>,
    start: u64,
    seen: u64,
}

/// The `aggregate` processor.
#[derive(Debug)]
pub struct Aggregate {
    rules: Vec<CompiledRule>,
    interval: Duration,
    keep_input: bool,
    resource_keys: Option<Vec<String>>,
    started: u64,
    counters: HashMap<Key, Last>,
    hists: HashMap<Key, LastHist>,
    groups: HashMap<Key, Group>,
    resources: HashMap<Key, Option<Resource>>,
    ident: Identity,
    aggregated: Counter,
    unsupported: Counter,
    bounds_mismatch: Counter,
    group_count: SelfGauge,
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn number(p: &NumberDataPoint) -> Option<f64> {
    if p.flags & 1 != 0 {
        return None;
    }
    match p.value? {
        Value::AsInt(i) => Some(i as f64),
        Value::AsDouble(d) if d.is_finite() => Some(d),
        Value::AsDouble(_) => None,
    }
}

impl Aggregate {
    /// A processor for a validated `config`.
    pub fn new(config: &Config) -> Self {
        Self {
            rules: config
                .rules
                .iter()
                .map(|r| CompiledRule {
                    metrics: r.metrics.iter().map(|m| MetricGlob::new(m)).collect(),
                    group_by: r.group_by.clone(),
                    without: r.without.clone().unwrap_or_default(),
                    outputs: r
                        .outputs
                        .clone()
                        .unwrap_or_else(|| vec![GaugeOutput::Last])
                        .into(),
                })
                .collect(),
            interval: config.interval,
            keep_input: config.keep_input,
            resource_keys: config.resource_attributes.clone(),
            started: unix_nanos(SystemTime::now()),
            counters: HashMap::new(),
            hists: HashMap::new(),
            groups: HashMap::new(),
            resources: HashMap::new(),
            ident: Identity::default(),
            aggregated: Counter::default(),
            unsupported: Counter::default(),
            bounds_mismatch: Counter::default(),
            group_count: SelfGauge::default(),
        }
    }

    /// Counts series as if the processor had started at `nanos` (tests).
    pub fn started_at(mut self, nanos: u64) -> Self {
        self.started = nanos;
        self
    }

    /// Registers `vla_collector_processor_aggregate_data_points_total{processor,
    /// result=aggregated|unsupported|bounds_mismatch}` and
    /// `vla_collector_processor_aggregate_groups{processor, pipeline}`.
    pub fn with_telemetry(mut self, id: &str, pipeline: &str, telemetry: &SelfMetrics) -> Self {
        let c = |result| {
            telemetry.counter(
                "vla_collector_processor_aggregate_data_points_total",
                "Data points of aggregated metrics, by result (aggregated; unsupported: \
                 exponential histograms and summaries, passed on; bounds_mismatch: dropped).",
                &[("processor", id), ("result", result)],
            )
        };
        self.aggregated = c("aggregated");
        self.unsupported = c("unsupported");
        self.bounds_mismatch = c("bounds_mismatch");
        self.group_count = telemetry.gauge(
            "vla_collector_processor_aggregate_groups",
            "Output series the aggregate processor holds.",
            &[("processor", id), ("pipeline", pipeline)],
        );
        self
    }

    fn rule_of(&self, name: &str) -> Option<usize> {
        self.rules
            .iter()
            .position(|r| r.metrics.iter().any(|g| g.matches(name)))
    }

    /// Whether `rule` keeps attribute `kv` in its groups.
    fn keeps(rule: &CompiledRule, kv: &KeyValue) -> bool {
        match &rule.group_by {
            Some(keys) => keys.contains(&kv.key),
            None => !rule.without.contains(&kv.key),
        }
    }

    /// Finds or creates the group of a point with `attrs` under `prefix` (the resource and
    /// metric); only a new group copies the kept attributes. `agg` makes its aggregate.
    #[allow(clippy::too_many_arguments)]
    fn group(
        &mut self,
        resource: Key,
        prefix: Key,
        m: &Metric,
        rule: usize,
        attrs: &[KeyValue],
        now: u64,
        agg: impl FnOnce() -> Agg,
    ) -> &mut Group {
        let r = &self.rules[rule];
        let key = self
            .ident
            .point_where(prefix, attrs, |kv| Self::keeps(r, kv));
        let g = self.groups.entry(key).or_insert_with(|| Group {
            resource,
            name: m.name.clone(),
            unit: m.unit.clone(),
            description: m.description.clone(),
            attrs: attrs
                .iter()
                .filter(|kv| Self::keeps(r, kv))
                .cloned()
                .collect(),
            start: now,
            seen: now,
            agg: agg(),
        });
        g.seen = now;
        g
    }

    /// Aggregates one metric's points into the groups under `resource` (the aggregates'
    /// resource), its input series identified under `scope` (the input's own); returns
    /// whether the metric is kept in the batch.
    fn metric(&mut self, resource: Key, scope: Key, m: &mut Metric, rule: usize, now: u64) -> bool {
        const DELTA: i32 = AggregationTemporality::Delta as i32;
        let mut taken = 0u64;
        match &m.data {
            Some(metric::Data::Sum(s)) if s.is_monotonic => {
                let delta = s.aggregation_temporality == DELTA;
                let prefix = self.ident.metric(scope, &m.name, &m.unit, 1, true);
                let groups = self.ident.metric(resource, &m.name, &m.unit, 1, false);
                for p in &s.data_points {
                    let Some(v) = number(p) else { continue };
                    let inc = if delta {
                        v.max(0.0)
                    } else {
                        let key = self.ident.point(prefix, &p.attributes);
                        let last = Last {
                            value: v,
                            start: p.start_time_unix_nano,
                            seen: now,
                        };
                        increase(
                            self.counters.insert(key, last),
                            v,
                            p.start_time_unix_nano,
                            self.started,
                        )
                    };
                    let agg = || Agg::Counter { total: 0.0 };
                    if let Agg::Counter { total } = &mut self
                        .group(resource, groups, m, rule, &p.attributes, now, agg)
                        .agg
                    {
                        *total += inc;
                    }
                    taken += 1;
                }
            }
            Some(metric::Data::Gauge(Gauge {
                data_points: points,
            }))
            | Some(metric::Data::Sum(Sum {
                data_points: points,
                ..
            })) => {
                let outputs = Arc::clone(&self.rules[rule].outputs);
                let groups = self.ident.metric(resource, &m.name, &m.unit, 0, false);
                for p in points {
                    let Some(v) = number(p) else { continue };
                    let outputs = Arc::clone(&outputs);
                    let g = self.group(resource, groups, m, rule, &p.attributes, now, || {
                        Agg::Gauge {
                            outputs,
                            last: None,
                            min: f64::INFINITY,
                            max: f64::NEG_INFINITY,
                            sum: 0.0,
                            count: 0,
                        }
                    });
                    if let Agg::Gauge {
                        last,
                        min,
                        max,
                        sum,
                        count,
                        ..
                    } = &mut g.agg
                    {
                        if last.is_none_or(|(t, _)| p.time_unix_nano >= t) {
                            *last = Some((p.time_unix_nano, v));
                        }
                        *min = min.min(v);
                        *max = max.max(v);
                        *sum += v;
                        *count += 1;
                    }
                    taken += 1;
                }
            }
            Some(metric::Data::Histogram(h)) => {
                let delta = h.aggregation_temporality == DELTA;
                let prefix = self.ident.metric(scope, &m.name, &m.unit, 2, false);
                let groups = self.ident.metric(resource, &m.name, &m.unit, 2, false);
                let mut mismatched = 0u64;
                for p in &h.data_points {
                    if p.flags & 1 != 0 || p.bucket_counts.len() != p.explicit_bounds.len() + 1 {
                        continue;
                    }
                    let (count, sum, buckets) = if delta {
                        (p.count, p.sum.unwrap_or(0.0), p.bucket_counts.clone())
                    } else {
                        self.hist_increase(prefix, p, now)
                    };
                    let n = p.bucket_counts.len();
                    let g = self.group(resource, groups, m, rule, &p.attributes, now, || {
                        Agg::Hist {
                            bounds: p.explicit_bounds.clone(),
                            count: 0,
                            sum: 0.0,
                            buckets: vec![0; n],
                        }
                    });
                    if let Agg::Hist {
                        bounds,
                        count: c,
                        sum: s,
                        buckets: b,
                    } = &mut g.agg
                    {
                        if *bounds != p.explicit_bounds {
                            mismatched += 1;
                            continue;
                        }
                        *c += count;
                        *s += sum;
                        for (a, x) in b.iter_mut().zip(&buckets) {
                            *a += x;
                        }
                    }
                    taken += 1;
                }
                self.bounds_mismatch.add(mismatched);
            }
            Some(metric::Data::ExponentialHistogram(h)) => {
                self.unsupported.add(h.data_points.len() as u64);
                return true;
            }
            Some(metric::Data::Summary(s)) => {
                self.unsupported.add(s.data_points.len() as u64);
                return true;
            }
            None => return true,
        }
        self.aggregated.add(taken);
        self.keep_input
    }

    /// A cumulative histogram point's increase since its series' previous point.
    fn hist_increase(
        &mut self,
        prefix: Key,
        p: &HistogramDataPoint,
        now: u64,
    ) -> (u64, f64, Vec<u64>) {
        let key = self.ident.point(prefix, &p.attributes);
        let sum = p.sum.unwrap_or(0.0);
        let prev = self.hists.insert(
            key,
            LastHist {
                count: p.count,
                sum,
                buckets: p.bucket_counts.clone(),
                start: p.start_time_unix_nano,
                seen: now,
            },
        );
        match prev {
            None if p.start_time_unix_nano < self.started => {
                (0, 0.0, vec![0; p.bucket_counts.len()])
            }
            Some(l)
                if p.count >= l.count
                    && p.start_time_unix_nano <= l.start
                    && l.buckets.len() == p.bucket_counts.len() =>
            {
                let buckets = p
                    .bucket_counts
                    .iter()
                    .zip(&l.buckets)
                    .map(|(a, b)| a.saturating_sub(*b))
                    .collect();
                (p.count - l.count, sum - l.sum, buckets)
            }
            _ => (p.count, sum, p.bucket_counts.clone()),
        }
    }

    /// The aggregates as OTLP data, at `time`; resets the gauges' interval statistics.
    fn emit(&mut self, time: u64) -> Vec<ResourceMetrics> {
        let mut by_resource: HashMap<Key, Vec<Metric>> = HashMap::new();
        for g in self.groups.values_mut() {
            let metrics = by_resource.entry(g.resource).or_default();
            let mut push = |name: String, unit: &str, data: metric::Data| match metrics
                .iter_mut()
                .find(|m| m.name == name)
            {
                Some(m) => match (&mut m.data, data) {
                    (Some(metric::Data::Sum(a)), metric::Data::Sum(b)) => {
                        a.data_points.extend(b.data_points)
                    }
                    (Some(metric::Data::Gauge(a)), metric::Data::Gauge(b)) => {
                        a.data_points.extend(b.data_points)
                    }
                    (Some(metric::Data::Histogram(a)), metric::Data::Histogram(b)) => {
                        a.data_points.extend(b.data_points)
                    }
                    _ => {}
                },
                None => metrics.push(Metric {
                    name,
                    description: g.description.clone(),
                    unit: unit.to_owned(),
                    data: Some(data),
                    ..Default::default()
                }),
            };
            let point = |v: f64| NumberDataPoint {
                attributes: g.attrs.clone(),
                start_time_unix_nano: g.start,
                time_unix_nano: time,
                value: Some(Value::AsDouble(v)),
                ..Default::default()
            };
            match &mut g.agg {
                Agg::Counter { total } => push(
                    g.name.clone(),
                    &g.unit,
                    metric::Data::Sum(Sum {
                        data_points: vec![point(*total)],
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    }),
                ),
                Agg::Gauge {
                    outputs,
                    last,
                    min,
                    max,
                    sum,
                    count,
                } => {
                    if *count > 0 {
                        for o in outputs.iter() {
                            let v = match o {
                                GaugeOutput::Last => last.map_or(0.0, |(_, v)| v),
                                GaugeOutput::Min => *min,
                                GaugeOutput::Max => *max,
                                GaugeOutput::Avg => *sum / *count as f64,
                                GaugeOutput::Sum => *sum,
                                GaugeOutput::Count => *count as f64,
                            };
                            let unit = if *o == GaugeOutput::Count {
                                ""
                            } else {
                                g.unit.as_str()
                            };
                            push(
                                format!("{}{}", g.name, o.suffix()),
                                unit,
                                metric::Data::Gauge(Gauge {
                                    data_points: vec![point(v)],
                                }),
                            );
                        }
                    }
                    *last = None;
                    (*min, *max, *sum, *count) = (f64::INFINITY, f64::NEG_INFINITY, 0.0, 0);
                }
                Agg::Hist {
                    bounds,
                    count,
                    sum,
                    buckets,
                } => push(
                    g.name.clone(),
                    &g.unit,
                    metric::Data::Histogram(Histogram {
                        data_points: vec![HistogramDataPoint {
                            attributes: g.attrs.clone(),
                            start_time_unix_nano: g.start,
                            time_unix_nano: time,
                            count: *count,
                            sum: Some(*sum),
                            bucket_counts: buckets.clone(),
                            explicit_bounds: bounds.clone(),
                            ..Default::default()
                        }],
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    }),
                ),
            }
        }
        by_resource
            .into_iter()
            .filter(|(_, metrics)| !metrics.is_empty())
            .map(|(key, mut metrics)| {
                metrics.sort_by(|a, b| a.name.cmp(&b.name));
                ResourceMetrics {
                    resource: self.resources.get(&key).cloned().flatten(),
                    scope_metrics: vec![ScopeMetrics {
                        scope: Some(InstrumentationScope {
                            name: SCOPE.to_owned(),
                            ..Default::default()
                        }),
                        metrics,
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                }
            })
            .collect()
    }
}

impl Processor for Aggregate {
    fn process(&mut self, batch: &mut MetricBatch) {
        let any = batch
            .resource_metrics()
            .iter()
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .any(|m| self.rule_of(&m.name).is_some());
        if !any {
            return;
        }
        let now = unix_nanos(batch.meta().received_at);
        let mut rms = batch.resource_metrics_mut();
        for rm in rms.iter_mut() {
            let input = self.ident.resource(rm.resource.as_ref());
            let output = match &self.resource_keys {
                None => input,
                Some(keys) => self
                    .ident
                    .resource_where(rm.resource.as_ref(), |kv| keys.contains(&kv.key)),
            };
            for sm in &mut rm.scope_metrics {
                let scope = self.ident.scope(input, sm.scope.as_ref());
                let mut used = false;
                sm.metrics.retain_mut(|m| match self.rule_of(&m.name) {
                    Some(rule) => {
                        used = true;
                        self.metric(output, scope, m, rule, now)
                    }
                    None => true,
                });
                if used && !self.resources.contains_key(&output) {
                    let kept = match &self.resource_keys {
                        None => rm.resource.clone(),
                        Some(keys) => rm.resource.as_ref().map(|r| Resource {
                            attributes: r
                                .attributes
                                .iter()
                                .filter(|kv| keys.contains(&kv.key))
                                .cloned()
                                .collect(),
                            ..Default::default()
                        }),
                    };
                    self.resources.insert(output, kept);
                }
            }
            rm.scope_metrics.retain(|sm| !sm.metrics.is_empty());
        }
        rms.retain(|rm| !rm.scope_metrics.is_empty());
        drop(rms);
        self.group_count.set(self.groups.len() as i64);
    }

    fn flush_interval(&self) -> Option<Duration> {
        Some(self.interval)
    }

    fn flush(&mut self, now: SystemTime) -> Option<MetricBatch> {
        let t = unix_nanos(now);
        let out = self.emit(t);
        let stale = t.saturating_sub((self.interval * STALE_INTERVALS).as_nanos() as u64);
        self.counters.retain(|_, l| l.seen >= stale);
        self.hists.retain(|_, l| l.seen >= stale);
        self.groups.retain(|_, g| g.seen >= stale);
        let live: hashbrown::HashSet<Key> = self.groups.values().map(|g| g.resource).collect();
        self.resources.retain(|k, _| live.contains(k));
        self.group_count.set(self.groups.len() as i64);
        (!out.is_empty()).then(|| MetricBatch::new(TYPE.into(), out).with_received_at(now))
    }
}

impl vla_pipeline::registry::Component for Aggregate {
    const TYPE: &'static str = TYPE;
    const EXAMPLE: &'static str = "\
interval: 1m
keep_input: false
resource_attributes: [service.name, deployment.environment]
rules:
  - { metrics: [\"vla.customer.requests\"], group_by: [tier, model] }
  - { metrics: [\"vla.inference.queue.depth\"], without: [worker], outputs: [max, avg] }
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
        let p = Aggregate::new(&self.config).with_telemetry(&self.id, pipeline, &self.telemetry);
        Ok(vla_pipeline::runner::Stage::Process(Box::new(p)))
    }
}

impl vla_pipeline::registry::ProcessorType for Aggregate {
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
