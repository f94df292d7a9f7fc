//! What the processors' configs share: metric-name globs and YAML scalars read as text.
//!
//! [`MetricGlob`] is the metric pattern of `customer_tier` (`drop_customer_id`), `gpu_stats`
//! (`metrics`) and `safety_labels` (`metrics`, `match.metric`): an exact name, or a glob whose
//! `*` matches any run of characters. [`ScalarText`] reads a YAML scalar as the text written,
//! for values that end up as label text.
//!
//! ```yaml
//! metrics: ["vla.inference.*", "vla.queue.depth", "*.gpu_seconds"]
//! set: { requires_review: true, priority: 1 }   # the texts "true" and "1"
//! ```

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};

/// A metric-name pattern: an exact name, or a glob where `*` matches any (possibly empty) run
/// of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MetricGlob {
    /// The literal pieces between the stars; a single piece means no star (an exact name).
    parts: Box<[Box<str>]>,
}

/// The message for a blank pattern.
const BLANK: &str = "must not be empty; write a metric name or a glob such as vla.inference.*";

/// Characters a metric pattern may hold besides `*`: those of OpenTelemetry instrument names,
/// plus `:` of Prometheus-style names.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/' | ':')
}

impl MetricGlob {
    /// Why `pattern` is not a usable metric pattern, if it is not: a blank one gets
    /// `must not be empty; ...`, any other problem names the pattern and its first character
    /// that cannot appear in a metric name.
    pub(crate) fn check(pattern: &str) -> Result<(), String> {
        if pattern.trim().is_empty() {
            return Err(BLANK.to_owned());
        }
        match pattern.chars().find(|&c| c != '*' && !is_name_char(c)) {
            None => Ok(()),
            Some(c) => Err(format!(
                "invalid metric pattern {pattern:?}: {c:?} cannot appear in a metric name; \
                 only * is a wildcard"
            )),
        }
    }

    /// The problems of a required list of patterns at `at` (`at.metrics`, say): empty, or
    /// an entry [`MetricGlob::check`] refuses (reported at `at[i]`).
    pub(crate) fn check_list(
        at: &str,
        patterns: &[String],
    ) -> Vec<vla_pipeline::config::ConfigProblem> {
        use vla_pipeline::config::ConfigProblem;
        let mut problems = Vec::new();
        if patterns.is_empty() {
            problems.push(ConfigProblem::new(
                at,
                "must list at least one metric name or glob",
            ));
        }
        for (i, p) in patterns.iter().enumerate() {
            if let Err(why) = Self::check(p) {
                problems.push(ConfigProblem::new(format!("{at}[{i}]"), why));
            }
        }
        problems
    }

    /// Compiles `pattern` (checked or not: an unchecked one just matches what it says).
    pub(crate) fn new(pattern: &str) -> Self {
        Self {
            parts: pattern.split('*').map(Box::from).collect(),
        }
    }

    /// Whether the whole of `name` matches.
    pub(crate) fn matches(&self, name: &str) -> bool {
        let [first, middle @ .., last] = &*self.parts else {
            // No star.
            return self.parts.first().is_some_and(|exact| **exact == *name);
        };
        // The prefix and suffix must not overlap (`ab*ba` does not match `aba`).
        if name.len() < first.len() + last.len()
            || !name.starts_with(&**first)
            || !name.ends_with(&**last)
        {
            return false;
        }
        // Both ends are char boundaries: the prefix and suffix matched there.
        let mut hay = &name[first.len()..name.len() - last.len()];
        // Leftmost placement of each middle piece is optimal when `*` is the only wildcard.
        middle.iter().all(|part| match hay.find(&**part) {
            Some(at) => {
                hay = &hay[at + part.len()..];
                true
            }
            None => false,
        })
    }
}

/// A YAML scalar as text: strings as written, booleans and numbers printed (`true`, `42`,
/// `0.5`); anything else is refused as not "a string, number or boolean".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScalarText(pub(crate) String);

impl<'de> Deserialize<'de> for ScalarText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarTextVisitor).map(ScalarText)
    }
}

/// The visitor behind [`ScalarText`], for deserializers that take a scalar among other forms.
pub(crate) struct ScalarTextVisitor;

impl Visitor<'_> for ScalarTextVisitor {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, number or boolean")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn matches_table() {
        let cases = [
            // Exact names.
            (
                "vla.customer.inference.duration",
                "vla.customer.inference.duration",
                true,
            ),
            (
                "vla.customer.inference.duration",
                "vla.customer.inference",
                false,
            ),
            ("vla.safety.incidents", "vla.safety.incidents.extra", false),
            ("m", "", false),
            // A star at the end, the start, in the middle.
            ("vla.customer.*", "vla.customer.requests", true),
            ("vla.customer.*", "vla.customers.total", false),
            ("vla.safety.*", "vla.safety.", true),
            ("vla.safety.*", "vla.customer.safety_incidents", false),
            ("*.duration", "vla.customer.inference.duration", true),
            ("*.safety_incidents", "vla.customer.safety_incidents", true),
            ("vla.*.duration", "vla.customer.inference.duration", true),
            (
                "vla.*.duration",
                "vla.customer.inference.duration_max",
                false,
            ),
            ("vla.*.incidents", "vla.safety.incidents", true),
            ("vla.*.incidents", "vla.safety.rejections", false),
            ("*safety*", "vla.customer.safety_incidents", true),
            ("*", "anything", true),
            ("*", "", true),
            // Several stars; stars matching nothing.
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "aXcYb", false),
            ("a*b*c", "acb", false),
            ("a**", "a", true),
            ("a*b*a", "aba", true),
            ("a*b*a", "aa", false),
            // The prefix and suffix must not overlap.
            ("ab*ba", "aba", false),
            ("ab*ba", "abba", true),
            ("a*a", "a", false),
            // Non-ASCII names (only reachable unchecked) cut at character boundaries.
            ("é*é", "é", false),
            ("é*é", "éxé", true),
        ];
        for (pattern, name, want) in cases {
            let got = MetricGlob::new(pattern).matches(name);
            assert_eq!(got, want, "{pattern:?} ~ {name:?}");
        }
    }

    #[test]
    fn check_table() {
        let bad = |pattern: &str, c: char| {
            Err(format!(
                "invalid metric pattern {pattern:?}: {c:?} cannot appear in a metric name; \
                 only * is a wildcard"
            ))
        };
        let cases = [
            ("vla.customer.inference.duration", Ok(())),
            ("vla.safety.*", Ok(())),
            ("*", Ok(())),
            ("a**", Ok(())),
            ("http.server/request-duration:sum_2", Ok(())),
            ("", Err(BLANK.to_owned())),
            (" ", Err(BLANK.to_owned())),
            ("\t", Err(BLANK.to_owned())),
            ("vla safety", bad("vla safety", ' ')),
            (" vla.x", bad(" vla.x", ' ')),
            ("vla.x\t", bad("vla.x\t", '\t')),
            ("vla.[ab]", bad("vla.[ab]", '[')),
            ("vla.[x]", bad("vla.[x]", '[')),
            ("vla.?", bad("vla.?", '?')),
            ("vla.{a,b}", bad("vla.{a,b}", '{')),
            ("vla.x}", bad("vla.x}", '}')),
            ("vla|x", bad("vla|x", '|')),
            ("vla.é", bad("vla.é", 'é')),
        ];
        for (pattern, want) in cases {
            assert_eq!(MetricGlob::check(pattern), want, "{pattern:?}");
        }
    }

    #[test]
    fn scalars_become_their_text() {
        let cases = [
            ("enterprise", "enterprise"),
            ("\"1\"", "1"),
            ("true", "true"),
            ("false", "false"),
            ("42", "42"),
            ("-7", "-7"),
            ("0.5", "0.5"),
            ("1.0", "1"),
        ];
        for (yaml, want) in cases {
            let got: ScalarText = serde_saphyr::from_str(yaml).unwrap();
            assert_eq!(got, ScalarText(want.to_owned()), "{yaml}");
        }
        let got: ScalarText = serde_json::from_value(serde_json::json!(true)).unwrap();
        assert_eq!(got.0, "true");
        for yaml in ["[a]", "{ a: b }"] {
            let err = serde_saphyr::from_str::<ScalarText>(yaml)
                .unwrap_err()
                .to_string();
            assert!(err.contains("a string, number or boolean"), "{yaml}: {err}");
        }
    }
}
