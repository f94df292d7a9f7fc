//! The health of a lookup source refreshed in the background (a customer table from a file or
//! PostgreSQL, the GPU snapshot from NVML), shared between the refresher and `/ready`.
//!
//! A refresher calls [`SourceStatus::success`] after each good load and
//! [`SourceStatus::failure`] after each failed one; the processor keeps using its last good
//! snapshot either way. The collector shows [`SourceStatus::report`] in `/ready`'s details, so
//! an operator sees a stale table without the collector leaving service over it.

use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;

/// What `/ready` shows of one source.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SourceReport {
    /// The source, in words without secrets: `file configs/customers.yaml`, `postgres
    /// db.internal:5432/billing`, `nvml`, `fake`.
    pub source: String,
    /// `ok` after a good load, `failing` while the latest attempt failed, `pending` before the
    /// first attempt finished.
    pub status: &'static str,
    /// Entries in the snapshot in use (customers, GPUs).
    pub entries: u64,
    /// When the snapshot in use was loaded, as Unix seconds.
    pub loaded_at_unix: Option<u64>,
    /// Failed attempts since the last good one.
    pub consecutive_failures: u64,
    /// Failed attempts since start.
    pub failures_total: u64,
    /// The latest failure, one line, no secrets.
    pub last_error: Option<String>,
}

/// A shared, cheap-to-clone handle on a source's [`SourceReport`].
#[derive(Debug, Clone)]
pub struct SourceStatus(Arc<Mutex<SourceReport>>);

impl SourceStatus {
    /// A `pending` source described as `source`.
    pub fn new(source: impl Into<String>) -> Self {
        Self(Arc::new(Mutex::new(SourceReport {
            source: source.into(),
            status: "pending",
            ..SourceReport::default()
        })))
    }

    /// Records a good load of `entries` entries, now.
    pub fn success(&self, entries: u64) {
        let mut r = self.0.lock();
        r.status = "ok";
        r.entries = entries;
        r.loaded_at_unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs());
        r.consecutive_failures = 0;
    }

    /// Records a failed attempt; the snapshot in use (and its entry count) stays.
    pub fn failure(&self, error: impl Into<String>) {
        let mut r = self.0.lock();
        r.status = "failing";
        r.consecutive_failures += 1;
        r.failures_total += 1;
        r.last_error = Some(error.into());
    }

    /// A copy of the current report.
    pub fn report(&self) -> SourceReport {
        self.0.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_keep_the_last_good_entries() {
        let s = SourceStatus::new("file customers.yaml");
        assert_eq!(s.report().status, "pending");
        s.success(3);
        s.failure("customers.yaml:4: bad row");
        s.failure("customers.yaml:4: bad row");
        let r = s.report();
        assert_eq!(
            (
                r.status,
                r.entries,
                r.consecutive_failures,
                r.failures_total
            ),
            ("failing", 3, 2, 2)
        );
        assert!(r.loaded_at_unix.is_some());
        s.success(4);
        let r = s.report();
        assert_eq!((r.status, r.entries, r.consecutive_failures), ("ok", 4, 0));
        assert_eq!(r.failures_total, 2);
        assert_eq!(r.last_error.as_deref(), Some("customers.yaml:4: bad row"));
    }
}
