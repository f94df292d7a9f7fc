//! The samples each kind of point yields (gauge, sum, histogram, exponential histogram,
//! summary), and the drops of what Prometheus cannot take (deltas, unspecified temporality,
//! exponential scales below -4, points without a value).

use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, HistogramDataPoint, Metric, NumberDataPoint, metric, number_data_point,
};

use std::sync::Arc;

use super::super::labels::Mark;
use super::super::names::PromType;
use super::super::sink::{Family, Sample, SampleSink};
use super::super::{
    DROP_DELTA, DROP_NO_VALUE, DROP_UNSPECIFIED_TEMPORALITY, DROP_UNSUPPORTED_SCHEMA,
    ExponentialHistograms, STALE_NAN_BITS, exponential,
};
use super::{Attrs, Clock, TranslateStats, Translator};

/// Whether points of this temporality can be sent; delta and unspecified ones are counted
/// as dropped (a pipeline needs the `deltatocumulative` processor before the exporter).
fn cumulative(temporality: i32, points: usize, stats: &mut TranslateStats) -> bool {
    if temporality == AggregationTemporality::Cumulative as i32 {
        return true;
    }
    let reason = if temporality == AggregationTemporality::Delta as i32 {
        DROP_DELTA
    } else {
        DROP_UNSPECIFIED_TEMPORALITY
    };
    stats.drop(reason, points as u64);
    false
}

impl Translator {
    #[allow(clippy::too_many_lines)]
    pub(super) fn metric(
        &mut self,
        m: &Metric,
        scope_mark: Mark,
        clock: &mut Clock,
        stats: &mut TranslateStats,
        sink: &mut impl SampleSink,
    ) {
        let Some(data) = &m.data else { return };
        let stale = f64::from_bits(STALE_NAN_BITS);
        match data {
            metric::Data::Gauge(g) => {
                let points = g.data_points.len();
                let Some((base, ty)) = self.number_family(&m.name, &m.unit, None, points, stats)
                else {
                    return;
                };
                let family = Family {
                    name: &base,
                    ty,
                    help: &m.description,
                };
                for p in &g.data_points {
                    self.number_point(NumberPoint::of(p), family, clock, scope_mark, stats, sink);
                }
            }
            metric::Data::Sum(s) => {
                let sum = Some((s.aggregation_temporality, s.is_monotonic));
                let points = s.data_points.len();
                let Some((base, ty)) = self.number_family(&m.name, &m.unit, sum, points, stats)
                else {
                    return;
                };
                let family = Family {
                    name: &base,
                    ty,
                    help: &m.description,
                };
                for p in &s.data_points {
                    self.number_point(NumberPoint::of(p), family, clock, scope_mark, stats, sink);
                }
            }
            metric::Data::Histogram(h) => {
                let temporality = h.aggregation_temporality;
                let points = h.data_points.len();
                let Some([base, bucket, sum_name, count_name]) =
                    self.histogram_family(&m.name, &m.unit, temporality, points, stats)
                else {
                    return;
                };
                let family = Family {
                    name: &base,
                    ty: PromType::Histogram,
                    help: &m.description,
                };
                let names = [&*bucket, &*sum_name, &*count_name];
                for p in &h.data_points {
                    let point = HistogramPoint::of(p);
                    self.histogram_point(&point, family, names, clock, scope_mark, stats, sink);
                }
            }
            metric::Data::Summary(s) => {
                let points = s.data_points.len();
                let Some(names) =
                    self.family_names(&m.name, &m.unit, PromType::Summary, points, stats)
                else {
                    return;
                };
                let (base, sum_name, count_name) =
                    (names.base.clone(), names.sum.clone(), names.count.clone());
                let family = Family {
                    name: &base,
                    ty: PromType::Summary,
                    help: &m.description,
                };
                for p in &s.data_points {
                    self.point_labels_cached(scope_mark, Attrs::Decoded(&p.attributes), sink);
                    self.quantiles
                        .update(p.quantile_values.iter().map(|q| q.quantile));
                    let ts = clock.ms(p.time_unix_nano);
                    clock.note(ts);
                    let no_value = p.flags & 1 != 0;
                    let v = |x: f64| if no_value { stale } else { x };
                    let mut emit = |name: &str, extra: Option<(&'static str, &str)>, value: f64| {
                        self.emit(sink, family, ts, name, extra, value);
                    };
                    for (i, q) in p.quantile_values.iter().enumerate() {
                        emit(&base, Some(("quantile", self.quantiles.get(i))), v(q.value));
                    }
                    emit(&sum_name, None, v(p.sum));
                    emit(&count_name, None, v(p.count as f64));
                    stats.samples += p.quantile_values.len() as u64 + 2;
                    stats.points += 1;
                }
            }
            metric::Data::ExponentialHistogram(h) => {
                let temporality = h.aggregation_temporality;
                let points = h.data_points.len();
                let Some([base, bucket, sum_name, count_name]) =
                    self.histogram_family(&m.name, &m.unit, temporality, points, stats)
                else {
                    return;
                };
                let family = Family {
                    name: &base,
                    ty: PromType::Histogram,
                    help: &m.description,
                };
                let classic = match &self.options.exponential {
                    ExponentialHistograms::Native => None,
                    ExponentialHistograms::Classic(bounds) => Some(bounds.clone()),
                };
                if let Some(bounds) = &classic {
                    self.les.update(bounds.iter().copied());
                }
                for p in &h.data_points {
                    let ts = clock.ms(p.time_unix_nano);
                    let no_value = p.flags & 1 != 0;
                    let Some(bounds) = &classic else {
                        let Some(native) = exponential::to_native(p, ts, no_value) else {
                            stats.drop(DROP_UNSUPPORTED_SCHEMA, 1);
                            continue;
                        };
                        self.point_labels_cached(scope_mark, Attrs::Decoded(&p.attributes), sink);
                        clock.note(ts);
                        sink.native_histogram(
                            &Sample {
                                family,
                                name: &base,
                                labels: &self.labels,
                                extra: None,
                                label_set_id: self.label_set_id,
                                value: 0.0,
                                timestamp_ms: ts,
                            },
                            &native,
                        );
                        stats.samples += 1;
                        stats.points += 1;
                        continue;
                    };
                    self.point_labels_cached(scope_mark, Attrs::Decoded(&p.attributes), sink);
                    clock.note(ts);
                    let counts = exponential::to_classic(p, bounds);
                    let names = [&*bucket, &*sum_name, &*count_name];
                    let (count, sum) = (p.count, p.sum);
                    self.classic(
                        sink,
                        family,
                        names,
                        ts,
                        counts.into_iter(),
                        count,
                        sum,
                        no_value,
                        stats,
                    );
                }
            }
        }
    }

    /// The classic series of one histogram point (whose labels are `self.labels`): a
    /// `_bucket` per bound with the `cumulative` counts, `+Inf`, `_sum` when known and
    /// `_count`; `names` are the bucket, sum and count names.
    #[allow(clippy::too_many_arguments)]
    fn classic(
        &self,
        sink: &mut impl SampleSink,
        family: Family<'_>,
        [bucket, sum_name, count_name]: [&str; 3],
        ts: i64,
        cumulative: impl Iterator<Item = u64>,
        count: u64,
        sum: Option<f64>,
        no_value: bool,
        stats: &mut TranslateStats,
    ) {
        let stale = f64::from_bits(STALE_NAN_BITS);
        let v = |x: f64| if no_value { stale } else { x };
        let mut n = 2u64;
        for (i, c) in cumulative.enumerate() {
            self.emit(
                sink,
                family,
                ts,
                bucket,
                Some(("le", self.les.get(i))),
                v(c as f64),
            );
            n += 1;
        }
        self.emit(
            sink,
            family,
            ts,
            bucket,
            Some(("le", "+Inf")),
            v(count as f64),
        );
        if let Some(sum) = sum {
            self.emit(sink, family, ts, sum_name, None, v(sum));
            n += 1;
        }
        self.emit(sink, family, ts, count_name, None, v(count as f64));
        stats.samples += n;
        stats.points += 1;
    }

    /// Hands one sample of the current point (whose labels are `self.labels`) to the sink.
    fn emit(
        &self,
        sink: &mut impl SampleSink,
        family: Family<'_>,
        timestamp_ms: i64,
        name: &str,
        extra: Option<(&'static str, &str)>,
        value: f64,
    ) {
        sink.sample(&Sample {
            family,
            name,
            labels: &self.labels,
            extra,
            label_set_id: self.label_set_id,
            value,
            timestamp_ms,
        });
    }

    /// The family name and type of a gauge's points (`sum: None`) or a sum's (`Some`, with
    /// its temporality and monotonicity), or `None` when they are dropped (counted in
    /// `stats`): a sum not cumulative, or a name that collides.
    pub(super) fn number_family(
        &mut self,
        name: &str,
        unit: &str,
        sum: Option<(i32, bool)>,
        points: usize,
        stats: &mut TranslateStats,
    ) -> Option<(Arc<str>, PromType)> {
        let (ty, unit) = match sum {
            None => (PromType::Gauge, unit),
            Some((temporality, monotonic)) => {
                if !cumulative(temporality, points, stats) {
                    return None;
                }
                // `1` becomes `_ratio` on OTel gauges only: an UpDownCounter of unit `1` (a
                // queue depth, say) is a plain count and gets no suffix.
                let unit = if !monotonic && unit.trim() == "1" {
                    ""
                } else {
                    unit
                };
                let ty = if monotonic {
                    PromType::Counter
                } else {
                    PromType::Gauge
                };
                (ty, unit)
            }
        };
        let names = self.family_names(name, unit, ty, points, stats)?;
        Some((names.base.clone(), ty))
    }

    /// The base, bucket, sum and count names of a histogram's points, or `None` when they
    /// are dropped (not cumulative, or a name that collides).
    pub(super) fn histogram_family(
        &mut self,
        name: &str,
        unit: &str,
        temporality: i32,
        points: usize,
        stats: &mut TranslateStats,
    ) -> Option<[Arc<str>; 4]> {
        if !cumulative(temporality, points, stats) {
            return None;
        }
        let names = self.family_names(name, unit, PromType::Histogram, points, stats)?;
        Some([
            names.base.clone(),
            names.bucket.clone(),
            names.sum.clone(),
            names.count.clone(),
        ])
    }

    /// The sample of one gauge or sum point.
    pub(super) fn number_point(
        &mut self,
        p: NumberPoint<'_>,
        family: Family<'_>,
        clock: &mut Clock,
        scope_mark: Mark,
        stats: &mut TranslateStats,
        sink: &mut impl SampleSink,
    ) {
        let value = if p.flags & 1 != 0 {
            f64::from_bits(STALE_NAN_BITS)
        } else {
            match p.value {
                // Any NaN a client sends is the plain NaN: never the stale marker's bits.
                Some(number_data_point::Value::AsDouble(d)) if d.is_nan() => f64::NAN,
                Some(number_data_point::Value::AsDouble(d)) => d,
                Some(number_data_point::Value::AsInt(i)) => i as f64,
                None => {
                    stats.drop(DROP_NO_VALUE, 1);
                    return;
                }
            }
        };
        self.point_labels_cached(scope_mark, p.attrs, sink);
        let ts = clock.ms(p.time_unix_nano);
        clock.note(ts);
        self.emit(sink, family, ts, family.name, None, value);
        stats.samples += 1;
        stats.points += 1;
    }

    /// The series of one histogram point; `names` are the bucket, sum and count names.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn histogram_point(
        &mut self,
        p: &HistogramPoint<'_>,
        family: Family<'_>,
        names: [&str; 3],
        clock: &mut Clock,
        scope_mark: Mark,
        stats: &mut TranslateStats,
        sink: &mut impl SampleSink,
    ) {
        self.point_labels_cached(scope_mark, p.attrs, sink);
        self.les.update(p.explicit_bounds.iter().copied());
        let ts = clock.ms(p.time_unix_nano);
        clock.note(ts);
        let buckets = p.explicit_bounds.len().min(p.bucket_counts.len());
        let cumulative = p.bucket_counts.iter().take(buckets).scan(0u64, |acc, c| {
            *acc = acc.saturating_add(*c);
            Some(*acc)
        });
        let no_value = p.flags & 1 != 0;
        self.classic(
            sink, family, names, ts, cumulative, p.count, p.sum, no_value, stats,
        );
    }
}

/// The fields of a gauge or sum point that its sample is made of, read from a decoded point
/// or from its bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct NumberPoint<'a> {
    pub attrs: Attrs<'a>,
    pub time_unix_nano: u64,
    pub flags: u32,
    pub value: Option<number_data_point::Value>,
}

impl<'a> NumberPoint<'a> {
    fn of(p: &'a NumberDataPoint) -> Self {
        Self {
            attrs: Attrs::Decoded(&p.attributes),
            time_unix_nano: p.time_unix_nano,
            flags: p.flags,
            value: p.value,
        }
    }
}

/// The fields of a histogram point that its series are made of.
#[derive(Debug, Clone, Copy)]
pub(super) struct HistogramPoint<'a> {
    pub attrs: Attrs<'a>,
    pub time_unix_nano: u64,
    pub flags: u32,
    pub count: u64,
    pub sum: Option<f64>,
    pub bucket_counts: &'a [u64],
    pub explicit_bounds: &'a [f64],
}

impl<'a> HistogramPoint<'a> {
    fn of(p: &'a HistogramDataPoint) -> Self {
        Self {
            attrs: Attrs::Decoded(&p.attributes),
            time_unix_nano: p.time_unix_nano,
            flags: p.flags,
            count: p.count,
            sum: p.sum,
            bucket_counts: &p.bucket_counts,
            explicit_bounds: &p.explicit_bounds,
        }
    }
}
