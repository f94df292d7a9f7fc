//! The pipeline task: takes batches from the pipeline's bounded channel, runs its stages in
//! order (processors, and `batch` wherever the config lists it), and fans each batch out to
//! every exporter as one `Arc` (no clone per exporter). It drains and stops when every
//! receiver's sender is gone.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::debug;

use crate::driver::ExporterHandle;
use crate::memory::MemoryLimiter;
use crate::self_metrics::{Counter, SelfMetrics};
use crate::{MetricBatch, Processor};

/// Batching settings (the `batch` processor of the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatcherConfig {
    /// Send once this many data points are pending.
    pub send_batch_size: usize,
    /// Send pending data at the latest this long after the first point arrived.
    pub timeout: Duration,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        Self {
            send_batch_size: 2048,
            timeout: Duration::from_millis(200),
        }
    }
}

/// Creates a pipeline's input channel, registering its length and capacity as self-metrics.
pub fn pipeline_channel(
    name: &str,
    capacity: usize,
    telemetry: &SelfMetrics,
) -> (mpsc::Sender<MetricBatch>, mpsc::Receiver<MetricBatch>) {
    let capacity = capacity.max(1);
    let (tx, rx) = mpsc::channel(capacity);
    telemetry.channel_gauges(
        (
            "vla_collector_pipeline_queue_length",
            "Batches waiting at a pipeline's input.",
        ),
        (
            "vla_collector_pipeline_queue_capacity",
            "Capacity of a pipeline's input, in batches.",
        ),
        &[("pipeline", name)],
        &tx,
    );
    (tx, rx)
}

/// One step of a pipeline, in the order of its `processors` list.
pub enum Stage {
    /// A processor object (one instance per pipeline).
    Process(Box<dyn Processor>),
    /// The `batch` processor: holds points until `send_batch_size` are pending or `timeout`
    /// has passed since the first, then passes them on to the stages after it as one batch.
    Batch(BatcherConfig),
}

impl std::fmt::Debug for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stage::Process(_) => f.write_str("Process(..)"),
            Stage::Batch(c) => f.debug_tuple("Batch").field(c).finish(),
        }
    }
}

/// A stage and its running state.
enum Running {
    Process {
        processor: Box<dyn Processor>,
        next_flush: Option<Instant>,
    },
    Batch {
        config: BatcherConfig,
        pending: Option<MetricBatch>,
        deadline: Option<Instant>,
    },
}

impl Running {
    /// When this stage next wants the pipeline's attention.
    fn due(&self) -> Option<Instant> {
        match self {
            Running::Process { next_flush, .. } => *next_flush,
            Running::Batch { deadline, .. } => *deadline,
        }
    }

    fn held(&self) -> u64 {
        match self {
            Running::Batch {
                pending: Some(p), ..
            } => p.data_points() as u64,
            _ => 0,
        }
    }
}

/// One pipeline: its stages (processors and batching, in config order) and the exporters it
/// fans out to.
pub struct Pipeline {
    name: Arc<str>,
    stages: Vec<Running>,
    exporters: Vec<ExporterHandle>,
    /// The input, held here so that an aborted or panicking pipeline can count what it held.
    input: Option<mpsc::Receiver<MetricBatch>>,
    dropped: Counter,
    /// The pipeline's `memory_limiter`: what processors emit at a flush is accounted on it.
    limiter: Option<Arc<MemoryLimiter>>,
}

impl Pipeline {
    /// A pipeline named `name`.
    pub fn new(
        name: Arc<str>,
        stages: Vec<Stage>,
        exporters: Vec<ExporterHandle>,
        telemetry: &SelfMetrics,
    ) -> Self {
        let dropped = telemetry.counter(
            "vla_collector_pipeline_dropped_data_points_total",
            "Data points a pipeline held when it was aborted or failed, by reason.",
            &[("pipeline", &name), ("reason", "aborted")],
        );
        let now = Instant::now();
        let stages = stages
            .into_iter()
            .map(|s| match s {
                Stage::Process(processor) => Running::Process {
                    next_flush: processor.flush_interval().map(|i| now + i),
                    processor,
                },
                Stage::Batch(config) => Running::Batch {
                    config,
                    pending: None,
                    deadline: None,
                },
            })
            .collect();
        Self {
            name,
            stages,
            exporters,
            input: None,
            dropped,
            limiter: None,
        }
    }

    /// The same pipeline with `limiter` accounting what its processors emit at a flush
    /// (its receivers' senders admit what enters).
    pub fn with_memory_limiter(mut self, limiter: Option<Arc<MemoryLimiter>>) -> Self {
        self.limiter = limiter;
        self
    }

    /// Runs until `input` is closed and drained, then flushes everything it holds, stage by
    /// stage in order (so what an earlier stage flushes passes through the later ones).
    pub async fn run(mut self, input: mpsc::Receiver<MetricBatch>) {
        self.input = Some(input);
        loop {
            let due = self.stages.iter().filter_map(Running::due).min();
            let Some(input) = self.input.as_mut() else {
                break;
            };
            tokio::select! {
                msg = input.recv() => match msg {
                    Some(batch) => self.ingest(batch, 0).await,
                    None => break,
                },
                _ = sleep_until_opt(due) => {
                    let now = Instant::now();
                    for i in 0..self.stages.len() {
                        if self.stages[i].due().is_some_and(|t| t <= now) {
                            self.flush_stage(i, Some(now)).await;
                        }
                    }
                }
            }
        }
        self.input = None;
        for i in 0..self.stages.len() {
            self.flush_stage(i, None).await;
        }
        for stage in &mut self.stages {
            if let Running::Process { processor, .. } = stage {
                processor.shutdown();
            }
        }
        debug!(pipeline = %self.name, "pipeline drained");
    }

    /// Flushes stage `i` (a processor's state, a batch's pending points) into the stages
    /// after it; `now` schedules the next periodic flush (`None` at the final drain).
    async fn flush_stage(&mut self, i: usize, now: Option<Instant>) {
        let out = match &mut self.stages[i] {
            Running::Process {
                processor,
                next_flush,
            } => {
                *next_flush = now.and_then(|n| processor.flush_interval().map(|d| n + d));
                let mut out = processor.flush(SystemTime::now());
                // Emitted state is held whether or not it fits: accounted, never refused.
                if let (Some(out), Some(limiter)) = (out.as_mut(), &self.limiter) {
                    out.hold(limiter.force(out.memory_bytes()));
                }
                out
            }
            Running::Batch {
                pending, deadline, ..
            } => {
                *deadline = None;
                pending.take()
            }
        };
        if let Some(out) = out {
            self.ingest(out, i + 1).await;
        }
    }

    /// Runs `batch` through stages `from..`, then out to the exporters; a batch stage that
    /// is not full yet keeps it.
    async fn ingest(&mut self, mut batch: MetricBatch, from: usize) {
        let mut i = from;
        while let Some(stage) = self.stages.get_mut(i) {
            match stage {
                Running::Process { processor, .. } => {
                    processor.process(&mut batch);
                    if batch.is_empty() {
                        return;
                    }
                }
                Running::Batch {
                    config,
                    pending,
                    deadline,
                } => {
                    match pending {
                        Some(p) => p.append(batch),
                        None => {
                            *deadline = Some(Instant::now() + config.timeout);
                            *pending = Some(batch);
                        }
                    }
                    if pending
                        .as_ref()
                        .is_none_or(|p| p.data_points() < config.send_batch_size)
                    {
                        return;
                    }
                    *deadline = None;
                    match pending.take() {
                        Some(full) => batch = full,
                        None => return,
                    }
                }
            }
            i += 1;
        }
        fan_out(&self.exporters, batch).await;
    }
}

impl Drop for Pipeline {
    /// An aborted or panicking pipeline still counts the data it held.
    fn drop(&mut self) {
        let mut lost: u64 = self.stages.iter().map(Running::held).sum();
        // What it held never reached a log: clients waiting on it are told to retry.
        for stage in &mut self.stages {
            if let Running::Batch {
                pending: Some(p), ..
            } = stage
            {
                p.take_acks().fail();
            }
        }
        if let Some(input) = self.input.as_mut() {
            input.close();
            while let Ok(mut batch) = input.try_recv() {
                lost += batch.data_points() as u64;
                batch.take_acks().fail();
            }
        }
        if lost > 0 {
            self.dropped.add(lost);
            tracing::error!(pipeline = %self.name, points = lost, "pipeline stopped with data still held; counted as dropped");
        }
    }
}

/// Shares one batch with every exporter; the ones with a write-ahead log also get its
/// acknowledgements (the clients are answered once every such log has it).
async fn fan_out(exporters: &[ExporterHandle], mut batch: MetricBatch) {
    let acks = batch.take_acks();
    let batch = Arc::new(batch);
    for e in exporters {
        if e.is_durable() && !acks.is_empty() {
            e.enqueue_with(batch.clone(), acks.clone()).await;
        } else {
            e.enqueue(batch.clone()).await;
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::{DriverConfig, spawn_exporter};
    use crate::fixtures;
    use crate::{BoxFuture, ExportError, ExportReport, Exporter, PrepareError, Prepared, Request};
    use parking_lot::Mutex;
    use tokio_util::sync::CancellationToken;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(usize, usize)>>);
    impl Exporter for Recorder {
        fn prepare(&self, b: &MetricBatch) -> Result<Prepared, PrepareError> {
            self.0.lock().push((b.data_points(), 0));
            Ok(Prepared {
                requests: Vec::new(),
                done: ExportReport::all_sent(b.data_points()),
            })
        }
        fn send<'a>(&'a self, _: &'a Request) -> BoxFuture<'a, Result<(), ExportError>> {
            Box::pin(async { Ok(()) })
        }
    }

    struct AddLabel;
    impl Processor for AddLabel {
        fn process(&mut self, batch: &mut MetricBatch) {
            batch.for_each_point_mut(|_, a| crate::upsert_str(a, "env", "test"));
        }
    }

    fn one_point() -> MetricBatch {
        MetricBatch::new(
            "otlp".into(),
            vec![fixtures::resource(
                "svc",
                vec![fixtures::gauge("g", "", &[(1.0, &[])])],
            )],
        )
    }

    #[tokio::test(start_paused = true)]
    async fn batches_by_size_and_deadline_then_drains_on_close() {
        let t = SelfMetrics::new();
        let rec = Arc::new(Recorder::default());
        let (h, join) = spawn_exporter(
            "rec".into(),
            rec.clone(),
            DriverConfig::default(),
            &t,
            CancellationToken::new(),
        );
        let batcher = BatcherConfig {
            send_batch_size: 3,
            timeout: Duration::from_secs(1),
        };
        let (tx, rx) = pipeline_channel("metrics", 8, &t);
        let task = tokio::spawn(
            Pipeline::new(
                "metrics".into(),
                vec![Stage::Process(Box::new(AddLabel)), Stage::Batch(batcher)],
                vec![h],
                &t,
            )
            .run(rx),
        );
        for _ in 0..4 {
            tx.send(one_point()).await.expect("open");
        }
        // Three points fill a batch at once; the fourth waits for the deadline.
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            rec.0.lock().iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![3]
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            rec.0.lock().iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![3, 1]
        );
        tx.send(one_point()).await.expect("open");
        drop(tx);
        task.await.expect("pipeline task");
        join.await.expect("exporter task");
        assert_eq!(
            rec.0.lock().iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![3, 1, 1]
        );
        assert_eq!(
            t.value(
                "vla_collector_exporter_sent_data_points_total",
                &[("exporter", "rec")]
            ),
            Some(5)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_stage_mid_pipeline_passes_what_it_emits_through_the_later_stages() {
        #[derive(Default)]
        struct Seen(Arc<Mutex<Vec<usize>>>);
        impl Processor for Seen {
            fn process(&mut self, batch: &mut MetricBatch) {
                self.0.lock().push(batch.data_points());
            }
        }
        let t = SelfMetrics::new();
        let rec = Arc::new(Recorder::default());
        let (h, join) = spawn_exporter(
            "rec".into(),
            rec.clone(),
            DriverConfig::default(),
            &t,
            CancellationToken::new(),
        );
        let before = Seen::default();
        let after = Seen::default();
        let (seen_before, seen_after) = (before.0.clone(), after.0.clone());
        let batcher = BatcherConfig {
            send_batch_size: 2,
            timeout: Duration::from_secs(1),
        };
        let (tx, rx) = pipeline_channel("metrics", 8, &t);
        let stages = vec![
            Stage::Process(Box::new(before)),
            Stage::Batch(batcher),
            Stage::Process(Box::new(after)),
        ];
        let task = tokio::spawn(Pipeline::new("metrics".into(), stages, vec![h], &t).run(rx));
        for _ in 0..3 {
            tx.send(one_point()).await.expect("open");
        }
        drop(tx);
        task.await.expect("pipeline");
        join.await.expect("exporter");
        assert_eq!(
            *seen_before.lock(),
            vec![1, 1, 1],
            "before batching: each request"
        );
        assert_eq!(
            *seen_after.lock(),
            vec![2, 1],
            "after: the full batch, then the rest at drain"
        );
        assert_eq!(
            rec.0.lock().iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![2, 1]
        );
    }

    #[tokio::test]
    async fn fans_out_one_shared_batch_to_every_exporter() {
        let t = SelfMetrics::new();
        let (a, b) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
        let stop = CancellationToken::new();
        let (ha, ja) = spawn_exporter(
            "a".into(),
            a.clone(),
            DriverConfig::default(),
            &t,
            stop.clone(),
        );
        let (hb, jb) = spawn_exporter("b".into(), b.clone(), DriverConfig::default(), &t, stop);
        let (tx, rx) = pipeline_channel("metrics", 8, &t);
        let task = tokio::spawn(Pipeline::new("metrics".into(), vec![], vec![ha, hb], &t).run(rx));
        tx.send(one_point()).await.expect("open");
        drop(tx);
        task.await.expect("pipeline");
        ja.await.expect("a");
        jb.await.expect("b");
        assert_eq!(a.0.lock().len(), 1);
        assert_eq!(b.0.lock().len(), 1);
    }

    #[tokio::test]
    async fn what_a_processor_emits_at_a_flush_is_accounted_until_the_exporter_is_done() {
        use crate::memory::{LimitMode, Limits, MemoryLimiter};
        /// Emits one point at every flush.
        struct Emitter;
        impl Processor for Emitter {
            fn process(&mut self, batch: &mut MetricBatch) {
                *batch = MetricBatch::new("x".into(), Vec::new());
            }
            fn flush_interval(&self) -> Option<Duration> {
                Some(Duration::from_secs(3600))
            }
            fn flush(&mut self, _: SystemTime) -> Option<MetricBatch> {
                Some(one_point())
            }
        }
        /// Sends once the test allows it.
        struct Gate(tokio::sync::Semaphore);
        impl Exporter for Gate {
            fn prepare(&self, b: &MetricBatch) -> Result<Prepared, PrepareError> {
                Ok(Prepared {
                    requests: vec![Request {
                        payload: bytes::Bytes::new(),
                        samples: 1,
                        points: b.data_points() as u64,
                        lane: 0,
                    }],
                    done: ExportReport::default(),
                })
            }
            fn send<'a>(&'a self, _: &'a Request) -> BoxFuture<'a, Result<(), ExportError>> {
                Box::pin(async {
                    let _ = self.0.acquire().await.map(|p| p.forget());
                    Ok(())
                })
            }
        }
        let t = SelfMetrics::new();
        let limiter = MemoryLimiter::new(
            "memory_limiter".into(),
            Limits {
                limit_bytes: 1 << 20,
                spike_limit_bytes: 0,
                mode: LimitMode::Refuse,
            },
            &t,
        );
        let gate = Arc::new(Gate(tokio::sync::Semaphore::new(0)));
        let (h, join) = spawn_exporter(
            "gate".into(),
            gate.clone(),
            DriverConfig::default(),
            &t,
            CancellationToken::new(),
        );
        let (tx, rx) = pipeline_channel("metrics", 8, &t);
        let task = tokio::spawn(
            Pipeline::new(
                "metrics".into(),
                vec![Stage::Process(Box::new(Emitter))],
                vec![h],
                &t,
            )
            .with_memory_limiter(Some(limiter.clone()))
            .run(rx),
        );
        drop(tx); // the final drain flushes the emitter
        task.await.expect("pipeline");
        assert_eq!(
            limiter.used(),
            one_point().memory_bytes(),
            "the emitted batch is held while the exporter has it"
        );
        gate.0.add_permits(1);
        join.await.expect("exporter");
        assert_eq!(limiter.used(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_aborted_pipeline_counts_what_it_held() {
        let t = SelfMetrics::new();
        let batcher = BatcherConfig {
            send_batch_size: 100,
            timeout: Duration::from_secs(3600),
        };
        let (tx, rx) = pipeline_channel("metrics", 8, &t);
        let task = tokio::spawn(
            Pipeline::new("metrics".into(), vec![Stage::Batch(batcher)], vec![], &t).run(rx),
        );
        // The batch carries a client's acknowledgement (a durable pipeline).
        let (ack, waiter) = crate::ack::Ack::new();
        let mut held = one_point();
        held.carry_ack(ack);
        tx.send(held).await.expect("open");
        tokio::time::sleep(Duration::from_millis(10)).await; // the batcher now holds it
        task.abort();
        assert!(task.await.expect_err("aborted").is_cancelled());
        let dropped = t.value(
            "vla_collector_pipeline_dropped_data_points_total",
            &[("pipeline", "metrics"), ("reason", "aborted")],
        );
        assert_eq!(dropped, Some(1));
        assert!(
            !waiter.wait().await,
            "the client is not told its data is stored"
        );
        assert!(tx.send(one_point()).await.is_err(), "input closed");
    }
}
