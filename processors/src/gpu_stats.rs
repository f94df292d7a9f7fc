//! The `gpu_stats` processor (being written).

/// The config `type` of this processor.
pub const TYPE: &str = "gpu_stats";
