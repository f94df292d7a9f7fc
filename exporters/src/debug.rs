//! The `debug` exporter: logs what passes through a pipeline, for troubleshooting.
//!
//! `basic` logs one line per batch (resources, metrics, data points, source); `normal` adds one
//! line per metric; `detailed` adds one line per data point (never use it under real load).
//!
//! ```yaml
//! exporters:
//!   debug: { verbosity: detailed }
//! ```

use std::sync::Arc;

use opentelemetry_proto::tonic::metrics::v1::{Metric, metric};
use serde::Deserialize;
use tracing::info;
use vla_pipeline::config::ConfigProblem;
use vla_pipeline::{
    BoxFuture, ComponentId, ExportError, ExportReport, Exporter, MetricBatch, kind_of,
    metric_data_points,
};

/// How much the debug exporter logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verbosity {
    /// One line per batch.
    #[default]
    Basic,
    /// Plus one line per metric.
    Normal,
    /// Plus one line per data point.
    Detailed,
}

/// Config of the `debug` exporter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How much to log (default `basic`).
    pub verbosity: Verbosity,
}

impl Config {
    /// Checks the config; nothing can be wrong once it parsed.
    pub fn validate(&self, _path: &str) -> Vec<ConfigProblem> {
        Vec::new()
    }
}

/// The `debug` exporter.
#[derive(Debug)]
pub struct DebugExporter {
    id: ComponentId,
    verbosity: Verbosity,
}

impl DebugExporter {
    /// Builds the exporter.
    pub fn new(id: ComponentId, config: &Config) -> Self {
        Self {
            id,
            verbosity: config.verbosity,
        }
    }

    fn log(&self, batch: &MetricBatch) {
        let rms = batch.resource_metrics();
        let metrics: usize = rms
            .iter()
            .flat_map(|rm| &rm.scope_metrics)
            .map(|sm| sm.metrics.len())
            .sum();
        info!(
            exporter = %self.id,
            source = %batch.meta().source,
            resources = rms.len(),
            metrics,
            data_points = batch.data_points(),
            "batch"
        );
        if self.verbosity == Verbosity::Basic {
            return;
        }
        for (ri, rm) in rms.iter().enumerate() {
            for sm in &rm.scope_metrics {
                let scope = sm.scope.as_ref().map_or("", |s| s.name.as_str());
                for m in &sm.metrics {
                    info!(
                        exporter = %self.id,
                        resource = ri,
                        scope,
                        name = %m.name,
                        unit = %m.unit,
                        kind = ?kind_of(m.data.as_ref()),
                        data_points = metric_data_points(m),
                        "metric"
                    );
                    if self.verbosity == Verbosity::Detailed {
                        self.log_points(m);
                    }
                }
            }
        }
    }

    fn log_points(&self, m: &Metric) {
        let Some(data) = &m.data else { return };
        match data {
            metric::Data::Gauge(g) => g.data_points.iter().for_each(|p| {
                info!(exporter = %self.id, metric = %m.name, attributes = ?p.attributes, value = ?p.value, time_unix_nano = p.time_unix_nano, "point");
            }),
            metric::Data::Sum(s) => s.data_points.iter().for_each(|p| {
                info!(exporter = %self.id, metric = %m.name, attributes = ?p.attributes, value = ?p.value, time_unix_nano = p.time_unix_nano, monotonic = s.is_monotonic, temporality = s.aggregation_temporality, "point");
            }),
            metric::Data::Histogram(h) => h.data_points.iter().for_each(|p| {
                info!(exporter = %self.id, metric = %m.name, attributes = ?p.attributes, count = p.count, sum = ?p.sum, bounds = ?p.explicit_bounds, bucket_counts = ?p.bucket_counts, time_unix_nano = p.time_unix_nano, "point");
            }),
            metric::Data::ExponentialHistogram(h) => h.data_points.iter().for_each(|p| {
                info!(exporter = %self.id, metric = %m.name, attributes = ?p.attributes, count = p.count, sum = ?p.sum, scale = p.scale, time_unix_nano = p.time_unix_nano, "point");
            }),
            metric::Data::Summary(s) => s.data_points.iter().for_each(|p| {
                info!(exporter = %self.id, metric = %m.name, attributes = ?p.attributes, count = p.count, sum = p.sum, quantiles = ?p.quantile_values, time_unix_nano = p.time_unix_nano, "point");
            }),
        }
    }
}

impl Exporter for DebugExporter {
    fn export(&self, batch: Arc<MetricBatch>) -> BoxFuture<'_, Result<ExportReport, ExportError>> {
        Box::pin(async move {
            self.log(&batch);
            Ok(ExportReport::all_sent(batch.data_points()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vla_pipeline::fixtures;

    #[test]
    fn config_parses_and_exports_report_everything_sent() {
        let c: Config = serde_json_like("detailed");
        assert_eq!(c.verbosity, Verbosity::Detailed);
        let exporter = DebugExporter::new("debug".into(), &c);
        let batch = Arc::new(MetricBatch::new(
            "otlp".into(),
            vec![fixtures::resource(
                "api",
                vec![
                    fixtures::gauge("g", "1", &[(1.0, &[("a", "x")]), (2.0, &[])]),
                    fixtures::histogram("h", "s", &[1.0], &[1, 2], 3.0, &[]),
                ],
            )],
        ));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let report = rt.block_on(exporter.export(batch)).unwrap();
        assert_eq!(report, ExportReport::all_sent(3));
    }

    fn serde_json_like(v: &str) -> Config {
        use serde::de::IntoDeserializer;
        use serde::de::value::{Error, MapDeserializer};
        let map = MapDeserializer::<_, Error>::new(
            [("verbosity", v)]
                .into_iter()
                .map(|(k, v)| (k.into_deserializer(), v.into_deserializer())),
        );
        Config::deserialize(map).unwrap()
    }
}
