#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, Sum, exemplar, metric,
    number_data_point,
};
use prost::Message;

use super::*;
use crate::batch::{count_data_points, is_delta};
use crate::fixtures;
fn any(v: any_value::Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(v) })
}

/// A request with every field of every message the decoder writes out, and some of each
/// message it hands to prost.
fn everything() -> ExportMetricsServiceRequest {
    use any_value::Value as V;
    let exemplar = Exemplar {
        filtered_attributes: fixtures::attrs(&[("trace", "t")]),
        time_unix_nano: 7,
        span_id: vec![1, 2, 3, 4, 5, 6, 7, 8],
        trace_id: vec![9; 16],
        value: Some(exemplar::Value::AsInt(-3)),
    };
    let attributes = vec![
        KeyValue {
            key: "s".into(),
            value: any(V::StringValue("ü".into())),
            key_strindex: 0,
        },
        KeyValue {
            key: "b".into(),
            value: any(V::BoolValue(true)),
            key_strindex: 3,
        },
        KeyValue {
            key: "i".into(),
            value: any(V::IntValue(-42)),
            ..Default::default()
        },
        KeyValue {
            key: "d".into(),
            value: any(V::DoubleValue(2.5)),
            ..Default::default()
        },
        KeyValue {
            key: "a".into(),
            value: any(V::ArrayValue(ArrayValue {
                values: vec![AnyValue {
                    value: Some(V::IntValue(1)),
                }],
            })),
            ..Default::default()
        },
        KeyValue {
            key: "m".into(),
            value: any(V::KvlistValue(KeyValueList {
                values: fixtures::attrs(&[("k", "v")]),
            })),
            ..Default::default()
        },
        KeyValue {
            key: "y".into(),
            value: any(V::BytesValue(vec![0, 255])),
            ..Default::default()
        },
        KeyValue {
            key: "x".into(),
            value: any(V::StringValueStrindex(5)),
            ..Default::default()
        },
        KeyValue {
            key: "none".into(),
            value: None,
            ..Default::default()
        },
    ];
    let number = NumberDataPoint {
        attributes: attributes.clone(),
        start_time_unix_nano: 1,
        time_unix_nano: 2,
        exemplars: vec![exemplar.clone()],
        flags: 1,
        value: Some(number_data_point::Value::AsInt(i64::MIN)),
    };
    let histogram_point = HistogramDataPoint {
        attributes,
        start_time_unix_nano: 3,
        time_unix_nano: 4,
        count: 6,
        sum: Some(-1.5),
        bucket_counts: vec![1, 2, 3],
        explicit_bounds: vec![0.5, 1.0],
        exemplars: vec![exemplar],
        flags: 0,
        min: Some(0.1),
        max: Some(f64::INFINITY),
    };
    let exponential = ExponentialHistogram {
        data_points: vec![ExponentialHistogramDataPoint {
            scale: -2,
            zero_count: 1,
            positive: Some(Buckets {
                offset: -1,
                bucket_counts: vec![1, 2],
            }),
            ..Default::default()
        }],
        aggregation_temporality: 1,
    };
    let metrics = vec![
        Metric {
            name: "g".into(),
            description: "a gauge".into(),
            unit: "1".into(),
            metadata: fixtures::attrs(&[("meta", "data")]),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: vec![
                    number.clone(),
                    NumberDataPoint {
                        value: Some(number_data_point::Value::AsDouble(f64::NAN)),
                        ..NumberDataPoint::default()
                    },
                ],
            })),
        },
        Metric {
            name: "s".into(),
            data: Some(metric::Data::Sum(Sum {
                data_points: vec![number],
                aggregation_temporality: 2,
                is_monotonic: true,
            })),
            ..Default::default()
        },
        Metric {
            name: "h".into(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: vec![histogram_point],
                aggregation_temporality: 1,
            })),
            ..Default::default()
        },
        Metric {
            name: "e".into(),
            data: Some(metric::Data::ExponentialHistogram(exponential)),
            ..Default::default()
        },
        fixtures::summary("q", "ms", &[(0.5, 2.0)], 4, 9.0, &[("x", "y")]),
        Metric {
            name: "no data".into(),
            ..Default::default()
        },
    ];
    let mut rm = fixtures::resource_with(&[("service.name", "api")], metrics);
    rm.schema_url = "https://schema/1".into();
    rm.scope_metrics[0].schema_url = "https://schema/2".into();
    rm.scope_metrics[0].scope = Some(InstrumentationScope {
        name: "scope".into(),
        version: "1.0".into(),
        attributes: fixtures::attrs(&[("a", "b")]),
        dropped_attributes_count: 2,
    });
    ExportMetricsServiceRequest {
        resource_metrics: vec![
            rm,
            ResourceMetrics::default(),
            fixtures::resource(
                "other",
                vec![
                    fixtures::delta_sum("d", "", true, &[(1.0, &[("a", "b")])]),
                    fixtures::histogram("lat", "s", &[0.1], &[1, 2], 0.3, &[("m", "x")]),
                ],
            ),
        ],
    }
}

/// Whether prost's decode has a delta metric, as `deltatocumulative` decides it.
fn prost_has_delta(request: &ExportMetricsServiceRequest) -> bool {
    request
        .resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .any(is_delta)
}

/// The scan's promise: a plain request decodes with prost, with the scanned point count and
/// delta flag. `Some(plain)` when prost decodes it, `None` when prost refuses it.
fn check(bytes: &[u8]) -> Option<bool> {
    let scanned = scan(bytes);
    match ExportMetricsServiceRequest::decode(bytes) {
        Ok(request) => {
            if let Some(s) = scanned {
                assert_eq!(
                    s.points,
                    count_data_points(&request.resource_metrics),
                    "points of {bytes:?}"
                );
                assert_eq!(s.has_delta, prost_has_delta(&request), "delta of {bytes:?}");
            }
            Some(scanned.is_some())
        }
        Err(e) => {
            assert!(
                scanned.is_none(),
                "scan calls {bytes:?} plain, prost refuses it: {e}"
            );
            None
        }
    }
}

fn wire_key(tag: u32, wt: u8, out: &mut Vec<u8>) {
    prost::encoding::encode_varint(u64::from(tag << 3 | u32::from(wt)), out);
}

fn len_field(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    wire_key(tag, LEN, out);
    prost::encoding::encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

#[test]
fn every_field_of_the_schema_is_plain() {
    let request = everything();
    let bytes = request.encode_to_vec();
    assert_eq!(check(&bytes), Some(true));
    let s = scan(&bytes).unwrap();
    assert_eq!(s.points, 8);
    assert!(s.has_delta);
    assert_eq!(scan(&[]), Some(Scan::default()));
    let cumulative = ExportMetricsServiceRequest {
        resource_metrics: vec![fixtures::resource(
            "api",
            vec![
                fixtures::gauge("g", "", &[(1.0, &[("a", "b")])]),
                fixtures::cumulative_sum("c", "", true, &[(1.0, &[]), (2.0, &[])]),
            ],
        )],
    };
    assert_eq!(
        scan(&cumulative.encode_to_vec()),
        Some(Scan {
            points: 3,
            has_delta: false
        })
    );
}

/// Repeated scalars unpacked and packed, scalars and messages twice, unknown fields of the
/// four wire types it skips: plain. A group, a metric's data twice, invalid UTF-8, a zero tag,
/// a wrong wire type, a ragged packed run: not plain (prost decides).
#[test]
fn follows_prost_and_leaves_the_rest_to_it() {
    let mut point = Vec::new();
    for c in [1u64, 2] {
        wire_key(6, I64, &mut point);
        point.extend_from_slice(&c.to_le_bytes());
    }
    len_field(6, &3u64.to_le_bytes(), &mut point);
    wire_key(4, I64, &mut point);
    point.extend_from_slice(&5u64.to_le_bytes());
    wire_key(4, I64, &mut point);
    point.extend_from_slice(&6u64.to_le_bytes());
    wire_key(99, VARINT, &mut point);
    point.push(1);
    wire_key(98, I64, &mut point);
    point.extend_from_slice(&[0; 8]);
    len_field(97, b"xyz", &mut point);
    wire_key(96, I32, &mut point);
    point.extend_from_slice(&[0; 4]);
    let mut hist = Vec::new();
    len_field(1, &point, &mut hist);
    len_field(1, &point, &mut hist);
    wire_key(2, VARINT, &mut hist);
    hist.push(1);
    wire_key(2, VARINT, &mut hist);
    hist.push(2);
    let wrap = |metric: &[u8]| {
        let mut sm = Vec::new();
        len_field(2, metric, &mut sm);
        let mut rm = Vec::new();
        len_field(2, &sm, &mut rm);
        let mut req = Vec::new();
        len_field(1, &rm, &mut req);
        req
    };
    let mut metric = Vec::new();
    len_field(1, b"first", &mut metric);
    len_field(1, b"second", &mut metric);
    len_field(9, &hist, &mut metric);
    let plain = wrap(&metric);
    assert_eq!(check(&plain), Some(true));
    assert_eq!(
        scan(&plain),
        Some(Scan {
            points: 2,
            // The last temporality (2, cumulative) wins.
            has_delta: false
        })
    );

    let mut twice = metric.clone();
    len_field(5, &[], &mut twice);
    assert_eq!(check(&wrap(&twice)), Some(false), "data twice");

    let mut group = metric.clone();
    wire_key(95, 3, &mut group);
    wire_key(95, 4, &mut group);
    assert_eq!(check(&wrap(&group)), Some(false), "a group");

    let mut utf8 = Vec::new();
    len_field(1, &[0x80], &mut utf8);
    assert_eq!(check(&wrap(&utf8)), None, "invalid UTF-8");

    assert_eq!(check(&wrap(&[0x00, 0x00])), None, "tag 0");

    let mut wrong = Vec::new();
    wire_key(1, VARINT, &mut wrong);
    wrong.push(1);
    assert_eq!(check(&wrap(&wrong)), None, "name as a varint");

    let mut ragged = Vec::new();
    len_field(6, &[0; 7], &mut ragged);
    let mut hist = Vec::new();
    len_field(1, &ragged, &mut hist);
    let mut metric = Vec::new();
    len_field(9, &hist, &mut metric);
    assert_eq!(check(&wrap(&metric)), None, "7 bytes of fixed64");

    let too_deep = (0..40).fold(Vec::new(), |inner, _| {
        let mut any = Vec::new();
        len_field(5, &inner, &mut any);
        let mut array = Vec::new();
        len_field(1, &any, &mut array);
        array
    });
    let mut any = Vec::new();
    len_field(5, &too_deep, &mut any);
    let mut kv = Vec::new();
    len_field(2, &any, &mut kv);
    let mut p = Vec::new();
    len_field(7, &kv, &mut p);
    let mut gauge = Vec::new();
    len_field(1, &p, &mut gauge);
    let mut metric = Vec::new();
    len_field(5, &gauge, &mut metric);
    assert_eq!(check(&wrap(&metric)), Some(false), "nested past MAX_DEPTH");
}

/// Differential fuzzing: random damage to valid requests (bytes flipped, inserted, deleted,
/// duplicated, truncated). Whatever the scan calls plain prost decodes, to the points and
/// delta flag the scan counted, and what prost refuses the scan never calls plain.
#[test]
fn agrees_with_prost_on_mutated_requests() {
    let seeds = [
        everything().encode_to_vec(),
        ExportMetricsServiceRequest {
            resource_metrics: vec![fixtures::resource(
                "api",
                vec![
                    fixtures::gauge("g", "", &[(1.0, &[("a", "b")])]),
                    fixtures::delta_sum("d", "", true, &[(1.0, &[("a", "b")])]),
                ],
            )],
        }
        .encode_to_vec(),
    ];
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n.max(1) as u64) as usize
    };
    let (mut plain, mut left_to_prost, mut refused) = (0, 0, 0);
    for i in 0..20_000 {
        let mut bytes = seeds[i % seeds.len()].clone();
        for _ in 0..=next(3) {
            let at = next(bytes.len());
            let last = at.min(bytes.len() - 1);
            match next(6) {
                0 => bytes[last] ^= 1 << next(8),
                1 => bytes[last] = next(256) as u8,
                2 => bytes.insert(at, next(256) as u8),
                3 => {
                    let end = (at + next(16)).min(bytes.len());
                    bytes.drain(at..end);
                }
                4 => {
                    let end = (at + next(64)).min(bytes.len());
                    let copy = bytes[at..end].to_vec();
                    let to = next(bytes.len());
                    bytes.splice(to..to, copy);
                }
                _ => bytes.truncate(at),
            }
            if bytes.is_empty() {
                bytes.push(0x0a);
            }
        }
        match check(&bytes) {
            Some(true) => plain += 1,
            Some(false) => left_to_prost += 1,
            None => refused += 1,
        }
    }
    eprintln!("{plain} plain, {left_to_prost} left to prost, {refused} refused");
    // Every outcome well represented, or the test checks little; and the scan leaves few
    // valid requests to prost.
    assert!(
        plain > 1000 && refused > 1000 && left_to_prost < plain / 4,
        "{plain} plain, {left_to_prost} left to prost, {refused} refused"
    );
}
