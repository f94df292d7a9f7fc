//! The walk over an encoded request: the same translation as the decoded walk, read from the
//! request's bytes, so a point whose series the sink has cached costs a read of its fields,
//! a key of its encoded attributes and a lookup, with nothing allocated.
//!
//! Resources and scopes (a few per request) are decoded with prost and set up as the decoded
//! walk does. Gauges, sums and histograms are read in place, field by field as prost would
//! (the last of a scalar set twice wins, every occurrence of a repeated field appends, packed
//! or not); a point's attributes are decoded only when the sink does not know its key.
//! Summaries and exponential histograms are decoded with prost and go through the decoded
//! walk.
//! `tests::the_encoded_walk_translates_as_the_decoded_one` holds the two walks to the same
//! samples on mutated requests.

use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{Metric, number_data_point};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use super::super::labels::Mark;
use super::super::names::PromType;
use super::super::sink::{Family, SampleSink};
use super::points::{HistogramPoint, NumberPoint};
use super::{Attrs, Clock, TranslateStats, Translator};
use vla_pipeline::wire::{Fields, Wire, push_fixed64, text};

// Field numbers of the OTLP metrics schema (opentelemetry-proto 0.33).
const REQUEST_RESOURCE_METRICS: u32 = 1;
const RM_RESOURCE: u32 = 1;
const RM_SCOPE_METRICS: u32 = 2;
const SM_SCOPE: u32 = 1;
const SM_METRICS: u32 = 2;
const METRIC_NAME: u32 = 1;
const METRIC_DESCRIPTION: u32 = 2;
const METRIC_UNIT: u32 = 3;
const METRIC_GAUGE: u32 = 5;
const METRIC_SUM: u32 = 7;
const METRIC_HISTOGRAM: u32 = 9;
const METRIC_EXPONENTIAL_HISTOGRAM: u32 = 10;
const METRIC_SUMMARY: u32 = 11;
/// `data_points` of a gauge, sum or histogram.
const DATA_POINTS: u32 = 1;
/// `aggregation_temporality` of a sum or histogram.
const DATA_TEMPORALITY: u32 = 2;
const SUM_IS_MONOTONIC: u32 = 3;
const NUMBER_TIME: u32 = 3;
const NUMBER_AS_DOUBLE: u32 = 4;
const NUMBER_AS_INT: u32 = 6;
const NUMBER_ATTRIBUTES: u32 = 7;
const NUMBER_FLAGS: u32 = 8;
const HISTOGRAM_TIME: u32 = 3;
const HISTOGRAM_COUNT: u32 = 4;
const HISTOGRAM_SUM: u32 = 5;
const HISTOGRAM_BUCKET_COUNTS: u32 = 6;
const HISTOGRAM_EXPLICIT_BOUNDS: u32 = 7;
const HISTOGRAM_ATTRIBUTES: u32 = 9;
const HISTOGRAM_FLAGS: u32 = 10;

/// Buffers reused from point to point.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    /// A point's decoded attributes, on a miss.
    pub attrs: Vec<KeyValue>,
    bucket_counts: Vec<u64>,
    bounds: Vec<f64>,
}

/// A point's attributes as encoded: the records (key, length and `KeyValue` bytes) of its
/// `attributes` field `field` found in `records`, which is either exactly those records, one
/// after another (`contiguous`: encoders write a message's fields in order, so a repeated
/// field's records sit together), or the whole point.
#[derive(Debug, Clone, Copy)]
pub(in crate::translate) struct EncodedAttrs<'a> {
    records: &'a [u8],
    field: u32,
    contiguous: bool,
}

impl EncodedAttrs<'_> {
    /// Appends the attribute records, in order, to a key.
    pub(in crate::translate) fn write_records(&self, out: &mut Vec<u8>) {
        if self.contiguous {
            out.extend_from_slice(self.records);
            return;
        }
        let mut fields = Fields::new(self.records);
        while let Some((f, _, record)) = fields.next_record() {
            if f == self.field {
                out.extend_from_slice(record);
            }
        }
    }

    /// The attributes, decoded into `out` (cleared first).
    pub(super) fn decode_into(&self, out: &mut Vec<KeyValue>) {
        out.clear();
        for (f, value) in Fields::new(self.records) {
            if f == self.field
                && let Wire::Len(kv) = value
                && let Ok(kv) = KeyValue::decode(kv)
            {
                out.push(kv);
            }
        }
    }
}

/// Where a point's attribute records are, followed while its fields are read.
struct AttrSpan {
    field: u32,
    start: usize,
    end: usize,
    /// 0: none yet, 1: in the run of attribute records, 2: past it, 3: scattered.
    state: u8,
}

impl AttrSpan {
    fn new(field: u32) -> Self {
        Self {
            field,
            start: 0,
            end: 0,
            state: 0,
        }
    }

    /// Notes the field that took the point's bytes `from..to`.
    #[inline]
    fn note(&mut self, f: u32, from: usize, to: usize) {
        match (f == self.field, self.state) {
            (true, 0) => {
                (self.start, self.end, self.state) = (from, to, 1);
            }
            (true, 1) => self.end = to,
            (true, _) => self.state = 3,
            (false, 1) => self.state = 2,
            (false, _) => {}
        }
    }

    fn attrs(self, point: &[u8]) -> EncodedAttrs<'_> {
        let (records, contiguous) = if self.state == 3 {
            (point, false)
        } else {
            (point.get(self.start..self.end).unwrap_or_default(), true)
        };
        EncodedAttrs {
            records,
            field: self.field,
            contiguous,
        }
    }
}

/// Decodes every occurrence of message field `field` of `message` as prost does: merged
/// into one, `None` when there is none.
fn merged<M: Message + Default>(message: &[u8], field: u32) -> Option<M> {
    let mut out: Option<M> = None;
    for (f, value) in Fields::new(message) {
        if f == field
            && let Wire::Len(bytes) = value
        {
            let m = out.get_or_insert_with(M::default);
            // A checked request decodes; were it not to, prost keeps what it read.
            let _ = m.merge(bytes);
        }
    }
    out
}

/// The occurrences of length-delimited field `field`.
fn each(message: &[u8], field: u32) -> impl Iterator<Item = &[u8]> {
    Fields::new(message).filter_map(move |(f, value)| match value {
        Wire::Len(bytes) if f == field => Some(bytes),
        _ => None,
    })
}

/// What a sum or histogram says besides its points.
#[derive(Debug, Clone, Copy, Default)]
struct DataHeader {
    points: usize,
    temporality: i32,
    is_monotonic: bool,
}

fn data_header(data: &[u8]) -> DataHeader {
    let mut h = DataHeader::default();
    for (f, value) in Fields::new(data) {
        match (f, value) {
            (DATA_POINTS, Wire::Len(_)) => h.points += 1,
            // prost reads an enum as `i32` and a bool as "not zero", from the last occurrence.
            (DATA_TEMPORALITY, Wire::Varint(v)) => h.temporality = v as i32,
            (SUM_IS_MONOTONIC, Wire::Varint(v)) => h.is_monotonic = v != 0,
            _ => {}
        }
    }
    h
}

impl Translator {
    /// Translates one encoded `ExportMetricsServiceRequest`.
    pub(super) fn translate_raw(
        &mut self,
        request: &[u8],
        fallback_ms: i64,
        stats: &mut TranslateStats,
        sink: &mut impl SampleSink,
    ) {
        for rm in each(request, REQUEST_RESOURCE_METRICS) {
            let resource: Option<Resource> = merged(rm, RM_RESOURCE);
            let resource_attrs: &[KeyValue] = resource.as_ref().map_or(&[], |r| &r.attributes);
            let resource_mark = self.begin_resource(resource_attrs);
            let mut clock = Clock::new(fallback_ms);
            for sm in each(rm, RM_SCOPE_METRICS) {
                let scope: Option<InstrumentationScope> = merged(sm, SM_SCOPE);
                let scope_mark = self.begin_scope(resource_mark, scope.as_ref(), sink);
                for m in each(sm, SM_METRICS) {
                    self.raw_metric(m, scope_mark, &mut clock, stats, sink);
                }
            }
            if self.options.target_info {
                self.target_info(resource_attrs, clock.latest(), stats, sink);
            }
        }
    }

    fn raw_metric(
        &mut self,
        m: &[u8],
        scope_mark: Mark,
        clock: &mut Clock,
        stats: &mut TranslateStats,
        sink: &mut impl SampleSink,
    ) {
        let (mut name, mut description, mut unit) = ("", "", "");
        // The scan leaves a metric whose data is set twice (which prost merges) to prost, so
        // a checked request has one at most.
        let mut data = None;
        for (f, value) in Fields::new(m) {
            match (f, value) {
                (METRIC_NAME, Wire::Len(b)) => name = text(b),
                (METRIC_DESCRIPTION, Wire::Len(b)) => description = text(b),
                (METRIC_UNIT, Wire::Len(b)) => unit = text(b),
                (
                    METRIC_GAUGE
                    | METRIC_SUM
                    | METRIC_HISTOGRAM
                    | METRIC_EXPONENTIAL_HISTOGRAM
                    | METRIC_SUMMARY,
                    Wire::Len(b),
                ) => data = Some((f, b)),
                _ => {}
            }
        }
        match data {
            None => {}
            Some((METRIC_GAUGE, gauge)) => {
                let points = each(gauge, DATA_POINTS).count();
                let Some((base, ty)) = self.number_family(name, unit, None, points, stats) else {
                    return;
                };
                let family = Family {
                    name: &base,
                    ty,
                    help: description,
                };
                for p in each(gauge, DATA_POINTS) {
                    self.number_point(number_point(p), family, clock, scope_mark, stats, sink);
                }
            }
            Some((METRIC_SUM, sum)) => {
                let h = data_header(sum);
                let kind = Some((h.temporality, h.is_monotonic));
                let Some((base, ty)) = self.number_family(name, unit, kind, h.points, stats) else {
                    return;
                };
                let family = Family {
                    name: &base,
                    ty,
                    help: description,
                };
                for p in each(sum, DATA_POINTS) {
                    self.number_point(number_point(p), family, clock, scope_mark, stats, sink);
                }
            }
            Some((METRIC_HISTOGRAM, histogram)) => {
                let h = data_header(histogram);
                let Some([base, bucket, sum_name, count_name]) =
                    self.histogram_family(name, unit, h.temporality, h.points, stats)
                else {
                    return;
                };
                let family = Family {
                    name: &base,
                    ty: PromType::Histogram,
                    help: description,
                };
                let names = [&*bucket, &*sum_name, &*count_name];
                let mut scratch = std::mem::take(&mut self.raw);
                // Misses decode into `self.raw.attrs` meanwhile: give it the grown buffer.
                self.raw.attrs = std::mem::take(&mut scratch.attrs);
                for p in each(histogram, DATA_POINTS) {
                    let point = histogram_point(p, &mut scratch);
                    self.histogram_point(&point, family, names, clock, scope_mark, stats, sink);
                }
                scratch.attrs = std::mem::take(&mut self.raw.attrs);
                self.raw = scratch;
            }
            Some(_) => {
                // Summaries and exponential histograms.
                if let Ok(metric) = Metric::decode(m) {
                    self.metric(&metric, scope_mark, clock, stats, sink);
                }
            }
        }
    }
}

/// A gauge or sum point read from its bytes.
fn number_point(p: &[u8]) -> NumberPoint<'_> {
    let (mut time_unix_nano, mut flags, mut value) = (0, 0, None);
    let mut span = AttrSpan::new(NUMBER_ATTRIBUTES);
    let mut fields = Fields::new(p);
    loop {
        let from = p.len() - fields.remaining();
        let Some((f, v, _)) = fields.next_record() else {
            break;
        };
        span.note(f, from, p.len() - fields.remaining());
        match (f, v) {
            (NUMBER_TIME, Wire::I64(v)) => time_unix_nano = v,
            (NUMBER_AS_DOUBLE, Wire::I64(v)) => {
                value = Some(number_data_point::Value::AsDouble(f64::from_bits(v)));
            }
            (NUMBER_AS_INT, Wire::I64(v)) => {
                value = Some(number_data_point::Value::AsInt(v as i64));
            }
            (NUMBER_FLAGS, Wire::Varint(v)) => flags = v as u32,
            _ => {}
        }
    }
    NumberPoint {
        attrs: Attrs::Encoded(span.attrs(p)),
        time_unix_nano,
        flags,
        value,
    }
}

/// A histogram point read from its bytes; its buckets and bounds go into `scratch`.
fn histogram_point<'a>(p: &'a [u8], scratch: &'a mut Scratch) -> HistogramPoint<'a> {
    scratch.bucket_counts.clear();
    scratch.bounds.clear();
    let (mut time_unix_nano, mut flags, mut count, mut sum) = (0, 0, 0, None);
    let mut span = AttrSpan::new(HISTOGRAM_ATTRIBUTES);
    let mut fields = Fields::new(p);
    loop {
        let from = p.len() - fields.remaining();
        let Some((f, value, _)) = fields.next_record() else {
            break;
        };
        span.note(f, from, p.len() - fields.remaining());
        match (f, value) {
            (HISTOGRAM_TIME, Wire::I64(v)) => time_unix_nano = v,
            (HISTOGRAM_COUNT, Wire::I64(v)) => count = v,
            (HISTOGRAM_SUM, Wire::I64(v)) => sum = Some(f64::from_bits(v)),
            (HISTOGRAM_BUCKET_COUNTS, v) => push_fixed64(v, &mut scratch.bucket_counts, |c| c),
            (HISTOGRAM_EXPLICIT_BOUNDS, v) => {
                push_fixed64(v, &mut scratch.bounds, f64::from_bits);
            }
            (HISTOGRAM_FLAGS, Wire::Varint(v)) => flags = v as u32,
            _ => {}
        }
    }
    HistogramPoint {
        attrs: Attrs::Encoded(span.attrs(p)),
        time_unix_nano,
        flags,
        count,
        sum,
        bucket_counts: &scratch.bucket_counts,
        explicit_bounds: &scratch.bounds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(field: u32, bytes: &[u8], out: &mut Vec<u8>) {
        prost::encoding::encode_varint(u64::from(field << 3 | 2), out);
        prost::encoding::encode_varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }

    /// Attributes in one run (as encoders write them) or scattered among the point's other
    /// fields give the same key and the same decoded attributes.
    #[test]
    fn scattered_attributes_key_as_contiguous_ones() {
        let kv = |k: &str, v: &str| vla_pipeline::fixtures::kv(k, v).encode_to_vec();
        let (a, b) = (kv("model", "pi0"), kv("gpu", "1"));
        let mut time = vec![(NUMBER_TIME << 3 | 1) as u8];
        time.extend_from_slice(&5u64.to_le_bytes());
        let mut run = time.clone();
        record(NUMBER_ATTRIBUTES, &a, &mut run);
        record(NUMBER_ATTRIBUTES, &b, &mut run);
        let mut scattered = Vec::new();
        record(NUMBER_ATTRIBUTES, &a, &mut scattered);
        scattered.extend_from_slice(&time);
        record(NUMBER_ATTRIBUTES, &b, &mut scattered);
        let (p, q) = (number_point(&run), number_point(&scattered));
        let (Attrs::Encoded(p_attrs), Attrs::Encoded(q_attrs)) = (p.attrs, q.attrs) else {
            panic!("encoded attributes");
        };
        assert!(p_attrs.contiguous && !q_attrs.contiguous);
        let (mut p_key, mut q_key) = (Vec::new(), Vec::new());
        p_attrs.write_records(&mut p_key);
        q_attrs.write_records(&mut q_key);
        assert_eq!(p_key, q_key);
        assert_eq!(p_key, run[9..]);
        let (mut p_kvs, mut q_kvs) = (Vec::new(), Vec::new());
        p_attrs.decode_into(&mut p_kvs);
        q_attrs.decode_into(&mut q_kvs);
        assert_eq!(p_kvs, q_kvs);
        assert_eq!(p_kvs.len(), 2);
        assert_eq!((p.time_unix_nano, q.time_unix_nano), (5, 5));
    }
}
