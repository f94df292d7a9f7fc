//! The per-metric name cache: the Prometheus names a metric family translates to, keyed by
//! (OTel name, unit, Prometheus type) and looked up without allocating.

use std::sync::Arc;

use hashbrown::Equivalent;

use super::claims::NameCollision;
use super::names::PromType;

/// Cache key of a metric family: the OTel name, unit and Prometheus type.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct FamilyKey {
    pub(super) name: Box<str>,
    pub(super) unit: Box<str>,
    pub(super) ty: PromType,
}

/// Borrowed lookup key; hashes exactly like [`FamilyKey`].
#[derive(Hash)]
pub(super) struct FamilyKeyRef<'a> {
    pub(super) name: &'a str,
    pub(super) unit: &'a str,
    pub(super) ty: PromType,
}

impl Equivalent<FamilyKey> for FamilyKeyRef<'_> {
    fn equivalent(&self, key: &FamilyKey) -> bool {
        self.ty == key.ty && *self.name == *key.name && *self.unit == *key.unit
    }
}

/// The translated names of one metric, shared by all its points.
#[derive(Debug)]
pub(super) struct FamilyNames {
    pub(super) base: Arc<str>,
    pub(super) bucket: Arc<str>,
    pub(super) sum: Arc<str>,
    pub(super) count: Arc<str>,
    /// Set when these names overlap another metric's: the metric is then dropped whole.
    pub(super) collision: Option<Arc<NameCollision>>,
}

/// Distinct (name, unit, type) families cached; past it the cache and the name claims are
/// cleared together, which bounds the claims at four names per family.
pub(super) const FAMILY_CACHE_MAX: usize = 16_384;

/// Returned if a just-inserted family is not found (never happens); avoids a panic.
pub(super) static EMPTY_NAMES: std::sync::LazyLock<FamilyNames> =
    std::sync::LazyLock::new(|| FamilyNames {
        base: Arc::from("_"),
        bucket: Arc::from("_"),
        sum: Arc::from("_"),
        count: Arc::from("_"),
        collision: None,
    });
