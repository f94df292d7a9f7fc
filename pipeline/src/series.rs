//! `SeriesKey`: a compact key for state kept per series: a metric name and its sorted labels,
//! hashed once with a fixed seed. Today its one user is the `prometheus` scrape exporter's
//! registry of latest values. `deltatocumulative` does not use it (it keys streams by a
//! stable 128-bit hash of their OTLP identity, which it persists), nor does remote write (it
//! shards on a hash of the encoded label bytes).

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

/// A metric name plus sorted, unique labels, with its hash computed once at construction.
#[derive(Debug, Clone)]
pub struct SeriesKey {
    hash: u64,
    name: Arc<str>,
    labels: Box<[(Box<str>, Box<str>)]>,
}

/// Fixed hasher seed so a series hashes the same in every process (shard assignment must
/// survive restarts once queues are durable).
const SEED: u64 = 0x005e_ed0f_5e41_e5a1;

impl SeriesKey {
    /// Builds a key; `labels` are sorted by name and, for repeated names, the last wins.
    pub fn new(name: Arc<str>, mut labels: Vec<(Box<str>, Box<str>)>) -> Self {
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        labels.reverse();
        labels.dedup_by(|a, b| a.0 == b.0);
        labels.reverse();
        let mut h = foldhash::fast::FixedState::with_seed(SEED).build_hasher();
        name.hash(&mut h);
        labels.hash(&mut h);
        Self {
            hash: h.finish(),
            name,
            labels: labels.into_boxed_slice(),
        }
    }

    /// The precomputed hash (stable across processes).
    pub fn hash_value(&self) -> u64 {
        self.hash
    }

    /// The metric name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The labels, sorted by name.
    pub fn labels(&self) -> &[(Box<str>, Box<str>)] {
        &self.labels
    }
}

impl PartialEq for SeriesKey {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.name == other.name && self.labels == other.labels
    }
}

impl Eq for SeriesKey {}

impl Hash for SeriesKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(k: &str, v: &str) -> (Box<str>, Box<str>) {
        (k.into(), v.into())
    }

    #[test]
    fn equal_regardless_of_label_order_and_last_duplicate_wins() {
        let a = SeriesKey::new("m".into(), vec![l("b", "2"), l("a", "1")]);
        let b = SeriesKey::new("m".into(), vec![l("a", "1"), l("b", "0"), l("b", "2")]);
        assert_eq!(a, b);
        assert_eq!(a.hash_value(), b.hash_value());
        assert_eq!(
            a.labels().iter().map(|x| &*x.0).collect::<Vec<_>>(),
            vec!["a", "b"]
        );
        let c = SeriesKey::new("n".into(), vec![l("a", "1"), l("b", "2")]);
        assert_ne!(a, c);
    }
}
