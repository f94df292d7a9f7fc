//! The samples each kind of point yields (gauge, sum, histogram, exponential histogram,
//! summary), and the drops of what Prometheus cannot take (deltas, unspecified temporality,
//! exponential scales below -4, points without a value).

use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Metric, NumberDataPoint, metric, number_data_point,
};

use super::super::labels::Mark;
use super::super::names::PromType;
use super::super::sink::{Family, Sample, SampleSink};
use super::super::{
    DROP_DELTA, DROP_NO_VALUE, DROP_UNSPECIFIED_TEMPORALITY, DROP_UNSUPPORTED_SCHEMA,
    ExponentialHistograms, STALE_NAN_BITS, exponential,
};
use super::{TranslateStats, Translator};

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
        fallback_ms: i64,
        latest_ms: &mut Option<i64>,
        stats: &mut TranslateStats,
        sink: &mut impl SampleSink,
    ) {
        let Some(data) = &m.data else { return };
        let ms = |nanos: u64| -> i64 {
            if nanos == 0 {
                fallback_ms
            } else {
                i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX)
            }
        };
        let mut note_ts = |t: i64| {
            if latest_ms.is_none_or(|l| t > l) {
                *latest_ms = Some(t);
            }
        };
        let stale = f64::from_bits(STALE_NAN_BITS);
        match data {
            metric::Data::Gauge(g) => {
                let points = g.data_points.len();
                let Some(names) =
                    self.family_names(&m.name, &m.unit, PromType::Gauge, points, stats)
                else {
                    return;
                };
                let base = names.base.clone();
                let family = Family {
                    name: &base,
                    ty: PromType::Gauge,
                    help: &m.description,
                };
                self.number_points(
                    &g.data_points,
                    family,
                    ms,
                    &mut note_ts,
                    scope_mark,
                    stats,
                    sink,
                );
            }
            metric::Data::Sum(s) => {
                if !cumulative(s.aggregation_temporality, s.data_points.len(), stats) {
                    return;
                }
                let ty = if s.is_monotonic {
                    PromType::Counter
                } else {
                    PromType::Gauge
                };
                // `1` becomes `_ratio` on OTel gauges only: an UpDownCounter of unit `1` (a
                // queue depth, say) is a plain count and gets no suffix.
                let unit = if !s.is_monotonic && m.unit.trim() == "1" {
                    ""
                } else {
                    &m.unit
                };
                let points = s.data_points.len();
                let Some(names) = self.family_names(&m.name, unit, ty, points, stats) else {
                    return;
                };
                let base = names.base.clone();
                let family = Family {
                    name: &base,
                    ty,
                    help: &m.description,
                };
                self.number_points(
                    &s.data_points,
                    family,
                    ms,
                    &mut note_ts,
                    scope_mark,
                    stats,
                    sink,
                );
            }
            metric::Data::Histogram(h) => {
                if !cumulative(h.aggregation_temporality, h.data_points.len(), stats) {
                    return;
                }
                let points = h.data_points.len();
                let Some(names) =
                    self.family_names(&m.name, &m.unit, PromType::Histogram, points, stats)
                else {
                    return;
                };
                let (base, bucket, sum_name, count_name) = (
                    names.base.clone(),
                    names.bucket.clone(),
                    names.sum.clone(),
                    names.count.clone(),
                );
                let family = Family {
                    name: &base,
                    ty: PromType::Histogram,
                    help: &m.description,
                };
                let names = [&*bucket, &*sum_name, &*count_name];
                for p in &h.data_points {
                    self.point_labels_cached(scope_mark, &p.attributes, sink);
                    self.les.update(p.explicit_bounds.iter().copied());
                    let ts = ms(p.time_unix_nano);
                    note_ts(ts);
                    let buckets = p.explicit_bounds.len().min(p.bucket_counts.len());
                    let cumulative = p.bucket_counts.iter().take(buckets).scan(0u64, |acc, c| {
                        *acc = acc.saturating_add(*c);
                        Some(*acc)
                    });
                    let (count, sum, no_value) = (p.count, p.sum, p.flags & 1 != 0);
                    self.classic(
                        sink, family, names, ts, cumulative, count, sum, no_value, stats,
                    );
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
                    self.point_labels_cached(scope_mark, &p.attributes, sink);
                    self.quantiles
                        .update(p.quantile_values.iter().map(|q| q.quantile));
                    let ts = ms(p.time_unix_nano);
                    note_ts(ts);
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
                if !cumulative(h.aggregation_temporality, h.data_points.len(), stats) {
                    return;
                }
                let points = h.data_points.len();
                let Some(names) =
                    self.family_names(&m.name, &m.unit, PromType::Histogram, points, stats)
                else {
                    return;
                };
                let (base, bucket, sum_name, count_name) = (
                    names.base.clone(),
                    names.bucket.clone(),
                    names.sum.clone(),
                    names.count.clone(),
                );
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
                    let ts = ms(p.time_unix_nano);
                    let no_value = p.flags & 1 != 0;
                    let Some(bounds) = &classic else {
                        let Some(native) = exponential::to_native(p, ts, no_value) else {
                            stats.drop(DROP_UNSUPPORTED_SCHEMA, 1);
                            continue;
                        };
                        self.point_labels_cached(scope_mark, &p.attributes, sink);
                        note_ts(ts);
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
                    self.point_labels_cached(scope_mark, &p.attributes, sink);
                    note_ts(ts);
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

    #[allow(clippy::too_many_arguments)]
    fn number_points(
        &mut self,
        points: &[NumberDataPoint],
        family: Family<'_>,
        ms: impl Fn(u64) -> i64,
        note_ts: &mut impl FnMut(i64),
        scope_mark: Mark,
        stats: &mut TranslateStats,
        sink: &mut impl SampleSink,
    ) {
        for p in points {
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
                        continue;
                    }
                }
            };
            self.point_labels_cached(scope_mark, &p.attributes, sink);
            let ts = ms(p.time_unix_nano);
            note_ts(ts);
            self.emit(sink, family, ts, family.name, None, value);
            stats.samples += 1;
            stats.points += 1;
        }
    }
}
