//! The `safety_labels` processor (being written).

/// The config `type` of this processor.
pub const TYPE: &str = "safety_labels";
