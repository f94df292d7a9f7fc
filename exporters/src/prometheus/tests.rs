use std::io::{Read, Write};
use std::time::Duration;

use vla_pipeline::fixtures;
use vla_pipeline::{Exporter, MetricBatch, SelfMetrics};

use super::*;

/// `GET /metrics` over a real socket, with a plain HTTP/1.1 request.
fn scrape(addr: SocketAddr) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

fn batch(temp: f64) -> MetricBatch {
    MetricBatch::new(
        "otlp".into(),
        vec![fixtures::resource_with(
            &[
                ("service.name", "vla-api"),
                ("service.instance.id", "pod-1"),
                ("host.name", "n1"),
            ],
            vec![
                fixtures::gauge("vla.gpu.temperature", "Cel", &[(temp, &[("gpu.id", "0")])]),
                fixtures::cumulative_sum(
                    "vla.inference.requests",
                    "",
                    true,
                    &[(3.0, &[("model", "a\"b\\c\nd")])],
                ),
                fixtures::histogram(
                    "vla.inference.duration",
                    "s",
                    &[0.5, 1.0],
                    &[1, 2, 3],
                    4.5,
                    &[("model", "m")],
                ),
                fixtures::summary("rpc.time", "ms", &[(0.5, 2.0), (0.9, 5.0)], 4, 9.0, &[]),
                fixtures::delta_sum("vla.delta", "", true, &[(1.0, &[])]),
            ],
        )],
    )
}

fn exporter(config: &Config) -> PrometheusExporter {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    PrometheusExporter::new("prometheus".into(), config, listener, &SelfMetrics::new()).unwrap()
}

fn no_scope() -> Config {
    Config {
        disable_scope_info: true,
        ..Config::default()
    }
}

const EXPECTED: &str = "\
# HELP rpc_time_milliseconds rpc.time for tests
# TYPE rpc_time_milliseconds summary
rpc_time_milliseconds{instance=\"pod-1\",job=\"vla-api\",quantile=\"0.5\"} 2
rpc_time_milliseconds{instance=\"pod-1\",job=\"vla-api\",quantile=\"0.9\"} 5
rpc_time_milliseconds_sum{instance=\"pod-1\",job=\"vla-api\"} 9
rpc_time_milliseconds_count{instance=\"pod-1\",job=\"vla-api\"} 4
# HELP target_info Target metadata
# TYPE target_info gauge
target_info{host_name=\"n1\",instance=\"pod-1\",job=\"vla-api\"} 1
# HELP vla_gpu_temperature_celsius vla.gpu.temperature for tests
# TYPE vla_gpu_temperature_celsius gauge
vla_gpu_temperature_celsius{gpu_id=\"0\",instance=\"pod-1\",job=\"vla-api\"} 71.5
# HELP vla_inference_duration_seconds vla.inference.duration for tests
# TYPE vla_inference_duration_seconds histogram
vla_inference_duration_seconds_bucket{instance=\"pod-1\",job=\"vla-api\",le=\"0.5\",model=\"m\"} 1
vla_inference_duration_seconds_bucket{instance=\"pod-1\",job=\"vla-api\",le=\"1\",model=\"m\"} 3
vla_inference_duration_seconds_bucket{instance=\"pod-1\",job=\"vla-api\",le=\"+Inf\",model=\"m\"} 6
vla_inference_duration_seconds_sum{instance=\"pod-1\",job=\"vla-api\",model=\"m\"} 4.5
vla_inference_duration_seconds_count{instance=\"pod-1\",job=\"vla-api\",model=\"m\"} 6
# HELP vla_inference_requests_total vla.inference.requests for tests
# TYPE vla_inference_requests_total counter
vla_inference_requests_total{instance=\"pod-1\",job=\"vla-api\",model=\"a\\\"b\\\\c\\nd\"} 3
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_latest_values_over_a_real_socket() {
    let exp = exporter(&no_scope());
    let report = vla_pipeline::fixtures::export_once(&exp, &batch(70.0))
        .await
        .unwrap();
    assert_eq!(report.sent, 4);
    assert_eq!(report.dropped, vec![("delta_temporality", 1)]);
    vla_pipeline::fixtures::export_once(&exp, &batch(71.5))
        .await
        .unwrap();
    let addr = exp.local_addr();
    let (head, body) = tokio::task::spawn_blocking(move || scrape(addr))
        .await
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    assert_eq!(body, EXPECTED);
    assert_eq!(exp.render(), EXPECTED);
    exp.shutdown().await;
    let refused = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1));
    assert!(refused.is_err(), "server stopped after shutdown");
}

#[tokio::test(start_paused = true)]
async fn series_expire_when_not_updated() {
    let config = Config {
        metric_expiration: Duration::from_millis(200),
        target_info: TargetInfo { enabled: false },
        ..no_scope()
    };
    let telemetry = SelfMetrics::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let exp = PrometheusExporter::new("prometheus".into(), &config, listener, &telemetry).unwrap();
    let series = || {
        telemetry.value(
            "vla_collector_prometheus_series",
            &[("exporter", "prometheus")],
        )
    };
    vla_pipeline::fixtures::export_once(
        &exp,
        &MetricBatch::new(
            "otlp".into(),
            vec![fixtures::resource(
                "api",
                vec![fixtures::gauge("old", "", &[(1.0, &[])])],
            )],
        ),
    )
    .await
    .unwrap();
    assert!(exp.render().contains("old{job=\"api\"} 1\n"));
    tokio::time::sleep(Duration::from_millis(120)).await;
    vla_pipeline::fixtures::export_once(
        &exp,
        &MetricBatch::new(
            "otlp".into(),
            vec![fixtures::resource(
                "api",
                vec![fixtures::gauge("new", "", &[(2.0, &[])])],
            )],
        ),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(
        exp.render(),
        "# HELP new new for tests\n# TYPE new gauge\nnew{job=\"api\"} 2\n"
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(series(), Some(1));
    assert_eq!(exp.render(), "");
    assert_eq!(
        series(),
        Some(0),
        "the scrape's sweep updates the series count"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_recorded_value_removes_the_series_and_const_labels_do_not_override() {
    let config = Config {
        const_labels: [
            ("region".to_owned(), "eu".to_owned()),
            ("job".to_owned(), "x".to_owned()),
        ]
        .into(),
        namespace: Some("edge".into()),
        target_info: TargetInfo { enabled: false },
        ..no_scope()
    };
    let exp = exporter(&config);
    let mut g = fixtures::gauge("g", "", &[(1.0, &[])]);
    vla_pipeline::fixtures::export_once(
        &exp,
        &MetricBatch::new(
            "otlp".into(),
            vec![fixtures::resource("api", vec![g.clone()])],
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        exp.render(),
        "# HELP edge_g g for tests\n# TYPE edge_g gauge\nedge_g{job=\"api\",region=\"eu\"} 1\n"
    );
    if let Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Gauge(g)) = &mut g.data {
        g.data_points[0].flags = 1;
    }
    vla_pipeline::fixtures::export_once(
        &exp,
        &MetricBatch::new("otlp".into(), vec![fixtures::resource("api", vec![g])]),
    )
    .await
    .unwrap();
    assert_eq!(exp.render(), "");
}

const COLLISION_EXPECTED: &str = "\
# HELP x x for tests
# TYPE x histogram
x_bucket{job=\"a\",le=\"1\"} 1
x_bucket{job=\"a\",le=\"+Inf\"} 3
x_sum{job=\"a\"} 3
x_count{job=\"a\"} 3
# HELP y_total y for tests
# TYPE y_total counter
y_total{job=\"a\"} 1
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colliding_metrics_render_one_type_per_family() {
    let exp = exporter(&no_scope());
    let report = vla_pipeline::fixtures::export_once(
        &exp,
        &MetricBatch::new(
            "otlp".into(),
            vec![fixtures::resource(
                "a",
                vec![
                    fixtures::histogram("x", "", &[1.0], &[1, 2], 3.0, &[]),
                    fixtures::gauge("x", "", &[(1.0, &[])]),
                    fixtures::gauge("x_count", "", &[(9.0, &[])]),
                    fixtures::cumulative_sum("y", "", true, &[(1.0, &[])]),
                    fixtures::cumulative_sum("y.total", "", true, &[(2.0, &[])]),
                ],
            )],
        ),
    )
    .await
    .unwrap();
    assert_eq!(report.sent, 2);
    assert_eq!(report.dropped, vec![("name_collision", 3)]);
    assert_eq!(exp.render(), COLLISION_EXPECTED);
    // A later batch with only the gauge changes nothing: the histogram keeps the name.
    let report = vla_pipeline::fixtures::export_once(
        &exp,
        &MetricBatch::new(
            "otlp".into(),
            vec![fixtures::resource(
                "a",
                vec![fixtures::gauge("x", "", &[(1.0, &[])])],
            )],
        ),
    )
    .await
    .unwrap();
    assert_eq!(report.sent, 0);
    assert_eq!(report.dropped, vec![("name_collision", 1)]);
    let addr = exp.local_addr();
    let (_, body) = tokio::task::spawn_blocking(move || scrape(addr))
        .await
        .unwrap();
    assert_eq!(body, COLLISION_EXPECTED);
    exp.shutdown().await;
}

#[test]
fn config_defaults_and_validation() {
    let c = Config::default();
    assert_eq!(c.endpoint, "127.0.0.1:9464");
    assert_eq!(c.metric_expiration, Duration::from_secs(300));
    assert!(c.validate("exporters.prometheus").is_empty());
    let bad = Config {
        endpoint: "localhost".into(),
        metric_expiration: Duration::ZERO,
        namespace: Some("a-b".into()),
        const_labels: [
            ("9x".to_owned(), "v".to_owned()),
            ("ok".to_owned(), String::new()),
        ]
        .into(),
        ..Config::default()
    };
    let problems = bad.validate("exporters.prometheus");
    let got: Vec<(&str, &str)> = problems
        .iter()
        .map(|p| (p.path.as_str(), p.message.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "exporters.prometheus.endpoint",
                "invalid endpoint \"localhost\": expected an IP address and port, e.g. 127.0.0.1:4317, \
                 0.0.0.0:4317 or [::1]:4317 (host names other than localhost are not resolved)"
            ),
            (
                "exporters.prometheus.metric_expiration",
                "must be greater than 0"
            ),
            (
                "exporters.prometheus.namespace",
                "\"a-b\" is not a valid metric name prefix: expected [a-zA-Z_:][a-zA-Z0-9_:]*"
            ),
            (
                "exporters.prometheus.const_labels.9x",
                "\"9x\" is not a valid label name: expected [a-zA-Z_][a-zA-Z0-9_]* not starting with \"__\""
            ),
            (
                "exporters.prometheus.const_labels.ok",
                "the label value must not be empty"
            ),
        ]
    );
}

#[test]
fn config_parses_from_an_empty_mapping_and_rejects_unknown_fields() {
    let c: Config = serde_json::from_value(serde_json::json!({})).unwrap();
    assert_eq!(c, Config::default());
    let c: Config = serde_json::from_value(serde_json::json!({
        "endpoint": "0.0.0.0:9999", "metric_expiration": "90s", "const_labels": { "a": "b" }
    }))
    .unwrap();
    assert_eq!(c.metric_expiration, Duration::from_secs(90));
    assert_eq!(c.socket_addr(), Some("0.0.0.0:9999".parse().unwrap()));
    let err =
        serde_json::from_value::<Config>(serde_json::json!({ "expiration": "1m" })).unwrap_err();
    assert!(
        err.to_string().contains("unknown field `expiration`"),
        "{err}"
    );
}

#[test]
fn constructor_needs_a_runtime() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = PrometheusExporter::new(
        "prometheus".into(),
        &Config::default(),
        listener,
        &SelfMetrics::new(),
    )
    .unwrap_err();
    assert!(matches!(err, ExporterBuildError::NoRuntime), "{err:?}");
}
