//! Metric and label names: sanitising, unit suffixes, type suffixes.

use std::borrow::Cow;

/// The Prometheus type a metric becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PromType {
    /// A monotonic cumulative sum.
    Counter,
    /// A gauge, or a non-monotonic cumulative sum.
    Gauge,
    /// An explicit-bucket histogram.
    Histogram,
    /// A summary.
    Summary,
}

impl PromType {
    /// The word used in `# TYPE` lines.
    pub fn as_str(self) -> &'static str {
        match self {
            PromType::Counter => "counter",
            PromType::Gauge => "gauge",
            PromType::Histogram => "histogram",
            PromType::Summary => "summary",
        }
    }
}

/// UCUM units with a Prometheus word (the OpenTelemetry Collector's table).
fn main_unit_word(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tebibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        "$" => "dollars",
        _ => return None,
    })
}

/// The denominator of `X/Y` units, in the singular.
fn per_unit_word(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        _ => return None,
    })
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == ':'
}

/// The `_`-separated tokens of a name: everything outside `[a-zA-Z0-9:]` separates.
fn name_tokens(name: &str) -> impl Iterator<Item = &str> {
    name.split(|c: char| !is_name_char(c))
        .filter(|t| !t.is_empty())
}

/// Replaces everything outside `[a-zA-Z0-9]` with `_`, collapsing and trimming `_`.
fn sanitize_unit_word(unit: &str) -> String {
    let mut out = String::with_capacity(unit.len());
    for tok in unit
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
    {
        if !out.is_empty() {
            out.push('_');
        }
        out.push_str(tok);
    }
    out
}

/// The unit part of a Prometheus name for an OTel `unit` (without the leading `_`), or `None`
/// when the unit adds nothing (empty, `1` on non-gauges, only `{annotations}`).
pub fn unit_suffix(unit: &str, ty: PromType) -> Option<String> {
    let (main, per) = split_unit(unit);
    let mut out = String::new();
    if let Some(main) = main {
        out.push_str(&main);
    }
    if let Some(per) = per {
        if !out.is_empty() {
            out.push('_');
        }
        out.push_str("per_");
        out.push_str(&per);
    }
    if unit.trim() == "1" && ty == PromType::Gauge {
        out.push_str("ratio");
    }
    (!out.is_empty()).then_some(out)
}

/// Splits a UCUM unit into its translated numerator and denominator words.
fn split_unit(unit: &str) -> (Option<Cow<'static, str>>, Option<Cow<'static, str>>) {
    // `{annotations}` carry no unit; drop them, brackets included.
    let mut clean = String::with_capacity(unit.len());
    let mut depth = 0u32;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            c if depth == 0 => clean.push(c),
            _ => {}
        }
    }
    let clean = clean.trim();
    let (main, per) = match clean.split_once('/') {
        Some((m, p)) => (m.trim(), Some(p.trim())),
        None => (clean, None),
    };
    let word = |u: &str, table: fn(&str) -> Option<&'static str>| -> Option<Cow<'static, str>> {
        if u.is_empty() || u == "1" {
            return None;
        }
        match table(u) {
            Some(w) => Some(Cow::Borrowed(w)),
            None => {
                let s = sanitize_unit_word(u);
                (!s.is_empty()).then_some(Cow::Owned(s))
            }
        }
    };
    (
        word(main, main_unit_word),
        per.and_then(|p| word(p, per_unit_word)),
    )
}

fn contains_seq(tokens: &[&str], seq: &[&str]) -> bool {
    !seq.is_empty() && tokens.windows(seq.len()).any(|w| w == seq)
}

/// The full Prometheus family name of an OTel metric: sanitised name, unit suffix, `_total` for
/// counters, `namespace_` prefix. Histogram/summary series add `_bucket`, `_sum`, `_count`.
pub fn metric_name(name: &str, unit: &str, ty: PromType, namespace: Option<&str>) -> String {
    let mut tokens: Vec<&str> = name_tokens(name).collect();
    if ty == PromType::Counter && tokens.last() == Some(&"total") {
        tokens.pop();
    }
    let (main, per) = split_unit(unit);
    let mut suffix: Vec<String> = Vec::new();
    if let Some(main) = &main {
        let seq: Vec<&str> = main.split('_').collect();
        if !contains_seq(&tokens, &seq) {
            suffix.push(main.to_string());
        }
    }
    if let Some(per) = &per {
        let mut seq = vec!["per"];
        seq.extend(per.split('_'));
        if !contains_seq(&tokens, &seq) {
            suffix.push(format!("per_{per}"));
        }
    }
    if ty == PromType::Gauge && unit.trim() == "1" && !tokens.contains(&"ratio") {
        suffix.push("ratio".to_owned());
    }
    let mut out = String::with_capacity(name.len() + 16);
    if let Some(ns) = namespace.filter(|ns| !ns.is_empty()) {
        out.push_str(&sanitize_metric_name(ns));
        out.push('_');
    }
    let parts = tokens
        .iter()
        .copied()
        .chain(suffix.iter().map(String::as_str))
        .chain((ty == PromType::Counter).then_some("total"));
    let start = out.len();
    for part in parts {
        if out.len() > start {
            out.push('_');
        }
        out.push_str(part);
    }
    if out.is_empty() {
        out.push('_');
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Sanitises a bare metric name (no unit or type suffix).
pub fn sanitize_metric_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    for tok in name_tokens(name) {
        if !out.is_empty() {
            out.push('_');
        }
        out.push_str(tok);
    }
    if out.is_empty() {
        out.push('_');
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Whether `name` matches `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// Whether `name` matches `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether `key` is already a label name the sanitiser would leave unchanged (one pass).
pub(crate) fn is_clean_label_name(key: &str) -> bool {
    let bytes = key.as_bytes();
    let Some(&first) = bytes.first() else {
        return false;
    };
    if !(first.is_ascii_alphabetic() || first == b'_') {
        return false;
    }
    let mut prev_underscore = first == b'_';
    for &b in &bytes[1..] {
        let underscore = b == b'_';
        if !(b.is_ascii_alphanumeric() || underscore) || (underscore && prev_underscore) {
            return false;
        }
        prev_underscore = underscore;
    }
    true
}

/// Turns an attribute key into a label name: characters outside `[a-zA-Z0-9_]` become `_`,
/// runs of `_` collapse, a leading digit gets `key_`. Empty stays empty (the label is dropped).
pub fn sanitize_label_name(key: &str) -> Cow<'_, str> {
    if key.is_empty() || is_clean_label_name(key) {
        return Cow::Borrowed(key);
    }
    let mut out = String::with_capacity(key.len() + 4);
    if key.starts_with(|c: char| c.is_ascii_digit()) {
        out.push_str("key_");
    }
    for c in key.chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '_' };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    Cow::Owned(out)
}
