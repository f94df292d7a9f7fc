//! `vla-receivers`: the receivers of the VLA telemetry pipeline.
//!
//! - [`otlp`]: OTLP metrics over gRPC (`:4317`) and HTTP (`:4318`, `/v1/metrics`, protobuf
//!   and JSON; gzip, zstd or deflate bodies), answering retryable statuses when the pipeline is full.
//! - [`nvml`]: every NVIDIA GPU of the host polled through NVML (`libnvidia-ml`, loaded at run
//!   time) or a fake source: the catalogue's `vla_gpu_*` metrics and, optionally, the DCGM
//!   exporter's names; it also publishes the readings for the `gpu_stats` processor. Without a
//!   GPU it reports `vla_gpu_available 0` and keeps running.
//!
//! ```yaml
//! receivers:
//!   otlp:
//!     protocols:
//!       grpc: { endpoint: 127.0.0.1:4317 }
//!       http: { endpoint: 127.0.0.1:4318 }
//!   nvml: { collection_interval: 10s, metrics: { vla: true, dcgm: false } }
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod nvml;
pub mod otlp;

pub use otlp::{OtlpReceiver, ReceiverBuildError};

/// The registry table of this crate's receiver types.
pub fn register(r: &mut impl vla_pipeline::registry::Registry) {
    r.receiver::<nvml::NvmlReceiver>();
    r.receiver::<OtlpReceiver>();
}
