//! End to end: the official OpenTelemetry SDK (OTLP gRPC and HTTP) → `vla-collector` (a real
//! process on a YAML config) → a real Prometheus (Debian package) by remote write, and the
//! collector's own `prometheus` scrape endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_otlp::{MetricExporter, Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use vla_e2e::{
    Collector, Ports, Prometheus, Sample, free_port, parse_samples, pipeline_config, start_stack,
};

const WAIT: Duration = Duration::from_secs(30);

fn resource(service: &str, namespace: Option<&str>) -> Resource {
    let mut attrs = vec![
        KeyValue::new("service.instance.id", "api-1"),
        KeyValue::new("deployment.environment", "test"),
    ];
    if let Some(ns) = namespace {
        attrs.push(KeyValue::new("service.namespace", ns.to_owned()));
    }
    Resource::builder_empty()
        .with_service_name(service.to_owned())
        .with_attributes(attrs)
        .build()
}

/// A provider that exports only when flushed (interval of an hour).
fn provider(exporter: MetricExporter, resource: Resource) -> SdkMeterProvider {
    let reader = PeriodicReader::builder(exporter)
        .with_interval(Duration::from_secs(3600))
        .build();
    SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(resource)
        .build()
}

fn grpc_provider(port: u16, temporality: Temporality, resource: Resource) -> SdkMeterProvider {
    let exporter = MetricExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://127.0.0.1:{port}"))
        .with_temporality(temporality)
        .build()
        .expect("grpc exporter");
    provider(exporter, resource)
}

fn http_provider(port: u16, resource: Resource) -> SdkMeterProvider {
    let exporter = MetricExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("http://127.0.0.1:{port}/v1/metrics"))
        .build()
        .expect("http exporter");
    provider(exporter, resource)
}

/// The API's provider: cumulative, resource `vla/vla-api`, instance `api-1`.
fn api_provider(port: u16) -> SdkMeterProvider {
    grpc_provider(
        port,
        Temporality::Cumulative,
        resource("vla-api", Some("vla")),
    )
}

/// Flushes off the async runtime: the tonic exporter deadlocks if flushed on a runtime thread.
async fn flush(provider: &SdkMeterProvider) {
    let p = provider.clone();
    tokio::task::spawn_blocking(move || p.force_flush())
        .await
        .expect("join")
        .expect("flush");
}

/// Records the metrics the VLA API emits most: requests, latency, GPU temperature, queue depth.
fn record_api_metrics(provider: &SdkMeterProvider) {
    let meter = provider.meter("vla-api");
    let requests = meter
        .u64_counter("vla.inference.requests")
        .with_description("Inference requests")
        .build();
    let ok = [
        KeyValue::new("model", "pi0"),
        KeyValue::new("robot_type", "arm"),
        KeyValue::new("status", "success"),
        KeyValue::new("tier", "pro"),
    ];
    requests.add(2, &ok);
    requests.add(1, &ok);
    let duration = meter
        .f64_histogram("vla.inference.duration")
        .with_unit("s")
        .with_boundaries(vec![0.1, 0.5, 1.0, 2.5])
        .build();
    let dims = [
        KeyValue::new("model", "pi0"),
        KeyValue::new("robot_type", "arm"),
    ];
    for v in [0.05, 0.3, 0.3, 2.0] {
        duration.record(v, &dims);
    }
    let temp = meter
        .f64_gauge("vla.gpu.temperature")
        .with_unit("Cel")
        .build();
    temp.record(71.5, &[KeyValue::new("gpu_id", "0")]);
    let depth = meter
        .i64_up_down_counter("vla.inference.queue.depth")
        .build();
    depth.add(9, &[]);
    depth.add(-2, &[]);
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The labels every series of the gRPC-sent resource carries.
fn api_labels(name: &str, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut l = labels(&[
        ("__name__", name),
        ("cluster", "e2e"),
        ("instance", "api-1"),
        ("job", "vla/vla-api"),
        ("otel_scope_name", "vla-api"),
    ]);
    l.extend(labels(extra));
    l
}

fn one(samples: &[Sample], what: &str) -> Sample {
    assert_eq!(samples.len(), 1, "{what}: {samples:?}");
    samples[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_metrics_arrive_in_prometheus_by_remote_write_and_on_the_scrape_endpoint() {
    let (prom, ports, mut collector) = start_stack("100ms").await;

    let grpc = api_provider(ports.grpc);
    record_api_metrics(&grpc);
    flush(&grpc).await;
    let http = http_provider(ports.http, resource("vla-api-http", None));
    http.meter("vla-api")
        .f64_gauge("vla.gpu.utilization")
        .with_unit("%")
        .build()
        .record(87.0, &[KeyValue::new("gpu_id", "1")]);
    flush(&http).await;

    // Remote write: exact names, labels and values.
    prom.wait_for("vla_gpu_utilization_percent", 1, WAIT)
        .await
        .expect("http-sent gauge");
    prom.wait_for("vla_inference_duration_seconds_count", 1, WAIT)
        .await
        .expect("grpc-sent histogram");
    let req = one(
        &prom.query("vla_inference_requests_total").await.unwrap(),
        "counter",
    );
    assert_eq!(
        req.labels,
        api_labels(
            "vla_inference_requests_total",
            &[
                ("model", "pi0"),
                ("robot_type", "arm"),
                ("status", "success"),
                ("tier", "pro")
            ]
        )
    );
    assert_eq!(req.value, 3.0);

    let dims = [("model", "pi0"), ("robot_type", "arm")];
    let buckets = prom
        .query("vla_inference_duration_seconds_bucket")
        .await
        .unwrap();
    let mut by_le: Vec<(String, f64)> = buckets
        .iter()
        .map(|s| (s.labels["le"].clone(), s.value))
        .collect();
    by_le.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    assert_eq!(
        by_le,
        vec![
            ("0.1".to_owned(), 1.0),
            ("0.5".to_owned(), 3.0),
            ("1".to_owned(), 3.0),
            ("+Inf".to_owned(), 4.0),
            ("2.5".to_owned(), 4.0),
        ]
    );
    let mut le_labels = api_labels("vla_inference_duration_seconds_bucket", &dims);
    le_labels.insert("le".into(), "0.5".into());
    assert!(buckets.iter().any(|s| s.labels == le_labels), "{buckets:?}");
    let count = one(
        &prom
            .query("vla_inference_duration_seconds_count")
            .await
            .unwrap(),
        "count",
    );
    assert_eq!(
        count.labels,
        api_labels("vla_inference_duration_seconds_count", &dims)
    );
    assert_eq!(count.value, 4.0);
    let sum = one(
        &prom
            .query("vla_inference_duration_seconds_sum")
            .await
            .unwrap(),
        "sum",
    );
    assert!((sum.value - 2.65).abs() < 1e-9, "{sum:?}");

    let temp = one(
        &prom.query("vla_gpu_temperature_celsius").await.unwrap(),
        "gauge",
    );
    assert_eq!(
        temp.labels,
        api_labels("vla_gpu_temperature_celsius", &[("gpu_id", "0")])
    );
    assert_eq!(temp.value, 71.5);
    let depth = one(
        &prom.query("vla_inference_queue_depth").await.unwrap(),
        "updown",
    );
    assert_eq!(depth.value, 7.0);

    let util = one(
        &prom.query("vla_gpu_utilization_percent").await.unwrap(),
        "http gauge",
    );
    assert_eq!(
        util.labels,
        labels(&[
            ("__name__", "vla_gpu_utilization_percent"),
            ("cluster", "e2e"),
            ("gpu_id", "1"),
            ("instance", "api-1"),
            ("job", "vla-api-http"),
            ("otel_scope_name", "vla-api"),
        ])
    );
    assert_eq!(util.value, 87.0);

    let info = prom
        .wait_for(r#"target_info{job="vla/vla-api"}"#, 1, WAIT)
        .await
        .expect("target_info");
    let info = one(&info, "target_info");
    assert_eq!(
        info.labels,
        labels(&[
            ("__name__", "target_info"),
            ("cluster", "e2e"),
            ("deployment_environment", "test"),
            ("instance", "api-1"),
            ("job", "vla/vla-api"),
        ])
    );
    assert_eq!(info.value, 1.0);

    // The scrape endpoint serves exactly the same series with the same values (less the
    // remote-write exporter's external label).
    let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", ports.scrape))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut scraped: Vec<(BTreeMap<String, String>, f64)> = parse_samples(&text)
        .unwrap()
        .into_iter()
        .map(|s| (s.labels, s.value))
        .collect();
    let mut written: Vec<(BTreeMap<String, String>, f64)> = prom
        .query(r#"{__name__=~"vla_.+|target_info"}"#)
        .await
        .unwrap()
        .into_iter()
        .map(|mut s| {
            assert_eq!(s.labels.remove("cluster").as_deref(), Some("e2e"), "{s:?}");
            (s.labels, s.value)
        })
        .collect();
    scraped.sort_by(|a, b| a.0.cmp(&b.0));
    written.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        written.len(),
        13,
        "4 gauges/counters + 5 buckets + sum + count + 2 target_info"
    );
    assert_eq!(scraped, written, "scrape endpoint vs remote write:\n{text}");
    assert!(
        text.contains("# TYPE vla_inference_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE vla_inference_requests_total counter"),
        "{text}"
    );

    // The collector counted what it accepted and sent.
    let own = collector.self_metrics().await.unwrap();
    let accepted = own
        .iter()
        .filter(|(k, _)| k.starts_with("vla_collector_receiver_accepted_data_points_total{"))
        .map(|(_, v)| v)
        .sum::<f64>();
    assert_eq!(
        accepted, 5.0,
        "4 points by gRPC (requests, duration, temperature, depth) + 1 by HTTP: {own:?}"
    );
    let sent = own
        .get(r#"vla_collector_exporter_sent_data_points_total{exporter="prometheusremotewrite"}"#)
        .copied();
    assert_eq!(sent, Some(5.0), "{own:?}");

    let code = collector
        .process
        .terminate(Duration::from_secs(20))
        .expect("clean stop");
    assert_eq!(code, Some(0), "{}", collector.process.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_sums_are_dropped_and_counted_not_mangled() {
    let (prom, ports, collector) = start_stack("100ms").await;
    let provider = grpc_provider(
        ports.grpc,
        Temporality::Delta,
        resource("vla-api", Some("vla")),
    );
    let meter = provider.meter("vla-api");
    meter
        .u64_counter("vla.rate.limit.exceeded")
        .build()
        .add(5, &[]);
    meter
        .f64_gauge("vla.safety.score")
        .build()
        .record(0.97, &[]);
    flush(&provider).await;

    // The gauge passes (temporality does not apply to gauges)...
    let score = prom
        .wait_for("vla_safety_score", 1, WAIT)
        .await
        .expect("gauge");
    assert_eq!(score[0].value, 0.97);
    // ...the delta counter does not, and is counted as dropped.
    assert!(
        prom.query("vla_rate_limit_exceeded_total")
            .await
            .unwrap()
            .is_empty()
    );
    let own = collector.self_metrics().await.unwrap();
    assert_eq!(
        own.get(r#"vla_collector_exporter_dropped_data_points_total{exporter="prometheusremotewrite",reason="delta_temporality"}"#),
        Some(&1.0),
        "{own:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_delivers_what_was_accepted() {
    // A batch timeout far longer than the test: only the shutdown drain can deliver it.
    let (prom, ports, mut collector) = start_stack("10m").await;
    let provider = api_provider(ports.grpc);
    provider
        .meter("vla-api")
        .i64_gauge("vla.worker.active")
        .build()
        .record(12, &[]);
    flush(&provider).await;
    let own = collector.self_metrics().await.unwrap();
    assert_eq!(
        own.get(r#"vla_collector_receiver_accepted_data_points_total{receiver="otlp"}"#),
        Some(&1.0),
        "{own:?}"
    );
    assert!(
        prom.query("vla_worker_active").await.unwrap().is_empty(),
        "held by the batcher"
    );
    let code = collector
        .process
        .terminate(Duration::from_secs(20))
        .expect("clean stop");
    assert_eq!(code, Some(0), "{}", collector.process.log());
    let got = prom
        .wait_for("vla_worker_active", 1, WAIT)
        .await
        .expect("drained on stop");
    assert_eq!(got[0].value, 12.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_sent_during_a_backend_outage_arrives_when_it_comes_back() {
    let prom_port = free_port();
    let ports = Ports::new();
    let write_url = format!("http://127.0.0.1:{prom_port}/api/v1/write");
    let collector = Collector::start(
        &pipeline_config(&ports, &write_url, "100ms"),
        ports.telemetry,
    )
    .await
    .expect("collector");
    let provider = api_provider(ports.grpc);
    provider
        .meter("vla-api")
        .i64_gauge("vla.db.connections.active")
        .build()
        .record(17, &[]);
    flush(&provider).await;
    // Wait until the exporter has failed at least once against the missing backend.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let own = collector.self_metrics().await.unwrap();
        let failed: f64 = own
            .iter()
            .filter(|(k, _)| k.starts_with(r#"vla_collector_exporter_failed_attempts_total{exporter="prometheusremotewrite""#))
            .map(|(_, v)| v)
            .sum();
        if failed > 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no failed attempt seen: {own:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let prom = Prometheus::start_on(prom_port, &[])
        .await
        .expect("prometheus");
    let got = prom
        .wait_for("vla_db_connections_active", 1, WAIT)
        .await
        .expect("retried into the recovered backend");
    assert_eq!(got[0].value, 17.0);
}
