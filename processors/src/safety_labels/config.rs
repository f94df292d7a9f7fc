//! The `safety_labels` config: its types, how YAML scalars become label text, and `validate`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::de::{self, MapAccess, Visitor, value::MapAccessDeserializer};
use serde::{Deserialize, Deserializer};
use vla_pipeline::config::ConfigProblem;

use super::matcher;
pub use crate::OnExisting;
use crate::pattern::{MetricGlob, ScalarText, ScalarTextVisitor};

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

/// A pattern on a metric's (OpenTelemetry) name.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricPattern {
    /// A plain string: the exact name, where `*` matches any run of characters.
    Glob(String),
    /// `{ regex: "..." }`: a regular expression the whole name must match.
    Regex(String),
}

/// A condition on one point attribute.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrMatcher {
    /// A plain value: the attribute is present and equals it.
    Equals(String),
    /// An object of conditions, all of which must hold.
    Conditions(AttrConditions),
}

/// The object form of an attribute condition; every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttrConditions {
    /// `in`: the attribute is present and its value is one of these.
    #[serde(default, rename = "in", deserialize_with = "optional_texts")]
    pub one_of: Option<Vec<String>>,
    /// The attribute's value is none of these (an absent attribute qualifies).
    #[serde(default, deserialize_with = "optional_texts")]
    pub not_in: Option<Vec<String>>,
    /// The attribute is present and its whole value matches this regular expression.
    #[serde(default)]
    pub regex: Option<String>,
    /// `true`: the attribute is present; `false`: it is absent.
    #[serde(default)]
    pub exists: Option<bool>,
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
                .any(|p| super::matcher::NameMatcher::new(p).is_ok_and(|m| m.matches(metric)))
        })
    }
}

impl Match {
    /// Whether the rule has no condition at all (it matches every considered point).
    pub fn is_empty(&self) -> bool {
        self.metric.is_none() && self.attributes.is_empty()
    }
}

fn check_metric_pattern(m: &MetricPattern, at: &str, problems: &mut Vec<ConfigProblem>) {
    match m {
        MetricPattern::Glob(g) => {
            if let Err(why) = MetricGlob::check(g) {
                // A blank pattern's message already says what to write.
                let regex = if g.trim().is_empty() {
                    ""
                } else {
                    " (write { regex: \"...\" } for more)"
                };
                problems.push(ConfigProblem::new(at, format!("{why}{regex}")));
            }
        }
        MetricPattern::Regex(r) => check_regex(r, &format!("{at}.regex"), problems),
    }
}

/// Where problems about the entry `key` of the mapping at `map` are reported.
///
/// The collector reads a problem path back by splitting it at every `.` and taking `[..]` as
/// an index (`YamlPath::join_dotted` in `collector/src/config/diag.rs`), so a key holding `.`,
/// `[` or `]` (attribute keys such as `vla.severity`) cannot be a path segment: it would be
/// located under `vla`, then `severity`. Such a problem goes on the mapping, whose line the
/// collector finds, and its message starts with the key: `["vla.severity"].regex: ...`.
struct Entry<'a> {
    map: &'a str,
    key: &'a str,
}

impl Entry<'_> {
    /// A problem with the entry itself (`field` `None`) or with one of its fields.
    fn problem(&self, field: Option<&str>, message: impl fmt::Display) -> ConfigProblem {
        let field = field.map(|f| format!(".{f}")).unwrap_or_default();
        if self.key.is_empty() || self.key.contains(['.', '[', ']']) {
            ConfigProblem::new(self.map, format!("[{:?}]{field}: {message}", self.key))
        } else {
            ConfigProblem::new(
                format!("{}.{}{field}", self.map, self.key),
                message.to_string(),
            )
        }
    }
}

fn check_attr_matcher(
    key: &str,
    m: &AttrMatcher,
    at_attributes: &str,
    problems: &mut Vec<ConfigProblem>,
) {
    if key.is_empty() {
        problems.push(ConfigProblem::new(
            at_attributes,
            "an attribute key must not be empty",
        ));
        return;
    }
    let at = Entry {
        map: at_attributes,
        key,
    };
    let c = match m {
        AttrMatcher::Equals(_) => return,
        AttrMatcher::Conditions(c) => c,
    };
    if c.one_of.is_none() && c.not_in.is_none() && c.regex.is_none() && c.exists.is_none() {
        problems.push(at.problem(
            None,
            "needs at least one of in, not_in, regex, exists (or a plain value for equality)",
        ));
    }
    for (field, list) in [("in", &c.one_of), ("not_in", &c.not_in)] {
        if list.as_ref().is_some_and(Vec::is_empty) {
            problems.push(at.problem(Some(field), "must list at least one value"));
        }
    }
    if let Some(r) = &c.regex
        && let Err(why) = matcher::full_match_regex(r)
    {
        problems.push(at.problem(Some("regex"), format!("invalid regex {r:?}: {why}")));
    }
    if c.exists == Some(false) && (c.one_of.is_some() || c.regex.is_some()) {
        problems.push(at.problem(
            Some("exists"),
            "exists: false never holds together with in or regex, which need the attribute",
        ));
    }
}

fn check_regex(pattern: &str, at: &str, problems: &mut Vec<ConfigProblem>) {
    if let Err(why) = matcher::full_match_regex(pattern) {
        problems.push(ConfigProblem::new(
            at,
            format!("invalid regex {pattern:?}: {why}"),
        ));
    }
}

fn check_labels(labels: &BTreeMap<String, String>, at: &str, problems: &mut Vec<ConfigProblem>) {
    for (key, value) in labels {
        let entry = Entry { map: at, key };
        if let Err(why) = matcher::check_label_name(key) {
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

fn optional_texts<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let list = Vec::<ScalarText>::deserialize(d)?;
    Ok(Some(list.into_iter().map(|t| t.0).collect()))
}

/// The object form of a metric pattern.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegexOnly {
    regex: String,
}

impl<'de> Deserialize<'de> for MetricPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MetricPattern;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a metric name or * pattern, or { regex: \"...\" }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MetricPattern, E> {
                Ok(MetricPattern::Glob(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<MetricPattern, A::Error> {
                RegexOnly::deserialize(MapAccessDeserializer::new(map))
                    .map(|r| MetricPattern::Regex(r.regex))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for AttrMatcher {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AttrMatcher;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value to equal, or an object of in, not_in, regex, exists")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AttrMatcher, E> {
                Ok(AttrMatcher::Equals(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<AttrMatcher, E> {
                ScalarTextVisitor.visit_bool(v).map(AttrMatcher::Equals)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<AttrMatcher, E> {
                ScalarTextVisitor.visit_i64(v).map(AttrMatcher::Equals)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<AttrMatcher, E> {
                ScalarTextVisitor.visit_u64(v).map(AttrMatcher::Equals)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<AttrMatcher, E> {
                ScalarTextVisitor.visit_f64(v).map(AttrMatcher::Equals)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<AttrMatcher, A::Error> {
                AttrConditions::deserialize(MapAccessDeserializer::new(map))
                    .map(AttrMatcher::Conditions)
            }
        }
        d.deserialize_any(V)
    }
}
