//! Helpers shared by the collector's integration tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
use vla_collector::RunningCollector;
use vla_collector::config::{Config, Source};

/// A validated config from YAML text (no environment variables).
pub fn config(yaml: &str) -> Config {
    vla_collector::config::validate(&Source::text("test.yaml", yaml), &|_| None)
        .unwrap_or_else(|d| panic!("{d}"))
}

/// Starts a collector and waits until `/ready` says 200.
pub async fn start(yaml: &str) -> RunningCollector {
    let c = RunningCollector::start(config(yaml)).await.expect("start");
    let telemetry = c
        .addr("service.telemetry.metrics.address")
        .expect("telemetry addr");
    wait_ready(telemetry).await;
    c
}

/// Polls `GET /ready` until 200 (bounded: 10 s).
pub async fn wait_ready(addr: SocketAddr) {
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("http://{addr}/ready")).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("collector at {addr} never became ready");
}

/// `GET http://addr/path` → (status, body).
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .expect("GET");
    let status = r.status().as_u16();
    (status, r.text().await.expect("body"))
}

/// Polls `GET http://addr/path` until `pred(body)` holds (bounded: 10 s); returns the body.
pub async fn poll_until(addr: SocketAddr, path: &str, pred: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    for _ in 0..200 {
        let (status, body) = get(addr, path).await;
        if status == 200 && pred(&body) {
            return body;
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition never held for http://{addr}{path}; last body:\n{last}");
}

/// The value of the series line starting with `series ` in Prometheus text.
pub fn value_of(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Sends one OTLP/HTTP protobuf request; returns the status.
pub async fn send_http(addr: SocketAddr, rms: Vec<ResourceMetrics>) -> u16 {
    use prost::Message;
    let body = ExportMetricsServiceRequest {
        resource_metrics: rms,
    }
    .encode_to_vec();
    reqwest::Client::new()
        .post(format!("http://{addr}/v1/metrics"))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .expect("POST /v1/metrics")
        .status()
        .as_u16()
}

/// Sends one OTLP/gRPC request; panics unless it succeeds.
pub async fn send_grpc(addr: SocketAddr, rms: Vec<ResourceMetrics>) {
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
    let mut client = MetricsServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    client
        .export(ExportMetricsServiceRequest {
            resource_metrics: rms,
        })
        .await
        .expect("export");
}
