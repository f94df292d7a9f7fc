//! The `resource` processor (the OpenTelemetry Collector's): the `attributes` processor's
//! actions (`insert`, `update`, `upsert`, `delete`, `hash`), applied to resource attributes.
//! Resource attributes become `job`, `instance` and `target_info` labels in Prometheus, so this
//! is where a deployment sets `deployment.environment` for everything a host sends, or drops a
//! noisy `process.pid`.
//!
//! ```yaml
//! processors:
//!   resource:
//!     attributes:
//!       - { key: deployment.environment, value: prod, action: upsert }
//!       - { key: service.namespace, value: vla, action: insert }
//!       - { key: process.pid, action: delete }
//!       - { key: host.name, action: hash }
//! ```

use serde::Deserialize;
use vla_pipeline::config::ConfigProblem;
use vla_pipeline::{MetricBatch, Processor};

use crate::attributes::{Action, Actions, validate_actions};

/// The config `type` of this processor.
pub const TYPE: &str = "resource";

/// The `resource` processor's settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The actions, applied in order to every resource.
    pub attributes: Vec<Action>,
}

/// The `resource` processor.
#[derive(Debug)]
pub struct ResourceProcessor {
    actions: Actions,
}

impl ResourceProcessor {
    /// A processor running the (validated) `config`'s actions.
    pub fn new(config: &Config) -> Self {
        Self {
            actions: Actions::new(&config.attributes),
        }
    }
}

impl Processor for ResourceProcessor {
    fn process(&mut self, batch: &mut MetricBatch) {
        let mut rms = batch.resource_metrics_mut();
        for rm in rms.iter_mut() {
            let resource = rm.resource.get_or_insert_with(Default::default);
            self.actions.apply(&mut resource.attributes);
        }
    }
}

impl vla_pipeline::registry::Component for ResourceProcessor {
    const TYPE: &'static str = TYPE;
    const EXAMPLE: &'static str = "\
attributes:
  - { key: deployment.environment, value: prod, action: upsert }
  - { key: service.namespace, value: vla, action: insert }
  - { key: process.pid, action: delete }
  - { key: host.name, action: hash }
";
    type Config = Config;

    fn validate(config: &Config, path: &str) -> Vec<ConfigProblem> {
        validate_actions(&config.attributes, &format!("{path}.attributes"))
    }
}

impl vla_pipeline::registry::ProcessorType for ResourceProcessor {
    fn build(
        config: &Config,
        _: vla_pipeline::registry::BuildContext<'_>,
    ) -> Result<Box<dyn vla_pipeline::registry::ProcessorFactory>, vla_pipeline::registry::BuildError>
    {
        let config = config.clone();
        Ok(Box::new(vla_pipeline::registry::PerPipeline(move || {
            Box::new(ResourceProcessor::new(&config)) as Box<dyn Processor>
        })))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use vla_pipeline::fixtures;

    use super::*;

    #[test]
    fn the_documented_example_edits_every_resource_and_no_point() {
        let config: Config = serde_saphyr::from_str(
            <ResourceProcessor as vla_pipeline::registry::Component>::EXAMPLE,
        )
        .unwrap();
        let path = "processors.resource";
        assert!(
            <ResourceProcessor as vla_pipeline::registry::Component>::validate(&config, path)
                .is_empty()
        );
        let mut batch = MetricBatch::new(
            "otlp".into(),
            vec![fixtures::resource_with(
                &[
                    ("service.name", "api"),
                    ("service.namespace", "robots"),
                    ("process.pid", "42"),
                    ("host.name", "gpu-7"),
                ],
                vec![fixtures::gauge(
                    "g",
                    "",
                    &[(1.0, &[("host.name", "gpu-7")])],
                )],
            )],
        );
        ResourceProcessor::new(&config).process(&mut batch);
        let rm = &batch.resource_metrics()[0];
        let attrs = &rm.resource.as_ref().unwrap().attributes;
        let get = |k| vla_pipeline::attr_str(attrs, k);
        assert_eq!(get("deployment.environment"), Some("prod"));
        assert_eq!(get("service.namespace"), Some("robots"), "insert keeps it");
        assert_eq!(get("process.pid"), None);
        // sha256("gpu-7"), as `sha256sum` prints it.
        assert_eq!(
            get("host.name"),
            Some("4ffd5816b9552056b41c1926a8ef77312c056e8192533d91a8775546933d427d")
        );
        // The point's own attribute is not the resource's.
        let point = &rm.scope_metrics[0].metrics[0];
        let Some(vla_pipeline::opentelemetry_proto::tonic::metrics::v1::metric::Data::Gauge(g)) =
            &point.data
        else {
            panic!("gauge")
        };
        assert_eq!(
            vla_pipeline::attr_str(&g.data_points[0].attributes, "host.name"),
            Some("gpu-7")
        );
    }

    #[test]
    fn problems_are_reported_under_attributes() {
        let config: Config =
            serde_saphyr::from_str("attributes:\n  - { key: a, action: hash, value: x }\n")
                .unwrap();
        let problems = <ResourceProcessor as vla_pipeline::registry::Component>::validate(
            &config,
            "processors.resource",
        );
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "processors.resource.attributes[0]");
    }
}
