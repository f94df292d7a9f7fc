//! `on_existing`: what an enriching processor does with an attribute it would set that the
//! point (or resource) already carries. Shared by `customer_tier`, `gpu_stats` and
//! `safety_labels`; each says which value is its default.

use serde::Deserialize;

/// What to do with an attribute the processor would set that is already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnExisting {
    /// Leave the value the data arrived with.
    Keep,
    /// Replace it with the processor's value.
    Overwrite,
}

impl OnExisting {
    /// `keep`, as a serde default.
    pub(crate) fn keep() -> Self {
        OnExisting::Keep
    }

    /// `overwrite`, as a serde default.
    pub(crate) fn overwrite() -> Self {
        OnExisting::Overwrite
    }
}
