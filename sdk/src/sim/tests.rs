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
    assert!(share(&t, "error") < 0.02, "{t}");
    assert!(share(&t, "invalid") < 0.01, "{t}");
    assert!(share(&t, "rate_limited") < 0.01, "{t}");
    assert_eq!(t.incidents.get("critical"), None, "{t}");
    assert!(t.max_gpu_temperature < 85.0, "{t}");
    assert!(t.queue_depth < 80, "{t}");
    // About 30 refusals an hour: a few in five minutes, far from 100.
    assert!(t.requests.get("rejected").copied().unwrap_or(0) < 15, "{t}");
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
    assert!(share(&t, "error") > 0.05, "{t}");
    let t = with(Scenario::GpuOverheat);
    assert!(t.max_gpu_temperature > 85.0, "{t}");
    let t = with(Scenario::SafetySurge);
    assert!(t.requests["rejected"] > 100, "{t}");
    assert!(t.incidents["critical"] > 0, "{t}");
    let t = with(Scenario::QuotaExhaustion);
    assert!(t.requests["rate_limited"] as f64 / 60.0 > 10.0, "{t}");
    let t = with(Scenario::Overload);
    assert!(t.queue_depth > 80, "{t}");
    let t = with(Scenario::BadInput);
    assert!(share(&t, "invalid") > 0.01, "{t}");
}
