//! Stream identity: a stable 128-bit XXH3 hash of what makes an OTLP data point's series
//! distinct (its resource's attributes, its scope's name, version and attributes, its
//! metric's name, unit, kind and monotonic flag, and its own attributes in key order). The
//! encoding hashed is fixed here and the hash is specified (XXH3), so a key is the same in
//! every process and version: `deltatocumulative` persists it. Computed in steps (resource,
//! scope, metric, point) so the parts shared by many points are hashed once.

use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;

/// A series' (or one of its prefixes') identity hash.
pub(crate) type Key = u128;

/// Reused buffers for computing keys.
#[derive(Debug, Default)]
pub(crate) struct Identity {
    bytes: Vec<u8>,
    order: Vec<usize>,
}

impl Identity {
    /// The key of a resource.
    pub(crate) fn resource(&mut self, r: Option<&Resource>) -> Key {
        self.resource_where(r, |_| true)
    }

    /// The key of a resource with only the attributes `keep` accepts: the same key
    /// [`Identity::resource`] gives for a resource holding just those.
    pub(crate) fn resource_where(
        &mut self,
        r: Option<&Resource>,
        keep: impl Fn(&KeyValue) -> bool,
    ) -> Key {
        self.bytes.clear();
        self.bytes.push(b'R');
        // No resource hashes as nothing (not as an empty list): keys are persisted.
        if let Some(r) = r {
            push_attrs(&mut self.bytes, &r.attributes, &mut self.order, keep);
        }
        twox_hash::XxHash3_128::oneshot(&self.bytes)
    }

    /// The key of a scope within `resource`.
    pub(crate) fn scope(&mut self, resource: Key, s: Option<&InstrumentationScope>) -> Key {
        self.bytes.clear();
        self.bytes.extend_from_slice(&resource.to_le_bytes());
        if let Some(s) = s {
            push_str(&mut self.bytes, &s.name);
            push_str(&mut self.bytes, &s.version);
            push_attrs(&mut self.bytes, &s.attributes, &mut self.order, |_| true);
        }
        twox_hash::XxHash3_128::oneshot(&self.bytes)
    }

    /// The key of a metric within `scope`; `kind` tells the data kinds apart.
    pub(crate) fn metric(
        &mut self,
        scope: Key,
        name: &str,
        unit: &str,
        kind: u8,
        monotonic: bool,
    ) -> Key {
        self.bytes.clear();
        self.bytes.extend_from_slice(&scope.to_le_bytes());
        push_str(&mut self.bytes, name);
        push_str(&mut self.bytes, unit);
        self.bytes.extend_from_slice(&[kind, u8::from(monotonic)]);
        twox_hash::XxHash3_128::oneshot(&self.bytes)
    }

    /// The key of a point of `metric` with `attrs` (in any order).
    pub(crate) fn point(&mut self, metric: Key, attrs: &[KeyValue]) -> Key {
        self.point_where(metric, attrs, |_| true)
    }

    /// The key of a point of `metric` with only the attributes `keep` accepts: the same key
    /// [`Identity::point`] gives for a point holding just those, without copying them.
    pub(crate) fn point_where(
        &mut self,
        metric: Key,
        attrs: &[KeyValue],
        keep: impl Fn(&KeyValue) -> bool,
    ) -> Key {
        self.bytes.clear();
        self.bytes.extend_from_slice(&metric.to_le_bytes());
        push_attrs(&mut self.bytes, attrs, &mut self.order, keep);
        twox_hash::XxHash3_128::oneshot(&self.bytes)
    }
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Appends attributes in key order (stable for repeated keys), whatever order they came in.
fn push_attrs(
    out: &mut Vec<u8>,
    attrs: &[KeyValue],
    order: &mut Vec<usize>,
    keep: impl Fn(&KeyValue) -> bool,
) {
    order.clear();
    order.extend((0..attrs.len()).filter(|i| keep(&attrs[*i])));
    order.sort_by(|a, b| attrs[*a].key.cmp(&attrs[*b].key));
    out.extend_from_slice(&(order.len() as u32).to_le_bytes());
    for &i in order.iter() {
        push_str(out, &attrs[i].key);
        push_value(out, attrs[i].value.as_ref());
    }
}

fn push_value(out: &mut Vec<u8>, v: Option<&AnyValue>) {
    use any_value::Value as V;
    match v.and_then(|v| v.value.as_ref()) {
        None => out.push(0),
        Some(V::StringValue(s)) => {
            out.push(1);
            push_str(out, s);
        }
        Some(V::BoolValue(b)) => out.extend_from_slice(&[2, u8::from(*b)]),
        Some(V::IntValue(i)) => {
            out.push(3);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Some(V::DoubleValue(d)) => {
            out.push(4);
            out.extend_from_slice(&d.to_bits().to_le_bytes());
        }
        Some(V::BytesValue(b)) => {
            out.push(5);
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        }
        Some(V::ArrayValue(a)) => {
            out.push(6);
            out.extend_from_slice(&(a.values.len() as u32).to_le_bytes());
            for v in &a.values {
                push_value(out, Some(v));
            }
        }
        Some(V::StringValueStrindex(i)) => {
            out.push(8);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Some(V::KvlistValue(kv)) => {
            out.push(7);
            out.extend_from_slice(&(kv.values.len() as u32).to_le_bytes());
            for kv in &kv.values {
                push_str(out, &kv.key);
                push_value(out, kv.value.as_ref());
            }
        }
    }
}
