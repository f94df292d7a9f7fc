//! Per-point cache keys: the bytes that identify everything a point's label set is built
//! from (an interned resource/scope context id and the point's attributes), handed to sinks
//! that cache series ([`super::SampleSink::cached_point`]).

use hashbrown::HashMap;
use opentelemetry_proto::tonic::common::v1::KeyValue;

use super::labels::LabelSet;

/// Distinct contexts interned; past it the map is cleared (ids are still never reused).
const CONTEXT_CACHE_MAX: usize = 4096;

/// Interned contexts and the reused buffers point keys are written into.
#[derive(Debug, Default)]
pub(super) struct PointKeys {
    /// Context (resource + scope labels) → id, for point keys; ids are never reused.
    contexts: HashMap<Box<[u8]>, u64, foldhash::fast::RandomState>,
    next_context_id: u64,
    /// Reused buffers for context and point keys.
    context_key: Vec<u8>,
    point_key: Vec<u8>,
}

impl PointKeys {
    /// The id of the sealed context labels (interned, so a point key holds 8 bytes of it).
    pub(super) fn context_id(&mut self, labels: &LabelSet) -> u64 {
        self.context_key.clear();
        labels.write_context_key(&mut self.context_key);
        if let Some(&id) = self.contexts.get(self.context_key.as_slice()) {
            return id;
        }
        if self.contexts.len() >= CONTEXT_CACHE_MAX {
            self.contexts.clear();
        }
        let id = self.next_context_id;
        self.next_context_id += 1;
        self.contexts.insert(self.context_key.as_slice().into(), id);
        id
    }

    /// The key of a point in context `context_id`, or `None` when its attributes are not
    /// keyed (see [`write_point_key`]).
    pub(super) fn point_key(&mut self, context_id: u64, attrs: &[KeyValue]) -> Option<&[u8]> {
        write_point_key(&mut self.point_key, context_id, attrs).then_some(self.point_key.as_slice())
    }
}

/// Writes the key of a point's label input: the context id, then every attribute's key and
/// value, tagged and length-prefixed so that different inputs never give the same bytes.
/// Returns `false` (no key) for attribute values that are arrays, maps or bytes, which are
/// rare and not worth keying.
fn write_point_key(out: &mut Vec<u8>, context_id: u64, attrs: &[KeyValue]) -> bool {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    fn put_len(out: &mut Vec<u8>, len: usize) {
        match u8::try_from(len) {
            Ok(b) if b < u8::MAX => out.push(b),
            _ => {
                out.push(u8::MAX);
                out.extend_from_slice(&(len as u64).to_le_bytes());
            }
        }
    }
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
