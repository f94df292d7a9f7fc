//! The compiled forms of the config's patterns and conditions, and the checks `validate`
//! shares with them, so what validates is exactly what compiles.

use std::fmt::Write as _;

use regex::Regex;
use vla_pipeline::opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};

use super::config::{AttrMatcher, MetricPattern};
use crate::pattern::MetricGlob;

/// Compiles `pattern` so that it must match the whole text; the error is one line, about the
/// pattern as written.
pub(super) fn full_match_regex(pattern: &str) -> Result<Regex, String> {
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

/// Why `key` is not a Prometheus label name a rule may set.
///
/// Beyond Prometheus' syntax, a name must reach the exporters' output unchanged and alone:
/// their sanitiser collapses runs of `_` (`a__b` is exported as `a_b`, which could also merge
/// it with another key), and they set some names themselves, which would replace or clash
/// with the rule's value.
pub(super) fn check_label_name(key: &str) -> Result<(), &'static str> {
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

/// A compiled metric pattern.
#[derive(Debug)]
pub(super) enum NameMatcher {
    Glob(MetricGlob),
    Regex(Regex),
}

impl NameMatcher {
    /// Compiles a validated pattern; `Err` only when validation was skipped.
    pub(super) fn new(pattern: &MetricPattern) -> Result<Self, String> {
        match pattern {
            MetricPattern::Glob(g) => {
                MetricGlob::check(g)?;
                Ok(NameMatcher::Glob(MetricGlob::new(g)))
            }
            MetricPattern::Regex(r) => full_match_regex(r).map(NameMatcher::Regex),
        }
    }

    pub(super) fn matches(&self, name: &str) -> bool {
        match self {
            NameMatcher::Glob(g) => g.matches(name),
            NameMatcher::Regex(r) => r.is_match(name),
        }
    }
}

/// A compiled condition on one attribute; every part given must hold.
#[derive(Debug)]
pub(super) struct AttrTest {
    key: Box<str>,
    exists: Option<bool>,
    /// Equality (one value) or `in` (several): the attribute is present and one of these.
    one_of: Option<Box<[Box<str>]>>,
    not_in: Option<Box<[Box<str>]>>,
    regex: Option<Regex>,
}

impl AttrTest {
    /// Compiles a validated condition; `Err` only when validation was skipped.
    pub(super) fn new(key: &str, m: &AttrMatcher) -> Result<Self, String> {
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
    pub(super) fn matches(&self, attrs: &[KeyValue], scratch: &mut String) -> bool {
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
