//! A point's label set, built into reused buffers: no allocation per point once warm.

use std::fmt::Write as _;

use hashbrown::HashMap;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};

use super::names::{is_clean_label_name, sanitize_label_name};

/// A byte range of the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn is_empty(self) -> bool {
        self.start == self.end
    }
}

/// Who set a label; on a name clash the higher priority wins.
pub(crate) mod prio {
    /// `external_labels` / `const_labels`: never override a series' own labels.
    pub const EXTERNAL: u8 = 0;
    /// Point attributes.
    pub const ATTRIBUTE: u8 = 1;
    /// `job`, `instance`, `otel_scope_*`: derived from the resource and scope.
    pub const CONTEXT: u8 = 2;
}

#[derive(Debug, Clone, Copy)]
struct Item {
    name: Span,
    value: Span,
    /// The attribute's original key, for ordering values joined on a clash.
    orig: Span,
    prio: u8,
}

/// Where the builder was before a level of context was pushed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Mark {
    arena: usize,
    items: usize,
}

/// A sorted, unique label set (without `__name__`, `le` or `quantile`, which sinks merge in).
#[derive(Debug, Default)]
pub struct LabelSet {
    arena: String,
    items: Vec<Item>,
    /// Sorted, unique context labels (`items[..sealed]`).
    ctx: Vec<Item>,
    sealed: usize,
    labels: Vec<(Span, Span)>,
    key_cache: HashMap<Box<str>, Box<str>, foldhash::fast::RandomState>,
}

const KEY_CACHE_MAX: usize = 4096;

impl LabelSet {
    /// Number of labels.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    fn str(&self, s: Span) -> &str {
        self.arena
            .get(s.start as usize..s.end as usize)
            .unwrap_or_default()
    }

    /// The `i`-th label (sorted by name).
    pub fn get(&self, i: usize) -> Option<(&str, &str)> {
        self.labels.get(i).map(|&(n, v)| (self.str(n), self.str(v)))
    }

    /// The labels, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.labels.iter().map(|&(n, v)| (self.str(n), self.str(v)))
    }

    /// Index of `name` (`Ok`) or where it would be inserted (`Err`).
    pub fn search(&self, name: &str) -> Result<usize, usize> {
        self.labels
            .binary_search_by(|&(n, _)| self.str(n).cmp(name))
    }

    /// The value of label `name`.
    pub fn value_of(&self, name: &str) -> Option<&str> {
        self.search(name)
            .ok()
            .and_then(|i| self.get(i))
            .map(|(_, v)| v)
    }

    pub(crate) fn mark(&self) -> Mark {
        Mark {
            arena: self.arena.len(),
            items: self.items.len(),
        }
    }

    pub(crate) fn truncate(&mut self, mark: Mark) {
        self.arena.truncate(mark.arena);
        self.items.truncate(mark.items);
    }

    pub(crate) fn clear(&mut self) {
        self.truncate(Mark::default());
        self.labels.clear();
        self.ctx.clear();
        self.sealed = 0;
    }

    fn push_str(&mut self, s: &str) -> Span {
        let start = self.arena.len();
        self.arena.push_str(s);
        self.span_from(start)
    }

    fn span_from(&self, start: usize) -> Span {
        Span {
            start: u32::try_from(start).unwrap_or(u32::MAX),
            end: u32::try_from(self.arena.len()).unwrap_or(u32::MAX),
        }
    }

    /// Adds a label whose name is already valid; empty names or values are ignored.
    pub(crate) fn push(&mut self, name: &str, value: &str, prio: u8) {
        if name.is_empty() || value.is_empty() {
            return;
        }
        let name = self.push_str(name);
        let value = self.push_str(value);
        self.items.push(Item {
            name,
            value,
            orig: name,
            prio,
        });
    }

    /// Adds an attribute: its key is sanitised (cached) and its value rendered as text.
    pub(crate) fn push_attr(&mut self, key: &str, value: Option<&AnyValue>, prio: u8) {
        if key.is_empty() {
            return;
        }
        let mark = self.arena.len();
        let value = {
            render_value(&mut self.arena, value);
            self.span_from(mark)
        };
        if value.is_empty() {
            return;
        }
        let (name, orig) = if is_clean_label_name(key) {
            let s = self.push_str(key);
            (s, s)
        } else {
            let sanitized = match self.key_cache.get(key) {
                Some(s) => s,
                None => {
                    if self.key_cache.len() >= KEY_CACHE_MAX {
                        self.key_cache.clear();
                    }
                    let s: Box<str> = sanitize_label_name(key).into();
                    self.key_cache.entry(key.into()).or_insert(s)
                }
            };
            let start = self.arena.len();
            self.arena.push_str(sanitized);
            let name = self.span_from(start);
            (name, self.push_str(key))
        };
        self.items.push(Item {
            name,
            value,
            orig,
            prio,
        });
    }

    /// Sorts and de-duplicates the context labels pushed so far (external, resource, scope);
    /// what is pushed after the returned mark are the point's attributes.
    pub(crate) fn seal(&mut self) -> Mark {
        let arena = &self.arena;
        let s = |sp: Span| {
            arena
                .get(sp.start as usize..sp.end as usize)
                .unwrap_or_default()
        };
        self.ctx.clear();
        self.ctx.extend_from_slice(&self.items);
        self.ctx
            .sort_by(|a, b| s(a.name).cmp(s(b.name)).then(b.prio.cmp(&a.prio)));
        self.ctx
            .dedup_by(|later, first| s(later.name) == s(first.name));
        self.sealed = self.items.len();
        self.mark()
    }

    /// Appends bytes that identify the sealed context labels (names, values, priorities).
    pub(crate) fn write_context_key(&self, out: &mut Vec<u8>) {
        for it in &self.ctx {
            for sp in [it.name, it.value] {
                let text = self.str(sp);
                out.extend_from_slice(&(text.len() as u64).to_le_bytes());
                out.extend_from_slice(text.as_bytes());
            }
            out.push(it.prio);
        }
    }

    /// Merges the sealed context labels with the point's attributes into the readable set.
    pub(crate) fn finish(&mut self) {
        let arena = &self.arena;
        let s = |sp: Span| {
            arena
                .get(sp.start as usize..sp.end as usize)
                .unwrap_or_default()
        };
        let attrs = self.items.get_mut(self.sealed..).unwrap_or_default();
        let by_key = |a: &Item, b: &Item| {
            s(a.name)
                .cmp(s(b.name))
                .then_with(|| s(a.orig).cmp(s(b.orig)))
        };
        // SDKs send attributes sorted by key, so this is usually a single pass.
        if !attrs.is_sorted_by(|a, b| by_key(a, b).is_le()) {
            attrs.sort_by(by_key);
        }
        self.labels.clear();
        let mut joins = false;
        let (mut i, mut j) = (0, 0);
        while i < self.ctx.len() || j < attrs.len() {
            let c = self.ctx.get(i);
            let a = attrs.get(j);
            let take_ctx = match (c, a) {
                (Some(c), Some(a)) => match s(c.name).cmp(s(a.name)) {
                    std::cmp::Ordering::Less => true,
                    std::cmp::Ordering::Greater => false,
                    std::cmp::Ordering::Equal => {
                        // Same name: the higher priority wins; skip the loser(s).
                        if c.prio > prio::ATTRIBUTE {
                            while attrs.get(j).is_some_and(|x| s(x.name) == s(c.name)) {
                                j += 1;
                            }
                            true
                        } else {
                            i += 1;
                            false
                        }
                    }
                },
                (Some(_), None) => true,
                (None, _) => false,
            };
            if take_ctx {
                if let Some(c) = c {
                    self.labels.push((c.name, c.value));
                }
                i += 1;
                continue;
            }
            let Some(a) = a else { break };
            let mut end = j + 1;
            while attrs.get(end).is_some_and(|x| s(x.name) == s(a.name)) {
                end += 1;
            }
            // The join marker packs two 16-bit indices; a point with more than 65535
            // attributes (absurd, but a 16 MiB request allows it) keeps the first value.
            if end - j > 1 && end <= 0xffff {
                // Several attributes sanitise to this name: mark it, joined below.
                joins = true;
                self.labels.push((
                    a.name,
                    Span {
                        start: u32::MAX,
                        end: (j as u32) << 16 | end as u32,
                    },
                ));
            } else {
                self.labels.push((a.name, a.value));
            }
            j = end;
        }
        if joins {
            self.join_collisions();
        }
    }

    /// Attributes that sanitise to the same name keep one label whose value is their values
    /// joined with `;`, in the order of the original keys (already sorted so).
    fn join_collisions(&mut self) {
        for k in 0..self.labels.len() {
            let (name, marker) = self.labels[k];
            if marker.start != u32::MAX {
                continue;
            }
            let (from, to) = ((marker.end >> 16) as usize, (marker.end & 0xffff) as usize);
            let mut joined = String::new();
            for it in self
                .items
                .get(self.sealed + from..self.sealed + to)
                .unwrap_or_default()
            {
                if !joined.is_empty() {
                    joined.push(';');
                }
                joined.push_str(self.str(it.value));
            }
            let value = self.push_str(&joined);
            self.labels[k] = (name, value);
        }
    }
}

/// Renders an attribute value as label text (`AnyValue::as_string` of the collector).
pub(crate) fn render_value(out: &mut String, value: Option<&AnyValue>) {
    let Some(v) = value.and_then(|v| v.value.as_ref()) else {
        return;
    };
    match v {
        any_value::Value::StringValue(s) => out.push_str(s),
        any_value::Value::BoolValue(b) => out.push_str(if *b { "true" } else { "false" }),
        any_value::Value::IntValue(i) => {
            let _ = write!(out, "{i}");
        }
        any_value::Value::DoubleValue(d) => {
            let _ = write!(out, "{d}");
        }
        any_value::Value::BytesValue(b) => base64(out, b),
        any_value::Value::ArrayValue(_) | any_value::Value::KvlistValue(_) => json(out, v),
        #[allow(unreachable_patterns)]
        _ => {}
    }
}

fn json(out: &mut String, v: &any_value::Value) {
    match v {
        any_value::Value::StringValue(s) => json_str(out, s),
        any_value::Value::ArrayValue(a) => {
            out.push('[');
            for (i, item) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                match item.value.as_ref() {
                    Some(v) => json(out, v),
                    None => out.push_str("null"),
                }
            }
            out.push(']');
        }
        any_value::Value::KvlistValue(l) => {
            out.push('{');
            for (i, kv) in l.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_str(out, &kv.key);
                out.push(':');
                match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(v) => json(out, v),
                    None => out.push_str("null"),
                }
            }
            out.push('}');
        }
        any_value::Value::BytesValue(b) => {
            out.push('"');
            base64(out, b);
            out.push('"');
        }
        other => render_value(
            out,
            Some(&AnyValue {
                value: Some(other.clone()),
            }),
        ),
    }
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn base64(out: &mut String, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
}
