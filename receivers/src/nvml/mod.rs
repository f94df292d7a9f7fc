//! The `nvml` receiver (being written).

/// The config `type` of this receiver.
pub const TYPE: &str = "nvml";
