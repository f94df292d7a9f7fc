//! The `safety_labels` config: its types, how YAML scalars become label text, and `validate`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer};
use vla_pipeline::config::ConfigProblem;

pub use crate::OnExisting;
pub use crate::matching::{AttrConditions, AttrMatcher, MetricPattern};
use crate::matching::{Entry, NameMatcher, check_attr_matcher, check_metric_pattern};
use crate::pattern::ScalarText;

/// The `safety_labels` processor's settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Whether the first matching rule wins or every matching rule applies.
    #[serde(default)]
    pub mode: Mode,
    /// Only points of these metrics are considered; `None` considers every metric.
    #[serde(default)]
    pub metrics: Option<Vec<MetricPattern>>,
    /// What to do with a label the point already carries when it arrives.
    #[serde(default = "OnExisting::overwrite")]
    pub on_existing: OnExisting,
    /// The rules, in order.
    pub rules: Vec<Rule>,
    /// Labels added to considered points that no rule matched.
    #[serde(default, deserialize_with = "optional_labels")]
    pub default: Option<BTreeMap<String, String>>,
}

/// How many matching rules apply to one point.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The first matching rule applies; the rest are not evaluated.
    #[default]
    First,
    /// Every matching rule applies, in order; a later rule's label overwrites an earlier one's.
    All,
}

/// One rule: when its conditions hold, its labels are set.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A name, unique within the processor (for messages and reviews of the rule set).
    pub name: String,
    /// The conditions, all of which must hold; omitted, the rule matches every considered point.
    #[serde(default)]
    pub r#match: Match,
    /// The labels to set: Prometheus label name → value.
    #[serde(deserialize_with = "labels")]
    pub set: BTreeMap<String, String>,
}

/// The conditions of a rule.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// The metric name must match this pattern.
    #[serde(default)]
    pub metric: Option<MetricPattern>,
    /// Point attribute key → the condition its value must meet.
    #[serde(default)]
    pub attributes: BTreeMap<String, AttrMatcher>,
}

impl Config {
    /// Checks the whole config; problems are reported under `path` (e.g.
    /// `processors.safety_labels`), every one of them at once.
    pub fn validate(&self, path: &str) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if let Some(metrics) = &self.metrics {
            if metrics.is_empty() {
                problems.push(ConfigProblem::new(
                    format!("{path}.metrics"),
                    "must list at least one metric name or pattern; omit it to consider every metric",
                ));
            }
            for (i, m) in metrics.iter().enumerate() {
                check_metric_pattern(m, &format!("{path}.metrics[{i}]"), &mut problems);
            }
        }
        if self.rules.is_empty() {
            problems.push(ConfigProblem::new(
                format!("{path}.rules"),
                "must list at least one rule",
            ));
        }
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut catch_all: Option<usize> = None;
        for (i, rule) in self.rules.iter().enumerate() {
            let at = format!("{path}.rules[{i}]");
            if rule.name.trim().is_empty() {
                problems.push(ConfigProblem::new(
                    format!("{at}.name"),
                    "must not be empty",
                ));
            } else if let Some(first) = names.get(rule.name.as_str()) {
                problems.push(ConfigProblem::new(
                    format!("{at}.name"),
                    format!(
                        "duplicate rule name {:?} (already used by rules[{first}])",
                        rule.name
                    ),
                ));
            } else {
                names.insert(&rule.name, i);
            }
            if let Some(m) = &rule.r#match.metric {
                check_metric_pattern(m, &format!("{at}.match.metric"), &mut problems);
            }
            for (key, matcher) in &rule.r#match.attributes {
                check_attr_matcher(
                    key,
                    matcher,
                    &format!("{at}.match.attributes"),
                    &mut problems,
                );
            }
            if rule.set.is_empty() {
                problems.push(ConfigProblem::new(
                    format!("{at}.set"),
                    "must set at least one label",
                ));
            }
            check_labels(&rule.set, &format!("{at}.set"), &mut problems);
            if let Some(c) = catch_all
                && self.mode == Mode::First
            {
                problems.push(ConfigProblem::new(
                    at,
                    format!(
                        "never applies: rules[{c}] ({:?}) has no conditions and wins in mode first",
                        self.rules[c].name
                    ),
                ));
            }
            if catch_all.is_none() && rule.r#match.is_empty() {
                catch_all = Some(i);
            }
        }
        if let Some(default) = &self.default {
            let at = format!("{path}.default");
            if default.is_empty() {
                problems.push(ConfigProblem::new(
                    at.clone(),
                    "must set at least one label; omit it for no default",
                ));
            }
            check_labels(default, &at, &mut problems);
            if let Some(c) = catch_all {
                problems.push(ConfigProblem::new(
                    at,
                    format!(
                        "never applies: rules[{c}] ({:?}) has no conditions, so every point matches a rule",
                        self.rules[c].name
                    ),
                ));
            }
        }
        problems
    }

    /// Every label key the rules and default can add (for the catalogue check of dashboards
    /// and alerts).
    pub fn added_keys(&self) -> BTreeSet<String> {
        self.rules
            .iter()
            .flat_map(|r| r.set.keys())
            .chain(self.default.iter().flat_map(|d| d.keys()))
            .cloned()
            .collect()
    }
}

impl Config {
    /// Whether points of `metric` (the OTLP name) are considered at all: it passes `metrics`.
    /// Used with [`Config::added_keys`] by the catalogue check of dashboards and alerts.
    pub fn considers(&self, metric: &str) -> bool {
        self.metrics.as_ref().is_none_or(|patterns| {
            patterns
                .iter()
                .any(|p| NameMatcher::new(p).is_ok_and(|m| m.matches(metric)))
        })
    }
}

impl Match {
    /// Whether the rule has no condition at all (it matches every considered point).
    pub fn is_empty(&self) -> bool {
        self.metric.is_none() && self.attributes.is_empty()
    }
}

fn check_labels(labels: &BTreeMap<String, String>, at: &str, problems: &mut Vec<ConfigProblem>) {
    for (key, value) in labels {
        let entry = Entry { map: at, key };
        if let Err(why) = check_label_name(key) {
            problems.push(entry.problem(None, format!("invalid label name {key:?}: {why}")));
        }
        if value.is_empty() {
            problems.push(entry.problem(
                None,
                "must not be empty (an empty Prometheus label is the same as no label)",
            ));
        }
    }
}

fn labels<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let map = BTreeMap::<String, ScalarText>::deserialize(d)?;
    Ok(map.into_iter().map(|(k, v)| (k, v.0)).collect())
}

fn optional_labels<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    labels(d).map(Some)
}

/// Why `key` is not a Prometheus label name a rule may set.
///
/// Beyond Prometheus' syntax, a name must reach the exporters' output unchanged and alone:
/// their sanitiser collapses runs of `_` (`a__b` is exported as `a_b`, which could also merge
/// it with another key), and they set some names themselves, which would replace or clash
/// with the rule's value.
fn check_label_name(key: &str) -> Result<(), &'static str> {
    let mut chars = key.chars();
    match chars.next() {
        None => return Err("must not be empty"),
        Some(c) if !(c.is_ascii_alphabetic() || c == '_') => {
            return Err("must start with a letter or _ ([a-zA-Z_][a-zA-Z0-9_]*)");
        }
        _ => {}
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err("may hold only letters, digits and _ ([a-zA-Z_][a-zA-Z0-9_]*)");
    }
    if key.starts_with("__") {
        return Err("names starting with __ are reserved by Prometheus");
    }
    if key.contains("__") {
        return Err(
            "the exporters collapse a run of _ into one (a__b is exported as a_b); \
                    write the name with single underscores",
        );
    }
    match key {
        "job" | "instance" => Err("set by the exporters from the resource (service.name, \
                                   service.instance.id), which would replace this value"),
        "otel_scope_name" | "otel_scope_version" => Err("set by the exporters from the \
                                                         instrumentation scope, which would \
                                                         replace this value"),
        "le" | "quantile" => Err("reserved for histogram buckets and summary quantiles"),
        _ => Ok(()),
    }
}
