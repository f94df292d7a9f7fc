#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::*;
use number_data_point::Value::{AsDouble, AsInt};
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, Sum, Summary,
    SummaryDataPoint,
};
use vla_pipeline::fixtures::attrs;

const ID: &str = "customer_id";

fn np(
    labels: &[(&str, &str)],
    v: number_data_point::Value,
    start: u64,
    time: u64,
) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs(labels),
        start_time_unix_nano: start,
        time_unix_nano: time,
        value: Some(v),
        ..Default::default()
    }
}

fn sum(points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: "vla.customer.requests".into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: 2,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

fn gauge(points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: "vla.quota.used".into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Default::default()
    }
}

/// The points of a number metric as `(sorted labels, value, start, time)`.
fn numbers(m: &Metric) -> Vec<(String, String, u64, u64)> {
    let points = match &m.data {
        Some(metric::Data::Sum(s)) => &s.data_points,
        Some(metric::Data::Gauge(g)) => &g.data_points,
        _ => panic!("not a number metric"),
    };
    points
        .iter()
        .map(|p| {
            let mut labels: Vec<String> = p
                .attributes
                .iter()
                .map(|kv| {
                    let v = vla_pipeline::attr_str(std::slice::from_ref(kv), &kv.key);
                    format!("{}={}", kv.key, v.unwrap_or("?"))
                })
                .collect();
            labels.sort();
            let value = match p.value {
                Some(AsInt(i)) => format!("int:{i}"),
                Some(AsDouble(d)) => format!("{d}"),
                None => "none".into(),
            };
            (
                labels.join(","),
                value,
                p.start_time_unix_nano,
                p.time_unix_nano,
            )
        })
        .collect()
}

#[test]
fn number_merge_table() {
    type Case = (
        &'static str,
        Metric,
        usize,
        Vec<(&'static str, &'static str, u64, u64)>,
    );
    let cases: Vec<Case> = vec![
        (
            "cumulative sum: values added, earliest start, latest time",
            sum(vec![
                np(&[(ID, "c1"), ("outcome", "ok")], AsDouble(1.5), 10, 100),
                np(&[(ID, "c2"), ("outcome", "ok")], AsDouble(2.0), 5, 110),
                np(&[(ID, "c3"), ("outcome", "error")], AsDouble(4.0), 7, 100),
            ]),
            1,
            vec![
                ("outcome=ok", "3.5", 5, 110),
                ("outcome=error", "4", 7, 100),
            ],
        ),
        (
            "ints stay ints; int + double is double",
            sum(vec![
                np(&[(ID, "c1"), ("k", "a")], AsInt(3), 1, 9),
                np(&[(ID, "c2"), ("k", "a")], AsInt(4), 1, 9),
                np(&[(ID, "c1"), ("k", "b")], AsInt(1), 1, 9),
                np(&[(ID, "c2"), ("k", "b")], AsDouble(0.5), 1, 9),
            ]),
            2,
            vec![("k=a", "int:7", 1, 9), ("k=b", "1.5", 1, 9)],
        ),
        (
            "gauge values added (documented)",
            gauge(vec![
                np(&[(ID, "c1")], AsDouble(10.0), 0, 50),
                np(&[(ID, "c2")], AsDouble(5.0), 0, 60),
            ]),
            1,
            vec![("", "15", 0, 60)],
        ),
        (
            "attribute order does not matter",
            sum(vec![
                np(&[(ID, "c1"), ("a", "1"), ("b", "2")], AsInt(1), 3, 9),
                np(&[("b", "2"), (ID, "c2"), ("a", "1")], AsInt(2), 0, 9),
            ]),
            1,
            vec![("a=1,b=2", "int:3", 3, 9)],
        ),
        (
            "a point without the id joins the points that lose it",
            sum(vec![
                np(&[("a", "1")], AsInt(1), 1, 9),
                np(&[(ID, "c1"), ("a", "1")], AsInt(2), 1, 9),
            ]),
            1,
            vec![("a=1", "int:3", 1, 9)],
        ),
        (
            "no point carries the id: nothing merged",
            sum(vec![
                np(&[("a", "1")], AsInt(1), 1, 9),
                np(&[("a", "1")], AsInt(2), 1, 10),
            ]),
            0,
            vec![("a=1", "int:1", 1, 9), ("a=1", "int:2", 1, 10)],
        ),
        (
            "different remaining labels stay apart",
            sum(vec![
                np(&[(ID, "c1"), ("a", "1")], AsInt(1), 1, 9),
                np(&[(ID, "c1"), ("a", "2")], AsInt(2), 1, 9),
            ]),
            0,
            vec![("a=1", "int:1", 1, 9), ("a=2", "int:2", 1, 9)],
        ),
    ];
    // One scratch for every case, as the processor keeps it: each use starts clean.
    let mut scratch = Scratch::default();
    for (name, mut m, merged, want) in cases {
        let out = drop_key_and_merge(&mut m, ID, &mut scratch);
        assert_eq!(
            out,
            DropOutcome {
                merged,
                skipped: None
            },
            "{name}"
        );
        let want: Vec<_> = want
            .into_iter()
            .map(|(l, v, s, t)| (l.to_owned(), v.to_owned(), s, t))
            .collect();
        assert_eq!(numbers(&m), want, "{name}");
    }
}

#[test]
fn no_recorded_value_points_add_nothing() {
    let mut stale = np(&[(ID, "c1")], AsDouble(0.0), 1, 20);
    stale.flags = NO_RECORDED_VALUE;
    let mut m = sum(vec![stale.clone(), np(&[(ID, "c2")], AsDouble(2.0), 1, 10)]);
    drop_key_and_merge(&mut m, ID, &mut Scratch::default());
    assert_eq!(numbers(&m), vec![(String::new(), "2".into(), 1, 20)]);
    let Some(metric::Data::Sum(s)) = &m.data else {
        panic!()
    };
    assert_eq!(s.data_points[0].flags, 0);
    let mut other = stale.clone();
    other.attributes = attrs(&[(ID, "c2")]);
    let mut m = sum(vec![stale, other]);
    drop_key_and_merge(&mut m, ID, &mut Scratch::default());
    let Some(metric::Data::Sum(s)) = &m.data else {
        panic!()
    };
    assert_eq!(
        (s.data_points.len(), s.data_points[0].flags),
        (1, NO_RECORDED_VALUE)
    );
}

#[allow(clippy::too_many_arguments)]
fn hp(
    labels: &[(&str, &str)],
    bounds: &[f64],
    counts: &[u64],
    sum: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    start: u64,
    time: u64,
) -> HistogramDataPoint {
    HistogramDataPoint {
        attributes: attrs(labels),
        start_time_unix_nano: start,
        time_unix_nano: time,
        count: counts.iter().sum(),
        sum,
        bucket_counts: counts.to_vec(),
        explicit_bounds: bounds.to_vec(),
        min,
        max,
        ..Default::default()
    }
}

fn histogram(points: Vec<HistogramDataPoint>) -> Metric {
    Metric {
        name: "vla.customer.inference.duration".into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: points,
            aggregation_temporality: 2,
        })),
        ..Default::default()
    }
}

/// `(labels, count, buckets, sum, min, max, start, time)` of each point.
type H = (
    usize,
    u64,
    Vec<u64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    u64,
    u64,
);

fn histograms(m: &Metric) -> Vec<H> {
    let Some(metric::Data::Histogram(h)) = &m.data else {
        panic!()
    };
    h.data_points
        .iter()
        .map(|p| {
            (
                p.attributes.len(),
                p.count,
                p.bucket_counts.clone(),
                p.sum,
                p.min,
                p.max,
                p.start_time_unix_nano,
                p.time_unix_nano,
            )
        })
        .collect()
}

#[test]
fn histogram_merge_table() {
    let b = [0.1, 1.0];
    type Case = (&'static str, Metric, DropOutcome, Vec<H>);
    let cases: Vec<Case> = vec![
        (
            "same bounds: counts, buckets, sum added; min of mins, max of maxes",
            histogram(vec![
                hp(
                    &[(ID, "c1")],
                    &b,
                    &[1, 2, 3],
                    Some(10.0),
                    Some(0.05),
                    Some(4.0),
                    10,
                    100,
                ),
                hp(
                    &[(ID, "c2")],
                    &b,
                    &[4, 0, 1],
                    Some(2.5),
                    Some(0.01),
                    Some(2.0),
                    8,
                    120,
                ),
            ]),
            DropOutcome {
                merged: 1,
                skipped: None,
            },
            vec![(
                0,
                11,
                vec![5, 2, 4],
                Some(12.5),
                Some(0.01),
                Some(4.0),
                8,
                120,
            )],
        ),
        (
            "a point with no observations leaves min/max/sum alone",
            histogram(vec![
                hp(&[(ID, "c1")], &b, &[0, 0, 0], None, None, None, 10, 100),
                hp(
                    &[(ID, "c2")],
                    &b,
                    &[0, 1, 0],
                    Some(0.5),
                    Some(0.5),
                    Some(0.5),
                    10,
                    100,
                ),
            ]),
            DropOutcome {
                merged: 1,
                skipped: None,
            },
            vec![(
                0,
                1,
                vec![0, 1, 0],
                Some(0.5),
                Some(0.5),
                Some(0.5),
                10,
                100,
            )],
        ),
        (
            "a missing sum makes the merged sum unknown",
            histogram(vec![
                hp(&[(ID, "c1")], &b, &[1, 0, 0], None, None, None, 10, 100),
                hp(
                    &[(ID, "c2")],
                    &b,
                    &[0, 1, 0],
                    Some(0.5),
                    None,
                    None,
                    10,
                    100,
                ),
            ]),
            DropOutcome {
                merged: 1,
                skipped: None,
            },
            vec![(0, 2, vec![1, 1, 0], None, None, None, 10, 100)],
        ),
        (
            "different bounds: skipped, ids kept",
            histogram(vec![
                hp(
                    &[(ID, "c1")],
                    &b,
                    &[1, 0, 0],
                    Some(0.0),
                    None,
                    None,
                    10,
                    100,
                ),
                hp(
                    &[(ID, "c2")],
                    &[0.5],
                    &[0, 1],
                    Some(1.0),
                    None,
                    None,
                    10,
                    100,
                ),
            ]),
            DropOutcome {
                merged: 0,
                skipped: Some((SkipReason::HistogramBounds, 2)),
            },
            vec![
                (1, 1, vec![1, 0, 0], Some(0.0), None, None, 10, 100),
                (1, 1, vec![0, 1], Some(1.0), None, None, 10, 100),
            ],
        ),
    ];
    let mut scratch = Scratch::default();
    for (name, mut m, outcome, want) in cases {
        assert_eq!(
            drop_key_and_merge(&mut m, ID, &mut scratch),
            outcome,
            "{name}"
        );
        assert_eq!(histograms(&m), want, "{name}");
    }
}

#[test]
fn exponential_histograms_and_summaries_keep_their_ids() {
    let mut exp = Metric {
        name: "e".into(),
        data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![
                ExponentialHistogramDataPoint {
                    attributes: attrs(&[(ID, "c1")]),
                    ..Default::default()
                },
                ExponentialHistogramDataPoint {
                    attributes: attrs(&[(ID, "c2")]),
                    ..Default::default()
                },
                ExponentialHistogramDataPoint::default(),
            ],
            aggregation_temporality: 2,
        })),
        ..Default::default()
    };
    assert_eq!(
        drop_key_and_merge(&mut exp, ID, &mut Scratch::default()),
        DropOutcome {
            merged: 0,
            skipped: Some((SkipReason::ExponentialHistogram, 2))
        }
    );
    let Some(metric::Data::ExponentialHistogram(h)) = &exp.data else {
        panic!()
    };
    assert_eq!(h.data_points[1].attributes, attrs(&[(ID, "c2")]));
    let mut summary = Metric {
        name: "s".into(),
        data: Some(metric::Data::Summary(Summary {
            data_points: vec![SummaryDataPoint {
                attributes: attrs(&[(ID, "c1")]),
                ..Default::default()
            }],
        })),
        ..Default::default()
    };
    assert_eq!(
        drop_key_and_merge(&mut summary, ID, &mut Scratch::default()),
        DropOutcome {
            merged: 0,
            skipped: Some((SkipReason::Summary, 1))
        }
    );
    assert_eq!(SkipReason::Summary.label(), "summary");
}
