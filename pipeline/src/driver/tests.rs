use std::collections::VecDeque;

use parking_lot::Mutex;
use rand::SeedableRng;

use super::*;
use crate::fixtures;
use crate::{BoxFuture, ExportReport, PrepareError, Prepared};

/// An exporter that prepares each batch as one request, answers sends from a script and
/// records when each attempt happened.
struct Scripted {
    script: Mutex<VecDeque<Result<(), ExportError>>>,
    attempts: Mutex<Vec<tokio::time::Instant>>,
}

impl Scripted {
    fn new(script: Vec<Result<(), ExportError>>) -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::new(script.into()),
            attempts: Mutex::new(Vec::new()),
        })
    }
}

fn one_request(b: &MetricBatch) -> Prepared {
    Prepared {
        requests: vec![Request {
            payload: bytes::Bytes::new(),
            samples: b.data_points() as u64,
            points: b.data_points() as u64,
            lane: 0,
        }],
        done: ExportReport::default(),
    }
}

impl Exporter for Scripted {
    fn prepare(&self, b: &MetricBatch) -> Result<Prepared, PrepareError> {
        Ok(one_request(b))
    }
    fn send<'a>(&'a self, _: &'a Request) -> BoxFuture<'a, Result<(), ExportError>> {
        self.attempts.lock().push(tokio::time::Instant::now());
        let next = self.script.lock().pop_front().unwrap_or(Ok(()));
        Box::pin(async move { next })
    }
}

fn retryable(retry_after: Option<Duration>) -> Result<(), ExportError> {
    Err(ExportError::Retryable {
        reason: "http_503",
        message: "unavailable".into(),
        retry_after,
    })
}

fn batch(points: usize) -> Arc<MetricBatch> {
    let vals: Vec<(f64, &[(&str, &str)])> = (0..points).map(|i| (i as f64, &[][..])).collect();
    Arc::new(MetricBatch::new(
        "otlp".into(),
        vec![fixtures::resource(
            "svc",
            vec![fixtures::gauge("g", "", &vals)],
        )],
    ))
}

fn counter(t: &SelfMetrics, name: &str, reason: Option<&str>) -> Option<i64> {
    match reason {
        Some(r) => t.value(name, &[("exporter", "x"), ("reason", r)]),
        None => t.value(name, &[("exporter", "x")]),
    }
}

fn no_jitter() -> DriverConfig {
    DriverConfig {
        retry: RetryPolicy {
            randomization_factor: 0.0,
            initial_interval: Duration::from_millis(100),
            max_interval: Duration::from_secs(10),
            ..RetryPolicy::default()
        },
        ..DriverConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn retries_with_backoff_and_honours_retry_after_then_delivers_once() {
    let t = SelfMetrics::new();
    let exp = Scripted::new(vec![
        retryable(None),
        retryable(Some(Duration::from_secs(3))),
        retryable(None),
    ]);
    let (h, join) = spawn_exporter(
        "x".into(),
        exp.clone(),
        no_jitter(),
        &t,
        CancellationToken::new(),
    );
    h.enqueue(batch(4)).await;
    drop(h);
    join.await.expect("worker");
    let at = exp.attempts.lock().clone();
    assert_eq!(at.len(), 4, "three failures then success");
    let gaps: Vec<u128> = at.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
    // 100 ms, then the server's 3 s, then 100 ms × 2² = 400 ms.
    assert_eq!(gaps, vec![100, 3000, 400]);
    assert_eq!(
        counter(&t, "vla_collector_exporter_sent_data_points_total", None),
        Some(4)
    );
    assert_eq!(
        counter(
            &t,
            "vla_collector_exporter_failed_attempts_total",
            Some("http_503")
        ),
        Some(3)
    );
    assert_eq!(counter(&t, DROPPED, Some("retries_exhausted")), None);
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_drop_at_once_with_their_reason() {
    let t = SelfMetrics::new();
    let exp = Scripted::new(vec![Err(ExportError::Permanent {
        reason: "http_400",
        message: "bad sample".into(),
    })]);
    let (h, join) = spawn_exporter(
        "x".into(),
        exp.clone(),
        no_jitter(),
        &t,
        CancellationToken::new(),
    );
    h.enqueue(batch(5)).await;
    h.enqueue(batch(2)).await;
    drop(h);
    join.await.expect("worker");
    assert_eq!(
        exp.attempts.lock().len(),
        2,
        "no retry of a permanent failure"
    );
    assert_eq!(counter(&t, DROPPED, Some("http_400")), Some(5));
    assert_eq!(
        counter(&t, "vla_collector_exporter_sent_data_points_total", None),
        Some(2)
    );
}

#[tokio::test(start_paused = true)]
async fn gives_up_after_max_elapsed_time() {
    let t = SelfMetrics::new();
    let exp = Scripted::new((0..100).map(|_| retryable(None)).collect());
    let mut cfg = no_jitter();
    cfg.retry.max_elapsed_time = Duration::from_secs(2);
    let (h, join) = spawn_exporter("x".into(), exp.clone(), cfg, &t, CancellationToken::new());
    h.enqueue(batch(3)).await;
    drop(h);
    join.await.expect("worker");
    // Waits 100, 200, 400, 800 ms (1.5 s in all); the next 1.6 s would pass the 2 s budget.
    assert_eq!(exp.attempts.lock().len(), 5);
    assert_eq!(counter(&t, DROPPED, Some("retries_exhausted")), Some(3));
}

#[tokio::test(start_paused = true)]
async fn hard_stop_ends_retrying_and_counts_the_rest_as_shutdown() {
    let t = SelfMetrics::new();
    let exp = Scripted::new((0..1000).map(|_| retryable(None)).collect());
    let stop = CancellationToken::new();
    let (h, join) = spawn_exporter("x".into(), exp.clone(), no_jitter(), &t, stop.clone());
    h.enqueue(batch(3)).await;
    h.enqueue(batch(4)).await;
    drop(h);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    join.await.expect("worker");
    assert_eq!(counter(&t, DROPPED, Some("shutdown")), Some(7));
}

/// Exporter `x` with `cfg`, its worker stuck in an hour-long retry of a first 1-point batch
/// (so nothing leaves the queue until `stop` is cancelled).
async fn stuck_worker(
    cfg: DriverConfig,
    t: &SelfMetrics,
) -> (ExporterHandle, JoinHandle<()>, CancellationToken) {
    let exp = Scripted::new(vec![retryable(Some(Duration::from_secs(3600)))]);
    let stop = CancellationToken::new();
    let (h, join) = spawn_exporter("x".into(), exp.clone(), cfg, t, stop.clone());
    h.enqueue(batch(1)).await;
    while exp.attempts.lock().is_empty() {
        tokio::task::yield_now().await;
    }
    (h, join, stop)
}

#[tokio::test]
async fn drop_when_full_counts_queue_full() {
    let t = SelfMetrics::new();
    let cfg = DriverConfig {
        queue_size: 1,
        sizer: QueueSizer::Batches,
        when_full: WhenFull::Drop,
        ..no_jitter()
    };
    let (h, join, stop) = stuck_worker(cfg, &t).await;
    h.enqueue(batch(2)).await; // fills the queue
    h.enqueue(batch(3)).await; // dropped
    assert_eq!(counter(&t, DROPPED, Some("queue_full")), Some(3));
    assert_eq!(queue_gauges(&t, "batches"), (Some(1), Some(2), Some(1)));
    stop.cancel();
    drop(h);
    join.await.expect("worker");
}

/// (batches, points, capacity) of exporter `x`'s queue, the capacity labelled with `sizer`.
fn queue_gauges(t: &SelfMetrics, sizer: &str) -> (Option<i64>, Option<i64>, Option<i64>) {
    let x = [("exporter", "x")];
    (
        t.value("vla_collector_exporter_queue_length", &x),
        t.value("vla_collector_exporter_queue_points", &x),
        t.value(
            "vla_collector_exporter_queue_capacity",
            &[("exporter", "x"), ("sizer", sizer)],
        ),
    )
}

/// Polls `f` once: whether it finished.
fn ready_now<F: std::future::Future>(f: F) -> bool {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    f.as_mut().poll(&mut cx).is_ready()
}

#[tokio::test]
async fn a_points_queue_counts_points_whatever_the_batch_size() {
    let t = SelfMetrics::new();
    let cfg = DriverConfig {
        queue_size: 10,
        when_full: WhenFull::Drop,
        ..no_jitter()
    };
    assert_eq!(cfg.sizer, QueueSizer::Points, "the default");
    let (h, join, stop) = stuck_worker(cfg, &t).await;
    assert_eq!(queue_gauges(&t, "points"), (Some(0), Some(0), Some(10)));
    h.enqueue(batch(6)).await; // 6 of 10
    h.enqueue(batch(5)).await; // 5 > 4 free: dropped
    h.enqueue(batch(4)).await; // 10 of 10
    h.enqueue(batch(1)).await; // dropped
    assert_eq!(counter(&t, DROPPED, Some("queue_full")), Some(6));
    assert_eq!(queue_gauges(&t, "points"), (Some(2), Some(10), Some(10)));
    stop.cancel();
    drop(h);
    join.await.expect("worker");
    assert_eq!(queue_gauges(&t, "points").1, Some(0), "all given back");
}

#[tokio::test]
async fn a_batch_larger_than_a_points_queue_waits_for_it_empty_then_takes_it_all() {
    let t = SelfMetrics::new();
    let cfg = DriverConfig {
        queue_size: 10,
        ..no_jitter()
    };
    let (h, join, stop) = stuck_worker(cfg, &t).await;
    h.enqueue(batch(3)).await;
    // 25 points do not fit beside 3 and never fit at all: they wait for an empty queue...
    let h2 = h.clone();
    let big = tokio::spawn(async move { h2.enqueue(batch(25)).await });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!big.is_finished(), "must wait while 3 points are queued");
    // ...and a small batch behind them waits its turn (the room is handed out in order).
    assert!(
        !ready_now(h.enqueue(batch(1))),
        "blocks behind the big batch"
    );
    assert_eq!(queue_gauges(&t, "points").1, Some(3));
    // Shutting down lets the worker take the 3 points out (counted as dropped): then the
    // big batch gets the whole queue.
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), big)
        .await
        .expect("a batch larger than the queue must get in once it is empty")
        .expect("enqueued");
    assert_eq!(
        queue_gauges(&t, "points").1.map(|p| p == 25 || p == 0),
        Some(true)
    );
    drop(h);
    join.await.expect("worker");
    assert_eq!(counter(&t, DROPPED, Some("shutdown")), Some(1 + 3 + 25));
    assert_eq!(queue_gauges(&t, "points").1, Some(0));
}

#[test]
fn backoff_grows_is_capped_and_jitter_stays_in_bounds() {
    let p = RetryPolicy {
        initial_interval: Duration::from_millis(100),
        max_interval: Duration::from_secs(1),
        multiplier: 2.0,
        randomization_factor: 0.5,
        ..RetryPolicy::default()
    };
    let mut rng = StdRng::seed_from_u64(7);
    for attempt in 0..20 {
        let base = (0.1 * 2f64.powi(attempt as i32)).min(1.0);
        let d = p.backoff(attempt, &mut rng).as_secs_f64();
        assert!(
            d >= base * 0.5 - 1e-9 && d <= (base * 1.5).min(1.0) + 1e-9,
            "attempt {attempt}: {d}"
        );
    }
    let fixed = RetryPolicy {
        randomization_factor: 0.0,
        ..p
    };
    assert_eq!(fixed.backoff(0, &mut rng), Duration::from_millis(100));
    assert_eq!(fixed.backoff(3, &mut rng), Duration::from_millis(800));
    assert_eq!(fixed.backoff(4, &mut rng), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn retry_after_zero_still_backs_off() {
    let t = SelfMetrics::new();
    let exp = Scripted::new(vec![
        retryable(Some(Duration::ZERO)),
        retryable(Some(Duration::ZERO)),
    ]);
    let (h, join) = spawn_exporter(
        "x".into(),
        exp.clone(),
        no_jitter(),
        &t,
        CancellationToken::new(),
    );
    h.enqueue(batch(1)).await;
    drop(h);
    join.await.expect("worker");
    let at = exp.attempts.lock().clone();
    let gaps: Vec<u128> = at.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
    assert_eq!(gaps, vec![100, 200], "the backoff, not the server's zero");
}

/// An exporter whose export never finishes.
struct Hangs;
impl Exporter for Hangs {
    fn prepare(&self, b: &MetricBatch) -> Result<Prepared, PrepareError> {
        Ok(one_request(b))
    }
    fn send<'a>(&'a self, _: &'a Request) -> BoxFuture<'a, Result<(), ExportError>> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test(start_paused = true)]
async fn hard_stop_abandons_a_hung_export_and_counts_everything_left() {
    let t = SelfMetrics::new();
    let stop = CancellationToken::new();
    let (h, join) = spawn_exporter("x".into(), Arc::new(Hangs), no_jitter(), &t, stop.clone());
    h.enqueue(batch(2)).await;
    h.enqueue(batch(5)).await;
    drop(h);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        !join.is_finished(),
        "a hung export holds the worker until the hard stop"
    );
    stop.cancel();
    join.await.expect("worker");
    assert_eq!(counter(&t, DROPPED, Some("shutdown")), Some(7));
}

#[tokio::test(start_paused = true)]
async fn an_aborted_worker_counts_what_it_held() {
    let t = SelfMetrics::new();
    let (h, join) = spawn_exporter(
        "x".into(),
        Arc::new(Hangs),
        no_jitter(),
        &t,
        CancellationToken::new(),
    );
    h.enqueue(batch(3)).await;
    h.enqueue(batch(4)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    join.abort();
    assert!(join.await.expect_err("aborted").is_cancelled());
    assert_eq!(counter(&t, DROPPED, Some("shutdown")), Some(7));
}

/// Prepares a batch into fixed requests (payload = request number) over two lanes, some
/// points handled while preparing; answers each payload's sends from a per-payload script.
struct Lanes {
    script: Mutex<HashMap<u8, VecDeque<Result<(), ExportError>>>>,
    sends: Mutex<Vec<u8>>,
}

impl Exporter for Lanes {
    fn prepare(&self, _: &MetricBatch) -> Result<Prepared, PrepareError> {
        let req = |n: u8, points: u64, lane: u32| Request {
            payload: bytes::Bytes::from(vec![n]),
            samples: points * 2,
            points,
            lane,
        };
        Ok(Prepared {
            // Lane 0: 1, 2, 3; lane 1: 4, 5.
            requests: vec![
                req(1, 1, 0),
                req(4, 2, 1),
                req(2, 1, 0),
                req(3, 1, 0),
                req(5, 1, 1),
            ],
            done: ExportReport {
                sent: 1,
                dropped: vec![("delta_temporality", 2)],
            },
        })
    }
    fn send<'a>(&'a self, r: &'a Request) -> BoxFuture<'a, Result<(), ExportError>> {
        let n = r.payload[0];
        self.sends.lock().push(n);
        let next = self
            .script
            .lock()
            .get_mut(&n)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Ok(()));
        Box::pin(async move { next })
    }
}

#[tokio::test(start_paused = true)]
async fn retries_exactly_the_undelivered_request_and_counts_each_request() {
    let t = SelfMetrics::new();
    let script = HashMap::from([
        (2, VecDeque::from([retryable(None), retryable(None)])),
        (
            4,
            VecDeque::from([Err(ExportError::Permanent {
                reason: "http_400",
                message: "out of order".into(),
            })]),
        ),
    ]);
    let exp = Arc::new(Lanes {
        script: Mutex::new(script),
        sends: Mutex::new(Vec::new()),
    });
    let (h, join) = spawn_exporter(
        "x".into(),
        exp.clone(),
        no_jitter(),
        &t,
        CancellationToken::new(),
    );
    h.enqueue(batch(9)).await;
    drop(h);
    join.await.expect("worker");
    let sends = exp.sends.lock().clone();
    let of = |n: u8| sends.iter().filter(|&&s| s == n).count();
    assert_eq!(
        (of(1), of(2), of(3), of(4), of(5)),
        (1, 3, 1, 1, 1),
        "only request 2 is retried: {sends:?}"
    );
    let lane0: Vec<u8> = sends.iter().copied().filter(|n| *n <= 3).collect();
    assert_eq!(lane0, vec![1, 2, 2, 2, 3], "a lane stays in order");
    // 1 sent while preparing + requests 1, 2, 3 and 5; request 4 (2 points) refused.
    assert_eq!(
        counter(&t, "vla_collector_exporter_sent_data_points_total", None),
        Some(5)
    );
    assert_eq!(counter(&t, DROPPED, Some("http_400")), Some(2));
    assert_eq!(counter(&t, DROPPED, Some("delta_temporality")), Some(2));
    assert_eq!(counter(&t, DROPPED, Some("unaccounted")), None);
    assert_eq!(
        counter(
            &t,
            "vla_collector_exporter_failed_attempts_total",
            Some("http_503")
        ),
        Some(2)
    );
}

/// Prepares nothing at all: the batch is refused before any request exists.
struct Unencodable;
impl Exporter for Unencodable {
    fn prepare(&self, _: &MetricBatch) -> Result<Prepared, PrepareError> {
        Err(PrepareError {
            reason: "encode_error",
            message: "cannot encode".into(),
        })
    }
    fn send<'a>(&'a self, _: &'a Request) -> BoxFuture<'a, Result<(), ExportError>> {
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn a_batch_that_cannot_be_prepared_is_dropped_with_the_reason() {
    let t = SelfMetrics::new();
    let (h, join) = spawn_exporter(
        "x".into(),
        Arc::new(Unencodable),
        no_jitter(),
        &t,
        CancellationToken::new(),
    );
    h.enqueue(batch(4)).await;
    drop(h);
    join.await.expect("worker");
    assert_eq!(counter(&t, DROPPED, Some("encode_error")), Some(4));
}

/// An exporter whose backend can be taken down: each batch becomes one request per point
/// (payload: the point's index, lane: index % 2); sends are recorded in order.
struct Switchable {
    down: std::sync::atomic::AtomicBool,
    delivered: Mutex<Vec<(u32, u8)>>,
}

impl Switchable {
    fn new(down: bool) -> Arc<Self> {
        Arc::new(Self {
            down: std::sync::atomic::AtomicBool::new(down),
            delivered: Mutex::new(Vec::new()),
        })
    }
    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

impl Exporter for Switchable {
    fn prepare(&self, b: &MetricBatch) -> Result<Prepared, PrepareError> {
        let mut requests = Vec::new();
        for rm in b.resource_metrics() {
            for sm in &rm.scope_metrics {
                for m in &sm.metrics {
                    if let Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Gauge(g)) =
                        &m.data
                    {
                        for p in &g.data_points {
                            let v = match p.value {
                                Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsDouble(v)) => v as u8,
                                _ => 0,
                            };
                            requests.push(Request {
                                payload: bytes::Bytes::from(vec![v; 64]),
                                samples: 1,
                                points: 1,
                                lane: u32::from(v % 2),
                            });
                        }
                    }
                }
            }
        }
        Ok(Prepared {
            requests,
            done: ExportReport::default(),
        })
    }
    fn send<'a>(&'a self, r: &'a Request) -> BoxFuture<'a, Result<(), ExportError>> {
        let down = self.down.load(Ordering::SeqCst);
        if !down {
            self.delivered.lock().push((r.lane, r.payload[0]));
        }
        Box::pin(async move { if down { retryable(None) } else { Ok(()) } })
    }
}

fn values(from: usize, n: usize) -> MetricBatch {
    let vals: Vec<(f64, &[(&str, &str)])> = (from..from + n).map(|i| (i as f64, &[][..])).collect();
    MetricBatch::new(
        "otlp".into(),
        vec![fixtures::resource(
            "svc",
            vec![fixtures::gauge("g", "", &vals)],
        )],
    )
}

fn durable(dir: &std::path::Path) -> DriverConfig {
    DriverConfig {
        retry: RetryPolicy {
            initial_interval: Duration::from_millis(5),
            max_interval: Duration::from_millis(20),
            ..RetryPolicy::default()
        },
        wal: Some(wal::WalConfig {
            directory: dir.to_owned(),
            max_bytes: 1 << 20,
            sync: wal::WalSync::Always,
            when_full: wal::WalWhenFull::Block,
            max_in_memory_bytes: 4096,
        }),
        ..DriverConfig::default()
    }
}

fn start_durable(
    t: &SelfMetrics,
    exp: Arc<Switchable>,
    config: DriverConfig,
) -> (ExporterHandle, JoinHandle<()>) {
    let wal = Wal::open(config.wal.clone().expect("wal"), t, "x").expect("open");
    spawn_exporter_with_wal(
        "x".into(),
        exp,
        config,
        t,
        CancellationToken::new(),
        Some(wal),
    )
}

/// Queues `batch` with a fresh acknowledgement and waits for it.
async fn enqueue_acked(h: &ExporterHandle, batch: MetricBatch) -> bool {
    let (ack, waiter) = crate::ack::Ack::new();
    let mut acks = Acks::none();
    acks.push(ack);
    h.enqueue_with(Arc::new(batch), acks).await;
    waiter.wait().await
}

#[tokio::test]
async fn durable_worker_confirms_once_in_the_log_and_delivers_in_lane_order_after_an_outage() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = SelfMetrics::new();
    let exp = Switchable::new(true);
    let (h, join) = start_durable(&t, exp.clone(), durable(dir.path()));
    // The backend is down, yet every batch is confirmed: it is in the log.
    for i in 0..10 {
        assert!(enqueue_acked(&h, values(i * 20, 20)).await, "batch {i}");
    }
    assert!(exp.delivered.lock().is_empty());
    // The read-ahead holds at most its budget (plus one record); the rest waits on disk.
    let in_memory = t
        .value(
            "vla_collector_exporter_wal_in_memory_bytes",
            &[("exporter", "x")],
        )
        .expect("gauge");
    assert!(in_memory <= 4096 + 200, "{in_memory}");
    assert_eq!(
        t.value("vla_collector_exporter_wal_records", &[("exporter", "x")]),
        Some(200)
    );
    exp.set_down(false);
    drop(h);
    join.await.expect("worker");
    let got = exp.delivered.lock().clone();
    assert_eq!(got.len(), 200, "everything arrives once");
    for lane in 0..2 {
        let order: Vec<u8> = got.iter().filter(|d| d.0 == lane).map(|d| d.1).collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "lane {lane} in order"
        );
    }
    assert_eq!(
        counter(&t, "vla_collector_exporter_sent_data_points_total", None),
        Some(200)
    );
    assert_eq!(
        t.value("vla_collector_exporter_wal_records", &[("exporter", "x")]),
        Some(0)
    );
}

#[tokio::test]
async fn what_a_stopped_worker_left_in_the_log_is_sent_first_after_a_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    {
        let t = SelfMetrics::new();
        let exp = Switchable::new(true);
        let (h, join) = start_durable(&t, exp.clone(), durable(dir.path()));
        assert!(enqueue_acked(&h, values(0, 30)).await);
        // Shutdown with the backend down: the worker stops promptly and keeps the records.
        drop(h);
        tokio::time::timeout(Duration::from_secs(5), join)
            .await
            .expect("stops without waiting for the backend")
            .expect("worker");
        assert_eq!(
            counter(&t, DROPPED, Some("shutdown")),
            None,
            "nothing dropped"
        );
    }
    let t = SelfMetrics::new();
    let exp = Switchable::new(false);
    let (h, join) = start_durable(&t, exp.clone(), durable(dir.path()));
    assert!(enqueue_acked(&h, values(100, 4)).await);
    drop(h);
    join.await.expect("worker");
    let got: Vec<u8> = exp.delivered.lock().iter().map(|d| d.1).collect();
    assert_eq!(got.len(), 34);
    let (old, new): (Vec<u8>, Vec<u8>) = got.iter().partition(|v| **v < 100);
    assert_eq!(old.len(), 30);
    assert_eq!(new.len(), 4);
    for lane in 0..2u8 {
        let order: Vec<u8> = got.iter().copied().filter(|v| v % 2 == lane).collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "replay before new data: {order:?}"
        );
    }
    assert_eq!(
        t.value(
            "vla_collector_exporter_wal_replayed_records_total",
            &[("exporter", "x")]
        ),
        Some(30)
    );
}

#[tokio::test]
async fn a_log_that_cannot_be_written_fails_the_acknowledgement() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = SelfMetrics::new();
    let exp = Switchable::new(true);
    let mut config = durable(dir.path());
    if let Some(w) = config.wal.as_mut() {
        w.max_bytes = 1 << 20;
    }
    let (h, join) = start_durable(&t, exp.clone(), config);
    assert!(enqueue_acked(&h, values(0, 2)).await);
    // The segment files vanish under it (a disk gone read-only would do the same): the
    // next append opens a new segment in a directory that is no longer there.
    std::fs::remove_dir_all(dir.path()).expect("rm");
    // Fill the active segment so the next append must create a file.
    let mut confirmed = true;
    for i in 0..40 {
        confirmed &= enqueue_acked(&h, values(i * 50, 50)).await;
    }
    assert!(!confirmed, "an append that fails is not confirmed");
    let health = h.wal_health().expect("durable");
    assert!(
        health
            .error()
            .is_some_and(|e| e.contains("write-ahead log"))
    );
    // The clients retry what was refused (the receivers count it); it is not also counted
    // as dropped here.
    assert_eq!(counter(&t, DROPPED, Some("wal_write_error")), None);
    drop(h);
    let _ = tokio::time::timeout(Duration::from_secs(5), join).await;
}

#[tokio::test(start_paused = true)]
async fn a_probe_ends_a_long_backoff_soon_after_the_backend_returns() {
    let t = SelfMetrics::new();
    let exp = Switchable::new(true);
    let config = DriverConfig {
        retry: RetryPolicy {
            initial_interval: Duration::from_secs(30),
            max_interval: Duration::from_secs(30),
            randomization_factor: 0.0,
            max_elapsed_time: Duration::ZERO,
            ..RetryPolicy::default()
        },
        ..DriverConfig::default()
    };
    let (h, join) = spawn_exporter(
        "x".into(),
        exp.clone(),
        config,
        &t,
        CancellationToken::new(),
    );
    h.enqueue(Arc::new(values(0, 4))).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    exp.set_down(false);
    let back = Instant::now();
    drop(h);
    join.await.expect("worker");
    // Without probes every lane would wait out its 30 s backoff.
    assert!(back.elapsed() <= PROBE_EVERY * 2, "{:?}", back.elapsed());
    assert_eq!(exp.delivered.lock().len(), 4);
}

/// A blocking 10-point queue, full behind a [`stuck_worker`].
async fn full_points_queue(t: &SelfMetrics) -> (ExporterHandle, JoinHandle<()>, CancellationToken) {
    let cfg = DriverConfig {
        queue_size: 10,
        ..no_jitter()
    };
    let (h, join, stop) = stuck_worker(cfg, t).await;
    h.enqueue(batch(10)).await;
    (h, join, stop)
}

#[tokio::test]
async fn an_enqueue_dropped_while_it_waits_for_room_fails_its_acknowledgements() {
    let t = SelfMetrics::new();
    let (h, join, stop) = full_points_queue(&t).await;
    let (ack, waiter) = crate::ack::Ack::new();
    let mut acks = Acks::none();
    acks.push(ack);
    // A pipeline aborted at shutdown drops its enqueue mid-wait: the client must not be told
    // the data is stored.
    assert!(!ready_now(h.enqueue_with(batch(1), acks)), "waits for room");
    assert!(
        !waiter.wait().await,
        "a dropped enqueue fails its acknowledgements"
    );
    assert_eq!(queue_gauges(&t, "points").1, Some(10));
    stop.cancel();
    drop(h);
    join.await.expect("worker");
}

#[tokio::test]
async fn an_enqueue_waiting_for_room_ends_when_the_worker_is_aborted() {
    let t = SelfMetrics::new();
    let (h, join, _stop) = full_points_queue(&t).await;
    let h2 = h.clone();
    let waiting = tokio::spawn(async move { h2.enqueue(batch(4)).await });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!waiting.is_finished(), "waits for room");
    join.abort();
    let _ = join.await;
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("an enqueue must not hang once the worker is gone")
        .expect("enqueue task");
    assert_eq!(counter(&t, DROPPED, Some("exporter_stopped")), Some(4));
    assert_eq!(queue_gauges(&t, "points").1, Some(0));
}
