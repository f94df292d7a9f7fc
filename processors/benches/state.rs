//! State cost of the stateful processors: 1 M distinct delta sum series (and, separately,
//! 200 k 12-bucket delta histogram series) through `deltatocumulative`, and 1 M cumulative
//! series through `cardinality_limit` with a limit of 1 M, and 1 M cumulative series through
//! `aggregate` (grouped into one series). Reports the resident memory the
//! state adds per series (RSS from `/proc/self/statm` before and after, input batches freed),
//! and the time per point of the first pass (inserting) and a second pass (updating). The
//! allocator is mimalloc, as in `vla-collector`. Not a criterion bench: one pass each.
//!
//! `cargo bench -p vla-processors --bench state`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use vla_pipeline::fixtures::{self, T0_NANOS};
use vla_pipeline::opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Histogram, HistogramDataPoint, Metric, NumberDataPoint, Sum, metric,
    number_data_point::Value,
};
use vla_pipeline::{MetricBatch, Processor};
use vla_processors::{aggregate, cardinality_limit, deltatocumulative};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 10_000;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Batch `b` of `BATCH` points, series `b*BATCH..`, for pass `pass`.
fn sums(b: usize, pass: u64, temporality: AggregationTemporality) -> MetricBatch {
    let points = (b * BATCH..(b + 1) * BATCH)
        .map(|i| NumberDataPoint {
            attributes: fixtures::attrs(&[
                ("customer_id", &format!("cust-{i:07}")),
                ("model", "pi0"),
                ("status", "success"),
            ]),
            start_time_unix_nano: T0_NANOS + pass * 10_000_000_000,
            time_unix_nano: T0_NANOS + (pass + 1) * 10_000_000_000,
            value: Some(Value::AsInt(3)),
            ..Default::default()
        })
        .collect();
    MetricBatch::new(
        "otlp".into(),
        vec![fixtures::resource(
            "vla-api",
            vec![Metric {
                name: "vla.customer.requests".to_owned(),
                data: Some(metric::Data::Sum(Sum {
                    data_points: points,
                    aggregation_temporality: temporality as i32,
                    is_monotonic: true,
                })),
                ..Default::default()
            }],
        )],
    )
}

fn hists(b: usize, pass: u64) -> MetricBatch {
    let bounds: Vec<f64> = (1..=11).map(|i| f64::from(i) * 0.1).collect();
    let points = (b * BATCH..(b + 1) * BATCH)
        .map(|i| HistogramDataPoint {
            attributes: fixtures::attrs(&[("customer_id", &format!("cust-{i:07}"))]),
            start_time_unix_nano: T0_NANOS + pass * 10_000_000_000,
            time_unix_nano: T0_NANOS + (pass + 1) * 10_000_000_000,
            count: 12,
            sum: Some(6.0),
            bucket_counts: vec![1; 12],
            explicit_bounds: bounds.clone(),
            ..Default::default()
        })
        .collect();
    MetricBatch::new(
        "otlp".into(),
        vec![fixtures::resource(
            "vla-api",
            vec![Metric {
                name: "vla.inference.duration".to_owned(),
                unit: "s".to_owned(),
                data: Some(metric::Data::Histogram(Histogram {
                    data_points: points,
                    aggregation_temporality: AggregationTemporality::Delta as i32,
                })),
                ..Default::default()
            }],
        )],
    )
}

/// Runs two passes of `batches` batches made by `make` through `p`; prints the state's bytes
/// per series and the time per point of each pass.
fn measure(
    what: &str,
    p: &mut dyn Processor,
    series: usize,
    make: &dyn Fn(usize, u64) -> MetricBatch,
) {
    let batches = series / BATCH;
    let base = rss_bytes();
    let mut timed = [Duration::ZERO; 2];
    for (pass, t) in timed.iter_mut().enumerate() {
        for b in 0..batches {
            let mut batch = make(b, pass as u64);
            let start = Instant::now();
            p.process(&mut batch);
            *t += start.elapsed();
            drop(batch);
        }
    }
    let grown = rss_bytes().saturating_sub(base);
    println!(
        "{what}: {series} series, state {:.0} B/series (RSS +{:.1} MiB); insert {:.0} ns/point, update {:.0} ns/point",
        grown as f64 / series as f64,
        grown as f64 / (1 << 20) as f64,
        timed[0].as_nanos() as f64 / series as f64,
        timed[1].as_nanos() as f64 / series as f64,
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs it small.
    let quick = !std::env::args().any(|a| a == "--bench");
    let n = if quick { 20_000 } else { 1_000_000 };
    // Each case runs in a fresh process: memory freed by one case stays resident (the
    // allocator keeps it) and would hide the next one's growth.
    let Ok(case) = std::env::var("VLA_STATE_CASE") else {
        let exe = std::env::current_exe().expect("own path");
        for case in ["sums", "histograms", "cardinality", "aggregate"] {
            let status = std::process::Command::new(&exe)
                .args(std::env::args().skip(1))
                .env("VLA_STATE_CASE", case)
                .status()
                .expect("run a case");
            assert!(status.success(), "case {case} failed");
        }
        return;
    };
    let config = deltatocumulative::Config {
        max_streams: usize::MAX,
        ..deltatocumulative::Config::default()
    };
    match case.as_str() {
        "sums" => {
            let mut d2c = deltatocumulative::DeltaToCumulative::new(&config);
            measure("deltatocumulative, delta sums", &mut d2c, n, &|b, pass| {
                sums(b, pass, AggregationTemporality::Delta)
            });
        }
        "histograms" => {
            let mut d2c = deltatocumulative::DeltaToCumulative::new(&config);
            measure(
                "deltatocumulative, 12-bucket delta histograms",
                &mut d2c,
                n / 5,
                &hists,
            );
        }
        "aggregate" => {
            let c: aggregate::Config = serde_saphyr::from_str(
                "rules:\n  - { metrics: [\"vla.customer.*\"], group_by: [model, status] }\n",
            )
            .expect("config");
            let mut agg = aggregate::Aggregate::new(&c).started_at(0);
            measure(
                "aggregate, cumulative sums by model and status",
                &mut agg,
                n,
                &|b, pass| sums(b, pass, AggregationTemporality::Cumulative),
            );
        }
        _ => {
            let limit: cardinality_limit::Config = serde_saphyr::from_str(&format!(
                "limits:\n  - {{ metrics: [\"vla.customer.*\"], max_series: {n} }}\n"
            ))
            .expect("config");
            let mut cl = cardinality_limit::CardinalityLimit::new(&limit);
            measure(
                "cardinality_limit, cumulative sums",
                &mut cl,
                n,
                &|b, pass| sums(b, pass, AggregationTemporality::Cumulative),
            );
        }
    }
}
