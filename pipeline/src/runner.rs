//! The pipeline task: takes batches from the pipeline's bounded channel, runs the processors
//! in order, batches, and fans each batch out to every exporter as one `Arc` (no clone per
//! exporter). It drains and stops when every receiver's sender is gone.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::debug;

use crate::driver::ExporterHandle;
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
            send_batch_size: 8192,
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

/// One pipeline: processors, an optional batcher, and the exporters it fans out to.
pub struct Pipeline {
    name: Arc<str>,
    processors: Vec<Box<dyn Processor>>,
    batcher: Option<BatcherConfig>,
    exporters: Vec<ExporterHandle>,
    pending: Option<MetricBatch>,
    deadline: Option<Instant>,
    /// The input, held here so that an aborted or panicking pipeline can count what it held.
    input: Option<mpsc::Receiver<MetricBatch>>,
    dropped: Counter,
}

impl Pipeline {
    /// A pipeline named `name`.
    pub fn new(
        name: Arc<str>,
        processors: Vec<Box<dyn Processor>>,
        batcher: Option<BatcherConfig>,
        exporters: Vec<ExporterHandle>,
        telemetry: &SelfMetrics,
    ) -> Self {
        let dropped = telemetry.counter(
            "vla_collector_pipeline_dropped_data_points_total",
            "Data points a pipeline held when it was aborted or failed, by reason.",
            &[("pipeline", &name), ("reason", "aborted")],
        );
        Self {
            name,
            processors,
            batcher,
            exporters,
            pending: None,
            deadline: None,
            input: None,
            dropped,
        }
    }

    /// Runs until `input` is closed and drained, then flushes everything it holds.
    pub async fn run(mut self, input: mpsc::Receiver<MetricBatch>) {
        self.input = Some(input);
        let mut next_flush: Vec<Option<Instant>> = self
            .processors
            .iter()
            .map(|p| p.flush_interval().map(|i| Instant::now() + i))
            .collect();
        loop {
            let flush_due = next_flush.iter().flatten().min().copied();
            let batch_due = self.deadline;
            let Some(input) = self.input.as_mut() else {
                break;
            };
            tokio::select! {
                msg = input.recv() => match msg {
                    Some(batch) => self.ingest(batch, 0).await,
                    None => break,
                },
                _ = sleep_until_opt(batch_due) => self.emit_pending().await,
                _ = sleep_until_opt(flush_due) => {
                    let now = Instant::now();
                    for (i, next) in next_flush.iter_mut().enumerate() {
                        if next.is_some_and(|t| t <= now) {
                            *next = self.processors[i].flush_interval().map(|d| now + d);
                            self.flush_processor(i).await;
                        }
                    }
                }
            }
        }
        self.input = None;
        for i in 0..self.processors.len() {
            self.flush_processor(i).await;
        }
        self.emit_pending().await;
        debug!(pipeline = %self.name, "pipeline drained");
    }

    async fn flush_processor(&mut self, i: usize) {
        if let Some(out) = self.processors[i].flush(SystemTime::now()) {
            self.ingest(out, i + 1).await;
        }
    }

    /// Runs `batch` through processors `from..`, then into the batcher or straight out.
    async fn ingest(&mut self, mut batch: MetricBatch, from: usize) {
        for p in &mut self.processors[from..] {
            p.process(&mut batch);
            if batch.is_empty() {
                return;
            }
        }
        let Some(cfg) = &self.batcher else {
            fan_out(&self.exporters, batch).await;
            return;
        };
        let full = cfg.send_batch_size;
        match &mut self.pending {
            Some(p) => p.append(batch),
            None => {
                self.deadline = Some(Instant::now() + cfg.timeout);
                self.pending = Some(batch);
            }
        }
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.data_points() >= full)
        {
            self.emit_pending().await;
        }
    }

    async fn emit_pending(&mut self) {
        self.deadline = None;
        if let Some(batch) = self.pending.take() {
            fan_out(&self.exporters, batch).await;
        }
    }
}

impl Drop for Pipeline {
    /// An aborted or panicking pipeline still counts the data it held.
    fn drop(&mut self) {
        let mut lost = self.pending.take().map_or(0, |p| p.data_points() as u64);
        if let Some(input) = self.input.as_mut() {
            input.close();
            while let Ok(batch) = input.try_recv() {
                lost += batch.data_points() as u64;
            }
        }
        if lost > 0 {
            self.dropped.add(lost);
            tracing::error!(pipeline = %self.name, points = lost, "pipeline stopped with data still held; counted as dropped");
        }
    }
}

/// Shares one batch with every exporter.
async fn fan_out(exporters: &[ExporterHandle], batch: MetricBatch) {
    let batch = Arc::new(batch);
    for e in exporters {
        e.enqueue(batch.clone()).await;
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
    use crate::{BoxFuture, ExportError, ExportReport, Exporter};
    use parking_lot::Mutex;
    use tokio_util::sync::CancellationToken;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(usize, usize)>>);
    impl Exporter for Recorder {
        fn export(&self, b: Arc<MetricBatch>) -> BoxFuture<'_, Result<ExportReport, ExportError>> {
            self.0.lock().push((b.data_points(), Arc::strong_count(&b)));
            Box::pin(async move { Ok(ExportReport::all_sent(b.data_points())) })
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
                vec![Box::new(AddLabel)],
                Some(batcher),
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
        let task =
            tokio::spawn(Pipeline::new("metrics".into(), vec![], None, vec![ha, hb], &t).run(rx));
        tx.send(one_point()).await.expect("open");
        drop(tx);
        task.await.expect("pipeline");
        ja.await.expect("a");
        jb.await.expect("b");
        assert_eq!(a.0.lock().len(), 1);
        assert_eq!(b.0.lock().len(), 1);
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
            Pipeline::new("metrics".into(), vec![], Some(batcher), vec![], &t).run(rx),
        );
        tx.send(one_point()).await.expect("open");
        tokio::time::sleep(Duration::from_millis(10)).await; // the batcher now holds it
        task.abort();
        assert!(task.await.expect_err("aborted").is_cancelled());
        let dropped = t.value(
            "vla_collector_pipeline_dropped_data_points_total",
            &[("pipeline", "metrics"), ("reason", "aborted")],
        );
        assert_eq!(dropped, Some(1));
        assert!(tx.send(one_point()).await.is_err(), "input closed");
    }
}
