//! `vla-receivers`: the receivers of the VLA telemetry pipeline.
//!
//! - [`otlp`]: OTLP metrics over gRPC (`:4317`) and HTTP (`:4318`, `/v1/metrics`, protobuf
//!   and JSON, gzip), answering retryable statuses when the pipeline is full.
//!
//! ```yaml
//! receivers:
//!   otlp:
//!     protocols:
//!       grpc: { endpoint: 127.0.0.1:4317 }
//!       http: { endpoint: 127.0.0.1:4318 }
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod nvml;
pub mod otlp;

pub use otlp::{OtlpReceiver, ReceiverBuildError};
