//! End to end: `usage_revenue` with the price table of `configs/collector-full.yaml`, request
//! counts from an OTLP client, revenue read back from a real Prometheus with the Business
//! dashboard's metric: successful requests × the tier's price, exact across a client restart,
//! errors and unpriced tiers not billed (the latter counted).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Metric, NumberDataPoint, Sum, metric,
};
use vla_e2e::{Collector, Ports, Prometheus, eventually, pipeline_config_with, repo_yaml};
use vla_pipeline::fixtures;

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// One export of the request counter: (tier, status, start, cumulative count).
fn requests(source: &str, points: &[(&str, &str, u64, f64)]) -> ExportMetricsServiceRequest {
    let now = now_nanos();
    let data_points = points
        .iter()
        .map(|(tier, status, start, v)| NumberDataPoint {
            attributes: fixtures::attrs(&[
                ("tier", tier),
                ("status", status),
                ("model", "pi0-fast"),
            ]),
            start_time_unix_nano: *start,
            time_unix_nano: now,
            value: Some(Value::AsDouble(*v)),
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![fixtures::resource(
            "vla-api",
            vec![Metric {
                name: source.to_owned(),
                data: Some(metric::Data::Sum(Sum {
                    data_points,
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                })),
                ..Default::default()
            }],
        )],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revenue_is_billed_requests_times_the_shipped_prices() {
    let shipped = repo_yaml("configs/collector-full.yaml").unwrap();
    let section = shipped["processors"]["usage_revenue"].clone();
    assert!(
        section.is_object(),
        "collector-full.yaml has no usage_revenue"
    );
    let source = section["source"]
        .as_str()
        .unwrap_or("vla.inference.requests")
        .to_owned();
    let price = |tier: &str| section["prices"][tier]["default"].as_f64().unwrap();
    assert_eq!(
        section["match"]["status"], "success",
        "the test bills status=success"
    );

    let prom = Prometheus::start(&[]).await.expect("prometheus");
    let ports = Ports::new();
    let yaml = pipeline_config_with(
        &ports,
        &prom.write_url(),
        "100ms",
        "usage_revenue",
        &section.to_string(),
    );
    let collector = Collector::start(&yaml, ports.telemetry)
        .await
        .expect("collector");
    let mut client = MetricsServiceClient::connect(format!("http://127.0.0.1:{}", ports.grpc))
        .await
        .expect("connect");

    // Series that start after the collector did: their first value is all increase.
    let t0 = now_nanos();
    client
        .export(requests(
            &source,
            &[
                ("pro", "success", t0, 100.0),
                ("pro", "error", t0, 50.0),
                ("starter", "success", t0, 10.0),
                ("free", "success", t0, 1000.0),
                ("enterprise", "success", t0, 20.0),
                ("mystery", "success", t0, 7.0),
            ],
        ))
        .await
        .expect("export");
    // Later: pro +50, starter +20, errors +10, and the enterprise client restarted (its
    // counter starts over at 5: an increase of 5, not -15).
    let t1 = now_nanos();
    client
        .export(requests(
            &source,
            &[
                ("pro", "success", t0, 150.0),
                ("pro", "error", t0, 60.0),
                ("starter", "success", t0, 30.0),
                ("free", "success", t0, 1000.0),
                ("enterprise", "success", t1, 5.0),
                ("mystery", "success", t0, 9.0),
            ],
        ))
        .await
        .expect("export");

    let want: BTreeMap<String, f64> = [
        ("pro", 150.0 * price("pro")),
        ("starter", 30.0 * price("starter")),
        ("free", 1000.0 * price("free")),
        ("enterprise", 25.0 * price("enterprise")),
    ]
    .into_iter()
    .map(|(t, v)| (t.to_owned(), v))
    .collect();
    let prom = &prom;
    let want = &want;
    eventually(Duration::from_secs(30), move || async move {
        let got: BTreeMap<String, f64> = prom
            .query("sum by (tier) (vla_revenue_total)")
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.labels.get("tier").cloned().unwrap_or_default(), s.value))
            .collect();
        let close = got.len() == want.len()
            && want
                .iter()
                .all(|(t, v)| got.get(t).is_some_and(|g| (g - v).abs() < 1e-9));
        if close {
            Ok(())
        } else {
            Err(format!("revenue by tier {got:?}, want {want:?}"))
        }
    })
    .await
    .expect("revenue per tier");
    let own = collector.self_metrics().await.unwrap();
    let unpriced = own
        .iter()
        .find(|(k, _)| {
            k.starts_with("vla_collector_processor_usage_revenue_data_points_total")
                && k.contains(r#"result="unpriced""#)
        })
        .map(|(_, v)| *v);
    assert_eq!(
        unpriced,
        Some(2.0),
        "the unpriced tier's points, counted: {own:?}"
    );
}
