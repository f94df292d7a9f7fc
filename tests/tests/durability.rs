//! End to end: remote write with a write-ahead log, against real Prometheus and
//! VictoriaMetrics servers, with exact counts.
//!
//! - `kill -9` of the collector mid-run (`sync: always`), restart on the same directory:
//!   every sample acknowledged to the client arrives, in order, none twice.
//! - A long backend outage under steady load: no client is refused, everything arrives after
//!   the backend returns, recovery starts within seconds (probes, not a 30 s backoff), and the
//!   backlog stays on disk (the read-ahead stays within its budget).
//! - The log full with `drop_oldest`: the newest data arrives, and stored + dropped = sent.
//! - Fan-out to Prometheus and VictoriaMetrics with VictoriaMetrics down: Prometheus gets
//!   everything on time, VictoriaMetrics catches up from its own log.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use serde_json::json;
use tonic::transport::Channel;
use vla_e2e::{
    Collector, Ports, Prometheus, RawSeries, VictoriaMetrics, eventually, free_port,
    pipeline_config,
};
use vla_pipeline::fixtures;

const METRIC: &str = "vla_durability_value";
const DROPPED: &str = "vla_collector_exporter_dropped_data_points_total";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// One point per series `s0..s{series}`, value `value`, at `ts_ms`; `pad` lengthens a label
/// so records are large (the drop test).
fn request(series: usize, value: f64, ts_ms: i64, pad: usize) -> ExportMetricsServiceRequest {
    let names: Vec<String> = (0..series).map(|i| format!("s{i}")).collect();
    // A different, incompressible-looking pad per series (the same in every request).
    let pads: Vec<String> = (0..series)
        .map(|i| {
            let mut x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            (0..pad)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    char::from(b'a' + (x % 26) as u8)
                })
                .collect()
        })
        .collect();
    let attrs: Vec<Vec<(&str, &str)>> = names
        .iter()
        .zip(&pads)
        .map(|(n, p)| {
            let mut a = vec![("series", n.as_str())];
            if pad > 0 {
                a.push(("pad", p.as_str()));
            }
            a
        })
        .collect();
    let points: Vec<(f64, &[(&str, &str)])> = attrs.iter().map(|a| (value, a.as_slice())).collect();
    let mut metric = fixtures::gauge("vla.durability.value", "", &points);
    if let Some(Data::Gauge(g)) = &mut metric.data {
        for p in &mut g.data_points {
            p.time_unix_nano = ts_ms as u64 * 1_000_000;
        }
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![fixtures::resource("vla-api", vec![metric])],
    }
}

/// [`pipeline_config`] with `edit` applied to its `prometheusremotewrite` exporter.
fn config_with(
    ports: &Ports,
    write_url: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> String {
    let mut doc: serde_json::Value =
        serde_saphyr::from_str(&pipeline_config(ports, write_url, "50ms")).unwrap();
    edit(&mut doc["exporters"]["prometheusremotewrite"]);
    doc.to_string()
}

async fn client(port: u16) -> MetricsServiceClient<Channel> {
    MetricsServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect")
}

/// Sends one request; whether the collector acknowledged it.
async fn send(c: &mut MetricsServiceClient<Channel>, r: ExportMetricsServiceRequest) -> bool {
    let mut req = tonic::Request::new(r);
    req.set_timeout(Duration::from_secs(20));
    c.export(req).await.is_ok()
}

fn metric(m: &BTreeMap<String, f64>, name: &str, labels: &str) -> f64 {
    m.get(&format!("{name}{{{labels}}}"))
        .copied()
        .unwrap_or(0.0)
}

/// Sum of every `dropped` series of `exporter`, whatever the reason.
fn dropped_total(m: &BTreeMap<String, f64>, exporter: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| {
            k.starts_with(&format!("{DROPPED}{{"))
                && k.contains(&format!("exporter=\"{exporter}\""))
        })
        .map(|(_, v)| *v)
        .sum()
}

fn by_series(raw: Vec<RawSeries>) -> BTreeMap<String, Vec<(i64, f64)>> {
    raw.into_iter()
        .map(|s| {
            (
                s.labels.get("series").cloned().unwrap_or_default(),
                s.samples,
            )
        })
        .collect()
}

/// Polls `check` until it gives a value or `timeout` passes.
async fn until<T, F, Fut>(timeout: Duration, mut check: F) -> Result<T, vla_e2e::HarnessError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually(timeout, || {
        let f = check();
        async move { f.await.ok_or_else(|| "condition not met yet".to_owned()) }
    })
    .await
}

/// One request of `series` points (value = timestamp) every 100 ms, counted.
struct SteadyLoad {
    grpc: MetricsServiceClient<Channel>,
    series: usize,
    ts: i64,
    sent: usize,
    refused: usize,
}

impl SteadyLoad {
    async fn tick(&mut self) {
        self.ts = self.ts.max(now_ms()) + 1;
        let r = request(self.series, self.ts as f64, self.ts, 0);
        if send(&mut self.grpc, r).await {
            self.sent += 1;
        } else {
            self.refused += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_that_was_acknowledged() {
    const SERIES: usize = 20;
    let mut prom = Prometheus::start(&[]).await.expect("prometheus");
    let dir = tempfile::tempdir().unwrap();
    let wal_dir = dir.path().join("wal");
    let ports = Ports::new();
    let config = config_with(&ports, &prom.write_url(), |e| {
        e["wal"] = json!({ "directory": wal_dir, "sync": "always" });
    });
    let mut first = Collector::start(&config, ports.telemetry)
        .await
        .expect("collector");
    let mut grpc = client(ports.grpc).await;
    let mut acked: Vec<(i64, f64)> = Vec::new();
    let mut sent: Vec<(i64, f64)> = Vec::new();
    let mut ts = now_ms() - 60_000;
    let mut value = 0.0;
    let next = |ts: &mut i64, value: &mut f64| {
        *ts += 100;
        *value += 1.0;
        (*ts, *value)
    };
    // Prometheus up, then down: the second half is only in the log when the kill comes.
    for i in 0..60 {
        if i == 30 {
            prom.stop().expect("stop prometheus");
        }
        let (t, v) = next(&mut ts, &mut value);
        sent.push((t, v));
        if send(&mut grpc, request(SERIES, v, t, 0)).await {
            acked.push((t, v));
        }
    }
    assert_eq!(acked.len(), 60, "the log had room: nothing refused");
    // kill -9 while a request is in flight (its answer may or may not come).
    let (t, v) = next(&mut ts, &mut value);
    sent.push((t, v));
    let in_flight = send(&mut grpc, request(SERIES, v, t, 0));
    let kill = async {
        tokio::time::sleep(Duration::from_millis(2)).await;
        first.process.kill().expect("kill -9");
    };
    let (ok, ()) = tokio::join!(in_flight, kill);
    if ok {
        acked.push((t, v));
    }
    prom.restart().await.expect("prometheus back");
    let second = Collector::start(&config, ports.telemetry)
        .await
        .expect("collector restarted on the same log");
    let mut grpc = client(ports.grpc).await;
    for _ in 0..20 {
        let (t, v) = next(&mut ts, &mut value);
        sent.push((t, v));
        assert!(send(&mut grpc, request(SERIES, v, t, 0)).await);
        acked.push((t, v));
    }
    let want = acked.len();
    let stored = until(Duration::from_secs(60), || async {
        let got = by_series(prom.raw_samples(METRIC, "10m").await.ok()?);
        (got.len() == SERIES && got.values().all(|s| s.len() >= want)).then_some(got)
    })
    .await
    .unwrap_or_else(|e| panic!("not every acknowledged sample arrived: {e}"));
    for (series, samples) in &stored {
        for a in &acked {
            assert!(samples.contains(a), "{series}: acknowledged {a:?} missing");
        }
        assert!(
            samples.iter().all(|s| sent.contains(s)),
            "{series}: only what was sent"
        );
        assert!(
            samples
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1),
            "{series}: in order, none twice: {samples:?}"
        );
    }
    let m = second.self_metrics().await.expect("metrics");
    assert!(
        metric(
            &m,
            "vla_collector_exporter_wal_replayed_records_total",
            "exporter=\"prometheusremotewrite\""
        ) > 0.0,
        "the restart replayed the log"
    );
    // After a kill, records the backend took in the last moments before it may be sent
    // again; Prometheus refuses them as out of order (they are already stored): counted
    // apart, never as a loss.
    let lost = dropped_total(&m, "prometheusremotewrite")
        - metric(
            &m,
            DROPPED,
            "exporter=\"prometheusremotewrite\",reason=\"replay_rejected\"",
        );
    assert_eq!(lost, 0.0, "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_refuses_no_client_keeps_the_backlog_on_disk_and_recovers_fast() {
    const SERIES: usize = 100;
    const IN_MEMORY: &str = "256KiB";
    let outage = Duration::from_secs(
        std::env::var("VLA_E2E_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(120),
    );
    let mut prom = Prometheus::start(&[]).await.expect("prometheus");
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    // The default retry policy: backoff grows to 30 s, so only probes make recovery fast.
    let config = config_with(&ports, &prom.write_url(), |e| {
        e["retry_on_failure"] = json!({});
        e["wal"] = json!({
            "directory": dir.path().join("wal"),
            "sync": "interval",
            "max_in_memory": IN_MEMORY,
        });
    });
    let collector = Collector::start(&config, ports.telemetry)
        .await
        .expect("collector");
    let pid = collector.process.pid();
    // Steady load: a request every 100 ms, before, during and after the outage.
    let mut load = SteadyLoad {
        grpc: client(ports.grpc).await,
        series: SERIES,
        ts: now_ms(),
        sent: 0,
        refused: 0,
    };
    let run_for = |d: Duration| Instant::now() + d;
    let end = run_for(Duration::from_secs(3));
    while Instant::now() < end {
        load.tick().await;
    }
    prom.stop().expect("outage begins");
    let mut peak_rss = 0u64;
    let mut peak_in_memory = 0.0f64;
    let end = run_for(outage);
    let mut next_sample = Instant::now();
    while Instant::now() < end {
        load.tick().await;
        if Instant::now() >= next_sample {
            next_sample += Duration::from_secs(1);
            peak_rss = peak_rss.max(rss_kib(pid));
            let m = collector.self_metrics().await.expect("metrics");
            peak_in_memory = peak_in_memory.max(metric(
                &m,
                "vla_collector_exporter_wal_in_memory_bytes",
                "exporter=\"prometheusremotewrite\"",
            ));
        }
    }
    let m = collector.self_metrics().await.expect("metrics");
    let wal_bytes = metric(
        &m,
        "vla_collector_exporter_wal_bytes",
        "exporter=\"prometheusremotewrite\"",
    );
    let age = metric(
        &m,
        "vla_collector_exporter_wal_oldest_unsent_age_seconds",
        "exporter=\"prometheusremotewrite\"",
    );
    assert!(wal_bytes > 0.0, "the backlog is in the log");
    assert!(
        age + 5.0 >= outage.as_secs_f64() - 5.0,
        "oldest unsent age {age}"
    );
    prom.restart().await.expect("outage ends");
    let back = Instant::now();
    // Recovery: outage-time samples arrive within seconds, though every lane's backoff has
    // grown to ~30 s.
    let before = load.sent;
    let recovered = until(Duration::from_secs(60), || async {
        let got = by_series(
            prom.raw_samples(&format!("{METRIC}{{series=\"s0\"}}"), "10m")
                .await
                .ok()?,
        );
        (got.get("s0").map_or(0, Vec::len) > 40).then_some(())
    })
    .await;
    let recovery = back.elapsed();
    recovered.expect("outage-time data arrives");
    // The load goes on a little after the return, then stops.
    let end = run_for(Duration::from_secs(2));
    while Instant::now() < end {
        load.tick().await;
    }
    assert_eq!(
        load.refused, 0,
        "no client was refused while the log had room"
    );
    let want = load.sent;
    let stored = until(Duration::from_secs(120), || async {
        let got = by_series(prom.raw_samples(METRIC, "15m").await.ok()?);
        (got.len() == SERIES && got.values().all(|s| s.len() >= want)).then_some(got)
    })
    .await
    .unwrap_or_else(|e| panic!("not everything arrived: {e}"));
    for (series, samples) in &stored {
        assert_eq!(samples.len(), want, "{series}: exactly what was sent");
    }
    let m = collector.self_metrics().await.expect("metrics");
    assert_eq!(dropped_total(&m, "prometheusremotewrite"), 0.0);
    let budget = vla_pipeline::config::parse_bytes(IN_MEMORY).unwrap() as f64;
    // One record may be read past the budget.
    assert!(
        peak_in_memory <= budget + 64.0 * 1024.0,
        "read-ahead {peak_in_memory} over its budget {budget}"
    );
    println!(
        "outage {outage:?}: {before} requests ({} points) during/before it, recovery {recovery:?}, \
         peak RSS {} KiB, peak read-ahead {peak_in_memory} B (budget {budget}), log {wal_bytes} B",
        before * SERIES,
        peak_rss
    );
    assert!(
        recovery < Duration::from_secs(10),
        "recovery took {recovery:?}: probes should end the 30 s backoff within seconds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_log_with_drop_oldest_keeps_the_newest_and_counts_exactly() {
    const SERIES: usize = 200;
    const REQUESTS: usize = 150;
    let prom_port = free_port();
    let write_url = format!("http://127.0.0.1:{prom_port}/api/v1/write");
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let config = config_with(&ports, &write_url, |e| {
        e["wal"] = json!({
            "directory": dir.path().join("wal"),
            "max_bytes": "1MiB",
            "max_in_memory": "64KiB",
            "when_full": "drop_oldest",
            "sync": "never",
        });
    });
    let collector = Collector::start(&config, ports.telemetry)
        .await
        .expect("collector");
    let mut grpc = client(ports.grpc).await;
    let mut ts = now_ms() - 60_000;
    let mut sent = Vec::new();
    for i in 0..REQUESTS {
        ts += 100;
        assert!(
            send(&mut grpc, request(SERIES, i as f64, ts, 200)).await,
            "drop_oldest never refuses"
        );
        sent.push(ts);
    }
    let m = collector.self_metrics().await.expect("metrics");
    let dropped = metric(
        &m,
        DROPPED,
        "exporter=\"prometheusremotewrite\",reason=\"wal_full\"",
    );
    assert!(dropped > 0.0, "the log filled up: {m:?}");
    assert!(
        metric(
            &m,
            "vla_collector_exporter_wal_bytes",
            "exporter=\"prometheusremotewrite\""
        ) <= 1024.0 * 1024.0
    );
    let prom = Prometheus::start_on(prom_port, &[])
        .await
        .expect("prometheus");
    until(Duration::from_secs(60), || async {
        let m = collector.self_metrics().await.ok()?;
        (metric(
            &m,
            "vla_collector_exporter_wal_records",
            "exporter=\"prometheusremotewrite\"",
        ) == 0.0)
            .then_some(())
    })
    .await
    .expect("the log drains");
    let stored = until(Duration::from_secs(30), || async {
        let got = by_series(prom.raw_samples(METRIC, "10m").await.ok()?);
        let newest = *sent.last()?;
        (got.len() == SERIES && got.values().all(|s| s.iter().any(|p| p.0 == newest)))
            .then_some(got)
    })
    .await
    .expect("the newest data arrives");
    let stored_points: usize = stored.values().map(Vec::len).sum();
    let m = collector.self_metrics().await.expect("metrics");
    let dropped = metric(
        &m,
        DROPPED,
        "exporter=\"prometheusremotewrite\",reason=\"wal_full\"",
    );
    assert_eq!(
        stored_points as f64 + dropped,
        (SERIES * REQUESTS) as f64,
        "stored + dropped = sent"
    );
    assert_eq!(
        dropped_total(&m, "prometheusremotewrite"),
        dropped,
        "no other drops"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_to_prometheus_and_victoriametrics_with_one_down() {
    const SERIES: usize = 50;
    const REQUESTS: usize = 20;
    let prom = Prometheus::start(&[]).await.expect("prometheus");
    let vm_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let mut doc: serde_json::Value =
        serde_saphyr::from_str(&pipeline_config(&ports, &prom.write_url(), "50ms")).unwrap();
    let mut to_vm = doc["exporters"]["prometheusremotewrite"].clone();
    doc["exporters"]["prometheusremotewrite"]["wal"] =
        json!({ "directory": dir.path().join("prom") });
    to_vm["endpoint"] = json!(format!("http://127.0.0.1:{vm_port}/api/v1/write"));
    to_vm["wal"] = json!({ "directory": dir.path().join("vm") });
    doc["exporters"]["prometheusremotewrite/vm"] = to_vm;
    doc["service"]["pipelines"]["metrics"]["exporters"] = json!([
        "prometheusremotewrite",
        "prometheusremotewrite/vm",
        "prometheus"
    ]);
    let collector = Collector::start(&doc.to_string(), ports.telemetry)
        .await
        .expect("collector");
    let mut grpc = client(ports.grpc).await;
    let mut ts = now_ms() - 30_000;
    for i in 0..REQUESTS {
        ts += 100;
        assert!(send(&mut grpc, request(SERIES, i as f64, ts, 0)).await);
    }
    // Prometheus gets everything while VictoriaMetrics is down.
    let count = |got: &BTreeMap<String, Vec<(i64, f64)>>| {
        got.len() == SERIES && got.values().all(|s| s.len() == REQUESTS)
    };
    // VictoriaMetrics stays down for the whole wait, so any bound shows Prometheus is not
    // held back; 30 s leaves room for a busy 2-core CI machine (15 s once ran out there).
    until(Duration::from_secs(30), || async {
        let got = by_series(prom.raw_samples(METRIC, "10m").await.ok()?);
        count(&got).then_some(())
    })
    .await
    .expect("prometheus is not held back by the backend that is down");
    let m = collector.self_metrics().await.expect("metrics");
    assert!(
        metric(
            &m,
            "vla_collector_exporter_wal_records",
            "exporter=\"prometheusremotewrite/vm\""
        ) > 0.0,
        "the down backend's data waits in its own log"
    );
    let vm = VictoriaMetrics::start_on(vm_port)
        .await
        .expect("victoria-metrics");
    let got = until(Duration::from_secs(60), || async {
        let got = by_series(vm.raw_samples(METRIC, "10m").await.ok()?);
        (got.len() == SERIES && got.values().all(|s| s.len() >= REQUESTS)).then_some(got)
    })
    .await
    .expect("victoria-metrics catches up from its log");
    assert!(count(&got), "exactly once in victoria-metrics: {got:?}");
    let m = collector.self_metrics().await.expect("metrics");
    assert_eq!(dropped_total(&m, "prometheusremotewrite"), 0.0);
    assert_eq!(dropped_total(&m, "prometheusremotewrite/vm"), 0.0);
    // The same labels in both backends (job, external label) through the same exporter.
    let p = prom
        .query(&format!("{METRIC}{{series=\"s1\"}}"))
        .await
        .unwrap();
    let v = vm
        .query(&format!("{METRIC}{{series=\"s1\"}}"))
        .await
        .unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(v.len(), 1);
    assert_eq!(p[0].labels, v[0].labels);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_series_that_stops_ends_at_once_in_prometheus_with_stale_after() {
    let prom = Prometheus::start(&[]).await.expect("prometheus");
    let ports = Ports::new();
    let config = config_with(&ports, &prom.write_url(), |e| {
        e["stale_after"] = json!("1s");
    });
    let _collector = Collector::start(&config, ports.telemetry)
        .await
        .expect("collector");
    let mut grpc = client(ports.grpc).await;
    // Series s0 and s1 report, then only s0 goes on.
    assert!(send(&mut grpc, request(2, 1.0, now_ms(), 0)).await);
    prom.wait_for(METRIC, 2, Duration::from_secs(15))
        .await
        .expect("both series arrive");
    let ended = until(Duration::from_secs(20), || {
        let mut g = grpc.clone();
        let prom = &prom;
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            send(&mut g, request(1, 2.0, now_ms(), 0))
                .await
                .then_some(())?;
            let got = prom.query(METRIC).await.ok()?;
            let live: Vec<&str> = got
                .iter()
                .filter_map(|s| s.labels.get("series").map(String::as_str))
                .collect();
            // Without the marker s1 would stay in instant queries for 5 minutes.
            (live == ["s0"]).then_some(())
        }
    })
    .await;
    ended.expect("s1 ends in queries within seconds of its last sample");
}
