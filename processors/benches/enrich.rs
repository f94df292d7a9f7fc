//! The enrichment processors on a 1000-point batch shaped like the API's export: 600 points of
//! per-customer request counters (`customer_id` among 10 000 customers in the table), 200
//! points of per-customer latency histograms, 140 safety-incident points and 60 request-latency
//! points of a worker pinned to a GPU (`gpu_id` on the resource). Throughput is in data points;
//! each iteration processes a fresh copy of the batch (the copy is not timed). The allocator is
//! mimalloc, as in `vla-collector`: inserting a label allocates its key and value strings.
//!
//! `cargo bench -p vla-processors --bench enrich`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::SystemTime;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use vla_pipeline::gpu::{GpuReading, GpuSnapshot, GpuSnapshots};
use vla_pipeline::{MetricBatch, Processor, SelfMetrics, fixtures};
use vla_processors::{customer_tier, gpu_stats, safety_labels};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const VIOLATIONS: [&str; 7] = [
    "collision_risk",
    "workspace_boundary",
    "force_limit",
    "speed_limit",
    "human_proximity",
    "restricted_object",
    "harmful_instruction",
];
const SEVERITIES: [&str; 4] = ["low", "medium", "high", "critical"];

fn owned(n: usize, f: impl Fn(usize) -> Vec<(String, String)>) -> Vec<Vec<(String, String)>> {
    (0..n).map(f).collect()
}

fn points(labels: &[Vec<(String, String)>]) -> Vec<Vec<(&str, &str)>> {
    labels
        .iter()
        .map(|l| l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect())
        .collect()
}

fn api_batch() -> MetricBatch {
    let customers = owned(600, |i| {
        vec![
            (
                "customer_id".into(),
                format!("cust-{:05}", (i * 7919) % 12_000),
            ),
            ("instruction_category".into(), "pick_place".into()),
            ("robot_type".into(), "franka".into()),
            ("status".into(), "success".into()),
        ]
    });
    let customers = points(&customers);
    let sum_points: Vec<(f64, &[(&str, &str)])> =
        customers.iter().map(|l| (3.0, l.as_slice())).collect();
    let requests =
        fixtures::cumulative_sum("vla.customer.requests", "{request}", true, &sum_points);

    let latency_ids = owned(200, |i| {
        vec![("customer_id".into(), format!("cust-{:05}", i * 13))]
    });
    let latency_ids = points(&latency_ids);
    let bounds = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0];
    let counts = [1, 2, 3, 4, 5, 6, 7, 8];
    let mut latency = fixtures::histogram(
        "vla.customer.inference.duration",
        "s",
        &bounds,
        &counts,
        12.0,
        &[],
    );
    if let Some(vla_pipeline::opentelemetry_proto::tonic::metrics::v1::metric::Data::Histogram(h)) =
        &mut latency.data
    {
        let template = h.data_points[0].clone();
        h.data_points = latency_ids
            .iter()
            .map(|l| {
                let mut p = template.clone();
                p.attributes = fixtures::attrs(l);
                p
            })
            .collect();
    }

    let incidents = owned(140, |i| {
        vec![
            ("severity".into(), SEVERITIES[i % 4].into()),
            ("violation_type".into(), VIOLATIONS[(i / 4) % 7].into()),
            ("job_shard".into(), (i / 28).to_string()),
        ]
    });
    let incidents = points(&incidents);
    let incident_points: Vec<(f64, &[(&str, &str)])> =
        incidents.iter().map(|l| (1.0, l.as_slice())).collect();
    let safety =
        fixtures::cumulative_sum("vla.safety.incidents", "{incident}", true, &incident_points);

    let models = owned(60, |i| {
        vec![
            ("model".into(), format!("model-{}", i % 5)),
            ("robot_type".into(), format!("robot-{}", i / 5)),
        ]
    });
    let models = points(&models);
    let model_points: Vec<(f64, &[(&str, &str)])> =
        models.iter().map(|l| (0.2, l.as_slice())).collect();
    let worker = fixtures::gauge("vla.inference.duration.last", "s", &model_points);

    MetricBatch::new(
        "otlp".into(),
        vec![
            fixtures::resource_with(
                &[
                    ("service.name", "vla-api"),
                    ("service.instance.id", "api-1"),
                ],
                vec![requests, latency, safety],
            ),
            fixtures::resource_with(
                &[("service.name", "vla-api"), ("gpu_id", "1")],
                vec![worker],
            ),
        ],
    )
}

fn tier() -> Box<dyn Processor> {
    let table: serde_json::Map<String, serde_json::Value> = (0..10_000)
        .map(|i| {
            let tier = ["free", "starter", "pro", "enterprise"][i % 4];
            (
                format!("cust-{i:05}"),
                json!({ "tier": tier, "plan": "annual" }),
            )
        })
        .collect();
    let config: customer_tier::Config = serde_json::from_value(json!({
        "source": { "inline": table },
        "attributes": { "plan": "customer_plan" },
    }))
    .unwrap();
    customer_tier::CustomerTier::new("customer_tier".into(), &config, &SelfMetrics::new())
        .unwrap()
        .processor()
}

/// The two safety_labels instances of configs/collector.yaml, in pipeline order.
fn safety() -> Vec<Box<dyn Processor>> {
    let text = include_str!("../../configs/collector.yaml");
    let doc: serde_json::Value = serde_saphyr::from_str(text).unwrap();
    ["safety_labels/category", "safety_labels/severity"]
        .iter()
        .map(|id| {
            let config: safety_labels::Config =
                serde_json::from_value(doc["processors"][id].clone()).unwrap();
            Box::new(safety_labels::SafetyLabels::new(&config)) as Box<dyn Processor>
        })
        .collect()
}

fn gpus() -> Box<dyn Processor> {
    let hub = GpuSnapshots::new();
    hub.publish(GpuSnapshot {
        gpus: (0..8)
            .map(|index| GpuReading {
                index,
                uuid: format!("GPU-{index:08}"),
                model: "NVIDIA H100 80GB HBM3".into(),
                utilization_percent: Some(60.0),
                temperature_celsius: Some(70.0),
                ..GpuReading::default()
            })
            .collect(),
        taken_at: Some(SystemTime::now()),
    });
    let config: gpu_stats::Config = serde_json::from_value(json!({
        "metrics": ["vla.inference.*", "vla.customer.*"],
        "utilization_buckets": [50, 80],
    }))
    .unwrap();
    Box::new(gpu_stats::GpuStats::new(&config, hub))
}

/// Visits every point and reads one attribute: the floor any processor pays on a fresh batch.
struct Visit(usize);

impl Processor for Visit {
    fn process(&mut self, batch: &mut MetricBatch) {
        batch.for_each_point_mut(|_, attrs| {
            self.0 += vla_pipeline::attr_str(attrs, "customer_id").map_or(0, str::len);
        });
    }
}

fn bench(c: &mut Criterion) {
    let batch = api_batch();
    let mut group = c.benchmark_group("enrich");
    group.throughput(Throughput::Elements(batch.data_points() as u64));
    let cases: Vec<(&str, Vec<Box<dyn Processor>>)> = vec![
        ("visit_only", vec![Box::new(Visit(0))]),
        ("customer_tier", vec![tier()]),
        ("safety_labels", safety()),
        ("gpu_stats", vec![gpus()]),
        (
            "all_three",
            [vec![tier()], safety(), vec![gpus()]]
                .into_iter()
                .flatten()
                .collect(),
        ),
    ];
    for (name, mut processors) in cases {
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || batch.clone(),
                |batch| {
                    for p in processors.iter_mut() {
                        p.process(batch);
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
