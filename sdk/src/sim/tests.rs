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
    let t = run(SimConfig::default(), 300);
    assert!(share(&t, "error") < 0.05, "{t}");
    assert!(t.max_model_error_share() < 0.02, "{:?}", t.model_requests);
    assert!(
        t.share_slower_than_2s() < 0.01,
        "p99 under 2 s: {}",
        t.slower_than_2s
    );
    assert!(share(&t, "invalid") < 0.01, "{t}");
    assert!(share(&t, "rate_limited") < 0.01, "{t}");
    assert_eq!(t.incidents.get("critical"), None, "{t}");
    assert!(t.max_gpu_temperature < 85.0, "{t}");
    assert!(t.max_gpu_memory_share < 0.95, "{}", t.max_gpu_memory_share);
    assert!(t.max_queue_depth < 80, "{t}");
    assert!(
        t.max_worker_utilization < 0.95,
        "{}",
        t.max_worker_utilization
    );
    assert!(t.max_quota_share < 0.95, "{}", t.max_quota_share);
    assert_eq!(t.seconds_unhealthy, 0);
    // About 30 refusals an hour: a few in five minutes, far from 100.
    assert!(t.requests.get("rejected").copied().unwrap_or(0) < 15, "{t}");
}

#[test]
fn steady_stays_quiet_at_high_and_low_rates() {
    for rate in [2.0, 2_000.0] {
        let t = run(
            SimConfig {
                rate,
                ..SimConfig::default()
            },
            60,
        );
        assert!(t.max_queue_depth < 80, "rate {rate}: {t}");
        assert!(
            t.max_worker_utilization < 0.95,
            "rate {rate}: {}",
            t.max_worker_utilization
        );
        assert!(t.max_gpu_temperature < 85.0, "rate {rate}: {t}");
    }
}

#[test]
fn each_scenario_crosses_its_thresholds() {
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
    assert!(share(&t, "error") > 0.05, "HighErrorRate: {t}");
    assert!(
        t.max_model_error_share() > 0.02,
        "ModelInferenceFailure: {t}"
    );
    let t = with(Scenario::GpuOverheat);
    assert!(t.max_gpu_temperature > 85.0, "GPUOverheating: {t}");
    let t = with(Scenario::GpuMemory);
    assert!(
        t.max_gpu_memory_share > 0.95,
        "GPUMemoryHigh: {}",
        t.max_gpu_memory_share
    );
    let t = with(Scenario::SafetySurge);
    assert!(t.requests["rejected"] > 100, "SafetyIncidentSurge: {t}");
    assert!(t.incidents["critical"] > 0, "CriticalSafetyIncident: {t}");
    let t = with(Scenario::QuotaExhaustion);
    assert!(
        t.max_quota_share > 0.95,
        "QuotaExceeded: {}",
        t.max_quota_share
    );
    assert!(
        t.requests["rate_limited"] as f64 / 60.0 > 10.0,
        "RateLimitHitRate: {t}"
    );
    let t = with(Scenario::Overload);
    assert!(
        t.share_slower_than_2s() > 0.01,
        "HighLatency: {}",
        t.slower_than_2s
    );
    assert!(t.max_queue_depth > 80, "HighQueueDepth: {t}");
    assert!(t.max_worker_utilization > 0.95, "WorkerOverloaded");
    let t = with(Scenario::BadInput);
    assert!(
        share(&t, "invalid") > 0.01,
        "HighValidationFailureRate: {t}"
    );
    let t = with(Scenario::ServiceDown);
    assert_eq!(t.seconds_unhealthy, 60, "ServiceDown");
    assert!(t.max_model_error_share() < 0.02, "no other alert: {t}");
}
