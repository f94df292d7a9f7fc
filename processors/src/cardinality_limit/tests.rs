#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use opentelemetry_proto::tonic::metrics::v1::{Gauge, Histogram, Sum};
use vla_pipeline::fixtures::{self, T0_NANOS};

use super::*;

fn config(max: usize) -> Config {
    Config {
        window: Duration::from_secs(60),
        max_overflow_series: DEFAULT_MAX_OVERFLOW_SERIES,
        limits: vec![Limit {
            metrics: vec!["vla.customer.*".to_owned()],
            max_series: max,
        }],
    }
}

fn processor(c: &Config) -> (CardinalityLimit, SelfMetrics) {
    let t = SelfMetrics::new();
    (
        CardinalityLimit::new(c).with_telemetry("cardinality_limit", "metrics", &t),
        t,
    )
}

fn counted(t: &SelfMetrics, result: &str) -> i64 {
    t.value(
        "vla_collector_processor_cardinality_limit_data_points_total",
        &[("processor", "cardinality_limit"), ("result", result)],
    )
    .unwrap_or(0)
}

/// A sum of one point per customer `ids`, value `value(id)`, at `time` seconds.
fn sums(
    temporality: AggregationTemporality,
    ids: &[u32],
    time: u64,
    value: impl Fn(u32) -> f64,
) -> MetricBatch {
    let points = ids
        .iter()
        .map(|i| NumberDataPoint {
            attributes: fixtures::attrs(&[("customer_id", &format!("c{i}"))]),
            start_time_unix_nano: T0_NANOS,
            time_unix_nano: T0_NANOS + time * 1_000_000_000,
            value: Some(Value::AsDouble(value(*i))),
            ..Default::default()
        })
        .collect();
    MetricBatch::new(
        "otlp".into(),
        vec![fixtures::resource(
            "api",
            vec![Metric {
                name: "vla.customer.requests".to_owned(),
                data: Some(metric::Data::Sum(Sum {
                    data_points: points,
                    aggregation_temporality: temporality as i32,
                    is_monotonic: true,
                })),
                ..Default::default()
            }],
        )],
    )
}

/// (customer_id or "overflow", value) of every sum point.
fn out(b: &MetricBatch) -> Vec<(String, f64)> {
    let mut v = Vec::new();
    for m in b
        .resource_metrics()
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
    {
        if let Some(metric::Data::Sum(s)) = &m.data {
            for p in &s.data_points {
                let id = vla_pipeline::attr_str(&p.attributes, "customer_id")
                    .map(str::to_owned)
                    .or_else(|| {
                        vla_pipeline::attr_str(&p.attributes, OVERFLOW_KEY)
                            .map(|_| "overflow".to_owned())
                    })
                    .unwrap_or_default();
                v.push((id, number(p).unwrap_or(f64::NAN)));
            }
        }
    }
    v
}

#[test]
fn past_the_limit_cumulative_series_fold_into_one_overflow_series_with_the_same_total() {
    let (mut p, t) = processor(&config(3));
    let ids: Vec<u32> = (0..10).collect();
    let mut b = sums(AggregationTemporality::Cumulative, &ids, 10, |i| {
        f64::from(i + 1)
    });
    p.process(&mut b);
    let got = out(&b);
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(
        &got[..3],
        &[("c0".into(), 1.0), ("c1".into(), 2.0), ("c2".into(), 3.0)]
    );
    assert_eq!(got[3], ("overflow".into(), (4..=10).sum::<u32>() as f64));
    assert_eq!(got.iter().map(|(_, v)| v).sum::<f64>(), 55.0);
    assert_eq!((counted(&t, "admitted"), counted(&t, "overflowed")), (3, 7));
    // A later batch with only some overflowed series still reports the whole overflow total:
    // c9 grew by 5, the others did not report.
    let mut b = sums(AggregationTemporality::Cumulative, &[0, 9], 20, |i| {
        f64::from(i + 1) + if i == 9 { 5.0 } else { 0.0 }
    });
    p.process(&mut b);
    assert_eq!(
        out(&b),
        vec![("c0".into(), 1.0), ("overflow".into(), 49.0 + 5.0)]
    );
    let series = t.value(
        "vla_collector_processor_cardinality_limit_series",
        &[("processor", "cardinality_limit"), ("pipeline", "metrics")],
    );
    assert_eq!(series, Some(3));
}

#[test]
fn delta_series_fold_per_batch_and_unlimited_metrics_pass() {
    let (mut p, _) = processor(&config(2));
    let mut b = sums(AggregationTemporality::Delta, &[1, 2, 3, 4], 10, |_| 1.0);
    p.process(&mut b);
    assert_eq!(out(&b).last(), Some(&("overflow".into(), 2.0)));
    let mut b = sums(AggregationTemporality::Delta, &[3], 20, |_| 1.0);
    p.process(&mut b);
    assert_eq!(out(&b), vec![("overflow".into(), 1.0)]);
    let mut other = MetricBatch::new(
        "otlp".into(),
        vec![fixtures::resource(
            "api",
            vec![fixtures::gauge(
                "vla.gpu.temperature",
                "Cel",
                &[
                    (1.0, &[("a", "1")]),
                    (2.0, &[("a", "2")]),
                    (3.0, &[("a", "3")]),
                ],
            )],
        )],
    );
    let before = other.clone();
    p.process(&mut other);
    assert_eq!(other.resource_metrics(), before.resource_metrics());
}

#[test]
fn an_overflowed_series_stays_in_overflow_while_active_and_slots_free_after_a_window() {
    let (mut p, _) = processor(&config(1));
    p.process(&mut sums(
        AggregationTemporality::Cumulative,
        &[1, 2],
        10,
        f64::from,
    ));
    // Window 1 ends: both were seen in it.
    p.flush(SystemTime::now());
    // c1 stops reporting; c2 keeps reporting: it stays in overflow, never jumping out.
    let mut b = sums(AggregationTemporality::Cumulative, &[2], 20, |_| 5.0);
    p.process(&mut b);
    assert_eq!(out(&b), vec![("overflow".into(), 5.0)]);
    // Window 2 ends: c1 was not seen in it and frees its slot, c3 takes it.
    p.flush(SystemTime::now());
    let mut b = sums(AggregationTemporality::Cumulative, &[3, 2], 30, |i| {
        f64::from(i)
    });
    p.process(&mut b);
    assert_eq!(out(&b), vec![("c3".into(), 3.0), ("overflow".into(), 2.0)]);
}

#[test]
fn past_max_overflow_series_new_series_are_dropped_and_counted() {
    let mut c = config(1);
    c.max_overflow_series = 2;
    let (mut p, t) = processor(&c);
    let mut b = sums(
        AggregationTemporality::Cumulative,
        &[0, 1, 2, 3],
        10,
        |_| 1.0,
    );
    p.process(&mut b);
    assert_eq!(out(&b), vec![("c0".into(), 1.0), ("overflow".into(), 2.0)]);
    assert_eq!(counted(&t, "overflow_limit"), 1, "c3: no room left");
}

#[test]
fn histograms_fold_bucket_by_bucket_and_gauges_keep_the_last_value() {
    let (mut p, t) = processor(&config(1));
    let hist = |id: &str, counts: &[u64], bounds: &[f64]| HistogramDataPoint {
        attributes: fixtures::attrs(&[("customer_id", id)]),
        start_time_unix_nano: T0_NANOS,
        time_unix_nano: T0_NANOS + 1,
        count: counts.iter().sum(),
        sum: Some(1.0),
        bucket_counts: counts.to_vec(),
        explicit_bounds: bounds.to_vec(),
        ..Default::default()
    };
    let mut b = MetricBatch::new(
        "otlp".into(),
        vec![fixtures::resource(
            "api",
            vec![
                Metric {
                    name: "vla.customer.latency".to_owned(),
                    data: Some(metric::Data::Histogram(Histogram {
                        data_points: vec![
                            hist("a", &[1, 0], &[1.0]),
                            hist("b", &[1, 2], &[1.0]),
                            hist("c", &[0, 4], &[1.0]),
                            hist("d", &[1, 1, 1], &[1.0, 2.0]),
                        ],
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    })),
                    ..Default::default()
                },
                Metric {
                    name: "vla.customer.quota".to_owned(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: fixtures::gauge(
                            "x",
                            "",
                            &[
                                (1.0, &[("customer_id", "a")]),
                                (7.0, &[("customer_id", "b")]),
                            ],
                        )
                        .data
                        .and_then(|d| match d {
                            metric::Data::Gauge(g) => Some(g.data_points),
                            _ => None,
                        })
                        .unwrap_or_default(),
                    })),
                    ..Default::default()
                },
            ],
        )],
    );
    p.process(&mut b);
    let metrics = &b.resource_metrics()[0].scope_metrics[0].metrics;
    let Some(metric::Data::Histogram(h)) = &metrics[0].data else {
        panic!("histogram")
    };
    assert_eq!(h.data_points.len(), 2);
    let o = &h.data_points[1];
    assert_eq!(
        vla_pipeline::attr_str(&o.attributes, OVERFLOW_KEY),
        Some("true")
    );
    assert_eq!(
        (o.count, o.bucket_counts.clone(), o.sum),
        (7, vec![1, 6], Some(2.0))
    );
    assert_eq!(counted(&t, "unsupported"), 1, "other bounds");
    let Some(metric::Data::Gauge(g)) = &metrics[1].data else {
        panic!("gauge")
    };
    assert_eq!(g.data_points.len(), 2);
    assert_eq!(number(&g.data_points[1]), Some(7.0));
}

#[test]
fn validation_names_each_field() {
    let c = Config {
        window: Duration::ZERO,
        max_overflow_series: 1,
        limits: vec![Limit {
            metrics: vec!["bad name!".into()],
            max_series: 0,
        }],
    };
    let paths: Vec<String> = c
        .validate("processors.cardinality_limit")
        .into_iter()
        .map(|p| p.path)
        .collect();
    assert_eq!(
        paths,
        [
            "processors.cardinality_limit.window",
            "processors.cardinality_limit.limits[0].metrics[0]",
            "processors.cardinality_limit.limits[0].max_series",
        ]
    );
    let example: Config =
        serde_saphyr::from_str(<CardinalityLimit as vla_pipeline::registry::Component>::EXAMPLE)
            .unwrap();
    assert!(example.validate("p").is_empty());
}
