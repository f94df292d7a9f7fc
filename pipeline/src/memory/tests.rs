use std::time::Duration;

use tokio::sync::mpsc;

use super::*;
use crate::{MetricBatch, PipelineSender, SendError, fixtures};

fn limiter(limit: u64, spike: u64, mode: LimitMode, t: &SelfMetrics) -> Arc<MemoryLimiter> {
    MemoryLimiter::new(
        "memory_limiter".into(),
        Limits {
            limit_bytes: limit,
            spike_limit_bytes: spike,
            mode,
        },
        t,
    )
}

fn batch(points: usize) -> MetricBatch {
    let vals: Vec<(f64, &[(&str, &str)])> = (0..points)
        .map(|i| (i as f64, &[("customer_id", "c-1")][..]))
        .collect();
    MetricBatch::new(
        "otlp".into(),
        vec![fixtures::resource(
            "svc",
            vec![fixtures::gauge("g", "", &vals)],
        )],
    )
}

#[test]
fn admits_up_to_the_soft_limit_and_gives_bytes_back_on_drop() {
    let t = SelfMetrics::new();
    let l = limiter(1000, 400, LimitMode::Refuse, &t);
    assert_eq!(l.limits().soft_limit(), 600);
    let a = l.try_reserve(500).expect("empty limiter admits");
    assert!(l.try_reserve(101).is_none(), "500 + 101 > 600");
    let b = l.try_reserve(100).expect("500 + 100 = 600 fits");
    assert_eq!(l.used(), 600);
    assert!(l.refusing(), "at the soft limit");
    drop(a);
    assert_eq!(l.used(), 100);
    // The typical batch is now about 440 B: 100 + 440 fits under 600.
    assert!(!l.refusing());
    drop(b);
    assert_eq!((l.used(), l.peak()), (0, 600));
}

#[test]
fn it_refuses_before_decoding_once_a_typical_batch_would_not_fit() {
    let t = SelfMetrics::new();
    let l = limiter(1000, 0, LimitMode::Refuse, &t);
    assert!(!l.refusing(), "empty: never");
    let a = l.try_reserve(400).expect("fits");
    assert!(!l.refusing(), "400 + a typical 400 fits under 1000");
    let b = l.try_reserve(400).expect("fits");
    assert!(l.refusing(), "800 + 400 would not");
    assert!(
        l.try_reserve(200).is_some(),
        "a small batch still fits if it gets that far"
    );
    drop((a, b));
    let d = limiter(1000, 0, LimitMode::Drop, &t);
    let _held = d.force(999);
    assert!(!d.refusing(), "drop mode never refuses");
}

#[test]
fn a_lone_batch_over_the_soft_limit_is_admitted_so_it_cannot_be_refused_forever() {
    let t = SelfMetrics::new();
    let l = limiter(1000, 400, LimitMode::Refuse, &t);
    let big = l.try_reserve(5000).expect("alone, it goes through");
    assert!(l.try_reserve(1).is_none(), "nothing else until it is gone");
    drop(big);
    assert!(l.try_reserve(1).is_some());
}

#[test]
fn forced_bytes_count_and_delay_admission() {
    let t = SelfMetrics::new();
    let l = limiter(1000, 400, LimitMode::Refuse, &t);
    let forced = l.force(900);
    assert_eq!(l.used(), 900);
    assert!(l.try_reserve(1).is_none());
    drop(forced);
    assert_eq!(l.used(), 0);
}

#[test]
fn batches_carry_their_reservation_through_append_and_clone() {
    let t = SelfMetrics::new();
    let l = limiter(1 << 20, 0, LimitMode::Refuse, &t);
    let mut a = batch(3);
    a.hold(l.try_reserve(100).expect("fits"));
    let mut b = batch(2);
    b.hold(l.try_reserve(50).expect("fits"));
    a.append(b);
    assert_eq!(a.held_bytes(&l), 150, "merged into one reservation");
    assert_eq!(l.used(), 150);
    let copy = a.clone();
    assert_eq!(l.used(), 300, "a copy of the data is accounted again");
    drop(a);
    assert_eq!(l.used(), 150);
    drop(copy);
    assert_eq!(l.used(), 0);
}

#[test]
fn the_estimate_grows_with_the_data() {
    let (small, large) = (batch(10), batch(1000));
    assert!(
        small.memory_bytes()
            > 10 * size_of::<opentelemetry_proto::tonic::metrics::v1::NumberDataPoint>() as u64
    );
    assert!(large.memory_bytes() > 50 * small.memory_bytes());
}

fn sender(
    targets: Vec<mpsc::Sender<MetricBatch>>,
    limiters: Vec<Option<Arc<MemoryLimiter>>>,
    t: &SelfMetrics,
) -> PipelineSender {
    PipelineSender::new(&"otlp".into(), targets, Duration::from_millis(10), t)
        .with_memory_limiters(limiters)
}

fn value(t: &SelfMetrics, name: &str, labels: &[(&str, &str)]) -> i64 {
    t.value(name, labels).unwrap_or(-1)
}

#[tokio::test]
async fn refuse_mode_refuses_for_every_pipeline_until_the_exporters_let_go() {
    let t = SelfMetrics::new();
    let one = batch(100).memory_bytes();
    // Room for two batches of 100 points below the soft limit, not three.
    let l = limiter(one * 2 + one / 2 + 1000, 1000, LimitMode::Refuse, &t);
    let (tx1, mut rx1) = mpsc::channel(8);
    let (tx2, mut rx2) = mpsc::channel(8);
    let s = sender(vec![tx1, tx2], vec![Some(l.clone()), None], &t);
    s.send(batch(100)).await.expect("first fits");
    assert_eq!(l.used(), one, "the limited pipeline's copy is accounted");
    s.send(batch(100)).await.expect("second fits");
    assert_eq!(s.send(batch(100)).await, Err(SendError::MemoryLimit));
    assert!(
        s.refusing().is_some(),
        "a typical batch would not fit either: the next body is not even read"
    );
    // Pipeline 2 got only what was accepted, whole.
    let mut got2 = 0;
    while let Ok(b) = rx2.try_recv() {
        got2 += b.data_points();
    }
    assert_eq!(got2, 200, "a refused batch reaches no pipeline");
    // The exporters finish with the first batch: room again.
    let first = rx1.recv().await.expect("first");
    assert_eq!(first.held_bytes(&l), one);
    drop(first);
    s.send(batch(100)).await.expect("room after release");
    assert_eq!(
        value(
            &t,
            "vla_collector_receiver_refused_data_points_total",
            &[("receiver", "otlp"), ("reason", "memory_limit")]
        ),
        100
    );
    assert_eq!(
        value(
            &t,
            "vla_collector_memory_limiter_refused_data_points_total",
            &[("processor", "memory_limiter")]
        ),
        100
    );
    assert_eq!(
        value(
            &t,
            "vla_collector_receiver_accepted_data_points_total",
            &[("receiver", "otlp")]
        ),
        300
    );
    while let Ok(b) = rx1.try_recv() {
        drop(b);
    }
    assert_eq!(l.used(), 0, "every byte comes back");
}

#[tokio::test]
async fn drop_mode_drops_for_its_pipeline_only_and_counts() {
    let t = SelfMetrics::new();
    let one = batch(10).memory_bytes();
    let l = limiter(one + one / 2, 0, LimitMode::Drop, &t);
    let (tx1, mut rx1) = mpsc::channel(8);
    let (tx2, mut rx2) = mpsc::channel(8);
    let s = sender(vec![tx1, tx2], vec![Some(l.clone()), None], &t);
    s.send(batch(10)).await.expect("fits");
    s.send(batch(10)).await.expect("drop mode answers success");
    assert!(s.refusing().is_none(), "drop mode never refuses");
    assert_eq!(rx1.recv().await.map(|b| b.data_points()), Some(10));
    assert!(
        rx1.try_recv().is_err(),
        "the second was dropped for pipeline 1"
    );
    assert_eq!(rx2.recv().await.map(|b| b.data_points()), Some(10));
    assert_eq!(rx2.recv().await.map(|b| b.data_points()), Some(10));
    assert_eq!(
        value(
            &t,
            "vla_collector_memory_limiter_dropped_data_points_total",
            &[("processor", "memory_limiter")]
        ),
        10
    );
}

#[tokio::test]
async fn a_full_pipeline_gives_the_reservation_back() {
    let t = SelfMetrics::new();
    let l = limiter(1 << 30, 0, LimitMode::Refuse, &t);
    let (tx, _rx) = mpsc::channel(1);
    let s = sender(vec![tx], vec![Some(l.clone())], &t);
    s.send(batch(1)).await.expect("room");
    let held = l.used();
    assert_eq!(s.send(batch(1)).await, Err(SendError::Full));
    assert_eq!(l.used(), held, "the refused batch holds nothing");
}
