//! Component tests of the `nvml` receiver: a fake GPU source polled into a real
//! `PipelineSender` and pipeline channel, plus one test against the real NVML library, skipped
//! (with a visible line) where there is no NVIDIA driver or GPU.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::metrics::v1::{Metric, metric, number_data_point};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vla_pipeline::gpu::{GpuReading, GpuSnapshots};
use vla_pipeline::runner::pipeline_channel;
use vla_pipeline::{
    ComponentId, MetricBatch, PipelineSender, Receiver, ReceiverContext, ReceiverError,
    SelfMetrics, attr_str,
};
use vla_receivers::nvml::{
    Config, FakeConfig, FakeGpuSource, GpuError, GpuSource, MetricsConfig, NvmlReceiver,
    NvmlSource, REOPEN_AFTER_FAILED_POLLS, Scenario, SourceKind,
};

struct Harness {
    rx: mpsc::Receiver<MetricBatch>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ReceiverError>>,
    telemetry: SelfMetrics,
    hub: GpuSnapshots,
    status: vla_pipeline::lookup::SourceStatus,
}

/// Polls every `interval_ms` (below the 100 ms `validate` floor where the test skips
/// validation, for speed), with a timeout no healthy poll reaches even on a loaded machine.
fn fast(interval_ms: u64) -> Config {
    Config {
        collection_interval: Duration::from_millis(interval_ms),
        poll_timeout: Some(Duration::from_secs(5)),
        metrics: MetricsConfig {
            vla: true,
            dcgm: true,
        },
        ..Config::default()
    }
}

/// Runs a receiver made by `make` into a pipeline channel of `capacity` batches.
fn start(
    capacity: usize,
    make: impl FnOnce(ComponentId, GpuSnapshots, &SelfMetrics) -> NvmlReceiver,
) -> Harness {
    let id: ComponentId = "nvml".into();
    let telemetry = SelfMetrics::new();
    let hub = GpuSnapshots::new();
    let receiver = make(id.clone(), hub.clone(), &telemetry);
    let status = receiver.status();
    let (tx, rx) = pipeline_channel("metrics", capacity, &telemetry);
    let shutdown = CancellationToken::new();
    let ctx = ReceiverContext {
        output: PipelineSender::new(&id, vec![tx], Duration::from_millis(10), &telemetry),
        shutdown: shutdown.clone(),
    };
    let task = tokio::spawn(Box::new(receiver).run(ctx));
    Harness {
        rx,
        shutdown,
        task,
        telemetry,
        hub,
        status,
    }
}

fn with_source(config: Config, source: FakeGpuSource, capacity: usize) -> Harness {
    start(capacity, |id, hub, t| {
        NvmlReceiver::with_source(id, &config, Box::new(source), hub, t)
    })
}

impl Harness {
    async fn next(&mut self) -> MetricBatch {
        tokio::time::timeout(Duration::from_secs(5), self.rx.recv())
            .await
            .expect("a batch within 5 s")
            .expect("channel open")
    }

    /// Cancels and checks that `run` returns Ok within `within`.
    async fn stop_within(self, within: Duration) {
        self.shutdown.cancel();
        let r = tokio::time::timeout(within, self.task)
            .await
            .expect("run returns promptly after shutdown")
            .unwrap();
        assert!(r.is_ok(), "{r:?}");
    }
}

fn reading(index: u32, util: f64, temp: f64) -> GpuReading {
    GpuReading {
        index,
        uuid: format!("GPU-{index:08}"),
        model: "NVIDIA H100 80GB HBM3".into(),
        utilization_percent: Some(util),
        temperature_celsius: Some(temp),
        memory_used_bytes: Some(40 << 30),
        memory_free_bytes: Some(40 << 30),
        memory_total_bytes: Some(80 << 30),
        power_watts: Some(300.0),
        ..GpuReading::default()
    }
}

fn find<'a>(batch: &'a MetricBatch, name: &str) -> Option<&'a Metric> {
    batch
        .resource_metrics()
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .find(|m| m.name == name)
}

/// The metric's points as `(gpu_id or gpu, value)`.
fn values(batch: &MetricBatch, name: &str) -> Vec<(String, f64)> {
    let Some(m) = find(batch, name) else {
        return Vec::new();
    };
    let pts = match &m.data {
        Some(metric::Data::Gauge(g)) => &g.data_points,
        Some(metric::Data::Sum(s)) => &s.data_points,
        other => panic!("{name}: {other:?}"),
    };
    pts.iter()
        .map(|p| {
            let id = attr_str(&p.attributes, "gpu_id")
                .or_else(|| attr_str(&p.attributes, "gpu"))
                .unwrap_or("")
                .to_owned();
            let v = match p.value {
                Some(number_data_point::Value::AsDouble(d)) => d,
                Some(number_data_point::Value::AsInt(i)) => i as f64,
                None => f64::NAN,
            };
            (id, v)
        })
        .collect()
}

fn available(batch: &MetricBatch) -> f64 {
    values(batch, "vla.gpu.available")[0].1
}

#[tokio::test]
async fn polls_the_source_into_the_pipeline_and_the_hub() {
    let source = FakeGpuSource::from_readings(vec![reading(0, 35.0, 60.0), reading(1, 90.0, 80.0)]);
    let mut h = with_source(fast(20), source, 16);
    let b = h.next().await;
    assert_eq!(b.meta().source.as_ref(), "nvml");
    let rm = &b.resource_metrics()[0];
    let res = &rm.resource.as_ref().unwrap().attributes;
    assert_eq!(attr_str(res, "service.name"), Some("vla-collector"));
    let host = attr_str(res, "host.name").unwrap();
    assert!(!host.is_empty());
    assert_eq!(attr_str(res, "service.instance.id"), Some(host));
    assert_eq!(available(&b), 1.0);
    assert_eq!(values(&b, "vla.gpu.count"), [(String::new(), 2.0)]);
    assert_eq!(
        values(&b, "vla.gpu.utilization"),
        [("0".to_owned(), 35.0), ("1".to_owned(), 90.0)]
    );
    assert_eq!(
        values(&b, "vla.gpu.temperature"),
        [("0".to_owned(), 60.0), ("1".to_owned(), 80.0)]
    );
    assert_eq!(
        values(&b, "vla.gpu.memory.total"),
        [
            ("0".to_owned(), 85_899_345_920.0),
            ("1".to_owned(), 85_899_345_920.0)
        ]
    );
    assert_eq!(
        values(&b, "DCGM_FI_DEV_FB_USED"),
        [("0".to_owned(), 40_960.0), ("1".to_owned(), 40_960.0)]
    );
    // Unsupported here: no clock, energy or ECC points at all.
    for absent in [
        "vla.gpu.clock.sm",
        "vla.gpu.energy",
        "vla.gpu.ecc.errors",
        "DCGM_FI_DEV_SM_CLOCK",
    ] {
        assert!(find(&b, absent).is_none(), "{absent}");
    }
    // Every metric's points: 2 GPUs × (4 vla readings + power + memory used/total... ) — count
    // exactly what the readings hold: util, temp, used, total, power for vla; util, fb used,
    // fb free, temp, power for DCGM; plus available and count.
    assert_eq!(b.data_points(), 2 + 2 * 5 + 2 * 5);

    let snap = h.hub.load();
    assert_eq!(snap.gpus.len(), 2);
    assert_eq!(snap.by_uuid("GPU-00000001").map(|g| g.index), Some(1));
    assert!(snap.taken_at.is_some());
    let report = h.status.report();
    assert_eq!((report.status, report.entries), ("ok", 2));
    assert_eq!(report.source, "fake (scripted)");

    // It keeps polling on the interval (a third poll may be in by now), counting every point.
    let b2 = h.next().await;
    assert_eq!(available(&b2), 1.0);
    let accepted = h
        .telemetry
        .value(
            "vla_collector_receiver_accepted_data_points_total",
            &[("receiver", "nvml")],
        )
        .unwrap();
    let per_batch = b.data_points() as i64;
    assert!(accepted >= 2 * per_batch, "{accepted}");
    assert_eq!(accepted % per_batch, 0, "{accepted}");
    h.stop_within(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_failing_source_reports_unavailable_keeps_running_and_recovers() {
    let source = FakeGpuSource::scripted(vec![
        Ok(vec![reading(0, 50.0, 60.0)]),
        Err("GPU 0 has fallen off the bus".into()),
        Err("GPU 0 has fallen off the bus".into()),
        Ok(vec![reading(0, 55.0, 61.0)]),
    ]);
    let mut h = with_source(fast(20), source, 16);
    let first = h.next().await;
    assert_eq!(available(&first), 1.0);
    for _ in 0..2 {
        let b = h.next().await;
        assert_eq!(available(&b), 0.0);
        assert_eq!(values(&b, "vla.gpu.count"), [(String::new(), 0.0)]);
        // Nothing per GPU, not even a 0.
        assert_eq!(b.data_points(), 2);
        let report = h.status.report();
        assert_eq!(report.status, "failing");
        assert_eq!(
            report.last_error.as_deref(),
            Some("GPU 0 has fallen off the bus")
        );
        // The processor keeps the last good snapshot.
        assert_eq!(
            h.hub.load().by_index(0).and_then(|g| g.utilization_percent),
            Some(50.0)
        );
    }
    let recovered = h.next().await;
    assert_eq!(available(&recovered), 1.0);
    assert_eq!(
        values(&recovered, "vla.gpu.utilization"),
        [("0".to_owned(), 55.0)]
    );
    let report = h.status.report();
    assert_eq!((report.status, report.failures_total), ("ok", 2));
    assert_eq!(
        h.hub.load().by_index(0).and_then(|g| g.utilization_percent),
        Some(55.0)
    );
    let polls = |result| {
        h.telemetry.value(
            "vla_collector_receiver_gpu_polls_total",
            &[("receiver", "nvml"), ("result", result)],
        )
    };
    assert_eq!(polls("failed"), Some(2));
    assert!(polls("ok").unwrap() >= 2);
    h.stop_within(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn shutdown_stops_promptly_between_long_intervals() {
    let mut h = with_source(
        fast(3_600_000),
        FakeGpuSource::from_readings(vec![reading(0, 1.0, 40.0)]),
        4,
    );
    h.next().await; // the first poll is immediate
    let t0 = Instant::now();
    let task_done = h.task.is_finished();
    assert!(!task_done);
    // Promptly compared with the hour-long interval; loose for a loaded machine.
    h.stop_within(Duration::from_secs(5)).await;
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_full_pipeline_drops_the_poll_and_goes_on() {
    let source = FakeGpuSource::from_readings(vec![reading(0, 10.0, 50.0)]);
    // Capacity 1 and nobody reading: the first batch fills it, the next are refused.
    let mut h = with_source(fast(20), source, 1);
    let refused = |h: &Harness| {
        h.telemetry
            .value(
                "vla_collector_receiver_refused_data_points_total",
                &[("receiver", "nvml"), ("reason", "pipeline_full")],
            )
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while refused(&h) < 2 * 12 {
        assert!(Instant::now() < deadline, "refusals were not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !h.task.is_finished(),
        "a refused batch must not stop the receiver"
    );
    // Room again: fresh polls flow.
    let held = h.next().await;
    assert_eq!(available(&held), 1.0);
    let fresh = h.next().await;
    assert_eq!(available(&fresh), 1.0);
    h.stop_within(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn the_fake_source_from_config_crosses_the_alert_thresholds() {
    for (scenario, check) in [
        (Scenario::Overheat, "temperature"),
        (Scenario::MemoryPressure, "memory"),
    ] {
        let config = Config {
            source: SourceKind::Fake,
            fake: Some(FakeConfig {
                gpus: 3,
                scenario,
                ..FakeConfig::default()
            }),
            ..fast(100)
        };
        assert!(config.validate("receivers.nvml").is_empty());
        let mut h = start(4, |id, hub, t| NvmlReceiver::new(id, &config, hub, t));
        let b = h.next().await;
        assert_eq!(values(&b, "vla.gpu.count"), [(String::new(), 3.0)]);
        assert_eq!(
            h.status.report().source,
            format!("fake (3 GPUs, {})", scenario.as_str())
        );
        let temps = values(&b, "vla.gpu.temperature");
        let used = values(&b, "vla.gpu.memory.used");
        let total = values(&b, "vla.gpu.memory.total");
        assert_eq!(temps.len(), 3);
        let ratio = |i: usize| used[i].1 / total[i].1;
        match check {
            "temperature" => {
                assert!(temps[0].1 > 85.0, "{temps:?}");
                assert!(temps[1].1 < 85.0 && temps[2].1 < 85.0, "{temps:?}");
            }
            _ => {
                assert!(ratio(0) > 0.95, "{}", ratio(0));
                assert!(ratio(1) < 0.95 && ratio(2) < 0.95);
                assert!(temps.iter().all(|(_, t)| *t < 85.0));
            }
        }
        assert_eq!(total[0].1, 81_559.0 * 1024.0 * 1024.0);
        h.stop_within(Duration::from_secs(5)).await;
    }
}

#[tokio::test]
async fn without_a_driver_it_reports_unavailable_and_keeps_running() {
    // A library that cannot exist: NVML fails to load exactly as on a host without a driver.
    let config = Config {
        library_path: Some("/nonexistent/vla-test/libnvidia-ml.so.1".into()),
        ..fast(20)
    };
    let mut h = start(16, |id, hub, t| NvmlReceiver::new(id, &config, hub, t));
    for _ in 0..3 {
        let b = h.next().await;
        assert_eq!(available(&b), 0.0);
        assert_eq!(b.data_points(), 2);
    }
    let report = h.status.report();
    assert_eq!(report.status, "failing");
    assert!(
        report.last_error.as_deref().is_some_and(
            |e| e.starts_with("cannot load or initialise NVML (/nonexistent/vla-test/")
        ),
        "{report:?}"
    );
    // Only the first attempt ran: the next is 60 s away.
    assert_eq!(report.failures_total, 1);
    assert!(h.hub.load().gpus.is_empty());
    h.stop_within(Duration::from_secs(5)).await;
}

/// A GPU whose second poll hangs in the "driver" until the test releases it; counts the polls
/// started and reports utilization 10 × the poll's number.
struct HangingSource {
    started: Arc<AtomicUsize>,
    release: std::sync::mpsc::Receiver<()>,
}

impl GpuSource for HangingSource {
    fn describe(&self) -> String {
        "hanging".to_owned()
    }

    fn poll(&mut self) -> Result<Vec<GpuReading>, GpuError> {
        let n = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        if n == 2 {
            let _ = self.release.recv_timeout(Duration::from_secs(60));
        }
        Ok(vec![reading(0, 10.0 * n as f64, 50.0)])
    }
}

fn utilization(batch: &MetricBatch) -> f64 {
    values(batch, "vla.gpu.utilization")[0].1
}

/// Asserts relationships that hold however slow the machine is: a healthy poll may also
/// outlive the (1 s) timeout under load, so no exact poll numbers.
#[tokio::test]
async fn a_hung_poll_times_out_reports_unavailable_and_starts_no_other_poll() {
    let started = Arc::new(AtomicUsize::new(0));
    let (release, rx) = std::sync::mpsc::channel();
    let source = HangingSource {
        started: started.clone(),
        release: rx,
    };
    let config = Config {
        poll_timeout: Some(Duration::from_secs(1)),
        ..fast(20)
    };
    let mut h = start(16, |id, hub, t| {
        NvmlReceiver::with_source(id, &config, Box::new(source), hub, t)
    });
    let polls = |h: &Harness, result| {
        h.telemetry
            .value(
                "vla_collector_receiver_gpu_polls_total",
                &[("receiver", "nvml"), ("result", result)],
            )
            .unwrap_or(0)
    };
    // Until poll 2 hangs, only poll 1's answer (10 %) can be sent.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let b = h.next().await;
        if available(&b) == 0.0 {
            break;
        }
        assert_eq!(utilization(&b), 10.0);
        assert!(Instant::now() < deadline, "poll 2 never hung");
    }
    for _ in 0..3 {
        let b = h.next().await;
        assert_eq!(available(&b), 0.0);
        assert_eq!(b.data_points(), 2, "nothing per GPU while hung");
    }
    assert_eq!(started.load(Ordering::SeqCst), 2, "no poll while one hangs");
    let report = h.status.report();
    assert_eq!(report.status, "failing");
    assert_eq!(
        report.last_error.as_deref(),
        Some(
            "reading the GPUs did not return within 1s (a GPU may have fallen off the bus); \
             no new GPU call until it returns"
        )
    );
    // The hang and each of the 3 intervals after it.
    assert!(polls(&h, "timeout") >= 4, "{}", polls(&h, "timeout"));
    assert_eq!(polls(&h, "failed"), 0);

    release.send(()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let recovered = loop {
        let b = h.next().await;
        if available(&b) == 1.0 {
            break b;
        }
        assert!(Instant::now() < deadline, "never recovered");
    };
    // The hung poll's late answer (20 %) is dropped; a fresh poll's (10 × its number, 30 %
    // unless a slow one timed out too) is sent, and published.
    let fresh = utilization(&recovered);
    let n = started.load(Ordering::SeqCst) as f64;
    assert!(
        fresh >= 30.0 && fresh <= 10.0 * n,
        "{fresh} after {n} polls"
    );
    assert_eq!(fresh % 10.0, 0.0);
    let published = h
        .hub
        .load()
        .by_index(0)
        .and_then(|g| g.utilization_percent)
        .unwrap();
    assert!(published >= fresh, "{published} < {fresh}");
    assert_eq!(h.status.report().status, "ok");
    h.stop_within(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_given_source_is_kept_however_long_it_fails() {
    let mut script = vec![Err("GPU 0 has fallen off the bus".to_owned()); 7];
    script.push(Ok(vec![reading(0, 42.0, 60.0)]));
    let mut h = with_source(fast(20), FakeGpuSource::scripted(script), 16);
    for _ in 0..7 {
        assert_eq!(available(&h.next().await), 0.0);
    }
    const { assert!(7 > REOPEN_AFTER_FAILED_POLLS) };
    let b = h.next().await;
    assert_eq!(available(&b), 1.0);
    assert_eq!(values(&b, "vla.gpu.utilization"), [("0".to_owned(), 42.0)]);
    assert_eq!(h.status.report().source, "fake (scripted)");
    h.stop_within(Duration::from_secs(5)).await;
}

#[test]
fn real_nvml_reads_sane_values_or_is_skipped() {
    let mut source = match NvmlSource::open(None) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("SKIPPED: no NVIDIA GPU/driver: {}", e.one_line());
            return;
        }
    };
    eprintln!("testing against {}", source.describe());
    assert!(source.describe().starts_with("nvml "));
    let readings = source.poll().expect("poll after a good open");
    assert!(!readings.is_empty());
    for (i, r) in readings.iter().enumerate() {
        assert_eq!(r.index as usize, i, "index order");
        assert!(
            r.uuid.starts_with("GPU-") || r.uuid.starts_with("MIG-"),
            "{r:?}"
        );
        assert!(!r.model.is_empty(), "{r:?}");
        assert!(r.memory_total_bytes.is_some_and(|t| t > 0), "{r:?}");
        if let (Some(used), Some(total)) = (r.memory_used_bytes, r.memory_total_bytes) {
            assert!(used <= total, "{r:?}");
        }
        if let Some(u) = r.utilization_percent {
            assert!((0.0..=100.0).contains(&u), "{r:?}");
        }
        if let Some(t) = r.temperature_celsius {
            assert!((1.0..=120.0).contains(&t), "{r:?}");
        }
        if let Some(p) = r.power_watts {
            assert!(p > 0.0 && p < 5_000.0, "{r:?}");
        }
    }
    // A second poll works too (the XID event set is drained without blocking).
    let t0 = Instant::now();
    assert_eq!(source.poll().expect("second poll").len(), readings.len());
    assert!(t0.elapsed() < Duration::from_secs(5));
    // Dropping the source shuts its NVML down; opening again initialises it afresh (what the
    // receiver does after repeated failures) and reads the same GPUs.
    let uuids: Vec<String> = readings.iter().map(|r| r.uuid.clone()).collect();
    drop(source);
    let mut again = NvmlSource::open(None).expect("reopen after drop");
    let reread = again.poll().expect("poll after reopen");
    assert_eq!(
        reread.iter().map(|r| r.uuid.clone()).collect::<Vec<_>>(),
        uuids
    );
    // Two sources at once (two receivers) both work; NVML is reference-counted.
    let mut third = NvmlSource::open(None).expect("a second source");
    assert_eq!(third.poll().expect("poll").len(), uuids.len());
    drop(third);
    assert_eq!(again.poll().expect("still works").len(), uuids.len());
}
