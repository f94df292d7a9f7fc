//! The exporter the periodic reader calls: the OTLP exporter, plus counts of what happened and
//! failure logs a flapping collector cannot turn into a flood.
//!
//! A failed export is logged once when the collector becomes unreachable, then at most once a
//! minute with the number of failures since, and once more when export recovers. The API never
//! waits for any of it: instruments aggregate in memory, and export runs on the reader's thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use parking_lot::Mutex;

/// How often a continuing outage is logged again.
const REPEAT_LOG_EVERY: Duration = Duration::from_secs(60);

/// Counts of export attempts since start.
#[derive(Debug, Default)]
pub struct ExportStats {
    succeeded: AtomicU64,
    failed: AtomicU64,
}

impl ExportStats {
    /// Exports the collector accepted.
    pub fn succeeded(&self) -> u64 {
        self.succeeded.load(Ordering::Relaxed)
    }

    /// Exports that failed (after the OTLP exporter's own retries).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

/// Where the failure log stands.
#[derive(Debug, Default)]
struct Outage {
    /// When the current outage's last log line was written; `None` while healthy.
    logged_at: Option<Instant>,
    /// Failures since that line.
    since_log: u64,
    /// Failures in this outage.
    total: u64,
}

impl Outage {
    /// A failed export at `now`: `Some(n)` when a line is due, `n` failures since the last.
    fn on_failure(&mut self, now: Instant) -> Option<u64> {
        self.total += 1;
        self.since_log += 1;
        let due = self
            .logged_at
            .is_none_or(|at| now.duration_since(at) >= REPEAT_LOG_EVERY);
        if !due {
            return None;
        }
        self.logged_at = Some(now);
        Some(std::mem::take(&mut self.since_log))
    }

    /// A successful export: `Some(n)` when it ends a logged outage of `n` failures.
    fn on_success(&mut self) -> Option<u64> {
        let was = std::mem::take(self);
        was.logged_at.map(|_| was.total)
    }
}

/// Wraps the OTLP exporter with stats and rate-limited logging.
pub(crate) struct CountingExporter<E> {
    inner: E,
    endpoint: String,
    stats: Arc<ExportStats>,
    outage: Mutex<Outage>,
}

impl<E> CountingExporter<E> {
    pub(crate) fn new(inner: E, endpoint: String, stats: Arc<ExportStats>) -> Self {
        Self {
            inner,
            endpoint,
            stats,
            outage: Mutex::new(Outage::default()),
        }
    }

    fn record(&self, result: &OTelSdkResult) {
        let mut outage = self.outage.lock();
        match result {
            Ok(()) => {
                self.stats.succeeded.fetch_add(1, Ordering::Relaxed);
                if let Some(failed) = outage.on_success() {
                    tracing::info!(
                        endpoint = %self.endpoint,
                        failed_exports = failed,
                        "metric export recovered"
                    );
                }
            }
            Err(error) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                if let Some(failed) = outage.on_failure(Instant::now()) {
                    tracing::warn!(
                        endpoint = %self.endpoint,
                        %error,
                        failed_exports = failed,
                        "metric export failed; recording goes on and the next export tries again"
                    );
                }
            }
        }
    }
}

impl<E: PushMetricExporter> PushMetricExporter for CountingExporter<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        self.record(&result);
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_logged_once_then_once_a_minute_then_on_recovery() {
        let mut o = Outage::default();
        let t0 = Instant::now();
        assert_eq!(o.on_success(), None, "healthy: nothing to say");
        assert_eq!(o.on_failure(t0), Some(1), "the first failure is logged");
        for s in 1..=59 {
            assert_eq!(o.on_failure(t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(
            o.on_failure(t0 + Duration::from_secs(60)),
            Some(60),
            "a minute later, with the count since"
        );
        assert_eq!(o.on_failure(t0 + Duration::from_secs(61)), None);
        assert_eq!(o.on_success(), Some(62), "recovery names the whole outage");
        assert_eq!(o.on_success(), None);
        assert_eq!(
            o.on_failure(t0 + Duration::from_secs(62)),
            Some(1),
            "a new outage"
        );
    }
}
