//! The load generator itself: against a real collector (remote write into the generator's own
//! counting sink, and the scrape endpoint), its report adds up and `--series` makes exactly
//! the number of distinct series it says. Benchmarks rely on these numbers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::process::Command;

use vla_e2e::{
    Collector, Ports, free_port, loadgen_binary, parse_exposition, pipeline_config,
    pipeline_config_with,
};

/// Runs the load generator for 2 s and parses its `key value` report.
fn run_loadgen(
    ports: &Ports,
    sink: u16,
    collector_pid: u32,
    extra: &[&str],
) -> BTreeMap<String, f64> {
    let out = Command::new(loadgen_binary().expect("vla-loadgen"))
        .args(["--grpc", &format!("127.0.0.1:{}", ports.grpc)])
        .args(["--sink", &format!("127.0.0.1:{sink}")])
        .args([
            "--duration",
            "2s",
            "--concurrency",
            "2",
            "--points-per-request",
            "1000",
        ])
        .args(["--collector-pid", &collector_pid.to_string()])
        .args(extra)
        .output()
        .expect("run vla-loadgen");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(char::is_whitespace)?;
            Some((k.to_owned(), v.trim().parse().ok()?))
        })
        .collect()
}

/// The collector's scrape endpoint, parsed as `series → value`.
async fn scrape(ports: &Ports) -> BTreeMap<String, f64> {
    let url = format!("http://127.0.0.1:{}/metrics", ports.scrape);
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    parse_exposition(&text)
}

/// A collector with a 50 ms batch timeout, writing to a sink port the load generator will
/// open.
async fn start_collector() -> (Ports, u16, Collector) {
    start_collector_with(None).await
}

/// [`start_collector`] with `processor` (its type and one line of YAML settings) before
/// `batch`.
async fn start_collector_with(processor: Option<(&str, &str)>) -> (Ports, u16, Collector) {
    let ports = Ports::new();
    let sink = free_port();
    let url = format!("http://127.0.0.1:{sink}/api/v1/write");
    let config = match processor {
        Some((name, section)) => pipeline_config_with(&ports, &url, "50ms", name, section),
        None => pipeline_config(&ports, &url, "50ms"),
    };
    let collector = Collector::start(&config, ports.telemetry)
        .await
        .expect("collector");
    (ports, sink, collector)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_adds_up_and_series_are_exactly_as_many_as_asked() {
    for (series, expected) in [(None, 2000.0), (Some("10000"), 10000.0)] {
        let (ports, sink, collector) = start_collector().await;
        let extra: Vec<&str> = series.map_or(Vec::new(), |s| vec!["--series", s]);
        let report = run_loadgen(&ports, sink, collector.process.pid(), &extra);
        assert_eq!(report["series"], expected, "{report:?}");
        let accepted = report["points_accepted"];
        assert!(accepted >= 2000.0, "{report:?}");
        assert_eq!(
            report["points_offered"], accepted,
            "no overload here: {report:?}"
        );
        // Every point the collector took reached the sink: 40 % gauges, 40 % sums, 20 %
        // 12-bucket histograms (14 samples each) = 3.6 samples per point.
        assert_eq!(report["rw_samples_received"], accepted * 3.6, "{report:?}");
        assert!(report["collector_cpu_s"] > 0.0 && report["collector_peak_rss_mb"] > 0.0);
        // The scrape endpoint holds one Prometheus series per sample kind of each OTLP series
        // it saw (3.6 per series), plus one target_info per client. With `--series`, the run
        // must have gone round every window at least once for this to hold.
        let load_series = scrape(&ports)
            .await
            .keys()
            .filter(|k| k.starts_with("vla_load_metric"))
            .count() as f64;
        assert_eq!(
            load_series,
            expected * 3.6,
            "distinct series at the scrape endpoint"
        );
    }
}

/// Open loop (`--rate`): the load generator offers exactly its schedule's points whatever
/// the collector does, and reports request and delivery latencies that are in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_offers_its_schedule_and_reports_latencies() {
    let (ports, sink, collector) = start_collector().await;
    // 2 clients × 1000 points every 250 ms (exact in binary, so the schedule has no rounding
    // at its end) for 2 s: 8 requests each.
    let report = run_loadgen(&ports, sink, collector.process.pid(), &["--rate", "8000"]);
    assert_eq!(report["rate_points_per_s"], 8000.0, "{report:?}");
    assert_eq!(report["points_offered"], 16000.0, "{report:?}");
    assert_eq!(report["points_accepted"], 16000.0, "{report:?}");
    assert_eq!(report["rw_samples_received"], 16000.0 * 3.6, "{report:?}");
    let (p50, p99, max) = (
        report["latency_p50_ms"],
        report["latency_p99_ms"],
        report["latency_max_ms"],
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{report:?}");
    // Delivery waits for the batch timeout (50 ms here), so it is never below it.
    let (d50, d99) = (report["delivery_p50_ms"], report["delivery_p99_ms"]);
    assert!(d50 >= 45.0 && d50 <= d99, "{report:?}");
}

/// `--temporality delta`: the sums and histograms arrive as deltas that `deltatocumulative`
/// accumulates, every one of them in order, into cumulative series whose totals are the sum
/// of what was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_mode_sends_deltas_in_order_that_accumulate() {
    let (ports, sink, collector) =
        start_collector_with(Some(("deltatocumulative", "{ max_stale: 5m }"))).await;
    let report = run_loadgen(
        &ports,
        sink,
        collector.process.pid(),
        &["--temporality", "delta"],
    );
    assert_eq!(report["delta"], 1.0, "{report:?}");
    let accepted = report["points_accepted"];
    assert!(
        accepted >= 4000.0,
        "more than one request per client: {report:?}"
    );
    assert_eq!(report["rw_samples_received"], accepted * 3.6, "{report:?}");
    let telemetry = collector.self_metrics().await.expect("self-metrics");
    let counted = |result: &str| {
        telemetry
            .iter()
            .filter(|(k, _)| {
                k.starts_with("vla_collector_processor_deltatocumulative_data_points_total{")
                    && k.contains(&format!("result=\"{result}\""))
            })
            .map(|(_, v)| *v)
            .sum::<f64>()
    };
    // 40 % sums and 20 % histograms are deltas, all accumulated, none out of order.
    assert_eq!(counted("accumulated"), accepted * 0.6, "{telemetry:?}");
    assert_eq!(counted("out_of_order"), 0.0, "{telemetry:?}");
    // Each histogram point counts 12 observations: the cumulative counts at the scrape
    // endpoint add up to 12 per histogram point sent (20 % of them).
    let counts: f64 = scrape(&ports)
        .await
        .iter()
        .filter(|(k, _)| k.starts_with("vla_load_metric") && k.contains("_count{"))
        .map(|(_, v)| *v)
        .sum();
    assert_eq!(
        counts,
        accepted * 0.2 * 12.0,
        "histogram counts at the scrape endpoint"
    );
}
