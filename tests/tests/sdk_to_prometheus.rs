//! End to end: `vla-sdk` (the catalogue and the `vla-api-sim` simulator) → `vla-collector` (a
//! real process) → a real Prometheus by remote write, and the collector's scrape endpoint.
//! Every metric of the catalogue must be queryable under exactly its Prometheus name with
//! exactly its label keys.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use vla_e2e::{Sample, parse_samples, simulator_binary, start_stack};
use vla_exporters::translate::{PromType, metric_name};
use vla_sdk::catalogue::{CATALOGUE, Instrument, by_prometheus_name};
use vla_sdk::sim::{Scenario, SimConfig, Simulation};

const WAIT: Duration = Duration::from_secs(30);

/// Labels every series of the simulator's resource carries besides the catalogue's own.
const RESOURCE_LABELS: &[&str] = &[
    "cluster",
    "instance",
    "job",
    "otel_scope_name",
    "otel_scope_version",
];

/// The catalogue's names are what the collector's translation makes of its OTel names.
#[test]
fn catalogue_names_are_the_collector_translation() {
    for spec in CATALOGUE {
        let ty = match spec.instrument {
            Instrument::Counter => PromType::Counter,
            Instrument::Gauge => PromType::Gauge,
            Instrument::Histogram => PromType::Histogram,
        };
        assert_eq!(
            metric_name(spec.otel_name, spec.unit, ty, None),
            spec.prometheus_name,
            "{}",
            spec.otel_name
        );
    }
}

fn label_keys(sample: &Sample) -> BTreeSet<&str> {
    sample
        .labels
        .keys()
        .map(String::as_str)
        .filter(|k| *k != "__name__" && !RESOURCE_LABELS.contains(k))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_catalogue_metric_is_queryable_with_its_exact_labels() {
    let (prom, ports, collector) = start_stack("100ms").await;
    let telemetry = vla_e2e::api_telemetry(ports.grpc, "api-e2e").unwrap();
    // Between them the scenarios record every metric of the catalogue.
    for scenario in Scenario::ALL {
        let mut sim = Simulation::new(SimConfig {
            scenario: *scenario,
            rate: 30.0,
            seed: 7,
            ..SimConfig::default()
        });
        for _ in 0..10 {
            sim.step(&telemetry);
        }
    }
    let t = telemetry.clone();
    tokio::task::spawn_blocking(move || t.shutdown())
        .await
        .unwrap()
        .expect("the final export reaches the collector");

    for spec in CATALOGUE {
        let want: BTreeSet<&str> = spec.label_keys().collect();
        for series in spec.prometheus_series_names() {
            let samples = prom
                .wait_for(&format!("{{__name__=\"{series}\"}}"), 1, WAIT)
                .await
                .unwrap_or_else(|e| panic!("{series} is not in Prometheus: {e}"));
            for s in &samples {
                let mut keys = label_keys(s);
                if series.ends_with("_bucket") {
                    assert!(keys.remove("le"), "{series} without le: {:?}", s.labels);
                }
                assert_eq!(keys, want, "{series}: {:?}", s.labels);
                assert_eq!(s.labels["job"], "vla/vla-api", "{series}");
                assert_eq!(s.labels["instance"], "api-e2e", "{series}");
                assert_eq!(s.labels["otel_scope_name"], "vla-sdk", "{series}");
            }
        }
    }
    // Nothing named vla_* reaches Prometheus that the catalogue does not hold.
    let all = prom.query("{__name__=~\"vla_.+\"}").await.unwrap();
    let names: BTreeSet<&str> = all.iter().map(|s| s.labels["__name__"].as_str()).collect();
    for name in &names {
        assert!(
            by_prometheus_name(name).is_some(),
            "{name} is not in the catalogue"
        );
    }
    let families: BTreeSet<&str> = names
        .iter()
        .filter_map(|n| by_prometheus_name(n))
        .map(|s| s.prometheus_name)
        .collect();
    assert_eq!(families.len(), CATALOGUE.len());

    // The scrape endpoint declares each family with the catalogue's type.
    let url = format!("http://127.0.0.1:{}/metrics", ports.scrape);
    let lines: Vec<String> = CATALOGUE
        .iter()
        .map(|s| {
            format!(
                "# TYPE {} {}",
                s.prometheus_name,
                s.instrument.prometheus_type()
            )
        })
        .collect();
    scrape_until(&url, |text| {
        let missing: Vec<&String> = lines.iter().filter(|l| !text.contains(*l)).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("scrape endpoint lacks {missing:?}"))
        }
    })
    .await;
    drop(collector);
}

/// Scrapes `url` until `check` passes on its text (the scrape exporter runs beside remote
/// write and may take the last batch a moment after Prometheus has it).
async fn scrape_until(url: &str, check: impl Fn(&str) -> Result<(), String>) {
    vla_e2e::eventually(WAIT, || async {
        let text = reqwest::get(url)
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        check(&text)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Sums a query's values by one label.
fn by_label(samples: &[Sample], label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in samples {
        *out.entry(s.labels.get(label).cloned().unwrap_or_default())
            .or_default() += s.value;
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn the_simulator_binary_runs_a_scenario_into_prometheus() {
    let (prom, ports, collector) = start_stack("100ms").await;
    let sim = simulator_binary().expect("vla-api-sim");
    let endpoint = format!("http://127.0.0.1:{}", ports.grpc);
    let run = move || {
        Command::new(&sim)
            .args([
                "--endpoint",
                &endpoint,
                "--scenario",
                "gpu-overheat",
                "--rate",
                "40",
                "--duration",
                "5s",
                "--seed",
                "11",
                "--unpaced",
                "--export-interval",
                "1h",
            ])
            .env("RUST_LOG", "warn")
            .output()
            .expect("run vla-api-sim")
    };
    let out = tokio::task::spawn_blocking(run).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "vla-api-sim failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "5 s simulated, N requests (...), ..."
    let requests: f64 = stdout
        .split(" requests")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no request count in {stdout:?}"));
    assert!(stdout.starts_with("5 s simulated"), "{stdout}");
    assert!(
        stdout.contains("exports: 1 succeeded, 0 failed"),
        "{stdout}"
    );

    // What the simulator counted is exactly what Prometheus holds.
    for family in [
        "vla_inference_requests_total",
        "vla_customer_requests_total",
    ] {
        prom.wait_for(&format!("sum({family}) == {requests}"), 1, WAIT)
            .await
            .unwrap_or_else(|e| panic!("{family} does not add up to {requests}: {e}\n{stdout}"));
    }
    // The scenario did what it says: half of the four GPUs are past the 85 °C alert.
    let temps = prom
        .wait_for("vla_gpu_temperature_celsius", 4, WAIT)
        .await
        .unwrap();
    let hot = temps.iter().filter(|s| s.value > 85.0).count();
    assert_eq!(hot, 2, "{temps:?}");
    let by_gpu = by_label(&temps, "gpu_id");
    assert_eq!(by_gpu.keys().collect::<Vec<_>>(), ["0", "1", "2", "3"]);
    // The scrape endpoint serves the same totals.
    let url = format!("http://127.0.0.1:{}/metrics", ports.scrape);
    scrape_until(&url, |text| {
        let scraped: f64 = parse_samples(text)
            .unwrap()
            .iter()
            .filter(|s| s.labels["__name__"] == "vla_inference_requests_total")
            .map(|s| s.value)
            .sum();
        if scraped == requests {
            Ok(())
        } else {
            Err(format!(
                "scrape endpoint total {scraped}, simulator {requests}"
            ))
        }
    })
    .await;
    drop(collector);
}

#[test]
fn the_simulator_refuses_bad_flags_with_a_message() {
    let sim = simulator_binary().expect("vla-api-sim");
    let out = Command::new(&sim)
        .args(["--scenario", "meltdown"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid value 'meltdown' for '--scenario"),
        "{err}"
    );
    assert!(err.contains("error-spike"), "lists the scenarios: {err}");
    let out = Command::new(&sim)
        .args(["--endpoint", "collector:4317", "--duration", "1s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("endpoint: \"collector:4317\" is not an http:// or https:// URL with a host"),
        "{err}"
    );
}
