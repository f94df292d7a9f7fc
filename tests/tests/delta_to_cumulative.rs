//! End to end: the official OpenTelemetry SDK in delta temporality (OTLP gRPC and HTTP) →
//! `vla-collector` with `deltatocumulative` → a real Prometheus (remote write) and the scrape
//! endpoint, compared with the same recordings sent cumulatively; and the processor's state
//! surviving a clean restart and a `kill -9` on the same storage directory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_otlp::{MetricExporter, Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use vla_e2e::{Collector, Ports, Prometheus, eventually, parse_exposition, pipeline_config_with};

const WAIT: Duration = Duration::from_secs(30);

/// [`pipeline_config`] with `deltatocumulative` (its `settings`) before `batch`.
fn config(ports: &Ports, prom: &Prometheus, settings: &str) -> String {
    pipeline_config_with(
        ports,
        &prom.write_url(),
        "100ms",
        "deltatocumulative",
        settings,
    )
}

/// A provider exporting only when flushed, as service `job`, instance `api-1`.
fn provider(job: &str, exporter: MetricExporter) -> SdkMeterProvider {
    let reader = PeriodicReader::builder(exporter)
        .with_interval(Duration::from_secs(3600))
        .build();
    SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(
            Resource::builder_empty()
                .with_service_name(job.to_owned())
                .with_attributes([KeyValue::new("service.instance.id", "api-1")])
                .build(),
        )
        .build()
}

fn grpc(job: &str, port: u16, temporality: Temporality) -> SdkMeterProvider {
    let exporter = MetricExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://127.0.0.1:{port}"))
        .with_temporality(temporality)
        .build()
        .expect("grpc exporter");
    provider(job, exporter)
}

fn http(job: &str, port: u16, temporality: Temporality) -> SdkMeterProvider {
    let exporter = MetricExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("http://127.0.0.1:{port}/v1/metrics"))
        .with_temporality(temporality)
        .build()
        .expect("http exporter");
    provider(job, exporter)
}

/// Flushes off the async runtime (the tonic exporter deadlocks if flushed on a runtime thread).
async fn flush(provider: &SdkMeterProvider) {
    let p = provider.clone();
    tokio::task::spawn_blocking(move || p.force_flush())
        .await
        .expect("join")
        .expect("flush");
}

/// The instruments one client records into.
struct Api {
    requests: opentelemetry::metrics::Counter<u64>,
    tokens: opentelemetry::metrics::Counter<f64>,
    duration: opentelemetry::metrics::Histogram<f64>,
    queue: opentelemetry::metrics::UpDownCounter<i64>,
}

impl Api {
    fn new(p: &SdkMeterProvider) -> Self {
        let meter = p.meter("vla-api");
        Self {
            requests: meter.u64_counter("vla.inference.requests").build(),
            tokens: meter.f64_counter("vla.tokens").build(),
            duration: meter
                .f64_histogram("vla.inference.duration")
                .with_unit("s")
                .with_boundaries(vec![0.1, 0.5, 1.0])
                .build(),
            queue: meter
                .i64_up_down_counter("vla.inference.queue.depth")
                .build(),
        }
    }

    /// Round `round`'s recordings (the same for every client).
    fn record(&self, round: u32) {
        let ok = [KeyValue::new("status", "success")];
        let err = [KeyValue::new("status", "error")];
        self.requests.add(u64::from(round) * 3 + 1, &ok);
        if round % 2 == 1 {
            // A series that appears mid-run.
            self.requests.add(2, &err);
        }
        self.tokens.add(0.5 * f64::from(round + 1), &[]);
        for v in [0.05, 0.3 * f64::from(round + 1), 2.0] {
            self.duration.record(v, &[]);
        }
        self.queue.add(if round == 1 { -3 } else { 5 }, &[]);
    }
}

/// The series `selector` returns, as `(labels without `drop`, value)`, sorted by labels.
async fn series_without(prom: &Prometheus, selector: &str, drop: &str) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = prom
        .query(selector)
        .await
        .unwrap()
        .into_iter()
        .map(|s| {
            let labels: Vec<String> = s
                .labels
                .iter()
                .filter(|(k, _)| k.as_str() != drop)
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            (labels.join(","), s.value)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every series of the run, by job: `(name{labels without job}, value)`, sorted.
async fn series_of(prom: &Prometheus, job: &str) -> Vec<(String, f64)> {
    series_without(
        prom,
        &format!(r#"{{job="{job}",__name__=~"vla_.*"}}"#),
        "job",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_clients_over_grpc_and_http_give_the_series_of_a_cumulative_client() {
    let prom = Prometheus::start(&[]).await.expect("prometheus");
    let ports = Ports::new();
    let collector = Collector::start(&config(&ports, &prom, "{}"), ports.telemetry)
        .await
        .expect("collector");
    let clients = [
        (
            "cumulative",
            grpc("cumulative", ports.grpc, Temporality::Cumulative),
        ),
        (
            "delta-grpc",
            grpc("delta-grpc", ports.grpc, Temporality::Delta),
        ),
        (
            "delta-http",
            http("delta-http", ports.http, Temporality::Delta),
        ),
    ];
    let apis: Vec<Api> = clients.iter().map(|(_, p)| Api::new(p)).collect();
    for round in 0..3 {
        for ((_, p), api) in clients.iter().zip(&apis) {
            api.record(round);
            flush(p).await;
        }
        // Each round's totals, in Prometheus, equal the cumulative client's.
        let want_requests = f64::from((0..=round).map(|r| r * 3 + 1).sum::<u32>());
        let prom_ref = &prom;
        let reference = eventually(WAIT, move || async move {
            let got = series_of(prom_ref, "cumulative").await;
            let requests = got
                .iter()
                .find(|(k, _)| k.contains("vla_inference_requests_total") && k.contains("success"));
            match requests {
                Some((_, v)) if *v == want_requests => Ok(got),
                other => Err(format!(
                    "cumulative requests: {other:?}, want {want_requests}"
                )),
            }
        })
        .await
        .expect("the cumulative client's round");
        for job in ["delta-grpc", "delta-http"] {
            let reference = &reference;
            eventually(WAIT, move || async move {
                let got = series_of(prom_ref, job).await;
                if same(&got, reference) {
                    Ok(())
                } else {
                    Err(format!(
                        "round {round}, {job}:\n{got:?}\nwant\n{reference:?}"
                    ))
                }
            })
            .await
            .expect("delta series equal to the cumulative ones");
        }
    }
    // The histogram really is there: count, sum and buckets.
    let names: Vec<String> = series_of(&prom, "delta-grpc")
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    for want in [
        "vla_inference_duration_seconds_bucket",
        "vla_inference_duration_seconds_count",
        "vla_inference_duration_seconds_sum",
        "vla_tokens_total",
        "vla_inference_queue_depth",
    ] {
        assert!(
            names.iter().any(|n| n.contains(want)),
            "{want} in {names:?}"
        );
    }
    // Over the run, the delta series grow as the cumulative ones, with no reset: what
    // `increase()` reads. (`increase()` itself extrapolates to the window's edges, so it differs
    // between series sampled at different instants.)
    let growth = |job: &'static str| {
        let prom = &prom;
        async move {
            let q = format!(
                r#"max_over_time(vla_inference_requests_total{{job="{job}",status="success"}}[10m]) - min_over_time(vla_inference_requests_total{{job="{job}",status="success"}}[10m])"#
            );
            prom.query(&q).await.unwrap().first().map(|s| s.value)
        }
    };
    assert_eq!(growth("cumulative").await, Some(11.0));
    assert_eq!(growth("delta-grpc").await, Some(11.0));
    assert_eq!(growth("delta-http").await, Some(11.0));
    for name in [
        "vla_inference_requests_total",
        "vla_tokens_total",
        "vla_inference_duration_seconds_count",
    ] {
        let q = format!(r#"sum(resets({name}{{job=~"delta-.*"}}[10m]))"#);
        let resets = prom.query(&q).await.unwrap();
        assert_eq!(
            resets.first().map(|s| s.value),
            Some(0.0),
            "{name}: {resets:?}"
        );
    }
    // The scrape endpoint serves the converted series too.
    let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", ports.scrape))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let scraped = parse_exposition(&text);
    let line = |job: &str| {
        scraped
            .iter()
            .find(|(k, _)| {
                k.starts_with("vla_inference_requests_total{")
                    && k.contains(&format!(r#"job="{job}""#))
                    && k.contains("success")
            })
            .map(|(_, v)| *v)
    };
    assert_eq!(line("delta-http"), Some(12.0), "{text}");
    assert_eq!(line("delta-http"), line("cumulative"));
    // Nothing was dropped as delta, and every delta point was accumulated.
    let own = collector.self_metrics().await.unwrap();
    let dropped = own.get(r#"vla_collector_exporter_dropped_data_points_total{exporter="prometheusremotewrite",reason="delta_temporality"}"#);
    assert!(dropped.is_none_or(|v| *v == 0.0), "{own:?}");
    // Two delta clients, three rounds of requests{success}, tokens and duration, and
    // requests{error} once. (The SDK keeps up-down counters cumulative under a delta
    // preference, as the OpenTelemetry spec says.)
    let accumulated = own
        .get(r#"vla_collector_processor_deltatocumulative_data_points_total{processor="deltatocumulative",result="accumulated"}"#)
        .copied();
    assert_eq!(accumulated, Some(2.0 * (3.0 * 3.0 + 1.0)), "{own:?}");
    let out_of_order = own
        .get(r#"vla_collector_processor_deltatocumulative_data_points_total{processor="deltatocumulative",result="out_of_order"}"#)
        .copied();
    assert_eq!(out_of_order, Some(0.0), "{own:?}");
}

/// The same series with the same values, sums of doubles within rounding (a cumulative SDK
/// adds values one by one, the collector adds each export's sum).
fn same(a: &[(String, f64)], b: &[(String, f64)]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((ka, va), (kb, vb))| {
            ka == kb && (va - vb).abs() <= 1e-9 * va.abs().max(vb.abs()).max(1.0)
        })
}

/// Waits until Prometheus's latest `vla_inference_requests_total` of job `delta` is `want`.
async fn wait_total(prom: &Prometheus, want: f64) {
    eventually(WAIT, move || async move {
        let got = prom
            .query(r#"vla_inference_requests_total{job="delta"}"#)
            .await
            .unwrap();
        match got.as_slice() {
            [s] if s.value == want => Ok(()),
            other => Err(format!("{other:?}, want {want}")),
        }
    })
    .await
    .expect("the running total");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_total_survives_a_clean_restart_and_a_kill_9() {
    let prom = Prometheus::start(&[]).await.expect("prometheus");
    let state = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let settings = format!(
        r#"{{ storage: {{ directory: "{}", snapshot_interval: 1h }} }}"#,
        state.path().display()
    );
    let yaml = config(&ports, &prom, &settings);
    let client = grpc("delta", ports.grpc, Temporality::Delta);
    let requests = client
        .meter("vla-api")
        .u64_counter("vla.inference.requests")
        .build();

    let mut collector = Collector::start(&yaml, ports.telemetry)
        .await
        .expect("first");
    requests.add(5, &[]);
    flush(&client).await;
    wait_total(&prom, 5.0).await;
    let code = collector.process.terminate(WAIT).expect("clean stop");
    assert_eq!(code, Some(0), "{}", collector.process.log());
    let snapshot = state.path().join("deltatocumulative.metrics.snapshot");
    assert!(snapshot.is_file(), "no snapshot after a clean stop");

    // A clean restart continues the total: 5 + 3, not a new counter at 3.
    let mut collector = Collector::start(&yaml, ports.telemetry)
        .await
        .expect("second");
    let own = collector.self_metrics().await.unwrap();
    assert_eq!(
        own.get(r#"vla_collector_processor_deltatocumulative_restored_streams_total{pipeline="metrics",processor="deltatocumulative"}"#),
        Some(&1.0),
        "{own:?}"
    );
    requests.add(3, &[]);
    flush(&client).await;
    wait_total(&prom, 8.0).await;

    // kill -9 leaves no snapshot of the last batch (the interval is an hour): the journal
    // has it.
    collector.process.kill().expect("kill -9");
    let mut collector = Collector::start(&yaml, ports.telemetry)
        .await
        .expect("third");
    requests.add(2, &[]);
    flush(&client).await;
    wait_total(&prom, 10.0).await;
    let resets = prom
        .query(r#"resets(vla_inference_requests_total{job="delta"}[10m])"#)
        .await
        .unwrap();
    assert_eq!(resets.first().map(|s| s.value), Some(0.0), "{resets:?}");
    let code = collector.process.terminate(WAIT).expect("clean stop");
    assert_eq!(code, Some(0), "{}", collector.process.log());
}

/// Every cumulative series (`_total`, `_count`, `_sum`, `_bucket`) of `instance`, keyed by its
/// labels without `instance`.
async fn cumulative_series(prom: &Prometheus, instance: &str) -> Vec<(String, f64)> {
    let q = format!(r#"{{instance="{instance}",__name__=~"vla_.*(_total|_count|_sum|_bucket)"}}"#);
    series_without(prom, &q, "instance").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_in_delta_gives_the_totals_of_its_cumulative_run() {
    let prom = Prometheus::start(&[]).await.expect("prometheus");
    let ports = Ports::new();
    let _collector = Collector::start(&config(&ports, &prom, "{}"), ports.telemetry)
        .await
        .expect("collector");
    let sim = vla_e2e::simulator_binary().expect("vla-api-sim");
    let endpoint = format!("http://127.0.0.1:{}", ports.grpc);
    // The same seeded run twice: cumulative, then delta, exporting several times each (3 s
    // at one simulated second per second, every 300 ms).
    for (instance, temporality) in [("sim-cumulative", "cumulative"), ("sim-delta", "delta")] {
        let (sim, endpoint) = (sim.clone(), endpoint.clone());
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(&sim)
                .args([
                    "--endpoint",
                    &endpoint,
                    "--scenario",
                    "steady",
                    "--rate",
                    "40",
                ])
                .args(["--duration", "3s", "--seed", "7"])
                .args(["--export-interval", "300ms"])
                .env(
                    "OTEL_RESOURCE_ATTRIBUTES",
                    format!("service.instance.id={instance}"),
                )
                .env(
                    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
                    temporality,
                )
                .env("RUST_LOG", "warn")
                .output()
                .expect("run vla-api-sim")
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "vla-api-sim ({temporality}) failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // "exports: N succeeded, ...": several deltas per series, not one final export.
        let exports: u32 = stdout
            .split("exports: ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(exports >= 3, "{temporality}: {exports} exports: {stdout}");
    }
    let prom = &prom;
    let reference = eventually(WAIT, move || async move {
        let got = cumulative_series(prom, "sim-cumulative").await;
        if got.len() > 10 {
            Ok(got)
        } else {
            Err(format!("{} series", got.len()))
        }
    })
    .await
    .expect("the cumulative run");
    let reference = &reference;
    eventually(WAIT, move || async move {
        let got = cumulative_series(prom, "sim-delta").await;
        if same(&got, reference) {
            Ok(())
        } else {
            let missing: Vec<_> = reference
                .iter()
                .filter(|(k, _)| !got.iter().any(|(g, _)| g == k))
                .take(3)
                .collect();
            let differ: Vec<_> = reference
                .iter()
                .filter_map(|(k, v)| {
                    got.iter()
                        .find(|(g, _)| g == k)
                        .filter(|(_, w)| (w - v).abs() > 1e-9 * v.abs().max(1.0))
                        .map(|(_, w)| (k, v, w))
                })
                .take(3)
                .collect();
            Err(format!(
                "{} vs {} series; missing {missing:?}; differ {differ:?}",
                got.len(),
                reference.len()
            ))
        }
    })
    .await
    .expect("the delta run's totals equal the cumulative run's");
    let resets = prom
        .query(r#"sum(resets(vla_inference_requests_total{instance="sim-delta"}[10m]))"#)
        .await
        .unwrap();
    assert_eq!(resets.first().map(|s| s.value), Some(0.0), "{resets:?}");
}
