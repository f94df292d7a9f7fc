//! Dropping the customer id from a metric's points, then merging the points that now share
//! a label set, so the output has one point per series again.
//!
//! The math, per kind (only points of one `Metric` message are merged):
//! - sums: values added (int + int stays int, saturating; otherwise double); the temporality
//!   is the metric's, so it is the same for every point;
//! - gauges: values added, which suits gauges that count something per customer (in-flight
//!   requests, quota used) and not ratios or temperatures;
//! - explicit histograms: counts, bucket counts and sums added, min of mins, max of maxes, when
//!   every point of the metric has the same bounds; otherwise the metric keeps its ids
//!   (skipped, reason `histogram_bounds`);
//! - exponential histograms and summaries keep their ids (skipped): their scales or quantiles
//!   cannot be added.
//!
//! Every merge keeps the earliest start time and the latest time, concatenates exemplars, and
//! ignores a point flagged "no recorded value" unless all of them are.

use std::hash::{BuildHasher, Hash, Hasher};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    DataPointFlags, Exemplar, HistogramDataPoint, Metric, NumberDataPoint, metric,
    number_data_point,
};

/// Why a matched metric kept its customer ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SkipReason {
    /// Exponential histograms are not merged.
    ExponentialHistogram,
    /// Summaries are not merged.
    Summary,
    /// The histogram's points have different bucket bounds.
    HistogramBounds,
}

impl SkipReason {
    /// The `reason` label of the skipped counter.
    pub(crate) fn label(self) -> &'static str {
        match self {
            SkipReason::ExponentialHistogram => "exponential_histogram",
            SkipReason::Summary => "summary",
            SkipReason::HistogramBounds => "histogram_bounds",
        }
    }
}

/// What dropping the id did to one metric.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DropOutcome {
    /// Points folded into another one (the metric has this many fewer).
    pub(crate) merged: usize,
    /// Points that kept their id, and why.
    pub(crate) skipped: Option<(SkipReason, usize)>,
}

/// The merge's working memory, kept by the processor so that merging allocates nothing once
/// it has seen its largest metric. Cleared at each use.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// Attribute-set hash → index of the first kept point with that hash.
    first_by_hash: hashbrown::HashMap<u64, usize, foldhash::fast::RandomState>,
}

/// Removes attribute `key` from the points of `metric` and merges the points that then share
/// their attributes.
pub(crate) fn drop_key_and_merge(
    metric: &mut Metric,
    key: &str,
    scratch: &mut Scratch,
) -> DropOutcome {
    let skipped = |reason, n: usize| DropOutcome {
        merged: 0,
        skipped: (n > 0).then_some((reason, n)),
    };
    match &mut metric.data {
        Some(metric::Data::Gauge(g)) => number(&mut g.data_points, key, scratch),
        Some(metric::Data::Sum(s)) => number(&mut s.data_points, key, scratch),
        Some(metric::Data::Histogram(h)) => {
            let carrying = count_carrying(h.data_points.iter().map(|p| &p.attributes[..]), key);
            if carrying == 0 {
                return DropOutcome::default();
            }
            if let Some(first) = h.data_points.first()
                && !h.data_points.iter().all(|p| {
                    p.explicit_bounds == first.explicit_bounds
                        && p.bucket_counts.len() == first.bucket_counts.len()
                })
            {
                return skipped(SkipReason::HistogramBounds, carrying);
            }
            for p in &mut h.data_points {
                vla_pipeline::remove_attr(&mut p.attributes, key);
            }
            DropOutcome {
                merged: merge_by_attrs(
                    &mut h.data_points,
                    |p| &p.attributes,
                    fold::<HistogramDataPoint>,
                    scratch,
                ),
                skipped: None,
            }
        }
        Some(metric::Data::ExponentialHistogram(h)) => skipped(
            SkipReason::ExponentialHistogram,
            count_carrying(h.data_points.iter().map(|p| &p.attributes[..]), key),
        ),
        Some(metric::Data::Summary(s)) => skipped(
            SkipReason::Summary,
            count_carrying(s.data_points.iter().map(|p| &p.attributes[..]), key),
        ),
        None => DropOutcome::default(),
    }
}

fn count_carrying<'a>(attrs: impl Iterator<Item = &'a [KeyValue]>, key: &str) -> usize {
    attrs.filter(|a| a.iter().any(|kv| kv.key == key)).count()
}

fn number(points: &mut Vec<NumberDataPoint>, key: &str, scratch: &mut Scratch) -> DropOutcome {
    let mut removed = 0;
    for p in points.iter_mut() {
        if vla_pipeline::remove_attr(&mut p.attributes, key).is_some() {
            removed += 1;
        }
    }
    if removed == 0 {
        return DropOutcome::default();
    }
    DropOutcome {
        merged: merge_by_attrs(points, |p| &p.attributes, fold::<NumberDataPoint>, scratch),
        skipped: None,
    }
}

/// Folds together the points whose attribute sets are equal (in any order), keeping the
/// first occurrence's position; returns how many points were folded away. Works in place:
/// kept points are compacted to the front, folded ones are taken out (leaving a default).
pub(crate) fn merge_by_attrs<P: Default>(
    points: &mut Vec<P>,
    attrs: impl Fn(&P) -> &Vec<KeyValue>,
    fold: impl Fn(&mut P, P),
    scratch: &mut Scratch,
) -> usize {
    let before = points.len();
    if before < 2 {
        return 0;
    }
    let first_by_hash = &mut scratch.first_by_hash;
    first_by_hash.clear();
    first_by_hash.reserve(before);
    // Points `..kept` are the output so far; `kept..read` are emptied slots.
    let mut kept = 0;
    for read in 0..before {
        let h = attrs_hash(attrs(&points[read]));
        let target = match first_by_hash.get(&h) {
            Some(&i) if same_attrs(attrs(&points[i]), attrs(&points[read])) => Some(i),
            // A hash collision between different sets: rare, so a scan is fine.
            Some(_) => points[..kept]
                .iter()
                .position(|o| same_attrs(attrs(o), attrs(&points[read]))),
            None => None,
        };
        match target {
            Some(i) => {
                let p = std::mem::take(&mut points[read]);
                fold(&mut points[i], p);
            }
            None => {
                first_by_hash.entry(h).or_insert(kept);
                points.swap(kept, read);
                kept += 1;
            }
        }
    }
    points.truncate(kept);
    before - kept
}

/// A hash of an attribute set that does not depend on the attributes' order.
fn attrs_hash(attrs: &[KeyValue]) -> u64 {
    let state = foldhash::fast::FixedState::default();
    attrs.iter().fold(0u64, |acc, kv| {
        let mut h = state.build_hasher();
        kv.key.hash(&mut h);
        hash_value(kv.value.as_ref(), &mut h);
        acc.wrapping_add(h.finish())
    })
}

fn hash_value(v: Option<&AnyValue>, h: &mut impl Hasher) {
    match v.and_then(|v| v.value.as_ref()) {
        None => 0u8.hash(h),
        Some(any_value::Value::StringValue(s)) => (1u8, s).hash(h),
        Some(any_value::Value::BoolValue(b)) => (2u8, b).hash(h),
        Some(any_value::Value::IntValue(i)) => (3u8, i).hash(h),
        Some(any_value::Value::DoubleValue(d)) => (4u8, d.to_bits()).hash(h),
        Some(any_value::Value::BytesValue(b)) => (5u8, b).hash(h),
        Some(any_value::Value::ArrayValue(a)) => {
            6u8.hash(h);
            for v in &a.values {
                hash_value(Some(v), h);
            }
        }
        Some(any_value::Value::KvlistValue(l)) => {
            7u8.hash(h);
            for kv in &l.values {
                kv.key.hash(h);
                hash_value(kv.value.as_ref(), h);
            }
        }
        Some(any_value::Value::StringValueStrindex(i)) => (8u8, i).hash(h),
    }
}

/// Whether two attribute sets hold the same key-value pairs, in any order.
fn same_attrs(a: &[KeyValue], b: &[KeyValue]) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|x| b.iter().any(|y| y.key == x.key && y.value == x.value))
}

const NO_RECORDED_VALUE: u32 = DataPointFlags::NoRecordedValueMask as u32;

fn no_value(flags: u32) -> bool {
    flags & NO_RECORDED_VALUE != 0
}

/// Earliest start (0 = unknown) and latest time.
fn fold_times(start: &mut u64, time: &mut u64, other_start: u64, other_time: u64) {
    *start = match (*start, other_start) {
        (0, s) | (s, 0) => s,
        (a, b) => a.min(b),
    };
    *time = (*time).max(other_time);
}

/// What two points of one series have in common for a merge: times, exemplars, flags.
trait Folded: Sized {
    fn times(&mut self) -> (&mut u64, &mut u64);
    fn exemplars(&mut self) -> &mut Vec<Exemplar>;
    fn flags(&mut self) -> &mut u32;
    /// Adds `other`'s values; both have recorded values.
    fn add(&mut self, other: Self);
}

/// Folds `p` into `into`: earliest start, latest time, both exemplar lists; then the values
/// added, or `p`'s taken whole when `into` has none, or nothing when `p` has none.
fn fold<P: Folded>(into: &mut P, mut p: P) {
    let (start, time) = p.times();
    let (other_start, other_time) = (*start, *time);
    let (start, time) = into.times();
    fold_times(start, time, other_start, other_time);
    into.exemplars().append(p.exemplars());
    if no_value(*p.flags()) {
        return;
    }
    if no_value(*into.flags()) {
        let (start, time) = into.times();
        let (start, time) = (*start, *time);
        let exemplars = std::mem::take(into.exemplars());
        *into = p;
        let (s, t) = into.times();
        (*s, *t) = (start, time);
        *into.exemplars() = exemplars;
        *into.flags() &= !NO_RECORDED_VALUE;
        return;
    }
    into.add(p);
}

impl Folded for NumberDataPoint {
    fn times(&mut self) -> (&mut u64, &mut u64) {
        (&mut self.start_time_unix_nano, &mut self.time_unix_nano)
    }
    fn exemplars(&mut self) -> &mut Vec<Exemplar> {
        &mut self.exemplars
    }
    fn flags(&mut self) -> &mut u32 {
        &mut self.flags
    }
    fn add(&mut self, other: Self) {
        self.value = add_numbers(self.value, other.value);
    }
}

fn add_numbers(
    a: Option<number_data_point::Value>,
    b: Option<number_data_point::Value>,
) -> Option<number_data_point::Value> {
    use number_data_point::Value::{AsDouble, AsInt};
    let as_f64 = |v| match v {
        AsInt(i) => i as f64,
        AsDouble(d) => d,
    };
    match (a, b) {
        (Some(AsInt(x)), Some(AsInt(y))) => Some(AsInt(x.saturating_add(y))),
        (Some(x), Some(y)) => Some(AsDouble(as_f64(x) + as_f64(y))),
        (x, None) => x,
        (None, y) => y,
    }
}

impl Folded for HistogramDataPoint {
    fn times(&mut self) -> (&mut u64, &mut u64) {
        (&mut self.start_time_unix_nano, &mut self.time_unix_nano)
    }
    fn exemplars(&mut self) -> &mut Vec<Exemplar> {
        &mut self.exemplars
    }
    fn flags(&mut self) -> &mut u32 {
        &mut self.flags
    }
    /// Same bounds (checked before merging): counts, buckets and sum add; min and max combine.
    fn add(&mut self, p: Self) {
        let (a, b) = (self.count, p.count);
        self.sum = combine(self.sum, p.sum, a, b, |x, y| x + y);
        self.min = combine(self.min, p.min, a, b, f64::min);
        self.max = combine(self.max, p.max, a, b, f64::max);
        self.count = a.saturating_add(b);
        for (c, d) in self.bucket_counts.iter_mut().zip(&p.bucket_counts) {
            *c = c.saturating_add(*d);
        }
    }
}

/// Combines an optional statistic of two points with `a` and `b` observations: a point with
/// none contributes nothing; otherwise both must have it, or the result is unknown.
fn combine(x: Option<f64>, y: Option<f64>, a: u64, b: u64, f: fn(f64, f64) -> f64) -> Option<f64> {
    if b == 0 {
        return x;
    }
    if a == 0 {
        return y;
    }
    match (x, y) {
        (Some(x), Some(y)) => Some(f(x, y)),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
