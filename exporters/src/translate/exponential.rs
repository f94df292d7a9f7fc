//! OpenTelemetry exponential histograms for Prometheus, two ways:
//!
//! - **Native histograms** (remote write's `histograms` field). The OTLP scale is the
//!   Prometheus schema; scales above 8 are merged down to 8 (each step adds pairs of buckets),
//!   scales below -4 cannot be expressed and the point is dropped (`unsupported_schema`). OTLP
//!   bucket `i` holds (base^i, base^(i+1)], Prometheus bucket `i` holds (base^(i-1), base^i], so
//!   an index moves up by one.
//! - **Classic buckets** at fixed bounds (the scrape endpoint, or remote write with
//!   `send_native_histograms: false`). Each exponential bucket is counted in the first classic
//!   bucket whose bound is at or above the exponential bucket's upper end; a bucket that
//!   straddles a bound counts above it. So `le` counts never exceed the truth, and undercount
//!   it by at most the points of the one exponential bucket that straddles the bound (a
//!   relative width of 2^(2^-scale) - 1: 9 % at scale 3, 0.5 % at scale 7).

/// The default classic bounds: the OpenTelemetry SDKs' default explicit-bucket boundaries.
pub const DEFAULT_CLASSIC_BOUNDS: [f64; 15] = [
    0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0,
    10000.0,
];

/// The most detailed schema Prometheus accepts, and the coarsest.
pub const MAX_SCHEMA: i32 = 8;
/// See [`MAX_SCHEMA`].
pub const MIN_SCHEMA: i32 = -4;

/// How exponential histograms are written.
#[derive(Debug, Clone, PartialEq)]
pub enum ExponentialHistograms {
    /// As native histograms ([`crate::translate::SampleSink::native_histogram`]).
    Native,
    /// As classic `_bucket{le}`, `_sum`, `_count` series at these (increasing) bounds.
    Classic(Vec<f64>),
}

impl Default for ExponentialHistograms {
    fn default() -> Self {
        ExponentialHistograms::Classic(DEFAULT_CLASSIC_BOUNDS.to_vec())
    }
}

/// Consecutive buckets of one sign, Prometheus-indexed: `counts[k]` is bucket `first + k`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NativeBuckets {
    /// The Prometheus index of the first bucket.
    pub first: i32,
    /// Absolute counts.
    pub counts: Vec<u64>,
}

/// One native histogram sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NativeHistogram {
    /// Observations.
    pub count: u64,
    /// Their sum (the stale-marker NaN for a point flagged "no recorded value").
    pub sum: f64,
    /// The Prometheus schema (-4..=8).
    pub schema: i32,
    /// Observations at or near zero, and the width of that bucket.
    pub zero_count: u64,
    /// See `zero_count`.
    pub zero_threshold: f64,
    /// Buckets of positive observations.
    pub positive: NativeBuckets,
    /// Buckets of negative observations (by absolute value).
    pub negative: NativeBuckets,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

/// Merges OTLP buckets down by `by` scale steps and shifts them to Prometheus indexes.
fn native_buckets(offset: i32, counts: &[u64], by: u32) -> NativeBuckets {
    let Some(last) = counts.len().checked_sub(1) else {
        return NativeBuckets::default();
    };
    let lo = i64::from(offset) >> by;
    let hi = (i64::from(offset) + last as i64) >> by;
    let mut out = vec![0u64; (hi - lo + 1) as usize];
    for (i, c) in counts.iter().enumerate() {
        let idx = ((i64::from(offset) + i as i64) >> by) - lo;
        out[idx as usize] = out[idx as usize].saturating_add(*c);
    }
    NativeBuckets {
        first: (lo + 1) as i32,
        counts: out,
    }
}

/// The native histogram of an OTLP point; `None` when its scale is below [`MIN_SCHEMA`].
pub fn to_native(
    p: &opentelemetry_proto::tonic::metrics::v1::ExponentialHistogramDataPoint,
    timestamp_ms: i64,
    stale: bool,
) -> Option<NativeHistogram> {
    if p.scale < MIN_SCHEMA {
        return None;
    }
    let by = (p.scale - p.scale.min(MAX_SCHEMA)) as u32;
    let side = |b: Option<
        &opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets,
    >| {
        b.map(|b| native_buckets(b.offset, &b.bucket_counts, by))
            .unwrap_or_default()
    };
    Some(NativeHistogram {
        count: p.count,
        sum: if stale {
            f64::from_bits(super::STALE_NAN_BITS)
        } else {
            p.sum.unwrap_or(0.0)
        },
        schema: p.scale.min(MAX_SCHEMA),
        zero_count: p.zero_count,
        zero_threshold: p.zero_threshold,
        positive: side(p.positive.as_ref()),
        negative: side(p.negative.as_ref()),
        timestamp_ms,
    })
}

/// The cumulative count at or below each of `bounds` (see the module doc for the rounding),
/// for an OTLP exponential point.
pub fn to_classic(
    p: &opentelemetry_proto::tonic::metrics::v1::ExponentialHistogramDataPoint,
    bounds: &[f64],
) -> Vec<u64> {
    // base^i as 2^(i·2^-scale): exact at integer powers of two (a bound of 4 or 8 then
    // compares equal), where repeated powf of an irrational base is not.
    let step = 2f64.powi(-p.scale);
    let power = |i: i64| (i as f64 * step).exp2();
    // Every bucket as (upper end, count), in increasing order of value.
    let mut spans: Vec<(f64, u64)> = Vec::new();
    if let Some(neg) = &p.negative {
        // Negative bucket i holds [-base^(i+1), -base^i): its upper end is -base^i.
        for (i, c) in neg.bucket_counts.iter().enumerate().rev() {
            let idx = i64::from(neg.offset) + i as i64;
            spans.push((-power(idx), *c));
        }
    }
    spans.push((p.zero_threshold, p.zero_count));
    if let Some(pos) = &p.positive {
        for (i, c) in pos.bucket_counts.iter().enumerate() {
            let idx = i64::from(pos.offset) + i as i64;
            spans.push((power(idx + 1), *c));
        }
    }
    let mut out = Vec::with_capacity(bounds.len());
    let (mut acc, mut k) = (0u64, 0usize);
    for b in bounds {
        while let Some((upper, c)) = spans.get(k) {
            if upper > b {
                break;
            }
            acc = acc.saturating_add(*c);
            k += 1;
        }
        out.push(acc);
    }
    out
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::metrics::v1::ExponentialHistogramDataPoint;
    use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;

    use super::*;

    fn point(scale: i32, offset: i32, counts: &[u64]) -> ExponentialHistogramDataPoint {
        ExponentialHistogramDataPoint {
            scale,
            count: counts.iter().sum::<u64>() + 1,
            sum: Some(10.0),
            zero_count: 1,
            positive: Some(Buckets {
                offset,
                bucket_counts: counts.to_vec(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn native_keeps_the_scale_and_shifts_indexes_by_one() {
        let h = to_native(&point(3, -2, &[1, 0, 4]), 7, false).unwrap();
        assert_eq!(h.schema, 3);
        assert_eq!(
            h.positive,
            NativeBuckets {
                first: -1,
                counts: vec![1, 0, 4]
            }
        );
        assert_eq!(
            (h.count, h.sum, h.zero_count, h.timestamp_ms),
            (6, 10.0, 1, 7)
        );
        assert_eq!(h.negative, NativeBuckets::default());
    }

    #[test]
    fn scales_above_8_merge_down_and_below_minus_4_are_refused() {
        // Scale 10 → 8: indexes 4..=7 become 1 (4>>2 = 1 .. 7>>2 = 1), 8 becomes 2.
        let h = to_native(&point(10, 4, &[1, 1, 1, 1, 5]), 0, false).unwrap();
        assert_eq!(h.schema, 8);
        assert_eq!(
            h.positive,
            NativeBuckets {
                first: 2,
                counts: vec![4, 5]
            }
        );
        // A negative offset rounds towards minus infinity: -3 >> 1 = -2.
        let h = to_native(&point(9, -3, &[2, 3]), 0, false).unwrap();
        assert_eq!(
            h.positive,
            NativeBuckets {
                first: -1,
                counts: vec![2, 3]
            }
        );
        assert!(to_native(&point(-5, 0, &[1]), 0, false).is_none());
        let stale = to_native(&point(0, 0, &[1]), 0, true).unwrap();
        assert_eq!(stale.sum.to_bits(), super::super::STALE_NAN_BITS);
    }

    #[test]
    fn classic_counts_each_bucket_at_the_first_bound_at_or_above_its_upper_end() {
        // Scale 0: bucket 0 = (1, 2], 1 = (2, 4], 2 = (4, 8].
        let p = point(0, 0, &[3, 5, 7]);
        assert_eq!(
            to_classic(&p, &[0.0, 2.0, 3.0, 4.0, 100.0]),
            vec![1, 4, 4, 9, 16]
        );
        // With negatives: bucket -1... -1 = [-1, -0.5): upper end -0.5.
        let mut p = point(0, 0, &[2]);
        p.negative = Some(Buckets {
            offset: -1,
            bucket_counts: vec![4],
        });
        assert_eq!(to_classic(&p, &[-1.0, -0.5, 0.0, 2.0]), vec![0, 4, 5, 7]);
        // Scale 1: bucket 3 = (2.83, 4] ends exactly at 4.
        let p = point(1, 2, &[3, 1]);
        assert_eq!(to_classic(&p, &[4.0]), vec![5]);
    }
}
