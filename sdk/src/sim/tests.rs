use super::*;

fn offline() -> Telemetry {
    Telemetry::builder().enabled(false).build().unwrap()
}

fn run(config: SimConfig, seconds: u64) -> Totals {
    let t = offline();
    let mut sim = Simulation::new(config);
    for _ in 0..seconds {
        sim.step(&t);
    }
    sim.totals().clone()
}

/// The threshold of an alert of the shipped `configs/prometheus/alerts.yml`: the number after
/// the last `>` of its expression (`... > 0.05`).
fn threshold(alert: &str) -> f64 {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../configs/prometheus/alerts.yml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let expr = doc["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .find(|r| r["alert"] == alert)
        .unwrap_or_else(|| panic!("no alert {alert} in {path}"))["expr"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, number) = expr
        .rsplit_once('>')
        .unwrap_or_else(|| panic!("{alert}: no `>` in {expr}"));
    number
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{alert}: {number:?} in {expr}: {e}"))
}

/// The thresholds the simulator's scenarios are built to stay under (steady) or cross.
struct Thresholds {
    error_share: f64,
    model_error_share: f64,
    p99_seconds: f64,
    invalid_share: f64,
    rate_limited_per_second: f64,
    critical_incidents: f64,
    gpu_celsius: f64,
    gpu_memory_share: f64,
    queue_depth: f64,
    worker_utilization: f64,
    quota_share: f64,
    rejections_per_hour: f64,
}

impl Thresholds {
    fn shipped() -> Self {
        Self {
            error_share: threshold("HighErrorRate"),
            model_error_share: threshold("ModelInferenceFailure"),
            p99_seconds: threshold("HighLatency"),
            invalid_share: threshold("HighValidationFailureRate"),
            rate_limited_per_second: threshold("RateLimitHitRate"),
            critical_incidents: threshold("CriticalSafetyIncident"),
            gpu_celsius: threshold("GPUOverheating"),
            gpu_memory_share: threshold("GPUMemoryHigh"),
            queue_depth: threshold("HighQueueDepth"),
            worker_utilization: threshold("WorkerOverloaded"),
            quota_share: threshold("QuotaExceeded"),
            rejections_per_hour: threshold("SafetyIncidentSurge"),
        }
    }
}

#[test]
fn the_thresholds_are_read_from_the_shipped_rules() {
    let th = Thresholds::shipped();
    assert!(th.error_share > 0.0 && th.error_share < 1.0);
    assert!(th.gpu_celsius > 50.0 && th.gpu_celsius < 120.0);
    assert_eq!(th.critical_incidents, 0.0);
    // The simulator tallies requests slower than 2 s (`Totals::slower_than_2s`): a HighLatency
    // rule on another threshold needs that tally moved with it.
    assert_eq!(th.p99_seconds, 2.0, "HighLatency's threshold moved");
}

fn share(t: &Totals, status: &str) -> f64 {
    t.requests.get(status).copied().unwrap_or(0) as f64 / t.total_requests() as f64
}

#[test]
fn same_seed_same_run_other_seed_other_run() {
    let config = SimConfig {
        seed: 42,
        ..SimConfig::default()
    };
    let a = run(config.clone(), 30);
    let b = run(config.clone(), 30);
    assert_eq!(a, b);
    let c = run(SimConfig { seed: 43, ..config }, 30);
    assert_ne!(a, c);
    assert_eq!(a.seconds, 30);
}

#[test]
fn rate_sets_the_request_count() {
    let t = run(
        SimConfig {
            rate: 200.0,
            ..SimConfig::default()
        },
        20,
    );
    let per_second = t.total_requests() as f64 / 20.0;
    assert!((per_second - 200.0).abs() < 10.0, "{per_second}");
}

#[test]
fn steady_stays_under_every_alert_threshold() {
    let th = Thresholds::shipped();
    let t = run(SimConfig::default(), 300);
    assert!(share(&t, "error") < th.error_share, "{t}");
    assert!(
        t.max_model_error_share() < th.model_error_share,
        "{:?}",
        t.model_requests
    );
    // The p99 stays under the threshold: fewer than 1% of requests are slower.
    assert!(
        t.share_slower_than_2s() < 0.01,
        "p99 under {} s: {}",
        th.p99_seconds,
        t.slower_than_2s
    );
    assert!(share(&t, "invalid") < th.invalid_share, "{t}");
    assert!(
        (t.requests.get("rate_limited").copied().unwrap_or(0) as f64 / 300.0)
            < th.rate_limited_per_second,
        "{t}"
    );
    assert!(
        t.incidents.get("critical").copied().unwrap_or(0) as f64 <= th.critical_incidents,
        "{t}"
    );
    assert!(t.max_gpu_temperature < th.gpu_celsius, "{t}");
    assert!(
        t.max_gpu_memory_share < th.gpu_memory_share,
        "{}",
        t.max_gpu_memory_share
    );
    assert!((t.max_queue_depth as f64) < th.queue_depth, "{t}");
    assert!(
        t.max_worker_utilization < th.worker_utilization,
        "{}",
        t.max_worker_utilization
    );
    assert!(t.max_quota_share < th.quota_share, "{}", t.max_quota_share);
    assert_eq!(t.seconds_unhealthy, 0);
    // About 30 refusals an hour: a few in five minutes, far from the surge threshold.
    let rejected = t.requests.get("rejected").copied().unwrap_or(0) as f64;
    assert!(rejected * 12.0 < th.rejections_per_hour, "{t}");
}

#[test]
fn steady_stays_quiet_at_high_and_low_rates() {
    let th = Thresholds::shipped();
    for rate in [2.0, 2_000.0] {
        let t = run(
            SimConfig {
                rate,
                ..SimConfig::default()
            },
            60,
        );
        assert!(
            (t.max_queue_depth as f64) < th.queue_depth,
            "rate {rate}: {t}"
        );
        assert!(
            t.max_worker_utilization < th.worker_utilization,
            "rate {rate}: {}",
            t.max_worker_utilization
        );
        assert!(t.max_gpu_temperature < th.gpu_celsius, "rate {rate}: {t}");
    }
}

#[test]
fn each_scenario_crosses_its_thresholds() {
    let th = Thresholds::shipped();
    let with = |scenario| {
        run(
            SimConfig {
                scenario,
                ..SimConfig::default()
            },
            60,
        )
    };
    let t = with(Scenario::ErrorSpike);
    assert!(share(&t, "error") > th.error_share, "HighErrorRate: {t}");
    assert!(
        t.max_model_error_share() > th.model_error_share,
        "ModelInferenceFailure: {t}"
    );
    let t = with(Scenario::GpuOverheat);
    assert!(
        t.max_gpu_temperature > th.gpu_celsius,
        "GPUOverheating: {t}"
    );
    let t = with(Scenario::GpuMemory);
    assert!(
        t.max_gpu_memory_share > th.gpu_memory_share,
        "GPUMemoryHigh: {}",
        t.max_gpu_memory_share
    );
    let t = with(Scenario::SafetySurge);
    assert!(
        t.requests["rejected"] as f64 > th.rejections_per_hour,
        "SafetyIncidentSurge: {t}"
    );
    assert!(
        t.incidents["critical"] as f64 > th.critical_incidents,
        "CriticalSafetyIncident: {t}"
    );
    let t = with(Scenario::QuotaExhaustion);
    assert!(
        t.max_quota_share > th.quota_share,
        "QuotaExceeded: {}",
        t.max_quota_share
    );
    assert!(
        t.requests["rate_limited"] as f64 / 60.0 > th.rate_limited_per_second,
        "RateLimitHitRate: {t}"
    );
    let t = with(Scenario::Overload);
    assert!(
        t.share_slower_than_2s() > 0.01,
        "HighLatency: {}",
        t.slower_than_2s
    );
    assert!(
        t.max_queue_depth as f64 > th.queue_depth,
        "HighQueueDepth: {t}"
    );
    assert!(
        t.max_worker_utilization > th.worker_utilization,
        "WorkerOverloaded"
    );
    let t = with(Scenario::BadInput);
    assert!(
        share(&t, "invalid") > th.invalid_share,
        "HighValidationFailureRate: {t}"
    );
    let t = with(Scenario::ServiceDown);
    assert_eq!(t.seconds_unhealthy, 60, "ServiceDown");
    assert!(
        t.max_model_error_share() < th.model_error_share,
        "no other alert: {t}"
    );
}
