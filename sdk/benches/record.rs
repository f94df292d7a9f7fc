//! What recording costs the API: one `record_inference` (request counters fleet-wide and per
//! customer, two latency histograms), and one simulated second of the default fleet. The
//! reader exports once an hour, so this is the in-memory aggregation the API pays on its
//! request path (with export disabled every instrument is a no-op and there is nothing to
//! measure).
//!
//! `cargo bench -p vla-sdk --bench record`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vla_sdk::sim::{SimConfig, Simulation};
use vla_sdk::{
    CustomerId, Inference, InstructionCategory, ModelName, Outcome, RobotType, Telemetry, Tier,
};

fn record(c: &mut Criterion) {
    // Port 9 (discard) on loopback: nothing answers; the hour-long interval never comes.
    let t = Telemetry::builder()
        .endpoint("http://127.0.0.1:9")
        .export_interval(Duration::from_secs(3600))
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let models: Vec<ModelName> = ["pi0", "openvla-7b", "octo-base", "rt-2-x"]
        .iter()
        .map(|m| ModelName::new(m).unwrap())
        .collect();
    let robot = RobotType::new("franka-panda").unwrap();
    let customers: Vec<CustomerId> = (0..100)
        .map(|i| CustomerId::new(&format!("cust-{i:04}")).unwrap())
        .collect();
    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("record_inference", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            t.record_inference(&Inference {
                model: &models[i % models.len()],
                robot_type: &robot,
                tier: Tier::ALL[i % Tier::ALL.len()],
                customer: &customers[i % customers.len()],
                instruction_category: InstructionCategory::PickPlace,
                outcome: Outcome::Success,
                duration: Duration::from_millis(120),
            });
        })
    });
    g.finish();
    let mut g = c.benchmark_group("simulate");
    g.throughput(Throughput::Elements(50));
    let mut sim = Simulation::new(SimConfig::default());
    g.bench_function("one_second_at_50_rps", |b| b.iter(|| sim.step(&t)));
    g.finish();
}

criterion_group!(benches, record);
criterion_main!(benches);
