//! `vla-processors`: the processors of the VLA telemetry pipeline.
//!
//! Each processor lives in a module named after its config `type`:
//! - [`aggregate`]: stream aggregation by `group_by` / `without`: counter totals kept
//!   monotonic, gauge statistics, merged histograms, every `interval`.
//! - [`batch`]: groups data points before they fan out to the exporters (a pipeline stage).
//! - [`attributes`]: inserts, updates, upserts or deletes data-point attributes (the OpenTelemetry
//!   Collector's `attributes` processor, for metrics).
//! - [`cardinality_limit`]: caps the series of chosen metrics, folding the rest into one
//!   `otel_metric_overflow="true"` series per resource.
//! - [`customer_tier`]: adds the customer's tier (and other fields of its row) to points and
//!   resources that carry a customer id, from an inline map, a YAML/CSV file reloaded on change
//!   or a PostgreSQL query refreshed on an interval; the table is a snapshot swapped by a
//!   background refresher, and a failing source keeps the last good one.
//! - [`deltatocumulative`]: turns delta sums and histograms into cumulative ones (a running
//!   total per stream, bounded, optionally persisted across restarts).
//! - [`filter`]: drops metrics or data points by name, resource and point attributes.
//! - [`memory_limiter`]: byte-accounted admission of data in flight (receiver to exporter
//!   acknowledgement); over its limit, receivers refuse with retryable statuses or drop, counted.
//! - [`resource`]: the `attributes` actions on resource attributes.
//! - [`safety_labels`]: rules on metric name and attributes (equality, sets, regexes) that add
//!   labels such as `safety_category` and `requires_review`; first match or all matches.
//! - [`usage_revenue`]: `vla.revenue{tier}` from request counts × a price table.
//! - [`gpu_stats`]: joins the `nvml` receiver's latest GPU readings onto points that carry a
//!   `gpu_id` (the GPU model, optionally utilization and temperature bands).
//!
//! ```yaml
//! processors:
//!   attributes/env:
//!     actions:
//!       - { key: deployment.environment, value: prod, action: upsert }
//!   batch: { send_batch_size: 2048, timeout: 200ms }
//! service:
//!   pipelines:
//!     metrics: { receivers: [otlp], processors: [attributes/env, batch], exporters: [prometheus] }
//! ```

pub mod aggregate;
pub mod attributes;
pub mod batch;
pub mod cardinality_limit;
pub mod customer_tier;
pub mod deltatocumulative;
pub mod filter;
pub mod gpu_stats;
mod identity;
mod matching;
pub mod memory_limiter;
mod on_existing;
mod pattern;
pub mod resource;
mod rollup;
pub mod safety_labels;
pub mod usage_revenue;

pub use on_existing::OnExisting;

/// The registry table of this crate's processor types.
pub fn register(r: &mut impl vla_pipeline::registry::Registry) {
    r.processor::<aggregate::Aggregate>();
    r.processor::<attributes::Attributes>();
    r.processor::<batch::Batch>();
    r.processor::<cardinality_limit::CardinalityLimit>();
    r.processor::<customer_tier::CustomerTier>();
    r.processor::<deltatocumulative::DeltaToCumulative>();
    r.processor::<filter::Filter>();
    r.processor::<gpu_stats::GpuStats>();
    r.processor::<memory_limiter::MemoryLimiter>();
    r.processor::<resource::ResourceProcessor>();
    r.processor::<safety_labels::SafetyLabels>();
    r.processor::<usage_revenue::UsageRevenue>();
}
