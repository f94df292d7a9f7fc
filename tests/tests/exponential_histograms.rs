//! End to end: OpenTelemetry exponential histograms as Prometheus native histograms by remote
//! write (into a real Prometheus started with `--enable-feature=native-histograms`), and as
//! classic buckets on the scrape endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Metric, metric,
};
use vla_e2e::{Prometheus, eventually, free_port, parse_exposition};
use vla_exporters::prometheus::Config as ScrapeConfig;
use vla_exporters::prometheus_remote_write::Config;
use vla_exporters::{PrometheusExporter, PrometheusRemoteWriteExporter};
use vla_pipeline::{ExportReport, MetricBatch, SelfMetrics, fixtures};

const WAIT: Duration = Duration::from_secs(30);

/// Scale 1 (base √2): positive buckets 2..=5 hold (2, 2.83], (2.83, 4], (4, 5.66], (5.66, 8];
/// one negative bucket 0 holds [-1.41, -1); two zeros.
fn batch() -> MetricBatch {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    MetricBatch::new(
        "otlp".into(),
        vec![fixtures::resource(
            "api",
            vec![Metric {
                name: "vla.test.latency".to_owned(),
                unit: "s".to_owned(),
                data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
                    data_points: vec![ExponentialHistogramDataPoint {
                        attributes: fixtures::attrs(&[("model", "pi0")]),
                        start_time_unix_nano: t - 60_000_000_000,
                        time_unix_nano: t,
                        count: 2 + 3 + 1 + 4 + 2 + 1,
                        sum: Some(50.0),
                        scale: 1,
                        zero_count: 2,
                        positive: Some(Buckets {
                            offset: 2,
                            bucket_counts: vec![3, 1, 4, 2],
                        }),
                        negative: Some(Buckets {
                            offset: 0,
                            bucket_counts: vec![1],
                        }),
                        ..Default::default()
                    }],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                })),
                ..Default::default()
            }],
        )],
    )
}

async fn remote_write(prom: &Prometheus, config: Config) -> ExportReport {
    let exporter = PrometheusRemoteWriteExporter::new(
        "prometheusremotewrite".into(),
        &config,
        &SelfMetrics::new(),
    )
    .unwrap();
    let _ = prom;
    fixtures::export_once(&exporter, &batch())
        .await
        .unwrap_or_else(|e| panic!("remote write refused the batch: {e}"))
}

fn config(prom: &Prometheus) -> Config {
    let mut c = Config::with_endpoint(prom.write_url());
    c.target_info.enabled = false;
    c.send_native_histograms = true;
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_write_sends_native_histograms_prometheus_can_query() {
    let prom = Prometheus::start_with_args(
        free_port(),
        "global:\n  scrape_interval: 1s\n",
        &[],
        &["--enable-feature=native-histograms"],
    )
    .await
    .expect("prometheus");
    let report = remote_write(&prom, config(&prom)).await;
    assert_eq!(
        (report.sent, report.dropped.clone()),
        (1, vec![]),
        "{report:?}"
    );
    let selector = r#"vla_test_latency_seconds{model="pi0"}"#;
    let query = |q: String| {
        let prom = &prom;
        async move {
            eventually(WAIT, move || {
                let q = q.clone();
                async move {
                    match prom.query(&q).await {
                        Ok(v) if v.len() == 1 => Ok(v[0].value),
                        other => Err(format!("{q}: {other:?}")),
                    }
                }
            })
            .await
            .expect("one result")
        }
    };
    assert_eq!(query(format!("histogram_count({selector})")).await, 13.0);
    assert_eq!(query(format!("histogram_sum({selector})")).await, 50.0);
    // Observations at or below 4: two zeros, one negative and the 3 + 1 of (2, 4].
    let below_4 = query(format!("histogram_fraction(-10, 4, {selector})")).await;
    assert!((below_4 - 7.0 / 13.0).abs() < 1e-9, "{below_4}");
    // The median is the 7th observation: the last of the bucket (2.83, 4].
    let median = query(format!("histogram_quantile(0.5, {selector})")).await;
    assert!((2.83..=4.0).contains(&median), "{median}");
    // No classic series beside it.
    let classic = prom
        .query(r#"{__name__=~"vla_test_latency_seconds_(bucket|count|sum)"}"#)
        .await
        .unwrap();
    assert!(classic.is_empty(), "{classic:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn native_histograms_to_a_prometheus_without_the_feature_are_refused_not_retried() {
    let prom = Prometheus::start(&[]).await.expect("prometheus");
    let exporter = PrometheusRemoteWriteExporter::new(
        "prometheusremotewrite".into(),
        &config(&prom),
        &SelfMetrics::new(),
    )
    .unwrap();
    match fixtures::export_once(&exporter, &batch()).await {
        Err(vla_pipeline::ExportError::Permanent { reason, message }) => {
            assert_eq!(reason, "native_histograms_disabled");
            assert!(
                message.contains("send_native_histograms: false"),
                "{message}"
            );
        }
        other => panic!("expected a permanent refusal: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_write_sends_classic_buckets_by_default() {
    let prom = Prometheus::start(&[]).await.expect("prometheus");
    let mut c = Config::with_endpoint(prom.write_url());
    c.target_info.enabled = false;
    c.exponential_histogram_bounds = Some(vec![0.0, 2.0, 4.0, 8.0]);
    let report = remote_write(&prom, c).await;
    assert_eq!(report.sent, 1, "{report:?}");
    let buckets = prom
        .wait_for(r#"vla_test_latency_seconds_bucket{model="pi0"}"#, 5, WAIT)
        .await
        .unwrap();
    let mut by_le: Vec<(String, f64)> = buckets
        .iter()
        .map(|s| (s.labels["le"].clone(), s.value))
        .collect();
    by_le.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    assert_eq!(
        by_le,
        [
            ("0", 3.0),
            ("2", 3.0),
            ("4", 7.0),
            ("+Inf", 13.0),
            ("8", 13.0)
        ]
        .map(|(l, v)| (l.to_owned(), v))
        .to_vec()
    );
}

#[test]
fn the_scrape_endpoint_serves_classic_buckets_at_the_configured_bounds() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = ScrapeConfig::default();
    c.target_info.enabled = false;
    c.disable_scope_info = true;
    c.exponential_histogram_bounds = Some(vec![1.0, 4.0, 6.0]);
    let exporter = runtime.block_on(async {
        PrometheusExporter::new("prometheus".into(), &c, listener, &SelfMetrics::new()).unwrap()
    });
    let report = runtime
        .block_on(fixtures::export_once(&exporter, &batch()))
        .unwrap();
    assert_eq!(report.sent, 1, "{report:?}");
    let text = exporter.render();
    let samples = parse_exposition(&text);
    let get = |le: &str| {
        samples
            .get(&format!(
                r#"vla_test_latency_seconds_bucket{{job="api",le="{le}",model="pi0"}}"#
            ))
            .copied()
    };
    // (5.66, 8] straddles 6: it counts above it (the docs' rounding).
    assert_eq!(
        (get("1"), get("4"), get("6"), get("+Inf")),
        (Some(3.0), Some(7.0), Some(11.0), Some(13.0)),
        "{text}"
    );
    assert!(
        text.contains("# TYPE vla_test_latency_seconds histogram"),
        "{text}"
    );
}
