//! Prometheus name claims: which OTel metric owns each Prometheus name, so that two different
//! metrics never write into one family.
//!
//! The OpenTelemetry "Prometheus and OpenMetrics Compatibility" spec says exporters MUST drop
//! entire metrics to prevent conflicting `# TYPE` lines. Two metrics conflict when the names
//! they produce overlap: the family name, plus a histogram's `_bucket`/`_sum`/`_count` and a
//! summary's `_sum`/`_count` (so a gauge `x_count` conflicts with a histogram `x`). The first
//! identity — OTel name, unit and Prometheus type — to produce a name keeps it; a later,
//! different identity is dropped whole. `target_info` is claimed up front while the exporter
//! emits it.
//!
//! The [`super::Translator`] checks claims only when it first names a family (its name cache
//! stores the verdict), so the check costs nothing per batch or per point.

use std::fmt;
use std::sync::Arc;

use hashbrown::HashMap;

use super::names::PromType;

/// An OTel metric's identity as far as Prometheus naming goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricIdentity {
    /// The OTel metric name.
    pub name: Box<str>,
    /// The OTel unit the name was built from (an UpDownCounter's `1` counts as no unit).
    pub unit: Box<str>,
    /// The Prometheus type it becomes.
    pub ty: PromType,
}

impl fmt::Display for MetricIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} (unit {:?}, {})",
            self.name,
            self.unit,
            self.ty.as_str()
        )
    }
}

/// Who owns a Prometheus name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimant {
    /// The first OTel metric that produced it.
    Metric(MetricIdentity),
    /// The reserved `target_info` family (resource attributes).
    TargetInfo,
}

impl fmt::Display for Claimant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Claimant::Metric(m) => m.fmt(f),
            Claimant::TargetInfo => f.write_str("target_info (resource attributes)"),
        }
    }
}

/// A metric dropped because a name it would produce already belongs to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameCollision {
    /// The Prometheus name both would produce.
    pub prometheus_name: Arc<str>,
    /// The metric dropped.
    pub dropped: MetricIdentity,
    /// The owner of the name, which is kept.
    pub kept: Arc<Claimant>,
}

/// Prometheus name → its owner. Bounded by the translator, which clears it together with its
/// family cache.
#[derive(Debug, Default)]
pub(super) struct Claims {
    owners: HashMap<Arc<str>, Arc<Claimant>, foldhash::fast::RandomState>,
}

impl Claims {
    /// Forgets every claim.
    pub(super) fn clear(&mut self) {
        self.owners.clear();
    }

    /// Reserves `name` for `target_info`.
    pub(super) fn reserve_target_info(&mut self, name: &Arc<str>) {
        self.owners
            .insert(name.clone(), Arc::new(Claimant::TargetInfo));
    }

    /// Claims all of `names` for `identity`, or, when one of them is owned by another
    /// identity, claims none and returns the collision.
    pub(super) fn claim(
        &mut self,
        identity: MetricIdentity,
        names: &[&Arc<str>],
    ) -> Option<NameCollision> {
        for name in names {
            if let Some(owner) = self.owners.get(&***name)
                && !matches!(&**owner, Claimant::Metric(m) if *m == identity)
            {
                return Some(NameCollision {
                    prometheus_name: (*name).clone(),
                    dropped: identity,
                    kept: owner.clone(),
                });
            }
        }
        let owner = Arc::new(Claimant::Metric(identity));
        for name in names {
            self.owners.insert((*name).clone(), owner.clone());
        }
        None
    }
}
