//! The `usage_revenue` processor (ours): derives `vla.revenue` (`vla_revenue_total{tier}`,
//! and `model` when `by_model`) from request counts × a per-tier, per-model price table, so
//! the Business dashboard works when the API does not emit revenue itself.
//!
//! For each billable point of the `source` counter (cumulative or delta; `match` selects
//! which, by default `status="success"`), the increase since that series' previous point is
//! priced by its `tier` (and `model`) and added to a running total per resource and tier.
//! Increases follow Prometheus' `increase()` (see `rollup.rs`): a reset's new value is the
//! increase; a series first seen after the processor started counts from zero; one already
//! running when the collector started is a baseline, so a restart never counts old requests
//! again.
//! The totals are emitted after each batch that touched them, as a cumulative sum in a scope
//! `vla-collector/usage_revenue` of the same resource.
//!
//! Accuracy: list prices only (no discounts, credits, contracts or refunds); requests the API
//! did not report are not billed; the totals live in memory and start over when the collector
//! restarts (Prometheus reads a reset, which `increase()` handles); tiers missing from the
//! table are not priced (counted `unpriced`). It is an operational estimate, not an invoice.
//!
//! ```yaml
//! processors:
//!   usage_revenue:
//!     source: vla.inference.requests     # default
//!     match: { status: success }         # default; attribute conditions of billable points
//!     by_model: false                    # default; true adds the model label
//!     prices:                            # USD per request: per tier, `default` and per model
//!       free: { default: 0 }
//!       pro: { default: 0.002, pi0-fast: 0.001 }
//!       enterprise: { default: 0.0015 }
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hashbrown::HashMap;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Metric, NumberDataPoint, ScopeMetrics, Sum, metric,
};
use serde::Deserialize;
use vla_pipeline::config::ConfigProblem;
use vla_pipeline::self_metrics::Counter;
use vla_pipeline::{ComponentId, MetricBatch, Processor, SelfMetrics, attr_str};

use crate::identity::{Identity, Key};
use crate::matching::{AttrMatcher, AttrTest, check_attr_matcher};
use crate::rollup::{Last, increase};

/// The config `type` of this processor.
pub const TYPE: &str = "usage_revenue";
/// The metric it emits (`vla_revenue_total` in Prometheus).
pub const REVENUE_METRIC: &str = "vla.revenue";
/// The scope of the emitted metric.
pub const SCOPE: &str = "vla-collector/usage_revenue";
/// An input series not seen for this long is forgotten.
const MAX_STALE: Duration = Duration::from_secs(600);

/// The `usage_revenue` processor's settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The request counter (OpenTelemetry name).
    #[serde(default = "default_source")]
    pub source: String,
    /// Conditions a point must meet to be billed.
    #[serde(default = "default_match", rename = "match")]
    pub r#match: BTreeMap<String, AttrMatcher>,
    /// The attribute holding the tier.
    #[serde(default = "default_tier_key")]
    pub tier_key: String,
    /// The attribute holding the model.
    #[serde(default = "default_model_key")]
    pub model_key: String,
    /// Whether revenue is also split by model.
    #[serde(default)]
    pub by_model: bool,
    /// Tier → (`default` or a model) → USD per request.
    pub prices: BTreeMap<String, BTreeMap<String, f64>>,
}

fn default_source() -> String {
    "vla.inference.requests".to_owned()
}

fn default_match() -> BTreeMap<String, AttrMatcher> {
    BTreeMap::from([(
        "status".to_owned(),
        AttrMatcher::Equals("success".to_owned()),
    )])
}

fn default_tier_key() -> String {
    "tier".to_owned()
}

fn default_model_key() -> String {
    "model".to_owned()
}

impl Config {
    /// Checks the settings without I/O; problems are reported under `path`.
    pub fn validate(&self, path: &str) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.source.trim().is_empty() {
            problems.push(ConfigProblem::new(
                format!("{path}.source"),
                "must name a metric",
            ));
        }
        if self.source == REVENUE_METRIC {
            problems.push(ConfigProblem::new(
                format!("{path}.source"),
                "must not be the revenue metric itself",
            ));
        }
        for (key, m) in &self.r#match {
            check_attr_matcher(key, m, &format!("{path}.match"), &mut problems);
        }
        if self.prices.is_empty() {
            problems.push(ConfigProblem::new(
                format!("{path}.prices"),
                "must price at least one tier, e.g. pro: { default: 0.002 }",
            ));
        }
        for (tier, models) in &self.prices {
            let at = format!("{path}.prices.{tier}");
            if models.is_empty() {
                problems.push(ConfigProblem::new(
                    at.clone(),
                    "must give a `default` price or one per model",
                ));
            }
            for (model, price) in models {
                if !price.is_finite() || *price < 0.0 {
                    problems.push(ConfigProblem::new(
                        format!("{at}.{model}"),
                        format!("must be a price of 0 or more (USD per request), not {price}"),
                    ));
                }
            }
        }
        problems
    }

    fn price(&self, tier: &str, model: Option<&str>) -> Option<f64> {
        let models = self.prices.get(tier)?;
        model
            .and_then(|m| models.get(m))
            .or_else(|| models.get("default"))
            .copied()
    }
}

/// A revenue total.
#[derive(Debug, Clone)]
struct Total {
    usd: f64,
    start: u64,
    time: u64,
    seen: u64,
}

/// The `usage_revenue` processor.
#[derive(Debug)]
pub struct UsageRevenue {
    config: Config,
    tests: Vec<AttrTest>,
    /// When the processor started (ns): series started before it are baselined.
    started: u64,
    last: HashMap<Key, Last>,
    /// By resource key, then (tier, model): the totals.
    totals: HashMap<Key, BTreeMap<(String, String), Total>>,
    ident: Identity,
    scratch: String,
    billed: Counter,
    unpriced: Counter,
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl UsageRevenue {
    /// A processor for a validated `config`; `Err` only when validation was skipped.
    pub fn new(config: &Config) -> Result<Self, String> {
        Ok(Self {
            config: config.clone(),
            tests: config
                .r#match
                .iter()
                .map(|(k, m)| AttrTest::new(k, m))
                .collect::<Result<_, _>>()?,
            started: unix_nanos(SystemTime::now()),
            last: HashMap::new(),
            totals: HashMap::new(),
            ident: Identity::default(),
            scratch: String::new(),
            billed: Counter::default(),
            unpriced: Counter::default(),
        })
    }

    /// Counts series as if the processor had started at `nanos` (tests).
    pub fn started_at(mut self, nanos: u64) -> Self {
        self.started = nanos;
        self
    }

    /// Registers `vla_collector_processor_usage_revenue_data_points_total{processor,
    /// result=billed|unpriced}`.
    pub fn with_telemetry(mut self, id: &ComponentId, telemetry: &SelfMetrics) -> Self {
        let c = |result| {
            telemetry.counter(
                "vla_collector_processor_usage_revenue_data_points_total",
                "Billable request points seen by usage_revenue, by result (billed, unpriced: \
                 a tier or model the price table lacks).",
                &[("processor", id), ("result", result)],
            )
        };
        self.billed = c("billed");
        self.unpriced = c("unpriced");
        self
    }

    /// The increase a point adds (see the module doc).
    fn increase(&mut self, key: Key, p: &NumberDataPoint, delta: bool, now: u64) -> f64 {
        let v = match p.value {
            Some(Value::AsInt(i)) => i as f64,
            Some(Value::AsDouble(d)) if d.is_finite() => d,
            _ => return 0.0,
        };
        if delta {
            return v.max(0.0);
        }
        let prev = self.last.insert(
            key,
            Last {
                value: v,
                start: p.start_time_unix_nano,
                seen: now,
            },
        );
        increase(prev, v, p.start_time_unix_nano, self.started)
    }
}

impl Processor for UsageRevenue {
    fn process(&mut self, batch: &mut MetricBatch) {
        let source = self.config.source.clone();
        let has_source = batch
            .resource_metrics()
            .iter()
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .any(|m| m.name == source);
        if !has_source {
            return;
        }
        let now = unix_nanos(batch.meta().received_at);
        let (mut billed, mut unpriced) = (0u64, 0u64);
        let mut rms = batch.resource_metrics_mut();
        for rm in rms.iter_mut() {
            let resource = self.ident.resource(rm.resource.as_ref());
            let mut touched: Vec<(String, String)> = Vec::new();
            for sm in &rm.scope_metrics {
                let scope = self.ident.scope(resource, sm.scope.as_ref());
                for m in sm.metrics.iter().filter(|m| m.name == source) {
                    let Some(metric::Data::Sum(s)) = &m.data else {
                        continue;
                    };
                    let delta = s.aggregation_temporality == AggregationTemporality::Delta as i32;
                    let prefix = self
                        .ident
                        .metric(scope, &m.name, &m.unit, 1, s.is_monotonic);
                    for p in &s.data_points {
                        if p.flags & 1 != 0
                            || !self
                                .tests
                                .iter()
                                .all(|t| t.matches(&p.attributes, &mut self.scratch))
                        {
                            continue;
                        }
                        let tier = attr_str(&p.attributes, &self.config.tier_key).unwrap_or("");
                        let model = attr_str(&p.attributes, &self.config.model_key);
                        let key = self.ident.point(prefix, &p.attributes);
                        let inc = self.increase(key, p, delta, now);
                        let Some(price) = self.config.price(tier, model) else {
                            unpriced += 1;
                            continue;
                        };
                        billed += 1;
                        let group_model = if self.config.by_model {
                            model.unwrap_or("").to_owned()
                        } else {
                            String::new()
                        };
                        let groups = self.totals.entry(resource).or_default();
                        let g = (tier.to_owned(), group_model);
                        let total = groups.entry(g.clone()).or_insert(Total {
                            usd: 0.0,
                            start: now.min(p.time_unix_nano.max(1)),
                            time: 0,
                            seen: now,
                        });
                        total.usd += inc * price;
                        total.time = total.time.max(p.time_unix_nano).max(total.start);
                        total.seen = now;
                        if !touched.contains(&g) {
                            touched.push(g);
                        }
                    }
                }
            }
            if touched.is_empty() {
                continue;
            }
            let Some(groups) = self.totals.get(&resource) else {
                continue;
            };
            let points = touched
                .iter()
                .filter_map(|g| groups.get(g).map(|t| (g, t)))
                .map(|((tier, model), t)| {
                    let mut attributes = Vec::with_capacity(2);
                    vla_pipeline::upsert_str(&mut attributes, &self.config.tier_key, tier);
                    if self.config.by_model {
                        vla_pipeline::upsert_str(&mut attributes, &self.config.model_key, model);
                    }
                    NumberDataPoint {
                        attributes,
                        start_time_unix_nano: t.start,
                        time_unix_nano: t.time,
                        value: Some(Value::AsDouble(t.usd)),
                        ..Default::default()
                    }
                })
                .collect();
            rm.scope_metrics.push(ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: SCOPE.to_owned(),
                    ..Default::default()
                }),
                metrics: vec![Metric {
                    name: REVENUE_METRIC.to_owned(),
                    description: "Revenue earned, in US dollars, by tier (derived by the \
                                  collector from request counts and its price table)."
                        .to_owned(),
                    unit: "{USD}".to_owned(),
                    data: Some(metric::Data::Sum(Sum {
                        data_points: points,
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                }],
                schema_url: String::new(),
            });
        }
        drop(rms);
        self.billed.add(billed);
        self.unpriced.add(unpriced);
    }

    fn flush_interval(&self) -> Option<Duration> {
        Some(Duration::from_secs(60))
    }

    fn flush(&mut self, now: SystemTime) -> Option<MetricBatch> {
        let stale = unix_nanos(now).saturating_sub(MAX_STALE.as_nanos() as u64);
        self.last.retain(|_, l| l.seen >= stale);
        for groups in self.totals.values_mut() {
            groups.retain(|_, t| t.seen >= stale);
        }
        self.totals.retain(|_, g| !g.is_empty());
        None
    }
}

impl vla_pipeline::registry::Component for UsageRevenue {
    const TYPE: &'static str = TYPE;
    const EXAMPLE: &'static str = "\
source: vla.inference.requests
match: { status: success }
by_model: false
prices:
  free: { default: 0 }
  pro: { default: 0.002, pi0-fast: 0.001 }
  enterprise: { default: 0.0015 }
";
    type Config = Config;

    fn validate(config: &Config, path: &str) -> Vec<ConfigProblem> {
        config.validate(path)
    }
}

/// One instance per pipeline (each keeps its own totals).
struct Factory {
    config: Config,
    id: ComponentId,
    telemetry: SelfMetrics,
}

impl vla_pipeline::registry::ProcessorFactory for Factory {
    fn stage(
        &self,
        _pipeline: &str,
    ) -> Result<vla_pipeline::runner::Stage, vla_pipeline::registry::BuildError> {
        let p = UsageRevenue::new(&self.config)?.with_telemetry(&self.id, &self.telemetry);
        Ok(vla_pipeline::runner::Stage::Process(Box::new(p)))
    }
}

impl vla_pipeline::registry::ProcessorType for UsageRevenue {
    fn build(
        config: &Config,
        ctx: vla_pipeline::registry::BuildContext<'_>,
    ) -> Result<Box<dyn vla_pipeline::registry::ProcessorFactory>, vla_pipeline::registry::BuildError>
    {
        UsageRevenue::new(config)?;
        Ok(Box::new(Factory {
            config: config.clone(),
            id: ctx.id.clone(),
            telemetry: ctx.self_metrics.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use vla_pipeline::fixtures::{self, T0_NANOS};

    use super::*;

    const S: u64 = 1_000_000_000;

    fn config() -> Config {
        serde_saphyr::from_str(<UsageRevenue as vla_pipeline::registry::Component>::EXAMPLE)
            .unwrap()
    }

    /// One cumulative request point per (customer, tier, model, status, value), at `time` s.
    fn requests(start: u64, time: u64, points: &[(&str, &str, &str, &str, f64)]) -> MetricBatch {
        let data_points = points
            .iter()
            .map(|(c, tier, model, status, v)| NumberDataPoint {
                attributes: fixtures::attrs(&[
                    ("customer_id", c),
                    ("tier", tier),
                    ("model", model),
                    ("status", status),
                ]),
                start_time_unix_nano: T0_NANOS + start * S,
                time_unix_nano: T0_NANOS + time * S,
                value: Some(Value::AsDouble(*v)),
                ..Default::default()
            })
            .collect();
        MetricBatch::new(
            "otlp".into(),
            vec![fixtures::resource(
                "vla-api",
                vec![Metric {
                    name: "vla.inference.requests".to_owned(),
                    data: Some(metric::Data::Sum(Sum {
                        data_points,
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                }],
            )],
        )
    }

    /// The emitted revenue: (tier, USD).
    fn revenue(b: &MetricBatch) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        for m in b
            .resource_metrics()
            .iter()
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
        {
            if m.name == REVENUE_METRIC
                && let Some(metric::Data::Sum(s)) = &m.data
            {
                for p in &s.data_points {
                    let Some(Value::AsDouble(v)) = p.value else {
                        panic!("double")
                    };
                    out.push((
                        attr_str(&p.attributes, "tier").unwrap_or("").to_owned(),
                        (v * 1e6).round() / 1e6,
                    ));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn increases_are_priced_per_tier_and_model_with_resets_and_new_series() {
        let t = SelfMetrics::new();
        // Started before the first points: every series is new and counts from zero.
        let mut p = UsageRevenue::new(&config())
            .unwrap()
            .started_at(T0_NANOS)
            .with_telemetry(&"usage_revenue".into(), &t);
        let mut b = requests(
            0,
            10,
            &[
                ("a", "pro", "pi0", "success", 100.0),
                ("b", "pro", "pi0-fast", "success", 100.0),
                ("c", "pro", "pi0", "error", 50.0),
                ("d", "enterprise", "pi0", "success", 1000.0),
                ("e", "trial", "pi0", "success", 7.0),
            ],
        );
        p.process(&mut b);
        // pro: 100 × 0.002 + 100 × 0.001; errors are not billed; trial has no price.
        assert_eq!(
            revenue(&b),
            vec![("enterprise".into(), 1.5), ("pro".into(), 0.3)]
        );
        let mut b = requests(0, 20, &[("a", "pro", "pi0", "success", 150.0)]);
        p.process(&mut b);
        assert_eq!(revenue(&b), vec![("pro".into(), 0.4)]);
        // A reset (the API restarted): the new value is the increase.
        let mut b = requests(30, 40, &[("a", "pro", "pi0", "success", 10.0)]);
        p.process(&mut b);
        assert_eq!(revenue(&b), vec![("pro".into(), 0.42)]);
        let unpriced = t.value(
            "vla_collector_processor_usage_revenue_data_points_total",
            &[("processor", "usage_revenue"), ("result", "unpriced")],
        );
        assert_eq!(
            unpriced,
            Some(1),
            "trial; the error point is not billable at all"
        );
    }

    #[test]
    fn series_running_before_the_collector_started_are_a_baseline() {
        let mut p = UsageRevenue::new(&config())
            .unwrap()
            .started_at(T0_NANOS + 5 * S);
        let mut b = requests(0, 10, &[("a", "pro", "pi0", "success", 1000.0)]);
        p.process(&mut b);
        assert_eq!(revenue(&b), vec![("pro".into(), 0.0)]);
        let mut b = requests(0, 20, &[("a", "pro", "pi0", "success", 1010.0)]);
        p.process(&mut b);
        assert_eq!(revenue(&b), vec![("pro".into(), 0.02)]);
    }

    #[test]
    fn validation_names_each_field() {
        let c: Config = serde_saphyr::from_str(
            "source: vla.revenue\nprices:\n  pro: { default: -1 }\n  free: {}\n",
        )
        .unwrap();
        let paths: Vec<String> = c
            .validate("processors.usage_revenue")
            .into_iter()
            .map(|p| p.path)
            .collect();
        assert_eq!(
            paths,
            [
                "processors.usage_revenue.source",
                "processors.usage_revenue.prices.free",
                "processors.usage_revenue.prices.pro.default",
            ]
        );
    }
}
