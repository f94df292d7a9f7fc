use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets as OtlpBuckets;
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogram, Gauge, Histogram, Sum, metric::Data,
};
use proptest::prelude::*;
use vla_pipeline::fixtures::{self, T0_NANOS};

use super::*;

const S: u64 = 1_000_000_000;

fn sum_point(start: u64, time: u64, v: Value, labels: &[(&str, &str)]) -> NumberDataPoint {
    NumberDataPoint {
        attributes: fixtures::attrs(labels),
        start_time_unix_nano: start,
        time_unix_nano: time,
        value: Some(v),
        ..Default::default()
    }
}

fn sum_metric(
    name: &str,
    temporality: AggregationTemporality,
    points: Vec<NumberDataPoint>,
) -> Metric {
    Metric {
        name: name.to_owned(),
        unit: "1".to_owned(),
        data: Some(Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: temporality as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

fn batch(metrics: Vec<Metric>) -> MetricBatch {
    MetricBatch::new("otlp".into(), vec![fixtures::resource("api", metrics)])
}

/// One delta sum point of `v` over `[start, time]` seconds after T0.
fn delta(start: u64, time: u64, v: i64, labels: &[(&str, &str)]) -> MetricBatch {
    batch(vec![sum_metric(
        "requests",
        AggregationTemporality::Delta,
        vec![sum_point(
            T0_NANOS + start * S,
            T0_NANOS + time * S,
            Value::AsInt(v),
            labels,
        )],
    )])
}

/// The sum points that came out: (start offset s, time offset s, value).
fn sums(b: &MetricBatch) -> Vec<(u64, u64, f64)> {
    let mut out = Vec::new();
    for m in b
        .resource_metrics()
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
    {
        if let Some(Data::Sum(s)) = &m.data {
            assert_eq!(
                s.aggregation_temporality,
                AggregationTemporality::Cumulative as i32
            );
            for p in &s.data_points {
                let v = match p.value {
                    Some(Value::AsInt(i)) => i as f64,
                    Some(Value::AsDouble(d)) => d,
                    None => f64::NAN,
                };
                out.push((
                    (p.start_time_unix_nano - T0_NANOS) / S,
                    (p.time_unix_nano - T0_NANOS) / S,
                    v,
                ));
            }
        }
    }
    out
}

fn processor() -> (DeltaToCumulative, SelfMetrics) {
    let t = SelfMetrics::new();
    let p = DeltaToCumulative::new(&Config::default()).with_telemetry(
        "deltatocumulative",
        "metrics",
        &t,
    );
    (p, t)
}

fn points_counted(t: &SelfMetrics, result: &str) -> i64 {
    t.value(
        "vla_collector_processor_deltatocumulative_data_points_total",
        &[("processor", "deltatocumulative"), ("result", result)],
    )
    .unwrap_or(0)
}

fn run(p: &mut DeltaToCumulative, mut b: MetricBatch) -> Vec<(u64, u64, f64)> {
    p.process(&mut b);
    sums(&b)
}

#[test]
fn deltas_become_a_running_total_that_keeps_its_first_start() {
    let (mut p, t) = processor();
    assert_eq!(
        run(&mut p, delta(0, 10, 5, &[("c", "a")])),
        vec![(0, 10, 5.0)]
    );
    assert_eq!(
        run(&mut p, delta(10, 20, 3, &[("c", "a")])),
        vec![(0, 20, 8.0)]
    );
    // Another label set is another stream.
    assert_eq!(
        run(&mut p, delta(10, 20, 1, &[("c", "b")])),
        vec![(10, 20, 1.0)]
    );
    // A gap (a client that restarted) continues the series.
    assert_eq!(
        run(&mut p, delta(60, 70, 2, &[("c", "a")])),
        vec![(0, 70, 10.0)]
    );
    assert_eq!(points_counted(&t, "accumulated"), 4);
    assert_eq!(p.streams(), 2);
}

#[test]
fn a_point_starting_before_the_last_one_is_dropped_and_counted() {
    let (mut p, t) = processor();
    run(&mut p, delta(0, 10, 5, &[]));
    run(&mut p, delta(10, 20, 5, &[]));
    // A retried (duplicate) export and an overlapping one.
    assert!(run(&mut p, delta(10, 20, 5, &[])).is_empty());
    assert!(run(&mut p, delta(15, 25, 1, &[])).is_empty());
    assert_eq!(run(&mut p, delta(20, 30, 1, &[])), vec![(0, 30, 11.0)]);
    assert_eq!(points_counted(&t, "out_of_order"), 2);
}

#[test]
fn points_without_a_start_time_must_move_forward() {
    let (mut p, t) = processor();
    let b = |time: u64, v| {
        batch(vec![sum_metric(
            "requests",
            AggregationTemporality::Delta,
            vec![sum_point(0, T0_NANOS + time * S, Value::AsInt(v), &[])],
        )])
    };
    let mut first = b(10, 1);
    p.process(&mut first);
    let start = first.resource_metrics()[0].scope_metrics[0].metrics[0].clone();
    let Some(Data::Sum(s)) = start.data else {
        panic!("not a sum")
    };
    assert_eq!(s.data_points[0].start_time_unix_nano, T0_NANOS + 10 * S);
    assert_eq!(run(&mut p, b(20, 2)), vec![(10, 20, 3.0)]);
    assert!(run(&mut p, b(20, 2)).is_empty());
    assert_eq!(points_counted(&t, "out_of_order"), 1);
}

#[test]
fn cumulative_and_gauge_points_pass_untouched() {
    let (mut p, _) = processor();
    let mut b = batch(vec![
        sum_metric(
            "total",
            AggregationTemporality::Cumulative,
            vec![sum_point(T0_NANOS, T0_NANOS + S, Value::AsInt(7), &[])],
        ),
        fixtures::gauge("temp", "Cel", &[(1.5, &[])]),
    ]);
    let before = b.clone();
    p.process(&mut b);
    assert_eq!(b.resource_metrics(), before.resource_metrics());
    assert_eq!(p.streams(), 0);
}

#[test]
fn past_max_streams_new_streams_are_dropped_and_existing_ones_keep_working() {
    let t = SelfMetrics::new();
    let config = Config {
        max_streams: 2,
        ..Config::default()
    };
    let mut p = DeltaToCumulative::new(&config).with_telemetry("deltatocumulative", "metrics", &t);
    run(&mut p, delta(0, 10, 1, &[("c", "a")]));
    run(&mut p, delta(0, 10, 1, &[("c", "b")]));
    assert!(run(&mut p, delta(0, 10, 1, &[("c", "c")])).is_empty());
    assert_eq!(
        run(&mut p, delta(10, 20, 1, &[("c", "a")])),
        vec![(0, 20, 2.0)]
    );
    assert_eq!(points_counted(&t, "stream_limit"), 1);
    assert_eq!(p.streams(), 2);
}

#[test]
fn a_stream_not_seen_for_max_stale_is_forgotten_and_starts_over() {
    let t = SelfMetrics::new();
    let config = Config {
        max_stale: Duration::from_secs(60),
        ..Config::default()
    };
    let mut p = DeltaToCumulative::new(&config).with_telemetry("deltatocumulative", "metrics", &t);
    let mut b = delta(0, 10, 4, &[]);
    p.process(&mut b);
    let received = b.meta().received_at;
    p.flush(received + Duration::from_secs(59));
    assert_eq!(p.streams(), 1, "still fresh");
    p.flush(received + Duration::from_secs(62));
    assert_eq!(p.streams(), 0);
    let expired = t.value(
        "vla_collector_processor_deltatocumulative_expired_streams_total",
        &[("processor", "deltatocumulative"), ("pipeline", "metrics")],
    );
    assert_eq!(expired, Some(1));
    assert_eq!(run(&mut p, delta(100, 110, 1, &[])), vec![(100, 110, 1.0)]);
}

#[test]
fn identity_ignores_attribute_order_but_not_resource_scope_or_metric() {
    let (mut p, _) = processor();
    run(&mut p, delta(0, 10, 1, &[("a", "1"), ("b", "2")]));
    assert_eq!(
        run(&mut p, delta(10, 20, 1, &[("b", "2"), ("a", "1")])),
        vec![(0, 20, 2.0)]
    );
    assert_eq!(p.streams(), 1);
    let mut other_resource = MetricBatch::new(
        "otlp".into(),
        vec![fixtures::resource(
            "other",
            vec![sum_metric(
                "requests",
                AggregationTemporality::Delta,
                vec![sum_point(
                    T0_NANOS + 20 * S,
                    T0_NANOS + 30 * S,
                    Value::AsInt(1),
                    &[("a", "1"), ("b", "2")],
                )],
            )],
        )],
    );
    p.process(&mut other_resource);
    assert_eq!(sums(&other_resource), vec![(20, 30, 1.0)]);
    run(
        &mut p,
        batch(vec![sum_metric(
            "other_metric",
            AggregationTemporality::Delta,
            vec![sum_point(
                T0_NANOS,
                T0_NANOS + S,
                Value::AsInt(1),
                &[("a", "1"), ("b", "2")],
            )],
        )]),
    );
    assert_eq!(p.streams(), 3);
}

#[test]
fn integers_overflow_into_doubles_and_mixed_types_add() {
    let (mut p, t) = processor();
    run(&mut p, delta(0, 10, i64::MAX, &[]));
    let out = run(&mut p, delta(10, 20, 10, &[]));
    assert_eq!(out, vec![(0, 20, i64::MAX as f64 + 10.0)]);
    let mut nan = batch(vec![sum_metric(
        "requests",
        AggregationTemporality::Delta,
        vec![sum_point(
            T0_NANOS + 20 * S,
            T0_NANOS + 30 * S,
            Value::AsDouble(f64::NAN),
            &[],
        )],
    )]);
    p.process(&mut nan);
    assert!(nan.is_empty(), "a NaN delta would poison the total");
    assert_eq!(points_counted(&t, "invalid"), 1);
}

#[test]
fn a_point_without_a_recorded_value_passes_and_leaves_the_total_alone() {
    let (mut p, t) = processor();
    run(&mut p, delta(0, 10, 3, &[]));
    let mut b = delta(10, 20, 0, &[]);
    if let Some(Data::Sum(s)) = &mut b.resource_metrics_mut()[0].scope_metrics[0].metrics[0].data {
        s.data_points[0].flags = NO_RECORDED_VALUE;
    }
    p.process(&mut b);
    assert_eq!(b.data_points(), 1);
    assert_eq!(points_counted(&t, "no_value"), 1);
    assert_eq!(run(&mut p, delta(10, 20, 1, &[])), vec![(0, 20, 4.0)]);
}

fn hist_batch(start: u64, time: u64, bounds: &[f64], counts: &[u64], sum: f64) -> MetricBatch {
    batch(vec![Metric {
        name: "latency".to_owned(),
        unit: "s".to_owned(),
        data: Some(Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                start_time_unix_nano: T0_NANOS + start * S,
                time_unix_nano: T0_NANOS + time * S,
                count: counts.iter().sum(),
                sum: Some(sum),
                min: Some(sum / 10.0),
                max: Some(sum),
                bucket_counts: counts.to_vec(),
                explicit_bounds: bounds.to_vec(),
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Delta as i32,
        })),
        ..Default::default()
    }])
}

fn hist_out(b: &MetricBatch) -> HistogramDataPoint {
    match &b.resource_metrics()[0].scope_metrics[0].metrics[0].data {
        Some(Data::Histogram(h)) => {
            assert_eq!(
                h.aggregation_temporality,
                AggregationTemporality::Cumulative as i32
            );
            h.data_points[0].clone()
        }
        other => panic!("not a histogram: {other:?}"),
    }
}

#[test]
fn histograms_add_bucket_by_bucket_and_new_bounds_start_over() {
    let (mut p, t) = processor();
    let mut b = hist_batch(0, 10, &[1.0, 5.0], &[1, 2, 3], 20.0);
    p.process(&mut b);
    let mut b = hist_batch(10, 20, &[1.0, 5.0], &[0, 1, 1], 8.0);
    p.process(&mut b);
    let h = hist_out(&b);
    assert_eq!(
        (h.count, h.sum, h.bucket_counts.clone()),
        (8, Some(28.0), vec![1, 3, 4])
    );
    assert_eq!((h.min, h.max), (Some(0.8), Some(20.0)));
    assert_eq!(h.start_time_unix_nano, T0_NANOS);
    let mut b = hist_batch(20, 30, &[1.0, 2.0, 5.0], &[1, 0, 0, 0], 0.5);
    p.process(&mut b);
    let h = hist_out(&b);
    assert_eq!((h.count, h.bucket_counts.clone()), (1, vec![1, 0, 0, 0]));
    assert_eq!(
        h.start_time_unix_nano,
        T0_NANOS + 20 * S,
        "a reset starts at the point"
    );
    assert_eq!(points_counted(&t, "layout_reset"), 1);
}

/// The index of `v` (> 0) at `scale` (bucket `i` holds (base^i, base^(i+1)]).
fn exp_index(v: f64, scale: i32) -> i64 {
    let base = 2f64.powf(2f64.powi(-scale));
    (v.ln() / base.ln()).ceil() as i64 - 1
}

/// An exponential histogram point of `values` (all > 0) at `scale`.
fn exp_point(start: u64, time: u64, scale: i32, values: &[f64]) -> ExponentialHistogramDataPoint {
    let idx: Vec<i64> = values.iter().map(|v| exp_index(*v, scale)).collect();
    let (lo, hi) = (
        idx.iter().copied().min().unwrap_or(0),
        idx.iter().copied().max().unwrap_or(-1),
    );
    let mut counts = vec![0u64; (hi - lo + 1).max(0) as usize];
    for i in &idx {
        counts[(i - lo) as usize] += 1;
    }
    ExponentialHistogramDataPoint {
        start_time_unix_nano: T0_NANOS + start * S,
        time_unix_nano: T0_NANOS + time * S,
        count: values.len() as u64,
        sum: Some(values.iter().sum()),
        scale,
        positive: Some(OtlpBuckets {
            offset: lo as i32,
            bucket_counts: counts,
        }),
        ..Default::default()
    }
}

fn exp_batch(p: ExponentialHistogramDataPoint) -> MetricBatch {
    batch(vec![Metric {
        name: "latency".to_owned(),
        data: Some(Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![p],
            aggregation_temporality: AggregationTemporality::Delta as i32,
        })),
        ..Default::default()
    }])
}

fn exp_out(b: &MetricBatch) -> ExponentialHistogramDataPoint {
    match &b.resource_metrics()[0].scope_metrics[0].metrics[0].data {
        Some(Data::ExponentialHistogram(h)) => h.data_points[0].clone(),
        other => panic!("not an exponential histogram: {other:?}"),
    }
}

/// Expands buckets into (index, count) pairs without zeros.
fn nonzero(b: &OtlpBuckets) -> Vec<(i64, u64)> {
    b.bucket_counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(i, c)| (i64::from(b.offset) + i as i64, *c))
        .collect()
}

proptest! {
    /// Merging exponential histograms of different scales equals bucketing every value at
    /// the merged scale directly (the naive reference).
    #[test]
    fn exponential_histograms_merge_like_bucketing_all_values_at_the_coarser_scale(
        deltas in proptest::collection::vec(
            (0i32..=6, proptest::collection::vec(0.001f64..1e6, 1..40)), 1..6)
    ) {
        let (mut p, _) = processor();
        let mut all = Vec::new();
        let mut last = None;
        let mut widest = state::MAX_EXP_BUCKETS;
        for (i, (scale, values)) in deltas.iter().enumerate() {
            let i = i as u64;
            all.extend_from_slice(values);
            let point = exp_point(i * 10, i * 10 + 10, *scale, values);
            widest = widest.max(point.positive.as_ref().map_or(0, |b| b.bucket_counts.len()));
            let mut b = exp_batch(point);
            p.process(&mut b);
            last = Some(exp_out(&b));
        }
        let out = last.expect("one delta at least");
        let reference = exp_point(0, 0, out.scale, &all);
        prop_assert!(out.scale <= deltas.iter().map(|d| d.0).min().unwrap_or(0));
        prop_assert_eq!(out.count, all.len() as u64);
        prop_assert_eq!(nonzero(out.positive.as_ref().expect("positive")), nonzero(reference.positive.as_ref().expect("positive")));
        prop_assert!(out.positive.as_ref().map_or(0, |b| b.bucket_counts.len()) <= widest);
    }

    /// Any sequence of deltas, in order or not, yields what a naive model computes: the sum
    /// of the accepted ones, where a point is accepted when it starts at or after the last
    /// accepted point's end.
    #[test]
    fn sums_match_a_naive_model(steps in proptest::collection::vec((0u64..50, 1u64..20, -100i64..100), 1..40)) {
        let (mut p, t) = processor();
        let (mut total, mut last, mut first, mut dropped) = (0i64, None::<u64>, None::<u64>, 0);
        for (start, len, v) in steps {
            let time = start + len;
            let out = run(&mut p, delta(start, time, v, &[]));
            let accept = last.is_none_or(|l| start >= l);
            if accept {
                total += v;
                last = Some(time);
                let first = *first.get_or_insert(start);
                prop_assert_eq!(out, vec![(first, time, total as f64)]);
            } else {
                dropped += 1;
                prop_assert!(out.is_empty());
            }
        }
        prop_assert_eq!(points_counted(&t, "out_of_order"), dropped);
    }
}

#[test]
fn exponential_histograms_with_another_zero_threshold_start_over() {
    let (mut p, t) = processor();
    let mut b = exp_batch(exp_point(0, 10, 3, &[1.0, 2.0]));
    p.process(&mut b);
    let mut point = exp_point(10, 20, 3, &[4.0]);
    point.zero_threshold = 0.5;
    let mut b = exp_batch(point);
    p.process(&mut b);
    assert_eq!(exp_out(&b).count, 1);
    assert_eq!(points_counted(&t, "layout_reset"), 1);
}

#[test]
fn exponential_histograms_too_wide_for_max_buckets_are_downscaled() {
    let (mut p, _) = processor();
    // At scale 6 the values 1 and 1e6 lie ~1300 buckets apart.
    let mut b = exp_batch(exp_point(0, 10, 6, &[1.0001]));
    p.process(&mut b);
    let mut b = exp_batch(exp_point(10, 20, 6, &[1e6]));
    p.process(&mut b);
    let out = exp_out(&b);
    let buckets = out.positive.as_ref().expect("positive");
    assert!(
        buckets.bucket_counts.len() <= state::MAX_EXP_BUCKETS,
        "{}",
        buckets.bucket_counts.len()
    );
    assert!(out.scale < 6);
    assert_eq!(nonzero(buckets).iter().map(|(_, c)| c).sum::<u64>(), 2);
}

#[test]
fn a_sum_stream_is_small() {
    // Key, three timestamps and a 16-byte total: what a hash-table slot holds.
    assert!(
        std::mem::size_of::<(Key, Stream)>() <= 64,
        "{}",
        std::mem::size_of::<(Key, Stream)>()
    );
}

#[test]
fn config_defaults_and_validation_name_each_field() {
    let c: Config = serde_json::from_value(serde_json::json!({})).expect("defaults");
    assert_eq!(c, Config::default());
    let bad: Config = serde_json::from_value(serde_json::json!({
        "max_stale": "0s", "max_streams": 0,
        "storage": { "directory": "", "snapshot_interval": "100ms" }
    }))
    .expect("parses");
    let paths: Vec<_> = bad
        .validate("processors.deltatocumulative")
        .into_iter()
        .map(|p| p.path)
        .collect();
    assert_eq!(
        paths,
        [
            "processors.deltatocumulative.max_stale",
            "processors.deltatocumulative.max_streams",
            "processors.deltatocumulative.storage.directory",
            "processors.deltatocumulative.storage.snapshot_interval",
        ]
    );
    let unknown = serde_json::from_value::<Config>(serde_json::json!({ "max_streamz": 1 }));
    assert!(unknown.is_err());
}

mod persistence {
    use super::*;

    fn stored(dir: &std::path::Path, interval: Duration) -> Config {
        Config {
            storage: Some(StorageConfig {
                directory: dir.to_owned(),
                snapshot_interval: interval,
            }),
            ..Config::default()
        }
    }

    fn open(config: &Config, t: &SelfMetrics) -> DeltaToCumulative {
        DeltaToCumulative::open(config, &"deltatocumulative".into(), "metrics", t).expect("opens")
    }

    fn journal(dir: &std::path::Path) -> std::path::PathBuf {
        dir.join("deltatocumulative.metrics.journal")
    }

    #[test]
    fn a_clean_stop_snapshots_and_the_next_start_continues_every_kind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = stored(dir.path(), Duration::from_secs(30));
        let t = SelfMetrics::new();
        {
            let mut p = open(&config, &t);
            run(&mut p, delta(0, 10, 5, &[("c", "a")]));
            p.process(&mut hist_batch(0, 10, &[1.0], &[1, 1], 3.0));
            p.process(&mut exp_batch(exp_point(0, 10, 4, &[1.5, 3.0])));
            p.shutdown();
        }
        let mut p = open(&config, &SelfMetrics::new());
        assert_eq!(p.streams(), 3);
        assert_eq!(
            run(&mut p, delta(10, 20, 1, &[("c", "a")])),
            vec![(0, 20, 6.0)]
        );
        let mut b = hist_batch(10, 20, &[1.0], &[0, 2], 5.0);
        p.process(&mut b);
        assert_eq!(hist_out(&b).bucket_counts, vec![1, 3]);
        let mut b = exp_batch(exp_point(10, 20, 4, &[1.5]));
        p.process(&mut b);
        assert_eq!(exp_out(&b).count, 3);
    }

    #[test]
    fn without_a_clean_stop_the_journal_replays_every_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = stored(dir.path(), Duration::from_secs(3600));
        {
            let mut p = open(&config, &SelfMetrics::new());
            for i in 0..5 {
                run(&mut p, delta(i * 10, i * 10 + 10, 2, &[]));
            }
            // Dropped without shutdown, as by kill -9: only the journal has the state.
            drop(p);
        }
        let mut p = open(&config, &SelfMetrics::new());
        assert_eq!(run(&mut p, delta(50, 60, 1, &[])), vec![(0, 60, 11.0)]);
    }

    #[test]
    fn a_torn_last_journal_record_is_skipped_and_the_rest_restored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = stored(dir.path(), Duration::from_secs(3600));
        {
            let mut p = open(&config, &SelfMetrics::new());
            run(&mut p, delta(0, 10, 2, &[]));
            run(&mut p, delta(10, 20, 3, &[]));
            drop(p);
        }
        let path = journal(dir.path());
        let len = std::fs::metadata(&path).expect("journal").len();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        f.set_len(len - 5).expect("cut");
        drop(f);
        let mut p = open(&config, &SelfMetrics::new());
        // The second batch was torn: the state is that of the first one.
        assert_eq!(run(&mut p, delta(10, 20, 3, &[])), vec![(0, 20, 5.0)]);
        assert!(std::fs::read_dir(dir.path()).expect("dir").all(|e| {
            !e.expect("entry")
                .file_name()
                .to_string_lossy()
                .ends_with(".corrupt")
        }));
    }

    #[test]
    fn a_corrupt_snapshot_is_quarantined_and_the_processor_starts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = stored(dir.path(), Duration::from_secs(30));
        {
            let mut p = open(&config, &SelfMetrics::new());
            run(&mut p, delta(0, 10, 2, &[]));
            p.shutdown();
        }
        let snap = dir.path().join("deltatocumulative.metrics.snapshot");
        let mut bytes = std::fs::read(&snap).expect("snapshot");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&snap, bytes).expect("write");
        let t = SelfMetrics::new();
        let mut p = open(&config, &t);
        assert_eq!(p.streams(), 0);
        assert!(
            dir.path()
                .join("deltatocumulative.metrics.snapshot.corrupt")
                .exists()
        );
        let corrupt = t.value(
            "vla_collector_processor_deltatocumulative_corrupt_files_total",
            &[("processor", "deltatocumulative"), ("pipeline", "metrics")],
        );
        assert_eq!(corrupt, Some(1));
        assert_eq!(run(&mut p, delta(10, 20, 1, &[])), vec![(10, 20, 1.0)]);
        drop(p);
        // And the next start is clean again.
        let p = open(&config, &SelfMetrics::new());
        assert_eq!(p.streams(), 1);
    }

    #[test]
    fn streams_older_than_max_stale_are_not_restored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = stored(dir.path(), Duration::from_secs(30));
        config.max_stale = Duration::from_secs(60);
        {
            let mut p = open(&config, &SelfMetrics::new());
            // Received two minutes ago.
            let mut old =
                delta(0, 10, 2, &[]).with_received_at(SystemTime::now() - Duration::from_secs(120));
            p.process(&mut old);
            run(&mut p, delta(0, 10, 2, &[("fresh", "yes")]));
            p.shutdown();
        }
        let p = open(&config, &SelfMetrics::new());
        assert_eq!(p.streams(), 1);
    }

    #[test]
    fn a_second_instance_on_the_same_files_is_refused_with_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = stored(dir.path(), Duration::from_secs(30));
        let _first = open(&config, &SelfMetrics::new());
        let err = DeltaToCumulative::open(
            &config,
            &"deltatocumulative".into(),
            "metrics",
            &SelfMetrics::new(),
        )
        .expect_err("locked");
        assert!(
            err.to_string()
                .contains("deltatocumulative.metrics.journal"),
            "{err}"
        );
        // Another pipeline has its own files.
        DeltaToCumulative::open(
            &config,
            &"deltatocumulative".into(),
            "metrics/b",
            &SelfMetrics::new(),
        )
        .expect("own files");
    }

    #[test]
    fn an_unusable_directory_fails_the_start_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").expect("write");
        let config = stored(&file, Duration::from_secs(30));
        let err = DeltaToCumulative::open(
            &config,
            &"deltatocumulative".into(),
            "metrics",
            &SelfMetrics::new(),
        )
        .expect_err("a file is not a directory");
        assert!(err.to_string().contains("not-a-dir"), "{err}");
    }

    /// What happens between two deltas of the property test below.
    #[derive(Debug, Clone, Copy)]
    enum Between {
        Nothing,
        CleanRestart,
        Kill,
    }

    fn between() -> impl Strategy<Value = Between> {
        prop_oneof![
            6 => Just(Between::Nothing),
            1 => Just(Between::CleanRestart),
            1 => Just(Between::Kill),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Random interleavings of in-order deltas, gaps, out-of-order points, two streams and
        /// restarts (clean, or a kill: no shutdown, only the journal) give what a naive model
        /// without restarts computes.
        #[test]
        fn restarts_anywhere_change_nothing(
            steps in proptest::collection::vec(
                (0u64..40, 1u64..10, -50i64..50, proptest::bool::ANY, between()), 1..30)
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let config = stored(dir.path(), Duration::from_secs(3600));
            let mut p = Some(open(&config, &SelfMetrics::new()));
            // Per stream: total, last end, first start.
            let mut model: [(i64, Option<u64>, Option<u64>); 2] = [(0, None, None); 2];
            for (start, len, v, second, then) in steps {
                let (label, m) = if second { ("b", &mut model[1]) } else { ("a", &mut model[0]) };
                let time = start + len;
                let out = run(p.as_mut().expect("open"), delta(start, time, v, &[("s", label)]));
                if m.1.is_none_or(|l| start >= l) {
                    m.0 += v;
                    m.1 = Some(time);
                    let first = *m.2.get_or_insert(start);
                    prop_assert_eq!(out, vec![(first, time, m.0 as f64)]);
                } else {
                    prop_assert!(out.is_empty());
                }
                match then {
                    Between::Nothing => {}
                    Between::CleanRestart => {
                        let mut old = p.take().expect("open");
                        old.shutdown();
                        drop(old);
                        p = Some(open(&config, &SelfMetrics::new()));
                    }
                    Between::Kill => {
                        drop(p.take());
                        p = Some(open(&config, &SelfMetrics::new()));
                    }
                }
            }
        }
    }

    #[test]
    fn records_round_trip_through_the_codec() {
        let s = Stream {
            start: 1,
            last: 2,
            seen: 3,
            acc: Acc::Exp(Box::new(state::Exp {
                count: 4,
                sum: Some(1.5),
                min: None,
                max: Some(9.0),
                scale: -2,
                zero_count: 1,
                zero_threshold: 0.001,
                positive: state::Buckets {
                    offset: -3,
                    counts: vec![1, 2],
                },
                negative: state::Buckets::default(),
            })),
        };
        let mut buf = Vec::new();
        storage::encode(&mut buf, 42, &s);
        let mut r = storage::Reader(&buf);
        assert_eq!(storage::decode(&mut r), Some((42, s)));
        assert!(r.0.is_empty());
        // Every truncation is detected, never a panic.
        for cut in 0..buf.len() {
            assert_eq!(
                storage::decode(&mut storage::Reader(&buf[..cut])),
                None,
                "cut at {cut}"
            );
        }
    }
}

#[test]
fn gauges_in_the_same_batch_are_kept_beside_converted_sums() {
    let (mut p, _) = processor();
    let mut b = batch(vec![
        fixtures::gauge("temp", "Cel", &[(1.0, &[])]),
        sum_metric(
            "requests",
            AggregationTemporality::Delta,
            vec![sum_point(T0_NANOS, T0_NANOS + S, Value::AsInt(1), &[])],
        ),
    ]);
    p.process(&mut b);
    assert_eq!(b.data_points(), 2);
    let m = &b.resource_metrics()[0].scope_metrics[0].metrics;
    assert!(matches!(m[0].data, Some(Data::Gauge(Gauge { .. }))));
}
