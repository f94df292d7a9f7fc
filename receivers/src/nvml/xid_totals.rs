//! `vla.gpu.xid.errors` across re-opens of the source: a source counts the critical XID
//! events it saw since it opened, and the receiver drops and re-opens a source whose polls
//! keep failing, so [`XidTotals`] adds the totals of the sources dropped before to the current
//! one's, per GPU, keeping the counter monotonic from the receiver's start.

use vla_pipeline::gpu::GpuReading;

/// Keeps `vla.gpu.xid.errors` counting from the receiver's start: a source counts the XID
/// events it saw since it opened, so the totals of the sources dropped before are added to
/// the current one's, per GPU (by UUID).
#[derive(Debug, Default)]
pub(super) struct XidTotals {
    gpus: Vec<XidGpu>,
}

#[derive(Debug)]
struct XidGpu {
    uuid: String,
    index: u32,
    /// The totals of the sources dropped before.
    carried: u64,
    /// The current source's latest total.
    current: u64,
    /// The latest XID code seen, for the readings of a new source that has seen none yet.
    last_code: Option<u64>,
}

impl XidTotals {
    /// Adds the carried totals to `readings` (those reporting XID counts).
    pub(super) fn apply(&mut self, readings: &mut [GpuReading]) {
        for r in readings {
            let Some(total) = r.xid_errors_total else {
                continue;
            };
            // By UUID (indices may shift after a reload), by index where no UUID is known.
            let found = self
                .gpus
                .iter()
                .position(|g| g.uuid == r.uuid && (!r.uuid.is_empty() || g.index == r.index));
            let gpu = match found {
                Some(i) => &mut self.gpus[i],
                None => {
                    self.gpus.push(XidGpu {
                        uuid: r.uuid.clone(),
                        index: r.index,
                        carried: 0,
                        current: 0,
                        last_code: None,
                    });
                    let last = self.gpus.len() - 1;
                    &mut self.gpus[last]
                }
            };
            gpu.current = total;
            if total > 0 {
                gpu.last_code = r.last_xid;
            } else if gpu.carried > 0 && r.last_xid.is_some() {
                r.last_xid = gpu.last_code.or(r.last_xid);
            }
            r.xid_errors_total = Some(gpu.carried.saturating_add(total));
        }
    }

    /// The source was dropped: its totals are carried into the next one's.
    pub(super) fn source_dropped(&mut self) {
        for g in &mut self.gpus {
            g.carried = g.carried.saturating_add(g.current);
            g.current = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(index: u32, uuid: &str, xid: Option<(u64, u64)>) -> GpuReading {
        GpuReading {
            index,
            uuid: uuid.to_owned(),
            xid_errors_total: xid.map(|(total, _)| total),
            last_xid: xid.map(|(_, code)| code),
            ..GpuReading::default()
        }
    }

    /// `(total, last code)` of each reading after `apply`.
    fn applied(t: &mut XidTotals, mut readings: Vec<GpuReading>) -> Vec<Option<(u64, u64)>> {
        t.apply(&mut readings);
        readings
            .iter()
            .map(|r| r.xid_errors_total.zip(r.last_xid))
            .collect()
    }

    #[test]
    fn totals_carry_across_sources_per_gpu_by_uuid() {
        let mut t = XidTotals::default();
        // Without a re-open the source's totals pass through.
        let first = vec![
            gpu(0, "GPU-a", Some((2, 79))),
            gpu(1, "GPU-b", Some((0, 0))),
        ];
        assert_eq!(applied(&mut t, first), [Some((2, 79)), Some((0, 0))]);
        let first = vec![
            gpu(0, "GPU-a", Some((3, 48))),
            gpu(1, "GPU-b", Some((1, 13))),
        ];
        assert_eq!(applied(&mut t, first), [Some((3, 48)), Some((1, 13))]);
        t.source_dropped();
        // The new source starts at 0 (and its indices moved): the totals and the last codes
        // carry over by UUID.
        let second = vec![gpu(0, "GPU-b", Some((0, 0))), gpu(1, "GPU-a", Some((0, 0)))];
        assert_eq!(applied(&mut t, second), [Some((1, 13)), Some((3, 48))]);
        let second = vec![
            gpu(0, "GPU-b", Some((2, 31))),
            gpu(1, "GPU-a", Some((0, 0))),
        ];
        assert_eq!(applied(&mut t, second), [Some((3, 31)), Some((3, 48))]);
        t.source_dropped();
        t.source_dropped(); // twice in a row (no good poll in between) adds nothing
        let third = vec![
            gpu(0, "GPU-b", Some((1, 94))),
            gpu(1, "GPU-a", Some((0, 0))),
        ];
        assert_eq!(applied(&mut t, third), [Some((4, 94)), Some((3, 48))]);
    }

    #[test]
    fn readings_without_xid_support_or_uuid() {
        let mut t = XidTotals::default();
        // No XID support: left alone. No UUID: matched by index.
        let first = vec![gpu(0, "", Some((5, 62))), gpu(1, "GPU-b", None)];
        assert_eq!(applied(&mut t, first), [Some((5, 62)), None]);
        t.source_dropped();
        let second = vec![gpu(0, "", Some((0, 0))), gpu(1, "", Some((0, 0)))];
        assert_eq!(applied(&mut t, second), [Some((5, 62)), Some((0, 0))]);
    }
}
