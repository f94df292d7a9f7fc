//! End to end: a `memory_limiter` in front of remote write to a Prometheus that is down. The
//! backlog fills the limiter, never past its soft limit; then clients of both transports get
//! retryable answers (gRPC `UNAVAILABLE`, HTTP 503 with `Retry-After`), and nothing they were
//! told is accepted is lost: once Prometheus comes up, every accepted series arrives, the
//! limiter's bytes return to zero and new data is accepted again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use prost::Message;
use vla_e2e::{Collector, Ports, Prometheus, eventually, free_port, pipeline_config_with};
use vla_pipeline::MetricBatch;
use vla_pipeline::fixtures;

const POINTS: usize = 2000;
const LIMIT: &str = "8MiB";
const SPIKE: &str = "2MiB";

/// Request `seq`: `POINTS` gauge points, each its own series.
fn request(seq: usize) -> ExportMetricsServiceRequest {
    let labels: Vec<String> = (0..POINTS).map(|i| format!("{seq}-{i}")).collect();
    let points: Vec<(f64, Vec<(&str, &str)>)> = labels
        .iter()
        .map(|l| (1.0, vec![("seq", l.as_str())]))
        .collect();
    let points: Vec<(f64, &[(&str, &str)])> =
        points.iter().map(|(v, a)| (*v, a.as_slice())).collect();
    let mut metric = fixtures::gauge("vla.memtest.value", "", &points);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    if let Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Gauge(g)) = &mut metric.data
    {
        g.data_points
            .iter_mut()
            .for_each(|p| p.time_unix_nano = now);
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![fixtures::resource("vla-api", vec![metric])],
    }
}

fn mib(text: &str) -> f64 {
    vla_pipeline::config::parse_bytes(text).unwrap() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_limiter_refuses_retryably_and_loses_nothing_it_accepted() {
    let prom_port = free_port();
    let write_url = format!("http://127.0.0.1:{prom_port}/api/v1/write");
    let ports = Ports::new();
    let yaml = pipeline_config_with(
        &ports,
        &write_url,
        "100ms",
        "memory_limiter",
        &format!("{{ limit_bytes: {LIMIT}, spike_limit_bytes: {SPIKE} }}"),
    );
    let collector = Collector::start(&yaml, ports.telemetry)
        .await
        .expect("collector");
    let mut grpc = MetricsServiceClient::connect(format!("http://127.0.0.1:{}", ports.grpc))
        .await
        .expect("connect");
    let http = reqwest::Client::new();
    let http_url = format!("http://127.0.0.1:{}/v1/metrics", ports.http);

    // Prometheus is down: fill the backlog until both transports have been refused.
    let (mut accepted, mut grpc_refused, mut http_refused) = (0usize, 0usize, 0usize);
    for seq in 0..200 {
        if grpc_refused > 0 && http_refused > 0 {
            break;
        }
        let req = request(seq);
        if seq % 2 == 0 {
            match grpc.export(req).await {
                Ok(_) => accepted += 1,
                Err(s) => {
                    assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
                    grpc_refused += 1;
                }
            }
        } else {
            let resp = http
                .post(&http_url)
                .header("content-type", "application/x-protobuf")
                .body(req.encode_to_vec())
                .send()
                .await
                .unwrap();
            match resp.status().as_u16() {
                200 => accepted += 1,
                503 => {
                    assert_eq!(resp.headers()["retry-after"], "1");
                    http_refused += 1;
                }
                other => panic!("HTTP {other}: {}", resp.text().await.unwrap_or_default()),
            }
        }
    }
    assert!(
        grpc_refused > 0 && http_refused > 0,
        "both transports refused after {accepted} accepted requests"
    );
    let own = collector.self_metrics().await.unwrap();
    let get = |k: &str| own.get(k).copied().unwrap_or(-1.0);
    let peak = get(r#"vla_collector_memory_limiter_peak_bytes{processor="memory_limiter"}"#);
    let soft = mib(LIMIT) - mib(SPIKE);
    assert_eq!(
        get(r#"vla_collector_memory_limiter_soft_limit_bytes{processor="memory_limiter"}"#),
        soft
    );
    let body = request(0).encode_to_vec();
    let one = MetricBatch::new(
        "otlp".into(),
        ExportMetricsServiceRequest::decode(body.as_slice())
            .unwrap()
            .resource_metrics,
    )
    .memory_bytes() as f64;
    assert!(
        peak <= soft && peak > soft - 2.0 * one,
        "peak {peak} B: filled to the soft limit {soft} B (one request {one} B), never past it"
    );
    let refused_points = get(
        r#"vla_collector_receiver_refused_data_points_total{reason="memory_limit",receiver="otlp"}"#,
    );
    let refused_early: f64 = ["grpc", "http"]
        .iter()
        .map(|t| {
            get(&format!(
                r#"vla_collector_receiver_refused_requests_total{{reason="memory_limit",receiver="otlp",transport="{t}"}}"#
            ))
        })
        .sum();
    assert_eq!(
        refused_points / POINTS as f64 + refused_early,
        (grpc_refused + http_refused) as f64,
        "every refused request is counted once, decoded or not"
    );

    // Prometheus comes up: the backlog drains, every accepted series arrives.
    let prom = Prometheus::start_on(prom_port, &[])
        .await
        .expect("prometheus");
    let want = (accepted * POINTS) as f64;
    let prom = &prom;
    eventually(Duration::from_secs(60), move || async move {
        let n = prom.query("count(vla_memtest_value)").await.unwrap();
        match n.first() {
            Some(s) if s.value == want => Ok(()),
            other => Err(format!("{other:?} series, want {want}")),
        }
    })
    .await
    .expect("every accepted series arrives");
    let telemetry = &collector;
    eventually(Duration::from_secs(10), move || async move {
        let own = telemetry.self_metrics().await.unwrap();
        match own.get(r#"vla_collector_memory_limiter_used_bytes{processor="memory_limiter"}"#) {
            Some(v) if *v == 0.0 => Ok(()),
            other => Err(format!("used bytes {other:?}")),
        }
    })
    .await
    .expect("the limiter's bytes come back once delivered");
    grpc.export(request(10_000)).await.expect("accepted again");
}
