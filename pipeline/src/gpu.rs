//! The latest GPU readings, shared between the `nvml` receiver (which polls the GPUs and
//! publishes a [`GpuSnapshot`]) and the `gpu_stats` processor (which joins it onto request
//! metrics that carry a `gpu_id`).
//!
//! The collector makes one [`GpuSnapshots`] hub and hands it to both; publishing swaps an
//! `Arc` atomically, so a processor's lookup never waits on the poller.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

/// One GPU's reading. Values the device or driver does not support are `None`, never NVML's
/// "not supported" sentinels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuReading {
    /// The GPU's index on its host (`gpu_id`, DCGM's `gpu`).
    pub index: u32,
    /// The GPU's UUID (`GPU-...`).
    pub uuid: String,
    /// The product name, e.g. `NVIDIA H100 80GB HBM3`.
    pub model: String,
    /// Compute utilization over the driver's last sample period, 0 to 100.
    pub utilization_percent: Option<f64>,
    /// Memory-controller utilization, 0 to 100.
    pub memory_utilization_percent: Option<f64>,
    /// Core temperature in degrees Celsius.
    pub temperature_celsius: Option<f64>,
    /// Framebuffer memory in use, bytes.
    pub memory_used_bytes: Option<u64>,
    /// Framebuffer memory free, bytes.
    pub memory_free_bytes: Option<u64>,
    /// Framebuffer memory installed, bytes.
    pub memory_total_bytes: Option<u64>,
    /// Power draw in watts.
    pub power_watts: Option<f64>,
    /// Total energy since the driver loaded, joules.
    pub energy_joules: Option<f64>,
    /// SM clock, MHz.
    pub sm_clock_mhz: Option<u32>,
    /// Memory clock, MHz.
    pub memory_clock_mhz: Option<u32>,
    /// Corrected (single-bit) ECC errors since the driver loaded.
    pub ecc_corrected_total: Option<u64>,
    /// Uncorrected (double-bit) ECC errors since the driver loaded.
    pub ecc_uncorrected_total: Option<u64>,
    /// XID errors seen by the receiver since it started (NVML reports them as events).
    pub xid_errors_total: Option<u64>,
    /// The latest XID error code seen, 0 when none.
    pub last_xid: Option<u64>,
}

/// Every GPU of the host at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuSnapshot {
    /// The readings, ordered by index.
    pub gpus: Vec<GpuReading>,
    /// When the readings were taken; `None` before the first poll.
    pub taken_at: Option<SystemTime>,
}

impl GpuSnapshot {
    /// The reading of the GPU with this index.
    pub fn by_index(&self, index: u32) -> Option<&GpuReading> {
        self.gpus.iter().find(|g| g.index == index)
    }

    /// The reading of the GPU with this UUID.
    pub fn by_uuid(&self, uuid: &str) -> Option<&GpuReading> {
        self.gpus.iter().find(|g| g.uuid == uuid)
    }
}

/// The hub: the latest [`GpuSnapshot`], swapped atomically; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct GpuSnapshots(Arc<ArcSwap<GpuSnapshot>>);

impl GpuSnapshots {
    /// An empty hub (no GPU known until the first publish).
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the snapshot.
    pub fn publish(&self, snapshot: GpuSnapshot) {
        self.0.store(Arc::new(snapshot));
    }

    /// The latest snapshot.
    pub fn load(&self) -> Arc<GpuSnapshot> {
        self.0.load_full()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_replaces_what_readers_see() {
        let hub = GpuSnapshots::new();
        let reader = hub.clone();
        assert!(reader.load().gpus.is_empty());
        hub.publish(GpuSnapshot {
            gpus: vec![GpuReading {
                index: 1,
                uuid: "GPU-1".into(),
                model: "NVIDIA H100 80GB HBM3".into(),
                ..GpuReading::default()
            }],
            taken_at: Some(SystemTime::now()),
        });
        let snap = reader.load();
        assert_eq!(
            snap.by_index(1).map(|g| g.model.as_str()),
            Some("NVIDIA H100 80GB HBM3")
        );
        assert_eq!(snap.by_uuid("GPU-1").map(|g| g.index), Some(1));
        assert!(snap.by_index(0).is_none());
    }
}
