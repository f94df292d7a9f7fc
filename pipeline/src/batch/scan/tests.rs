#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;

use super::*;
use crate::batch::{count_data_points, is_delta};
use crate::fixtures;

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
    let request = fixtures::every_field_request();
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
        fixtures::every_field_request().encode_to_vec(),
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
    let mut rng = fixtures::Damage::new(0x9e37_79b9_7f4a_7c15);
    let (mut plain, mut left_to_prost, mut refused) = (0, 0, 0);
    for i in 0..20_000 {
        let bytes = rng.damage(&seeds[i % seeds.len()]);
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
