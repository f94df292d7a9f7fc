use opentelemetry_proto::tonic::common::v1::{ArrayValue, InstrumentationScope, KeyValueList};
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, exemplar,
};
use vla_pipeline::fixtures;

use super::*;

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

/// Both decoders' results, which must agree: the same request, or both an error.
fn agree(bytes: &[u8]) -> Option<ExportMetricsServiceRequest> {
    let ours = decode_request(bytes);
    let theirs = ExportMetricsServiceRequest::decode(bytes);
    match (ours, theirs) {
        (Ok(a), Ok(b)) => {
            // NaN != NaN: compare the encodings, which are canonical for equal messages.
            assert_eq!(a.encode_to_vec(), b.encode_to_vec(), "input {bytes:?}");
            Some(a)
        }
        (Err(_), Err(_)) => None,
        (ours, theirs) => panic!(
            "decoders disagree on {bytes:?}:\n ours   {:?}\n prost  {:?}",
            ours.map(|_| "ok"),
            theirs.map(|_| "ok")
        ),
    }
}

#[test]
fn decodes_what_prost_encodes() {
    let request = everything();
    let bytes = request.encode_to_vec();
    let decoded = agree(&bytes).expect("valid");
    assert_eq!(decoded.encode_to_vec(), bytes);
    assert!(agree(&[]).is_some_and(|r| r.resource_metrics.is_empty()));
}

/// Repeated scalars unpacked, a message field twice (merged: the resource, an attribute's
/// value), a scalar twice (the last wins),
/// the `data` oneof twice with the same variant (merged) and with another (replaced), and
/// unknown fields of every wire type including a group.
#[test]
fn follows_protobuf_merge_rules() {
    fn field(tag: u32, wt: u8, out: &mut Vec<u8>) {
        prost::encoding::encode_varint(u64::from(tag << 3 | u32::from(wt)), out);
    }
    fn len(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
        field(tag, LEN, out);
        prost::encoding::encode_varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }
    // A histogram point with bucket_counts unpacked, then one more packed run.
    let mut point = Vec::new();
    for c in [1u64, 2] {
        field(6, I64, &mut point);
        point.extend_from_slice(&c.to_le_bytes());
    }
    len(6, &3u64.to_le_bytes(), &mut point);
    field(4, I64, &mut point);
    point.extend_from_slice(&5u64.to_le_bytes());
    field(4, I64, &mut point);
    point.extend_from_slice(&6u64.to_le_bytes());
    // Unknown fields: varint, i64, len, i32, and a group with a nested group.
    field(99, VARINT, &mut point);
    point.push(1);
    field(98, I64, &mut point);
    point.extend_from_slice(&[0; 8]);
    len(97, b"xyz", &mut point);
    field(96, I32, &mut point);
    point.extend_from_slice(&[0; 4]);
    field(95, START_GROUP, &mut point);
    field(94, START_GROUP, &mut point);
    field(94, END_GROUP, &mut point);
    field(1, VARINT, &mut point);
    point.push(7);
    field(95, END_GROUP, &mut point);
    // An attribute whose value comes twice: a string, then an empty AnyValue, which merges
    // into the first and leaves it as it was.
    let mut value = Vec::new();
    len(1, b"x", &mut value);
    let mut kv = Vec::new();
    len(1, b"k", &mut kv);
    len(2, &value, &mut kv);
    len(2, &[], &mut kv);
    len(9, &kv, &mut point);
    let mut hist = Vec::new();
    len(1, &point, &mut hist);
    let mut metric = Vec::new();
    len(1, b"first", &mut metric);
    len(1, b"second", &mut metric);
    len(9, &hist, &mut metric);
    len(9, &hist, &mut metric);
    let mut sm = Vec::new();
    len(2, &metric, &mut sm);
    let mut replaced = Vec::new();
    len(9, &hist, &mut replaced);
    len(5, &[], &mut replaced);
    len(2, &replaced, &mut sm);
    // The resource twice: its attributes, then its dropped count, merged into one.
    let mut rm = Vec::new();
    let mut attr = Vec::new();
    len(1, b"service.name", &mut attr);
    len(2, &value, &mut attr);
    let mut resource = Vec::new();
    len(1, &attr, &mut resource);
    len(1, &resource, &mut rm);
    len(1, &[0x10, 0x03], &mut rm);
    len(2, &sm, &mut rm);
    let mut req = Vec::new();
    len(1, &rm, &mut req);

    let decoded = agree(&req).expect("valid");
    let metrics = &decoded.resource_metrics[0].scope_metrics[0].metrics;
    assert_eq!(metrics[0].name, "second");
    let Some(metric::Data::Histogram(h)) = &metrics[0].data else {
        panic!("histogram")
    };
    assert_eq!(h.data_points.len(), 2, "the second histogram merged in");
    assert_eq!(h.data_points[0].bucket_counts, vec![1, 2, 3]);
    assert_eq!(h.data_points[0].count, 6);
    assert_eq!(
        vla_pipeline::attr_str(&h.data_points[0].attributes, "k"),
        Some("x")
    );
    let resource = decoded.resource_metrics[0]
        .resource
        .as_ref()
        .expect("resource");
    assert_eq!(
        (resource.attributes.len(), resource.dropped_attributes_count),
        (1, 3)
    );
    assert!(matches!(metrics[1].data, Some(metric::Data::Gauge(_))));
}

#[test]
fn errors_name_the_field() {
    let mut request = everything();
    request.resource_metrics[0].scope_metrics[0].metrics[0].name = "\u{1F600}".into();
    let mut bytes = request.encode_to_vec();
    // Break the emoji's UTF-8 (its first byte is 0xF0; make it a lone continuation byte).
    let at = bytes.iter().position(|&b| b == 0xF0).expect("emoji");
    bytes[at] = 0x80;
    let err = decode_request(&bytes).expect_err("invalid UTF-8");
    assert_eq!(err.field, "Metric.name", "{err}");
    assert!(err.to_string().contains("UTF-8"), "{err}");
    assert!(ExportMetricsServiceRequest::decode(&bytes[..]).is_err());

    let truncated = &everything().encode_to_vec()[..100];
    assert!(agree(truncated).is_none());
}

/// Differential fuzzing: random damage to valid requests (bytes flipped, inserted, deleted,
/// duplicated, truncated) must be accepted or refused by both decoders alike, and decode to
/// the same request when accepted.
#[test]
fn agrees_with_prost_on_mutated_requests() {
    let seeds = [
        everything().encode_to_vec(),
        ExportMetricsServiceRequest {
            resource_metrics: vec![fixtures::resource(
                "api",
                vec![fixtures::gauge("g", "", &[(1.0, &[("a", "b")])])],
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
    let (mut accepted, mut refused) = (0, 0);
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
        match agree(&bytes) {
            Some(_) => accepted += 1,
            None => refused += 1,
        }
    }
    eprintln!("{accepted} accepted, {refused} refused");
    // Both outcomes must be well represented, or the test checks little.
    assert!(
        accepted > 1000 && refused > 1000,
        "{accepted} accepted, {refused} refused"
    );
}
