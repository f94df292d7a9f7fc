//! The simulator's `steady` scenario through the shipped pipeline into a real Prometheus that
//! evaluates the shipped recording and alert rules (every `for:` set to 0s, so a condition
//! true at any evaluation shows as an alert): no alert is ever pending or firing, while the
//! rules do see the traffic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vla_e2e::{Prometheus, eventually, fast_rules, free_port};
use vla_sdk::sim::{SimConfig, Simulation};

const WAIT: Duration = Duration::from_secs(30);

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Waits until Prometheus has evaluated the recording rules at least `after` seconds past
/// `since` (the rule groups run every second), so the alert rules have seen the data too.
async fn rules_evaluated_after(prom: &Prometheus, since: f64, after: f64) {
    eventually(WAIT, || async {
        let s = prom
            .query("max(timestamp(job_instance_gpu_id:vla_gpu_memory:ratio))")
            .await
            .map_err(|e| e.to_string())?;
        match s.first() {
            Some(t) if t.value >= since + after => Ok(()),
            other => Err(format!("last evaluation {other:?}, want after {since}")),
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn steady_keeps_every_shipped_alert_quiet() {
    let (alert_rules, alert_names) = fast_rules("configs/prometheus/alerts.yml", "0s").unwrap();
    assert_eq!(alert_names.len(), 13, "{alert_names:?}");
    let (recording_rules, _) = fast_rules("configs/prometheus/recording.yml", "0s").unwrap();
    let prom_config = "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                       rule_files: [recording.yml, alerts.yml]\n";
    let prom = Prometheus::start_with(
        free_port(),
        prom_config,
        &[
            ("recording.yml", &recording_rules),
            ("alerts.yml", &alert_rules),
        ],
    )
    .await
    .expect("prometheus");
    let (ports, collector) = vla_e2e::collector_into(&prom, "100ms")
        .await
        .expect("collector");
    let telemetry = vla_e2e::api_telemetry(ports.grpc, "api-steady").unwrap();
    let mut sim = Simulation::new(SimConfig {
        rate: 30.0,
        seed: 9,
        ..SimConfig::default()
    });

    // Twelve exports of five simulated seconds each, the next one once Prometheus has
    // evaluated its rules on the last.
    for round in 0..12 {
        for _ in 0..5 {
            sim.step(&telemetry);
        }
        let t = telemetry.clone();
        tokio::task::spawn_blocking(move || t.force_flush())
            .await
            .unwrap()
            .expect("export to the collector");
        let total = sim.totals().total_requests() as f64;
        eventually(WAIT, || async {
            let s = prom
                .query("sum(vla_inference_requests_total)")
                .await
                .map_err(|e| e.to_string())?;
            match s.first() {
                Some(v) if v.value == total => Ok(()),
                other => Err(format!("round {round}: {other:?}, want {total}")),
            }
        })
        .await
        .unwrap();
        rules_evaluated_after(&prom, now_secs(), 1.0).await;
    }

    // The rules saw the traffic: the error ratio HighErrorRate reads exists, under its line.
    let ratio = prom
        .query("job:vla_inference_errors:ratio_rate5m")
        .await
        .unwrap();
    assert_eq!(ratio.len(), 1, "{ratio:?}");
    assert!(ratio[0].value < 0.05, "{ratio:?}");
    // No alert was pending or firing at any evaluation of the run.
    let ever = prom.query("count_over_time(ALERTS[10m])").await.unwrap();
    assert!(
        ever.is_empty(),
        "steady raised alerts: {:?}",
        ever.iter()
            .map(|s| (s.labels.get("alertname"), s.labels.get("alertstate")))
            .collect::<Vec<_>>()
    );

    let t = telemetry.clone();
    drop(telemetry);
    tokio::task::spawn_blocking(move || drop(t)).await.unwrap();
    drop(collector);
}
