//! A check of an encoded `ExportMetricsServiceRequest` without decoding it: whether prost
//! would decode it, how many data points it holds and whether any metric is a delta.
//!
//! It walks every field of every message of the OTLP metrics schema (opentelemetry-proto
//! 0.33) and applies prost's rules: a known field must have its wire type (a repeated scalar
//! may be packed or not), strings must be UTF-8, varints at most ten bytes, lengths within the
//! message, tags non-zero, unknown fields are skipped. It answers "plain" only when it is sure;
//! whatever it does not follow closely (groups, a metric's `data` set twice, which prost merges
//! or replaces, nesting deeper than [`MAX_DEPTH`]) and every error is "not plain", and the
//! caller decodes with prost, which then gives the data or the error.
//! `tests::agrees_with_prost_on_mutated_requests` holds it to prost.

use crate::wire::{is_utf8, len_delimited, take, varint};

/// The deepest message nesting it follows (prost allows 100; a request is 7 deep before
/// attribute values nest).
const MAX_DEPTH: u32 = 32;

// Wire types.
const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;

/// What a plain request holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Scan {
    /// Data points, as `count_data_points` counts them once decoded.
    pub points: usize,
    /// Whether a sum or histogram has delta temporality (what `deltatocumulative` converts).
    pub has_delta: bool,
}

/// The messages of the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Msg {
    Request,
    ResourceMetrics,
    Resource,
    EntityRef,
    ScopeMetrics,
    Scope,
    Metric,
    Gauge,
    Sum,
    Histogram,
    ExpHistogram,
    Summary,
    NumberPoint,
    HistogramPoint,
    ExpPoint,
    Buckets,
    SummaryPoint,
    Quantile,
    Exemplar,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
}

/// How a known field is encoded.
#[derive(Debug, Clone, Copy)]
enum Field {
    /// Any varint scalar (ints, bools, enums, zigzag).
    Varint,
    /// `fixed64`, `sfixed64` or `double`.
    Fixed64,
    Str,
    Bytes,
    Message(Msg),
    /// A repeated `fixed64` or `double`: packed, or one value per field.
    RepeatedFixed64,
    /// A repeated varint scalar: packed, or one value per field.
    RepeatedVarint,
    /// A variant of `Metric.data`.
    Data(Msg),
    /// A data point of a gauge, sum, histogram or summary.
    Point(Msg),
    /// `aggregation_temporality`.
    Temporality,
}

/// The schema: `msg`'s field `tag`, or `None` when unknown.
fn field(msg: Msg, tag: u64) -> Option<Field> {
    use Field::{
        Bytes, Data, Fixed64, Message as M, Point, RepeatedFixed64, RepeatedVarint, Str,
        Temporality, Varint,
    };
    Some(match (msg, tag) {
        (Msg::Request, 1) => M(Msg::ResourceMetrics),
        (Msg::ResourceMetrics, 1) => M(Msg::Resource),
        (Msg::ResourceMetrics, 2) => M(Msg::ScopeMetrics),
        (Msg::ResourceMetrics | Msg::ScopeMetrics, 3) => Str,
        (Msg::Resource, 1) => M(Msg::KeyValue),
        (Msg::Resource, 2) => Varint,
        (Msg::Resource, 3) => M(Msg::EntityRef),
        (Msg::EntityRef, 1..=4) => Str,
        (Msg::ScopeMetrics, 1) => M(Msg::Scope),
        (Msg::ScopeMetrics, 2) => M(Msg::Metric),
        (Msg::Scope, 1 | 2) => Str,
        (Msg::Scope, 3) => M(Msg::KeyValue),
        (Msg::Scope, 4) => Varint,
        (Msg::Metric, 1..=3) => Str,
        (Msg::Metric, 12) => M(Msg::KeyValue),
        (Msg::Metric, 5) => Data(Msg::Gauge),
        (Msg::Metric, 7) => Data(Msg::Sum),
        (Msg::Metric, 9) => Data(Msg::Histogram),
        (Msg::Metric, 10) => Data(Msg::ExpHistogram),
        (Msg::Metric, 11) => Data(Msg::Summary),
        (Msg::Gauge | Msg::Sum, 1) => Point(Msg::NumberPoint),
        (Msg::Histogram, 1) => Point(Msg::HistogramPoint),
        (Msg::ExpHistogram, 1) => Point(Msg::ExpPoint),
        (Msg::Summary, 1) => Point(Msg::SummaryPoint),
        (Msg::Sum | Msg::Histogram | Msg::ExpHistogram, 2) => Temporality,
        (Msg::Sum, 3) => Varint,
        (Msg::NumberPoint, 7) => M(Msg::KeyValue),
        (Msg::NumberPoint, 2..=4 | 6) => Fixed64,
        (Msg::NumberPoint, 5) => M(Msg::Exemplar),
        (Msg::NumberPoint, 8) => Varint,
        (Msg::HistogramPoint, 9) => M(Msg::KeyValue),
        (Msg::HistogramPoint, 2..=5 | 11 | 12) => Fixed64,
        (Msg::HistogramPoint, 6 | 7) => RepeatedFixed64,
        (Msg::HistogramPoint, 8) => M(Msg::Exemplar),
        (Msg::HistogramPoint, 10) => Varint,
        (Msg::ExpPoint, 1) => M(Msg::KeyValue),
        (Msg::ExpPoint, 2..=5 | 7 | 12..=14) => Fixed64,
        (Msg::ExpPoint, 6 | 10) => Varint,
        (Msg::ExpPoint, 8 | 9) => M(Msg::Buckets),
        (Msg::ExpPoint, 11) => M(Msg::Exemplar),
        (Msg::Buckets, 1) => Varint,
        (Msg::Buckets, 2) => RepeatedVarint,
        (Msg::SummaryPoint, 7) => M(Msg::KeyValue),
        (Msg::SummaryPoint, 2..=5) => Fixed64,
        (Msg::SummaryPoint, 6) => M(Msg::Quantile),
        (Msg::SummaryPoint, 8) => Varint,
        (Msg::Quantile, 1 | 2) => Fixed64,
        (Msg::Exemplar, 7) => M(Msg::KeyValue),
        (Msg::Exemplar, 2 | 3 | 6) => Fixed64,
        (Msg::Exemplar, 4 | 5) => Bytes,
        (Msg::KeyValue, 1) => Str,
        (Msg::KeyValue, 2) => M(Msg::AnyValue),
        (Msg::KeyValue, 3) => Varint,
        (Msg::AnyValue, 1) => Str,
        (Msg::AnyValue, 2 | 3 | 8) => Varint,
        (Msg::AnyValue, 4) => Fixed64,
        (Msg::AnyValue, 5) => M(Msg::ArrayValue),
        (Msg::AnyValue, 6) => M(Msg::KeyValueList),
        (Msg::AnyValue, 7) => Bytes,
        (Msg::ArrayValue, 1) => M(Msg::AnyValue),
        (Msg::KeyValueList, 1) => M(Msg::KeyValue),
        _ => return None,
    })
}

/// Checks `buf` as an `ExportMetricsServiceRequest`; `None` unless it is plain.
pub(crate) fn scan(buf: &[u8]) -> Option<Scan> {
    let mut scan = Scan::default();
    let mut walker = Walker { scan: &mut scan };
    walker.message(Msg::Request, buf, 0)?;
    Some(scan)
}

struct Walker<'s> {
    scan: &'s mut Scan,
}

/// What one message walk saw that its parent needs.
#[derive(Default)]
struct Seen {
    /// Data points directly in it (a gauge's, sum's, … `data_points`).
    points: usize,
    /// The last `aggregation_temporality`, as prost keeps it.
    temporality: u64,
}

impl Walker<'_> {
    fn message(&mut self, msg: Msg, mut buf: &[u8], depth: u32) -> Option<Seen> {
        if depth > MAX_DEPTH {
            return None;
        }
        let mut seen = Seen::default();
        let mut data_seen = false;
        let b = &mut buf;
        while !b.is_empty() {
            let key = varint(b)?;
            let (tag, wt) = (key >> 3, (key & 7) as u8);
            if tag == 0 || key > u64::from(u32::MAX) {
                return None;
            }
            let Some(f) = field(msg, tag) else {
                skip(b, wt)?;
                continue;
            };
            match f {
                Field::Varint => {
                    expect(wt, VARINT)?;
                    varint(b)?;
                }
                Field::Temporality => {
                    expect(wt, VARINT)?;
                    seen.temporality = varint(b)?;
                }
                Field::Fixed64 => {
                    expect(wt, I64)?;
                    take(b, 8)?;
                }
                Field::Str => {
                    expect(wt, LEN)?;
                    if !is_utf8(len_delimited(b)?) {
                        return None;
                    }
                }
                Field::Bytes => {
                    expect(wt, LEN)?;
                    len_delimited(b)?;
                }
                Field::Message(m) => {
                    expect(wt, LEN)?;
                    self.message(m, len_delimited(b)?, depth + 1)?;
                }
                Field::Point(m) => {
                    expect(wt, LEN)?;
                    self.message(m, len_delimited(b)?, depth + 1)?;
                    seen.points += 1;
                }
                Field::Data(m) => {
                    expect(wt, LEN)?;
                    // Twice is merged or replaced by prost; not followed here.
                    if std::mem::replace(&mut data_seen, true) {
                        return None;
                    }
                    let data = self.message(m, len_delimited(b)?, depth + 1)?;
                    self.scan.points += data.points;
                    // prost keeps an enum as the varint's low 32 bits; 1 is DELTA.
                    let delta = data.temporality as u32 == 1;
                    if delta && matches!(m, Msg::Sum | Msg::Histogram | Msg::ExpHistogram) {
                        self.scan.has_delta = true;
                    }
                }
                Field::RepeatedFixed64 => match wt {
                    I64 => {
                        take(b, 8)?;
                    }
                    LEN => {
                        if !len_delimited(b)?.len().is_multiple_of(8) {
                            return None;
                        }
                    }
                    _ => return None,
                },
                Field::RepeatedVarint => match wt {
                    VARINT => {
                        varint(b)?;
                    }
                    LEN => {
                        let mut packed = len_delimited(b)?;
                        while !packed.is_empty() {
                            varint(&mut packed)?;
                        }
                    }
                    _ => return None,
                },
            }
        }
        Some(seen)
    }
}

fn expect(wt: u8, wanted: u8) -> Option<()> {
    (wt == wanted).then_some(())
}

/// Skips an unknown field; groups (deprecated, never in OTLP) are not followed.
fn skip(b: &mut &[u8], wt: u8) -> Option<()> {
    match wt {
        VARINT => varint(b).map(drop),
        I64 => take(b, 8).map(drop),
        LEN => len_delimited(b).map(drop),
        I32 => take(b, 4).map(drop),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
