//! End to end: 10 000 series of one counter through `cardinality_limit` (100 series) into a
//! real Prometheus: at most 101 series arrive (100 and the overflow series), and their sum is
//! the input's, round after round.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Metric, NumberDataPoint, Sum, metric,
};
use vla_e2e::{Collector, Ports, Prometheus, eventually, pipeline_config_with};
use vla_pipeline::fixtures::{self, T0_NANOS};

const SERIES: u32 = 10_000;
const LIMIT: usize = 100;

/// Customer `i`'s cumulative request count in round `round`.
fn value(i: u32, round: u32) -> f64 {
    f64::from(i % 7 + 1) * f64::from(round + 1)
}

fn request(round: u32) -> ExportMetricsServiceRequest {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let points = (0..SERIES)
        .map(|i| NumberDataPoint {
            attributes: fixtures::attrs(&[("customer_id", &format!("cust-{i:05}"))]),
            start_time_unix_nano: T0_NANOS,
            time_unix_nano: now,
            value: Some(Value::AsDouble(value(i, round))),
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![fixtures::resource(
            "vla-api",
            vec![Metric {
                name: "vla.customer.requests".to_owned(),
                data: Some(metric::Data::Sum(Sum {
                    data_points: points,
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                })),
                ..Default::default()
            }],
        )],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_series_arrive_as_a_hundred_and_one_with_the_same_sum() {
    let prom = Prometheus::start(&[]).await.expect("prometheus");
    let ports = Ports::new();
    let yaml = pipeline_config_with(
        &ports,
        &prom.write_url(),
        "100ms",
        "cardinality_limit",
        &format!("{{ limits: [{{ metrics: [\"vla.customer.*\"], max_series: {LIMIT} }}] }}"),
    );
    let collector = Collector::start(&yaml, ports.telemetry)
        .await
        .expect("collector");
    let mut client = MetricsServiceClient::connect(format!("http://127.0.0.1:{}", ports.grpc))
        .await
        .expect("connect");
    for round in 0..2 {
        client.export(request(round)).await.expect("export");
        let want: f64 = (0..SERIES).map(|i| value(i, round)).sum();
        let prom = &prom;
        eventually(Duration::from_secs(30), move || async move {
            let sum = prom
                .query("sum(vla_customer_requests_total)")
                .await
                .unwrap();
            match sum.first() {
                Some(s) if s.value == want => Ok(()),
                other => Err(format!("round {round}: sum {other:?}, want {want}")),
            }
        })
        .await
        .expect("the input's sum");
        let count = prom
            .query("count(vla_customer_requests_total)")
            .await
            .unwrap();
        assert_eq!(count.first().map(|s| s.value), Some((LIMIT + 1) as f64));
        let overflow = prom
            .query(r#"count(vla_customer_requests_total{otel_metric_overflow="true"})"#)
            .await
            .unwrap();
        assert_eq!(overflow.first().map(|s| s.value), Some(1.0));
    }
    let own = collector.self_metrics().await.unwrap();
    let get = |k: &str| own.get(k).copied();
    assert_eq!(
        get(
            r#"vla_collector_processor_cardinality_limit_series{pipeline="metrics",processor="cardinality_limit"}"#
        ),
        Some(LIMIT as f64)
    );
    assert_eq!(
        get(
            r#"vla_collector_processor_cardinality_limit_data_points_total{processor="cardinality_limit",result="overflowed"}"#
        ),
        Some(2.0 * f64::from(SERIES - LIMIT as u32))
    );
}
