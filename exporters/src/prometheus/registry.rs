//! The scrape exporter's registry: the latest value of every series, keyed by name and
//! labels, updated by the translator through [`RegistrySink`].

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use hashbrown::{HashMap, HashTable};
use tokio::time::Instant;
use vla_pipeline::SeriesKey;
use vla_pipeline::self_metrics::Gauge;

use crate::translate::{PromType, Sample, SampleSink};

/// One live series.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) hash: u64,
    pub(super) key: Arc<SeriesKey>,
    pub(super) family: Arc<str>,
    /// Order within the family: 0 for the plain series and `_bucket`, 1 `_sum`, 2 `_count`.
    pub(super) rank: u8,
    /// The `le` / `quantile` value, for numeric ordering.
    pub(super) bound: f64,
    pub(super) value: f64,
    /// The point's own time (ms): a point older than this does not replace the value.
    pub(super) timestamp_ms: i64,
    pub(super) updated: Instant,
}

#[derive(Debug, Clone)]
pub(super) struct FamilyMeta {
    pub(super) ty: PromType,
    pub(super) help: Arc<str>,
}

/// The latest value of every series.
#[derive(Debug, Default)]
pub(super) struct Registry {
    pub(super) series: HashTable<Entry>,
    pub(super) families: HashMap<Arc<str>, FamilyMeta, foldhash::fast::RandomState>,
    pub(super) last_sweep: Option<Instant>,
    /// `vla_collector_prometheus_series`, kept equal to `series.len()` after every change.
    pub(super) series_gauge: Gauge,
}

impl Registry {
    pub(super) fn count_series(&self) {
        self.series_gauge
            .set(i64::try_from(self.series.len()).unwrap_or(i64::MAX));
    }

    pub(super) fn sweep(&mut self, now: Instant, expiration: Duration) {
        self.series
            .retain(|e| now.saturating_duration_since(e.updated) < expiration);
        if self.families.len() > self.series.len() {
            let live: hashbrown::HashSet<&str> = self.series.iter().map(|e| &*e.family).collect();
            self.families.retain(|name, _| live.contains(&**name));
        }
        self.last_sweep = Some(now);
        self.count_series();
    }
}

const HASH_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

fn sample_hash(sample: &Sample<'_>) -> u64 {
    let mut h = foldhash::fast::FixedState::with_seed(HASH_SEED).build_hasher();
    sample.name.hash(&mut h);
    sample.for_each_label(|n, v| {
        if n != "__name__" {
            n.hash(&mut h);
            v.hash(&mut h);
        }
    });
    h.finish()
}

fn same_series(key: &SeriesKey, sample: &Sample<'_>) -> bool {
    if key.name() != sample.name {
        return false;
    }
    let labels = key.labels();
    let mut i = 0;
    let mut equal = true;
    sample.for_each_label(|n, v| {
        if n == "__name__" || !equal {
            return;
        }
        match labels.get(i) {
            Some((kn, kv)) if **kn == *n && **kv == *v => i += 1,
            _ => equal = false,
        }
    });
    equal && i == labels.len()
}

/// Updates the registry with a batch's samples.
pub(super) struct RegistrySink<'a> {
    pub(super) registry: &'a mut Registry,
    pub(super) now: Instant,
    pub(super) family: Option<Arc<str>>,
}

impl SampleSink for RegistrySink<'_> {
    fn sample(&mut self, sample: &Sample<'_>) {
        let hash = sample_hash(sample);
        if sample.value.is_nan() && sample.value.to_bits() == crate::translate::STALE_NAN_BITS {
            if let Ok(e) = self
                .registry
                .series
                .find_entry(hash, |e| same_series(&e.key, sample))
            {
                e.remove();
            }
            return;
        }
        if let Some(e) = self
            .registry
            .series
            .find_mut(hash, |e| same_series(&e.key, sample))
        {
            // The newest point wins, whatever order points arrive in; one that is older than
            // the value served still counts as a sign of life.
            if sample.timestamp_ms >= e.timestamp_ms {
                e.value = sample.value;
                e.timestamp_ms = sample.timestamp_ms;
            }
            e.updated = self.now;
            return;
        }
        // A new series: the only allocations of the export path.
        let family = match &self.family {
            Some(f) if **f == *sample.family.name => f.clone(),
            _ => {
                let f: Arc<str> = match self.registry.families.get_key_value(sample.family.name) {
                    Some((k, _)) => k.clone(),
                    None => sample.family.name.into(),
                };
                self.family = Some(f.clone());
                f
            }
        };
        let meta = FamilyMeta {
            ty: sample.family.ty,
            help: sample.family.help.into(),
        };
        self.registry.families.insert(family.clone(), meta);
        let mut labels = Vec::with_capacity(sample.labels.len() + 1);
        sample.for_each_label(|n, v| {
            if n != "__name__" {
                labels.push((Box::<str>::from(n), Box::<str>::from(v)));
            }
        });
        let rank = if sample.name.len() > family.len() {
            match &sample.name[family.len()..] {
                "_sum" => 1,
                "_count" => 2,
                _ => 0,
            }
        } else {
            0
        };
        let bound = sample.extra.map_or(0.0, |(_, v)| parse_bound(v));
        let entry = Entry {
            hash,
            key: Arc::new(SeriesKey::new(sample.name.into(), labels)),
            family,
            rank,
            bound,
            value: sample.value,
            timestamp_ms: sample.timestamp_ms,
            updated: self.now,
        };
        self.registry.series.insert_unique(hash, entry, |e| e.hash);
    }
}

pub(super) fn parse_bound(v: &str) -> f64 {
    match v {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or(f64::NAN),
    }
}
