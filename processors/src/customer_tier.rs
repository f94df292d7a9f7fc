//! The `customer_tier` processor (being written).

/// The config `type` of this processor.
pub const TYPE: &str = "customer_tier";
