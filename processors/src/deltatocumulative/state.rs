//! A stream's accumulated state and the rules for adding one delta point to it: the time
//! checks (in order, gap, out of order) and the sums of numbers, explicit-bucket histograms
//! and exponential histograms (merged at the coarser of the two scales).

use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets as OtlpBuckets;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
use opentelemetry_proto::tonic::metrics::v1::{ExponentialHistogramDataPoint, HistogramDataPoint};

/// The most buckets per sign an accumulated exponential histogram keeps (the OpenTelemetry
/// SDK's default `max_size`); wider inputs keep their own width.
pub(super) const MAX_EXP_BUCKETS: usize = 160;

/// One stream's state.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Stream {
    /// The start time every emitted point carries: the first point's start (its time when
    /// the client sent no start).
    pub start: u64,
    /// The time of the last accepted point.
    pub last: u64,
    /// When the collector last received a point of it (Unix seconds), for `max_stale`.
    pub seen: u64,
    /// The running total.
    pub acc: Acc,
}

/// A running total.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Acc {
    /// An integer sum (it becomes a double on overflow or when a double arrives).
    Int(i64),
    /// A double sum.
    Double(f64),
    /// An explicit-bucket histogram (boxed: a sum stream stays small).
    Hist(Box<Hist>),
    /// An exponential histogram.
    Exp(Box<Exp>),
}

/// An explicit-bucket histogram's running total.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Hist {
    pub count: u64,
    pub sum: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub buckets: Vec<u64>,
    /// A stable hash of the bounds: points with other bounds start the stream over.
    pub bounds: u64,
}

/// An exponential histogram's running total.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Exp {
    pub count: u64,
    pub sum: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub scale: i32,
    pub zero_count: u64,
    pub zero_threshold: f64,
    pub positive: Buckets,
    pub negative: Buckets,
}

/// Consecutive exponential buckets from index `offset`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Buckets {
    pub offset: i32,
    pub counts: Vec<u64>,
}

/// What happened to a delta point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Added to the stream's total.
    Accumulated,
    /// Its layout (value type, histogram bounds, zero threshold) differs from the stream's:
    /// the stream starts over from this point.
    LayoutReset,
}

/// Whether a point starting at `start` and ending at `time` may follow `stream`'s last point:
/// it must start at or after it (a gap, such as a restarted client, continues the series).
/// A point without a start time must end after it.
pub(super) fn in_order(stream: &Stream, start: u64, time: u64) -> bool {
    if start == 0 {
        time > stream.last
    } else {
        start >= stream.last && time >= stream.last
    }
}

/// The start time a new stream emits.
pub(super) fn first_start(start: u64, time: u64) -> u64 {
    if start == 0 { time } else { start }
}

/// A stable 64-bit hash of histogram bounds.
pub(super) fn bounds_hash(bounds: &[f64]) -> u64 {
    let mut bytes = Vec::with_capacity(bounds.len() * 8);
    for b in bounds {
        bytes.extend_from_slice(&b.to_bits().to_le_bytes());
    }
    twox_hash::XxHash3_128::oneshot(&bytes) as u64
}

impl Acc {
    /// The total of a first number point.
    pub fn number(v: Value) -> Self {
        match v {
            Value::AsInt(i) => Acc::Int(i),
            Value::AsDouble(d) => Acc::Double(d),
        }
    }

    /// Adds a number point; a stream holding a histogram starts over.
    pub fn add_number(&mut self, v: Value) -> Outcome {
        let next = match (&*self, v) {
            (Acc::Int(a), Value::AsInt(b)) => match a.checked_add(b) {
                Some(s) => Acc::Int(s),
                None => Acc::Double(*a as f64 + b as f64),
            },
            (Acc::Int(a), Value::AsDouble(b)) => Acc::Double(*a as f64 + b),
            (Acc::Double(a), Value::AsInt(b)) => Acc::Double(a + b as f64),
            (Acc::Double(a), Value::AsDouble(b)) => Acc::Double(a + b),
            (Acc::Hist(_) | Acc::Exp(_), v) => {
                *self = Acc::number(v);
                return Outcome::LayoutReset;
            }
        };
        *self = next;
        Outcome::Accumulated
    }

    /// The total as a point value.
    pub fn value(&self) -> Option<Value> {
        match self {
            Acc::Int(i) => Some(Value::AsInt(*i)),
            Acc::Double(d) => Some(Value::AsDouble(*d)),
            Acc::Hist(_) | Acc::Exp(_) => None,
        }
    }

    /// The total of a first histogram point.
    pub fn hist(p: &HistogramDataPoint) -> Self {
        Acc::Hist(Box::new(Hist {
            count: p.count,
            sum: p.sum,
            min: p.min,
            max: p.max,
            buckets: p.bucket_counts.clone(),
            bounds: bounds_hash(&p.explicit_bounds),
        }))
    }

    /// Adds a histogram point; other bounds (or another kind) start the stream over.
    pub fn add_hist(&mut self, p: &HistogramDataPoint) -> Outcome {
        match self {
            Acc::Hist(h)
                if h.buckets.len() == p.bucket_counts.len()
                    && h.bounds == bounds_hash(&p.explicit_bounds) =>
            {
                h.count = h.count.saturating_add(p.count);
                h.sum = add_opt(h.sum, p.sum);
                h.min = min_opt(h.min, p.min);
                h.max = max_opt(h.max, p.max);
                for (a, b) in h.buckets.iter_mut().zip(&p.bucket_counts) {
                    *a = a.saturating_add(*b);
                }
                Outcome::Accumulated
            }
            _ => {
                *self = Acc::hist(p);
                Outcome::LayoutReset
            }
        }
    }

    /// Writes the total into a histogram point (its bounds are the stream's).
    pub fn write_hist(&self, p: &mut HistogramDataPoint) {
        if let Acc::Hist(h) = self {
            p.count = h.count;
            p.sum = h.sum;
            p.min = h.min;
            p.max = h.max;
            p.bucket_counts.clone_from(&h.buckets);
        }
    }

    /// The total of a first exponential histogram point.
    pub fn exp(p: &ExponentialHistogramDataPoint) -> Self {
        Acc::Exp(Box::new(Exp {
            count: p.count,
            sum: p.sum,
            min: p.min,
            max: p.max,
            scale: p.scale,
            zero_count: p.zero_count,
            zero_threshold: p.zero_threshold,
            positive: Buckets::from_otlp(p.positive.as_ref()),
            negative: Buckets::from_otlp(p.negative.as_ref()),
        }))
    }

    /// Adds an exponential histogram point at the coarser of the two scales (coarser still
    /// when the union would exceed [`MAX_EXP_BUCKETS`]); another zero threshold (or another
    /// kind) starts the stream over.
    pub fn add_exp(&mut self, p: &ExponentialHistogramDataPoint) -> Outcome {
        let Acc::Exp(e) = self else {
            *self = Acc::exp(p);
            return Outcome::LayoutReset;
        };
        if e.zero_threshold.to_bits() != p.zero_threshold.to_bits() {
            *self = Acc::exp(p);
            return Outcome::LayoutReset;
        }
        let pos = Buckets::from_otlp(p.positive.as_ref());
        let neg = Buckets::from_otlp(p.negative.as_ref());
        let limit = MAX_EXP_BUCKETS
            .max(e.positive.counts.len())
            .max(e.negative.counts.len())
            .max(pos.counts.len())
            .max(neg.counts.len());
        let mut scale = e.scale.min(p.scale);
        // Each step down halves every range, so this ends within 64 steps.
        while scale > -64
            && (union_width(&e.positive, e.scale, &pos, p.scale, scale) > limit
                || union_width(&e.negative, e.scale, &neg, p.scale, scale) > limit)
        {
            scale -= 1;
        }
        let own = (e.scale - scale) as u32;
        let theirs = (p.scale - scale) as u32;
        e.positive.downscale(own);
        e.negative.downscale(own);
        e.positive.add(&pos.downscaled(theirs));
        e.negative.add(&neg.downscaled(theirs));
        e.scale = scale;
        e.count = e.count.saturating_add(p.count);
        e.zero_count = e.zero_count.saturating_add(p.zero_count);
        e.sum = add_opt(e.sum, p.sum);
        e.min = min_opt(e.min, p.min);
        e.max = max_opt(e.max, p.max);
        Outcome::Accumulated
    }

    /// Writes the total into an exponential histogram point.
    pub fn write_exp(&self, p: &mut ExponentialHistogramDataPoint) {
        if let Acc::Exp(e) = self {
            p.count = e.count;
            p.sum = e.sum;
            p.min = e.min;
            p.max = e.max;
            p.scale = e.scale;
            p.zero_count = e.zero_count;
            p.zero_threshold = e.zero_threshold;
            p.positive = Some(e.positive.to_otlp());
            p.negative = Some(e.negative.to_otlp());
        }
    }
}

impl Buckets {
    fn from_otlp(b: Option<&OtlpBuckets>) -> Self {
        b.map(|b| Buckets {
            offset: b.offset,
            counts: b.bucket_counts.clone(),
        })
        .unwrap_or_default()
    }

    fn to_otlp(&self) -> OtlpBuckets {
        OtlpBuckets {
            offset: self.offset,
            bucket_counts: self.counts.clone(),
        }
    }

    /// The first and last index after lowering the scale by `by`; `None` when empty.
    fn range(&self, by: u32) -> Option<(i64, i64)> {
        if self.counts.is_empty() {
            return None;
        }
        let lo = i64::from(self.offset);
        let hi = lo + self.counts.len() as i64 - 1;
        Some((lo >> by, hi >> by))
    }

    /// The buckets at a scale lower by `by` (each step merges pairs of buckets).
    fn downscaled(&self, by: u32) -> Self {
        let Some((lo, hi)) = self.range(by) else {
            return Self::default();
        };
        if by == 0 {
            return self.clone();
        }
        let mut counts = vec![0u64; (hi - lo + 1) as usize];
        for (i, c) in self.counts.iter().enumerate() {
            let idx = ((i64::from(self.offset) + i as i64) >> by) - lo;
            counts[idx as usize] = counts[idx as usize].saturating_add(*c);
        }
        Self {
            offset: lo as i32,
            counts,
        }
    }

    fn downscale(&mut self, by: u32) {
        if by > 0 {
            *self = self.downscaled(by);
        }
    }

    /// Adds `other` (at the same scale), widening to the union of both ranges.
    fn add(&mut self, other: &Buckets) {
        let Some((olo, ohi)) = other.range(0) else {
            return;
        };
        let Some((lo, hi)) = self.range(0) else {
            *self = other.clone();
            return;
        };
        let (nlo, nhi) = (lo.min(olo), hi.max(ohi));
        if nlo < lo || nhi > hi {
            let mut counts = vec![0u64; (nhi - nlo + 1) as usize];
            let at = (lo - nlo) as usize;
            counts[at..at + self.counts.len()].copy_from_slice(&self.counts);
            self.counts = counts;
            self.offset = nlo as i32;
        }
        let at = (olo - nlo) as usize;
        for (a, b) in self.counts[at..].iter_mut().zip(&other.counts) {
            *a = a.saturating_add(*b);
        }
    }
}

/// How many buckets the union of `a` (at `a_scale`) and `b` (at `b_scale`) spans at `scale`.
fn union_width(a: &Buckets, a_scale: i32, b: &Buckets, b_scale: i32, scale: i32) -> usize {
    let ra = a.range((a_scale - scale) as u32);
    let rb = b.range((b_scale - scale) as u32);
    match (ra, rb) {
        (None, None) => 0,
        (Some((lo, hi)), None) | (None, Some((lo, hi))) => (hi - lo + 1) as usize,
        (Some((al, ah)), Some((bl, bh))) => (ah.max(bh) - al.min(bl) + 1) as usize,
    }
}

fn add_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? + b?)
}

/// The smaller of two known minimums: unknown when either is (a delta without a minimum
/// hides the true one).
fn min_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a?.min(b?))
}

/// The larger of two known maximums, as [`min_opt`].
fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a?.max(b?))
}
