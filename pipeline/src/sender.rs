//! `PipelineSender`: how a receiver hands batches to the pipelines it feeds.
//!
//! A receiver may feed several pipelines. A batch is accepted only when every pipeline has
//! room for it (capacity is reserved on all of them first), so a client retrying a refused
//! request never duplicates data in the pipelines that had room. Accepted and refused points
//! are counted here, once, for every receiver.
//!
//! A pipeline that lists a `memory_limiter` has its batches admitted by it first
//! ([`crate::memory`]): each copy of a batch gets a reservation of its bytes, held until the
//! last exporter is done with it. In refuse mode a batch that does not fit is refused for
//! every pipeline (retryable, like a full pipeline); in drop mode it is dropped for that
//! pipeline only, counted, and the client is told it was accepted.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::ack::Ack;
use crate::memory::{LimitMode, MemoryLimiter, Reservation};
use crate::self_metrics::{Counter, Gauge, SelfMetrics};
use crate::{ComponentId, MetricBatch};

/// What a target's memory limiter made of a batch.
enum Admission {
    /// The target has no limiter (or its reservation has moved into the batch).
    Unlimited,
    /// Its bytes are reserved; the reservation travels with the target's copy.
    Held(Reservation),
    /// A drop-mode limiter dropped it for this target (counted).
    Dropped,
}

/// Why a batch was refused; every reason is retryable for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// A pipeline stayed full for the whole wait.
    #[error("pipeline is full, retry later")]
    Full,
    /// The collector is shutting down.
    #[error("collector is shutting down")]
    Closed,
    /// A `memory_limiter` holds as many bytes in flight as it admits.
    #[error("collector is at its memory limit, retry later")]
    MemoryLimit,
    /// A durable exporter could not write the batch to its write-ahead log.
    #[error("the write-ahead log could not store the data, retry later")]
    NotPersisted,
}

impl SendError {
    /// How long the client should wait before retrying.
    pub fn retry_after(self) -> Duration {
        match self {
            SendError::Full | SendError::MemoryLimit | SendError::NotPersisted => {
                Duration::from_secs(1)
            }
            SendError::Closed => Duration::from_secs(5),
        }
    }
}

/// The sending side of one receiver into its pipelines; cheap to clone.
#[derive(Clone)]
pub struct PipelineSender {
    targets: Arc<[mpsc::Sender<MetricBatch>]>,
    /// The memory limiter of each target, in the same order.
    limiters: Arc<[Option<Arc<MemoryLimiter>>]>,
    /// Whether each target fans out to an exporter with a write-ahead log: then the client
    /// is answered only once the batch is in the log ([`crate::ack`]).
    durable: Arc<[bool]>,
    max_wait: Duration,
    accepted: Counter,
    refused_full: Counter,
    refused_closed: Counter,
    refused_memory: Counter,
    refused_persist: Counter,
    waiting: Gauge,
}

/// Counts one request waiting for room while it lives.
struct Waiting<'a>(&'a Gauge);

impl<'a> Waiting<'a> {
    fn new(g: &'a Gauge) -> Self {
        g.add(1);
        Self(g)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.add(-1);
    }
}

impl std::fmt::Debug for PipelineSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineSender")
            .field("targets", &self.targets.len())
            .finish_non_exhaustive()
    }
}

impl PipelineSender {
    /// A sender for `receiver` into `targets`, waiting at most `max_wait` for room.
    pub fn new(
        receiver: &ComponentId,
        targets: Vec<mpsc::Sender<MetricBatch>>,
        max_wait: Duration,
        telemetry: &SelfMetrics,
    ) -> Self {
        let labels = |reason: Option<&str>| -> Vec<(&str, String)> {
            let mut l = vec![("receiver", receiver.to_string())];
            if let Some(r) = reason {
                l.push(("reason", r.to_owned()));
            }
            l
        };
        let reg = |name, help, reason| {
            let l = labels(reason);
            let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
            telemetry.counter(name, help, &l)
        };
        Self {
            limiters: targets.iter().map(|_| None).collect(),
            durable: targets.iter().map(|_| false).collect(),
            targets: targets.into(),
            max_wait,
            accepted: reg(
                "vla_collector_receiver_accepted_data_points_total",
                "Data points accepted by a receiver into its pipelines.",
                None,
            ),
            refused_full: reg(
                "vla_collector_receiver_refused_data_points_total",
                "Data points refused by a receiver with a retryable status, by reason.",
                Some("pipeline_full"),
            ),
            refused_closed: reg(
                "vla_collector_receiver_refused_data_points_total",
                "Data points refused by a receiver with a retryable status, by reason.",
                Some("shutting_down"),
            ),
            refused_memory: reg(
                "vla_collector_receiver_refused_data_points_total",
                "Data points refused by a receiver with a retryable status, by reason.",
                Some("memory_limit"),
            ),
            refused_persist: reg(
                "vla_collector_receiver_refused_data_points_total",
                "Data points refused by a receiver with a retryable status, by reason.",
                Some("not_persisted"),
            ),
            waiting: {
                let l = labels(None);
                let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
                telemetry.gauge(
                    "vla_collector_receiver_waiting_requests",
                    "Requests a receiver holds while waiting for room in a full pipeline.",
                    &l,
                )
            },
        }
    }

    /// The same sender, its batches admitted by the memory limiter of each target (in the
    /// order of the targets; `None` where a pipeline has none).
    pub fn with_memory_limiters(mut self, limiters: Vec<Option<Arc<MemoryLimiter>>>) -> Self {
        assert_eq!(
            limiters.len(),
            self.targets.len(),
            "one limiter slot per target"
        );
        self.limiters = limiters.into();
        self
    }

    /// The same sender, answering only once the batch is in the write-ahead log of every
    /// durable exporter, for the targets marked `true` (in the order of the targets).
    pub fn with_durable(mut self, durable: Vec<bool>) -> Self {
        assert_eq!(durable.len(), self.targets.len(), "one flag per target");
        self.durable = durable.into();
        self
    }

    /// Whether a memory limiter in refuse mode refuses everything now: receivers ask before
    /// they read or decode a request, and answer [`SendError::MemoryLimit`].
    pub fn refusing(&self) -> Option<SendError> {
        self.limiters
            .iter()
            .flatten()
            .any(|l| l.refusing())
            .then_some(SendError::MemoryLimit)
    }

    /// Reserves the batch's bytes on each target's limiter, one [`Admission`] per target. A
    /// refuse-mode limiter that says no refuses the batch whole (what was reserved is given
    /// back as the reservations drop).
    fn reserve(&self, batch: &MetricBatch, points: u64) -> Result<Vec<Admission>, SendError> {
        if self.limiters.iter().all(Option::is_none) {
            return Ok(Vec::new());
        }
        let bytes = batch.memory_bytes();
        let mut admissions = Vec::with_capacity(self.limiters.len());
        for limiter in self.limiters.iter() {
            let Some(limiter) = limiter else {
                admissions.push(Admission::Unlimited);
                continue;
            };
            match limiter.try_reserve(bytes) {
                Some(r) => admissions.push(Admission::Held(r)),
                None => {
                    limiter.count_not_admitted(points);
                    match limiter.limits().mode {
                        LimitMode::Refuse => {
                            self.refused_memory.add(points);
                            return Err(SendError::MemoryLimit);
                        }
                        LimitMode::Drop => admissions.push(Admission::Dropped),
                    }
                }
            }
        }
        Ok(admissions)
    }

    /// Hands `batch` to every pipeline, or refuses it whole.
    pub async fn send(&self, batch: MetricBatch) -> Result<(), SendError> {
        let points = batch.data_points() as u64;
        // Memory first: a refusal then holds no channel slot.
        let mut admissions = self.reserve(&batch, points)?;
        // No limiter: every target, none held.
        admissions.resize_with(self.targets.len(), || Admission::Unlimited);
        let mut permits = Vec::with_capacity(self.targets.len());
        for (t, (target, admission)) in self.targets.iter().zip(&mut admissions).enumerate() {
            if matches!(admission, Admission::Dropped) {
                continue;
            }
            let permit = match target.try_reserve() {
                Ok(p) => Ok(p),
                Err(mpsc::error::TrySendError::Closed(())) => Err(SendError::Closed),
                Err(mpsc::error::TrySendError::Full(())) => {
                    let _waiting = Waiting::new(&self.waiting);
                    match tokio::time::timeout(self.max_wait, target.reserve()).await {
                        Ok(Ok(p)) => Ok(p),
                        Ok(Err(_)) => Err(SendError::Closed),
                        Err(_) => Err(SendError::Full),
                    }
                }
            };
            match permit {
                Ok(p) => permits.push((
                    p,
                    std::mem::replace(admission, Admission::Unlimited),
                    self.durable.get(t).copied().unwrap_or(false),
                )),
                Err(e) => {
                    match e {
                        SendError::Full => self.refused_full.add(points),
                        SendError::Closed => self.refused_closed.add(points),
                        SendError::MemoryLimit => self.refused_memory.add(points),
                        SendError::NotPersisted => self.refused_persist.add(points),
                    }
                    return Err(e);
                }
            }
        }
        let mut batch = Some(batch);
        let n = permits.len();
        let (ack, waiter) = if permits.iter().any(|p| p.2) {
            let (a, w) = Ack::new();
            (Some(a), Some(w))
        } else {
            (None, None)
        };
        for (i, (permit, admission, durable)) in permits.into_iter().enumerate() {
            let b = if i + 1 == n {
                batch.take()
            } else {
                batch.clone()
            };
            if let Some(mut b) = b {
                if let Admission::Held(r) = admission {
                    b.hold(r);
                }
                if let (true, Some(a)) = (durable, &ack) {
                    b.carry_ack(a.clone());
                }
                permit.send(b);
            }
        }
        drop(ack);
        if let Some(w) = waiter
            && !w.wait().await
        {
            self.refused_persist.add(points);
            return Err(SendError::NotPersisted);
        }
        self.accepted.add(points);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    fn batch(points: usize) -> MetricBatch {
        let vals: Vec<(f64, &[(&str, &str)])> = (0..points).map(|i| (i as f64, &[][..])).collect();
        MetricBatch::new(
            "otlp".into(),
            vec![fixtures::resource(
                "svc",
                vec![fixtures::gauge("g", "", &vals)],
            )],
        )
    }

    #[tokio::test]
    async fn refuses_whole_when_any_pipeline_is_full_and_counts() {
        let t = SelfMetrics::new();
        let (tx1, mut rx1) = mpsc::channel(1);
        let (tx2, mut rx2) = mpsc::channel(1);
        let s = PipelineSender::new(
            &"otlp".into(),
            vec![tx1, tx2.clone()],
            Duration::from_millis(10),
            &t,
        );
        s.send(batch(3)).await.expect("room in both");
        assert_eq!(rx1.recv().await.map(|b| b.data_points()), Some(3));
        // Pipeline 2 still holds its batch: the next send must be refused for both.
        assert_eq!(s.send(batch(2)).await, Err(SendError::Full));
        assert!(
            rx1.try_recv().is_err(),
            "pipeline 1 must not get a partial delivery"
        );
        assert_eq!(rx2.recv().await.map(|b| b.data_points()), Some(3));
        let acc = t.value(
            "vla_collector_receiver_accepted_data_points_total",
            &[("receiver", "otlp")],
        );
        let refused = t.value(
            "vla_collector_receiver_refused_data_points_total",
            &[("receiver", "otlp"), ("reason", "pipeline_full")],
        );
        assert_eq!((acc, refused), (Some(3), Some(2)));
        drop(rx2);
        assert_eq!(s.send(batch(1)).await, Err(SendError::Closed));
    }
}
