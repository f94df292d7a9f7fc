//! Conditions on metric names and attributes that processors share (`safety_labels`' rules,
//! `filter`'s conditions): their config forms, how `validate` checks them, and their compiled
//! forms, so what validates is exactly what compiles.
//!
//! ```yaml
//! metric: "vla.inference.*"            # exact, * glob, or { regex: "..." } (whole name)
//! attributes:
//!   status: error                      # equals
//!   violation_type: { in: [collision_risk, force_limit] }
//!   severity: { regex: "(?i)crit.*", not_in: [test] }
//!   customer_id: { exists: true }
//! ```

use std::fmt::{self, Write as _};

use regex::Regex;
use serde::de::{self, MapAccess, Visitor, value::MapAccessDeserializer};
use serde::{Deserialize, Deserializer};
use vla_pipeline::config::ConfigProblem;
use vla_pipeline::opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};

use crate::pattern::{MetricGlob, ScalarText, ScalarTextVisitor};

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

pub(crate) fn check_metric_pattern(m: &MetricPattern, at: &str, problems: &mut Vec<ConfigProblem>) {
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
pub(crate) struct Entry<'a> {
    pub(crate) map: &'a str,
    pub(crate) key: &'a str,
}

impl Entry<'_> {
    /// A problem with the entry itself (`field` `None`) or with one of its fields.
    pub(crate) fn problem(&self, field: Option<&str>, message: impl fmt::Display) -> ConfigProblem {
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

pub(crate) fn check_attr_matcher(
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
        && let Err(why) = full_match_regex(r)
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

pub(crate) fn check_regex(pattern: &str, at: &str, problems: &mut Vec<ConfigProblem>) {
    if let Err(why) = full_match_regex(pattern) {
        problems.push(ConfigProblem::new(
            at,
            format!("invalid regex {pattern:?}: {why}"),
        ));
    }
}

pub(crate) fn optional_texts<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
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
/// Compiles `pattern` so that it must match the whole text; the error is one line, about the
/// pattern as written.
pub(crate) fn full_match_regex(pattern: &str) -> Result<Regex, String> {
    // Compiling the pattern alone first makes the error point into what the user wrote.
    Regex::new(pattern)
        .and_then(|_| Regex::new(&format!("^(?:{pattern})$")))
        .map_err(|e| short_regex_error(&e))
}

/// The regex crate's multi-line syntax error reduced to its last line (`unclosed group`).
fn short_regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or(text.trim())
        .to_owned()
}

/// A compiled metric pattern.
#[derive(Debug, Clone)]
pub(crate) enum NameMatcher {
    Glob(MetricGlob),
    Regex(Regex),
}

impl NameMatcher {
    /// Compiles a validated pattern; `Err` only when validation was skipped.
    pub(crate) fn new(pattern: &MetricPattern) -> Result<Self, String> {
        match pattern {
            MetricPattern::Glob(g) => {
                MetricGlob::check(g)?;
                Ok(NameMatcher::Glob(MetricGlob::new(g)))
            }
            MetricPattern::Regex(r) => full_match_regex(r).map(NameMatcher::Regex),
        }
    }

    pub(crate) fn matches(&self, name: &str) -> bool {
        match self {
            NameMatcher::Glob(g) => g.matches(name),
            NameMatcher::Regex(r) => r.is_match(name),
        }
    }
}

/// A compiled condition on one attribute; every part given must hold.
#[derive(Debug, Clone)]
pub(crate) struct AttrTest {
    key: Box<str>,
    exists: Option<bool>,
    /// Equality (one value) or `in` (several): the attribute is present and one of these.
    one_of: Option<Box<[Box<str>]>>,
    not_in: Option<Box<[Box<str>]>>,
    regex: Option<Regex>,
}

impl AttrTest {
    /// Compiles a validated condition; `Err` only when validation was skipped.
    pub(crate) fn new(key: &str, m: &AttrMatcher) -> Result<Self, String> {
        let list = |l: &Vec<String>| l.iter().map(|s| Box::from(s.as_str())).collect();
        let mut test = AttrTest {
            key: key.into(),
            exists: None,
            one_of: None,
            not_in: None,
            regex: None,
        };
        match m {
            AttrMatcher::Equals(v) => test.one_of = Some(Box::new([v.as_str().into()])),
            AttrMatcher::Conditions(c) => {
                test.exists = c.exists;
                test.one_of = c.one_of.as_ref().map(list);
                test.not_in = c.not_in.as_ref().map(list);
                test.regex = c.regex.as_deref().map(full_match_regex).transpose()?;
            }
        }
        Ok(test)
    }

    /// Whether the point's `attrs` meet the condition; `scratch` holds numbers' text.
    pub(crate) fn matches(&self, attrs: &[KeyValue], scratch: &mut String) -> bool {
        let Some(kv) = attrs.iter().find(|kv| *kv.key == *self.key) else {
            return self.exists != Some(true) && self.one_of.is_none() && self.regex.is_none();
        };
        if self.exists == Some(false) {
            return false;
        }
        if self.one_of.is_none() && self.not_in.is_none() && self.regex.is_none() {
            return true;
        }
        // A value with no scalar text (bytes, arrays, maps) is in no set and matches no regex.
        let text = label_text(kv.value.as_ref(), scratch);
        if let Some(set) = &self.one_of
            && !text.is_some_and(|t| set.iter().any(|v| **v == *t))
        {
            return false;
        }
        if let Some(set) = &self.not_in
            && text.is_some_and(|t| set.iter().any(|v| **v == *t))
        {
            return false;
        }
        if let Some(re) = &self.regex
            && !text.is_some_and(|t| re.is_match(t))
        {
            return false;
        }
        true
    }
}

/// An attribute value as the label text the exporters write, for scalars; numbers are printed
/// into `scratch`, which is reused, so this does not allocate once warm.
fn label_text<'a>(value: Option<&'a AnyValue>, scratch: &'a mut String) -> Option<&'a str> {
    match value?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s),
        any_value::Value::BoolValue(b) => Some(if *b { "true" } else { "false" }),
        any_value::Value::IntValue(i) => {
            scratch.clear();
            let _ = write!(scratch, "{i}");
            Some(scratch)
        }
        any_value::Value::DoubleValue(d) => {
            scratch.clear();
            let _ = write!(scratch, "{d}");
            Some(scratch)
        }
        _ => None,
    }
}
