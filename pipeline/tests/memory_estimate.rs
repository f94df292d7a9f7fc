//! `MetricBatch::memory_bytes` against what the allocator really hands out while a request
//! is decoded, as a receiver decodes it. A separate test binary, so its counting allocator
//! sees no other test's allocations.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use vla_pipeline::MetricBatch;

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// The allocator's counts are global: one test measures at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn kv(k: &str, v: String) -> KeyValue {
    KeyValue {
        key: k.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v)),
        }),
        ..Default::default()
    }
}

/// The load generator's shape: 1000 points, 40 % gauges, 40 % sums, 20 % 12-bucket
/// histograms, four attributes per point.
fn request() -> Vec<u8> {
    let attrs = |i: usize| {
        vec![
            kv("model", format!("model-{}", i % 5)),
            kv("robot_type", format!("robot-{}", i % 4)),
            kv("customer_id", format!("cust-{i}")),
            kv("gpu_id", (i % 8).to_string()),
        ]
    };
    let number = |i: usize| NumberDataPoint {
        attributes: attrs(i),
        time_unix_nano: 1_700_000_000_000_000_000,
        value: Some(number_data_point::Value::AsDouble(i as f64)),
        ..Default::default()
    };
    let metrics = (0..10)
        .map(|m| Metric {
            name: format!("vla.load.metric{m}"),
            unit: "1".into(),
            data: Some(match m % 5 {
                0 | 1 => metric::Data::Gauge(Gauge {
                    data_points: (0..100).map(number).collect(),
                }),
                2 | 3 => metric::Data::Sum(Sum {
                    data_points: (0..100).map(number).collect(),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                }),
                _ => metric::Data::Histogram(Histogram {
                    data_points: (0..100)
                        .map(|i| HistogramDataPoint {
                            attributes: attrs(i),
                            count: 12,
                            sum: Some(3.5),
                            bucket_counts: vec![1; 12],
                            explicit_bounds: vec![0.5; 11],
                            ..Default::default()
                        })
                        .collect(),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                }),
            }),
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "vla-api".into())],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

#[test]
fn the_estimate_matches_what_decoding_allocates() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let body = request();
    let region = Region::new(GLOBAL);
    let decoded = ExportMetricsServiceRequest::decode(body.as_slice()).expect("decodes");
    let batch = MetricBatch::new("otlp".into(), decoded.resource_metrics);
    let change = region.change();
    let allocated = (change.bytes_allocated - change.bytes_deallocated) as u64;
    let blocks = (change.allocations - change.deallocations) as u64;
    let estimate = batch.memory_bytes();
    assert_eq!(batch.data_points(), 1000);
    // The requested sizes plus the allocator's per-block overhead the estimate assumes
    // (16 B), give or take 5 %: the estimate misses no allocation of the decoded data.
    let expected = allocated + 16 * blocks;
    assert!(
        estimate.abs_diff(expected) <= expected / 20,
        "estimate {estimate} B for {allocated} B in {blocks} blocks (encoded {} B)",
        body.len()
    );
    drop(batch);
    let after = region.change();
    assert_eq!(
        after.bytes_allocated, after.bytes_deallocated,
        "everything decoded is freed with the batch"
    );
}

#[test]
fn an_encoded_batch_holds_its_bytes_and_the_estimate_says_so() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let body = request();
    let region = Region::new(GLOBAL);
    let batch =
        MetricBatch::from_request("otlp".into(), bytes::Bytes::copy_from_slice(&body)).unwrap();
    let change = region.change();
    let allocated = (change.bytes_allocated - change.bytes_deallocated) as u64;
    let blocks = (change.allocations - change.deallocations) as u64;
    assert!(batch.is_encoded());
    assert_eq!(batch.data_points(), 1000);
    let expected = allocated + 16 * blocks;
    let estimate = batch.memory_bytes();
    assert!(
        estimate.abs_diff(expected) <= expected / 20,
        "estimate {estimate} B for {allocated} B in {blocks} blocks (encoded {} B)",
        body.len()
    );
    let decoded = MetricBatch::new(
        "otlp".into(),
        ExportMetricsServiceRequest::decode(body.as_slice())
            .unwrap()
            .resource_metrics,
    );
    eprintln!(
        "1000 points: encoded {estimate} B, decoded {} B",
        decoded.memory_bytes()
    );
    assert!(estimate * 4 < decoded.memory_bytes());
}
