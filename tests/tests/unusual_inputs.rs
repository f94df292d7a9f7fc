//! Inputs a well-behaved SDK rarely sends, through both exporters (remote write into a real
//! Prometheus, and the scrape endpoint scraped by one): NaN and infinite values, a series'
//! points out of time order, duplicate attribute keys on one point, and each kind of point the
//! translator cannot send. Each arrives as Prometheus itself would store it, or is counted
//! dropped under its reason; nothing else is lost.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
use opentelemetry_proto::tonic::metrics::v1::{Gauge, Metric, NumberDataPoint, metric};
use vla_e2e::Prometheus;
use vla_exporters::prometheus::Config as ScrapeConfig;
use vla_exporters::prometheus_remote_write::Config;
use vla_exporters::translate::{
    DROP_NO_VALUE, DROP_UNSPECIFIED_TEMPORALITY, DROP_UNSUPPORTED_SCHEMA,
};
use vla_exporters::{PrometheusExporter, PrometheusRemoteWriteExporter};
use vla_pipeline::{ExportReport, MetricBatch, SelfMetrics, fixtures};

const WAIT: Duration = Duration::from_secs(20);

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn point(value: f64, time_unix_nano: u64, attrs: &[(&str, &str)]) -> NumberDataPoint {
    NumberDataPoint {
        attributes: fixtures::attrs(attrs),
        time_unix_nano,
        value: Some(Value::AsDouble(value)),
        ..Default::default()
    }
}

fn gauge_batch(name: &str, points: Vec<NumberDataPoint>) -> MetricBatch {
    let metric = Metric {
        name: name.to_owned(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Default::default()
    };
    MetricBatch::new("otlp".into(), vec![fixtures::resource("api", vec![metric])])
}

/// One delivery of `batch` by remote write into `prom`.
async fn remote_write(prom: &Prometheus, batch: &MetricBatch) -> ExportReport {
    let mut c = Config::with_endpoint(prom.write_url());
    c.shards = 1;
    c.target_info.enabled = false;
    // Native histograms on, so the scale below -4 is dropped (classic buckets take any scale).
    c.send_native_histograms = true;
    let exporter =
        PrometheusRemoteWriteExporter::new("prometheusremotewrite".into(), &c, &SelfMetrics::new())
            .unwrap();
    vla_pipeline::fixtures::export_once(&exporter, batch)
        .await
        .unwrap_or_else(|e| panic!("remote write refused the batch: {e}"))
}

/// NaN, +Inf, -Inf and a finite value, one series each (label `v`).
fn special_values_batch() -> MetricBatch {
    let t = now_nanos();
    gauge_batch(
        "vla.test.special",
        vec![
            point(f64::NAN, t, &[("v", "nan")]),
            point(f64::INFINITY, t, &[("v", "pinf")]),
            point(f64::NEG_INFINITY, t, &[("v", "ninf")]),
            point(1.5, t, &[("v", "finite")]),
        ],
    )
}

/// Each series of [`special_values_batch`] holds its own value in Prometheus.
fn assert_special_values(got: &[vla_e2e::Sample]) {
    let value = |v: &str| {
        got.iter()
            .find(|s| s.labels["v"] == v)
            .unwrap_or_else(|| panic!("no v={v}: {got:?}"))
            .value
    };
    assert!(value("nan").is_nan());
    assert_eq!(value("pinf"), f64::INFINITY);
    assert_eq!(value("ninf"), f64::NEG_INFINITY);
    assert_eq!(value("finite"), 1.5);
}

#[tokio::test(flavor = "multi_thread")]
async fn nan_and_infinities_arrive_as_themselves_not_as_stale_markers() {
    let prom = Prometheus::start(&[]).await.expect("prometheus");
    let batch = special_values_batch();
    let report = remote_write(&prom, &batch).await;
    assert_eq!(report.sent, 4, "{report:?}");
    // A stale marker would hide its series from an instant query: all four are there.
    let got = prom.wait_for("vla_test_special", 4, WAIT).await.unwrap();
    assert_special_values(&got);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_series_points_out_of_time_order_in_one_batch_all_arrive() {
    let prom = Prometheus::start(&[]).await.expect("prometheus");
    let t = now_nanos();
    let s = 1_000_000_000;
    // The newest first, then two older ones; and a second series in order beside it.
    let batch = gauge_batch(
        "vla.test.order",
        vec![
            point(3.0, t - 10 * s, &[("series", "a")]),
            point(1.0, t - 30 * s, &[("series", "a")]),
            point(7.0, t - 30 * s, &[("series", "b")]),
            point(2.0, t - 20 * s, &[("series", "a")]),
            point(8.0, t - 10 * s, &[("series", "b")]),
        ],
    );
    let report = remote_write(&prom, &batch).await;
    assert_eq!(
        (report.sent, report.dropped.clone()),
        (5, vec![]),
        "{report:?}"
    );
    let counts = prom
        .wait_for("count_over_time(vla_test_order[5m])", 2, WAIT)
        .await
        .unwrap();
    let count = |series: &str| {
        counts
            .iter()
            .find(|s| s.labels["series"] == series)
            .map(|s| s.value)
    };
    assert_eq!(count("a"), Some(3.0), "{counts:?}");
    assert_eq!(count("b"), Some(2.0), "{counts:?}");
    // The newest sample is the series' value.
    let latest = prom.query("vla_test_order{series=\"a\"}").await.unwrap();
    assert_eq!(latest[0].value, 3.0, "{latest:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_attribute_keys_make_one_label_and_the_series_arrives() {
    let prom = Prometheus::start(&[]).await.expect("prometheus");
    let t = now_nanos();
    let batch = gauge_batch(
        "vla.test.dup",
        vec![point(
            1.0,
            t,
            &[("model", "m1"), ("gpu", "0"), ("model", "m2")],
        )],
    );
    let report = remote_write(&prom, &batch).await;
    assert_eq!(report.sent, 1, "{report:?}");
    let got = prom.wait_for("vla_test_dup", 1, WAIT).await.unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    let labels = &got[0].labels;
    assert_eq!(labels["gpu"], "0");
    // Prometheus would refuse a series with the label twice: it arrived with one `model`,
    // the translator's documented join of colliding attributes.
    assert_eq!(labels["model"], "m1;m2", "{labels:?}");
}

/// A scrape exporter on a free port, without `target_info` and scope labels.
fn scrape_exporter() -> PrometheusExporter {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = ScrapeConfig::default();
    c.target_info.enabled = false;
    c.disable_scope_info = true;
    PrometheusExporter::new("prometheus".into(), &c, listener, &SelfMetrics::new()).unwrap()
}

/// A scrape exporter, and a Prometheus scraping it every second.
async fn scrape_stack() -> (PrometheusExporter, Prometheus) {
    let exporter = scrape_exporter();
    let addr = exporter.local_addr();
    let prom = Prometheus::start(&[addr.to_string()])
        .await
        .expect("prometheus");
    (exporter, prom)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scrape_endpoint_serves_nan_and_infinities_that_prometheus_parses() {
    let (exporter, prom) = scrape_stack().await;
    let batch = special_values_batch();
    let report = fixtures::export_once(&exporter, &batch).await.unwrap();
    assert_eq!(report.sent, 4, "{report:?}");
    let text = exporter.render();
    for line in [
        "vla_test_special{job=\"api\",v=\"nan\"} NaN",
        "vla_test_special{job=\"api\",v=\"pinf\"} +Inf",
        "vla_test_special{job=\"api\",v=\"ninf\"} -Inf",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
    // Prometheus' own parser takes the page: every value arrives as itself.
    let got = prom.wait_for("vla_test_special", 4, WAIT).await.unwrap();
    assert_special_values(&got);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scrape_endpoint_keeps_the_newest_point_whatever_the_arrival_order() {
    let exporter = scrape_exporter();
    let t = now_nanos();
    let s = 1_000_000_000;
    let line = |v: &str| format!("vla_test_order{{job=\"api\",series=\"a\"}} {v}");
    // Within one batch: the newest point is first.
    let batch = gauge_batch(
        "vla.test.order",
        vec![
            point(3.0, t - 10 * s, &[("series", "a")]),
            point(1.0, t - 30 * s, &[("series", "a")]),
            point(2.0, t - 20 * s, &[("series", "a")]),
        ],
    );
    fixtures::export_once(&exporter, &batch).await.unwrap();
    let text = exporter.render();
    assert!(text.lines().any(|l| l == line("3")), "{text}");
    // A later batch carrying an older point does not roll the value back; a newer one moves it.
    let older = gauge_batch(
        "vla.test.order",
        vec![point(0.5, t - 60 * s, &[("series", "a")])],
    );
    fixtures::export_once(&exporter, &older).await.unwrap();
    let text = exporter.render();
    assert!(text.lines().any(|l| l == line("3")), "{text}");
    let newer = gauge_batch("vla.test.order", vec![point(4.0, t, &[("series", "a")])]);
    fixtures::export_once(&exporter, &newer).await.unwrap();
    let text = exporter.render();
    assert!(text.lines().any(|l| l == line("4")), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scrape_endpoint_joins_duplicate_attribute_keys_into_one_label() {
    let (exporter, prom) = scrape_stack().await;
    let batch = gauge_batch(
        "vla.test.dup",
        vec![point(
            1.0,
            now_nanos(),
            &[("model", "m1"), ("gpu", "0"), ("model", "m2")],
        )],
    );
    let report = fixtures::export_once(&exporter, &batch).await.unwrap();
    assert_eq!(report.sent, 1, "{report:?}");
    let got = prom.wait_for("vla_test_dup", 1, WAIT).await.unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].labels["model"], "m1;m2", "{got:?}");
    assert_eq!(got[0].labels["gpu"], "0", "{got:?}");
}

/// One metric of each kind the translator cannot send, and one good gauge point.
fn undeliverable_batch(t: u64) -> MetricBatch {
    use opentelemetry_proto::tonic::metrics::v1::{
        AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Sum,
    };
    let exponential = Metric {
        name: "vla.test.exp".into(),
        data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![ExponentialHistogramDataPoint {
                time_unix_nano: t,
                count: 1,
                sum: Some(1.0),
                // Below native histograms' coarsest schema (-4).
                scale: -5,
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        })),
        ..Default::default()
    };
    let unspecified = Metric {
        name: "vla.test.unspecified".into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: vec![point(1.0, t, &[]), point(2.0, t, &[("k", "v")])],
            aggregation_temporality: AggregationTemporality::Unspecified as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    };
    let mut no_value = point(0.0, t, &[]);
    no_value.value = None;
    let missing = Metric {
        name: "vla.test.missing".into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: vec![no_value],
        })),
        ..Default::default()
    };
    let good = Metric {
        name: "vla.test.good".into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: vec![point(1.0, t, &[])],
        })),
        ..Default::default()
    };
    MetricBatch::new(
        "otlp".into(),
        vec![fixtures::resource(
            "api",
            vec![exponential, unspecified, missing, good],
        )],
    )
}

/// The drops a report gives, sorted.
fn drops(report: &ExportReport) -> Vec<(&'static str, u64)> {
    let mut d = report.dropped.clone();
    d.sort();
    d
}

const EXPECTED_DROPS: [(&str, u64); 3] = [
    (DROP_NO_VALUE, 1),
    (DROP_UNSUPPORTED_SCHEMA, 1),
    (DROP_UNSPECIFIED_TEMPORALITY, 2),
];

#[tokio::test(flavor = "multi_thread")]
async fn remote_write_counts_each_translator_drop_by_reason_and_sends_the_rest() {
    let prom = Prometheus::start(&[]).await.expect("prometheus");
    let report = remote_write(&prom, &undeliverable_batch(now_nanos())).await;
    let mut want = EXPECTED_DROPS.to_vec();
    want.sort();
    assert_eq!((report.sent, drops(&report)), (1, want), "{report:?}");
    prom.wait_for("vla_test_good", 1, WAIT).await.unwrap();
    let rest = prom
        .query("{__name__=~\"vla_test_(exp|unspecified|missing).*\"}")
        .await
        .unwrap();
    assert!(rest.is_empty(), "dropped points arrived: {rest:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scrape_endpoint_counts_each_translator_drop_by_reason_and_serves_the_rest() {
    let exporter = scrape_exporter();
    let report = fixtures::export_once(&exporter, &undeliverable_batch(now_nanos()))
        .await
        .unwrap();
    // Classic buckets need no native schema: the scale -5 histogram is served.
    let mut want: Vec<_> = EXPECTED_DROPS
        .into_iter()
        .filter(|(r, _)| *r != DROP_UNSUPPORTED_SCHEMA)
        .collect();
    want.sort();
    assert_eq!((report.sent, drops(&report)), (2, want), "{report:?}");
    let text = exporter.render();
    assert!(text.contains("\nvla_test_good{"), "{text}");
    assert!(text.contains("\nvla_test_exp_bucket{"), "{text}");
    assert!(!text.contains("vla_test_unspecified"), "{text}");
    assert!(!text.contains("vla_test_missing"), "{text}");
}
