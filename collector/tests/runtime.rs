//! The collector in-process: OTLP over HTTP and gRPC in, the prometheus scrape endpoint out,
//! health and self-metrics on the telemetry endpoint, clean and deadline-bound shutdowns.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use vla_pipeline::fixtures;

const ONE_PIPELINE: &str = "\
receivers:
  otlp:
    protocols:
      grpc: { endpoint: 127.0.0.1:0 }
      http: { endpoint: 127.0.0.1:0 }
processors:
  attributes/env:
    actions: [{ key: env, value: test, action: insert }]
  batch: { timeout: 10ms }
exporters:
  prometheus:
    endpoint: 127.0.0.1:0
    disable_scope_info: true
  debug:
service:
  pipelines:
    metrics:
      receivers: [otlp]
      processors: [attributes/env, batch]
      exporters: [prometheus, debug]
  telemetry:
    metrics: { address: 127.0.0.1:0 }
  shutdown_timeout: 5s
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_http_and_grpc_in_prometheus_out_then_clean_shutdown() {
    let c = start(ONE_PIPELINE).await;
    let http = c.addr("receivers.otlp.protocols.http.endpoint").unwrap();
    let grpc = c.addr("receivers.otlp.protocols.grpc.endpoint").unwrap();
    let scrape = c.addr("exporters.prometheus.endpoint").unwrap();
    let telemetry = c.addr("service.telemetry.metrics.address").unwrap();
    for a in [http, grpc, scrape, telemetry] {
        assert_ne!(a.port(), 0, "{a}");
    }

    let gauge = fixtures::resource(
        "vla-api",
        vec![fixtures::gauge(
            "vla.gpu.temperature",
            "Cel",
            &[(71.5, &[("gpu_id", "0")])],
        )],
    );
    assert_eq!(send_http(http, vec![gauge]).await, 200);
    let sum = fixtures::resource(
        "vla-api",
        vec![fixtures::cumulative_sum(
            "vla.inference.requests",
            "",
            true,
            &[(42.0, &[("model", "pi0")])],
        )],
    );
    send_grpc(grpc, vec![sum]).await;

    let gauge_series = "vla_gpu_temperature_celsius{env=\"test\",gpu_id=\"0\",job=\"vla-api\"}";
    let sum_series = "vla_inference_requests_total{env=\"test\",job=\"vla-api\",model=\"pi0\"}";
    let text = poll_until(scrape, "/metrics", |t| {
        t.contains(gauge_series) && t.contains(sum_series)
    })
    .await;
    assert_eq!(value_of(&text, gauge_series), Some(71.5), "{text}");
    assert_eq!(value_of(&text, sum_series), Some(42.0), "{text}");

    // Health and self-metrics.
    assert_eq!(get(telemetry, "/health").await, (200, "ok".to_owned()));
    let (status, ready) = get(telemetry, "/ready").await;
    assert_eq!(status, 200);
    for part in [
        r#""status":"ready""#,
        r#"{"kind":"receiver","id":"otlp","state":"running"}"#,
        r#"{"kind":"pipeline","id":"metrics","state":"running"}"#,
        r#"{"kind":"exporter","id":"prometheus","state":"running"}"#,
        r#"{"kind":"exporter","id":"debug","state":"running"}"#,
    ] {
        assert!(ready.contains(part), "{part} not in {ready}");
    }
    let own = poll_until(telemetry, "/metrics", |t| {
        value_of(
            t,
            "vla_collector_exporter_sent_data_points_total{exporter=\"debug\"}",
        ) == Some(2.0)
    })
    .await;
    let expect = [
        (
            "vla_collector_receiver_accepted_data_points_total{receiver=\"otlp\"}",
            2.0,
        ),
        (
            "vla_collector_receiver_refused_data_points_total{reason=\"pipeline_full\",receiver=\"otlp\"}",
            0.0,
        ),
        (
            "vla_collector_exporter_sent_data_points_total{exporter=\"prometheus\"}",
            2.0,
        ),
        (
            "vla_collector_exporter_queue_capacity{exporter=\"prometheus\",sizer=\"points\"}",
            65536.0,
        ),
        (
            "vla_collector_exporter_queue_points{exporter=\"prometheus\"}",
            0.0,
        ),
        (
            "vla_collector_pipeline_queue_capacity{pipeline=\"metrics\"}",
            32.0,
        ),
        (
            "vla_collector_prometheus_series{exporter=\"prometheus\"}",
            2.0,
        ),
        (
            &format!(
                "vla_collector_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            ),
            1.0,
        ),
    ];
    for (series, want) in expect {
        assert_eq!(value_of(&own, series), Some(want), "{series} in\n{own}");
    }
    assert!(value_of(&own, "vla_collector_uptime_seconds").is_some_and(|v| v > 0.0));

    let report = c.shutdown().await;
    assert!(report.clean, "{report:?}");
    assert!(report.failures.is_empty(), "{report:?}");
    // Everything is closed afterwards.
    for a in [http, grpc, scrape, telemetry] {
        assert!(
            tokio::net::TcpStream::connect(a).await.is_err(),
            "{a} still accepts connections"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_feeds_every_pipeline_and_a_shared_exporter_is_one_instance() {
    let yaml = "\
receivers:
  otlp:
    protocols:
      http: { endpoint: 127.0.0.1:0 }
processors:
  attributes/a: { actions: [{ key: pipeline, value: a, action: insert }] }
  attributes/b: { actions: [{ key: pipeline, value: b, action: insert }] }
exporters:
  prometheus: { endpoint: 127.0.0.1:0, disable_scope_info: true }
service:
  pipelines:
    metrics/a: { receivers: [otlp], processors: [attributes/a], exporters: [prometheus] }
    metrics/b: { receivers: [otlp], processors: [attributes/b], exporters: [prometheus] }
  telemetry:
    metrics: { address: 127.0.0.1:0 }
";
    let c = start(yaml).await;
    let http = c.addr("receivers.otlp.protocols.http.endpoint").unwrap();
    let scrape = c.addr("exporters.prometheus.endpoint").unwrap();
    let rm = fixtures::resource("svc", vec![fixtures::gauge("g", "", &[(1.0, &[])])]);
    assert_eq!(send_http(http, vec![rm]).await, 200);
    let a = "g{job=\"svc\",pipeline=\"a\"}";
    let b = "g{job=\"svc\",pipeline=\"b\"}";
    let text = poll_until(scrape, "/metrics", |t| t.contains(a) && t.contains(b)).await;
    assert_eq!(
        (value_of(&text, a), value_of(&text, b)),
        (Some(1.0), Some(1.0))
    );
    let t = c.telemetry().clone();
    let report = c.shutdown().await;
    assert!(report.clean, "{report:?}");
    // The receiver accepted one point once; the one shared exporter got it from both pipelines.
    assert_eq!(
        t.value(
            "vla_collector_receiver_accepted_data_points_total",
            &[("receiver", "otlp")]
        ),
        Some(1)
    );
    assert_eq!(
        t.value(
            "vla_collector_exporter_sent_data_points_total",
            &[("exporter", "prometheus")]
        ),
        Some(2)
    );
    let rendered = t.render();
    assert_eq!(
        rendered
            .matches("vla_collector_exporter_queue_capacity{")
            .count(),
        1,
        "one driver for the shared exporter:\n{rendered}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_deadline_counts_undeliverable_data_as_dropped() {
    // Nothing listens on the remote-write port: every attempt fails and is retried until the
    // shutdown deadline, then the rest is counted as dropped with reason "shutdown".
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let yaml = format!(
        "\
receivers:
  otlp:
    protocols:
      http: {{ endpoint: 127.0.0.1:0 }}
exporters:
  prometheusremotewrite:
    endpoint: http://127.0.0.1:{dead_port}/api/v1/write
    retry_on_failure: {{ initial_interval: 50ms, max_interval: 100ms, max_elapsed_time: 0s }}
service:
  pipelines:
    metrics: {{ receivers: [otlp], exporters: [prometheusremotewrite] }}
  telemetry:
    metrics: {{ address: 127.0.0.1:0 }}
  shutdown_timeout: 500ms
"
    );
    let c = start(&yaml).await;
    let http = c.addr("receivers.otlp.protocols.http.endpoint").unwrap();
    let rm = fixtures::resource(
        "svc",
        vec![fixtures::gauge(
            "g",
            "",
            &[(1.0, &[]), (2.0, &[("a", "b")])],
        )],
    );
    assert_eq!(send_http(http, vec![rm]).await, 200);
    let telemetry = c.addr("service.telemetry.metrics.address").unwrap();
    poll_until(telemetry, "/metrics", |t| {
        t.contains(
            "vla_collector_exporter_failed_attempts_total{exporter=\"prometheusremotewrite\"",
        )
    })
    .await;
    let t = c.telemetry().clone();
    let started = std::time::Instant::now();
    let report = c.shutdown().await;
    assert!(!report.clean, "{report:?}");
    assert!(report.failures.is_empty(), "{report:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{report:?}"
    );
    assert_eq!(
        t.value(
            "vla_collector_exporter_dropped_data_points_total",
            &[
                ("exporter", "prometheusremotewrite"),
                ("reason", "shutdown")
            ]
        ),
        Some(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_clash_fails_start_up_naming_the_endpoint_and_component() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let telemetry_port = free.local_addr().unwrap().port();
    drop(free);
    let yaml = ONE_PIPELINE
        .replace(
            "grpc: { endpoint: 127.0.0.1:0 }",
            &format!("grpc: {{ endpoint: 127.0.0.1:{port} }}"),
        )
        .replace(
            "address: 127.0.0.1:0",
            &format!("address: 127.0.0.1:{telemetry_port}"),
        );
    let err = vla_collector::RunningCollector::start(config(&yaml))
        .await
        .expect_err("port is taken");
    assert_eq!(
        err.to_string(),
        format!("cannot listen on 127.0.0.1:{port} for receivers.otlp.protocols.grpc.endpoint")
    );
    let source = std::error::Error::source(&err)
        .expect("io error")
        .to_string();
    assert!(source.to_lowercase().contains("in use"), "{source}");
    // What was bound before the clash (the telemetry listener) has been released.
    std::net::TcpListener::bind(("127.0.0.1", telemetry_port)).expect("telemetry port released");
    drop(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_flushes_what_the_batcher_still_holds() {
    // A 1-minute batch timeout: without the drain on shutdown, these points would be lost.
    let yaml = ONE_PIPELINE.replace("batch: { timeout: 10ms }", "batch: { timeout: 1m }");
    let c = start(&yaml).await;
    let http = c.addr("receivers.otlp.protocols.http.endpoint").unwrap();
    for i in 0..20 {
        let rm = fixtures::resource(
            "svc",
            vec![fixtures::gauge(
                "g",
                "",
                &[(f64::from(i), &[("i", &i.to_string())])],
            )],
        );
        assert_eq!(send_http(http, vec![rm]).await, 200);
    }
    let t = c.telemetry().clone();
    let sent = |t: &vla_pipeline::SelfMetrics| {
        t.value(
            "vla_collector_exporter_sent_data_points_total",
            &[("exporter", "prometheus")],
        )
    };
    assert_eq!(sent(&t), Some(0), "still in the batcher");
    let report = c.shutdown().await;
    assert!(report.clean, "{report:?}");
    assert_eq!(
        t.value(
            "vla_collector_receiver_accepted_data_points_total",
            &[("receiver", "otlp")]
        ),
        Some(20)
    );
    assert_eq!(sent(&t), Some(20));
    assert_eq!(
        t.value(
            "vla_collector_exporter_sent_data_points_total",
            &[("exporter", "debug")]
        ),
        Some(20)
    );
}
