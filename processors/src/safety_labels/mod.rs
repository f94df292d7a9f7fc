//! The `safety_labels` processor: classifies safety data points by rules written in the
//! pipeline config, adding labels such as `safety_category`, a normalised `severity`,
//! `compliance_domain` and `requires_review`.
//!
//! Each rule matches on the metric's OpenTelemetry name (`vla.safety.incidents`, not the
//! Prometheus `vla_safety_incidents_total`) and on the point's attributes, and `set`s labels
//! on the points it matches. Dashboards and alerts can then group by category instead of
//! repeating the list of violation types in every query.
//!
//! ```yaml
//! processors:
//!   # Classifies the simulator's violation types (vla.safety.incidents {severity,
//!   # violation_type}, vla.safety.rejections and vla.safety.reviews {violation_type}).
//!   safety_labels/category:
//!     metrics: ["vla.safety.incidents", "vla.safety.rejections", "vla.safety.reviews"]
//!     rules:
//!       - name: physical-harm
//!         match:
//!           attributes:
//!             violation_type: { in: [collision_risk, force_limit, speed_limit, human_proximity] }
//!         set: { safety_category: physical_harm, compliance_domain: iso_10218, requires_review: true }
//!       - name: workspace
//!         match: { attributes: { violation_type: workspace_boundary } }
//!         set: { safety_category: workspace, compliance_domain: iso_10218, requires_review: false }
//!       - name: misuse
//!         match:
//!           attributes:
//!             violation_type: { in: [restricted_object, harmful_instruction] }
//!         set: { safety_category: misuse, compliance_domain: acceptable_use, requires_review: true }
//!     default: { safety_category: other, requires_review: true }
//!   # Normalises free-text severities; a second instance, so it applies whatever the category.
//!   safety_labels/severity:
//!     metrics: ["vla.safety.incidents", "vla.customer.safety_incidents"]
//!     rules:
//!       - name: critical
//!         match: { attributes: { severity: { regex: "(?i)crit(ical)?|sev0|p0" } } }
//!         set: { severity: critical }
//!       - name: high
//!         match: { attributes: { severity: { regex: "(?i)high|sev1|p1" } } }
//!         set: { severity: high }
//!       - name: unknown
//!         match:
//!           attributes:
//!             severity: { not_in: [critical, high, medium, low], exists: true }
//!         set: { severity: medium, requires_review: true }
//! service:
//!   pipelines:
//!     metrics:
//!       receivers: [otlp]
//!       processors: [safety_labels/category, safety_labels/severity, batch]
//!       exporters: [prometheus]
//! ```
//!
//! # Config reference
//!
//! - `mode`: `first` (default) or `all`. In `first`, rules are tried in order and the first
//!   whose conditions hold sets its labels; the rest are not evaluated. In `all`, every rule
//!   whose conditions hold sets its labels, in order, so a later rule's value for a label
//!   overwrites an earlier one's. Conditions are always evaluated on the point as it arrived,
//!   never on labels an earlier rule set.
//! - `metrics`: only points of these metrics are considered (exact names, `*` globs where `*`
//!   matches any run of characters, or `{ regex: "..." }`); omitted, every metric is. Points
//!   of other metrics are left untouched, default included.
//! - `on_existing`: `overwrite` (default) replaces a label the point already carried when it
//!   arrived; `keep` leaves it. Labels set by an earlier rule in mode `all` are always
//!   overwritten by later ones.
//! - `rules`: at least one; each has
//!   - `name`: unique, for messages;
//!   - `match` (optional; omitted, the rule matches every considered point):
//!     - `metric`: the metric name, as an exact name, a `*` glob or `{ regex: "..." }`;
//!     - `attributes`: attribute key → condition; all must hold. A condition is a plain value
//!       (the attribute equals it), or an object of `in: [..]` (equals one of them),
//!       `not_in: [..]` (equals none of them; an absent attribute qualifies, add
//!       `exists: true` to require it), `regex: "..."` (the whole value matches: the pattern
//!       is anchored as `^(?:...)$`) and `exists: true|false`, every one given must hold. An
//!       absent attribute never matches a plain value, `in` or `regex`. Non-string attributes
//!       are compared by the text the exporters write for them (`true`, `42`, `0.5`);
//!       bytes, arrays and maps match no value.
//!   - `set`: label name → value, at least one. Names must be Prometheus label names
//!     (`[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`) that the exporters write unchanged
//!     and do not set themselves: no run of `_` (`a__b` would be exported as `a_b`), and not
//!     `job`, `instance`, `otel_scope_name`, `otel_scope_version` (taken from the resource and
//!     scope, replacing a rule's value), `le` or `quantile` (histogram and summary labels).
//!     Values are non-empty strings (YAML booleans and numbers are turned into their text:
//!     `true`, `3`).
//! - `default`: labels set, like a rule's `set`, on considered points that no rule matched.
//!
//! `validate` reports every problem at once with its YAML path, e.g.
//! `processors.safety_labels.rules[2].match.attributes.severity.regex: invalid regex "(":
//! unclosed group`. A key holding `.`, `[` or `]` (`vla.severity`) cannot be a segment of the
//! collector's dotted paths, so its problems are reported on the enclosing mapping, the key
//! leading the message: `...match.attributes: ["vla.severity"].regex: invalid regex ...`.
//! It also refuses a rule that can never apply (after a rule without conditions in mode
//! `first`) and a `default` that never applies.
//!
//! [`Config::added_keys`] lists every label the rules can add, for the check that dashboards
//! and alerts only group by labels that exist. Only the rule syntax is ours; the labels follow
//! Prometheus' data model.
//!
//! Self-metrics ([`SafetyLabels::with_telemetry`]):
//! `vla_collector_processor_safety_labels_data_points_total{processor, result}` counts the considered
//! points: `matched` (a rule set labels), `default` (no rule matched; the default did) and
//! `unmatched` (no rule matched and there is no default).
//!
//! The processor compiles the rules once and decides per metric name (cached) which rules can
//! apply, so each point costs only its attribute checks; it allocates only the label strings
//! it inserts.

mod config;

impl vla_pipeline::registry::Component for SafetyLabels {
    const TYPE: &'static str = TYPE;
    const EXAMPLE: &'static str = "\
metrics: [\"vla.safety.incidents\", \"vla.safety.rejections\"]
rules:
  - name: physical-harm
    match:
      attributes:
        violation_type: { in: [collision_risk, force_limit, human_proximity] }
    set: { safety_category: physical_harm, requires_review: true }
  - name: severity
    match: { attributes: { severity: { regex: \"(?i)crit(ical)?|sev0\" } } }
    set: { severity: critical }
default: { safety_category: other, requires_review: true }
";
    type Config = Config;

    fn validate(config: &Config, path: &str) -> Vec<vla_pipeline::config::ConfigProblem> {
        config.validate(path)
    }
}

impl vla_pipeline::registry::ProcessorType for SafetyLabels {
    fn build(
        config: &Config,
        ctx: vla_pipeline::registry::BuildContext<'_>,
    ) -> Result<Box<dyn vla_pipeline::registry::ProcessorFactory>, vla_pipeline::registry::BuildError>
    {
        let (config, id, metrics) = (config.clone(), ctx.id.clone(), ctx.self_metrics.clone());
        Ok(Box::new(vla_pipeline::registry::PerPipeline(move || {
            Box::new(SafetyLabels::new(&config).with_telemetry(&id, &metrics))
                as Box<dyn vla_pipeline::Processor>
        })))
    }
}

#[cfg(test)]
mod tests;

use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use hashbrown::HashTable;
use vla_pipeline::opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use vla_pipeline::self_metrics::Counter;
use vla_pipeline::{ComponentId, MetricBatch, Processor, SelfMetrics};

pub use config::{
    AttrConditions, AttrMatcher, Config, Match, MetricPattern, Mode, OnExisting, Rule,
};

use crate::matching::{AttrTest, NameMatcher};

/// The config `type` of this processor.
pub const TYPE: &str = "safety_labels";

/// How many metric names the per-metric decision cache holds before it starts over (a bound
/// against clients that send ever-new names).
const MAX_CACHED_METRICS: usize = 4096;

/// A rule, compiled.
#[derive(Debug)]
struct CompiledRule {
    metric: Option<NameMatcher>,
    attributes: Box<[AttrTest]>,
    set: Labels,
}

/// Labels to set: (name, value) pairs.
type Labels = Box<[(Box<str>, Box<str>)]>;

/// What to do with the points of one metric name.
#[derive(Debug)]
struct Plan {
    name: Box<str>,
    /// Whether the name passes `metrics`.
    considered: bool,
    /// The rules whose metric pattern (if any) matches the name, in order.
    rules: Box<[u32]>,
}

/// Per-metric-name plans, found by name.
#[derive(Debug, Default)]
struct PlanCache {
    plans: Vec<Plan>,
    index: HashTable<u32>,
    hasher: RandomState,
}

impl PlanCache {
    /// The index of `name`'s plan, made on first sight.
    fn get(&mut self, name: &str, scope: Option<&[NameMatcher]>, rules: &[CompiledRule]) -> usize {
        let hash = self.hasher.hash_one(name);
        let plans = &self.plans;
        if let Some(&i) = self.index.find(hash, |&i| *plans[i as usize].name == *name) {
            return i as usize;
        }
        if self.plans.len() >= MAX_CACHED_METRICS {
            self.plans.clear();
            self.index.clear();
        }
        let considered = scope.is_none_or(|s| s.iter().any(|m| m.matches(name)));
        let matching = if considered {
            (0..rules.len())
                .filter(|&r| rules[r].metric.as_ref().is_none_or(|m| m.matches(name)))
                .filter_map(|r| u32::try_from(r).ok())
                .collect()
        } else {
            Box::default()
        };
        let i = self.plans.len();
        self.plans.push(Plan {
            name: name.into(),
            considered,
            rules: matching,
        });
        let (plans, hasher) = (&self.plans, &self.hasher);
        self.index.insert_unique(hash, i as u32, |&j| {
            hasher.hash_one(&*plans[j as usize].name)
        });
        i
    }
}

/// The `safety_labels` processor.
#[derive(Debug)]
pub struct SafetyLabels {
    mode: Mode,
    keep_existing: bool,
    /// `metrics`, compiled; `None` considers every metric.
    scope: Option<Box<[NameMatcher]>>,
    rules: Box<[CompiledRule]>,
    default: Option<Labels>,
    cache: PlanCache,
    /// Reused per point: the rules that matched (mode `all`) and numbers' text.
    matched: Vec<u32>,
    scratch: String,
    /// How many metric patterns and rules `new` skipped because they did not compile.
    skipped: usize,
    counters: Counters,
}

/// Considered points, by result.
#[derive(Debug, Default)]
struct Counters {
    matched: Counter,
    default: Counter,
    unmatched: Counter,
}

impl SafetyLabels {
    /// A processor running the (validated) `config`'s rules; a rule or pattern that does not
    /// compile anyway is skipped with a warning, never a panic.
    pub fn new(config: &Config) -> Self {
        // The component id is not known here; `with_telemetry` repeats the count with it.
        let mut skipped = 0;
        let scope = config.metrics.as_ref().map(|patterns| {
            patterns
                .iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    NameMatcher::new(p)
                        .inspect_err(|e| {
                            skipped += 1;
                            tracing::warn!(
                                processor = TYPE,
                                metrics_index = i,
                                error = %e,
                                "metric pattern skipped"
                            );
                        })
                        .ok()
                })
                .collect()
        });
        let rules = config
            .rules
            .iter()
            .filter_map(|r| {
                compile_rule(r)
                    .inspect_err(|e| {
                        skipped += 1;
                        tracing::warn!(processor = TYPE, rule = %r.name, error = %e, "rule skipped");
                    })
                    .ok()
            })
            .collect();
        Self {
            mode: config.mode,
            keep_existing: config.on_existing == OnExisting::Keep,
            scope,
            rules,
            default: config.default.as_ref().map(labels),
            cache: PlanCache::default(),
            matched: Vec::new(),
            scratch: String::new(),
            skipped,
            counters: Counters::default(),
        }
    }

    /// Registers the processor's counters as `vla_collector_processor_safety_labels_data_points_total
    /// {processor=<id>, result=matched|default|unmatched}` (considered points).
    pub fn with_telemetry(mut self, id: &ComponentId, telemetry: &SelfMetrics) -> Self {
        let counter = |result| {
            telemetry.counter(
                "vla_collector_processor_safety_labels_data_points_total",
                "Data points considered by safety_labels, by result (matched: a rule set labels, \
                 default: the default did, unmatched: neither).",
                &[("processor", id), ("result", result)],
            )
        };
        self.counters = Counters {
            matched: counter("matched"),
            default: counter("default"),
            unmatched: counter("unmatched"),
        };
        if self.skipped > 0 {
            tracing::warn!(
                processor = %id,
                skipped = self.skipped,
                "metric patterns or rules that did not compile were skipped"
            );
        }
        self
    }
}

fn compile_rule(rule: &Rule) -> Result<CompiledRule, String> {
    Ok(CompiledRule {
        metric: rule
            .r#match
            .metric
            .as_ref()
            .map(NameMatcher::new)
            .transpose()?,
        attributes: rule
            .r#match
            .attributes
            .iter()
            .map(|(k, m)| AttrTest::new(k, m))
            .collect::<Result<_, _>>()?,
        set: labels(&rule.set),
    })
}

fn labels(map: &std::collections::BTreeMap<String, String>) -> Labels {
    map.iter()
        .map(|(k, v)| (Box::from(k.as_str()), Box::from(v.as_str())))
        .collect()
}

impl CompiledRule {
    fn matches(&self, attrs: &[KeyValue], scratch: &mut String) -> bool {
        self.attributes.iter().all(|t| t.matches(attrs, scratch))
    }
}

impl Processor for SafetyLabels {
    fn process(&mut self, batch: &mut MetricBatch) {
        let Self {
            mode,
            keep_existing,
            scope,
            rules,
            default,
            cache,
            matched,
            scratch,
            skipped: _,
            counters,
        } = self;
        let (mode, keep, scope, rules) = (*mode, *keep_existing, scope.as_deref(), &**rules);
        // Tallied locally, added to the shared counters once per batch.
        let (mut n_matched, mut n_default, mut n_unmatched) = (0u64, 0u64, 0u64);
        // Points of one metric come in a row: remember the last plan to skip the lookup.
        let mut last: Option<usize> = None;
        batch.for_each_point_mut(|ctx, attrs| {
            let i = match last {
                Some(i) if *cache.plans[i].name == *ctx.metric_name => i,
                _ => {
                    let i = cache.get(ctx.metric_name, scope, rules);
                    last = Some(i);
                    i
                }
            };
            let plan = &cache.plans[i];
            if !plan.considered {
                return;
            }
            if plan.rules.is_empty() && default.is_none() {
                n_unmatched += 1;
                return;
            }
            let arrived = attrs.len();
            matched.clear();
            for &r in &*plan.rules {
                if rules[r as usize].matches(attrs, scratch) {
                    matched.push(r);
                    if mode == Mode::First {
                        break;
                    }
                }
            }
            if matched.is_empty() {
                match default {
                    Some(d) => {
                        n_default += 1;
                        set_labels(attrs, arrived, d, keep);
                    }
                    None => n_unmatched += 1,
                }
                return;
            }
            n_matched += 1;
            for &r in &*matched {
                set_labels(attrs, arrived, &rules[r as usize].set, keep);
            }
        });
        counters.matched.add(n_matched);
        counters.default.add(n_default);
        counters.unmatched.add(n_unmatched);
    }
}

/// Sets `labels` on a point whose first `arrived` attributes are its own (the rest were set by
/// this processor), keeping its own values when `keep`.
fn set_labels(attrs: &mut Vec<KeyValue>, arrived: usize, labels: &Labels, keep: bool) {
    for (key, value) in labels {
        match attrs.iter().position(|kv| *kv.key == **key) {
            Some(i) if keep && i < arrived => {}
            Some(i) => {
                let kv = &mut attrs[i];
                let same = matches!(
                    kv.value.as_ref().and_then(|v| v.value.as_ref()),
                    Some(any_value::Value::StringValue(s)) if **s == **value
                );
                if !same {
                    kv.value = Some(string_value(value));
                }
            }
            None => attrs.push(KeyValue {
                key: key.to_string(),
                value: Some(string_value(value)),
                ..Default::default()
            }),
        }
    }
}

fn string_value(value: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(value.to_owned())),
    }
}
