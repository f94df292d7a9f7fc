//! The hot path's parts on a 1000-point mixed batch (400 gauge points, 400 cumulative counter
//! points, 200 points of a 12-bucket histogram; ≈3.8 samples per point), the workload of the
//! performance budget in `docs/benchmarks.md`. Throughput is in data points.
//!
//! - `decode_otlp`: prost's decode of the request (into owned strings), what a decoded batch
//!   costs before translation; `drop_decoded` the drop of the decode alone;
//! - `translate_encode_snappy` (series cache hit): a decoded batch in the steady state, every
//!   label set cached from the batch before;
//! - `series_cache_miss`: the same with a new encoder, so every label set is translated,
//!   encoded and cached;
//! - `encoded_translate_encode_snappy` and `encoded_series_cache_miss`: the same two for the
//!   batch the receivers hand on, kept as the request's bytes and translated from them (the
//!   whole exporter's work: no decode before it);
//! - `scan_request`: the receivers' check of the request bytes (`MetricBatch::from_request`);
//! - `snappy`: only the compression of the batch's request bodies.
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
    // The receivers' shape: the request kept as its bytes, translated from them.
    let from_bytes = MetricBatch::from_request("otlp".into(), request.clone().into()).unwrap();
    assert!(from_bytes.is_encoded());
    let mut bytes_encoder = BatchEncoder::new(&config);
    bytes_encoder.encode(&from_bytes).unwrap();
    group.bench_function("encoded_translate_encode_snappy_1000_points", |b| {
        b.iter(|| {
            bytes_encoder
                .encode(std::hint::black_box(&from_bytes))
                .unwrap()
        });
    });
    group.bench_function("encoded_series_cache_miss_1000_points", |b| {
        b.iter_batched(
            || BatchEncoder::new(&config),
            |mut fresh| fresh.encode(std::hint::black_box(&from_bytes)).unwrap(),
            BatchSize::SmallInput,
        );
    });
    group.bench_function("scan_request_1000_points", |b| {
        b.iter(|| {
            MetricBatch::from_request("otlp".into(), std::hint::black_box(request.clone().into()))
                .unwrap()
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
