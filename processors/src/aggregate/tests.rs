#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use vla_pipeline::fixtures::{self, T0_NANOS};

use super::*;

const S: u64 = 1_000_000_000;

fn config(yaml: &str) -> Config {
    serde_saphyr::from_str(yaml).unwrap()
}

fn tiers() -> Config {
    config("interval: 1m\nrules:\n  - { metrics: [\"vla.customer.requests\"], group_by: [tier] }\n")
}

/// A cumulative counter batch: (customer, tier, start s, value).
fn counters(points: &[(&str, &str, u64, f64)]) -> MetricBatch {
    let data_points = points
        .iter()
        .map(|(c, tier, start, v)| NumberDataPoint {
            attributes: fixtures::attrs(&[("customer_id", c), ("tier", tier)]),
            start_time_unix_nano: T0_NANOS + start * S,
            time_unix_nano: T0_NANOS + 100 * S,
            value: Some(Value::AsDouble(*v)),
            ..Default::default()
        })
        .collect();
    MetricBatch::new(
        "otlp".into(),
        vec![fixtures::resource(
            "vla-api",
            vec![
                Metric {
                    name: "vla.customer.requests".to_owned(),
                    data: Some(metric::Data::Sum(Sum {
                        data_points,
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                },
                fixtures::gauge("vla.other", "", &[(1.0, &[])]),
            ],
        )],
    )
}

/// (metric name, group attribute values joined, value) of every number point.
fn numbers(b: &MetricBatch) -> Vec<(String, String, f64)> {
    let mut out = Vec::new();
    for m in b
        .resource_metrics()
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
    {
        let points = match &m.data {
            Some(metric::Data::Sum(s)) => &s.data_points,
            Some(metric::Data::Gauge(g)) => &g.data_points,
            _ => continue,
        };
        for p in points {
            let attrs: Vec<String> = p
                .attributes
                .iter()
                .map(|kv| {
                    format!(
                        "{}={}",
                        kv.key,
                        vla_pipeline::attr_str(std::slice::from_ref(kv), &kv.key).unwrap_or("?")
                    )
                })
                .collect();
            out.push((
                m.name.clone(),
                attrs.join(","),
                number(p).unwrap_or(f64::NAN),
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    out
}

#[test]
fn counters_roll_up_by_tier_monotonic_across_resets_and_series_that_come_and_go() {
    let t = SelfMetrics::new();
    let mut p = Aggregate::new(&tiers())
        .started_at(T0_NANOS)
        .with_telemetry("aggregate", "metrics", &t);
    let mut b = counters(&[
        ("a", "pro", 0, 10.0),
        ("b", "pro", 0, 5.0),
        ("c", "free", 0, 1.0),
    ]);
    p.process(&mut b);
    // The input is dropped; other metrics pass.
    assert_eq!(numbers(&b), vec![("vla.other".into(), String::new(), 1.0)]);
    let out = p.flush(SystemTime::now()).unwrap();
    assert_eq!(
        numbers(&out),
        vec![
            ("vla.customer.requests".into(), "tier=free".into(), 1.0),
            ("vla.customer.requests".into(), "tier=pro".into(), 15.0),
        ]
    );
    // a grows by 2, b resets to 3 (an API restart), b stops, d appears with 4.
    p.process(&mut counters(&[
        ("a", "pro", 0, 12.0),
        ("b", "pro", 50, 3.0),
        ("d", "pro", 60, 4.0),
    ]));
    // b is gone next interval: pro keeps its total.
    let out = p.flush(SystemTime::now()).unwrap();
    assert_eq!(
        numbers(&out)[1],
        ("vla.customer.requests".into(), "tier=pro".into(), 24.0)
    );
    p.process(&mut counters(&[("a", "pro", 0, 13.0)]));
    let out = p.flush(SystemTime::now()).unwrap();
    assert_eq!(numbers(&out)[1].2, 25.0);
    let groups = t.value(
        "vla_collector_processor_aggregate_groups",
        &[("processor", "aggregate"), ("pipeline", "metrics")],
    );
    assert_eq!(groups, Some(2));
}

#[test]
fn series_running_before_the_collector_started_are_a_baseline() {
    let mut p = Aggregate::new(&tiers()).started_at(T0_NANOS + 10 * S);
    p.process(&mut counters(&[("a", "pro", 0, 1000.0)]));
    assert_eq!(numbers(&p.flush(SystemTime::now()).unwrap())[0].2, 0.0);
    p.process(&mut counters(&[("a", "pro", 0, 1003.0)]));
    assert_eq!(numbers(&p.flush(SystemTime::now()).unwrap())[0].2, 3.0);
}

#[test]
fn gauges_emit_the_chosen_statistics_per_interval_and_keep_input_keeps_the_points() {
    let c = config(
        "keep_input: true\nrules:\n  - { metrics: [\"vla.queue.depth\"], without: [worker], outputs: [last, min, max, avg, sum, count] }\n",
    );
    let mut p = Aggregate::new(&c);
    let mut b = MetricBatch::new(
        "otlp".into(),
        vec![fixtures::resource(
            "vla-api",
            vec![fixtures::gauge(
                "vla.queue.depth",
                "1",
                &[
                    (2.0, &[("worker", "w1"), ("pool", "a")]),
                    (6.0, &[("worker", "w2"), ("pool", "a")]),
                ],
            )],
        )],
    );
    p.process(&mut b);
    assert_eq!(b.data_points(), 2, "keep_input");
    let out = numbers(&p.flush(SystemTime::now()).unwrap());
    let got: Vec<(&str, f64)> = out.iter().map(|(n, _, v)| (n.as_str(), *v)).collect();
    assert_eq!(
        got,
        vec![
            ("vla.queue.depth", 6.0),
            ("vla.queue.depth.avg", 4.0),
            ("vla.queue.depth.count", 2.0),
            ("vla.queue.depth.max", 6.0),
            ("vla.queue.depth.min", 2.0),
            ("vla.queue.depth.sum", 8.0),
        ]
    );
    assert!(out.iter().all(|(_, g, _)| g == "pool=a"));
    // No point in the next interval: nothing is emitted for the gauge.
    assert!(p.flush(SystemTime::now()).is_none());
}

#[test]
fn histograms_merge_bucket_increases_and_other_bounds_are_counted() {
    let t = SelfMetrics::new();
    let c = config("rules:\n  - { metrics: [\"vla.latency\"], group_by: [] }\n");
    let mut p = Aggregate::new(&c)
        .started_at(0)
        .with_telemetry("aggregate", "metrics", &t);
    let mut hist = |id: &str, counts: &[u64], bounds: &[f64]| {
        let mut m = fixtures::histogram(
            "vla.latency",
            "s",
            bounds,
            counts,
            1.0,
            &[("customer_id", id)],
        );
        if let Some(metric::Data::Histogram(h)) = &mut m.data {
            h.data_points[0].start_time_unix_nano = T0_NANOS;
        }
        p.process(&mut MetricBatch::new(
            "otlp".into(),
            vec![fixtures::resource("api", vec![m])],
        ));
    };
    hist("a", &[1, 2], &[1.0]);
    hist("b", &[3, 0], &[1.0]);
    hist("a", &[2, 2], &[1.0]);
    hist("c", &[1, 1, 1], &[1.0, 2.0]);
    let out = p.flush(SystemTime::now()).unwrap();
    let m = &out.resource_metrics()[0].scope_metrics[0].metrics[0];
    let Some(metric::Data::Histogram(h)) = &m.data else {
        panic!("histogram")
    };
    let pt = &h.data_points[0];
    assert_eq!(
        (pt.count, pt.bucket_counts.clone(), pt.attributes.len()),
        (7, vec![5, 2], 0)
    );
    let mismatch = t.value(
        "vla_collector_processor_aggregate_data_points_total",
        &[("processor", "aggregate"), ("result", "bounds_mismatch")],
    );
    assert_eq!(mismatch, Some(1));
}

#[test]
fn validation_names_each_field() {
    let c = config(
        "interval: 0s\nrules:\n  - { metrics: [\"bad name!\"], group_by: [a], without: [b], outputs: [] }\n  - { metrics: [x] }\n",
    );
    let paths: Vec<String> = c
        .validate("processors.aggregate")
        .into_iter()
        .map(|p| p.path)
        .collect();
    assert_eq!(
        paths,
        [
            "processors.aggregate.interval",
            "processors.aggregate.rules[0].metrics[0]",
            "processors.aggregate.rules[0]",
            "processors.aggregate.rules[0].outputs",
            "processors.aggregate.rules[1]",
        ]
    );
    let example = config(<Aggregate as vla_pipeline::registry::Component>::EXAMPLE);
    assert!(example.validate("p").is_empty());
}

proptest! {
    /// Random counter series (with resets, in any interleaving, some born after the start,
    /// some before it) rolled up by tier give, at every flush, the sum of each member's
    /// increases computed naively from its own history.
    #[test]
    fn counter_totals_match_a_naive_reference(
        series in proptest::collection::vec(
            (0usize..2, proptest::bool::ANY, proptest::collection::vec((0u32..20, proptest::bool::ANY), 1..8)),
            1..6),
        order_seed in 0u64..1000,
    ) {
        let started = T0_NANOS + 10 * S;
        let mut p = Aggregate::new(&tiers()).started_at(started);
        // Each series: tier, born after the start or not, then steps (increment, reset).
        let mut histories: Vec<Vec<(f64, u64)>> = Vec::new();
        for (_, born_after, steps) in &series {
            let mut start = if *born_after { 20 } else { 0 };
            let mut v = 0.0;
            let mut h = Vec::new();
            for (inc, reset) in steps {
                if *reset {
                    start += 100;
                    v = 0.0;
                }
                v += f64::from(*inc);
                h.push((v, start));
            }
            histories.push(h);
        }
        // Naive: per series, sum of increases (resets restart from the new value).
        let mut want = [0.0f64; 2];
        for (i, (tier, _, _)) in series.iter().enumerate() {
            let mut prev: Option<(f64, u64)> = None;
            for (v, start) in &histories[i] {
                let inc = match prev {
                    // Started after the processor (a series born later, or reset before its
                    // first point arrived): all of it is new.
                    None if T0_NANOS + start * S >= started => *v,
                    None => 0.0,
                    Some((pv, ps)) if *v < pv || *start > ps => *v,
                    Some((pv, _)) => v - pv,
                };
                want[*tier] += inc;
                prev = Some((*v, *start));
            }
        }
        // Interleave: repeatedly pick a series with points left (deterministic pseudo-random).
        let mut next = vec![0usize; histories.len()];
        let mut x = order_seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let tiers = ["free", "pro"];
        loop {
            let open: Vec<usize> = (0..histories.len()).filter(|i| next[*i] < histories[*i].len()).collect();
            if open.is_empty() { break; }
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let i = open[(x >> 33) as usize % open.len()];
            let (v, start) = histories[i][next[i]];
            next[i] += 1;
            let id = format!("c{i}");
            p.process(&mut counters(&[(&id, tiers[series[i].0], start, v)]));
        }
        let out = p.flush(SystemTime::now()).expect("groups");
        for (_, group, v) in numbers(&out) {
            let tier = if group == "tier=free" { 0 } else { 1 };
            prop_assert!((v - want[tier]).abs() < 1e-9, "{group}: {v} vs {}", want[tier]);
        }
    }
}

/// `counters`' metric under a resource with these attributes.
fn counters_from(resource: &[(&str, &str)], points: &[(&str, &str, u64, f64)]) -> MetricBatch {
    let mut rms = counters(points).into_resource_metrics();
    rms[0].resource = fixtures::resource_with(resource, Vec::new()).resource;
    MetricBatch::new("otlp".into(), rms)
}

/// (resource attributes, group attributes, value) of every output point.
fn by_resource(b: &MetricBatch) -> Vec<(String, String, f64)> {
    let mut out: Vec<(String, String, f64)> = b
        .resource_metrics()
        .iter()
        .flat_map(|rm| {
            let res: Vec<String> = rm
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .map(|kv| {
                    format!(
                        "{}={}",
                        kv.key,
                        vla_pipeline::attr_str(std::slice::from_ref(kv), &kv.key).unwrap_or("?")
                    )
                })
                .collect();
            let one = MetricBatch::new("x".into(), vec![rm.clone()]);
            numbers(&one)
                .into_iter()
                .map(move |(_, attrs, v)| (res.join(","), attrs, v))
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    out
}

#[test]
fn resource_attributes_roll_instances_up_together_each_input_read_on_its_own() {
    let yaml = "interval: 1m\nresource_attributes: [service.name]\nrules:\n  - { metrics: [\"vla.customer.requests\"], group_by: [tier] }\n";
    let mut p = Aggregate::new(&config(yaml)).started_at(T0_NANOS);
    let a = [("service.name", "vla-api"), ("service.instance.id", "a")];
    let b = [("service.name", "vla-api"), ("service.instance.id", "b")];
    let other = [("service.name", "billing"), ("service.instance.id", "a")];
    p.process(&mut counters_from(&a, &[("c1", "pro", 0, 10.0)]));
    p.process(&mut counters_from(&b, &[("c1", "pro", 0, 5.0)]));
    p.process(&mut counters_from(&other, &[("c9", "pro", 0, 1.0)]));
    let out = p.flush(SystemTime::now()).unwrap();
    assert_eq!(
        by_resource(&out),
        vec![
            ("service.name=billing".into(), "tier=pro".into(), 1.0),
            ("service.name=vla-api".into(), "tier=pro".into(), 15.0),
        ],
        "one series per service, the instance id gone"
    );
    // Instance b restarts (its counter resets to 2) while a grows by 3: the same customer id
    // on two instances stays two inputs, so the reset is read on b alone.
    p.process(&mut counters_from(&a, &[("c1", "pro", 0, 13.0)]));
    p.process(&mut counters_from(&b, &[("c1", "pro", 50, 2.0)]));
    let out = p.flush(SystemTime::now()).unwrap();
    assert_eq!(
        by_resource(&out)[1],
        ("service.name=vla-api".into(), "tier=pro".into(), 20.0)
    );

    // Without the setting, each instance is its own resource.
    let mut per = Aggregate::new(&tiers()).started_at(T0_NANOS);
    per.process(&mut counters_from(&a, &[("c1", "pro", 0, 10.0)]));
    per.process(&mut counters_from(&b, &[("c1", "pro", 0, 5.0)]));
    let out = per.flush(SystemTime::now()).unwrap();
    assert_eq!(
        by_resource(&out),
        vec![
            (
                "service.name=vla-api,service.instance.id=a".into(),
                "tier=pro".into(),
                10.0
            ),
            (
                "service.name=vla-api,service.instance.id=b".into(),
                "tier=pro".into(),
                5.0
            ),
        ]
    );
}
