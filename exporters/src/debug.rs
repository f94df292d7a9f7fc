//! The `debug` exporter: logs what passes through a pipeline, for troubleshooting.
//!
//! `basic` logs one line per batch (resources, metrics, data points, source); `normal` adds one
//! line per metric; `detailed` adds one line per data point (never use it under real load).
//!
//! ```yaml
//! exporters:
//!   debug: { verbosity: detailed }
//! ```

use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric, number_data_point};
use serde::Deserialize;
use tracing::info;
use vla_pipeline::config::ConfigProblem;
use vla_pipeline::{
    BoxFuture, ComponentId, ExportError, ExportReport, Exporter, MetricBatch, PrepareError,
    Prepared, Request, kind_of, metric_data_points,
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

    /// What this exporter logs for `batch`, one line per entry.
    pub fn render(&self, batch: &MetricBatch) -> Vec<String> {
        let rms = batch.resource_metrics();
        let metrics: usize = rms
            .iter()
            .flat_map(|rm| &rm.scope_metrics)
            .map(|sm| sm.metrics.len())
            .sum();
        let mut out = vec![format!(
            "batch source={} resources={} metrics={metrics} data_points={}",
            batch.meta().source,
            rms.len(),
            batch.data_points()
        )];
        if self.verbosity == Verbosity::Basic {
            return out;
        }
        for (ri, rm) in rms.iter().enumerate() {
            for sm in &rm.scope_metrics {
                let scope = sm.scope.as_ref().map_or("", |s| s.name.as_str());
                for m in &sm.metrics {
                    out.push(format!(
                        "metric resource={ri} scope={scope:?} name={:?} unit={:?} kind={:?} \
                         data_points={}",
                        m.name,
                        m.unit,
                        kind_of(m.data.as_ref()),
                        metric_data_points(m)
                    ));
                    if self.verbosity == Verbosity::Detailed {
                        render_points(m, &mut out);
                    }
                }
            }
        }
        out
    }
}

/// `{a="x", b=1}`
fn attrs(kvs: &[KeyValue]) -> String {
    let parts: Vec<String> = kvs
        .iter()
        .map(|kv| {
            let v = kv.value.as_ref().and_then(|v| v.value.as_ref());
            let v = match v {
                Some(any_value::Value::StringValue(s)) => format!("{s:?}"),
                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                Some(any_value::Value::DoubleValue(d)) => d.to_string(),
                Some(other) => format!("{other:?}"),
                None => "null".to_owned(),
            };
            format!("{}={v}", kv.key)
        })
        .collect();
    format!("{{{}}}", parts.join(", "))
}

fn number(v: Option<&number_data_point::Value>) -> String {
    match v {
        Some(number_data_point::Value::AsDouble(d)) => d.to_string(),
        Some(number_data_point::Value::AsInt(i)) => i.to_string(),
        None => "none".to_owned(),
    }
}

fn render_points(m: &Metric, out: &mut Vec<String>) {
    let Some(data) = &m.data else { return };
    let name = &m.name;
    match data {
        metric::Data::Gauge(g) => out.extend(g.data_points.iter().map(|p| {
            format!(
                "point metric={name:?} attributes={} value={} time_unix_nano={}",
                attrs(&p.attributes),
                number(p.value.as_ref()),
                p.time_unix_nano
            )
        })),
        metric::Data::Sum(s) => out.extend(s.data_points.iter().map(|p| {
            format!(
                "point metric={name:?} attributes={} value={} time_unix_nano={} monotonic={} \
                 temporality={}",
                attrs(&p.attributes),
                number(p.value.as_ref()),
                p.time_unix_nano,
                s.is_monotonic,
                s.aggregation_temporality
            )
        })),
        metric::Data::Histogram(h) => out.extend(h.data_points.iter().map(|p| {
            format!(
                "point metric={name:?} attributes={} count={} sum={} bounds={:?} \
                 bucket_counts={:?} time_unix_nano={}",
                attrs(&p.attributes),
                p.count,
                p.sum.map_or("none".to_owned(), |s| s.to_string()),
                p.explicit_bounds,
                p.bucket_counts,
                p.time_unix_nano
            )
        })),
        metric::Data::ExponentialHistogram(h) => out.extend(h.data_points.iter().map(|p| {
            format!(
                "point metric={name:?} attributes={} count={} sum={} scale={} time_unix_nano={}",
                attrs(&p.attributes),
                p.count,
                p.sum.map_or("none".to_owned(), |s| s.to_string()),
                p.scale,
                p.time_unix_nano
            )
        })),
        metric::Data::Summary(s) => out.extend(s.data_points.iter().map(|p| {
            let q: Vec<String> = p
                .quantile_values
                .iter()
                .map(|q| format!("{}:{}", q.quantile, q.value))
                .collect();
            format!(
                "point metric={name:?} attributes={} count={} sum={} quantiles=[{}] \
                 time_unix_nano={}",
                attrs(&p.attributes),
                p.count,
                p.sum,
                q.join(", "),
                p.time_unix_nano
            )
        })),
    }
}

impl Exporter for DebugExporter {
    /// The batch rendered as text: one request whose payload is the lines to log.
    fn prepare(&self, batch: &MetricBatch) -> Result<Prepared, PrepareError> {
        let text = self.render(batch).join("\n");
        Ok(Prepared {
            requests: vec![Request {
                payload: bytes::Bytes::from(text),
                samples: batch.data_points() as u64,
                points: batch.data_points() as u64,
                lane: 0,
            }],
            done: ExportReport::default(),
        })
    }

    fn send<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<(), ExportError>> {
        Box::pin(async move {
            for line in String::from_utf8_lossy(&request.payload).lines() {
                info!(exporter = %self.id, "{line}");
            }
            Ok(())
        })
    }
}

impl vla_pipeline::registry::Component for DebugExporter {
    const TYPE: &'static str = "debug";
    const EXAMPLE: &'static str = "verbosity: normal   # basic | normal | detailed\n";
    type Config = Config;

    fn validate(config: &Config, path: &str) -> Vec<ConfigProblem> {
        config.validate(path)
    }
}

impl vla_pipeline::registry::ExporterType for DebugExporter {
    fn build(
        config: &Config,
        ctx: vla_pipeline::registry::BuildContext<'_>,
    ) -> Result<std::sync::Arc<dyn Exporter>, vla_pipeline::registry::BuildError> {
        Ok(std::sync::Arc::new(Self::new(ctx.id.clone(), config)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vla_pipeline::fixtures;

    fn sample() -> MetricBatch {
        MetricBatch::new(
            "otlp".into(),
            vec![fixtures::resource(
                "api",
                vec![
                    fixtures::gauge("g", "1", &[(1.0, &[("a", "x")]), (2.0, &[])]),
                    fixtures::histogram("h", "s", &[1.0], &[1, 2], 3.0, &[]),
                ],
            )],
        )
    }

    fn exporter(verbosity: &str) -> DebugExporter {
        DebugExporter::new("debug".into(), &serde_json_like(verbosity))
    }

    #[test]
    fn basic_logs_one_line_per_batch() {
        assert_eq!(
            exporter("basic").render(&sample()),
            vec!["batch source=otlp resources=1 metrics=2 data_points=3"]
        );
    }

    #[test]
    fn normal_adds_one_line_per_metric() {
        assert_eq!(
            exporter("normal").render(&sample()),
            vec![
                "batch source=otlp resources=1 metrics=2 data_points=3",
                r#"metric resource=0 scope="vla-test" name="g" unit="1" kind=Gauge data_points=2"#,
                r#"metric resource=0 scope="vla-test" name="h" unit="s" kind=Histogram data_points=1"#,
            ]
        );
    }

    #[test]
    fn detailed_adds_one_line_per_point() {
        let lines = exporter("detailed").render(&sample());
        assert_eq!(lines.len(), 6, "{lines:#?}");
        assert!(
            lines[2].starts_with(r#"point metric="g" attributes={a="x"} value=1 time_unix_nano="#),
            "{}",
            lines[2]
        );
        assert!(
            lines[3].starts_with(r#"point metric="g" attributes={} value=2 "#),
            "{}",
            lines[3]
        );
        assert!(
            lines[5].starts_with(
                r#"point metric="h" attributes={} count=3 sum=3 bounds=[1.0] bucket_counts=[1, 2] "#
            ),
            "{}",
            lines[5]
        );
    }

    #[test]
    fn prepares_one_request_with_the_rendered_text_and_every_point() {
        let e = exporter("normal");
        let b = sample();
        let prepared = e.prepare(&b).unwrap();
        assert_eq!(prepared.requests.len(), 1);
        let r = &prepared.requests[0];
        assert_eq!(r.points, 3);
        assert_eq!(
            String::from_utf8(r.payload.to_vec()).unwrap(),
            e.render(&b).join("\n")
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(e.send(r)).unwrap();
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
