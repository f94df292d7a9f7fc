//! `vla-sdk`: the library the VLA inference API links to emit its metrics.
//!
//! It will own the metric catalogue (every metric of the monitoring stack's "Metrics
//! Reference", with the exact Prometheus names the collector's translation yields) and the OTLP
//! export set-up. That work is tracked in its own issue; until it lands this crate only holds
//! the naming contract below, which the collector's end-to-end tests already rely on.
//!
//! The contract: instruments are named with dots and carry OTel units, and the collector's
//! standard OTel→Prometheus translation produces the Prometheus name, e.g.
//! `vla.inference.requests` (monotonic sum) → `vla_inference_requests_total`,
//! `vla.inference.duration` (histogram, unit `s`) → `vla_inference_duration_seconds_*`,
//! `vla.gpu.temperature` (gauge, unit `Cel`) → `vla_gpu_temperature_celsius`.
