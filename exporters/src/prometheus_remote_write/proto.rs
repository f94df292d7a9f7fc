//! Prometheus remote-write 1.0 messages (`prometheus.WriteRequest`), declared by hand.
//!
//! The exporter writes these bytes directly (see `encode.rs`) so that a series' labels are
//! encoded once per point rather than built as structs per sample; the prost structs are the
//! reference shape and the decode path tests and the in-test receivers use.

/// `prometheus.WriteRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// The series with their samples.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    /// Metric metadata (not sent by this exporter yet).
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Sorted, unique labels, `__name__` included.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Samples in timestamp order.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    /// Native histogram samples.
    #[prost(message, repeated, tag = "4")]
    pub histograms: Vec<Histogram>,
}

/// `prometheus.Histogram` (a native histogram sample), with the integer-count members of
/// its oneofs, which are what this exporter writes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Histogram {
    /// Observations (`count_int`).
    #[prost(uint64, optional, tag = "1")]
    pub count_int: Option<u64>,
    /// Their sum.
    #[prost(double, tag = "3")]
    pub sum: f64,
    /// The schema: bucket boundaries are powers of 2^(2^-schema).
    #[prost(sint32, tag = "4")]
    pub schema: i32,
    /// The zero bucket's width.
    #[prost(double, tag = "5")]
    pub zero_threshold: f64,
    /// Observations in the zero bucket (`zero_count_int`).
    #[prost(uint64, optional, tag = "6")]
    pub zero_count_int: Option<u64>,
    /// Runs of negative buckets.
    #[prost(message, repeated, tag = "8")]
    pub negative_spans: Vec<BucketSpan>,
    /// Negative bucket counts, each the difference to the previous one.
    #[prost(sint64, repeated, tag = "9")]
    pub negative_deltas: Vec<i64>,
    /// Runs of positive buckets.
    #[prost(message, repeated, tag = "11")]
    pub positive_spans: Vec<BucketSpan>,
    /// Positive bucket counts, each the difference to the previous one.
    #[prost(sint64, repeated, tag = "12")]
    pub positive_deltas: Vec<i64>,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "15")]
    pub timestamp: i64,
}

/// `prometheus.BucketSpan`: `length` consecutive buckets, starting `offset` after the end of
/// the previous span (the first span: at index `offset`).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct BucketSpan {
    /// Gap to the previous span, or the first index.
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    /// Buckets in the span.
    #[prost(uint32, tag = "2")]
    pub length: u32,
}

/// `TimeSeries.histograms` (field 4, length-delimited).
pub(crate) const TAG_4_LEN: u8 = 0x22;
/// `Histogram.timestamp` (field 15, varint).
pub(crate) const TAG_15_VARINT: u8 = 0x78;

fn zigzag32(v: i32) -> u64 {
    u64::from(((v << 1) ^ (v >> 31)) as u32)
}

fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Appends one native histogram as a `TimeSeries.histograms` entry (each side one span, gaps
/// of empty buckets included), using `scratch` for the message body.
pub(crate) fn put_histogram(
    buf: &mut Vec<u8>,
    h: &crate::translate::NativeHistogram,
    scratch: &mut Vec<u8>,
) {
    let m = scratch;
    m.clear();
    m.push(0x08);
    put_varint(m, h.count);
    m.push(0x19);
    m.extend_from_slice(&h.sum.to_le_bytes());
    m.push(0x20);
    put_varint(m, zigzag32(h.schema));
    m.push(0x29);
    m.extend_from_slice(&h.zero_threshold.to_le_bytes());
    m.push(0x30);
    put_varint(m, h.zero_count);
    for (span_tag, deltas_tag, side) in [(0x42u8, 0x4au8, &h.negative), (0x5a, 0x62, &h.positive)] {
        if side.counts.is_empty() {
            continue;
        }
        let mut span = Vec::with_capacity(12);
        span.push(0x08);
        put_varint(&mut span, zigzag32(side.first));
        span.push(0x10);
        put_varint(&mut span, side.counts.len() as u64);
        m.push(span_tag);
        put_varint(m, span.len() as u64);
        m.extend_from_slice(&span);
        let mut packed = Vec::with_capacity(side.counts.len() * 2);
        let mut prev = 0i64;
        for c in &side.counts {
            let c = i64::try_from(*c).unwrap_or(i64::MAX);
            put_varint(&mut packed, zigzag64(c.wrapping_sub(prev)));
            prev = c;
        }
        m.push(deltas_tag);
        put_varint(m, packed.len() as u64);
        m.extend_from_slice(&packed);
    }
    m.push(TAG_15_VARINT);
    put_varint(m, h.timestamp_ms as u64);
    buf.push(TAG_4_LEN);
    put_varint(buf, m.len() as u64);
    buf.extend_from_slice(m);
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Label {
    /// Label name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Label value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// The value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `prometheus.MetricMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricMetadata {
    /// Metric type (`COUNTER` = 1, `GAUGE` = 2, `HISTOGRAM` = 3, `SUMMARY` = 5, ...).
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    /// Family name.
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    /// Help text.
    #[prost(string, tag = "4")]
    pub help: String,
    /// Unit.
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// Field 1, length-delimited (`TimeSeries.labels`, `Label.name`, `WriteRequest.timeseries`).
pub(crate) const TAG_1_LEN: u8 = 0x0a;
/// Field 2, length-delimited (`TimeSeries.samples`, `Label.value`).
pub(crate) const TAG_2_LEN: u8 = 0x12;
/// Field 1, 64-bit (`Sample.value`).
pub(crate) const TAG_1_I64: u8 = 0x09;
/// Field 2, varint (`Sample.timestamp`).
pub(crate) const TAG_2_VARINT: u8 = 0x10;

/// Bytes a varint takes.
#[inline]
pub(crate) fn varint_len(v: u64) -> usize {
    // 1 byte per started group of 7 bits; 0 takes one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Appends a varint.
#[inline]
pub(crate) fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Encoded length of one `TimeSeries.labels` entry (tag and length prefix included).
#[inline]
pub(crate) fn label_len(name: &str, value: &str) -> usize {
    let inner = label_inner_len(name, value);
    1 + varint_len(inner as u64) + inner
}

#[inline]
fn label_inner_len(name: &str, value: &str) -> usize {
    1 + varint_len(name.len() as u64)
        + name.len()
        + 1
        + varint_len(value.len() as u64)
        + value.len()
}

/// Appends one `Label` as a `TimeSeries.labels` entry.
pub(crate) fn put_label(buf: &mut Vec<u8>, name: &str, value: &str) {
    let inner = label_inner_len(name, value);
    buf.reserve(inner + 6);
    buf.push(TAG_1_LEN);
    put_varint(buf, inner as u64);
    buf.push(TAG_1_LEN);
    put_varint(buf, name.len() as u64);
    buf.extend_from_slice(name.as_bytes());
    buf.push(TAG_2_LEN);
    put_varint(buf, value.len() as u64);
    buf.extend_from_slice(value.as_bytes());
}

/// A timestamp's varint, encoded once for all the samples that share it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EncodedTimestamp {
    timestamp: i64,
    len: u8,
    bytes: [u8; 10],
}

impl EncodedTimestamp {
    pub(crate) fn new(timestamp: i64) -> Self {
        // int64 is encoded as the two's-complement varint of its u64 bits.
        let mut v = timestamp as u64;
        let mut bytes = [0u8; 10];
        let mut len = 0;
        for b in &mut bytes {
            len += 1;
            if v < 0x80 {
                *b = v as u8;
                break;
            }
            *b = (v as u8) | 0x80;
            v >>= 7;
        }
        Self {
            timestamp,
            len,
            bytes,
        }
    }

    pub(crate) fn timestamp(&self) -> i64 {
        self.timestamp
    }

    fn bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }

    /// Length of the `Sample` message body (at most 20, so its own varint is one byte).
    pub(crate) fn sample_len(&self) -> usize {
        1 + 8 + 1 + usize::from(self.len)
    }
}

/// Length of the `Sample` message body.
#[cfg(test)]
pub(crate) fn sample_len(timestamp: i64) -> usize {
    1 + 8 + 1 + varint_len(timestamp as u64)
}

/// Appends one `Sample` as a `TimeSeries.samples` entry.
#[inline]
pub(crate) fn put_sample(buf: &mut Vec<u8>, value: f64, timestamp: &EncodedTimestamp) {
    buf.push(TAG_2_LEN);
    buf.push(timestamp.sample_len() as u8);
    buf.push(TAG_1_I64);
    buf.extend_from_slice(&value.to_le_bytes());
    buf.push(TAG_2_VARINT);
    buf.extend_from_slice(timestamp.bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_prost() {
        for v in vla_pipeline::fixtures::VARINT_EDGES {
            let mut ours = Vec::new();
            put_varint(&mut ours, v);
            let mut theirs = Vec::new();
            prost::encoding::encode_varint(v, &mut theirs);
            assert_eq!(ours, theirs, "{v}");
            assert_eq!(varint_len(v), prost::encoding::encoded_len_varint(v), "{v}");
        }
        let mut buf = Vec::new();
        put_label(&mut buf, "job", "api");
        assert_eq!(buf.len(), label_len("job", "api"));
    }

    #[test]
    fn samples_match_prost() {
        use prost::Message;
        for ts in [0i64, 1, 127, 128, 1_764_000_000_000, -1, i64::MIN, i64::MAX] {
            let et = EncodedTimestamp::new(ts);
            assert_eq!(et.sample_len(), sample_len(ts), "{ts}");
            let mut ours = Vec::new();
            put_sample(&mut ours, 2.5, &et);
            let series = TimeSeries {
                labels: Vec::new(),
                samples: vec![Sample {
                    value: 2.5,
                    timestamp: ts,
                }],
                histograms: Vec::new(),
            };
            assert_eq!(
                TimeSeries::decode(ours.as_slice()).ok().as_ref(),
                Some(&series)
            );
            if ts != 0 {
                // prost leaves a zero timestamp out; we always write it.
                assert_eq!(ours, series.encode_to_vec(), "{ts}");
            }
        }
    }

    #[test]
    fn histograms_match_prost() {
        use crate::translate::{NativeBuckets, NativeHistogram};
        use prost::Message;
        let h = NativeHistogram {
            count: 9,
            sum: 12.5,
            schema: -3,
            zero_count: 1,
            zero_threshold: 1e-9,
            positive: NativeBuckets {
                first: -2,
                counts: vec![3, 0, 5],
            },
            negative: NativeBuckets::default(),
            timestamp_ms: 1_764_000_000_000,
        };
        let mut ours = Vec::new();
        put_histogram(&mut ours, &h, &mut Vec::new());
        let decoded = TimeSeries::decode(ours.as_slice()).expect("decodes");
        assert_eq!(
            decoded.histograms,
            vec![Histogram {
                count_int: Some(9),
                sum: 12.5,
                schema: -3,
                zero_threshold: 1e-9,
                zero_count_int: Some(1),
                negative_spans: Vec::new(),
                negative_deltas: Vec::new(),
                positive_spans: vec![BucketSpan {
                    offset: -2,
                    length: 3
                }],
                positive_deltas: vec![3, -3, 5],
                timestamp: 1_764_000_000_000,
            }]
        );
    }
}
