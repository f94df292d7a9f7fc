//! `vla-pipeline`: the shared contract of the VLA telemetry pipeline.
//!
//! Everything the receivers, processors, exporters and the collector agree on lives here and
//! depends on nothing of ours:
//! - [`MetricBatch`], the currency between stages (OTLP `ResourceMetrics` plus metadata), with
//!   a small API to visit data points and edit attributes;
//! - the component traits [`Receiver`], [`Processor`] and [`Exporter`];
//! - [`PipelineSender`] (receivers → pipelines, all-or-nothing, counted), the pipeline task
//!   ([`runner::Pipeline`]) and the exporter driver ([`driver`]: queue, retries, counters);
//! - [`memory::MemoryLimiter`], the byte-accounted admission of the `memory_limiter`;
//! - [`SeriesKey`], the compact key of series state;
//! - [`SelfMetrics`], the collector's own metrics;
//! - [`gpu::GpuSnapshots`], the latest GPU readings shared by the `nvml` receiver and the
//!   `gpu_stats` processor, and [`lookup::SourceStatus`], the health of a background-refreshed
//!   lookup source as `/ready` shows it;
//! - test fixtures behind the `test-util` feature.

pub mod ack;
mod batch;
mod component;
pub mod config;
pub mod driver;
pub mod gpu;
pub mod lookup;
pub mod memory;
pub mod ratelimit;
pub mod registry;
pub mod runner;
pub mod self_metrics;
mod sender;
mod series;
pub mod wire;

#[cfg(any(test, feature = "test-util"))]
pub mod fixtures;

pub use batch::{
    BatchMeta, MetricBatch, MetricKind, PointContext, ResourceMetricsMut, attr_str,
    count_data_points, is_delta, kind_of, metric_data_points, remove_attr, upsert_str,
};
pub use component::{
    BoxFuture, ComponentId, ExportError, ExportReport, Exporter, PrepareError, Prepared, Processor,
    Receiver, ReceiverContext, ReceiverError, Request,
};
pub use self_metrics::SelfMetrics;
pub use sender::{PipelineSender, SendError};
pub use series::SeriesKey;

/// An error and its sources on one line: `error: cause: cause`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Re-exported so every crate names the same OTLP types.
pub use opentelemetry_proto;
