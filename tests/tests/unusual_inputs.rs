//! Inputs a well-behaved SDK rarely sends, through remote write into a real Prometheus: NaN
//! and infinite values, a series' points out of time order in one batch, duplicate attribute
//! keys on one point. Each arrives as Prometheus itself would store it, nothing else is lost.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
use opentelemetry_proto::tonic::metrics::v1::{Gauge, Metric, NumberDataPoint, metric};
use vla_e2e::Prometheus;
use vla_exporters::PrometheusRemoteWriteExporter;
use vla_exporters::prometheus_remote_write::Config;
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
    let exporter =
        PrometheusRemoteWriteExporter::new("prometheusremotewrite".into(), &c, &SelfMetrics::new())
            .unwrap();
    vla_pipeline::fixtures::export_once(&exporter, batch)
        .await
        .unwrap_or_else(|e| panic!("remote write refused the batch: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn nan_and_infinities_arrive_as_themselves_not_as_stale_markers() {
    let prom = Prometheus::start(&[]).await.expect("prometheus");
    let t = now_nanos();
    let batch = gauge_batch(
        "vla.test.special",
        vec![
            point(f64::NAN, t, &[("v", "nan")]),
            point(f64::INFINITY, t, &[("v", "pinf")]),
            point(f64::NEG_INFINITY, t, &[("v", "ninf")]),
            point(1.5, t, &[("v", "finite")]),
        ],
    );
    let report = remote_write(&prom, &batch).await;
    assert_eq!(report.sent, 4, "{report:?}");
    // A stale marker would hide its series from an instant query: all four are there.
    let got = prom.wait_for("vla_test_special", 4, WAIT).await.unwrap();
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
