//! The hot path's parts on a 1000-point mixed batch (400 gauge points, 400 cumulative counter
//! points, 200 points of a 12-bucket histogram; ≈3.8 samples per point), the workload of the
//! performance budget in `docs/benchmarks.md`. Throughput is in data points.
//!
//! - `decode_otlp`: the receiver's decode of the request (prost, into owned strings) and the
//!   drop of the decoded batch; `drop_decoded` the drop alone;
//! - `translate_encode_snappy` (series cache hit): the steady state, every label set cached
//!   from the batch before;
//! - `series_cache_miss`: the same with a new encoder, so every label set is translated,
//!   encoded and cached;
//! - `snappy`: only the compression of the batch's request bodies;
//! - `borrowed_walk`: the floor of a zero-copy decode (not built yet, see `docs/benchmarks.md`):
//!   a walk over the same request bytes that reads every point's timestamp, value and bucket
//!   counts and hashes its attribute bytes (plus its resource, scope and metric) into one
//!   series-cache lookup, with no owned strings, so no allocation and nothing to drop.
//!
//! `cargo bench -p vla-exporters --bench remote_write_encode`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric;
use prost::Message;
use vla_exporters::prometheus_remote_write::{BatchEncoder, Config};
use vla_pipeline::MetricBatch;
use vla_pipeline::fixtures;

/// The collector's allocator (`collector/src/main.rs`): decode and drop are mostly allocation,
/// so glibc malloc would measure something else.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TIERS: [&str; 4] = ["free", "pro", "enterprise", "internal"];
const MODELS: [&str; 5] = ["rt-1", "rt-2", "octo", "openvla-7b", "pi0"];

fn point_labels(i: usize) -> Vec<(String, String)> {
    vec![
        ("model".into(), MODELS[i % MODELS.len()].into()),
        ("customer.tier".into(), TIERS[(i / 5) % TIERS.len()].into()),
        ("gpu.id".into(), (i % 8).to_string()),
        ("customer.id".into(), format!("c{}", i / 40)),
    ]
}

fn mixed_batch() -> MetricBatch {
    let labels: Vec<Vec<(String, String)>> = (0..400).map(point_labels).collect();
    let borrowed: Vec<Vec<(&str, &str)>> = labels
        .iter()
        .map(|l| l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect())
        .collect();
    let points: Vec<(f64, &[(&str, &str)])> = borrowed
        .iter()
        .enumerate()
        .map(|(i, l)| (i as f64 * 1.5, l.as_slice()))
        .collect();
    let gauge = fixtures::gauge("vla.gpu.temperature", "Cel", &points);
    let sum = fixtures::cumulative_sum("vla.inference.requests", "{request}", true, &points);
    let bounds = [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ];
    let counts = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13];
    let mut hist = fixtures::histogram("vla.inference.duration", "s", &bounds, &counts, 42.0, &[]);
    if let Some(metric::Data::Histogram(h)) = &mut hist.data {
        let template = h.data_points[0].clone();
        h.data_points = (0..200)
            .map(|i| {
                let mut p = template.clone();
                p.attributes = fixtures::attrs(&borrowed[i]);
                p
            })
            .collect();
    }
    let rm = fixtures::resource_with(
        &[
            ("service.name", "vla-api"),
            ("service.namespace", "prod"),
            ("service.instance.id", "pod-1"),
            ("host.name", "node-a"),
        ],
        vec![gauge, sum, hist],
    );
    MetricBatch::new("otlp".into(), vec![rm])
}

fn bench(c: &mut Criterion) {
    let batch = mixed_batch();
    assert_eq!(batch.data_points(), 1000);
    let config = Config::with_endpoint("http://127.0.0.1:9090/api/v1/write");
    let mut encoder = BatchEncoder::new(&config);
    let encoded = encoder.encode(&batch).unwrap();
    let bytes: usize = encoded.shards.iter().flatten().map(|r| r.body.len()).sum();
    eprintln!(
        "1000 points -> {} samples, {} requests, {bytes} compressed bytes",
        encoded.samples,
        encoded.shards.iter().map(Vec::len).sum::<usize>()
    );
    let mut group = c.benchmark_group("remote_write");
    group.throughput(Throughput::Elements(batch.data_points() as u64));
    group.bench_function("translate_encode_snappy_1000_points", |b| {
        b.iter(|| encoder.encode(std::hint::black_box(&batch)).unwrap());
    });
    group.bench_function("series_cache_miss_1000_points", |b| {
        b.iter_batched(
            || BatchEncoder::new(&config),
            |mut fresh| fresh.encode(std::hint::black_box(&batch)).unwrap(),
            BatchSize::SmallInput,
        );
    });
    let request = ExportMetricsServiceRequest {
        resource_metrics: batch.resource_metrics().to_vec(),
    }
    .encode_to_vec();
    group.bench_function("decode_otlp_1000_points", |b| {
        b.iter(|| ExportMetricsServiceRequest::decode(std::hint::black_box(&request[..])).unwrap());
    });
    group.bench_function("drop_decoded_1000_points", |b| {
        b.iter_batched(
            || ExportMetricsServiceRequest::decode(&request[..]).unwrap(),
            drop,
            BatchSize::SmallInput,
        );
    });
    let bodies: Vec<Vec<u8>> = encoded
        .shards
        .iter()
        .flatten()
        .map(|r| snap::raw::Decoder::new().decompress_vec(&r.body).unwrap())
        .collect();
    eprintln!(
        "uncompressed: {} bytes",
        bodies.iter().map(Vec::len).sum::<usize>()
    );
    let mut snappy = snap::raw::Encoder::new();
    let mut out = vec![
        0;
        bodies
            .iter()
            .map(|b| snap::raw::max_compress_len(b.len()))
            .max()
            .unwrap()
    ];
    group.bench_function("snappy_1000_points", |b| {
        b.iter(|| {
            for body in &bodies {
                snappy
                    .compress(std::hint::black_box(body), &mut out)
                    .unwrap();
            }
        });
    });
    let mut walk = BorrowedWalk::default();
    assert_eq!(walk.walk(&request), 1000);
    assert_eq!(walk.series.len(), 1000, "one cache entry per point");
    assert_eq!(walk.buckets.len(), 13, "the last point is a histogram's");
    group.bench_function("borrowed_walk_1000_points", |b| {
        b.iter(|| walk.walk(std::hint::black_box(&request)));
    });
    group.finish();
}

/// A protobuf field as the walk sees it.
enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
}

/// Calls `f` with each field of message `buf` (wire types 0, 1, 2 and 5; 5 is skipped).
fn fields<'a>(mut buf: &'a [u8], mut f: impl FnMut(u64, Field<'a>)) {
    fn varint(buf: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some((&b, rest)) = buf.split_first() else {
                return v;
            };
            *buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                break;
            }
        }
        v
    }
    while !buf.is_empty() {
        let key = varint(&mut buf);
        let field = match key & 7 {
            0 => Field::Varint(varint(&mut buf)),
            1 => {
                let (v, rest) = buf.split_at(8.min(buf.len()));
                buf = rest;
                Field::Fixed64(u64::from_le_bytes(v.try_into().unwrap_or([0; 8])))
            }
            2 => {
                let len = (varint(&mut buf) as usize).min(buf.len());
                let (v, rest) = buf.split_at(len);
                buf = rest;
                Field::Bytes(v)
            }
            _ => {
                buf = buf.get(4..).unwrap_or_default();
                continue;
            }
        };
        f(key >> 3, field);
    }
}

/// The series cache a zero-copy decode would look points up in: hashes of a point's encoded
/// identity (resource, scope, metric name and attribute bytes).
#[derive(Default)]
struct BorrowedWalk {
    series: hashbrown::HashSet<u64, foldhash::fast::FixedState>,
    buckets: Vec<u64>,
    bounds: Vec<f64>,
    checksum: u64,
}

impl BorrowedWalk {
    /// Walks an `ExportMetricsServiceRequest`; returns the data points seen.
    fn walk(&mut self, request: &[u8]) -> usize {
        use std::hash::{BuildHasher, Hasher};
        let state = foldhash::fast::FixedState::with_seed(7);
        let mut points = 0;
        fields(request, |_, rm| {
            let Field::Bytes(rm) = rm else { return };
            let mut context = state.build_hasher();
            fields(rm, |tag, f| match (tag, f) {
                (1, Field::Bytes(resource)) => context.write(resource),
                (2, Field::Bytes(sm)) => {
                    let mut scope = context.clone();
                    fields(sm, |tag, f| match (tag, f) {
                        (1, Field::Bytes(s)) => scope.write(s),
                        (2, Field::Bytes(metric)) => {
                            let mut identity = scope.clone();
                            fields(metric, |tag, f| match (tag, f) {
                                (1 | 3, Field::Bytes(name)) => identity.write(name),
                                (kind @ (5 | 7 | 9), Field::Bytes(data)) => {
                                    fields(data, |tag, f| {
                                        if let (1, Field::Bytes(point)) = (tag, f) {
                                            points += 1;
                                            self.point(&identity, kind == 9, point);
                                        }
                                    });
                                }
                                _ => {}
                            });
                        }
                        _ => {}
                    });
                }
                _ => {}
            });
        });
        points
    }

    /// One number or histogram data point: its attribute bytes hashed onto `identity`, one
    /// lookup, and its time, value and buckets read.
    fn point(&mut self, identity: &foldhash::fast::FoldHasher, histogram: bool, point: &[u8]) {
        use std::hash::Hasher;
        let mut h = identity.clone();
        let (mut time, mut value) = (0u64, 0u64);
        self.buckets.clear();
        self.bounds.clear();
        fields(point, |tag, f| match (histogram, tag, f) {
            // NumberDataPoint: attributes 7, time 3, as_double 4, as_int 6; HistogramDataPoint:
            // attributes 9, time 3, sum 5, bucket_counts 6, explicit_bounds 7.
            (false, 7, Field::Bytes(kv)) | (true, 9, Field::Bytes(kv)) => h.write(kv),
            (_, 3, Field::Fixed64(t)) => time = t,
            // flags: NumberDataPoint 8, HistogramDataPoint 10.
            (false, 8, Field::Varint(flags)) | (true, 10, Field::Varint(flags)) => time ^= flags,
            (false, 4 | 6, Field::Fixed64(v)) | (true, 5, Field::Fixed64(v)) => value = v,
            (true, 6, Field::Bytes(packed)) => self.buckets.extend(
                packed
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))),
            ),
            (true, 7, Field::Bytes(packed)) => self.bounds.extend(
                packed
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))),
            ),
            _ => {}
        });
        let key = h.finish();
        self.series.insert(key);
        self.checksum = self
            .checksum
            .wrapping_add(time ^ value ^ (self.buckets.len() + self.bounds.len()) as u64);
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
