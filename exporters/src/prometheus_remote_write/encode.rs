//! Samples → remote-write request bodies, sharded by series.
//!
//! Every series goes to shard `hash(labels) % shards`, so a series' samples always travel
//! through the same sender, in order. Within a shard, series are cut into requests of at
//! most `max_samples_per_send` samples. The protobuf is written directly into the request
//! body: a point's shared labels are encoded (and hashed) once, then copied into each series
//! the point yields with `__name__` and `le`/`quantile` spliced in at their sorted places.

use std::hash::{BuildHasher, Hasher};

use super::proto::{
    TAG_1_LEN, label_len, put_label, put_sample, put_varint, sample_len, varint_len,
};
use crate::translate::{Sample, SampleSink};

/// Seed of the shard hash; fixed so a series maps to the same shard in every process (the
/// planned durable queue replays per shard).
const SHARD_SEED: u64 = 0x0005_eed5_4a2d;

/// One request body (uncompressed `WriteRequest`) and its sample count.
#[derive(Debug, Default)]
pub(crate) struct RequestBuf {
    pub body: Vec<u8>,
    pub samples: usize,
}

/// The requests of one shard, in send order.
#[derive(Debug, Default)]
pub(crate) struct ShardBuf {
    pub requests: Vec<RequestBuf>,
    /// Requests in use this round (the rest are kept for their capacity).
    pub used: usize,
}

impl ShardBuf {
    /// The filled requests of this round.
    pub fn filled(&self) -> &[RequestBuf] {
        self.requests.get(..self.used).unwrap_or_default()
    }
}

/// Where a label is spliced into the shared labels.
#[derive(Debug, Clone, Copy)]
struct Splice {
    /// Index of the first shared label after it.
    pos: usize,
    /// Whether it replaces the shared label at `pos`.
    replace: bool,
}

/// Encodes samples into per-shard request bodies; buffers are reused between batches.
#[derive(Debug)]
pub(crate) struct ShardedEncoder {
    shards: Vec<ShardBuf>,
    max_samples: usize,
    label_set_id: u64,
    /// The shared labels of the current point, each a complete `TimeSeries.labels` entry.
    base: Vec<u8>,
    /// `base` offsets: label `i` is `base[offsets[i]..offsets[i + 1]]`.
    offsets: Vec<usize>,
    /// Hash of `base`.
    base_hash: u64,
    /// Where `__name__` goes in the current label set.
    name_at: Splice,
    /// Where the last `le`/`quantile` went in the current label set.
    extra_at: Option<(&'static str, Splice)>,
    /// The last metric name and its `__name__` label, encoded (consecutive samples mostly
    /// share a name).
    name_label: (String, Vec<u8>),
}

impl ShardedEncoder {
    pub fn new(shards: usize, max_samples: usize) -> Self {
        Self {
            shards: (0..shards.max(1)).map(|_| ShardBuf::default()).collect(),
            max_samples: max_samples.max(1),
            label_set_id: u64::MAX,
            base: Vec::new(),
            offsets: Vec::new(),
            base_hash: 0,
            name_at: Splice {
                pos: 0,
                replace: false,
            },
            extra_at: None,
            name_label: (String::new(), Vec::new()),
        }
    }

    /// Starts a new round: forgets the previous requests, keeps their capacity.
    pub fn reset(&mut self) {
        for shard in &mut self.shards {
            for r in shard.requests.iter_mut().take(shard.used) {
                r.body.clear();
                r.samples = 0;
            }
            shard.used = 0;
        }
        self.label_set_id = u64::MAX;
    }

    pub fn shards(&self) -> &[ShardBuf] {
        &self.shards
    }

    fn encode_base(&mut self, sample: &Sample<'_>) {
        self.base.clear();
        self.offsets.clear();
        for (n, v) in sample.labels.iter() {
            self.offsets.push(self.base.len());
            put_label(&mut self.base, n, v);
        }
        self.offsets.push(self.base.len());
        let mut h = foldhash::fast::FixedState::with_seed(SHARD_SEED).build_hasher();
        h.write(&self.base);
        self.base_hash = h.finish();
        self.name_at = splice(sample, "__name__");
        self.extra_at = None;
        self.label_set_id = sample.label_set_id;
    }

    fn offset(&self, i: usize) -> usize {
        self.offsets.get(i).copied().unwrap_or(self.base.len())
    }
}

fn splice(sample: &Sample<'_>, name: &str) -> Splice {
    match sample.labels.search(name) {
        Ok(pos) => Splice { pos, replace: true },
        Err(pos) => Splice {
            pos,
            replace: false,
        },
    }
}

impl SampleSink for ShardedEncoder {
    fn sample(&mut self, sample: &Sample<'_>) {
        if sample.label_set_id != self.label_set_id {
            self.encode_base(sample);
        }
        let n = self.offsets.len().saturating_sub(1);
        // `__name__` sorts before `le` and `quantile`, so the splices are in order.
        let mut splices: [Option<(Splice, &str, &str)>; 2] =
            [Some((self.name_at, "__name__", sample.name)), None];
        let mut h = foldhash::fast::FixedState::with_seed(self.base_hash).build_hasher();
        h.write(sample.name.as_bytes());
        if let Some((en, ev)) = sample.extra {
            let at = match self.extra_at {
                Some((cached, at)) if cached == en => at,
                _ => {
                    let at = splice(sample, en);
                    self.extra_at = Some((en, at));
                    at
                }
            };
            splices[1] = Some((at, en, ev));
            h.write_u8(0xff);
            h.write(ev.as_bytes());
        }
        let shard_idx = (h.finish() % self.shards.len() as u64) as usize;

        // The series' encoded labels length: shared labels minus replaced ones plus spliced.
        let mut labels_len = self.base.len();
        for (at, name, value) in splices.iter().flatten() {
            if at.replace {
                labels_len -= self.offset(at.pos + 1) - self.offset(at.pos);
            }
            labels_len += label_len(name, value);
        }
        let slen = sample_len(sample.timestamp_ms);
        let ts_len = labels_len + 1 + varint_len(slen as u64) + slen;

        let max = self.max_samples;
        let Some(shard) = self.shards.get_mut(shard_idx) else {
            return;
        };
        if shard.used == 0
            || shard
                .requests
                .get(shard.used - 1)
                .is_none_or(|r| r.samples >= max)
        {
            if shard.requests.len() == shard.used {
                shard.requests.push(RequestBuf::default());
            }
            shard.used += 1;
        }
        let Some(req) = shard.requests.get_mut(shard.used - 1) else {
            return;
        };
        let body = &mut req.body;
        body.reserve(ts_len + 10);
        body.push(TAG_1_LEN);
        put_varint(body, ts_len as u64);
        let mut from = 0;
        if self.name_label.0 != sample.name {
            self.name_label.0.clear();
            self.name_label.0.push_str(sample.name);
            self.name_label.1.clear();
            put_label(&mut self.name_label.1, "__name__", sample.name);
        }
        for (k, (at, name, value)) in splices.into_iter().flatten().enumerate() {
            let start = self.offsets.get(from).copied().unwrap_or(0);
            let end = self.offsets.get(at.pos).copied().unwrap_or(start);
            body.extend_from_slice(self.base.get(start..end).unwrap_or_default());
            if k == 0 {
                body.extend_from_slice(&self.name_label.1);
            } else {
                put_label(body, name, value);
            }
            from = if at.replace { at.pos + 1 } else { at.pos };
        }
        let start = self.offsets.get(from).copied().unwrap_or(0);
        let end = self.offsets.get(n).copied().unwrap_or(start);
        body.extend_from_slice(self.base.get(start..end).unwrap_or_default());
        put_sample(body, sample.value, sample.timestamp_ms);
        req.samples += 1;
    }
}
