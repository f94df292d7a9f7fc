//! Stale markers for series that stop arriving (`stale_after`).
//!
//! Prometheus marks a scraped series stale the moment a scrape lacks it; a series pushed by
//! remote write instead lingers in queries for the 5-minute lookback. With `stale_after`
//! set, the encoder remembers every series it wrote (its encoded labels, its shard, its last
//! sample time), and when a batch is encoded after a series went `stale_after` without a
//! sample (looked for at most once a second), it writes the Prometheus stale marker (a NaN with fixed bits) for it once and
//! forgets it. The marker is timestamped 1 ms after the series' last sample: never refused as
//! out of order, and never ahead of a sample the series may still send later (a lagging
//! source resuming), which would get that sample's whole request refused.
//!
//! Markers ride on the batches of the sources still reporting: when every source stops, no
//! batch is encoded and none is written (the lookback then ends the series).

use std::collections::HashMap;

/// One remembered series.
#[derive(Debug)]
struct Entry {
    /// The encoded `TimeSeries.labels` entries.
    labels: Box<[u8]>,
    shard: u32,
    /// Wall-clock milliseconds of the encode round that last saw it.
    seen_ms: i64,
    /// Its newest sample's timestamp.
    newest_ms: i64,
}

/// The series an encoder wrote, for their stale markers.
#[derive(Debug)]
pub(crate) struct StaleTracker {
    after_ms: i64,
    /// The next round that looks for silent series (at most one scan per second, or per
    /// quarter of `stale_after` when that is shorter): a scan walks every series.
    next_scan_ms: i64,
    series: HashMap<u64, Entry, foldhash::fast::FixedState>,
}

/// A stale marker to write: the series' labels and shard, and the marker's timestamp.
pub(crate) struct Marker {
    pub labels: Box<[u8]>,
    pub shard: usize,
    pub timestamp_ms: i64,
}

impl StaleTracker {
    pub fn new(after: std::time::Duration) -> Self {
        Self {
            after_ms: i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
            next_scan_ms: i64::MIN,
            series: HashMap::with_hasher(foldhash::fast::FixedState::with_seed(0x5eed)),
        }
    }

    /// Records that series `hash` (labels `labels`, in `shard`) got a sample at `ts_ms`
    /// in the round at `now_ms`.
    pub fn seen(&mut self, hash: u64, labels: &[u8], shard: usize, ts_ms: i64, now_ms: i64) {
        match self.series.get_mut(&hash) {
            Some(e) => {
                e.seen_ms = now_ms;
                e.newest_ms = e.newest_ms.max(ts_ms);
            }
            None => {
                self.series.insert(
                    hash,
                    Entry {
                        labels: labels.into(),
                        shard: shard as u32,
                        seen_ms: now_ms,
                        newest_ms: ts_ms,
                    },
                );
            }
        }
    }

    /// Takes out the series not seen for `stale_after` by `now_ms`, as markers.
    pub fn expire(&mut self, now_ms: i64) -> Vec<Marker> {
        if now_ms < self.next_scan_ms {
            return Vec::new();
        }
        self.next_scan_ms = now_ms.saturating_add((self.after_ms / 4).clamp(1, 1000));
        let cutoff = now_ms.saturating_sub(self.after_ms);
        let mut out = Vec::new();
        self.series.retain(|_, e| {
            if e.seen_ms > cutoff {
                return true;
            }
            out.push(Marker {
                labels: std::mem::take(&mut e.labels),
                shard: e.shard as usize,
                timestamp_ms: e.newest_ms.saturating_add(1),
            });
            false
        });
        out
    }
}
