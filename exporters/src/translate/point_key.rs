//! Per-point cache keys: the bytes that identify everything a point's label set is built
//! from (an interned resource/scope context id and the point's attributes), handed to sinks
//! that cache series ([`super::SampleSink::cached_point`]).

use hashbrown::HashMap;
use opentelemetry_proto::tonic::common::v1::KeyValue;

use super::labels::LabelSet;
use super::walk::EncodedAttrs;

/// Set in the context id of a key read from encoded attributes.
const ENCODED_KEY: u64 = 1 << 63;

/// Contexts per generation of the intern map. When the current generation is full it becomes
/// the previous one; a context found only there moves back with its id, so contexts in use
/// keep their ids (and their cached series) while idle ones age out after two generations.
const CONTEXT_CACHE_MAX: usize = 16_384;

type ContextMap = HashMap<Box<[u8]>, u64, foldhash::fast::RandomState>;

/// Interned contexts and the reused buffers point keys are written into.
#[derive(Debug)]
pub(super) struct PointKeys {
    /// Context (resource + scope labels) → id, for point keys; ids are never reused.
    contexts: ContextMap,
    previous: ContextMap,
    cap: usize,
    next_context_id: u64,
    /// Reused buffers for context and point keys.
    context_key: Vec<u8>,
    point_key: Vec<u8>,
}

impl Default for PointKeys {
    fn default() -> Self {
        Self {
            contexts: ContextMap::default(),
            previous: ContextMap::default(),
            cap: CONTEXT_CACHE_MAX,
            next_context_id: 0,
            context_key: Vec::new(),
            point_key: Vec::new(),
        }
    }
}

impl PointKeys {
    /// The id of the sealed context labels (interned, so a point key holds 8 bytes of it).
    pub(super) fn context_id(&mut self, labels: &LabelSet) -> u64 {
        let mut key = std::mem::take(&mut self.context_key);
        key.clear();
        labels.write_context_key(&mut key);
        let id = self.intern(&key);
        self.context_key = key;
        id
    }

    /// The id of a context key: the same id for as long as the key keeps being used.
    fn intern(&mut self, key: &[u8]) -> u64 {
        if let Some(&id) = self.contexts.get(key) {
            return id;
        }
        let id = self.previous.remove(key).unwrap_or_else(|| {
            self.next_context_id += 1;
            self.next_context_id - 1
        });
        if self.contexts.len() >= self.cap {
            self.previous = std::mem::take(&mut self.contexts);
        }
        self.contexts.insert(key.into(), id);
        id
    }

    /// The key of a point in context `context_id`, or `None` when its attributes are not
    /// keyed (see [`write_point_key`]).
    pub(super) fn point_key(&mut self, context_id: u64, attrs: &[KeyValue]) -> Option<&[u8]> {
        write_point_key(&mut self.point_key, context_id, attrs).then_some(self.point_key.as_slice())
    }

    /// The key of a point in context `context_id` read from its encoded message: the context
    /// id with its top bit set (ids count up from 0, so no key of a decoded point starts the
    /// same), then the records of its attributes, as encoded. Equal bytes decode to equal
    /// attributes, so one key always stands for one label set; the same attributes encoded
    /// differently get two keys of one label set.
    pub(super) fn encoded_point_key(&mut self, context_id: u64, attrs: EncodedAttrs<'_>) -> &[u8] {
        let out = &mut self.point_key;
        out.clear();
        out.extend_from_slice(&(context_id | ENCODED_KEY).to_le_bytes());
        attrs.write_records(out);
        out
    }
}

/// A length in a key: one byte, or 255 and eight.
fn put_len(out: &mut Vec<u8>, len: usize) {
    match u8::try_from(len) {
        Ok(b) if b < u8::MAX => out.push(b),
        _ => {
            out.push(u8::MAX);
            out.extend_from_slice(&(len as u64).to_le_bytes());
        }
    }
}

/// Writes the key of a point's label input: the context id, then every attribute's key and
/// value, tagged and length-prefixed so that different inputs never give the same bytes.
/// Returns `false` (no key) for attribute values that are arrays, maps or bytes, which are
/// rare and not worth keying.
fn write_point_key(out: &mut Vec<u8>, context_id: u64, attrs: &[KeyValue]) -> bool {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    out.clear();
    out.extend_from_slice(&context_id.to_le_bytes());
    for kv in attrs {
        put_len(out, kv.key.len());
        out.extend_from_slice(kv.key.as_bytes());
        match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            None => out.push(0),
            Some(Value::StringValue(v)) => {
                out.push(1);
                put_len(out, v.len());
                out.extend_from_slice(v.as_bytes());
            }
            Some(Value::BoolValue(b)) => {
                out.push(2);
                out.push(u8::from(*b));
            }
            Some(Value::IntValue(i)) => {
                out.push(3);
                out.extend_from_slice(&i.to_le_bytes());
            }
            Some(Value::DoubleValue(d)) => {
                out.push(4);
                out.extend_from_slice(&d.to_bits().to_le_bytes());
            }
            #[allow(unreachable_patterns)]
            Some(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_in_use_keep_their_ids_across_generations() {
        let mut keys = PointKeys {
            cap: 4,
            ..PointKeys::default()
        };
        let hot = keys.intern(b"hot");
        let mut ids = std::collections::HashSet::from([hot]);
        for i in 0..100u32 {
            // A stream of one-off contexts, with the hot one used in between.
            assert!(
                ids.insert(keys.intern(&i.to_le_bytes())),
                "ids are never reused"
            );
            assert_eq!(keys.intern(b"hot"), hot, "after {i} others");
        }
        assert!(
            keys.contexts.len() + keys.previous.len() <= 2 * 4,
            "bounded"
        );
        // An idle context ages out and comes back under a new id.
        let cold = keys.intern(b"cold");
        for i in 100..120u32 {
            keys.intern(&i.to_le_bytes());
        }
        assert_ne!(keys.intern(b"cold"), cold);
    }
}
