//! The `batch` processor: groups data points into larger batches before they fan out to the
//! exporters, so remote write sends fewer, fuller requests.
//!
//! It follows the OpenTelemetry Collector's `batch` processor (`send_batch_size`, `timeout`).
//! It is a pipeline stage ([`vla_pipeline::runner::Stage::Batch`]) rather than a
//! [`vla_pipeline::Processor`] object, because it holds data across calls and needs the
//! pipeline's timer; it sits where the pipeline lists it (usually last), and what it emits
//! runs through the processors after it.
//!
//! ```yaml
//! processors:
//!   batch:
//!     send_batch_size: 2048   # send as soon as this many data points are pending
//!     timeout: 200ms          # send pending data at the latest this long after it arrived
//! ```

use std::time::Duration;

use serde::Deserialize;
use vla_pipeline::config::ConfigProblem;
use vla_pipeline::runner::BatcherConfig;

/// The config `type` of this processor.
pub const TYPE: &str = "batch";

/// The `batch` processor.
#[derive(Debug)]
pub struct Batch;

/// The `batch` processor's settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Send once this many data points are pending (default 2048).
    pub send_batch_size: usize,
    /// Send pending data at the latest this long after the first point arrived (default 200ms).
    #[serde(deserialize_with = "vla_pipeline::config::duration")]
    pub timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        let d = BatcherConfig::default();
        Self {
            send_batch_size: d.send_batch_size,
            timeout: d.timeout,
        }
    }
}

impl Config {
    /// Checks the values; problems are reported under `path` (e.g. `processors.batch`).
    pub fn validate(&self, path: &str) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.send_batch_size == 0 {
            problems.push(ConfigProblem::new(
                format!("{path}.send_batch_size"),
                "must be at least 1",
            ));
        }
        if self.timeout.is_zero() {
            problems.push(ConfigProblem::new(
                format!("{path}.timeout"),
                "must be greater than 0 (e.g. 200ms)",
            ));
        }
        problems
    }

    /// The pipeline batcher's settings.
    pub fn batcher_config(&self) -> BatcherConfig {
        BatcherConfig {
            send_batch_size: self.send_batch_size,
            timeout: self.timeout,
        }
    }
}

impl From<&Config> for BatcherConfig {
    fn from(c: &Config) -> Self {
        c.batcher_config()
    }
}

impl vla_pipeline::registry::Component for Batch {
    const TYPE: &'static str = TYPE;
    const EXAMPLE: &'static str = "send_batch_size: 2048\ntimeout: 200ms\n";
    type Config = Config;

    fn validate(config: &Config, path: &str) -> Vec<ConfigProblem> {
        config.validate(path)
    }
}

impl vla_pipeline::registry::ProcessorType for Batch {
    fn build(
        config: &Config,
        _: vla_pipeline::registry::BuildContext<'_>,
    ) -> Result<Box<dyn vla_pipeline::registry::ProcessorFactory>, vla_pipeline::registry::BuildError>
    {
        Ok(Box::new(BatchStage(config.batcher_config())))
    }
}

/// Makes the batch stage of each pipeline.
struct BatchStage(BatcherConfig);

impl vla_pipeline::registry::ProcessorFactory for BatchStage {
    fn stage(
        &self,
        _pipeline: &str,
    ) -> Result<vla_pipeline::runner::Stage, vla_pipeline::registry::BuildError> {
        Ok(vla_pipeline::runner::Stage::Batch(self.0.clone()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn parse(json: serde_json::Value) -> Result<Config, String> {
        serde_json::from_value(json).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_match_the_pipeline_batcher() {
        let c = parse(serde_json::json!({})).unwrap();
        assert_eq!(c.send_batch_size, 2048);
        assert_eq!(c.timeout, Duration::from_millis(200));
        assert_eq!(c.batcher_config(), BatcherConfig::default());
        assert!(c.validate("processors.batch").is_empty());
    }

    #[test]
    fn parses_values() {
        let c = parse(serde_json::json!({"send_batch_size": 100, "timeout": "1s"})).unwrap();
        assert_eq!(
            BatcherConfig::from(&c),
            BatcherConfig {
                send_batch_size: 100,
                timeout: Duration::from_secs(1)
            }
        );
    }

    #[test]
    fn rejects_bad_values_with_clear_messages() {
        assert_eq!(
            parse(serde_json::json!({"timeout": 5})).unwrap_err(),
            "invalid value: integer `5`, expected a duration like 200ms, 5s or 1m30s"
        );
        assert_eq!(
            parse(serde_json::json!({"timeout": "soon"})).unwrap_err(),
            "invalid duration \"soon\": expected a number with a unit, e.g. 200ms, 5s, 1m30s"
        );
        let err = parse(serde_json::json!({"send_batch_sise": 1})).unwrap_err();
        assert!(err.starts_with("unknown field `send_batch_sise`"), "{err}");
        let c = parse(serde_json::json!({"send_batch_size": 0, "timeout": 0})).unwrap();
        let problems: Vec<String> = c
            .validate("processors.batch")
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(
            problems,
            vec![
                "processors.batch.send_batch_size: must be at least 1",
                "processors.batch.timeout: must be greater than 0 (e.g. 200ms)",
            ]
        );
    }
}
