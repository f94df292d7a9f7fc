//! The `filter` processor: drops whole metrics, or single data points, by metric name (exact,
//! `*` glob or `{ regex }`), resource attributes and point attributes, with include and
//! exclude lists. A condition holds when every part it names holds; an item is kept when it
//! matches some `include` condition (or there is no `include` list) and no `exclude` one.
//! Metric conditions see the name and the resource; data-point conditions see the point's
//! attributes too. Metrics, scopes and resources left empty are removed.
//!
//! ```yaml
//! processors:
//!   filter/prod:
//!     metrics:
//!       exclude:
//!         - name: { regex: "vla\\.debug\\..*" }
//!         - resource: { deployment.environment: { in: [dev, test] } }
//!     datapoints:
//!       exclude:
//!         - name: vla.inference.requests
//!           attributes: { robot_type: simulator }
//! ```

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric};
use serde::Deserialize;
use vla_pipeline::config::ConfigProblem;
use vla_pipeline::self_metrics::Counter;
use vla_pipeline::{ComponentId, MetricBatch, Processor, SelfMetrics};

use crate::matching::{
    AttrMatcher, AttrTest, MetricPattern, NameMatcher, check_attr_matcher, check_metric_pattern,
};

/// The config `type` of this processor.
pub const TYPE: &str = "filter";

/// The `filter` processor's settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Conditions on whole metrics (name and resource).
    pub metrics: Lists,
    /// Conditions on data points (name, resource and point attributes).
    pub datapoints: Lists,
}

/// Include and exclude conditions.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Lists {
    /// When given, only what matches one of these is kept.
    pub include: Option<Vec<Condition>>,
    /// What matches one of these is dropped.
    pub exclude: Vec<Condition>,
}

/// One condition: every part given must hold.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// The metric's (OpenTelemetry) name.
    #[serde(default)]
    pub name: Option<MetricPattern>,
    /// Conditions on the point's attributes (data-point conditions only).
    #[serde(default)]
    pub attributes: BTreeMap<String, AttrMatcher>,
    /// Conditions on the resource's attributes.
    #[serde(default)]
    pub resource: BTreeMap<String, AttrMatcher>,
}

impl Config {
    /// Checks the settings without I/O; problems are reported under `path`.
    pub fn validate(&self, path: &str) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let empty = |l: &Lists| l.include.is_none() && l.exclude.is_empty();
        if empty(&self.metrics) && empty(&self.datapoints) {
            problems.push(ConfigProblem::new(
                path,
                "filters nothing: give metrics.exclude, metrics.include, datapoints.exclude or \
                 datapoints.include",
            ));
        }
        for (level, lists) in [("metrics", &self.metrics), ("datapoints", &self.datapoints)] {
            if lists.include.as_ref().is_some_and(Vec::is_empty) {
                problems.push(ConfigProblem::new(
                    format!("{path}.{level}.include"),
                    "must list at least one condition (an empty include keeps nothing; omit it \
                     to keep everything not excluded)",
                ));
            }
            let include = lists.include.iter().flatten().map(|c| ("include", c));
            let exclude = lists.exclude.iter().map(|c| ("exclude", c));
            let mut index = BTreeMap::<&str, usize>::new();
            for (list, c) in include.chain(exclude) {
                let i = index.entry(list).or_default();
                let at = format!("{path}.{level}.{list}[{i}]");
                *i += 1;
                if c.name.is_none() && c.attributes.is_empty() && c.resource.is_empty() {
                    problems.push(ConfigProblem::new(
                        at.clone(),
                        "needs at least one of name, attributes, resource",
                    ));
                }
                if level == "metrics" && !c.attributes.is_empty() {
                    problems.push(ConfigProblem::new(
                        format!("{at}.attributes"),
                        "a metric condition sees no point attributes; move this condition to \
                         datapoints",
                    ));
                }
                if let Some(n) = &c.name {
                    check_metric_pattern(n, &format!("{at}.name"), &mut problems);
                }
                for (field, map) in [("attributes", &c.attributes), ("resource", &c.resource)] {
                    for (key, m) in map {
                        check_attr_matcher(key, m, &format!("{at}.{field}"), &mut problems);
                    }
                }
            }
        }
        problems
    }
}

/// A compiled condition.
#[derive(Debug, Clone)]
struct Compiled {
    name: Option<NameMatcher>,
    attributes: Vec<AttrTest>,
    resource: Vec<AttrTest>,
}

impl Compiled {
    fn new(c: &Condition) -> Result<Self, String> {
        let tests = |m: &BTreeMap<String, AttrMatcher>| {
            m.iter()
                .map(|(k, v)| AttrTest::new(k, v))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            name: c.name.as_ref().map(NameMatcher::new).transpose()?,
            attributes: tests(&c.attributes)?,
            resource: tests(&c.resource)?,
        })
    }

    /// Whether the name and resource parts hold.
    fn holds_for(&self, name: &str, resource: &[KeyValue], scratch: &mut String) -> bool {
        self.name.as_ref().is_none_or(|n| n.matches(name))
            && self.resource.iter().all(|t| t.matches(resource, scratch))
    }

    fn holds_for_point(&self, attrs: &[KeyValue], scratch: &mut String) -> bool {
        self.attributes.iter().all(|t| t.matches(attrs, scratch))
    }
}

/// Compiled include and exclude lists.
#[derive(Debug, Clone)]
struct CompiledLists {
    include: Option<Vec<Compiled>>,
    exclude: Vec<Compiled>,
}

impl CompiledLists {
    fn new(l: &Lists) -> Result<Self, String> {
        let all = |v: &[Condition]| v.iter().map(Compiled::new).collect::<Result<Vec<_>, _>>();
        Ok(Self {
            include: l.include.as_deref().map(all).transpose()?,
            exclude: all(&l.exclude)?,
        })
    }

    fn is_empty(&self) -> bool {
        self.include.is_none() && self.exclude.is_empty()
    }
}

/// The `filter` processor (cheap to clone: one per pipeline shares the counters).
#[derive(Debug, Clone)]
pub struct Filter {
    metrics: CompiledLists,
    datapoints: CompiledLists,
    /// Per metric: the data-point conditions whose name and resource parts hold (include,
    /// exclude), reused.
    live: (Vec<usize>, Vec<usize>),
    scratch: String,
    dropped_metric: Counter,
    dropped_datapoint: Counter,
}

impl Filter {
    /// A processor for a validated `config`; `Err` only when validation was skipped.
    pub fn new(config: &Config) -> Result<Self, String> {
        Ok(Self {
            metrics: CompiledLists::new(&config.metrics)?,
            datapoints: CompiledLists::new(&config.datapoints)?,
            live: (Vec::new(), Vec::new()),
            scratch: String::new(),
            dropped_metric: Counter::default(),
            dropped_datapoint: Counter::default(),
        })
    }

    /// Registers `vla_collector_processor_filter_dropped_data_points_total{processor,
    /// level=metric|datapoint}`.
    pub fn with_telemetry(mut self, id: &ComponentId, telemetry: &SelfMetrics) -> Self {
        let counter = |level| {
            telemetry.counter(
                "vla_collector_processor_filter_dropped_data_points_total",
                "Data points the filter processor dropped, by the level of the condition that \
                 dropped them (metric, datapoint).",
                &[("processor", id), ("level", level)],
            )
        };
        self.dropped_metric = counter("metric");
        self.dropped_datapoint = counter("datapoint");
        self
    }

    /// Whether a whole metric is kept.
    fn keep_metric(&mut self, name: &str, resource: &[KeyValue]) -> bool {
        let s = &mut self.scratch;
        let l = &self.metrics;
        l.include
            .as_ref()
            .is_none_or(|inc| inc.iter().any(|c| c.holds_for(name, resource, s)))
            && !l.exclude.iter().any(|c| c.holds_for(name, resource, s))
    }

    /// Drops the metric's points that the data-point conditions reject; returns how many.
    fn filter_points(&mut self, m: &mut Metric, resource: &[KeyValue]) -> usize {
        let Self {
            datapoints,
            live: (inc, exc),
            scratch,
            ..
        } = self;
        inc.clear();
        exc.clear();
        if let Some(include) = &datapoints.include {
            inc.extend(
                (0..include.len()).filter(|i| include[*i].holds_for(&m.name, resource, scratch)),
            );
            if inc.is_empty() {
                // No include condition can hold for any point of this metric.
                let n = vla_pipeline::metric_data_points(m);
                m.data = None;
                return n;
            }
        }
        let exclude = &datapoints.exclude;
        exc.extend(
            (0..exclude.len()).filter(|i| exclude[*i].holds_for(&m.name, resource, scratch)),
        );
        if exc.is_empty() && datapoints.include.is_none() {
            return 0;
        }
        let include = datapoints.include.as_deref().unwrap_or(&[]);
        let no_include = datapoints.include.is_none();
        let mut keep = |attrs: &[KeyValue]| {
            (no_include
                || inc
                    .iter()
                    .any(|i| include[*i].holds_for_point(attrs, scratch)))
                && !exc
                    .iter()
                    .any(|i| exclude[*i].holds_for_point(attrs, scratch))
        };
        let before = vla_pipeline::metric_data_points(m);
        match &mut m.data {
            Some(metric::Data::Gauge(g)) => g.data_points.retain(|p| keep(&p.attributes)),
            Some(metric::Data::Sum(s)) => s.data_points.retain(|p| keep(&p.attributes)),
            Some(metric::Data::Histogram(h)) => h.data_points.retain(|p| keep(&p.attributes)),
            Some(metric::Data::ExponentialHistogram(h)) => {
                h.data_points.retain(|p| keep(&p.attributes))
            }
            Some(metric::Data::Summary(s)) => s.data_points.retain(|p| keep(&p.attributes)),
            None => {}
        }
        before - vla_pipeline::metric_data_points(m)
    }
}

impl Processor for Filter {
    fn process(&mut self, batch: &mut MetricBatch) {
        let (mut by_metric, mut by_point) = (0usize, 0usize);
        let points_level = !self.datapoints.is_empty();
        let metrics_level = !self.metrics.is_empty();
        {
            let mut rms = batch.resource_metrics_mut();
            for rm in rms.iter_mut() {
                let resource: &[KeyValue] = rm.resource.as_ref().map_or(&[], |r| &r.attributes);
                for sm in &mut rm.scope_metrics {
                    sm.metrics.retain_mut(|m| {
                        if metrics_level && !self.keep_metric(&m.name, resource) {
                            by_metric += vla_pipeline::metric_data_points(m);
                            return false;
                        }
                        if points_level {
                            by_point += self.filter_points(m, resource);
                            return vla_pipeline::metric_data_points(m) > 0;
                        }
                        true
                    });
                }
                rm.scope_metrics.retain(|sm| !sm.metrics.is_empty());
            }
            rms.retain(|rm| !rm.scope_metrics.is_empty());
        }
        self.dropped_metric.add(by_metric as u64);
        self.dropped_datapoint.add(by_point as u64);
    }
}

impl vla_pipeline::registry::Component for Filter {
    const TYPE: &'static str = TYPE;
    const EXAMPLE: &'static str = "\
metrics:
  exclude:
    - name: { regex: \"vla\\\\.debug\\\\..*\" }
    - resource: { deployment.environment: { in: [dev, test] } }
datapoints:
  exclude:
    - name: vla.inference.requests
      attributes: { robot_type: simulator }
";
    type Config = Config;

    fn validate(config: &Config, path: &str) -> Vec<ConfigProblem> {
        config.validate(path)
    }
}

impl vla_pipeline::registry::ProcessorType for Filter {
    fn build(
        config: &Config,
        ctx: vla_pipeline::registry::BuildContext<'_>,
    ) -> Result<Box<dyn vla_pipeline::registry::ProcessorFactory>, vla_pipeline::registry::BuildError>
    {
        let compiled = Filter::new(config)?.with_telemetry(ctx.id, ctx.self_metrics);
        Ok(Box::new(vla_pipeline::registry::PerPipeline(move || {
            Box::new(compiled.clone()) as Box<dyn Processor>
        })))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use vla_pipeline::fixtures;

    use super::*;

    fn config(yaml: &str) -> Config {
        serde_saphyr::from_str(yaml).expect("config parses")
    }

    fn names(b: &MetricBatch) -> Vec<(String, usize)> {
        b.resource_metrics()
            .iter()
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .map(|m| (m.name.clone(), vla_pipeline::metric_data_points(m)))
            .collect()
    }

    fn batch() -> MetricBatch {
        MetricBatch::new(
            "otlp".into(),
            vec![
                fixtures::resource_with(
                    &[("service.name", "api"), ("deployment.environment", "prod")],
                    vec![
                        fixtures::gauge("vla.debug.heap", "By", &[(1.0, &[])]),
                        fixtures::cumulative_sum(
                            "vla.inference.requests",
                            "1",
                            true,
                            &[
                                (1.0, &[("robot_type", "arm")]),
                                (2.0, &[("robot_type", "simulator")]),
                            ],
                        ),
                    ],
                ),
                fixtures::resource_with(
                    &[("service.name", "api"), ("deployment.environment", "dev")],
                    vec![fixtures::gauge("vla.queue.depth", "1", &[(3.0, &[])])],
                ),
            ],
        )
    }

    #[test]
    fn the_documented_example_drops_by_regex_resource_and_point_attributes() {
        let c = config(<Filter as vla_pipeline::registry::Component>::EXAMPLE);
        assert!(c.validate("processors.filter").is_empty());
        let t = SelfMetrics::new();
        let mut f = Filter::new(&c)
            .unwrap()
            .with_telemetry(&"filter".into(), &t);
        let mut b = batch();
        f.process(&mut b);
        assert_eq!(names(&b), vec![("vla.inference.requests".to_owned(), 1)]);
        assert_eq!(
            b.resource_metrics().len(),
            1,
            "the emptied dev resource is removed"
        );
        let dropped = |level| {
            t.value(
                "vla_collector_processor_filter_dropped_data_points_total",
                &[("processor", "filter"), ("level", level)],
            )
        };
        assert_eq!(
            (dropped("metric"), dropped("datapoint")),
            (Some(2), Some(1))
        );
    }

    #[test]
    fn include_keeps_only_what_matches() {
        let c = config("metrics:\n  include:\n    - name: \"vla.inference.*\"\n");
        let mut f = Filter::new(&c).unwrap();
        let mut b = batch();
        f.process(&mut b);
        assert_eq!(names(&b), vec![("vla.inference.requests".to_owned(), 2)]);
        let c =
            config("datapoints:\n  include:\n    - attributes: { robot_type: { in: [arm] } }\n");
        let mut f = Filter::new(&c).unwrap();
        let mut b = batch();
        f.process(&mut b);
        assert_eq!(names(&b), vec![("vla.inference.requests".to_owned(), 1)]);
    }

    #[test]
    fn a_condition_holds_only_when_every_part_does() {
        // The name matches, the resource does not: nothing is dropped.
        let c = config(
            "metrics:\n  exclude:\n    - name: vla.debug.heap\n      resource: { deployment.environment: dev }\n",
        );
        let mut f = Filter::new(&c).unwrap();
        let mut b = batch();
        f.process(&mut b);
        assert_eq!(names(&b).len(), 3);
    }

    #[test]
    fn validation_names_every_problem_with_its_path() {
        let c = config(
            "metrics:\n  include: []\n  exclude:\n    - {}\n    - attributes: { a: b }\n      name: \"bad name!\"\ndatapoints:\n  exclude:\n    - attributes: { k: { regex: \"(\" } }\n",
        );
        let problems: Vec<String> = c
            .validate("processors.filter")
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect();
        let paths: Vec<&str> = problems
            .iter()
            .map(|p| p.split(": ").next().unwrap_or(""))
            .collect();
        assert_eq!(
            paths,
            [
                "processors.filter.metrics.include",
                "processors.filter.metrics.exclude[0]",
                "processors.filter.metrics.exclude[1].attributes",
                "processors.filter.metrics.exclude[1].name",
                "processors.filter.datapoints.exclude[0].attributes.k.regex",
            ],
            "{problems:#?}"
        );
        assert_eq!(
            config("{}").validate("processors.filter")[0].message,
            "filters nothing: give metrics.exclude, metrics.include, datapoints.exclude or \
             datapoints.include"
        );
    }
}
