//! The `memory_limiter` processor: byte-accounted admission of everything in flight through
//! the collector, from a receiver's acceptance to the last exporter's acknowledgement.
//!
//! Listed in a pipeline (first, as in the OpenTelemetry Collector), it makes the receivers
//! feeding that pipeline reserve each batch's decoded size before they accept it
//! ([`vla_pipeline::memory`]); the bytes come back when every exporter is done with the batch
//! (delivered, refused, or given up on). Below `limit_bytes − spike_limit_bytes` everything is
//! admitted; above it, `mode: refuse` answers clients with retryable statuses (gRPC
//! `UNAVAILABLE`, HTTP 503 with `Retry-After`) before their bodies are read, and `mode: drop`
//! accepts and drops, counted. One id is one limiter: pipelines listing the same id share its
//! budget. It replaces counting batches in queues as the memory bound; `docs/components/
//! memory_limiter.md` says what RSS that guarantees.
//!
//! ```yaml
//! processors:
//!   memory_limiter:
//!     limit_bytes: 512MiB       # hard limit on bytes in flight
//!     spike_limit_bytes: 128MiB # headroom: admission stops at limit − spike (default 20 %)
//!     mode: refuse              # refuse (retryable) | drop (counted)
//! ```

use std::sync::Arc;

use serde::Deserialize;
use serde::de::IgnoredAny;
use vla_pipeline::config::ConfigProblem;
use vla_pipeline::memory::{LimitMode, Limits, MemoryLimiter as Limiter};
use vla_pipeline::registry::{BuildContext, BuildError, ProcessorFactory};
use vla_pipeline::runner::Stage;
use vla_pipeline::{MetricBatch, Processor};

/// The config `type` of this processor.
pub const TYPE: &str = "memory_limiter";

/// The `memory_limiter` processor type.
#[derive(Debug)]
pub struct MemoryLimiter;

/// The `memory_limiter` processor's settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The hard limit on bytes in flight (`512MiB`, or a number of bytes).
    #[serde(default, deserialize_with = "optional_bytes")]
    pub limit_bytes: Option<u64>,
    /// Headroom below the hard limit: admission stops at `limit_bytes − spike_limit_bytes`
    /// (default 20 % of `limit_bytes`).
    #[serde(default, deserialize_with = "optional_bytes")]
    pub spike_limit_bytes: Option<u64>,
    /// The OpenTelemetry Collector's spelling of `limit_bytes`, in MiB.
    #[serde(default)]
    pub limit_mib: Option<u64>,
    /// The OpenTelemetry Collector's spelling of `spike_limit_bytes`, in MiB.
    #[serde(default)]
    pub spike_limit_mib: Option<u64>,
    /// What to do with data that does not fit.
    #[serde(default)]
    pub mode: LimitMode,
    /// The OpenTelemetry Collector's sampling interval: refused with an explanation (the
    /// accounting here is exact at admission, there is nothing to sample).
    #[serde(default)]
    pub check_interval: Option<IgnoredAny>,
    /// The OpenTelemetry Collector's limit as a share of the host's memory: refused with an
    /// explanation.
    #[serde(default)]
    pub limit_percentage: Option<IgnoredAny>,
    /// As `limit_percentage`.
    #[serde(default)]
    pub spike_limit_percentage: Option<IgnoredAny>,
}

fn optional_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "vla_pipeline::config::bytes")] u64);
    Ok(Option::<Wrapped>::deserialize(d)?.map(|w| w.0))
}

const MIB: u64 = 1 << 20;

impl Config {
    /// The limits, once [`Config::validate`] found no problem.
    pub fn limits(&self) -> Option<Limits> {
        let limit = self
            .limit_bytes
            .or(self.limit_mib.map(|m| m.saturating_mul(MIB)))?;
        let spike = self
            .spike_limit_bytes
            .or(self.spike_limit_mib.map(|m| m.saturating_mul(MIB)))
            .unwrap_or(limit / 5);
        Some(Limits {
            limit_bytes: limit,
            spike_limit_bytes: spike,
            mode: self.mode,
        })
    }

    /// Checks the settings; problems are reported under `path`.
    pub fn validate(&self, path: &str) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let at = |field: &str| format!("{path}.{field}");
        for (given, field, instead) in [
            (
                self.check_interval.is_some(),
                "check_interval",
                "nothing: every batch's bytes are accounted when it is admitted and released when the exporters are done with it, so there is no usage to sample",
            ),
            (
                self.limit_percentage.is_some(),
                "limit_percentage",
                "limit_bytes (e.g. 80 % of the container's memory limit, less what processor state such as deltatocumulative's needs)",
            ),
            (
                self.spike_limit_percentage.is_some(),
                "spike_limit_percentage",
                "spike_limit_bytes",
            ),
        ] {
            if given {
                problems.push(ConfigProblem::new(
                    at(field),
                    format!("not supported by this memory_limiter; use {instead}"),
                ));
            }
        }
        if self.limit_bytes.is_some() && self.limit_mib.is_some() {
            problems.push(ConfigProblem::new(
                at("limit_mib"),
                "set limit_bytes or limit_mib, not both",
            ));
        }
        if self.spike_limit_bytes.is_some() && self.spike_limit_mib.is_some() {
            problems.push(ConfigProblem::new(
                at("spike_limit_mib"),
                "set spike_limit_bytes or spike_limit_mib, not both",
            ));
        }
        match self.limits() {
            None => problems.push(ConfigProblem::new(
                at("limit_bytes"),
                "is required: the most bytes of data in flight the collector may hold (e.g. 512MiB)",
            )),
            Some(l) if l.limit_bytes == 0 => problems.push(ConfigProblem::new(
                at("limit_bytes"),
                "must be greater than 0 (e.g. 512MiB)",
            )),
            Some(l) if l.spike_limit_bytes >= l.limit_bytes => problems.push(ConfigProblem::new(
                at("spike_limit_bytes"),
                format!(
                    "must be less than limit_bytes ({} ≥ {}): admission stops at limit_bytes − \
                     spike_limit_bytes, which would leave no room for data",
                    l.spike_limit_bytes, l.limit_bytes
                ),
            )),
            Some(_) => {}
        }
        problems
    }
}

/// A pipeline's stage for the limiter: admission happens in the receivers' senders, so the
/// stage itself passes batches through untouched.
#[derive(Debug)]
struct Admitted;

impl Processor for Admitted {
    fn process(&mut self, _batch: &mut MetricBatch) {}
}

/// One limiter per component id, shared by the pipelines that list it.
struct Factory(Arc<Limiter>);

impl ProcessorFactory for Factory {
    fn stage(&self, _pipeline: &str) -> Result<Stage, BuildError> {
        Ok(Stage::Process(Box::new(Admitted)))
    }

    fn memory_limiter(&self) -> Option<Arc<Limiter>> {
        Some(self.0.clone())
    }
}

impl vla_pipeline::registry::Component for MemoryLimiter {
    const TYPE: &'static str = TYPE;
    const EXAMPLE: &'static str = "\
limit_bytes: 512MiB
spike_limit_bytes: 128MiB
mode: refuse
";
    type Config = Config;

    fn validate(config: &Config, path: &str) -> Vec<ConfigProblem> {
        config.validate(path)
    }
}

impl vla_pipeline::registry::ProcessorType for MemoryLimiter {
    fn build(
        config: &Config,
        ctx: BuildContext<'_>,
    ) -> Result<Box<dyn ProcessorFactory>, BuildError> {
        let limits = config
            .limits()
            .ok_or("memory_limiter: limit_bytes is required")?;
        Ok(Box::new(Factory(Limiter::new(
            ctx.id.clone(),
            limits,
            ctx.self_metrics,
        ))))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn parse(yaml: &str) -> Result<Config, String> {
        serde_saphyr::from_str(yaml).map_err(|e| e.to_string())
    }

    fn problems(yaml: &str) -> Vec<String> {
        parse(yaml)
            .unwrap()
            .validate("processors.memory_limiter")
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn the_example_parses_with_units_and_validates() {
        let c = parse(<MemoryLimiter as vla_pipeline::registry::Component>::EXAMPLE).unwrap();
        assert!(c.validate("p").is_empty());
        assert_eq!(
            c.limits(),
            Some(Limits {
                limit_bytes: 512 * MIB,
                spike_limit_bytes: 128 * MIB,
                mode: LimitMode::Refuse
            })
        );
    }

    #[test]
    fn the_spike_defaults_to_a_fifth_and_mib_spellings_carry_over() {
        let c = parse("limit_mib: 100\nmode: drop\n").unwrap();
        assert!(c.validate("p").is_empty());
        let l = c.limits().unwrap();
        assert_eq!((l.limit_bytes, l.spike_limit_bytes), (100 * MIB, 20 * MIB));
        assert_eq!(l.mode, LimitMode::Drop);
        assert_eq!(l.soft_limit(), 80 * MIB);
        let c = parse("limit_bytes: 1000\nspike_limit_mib: 0\n").unwrap();
        assert_eq!(c.limits().map(|l| l.spike_limit_bytes), Some(0));
    }

    #[test]
    fn contradictions_and_otel_only_fields_are_refused_by_name() {
        assert_eq!(
            problems("limit_bytes: 64MiB\nspike_limit_bytes: 64MiB\n"),
            vec![
                "processors.memory_limiter.spike_limit_bytes: must be less than limit_bytes \
                 (67108864 ≥ 67108864): admission stops at limit_bytes − spike_limit_bytes, \
                 which would leave no room for data"
            ]
        );
        assert_eq!(
            problems("mode: drop\n"),
            vec![
                "processors.memory_limiter.limit_bytes: is required: the most bytes of data in \
                 flight the collector may hold (e.g. 512MiB)"
            ]
        );
        let p = problems("check_interval: 1s\nlimit_mib: 10\nlimit_bytes: 5\n");
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].starts_with("processors.memory_limiter.check_interval: not supported"));
        assert!(p[1].contains("set limit_bytes or limit_mib, not both"));
        assert!(
            parse("limit_bytes: lots\n")
                .unwrap_err()
                .contains("invalid size \"lots\"")
        );
        assert!(
            parse("mode: block\n")
                .unwrap_err()
                .contains("unknown variant `block`")
        );
    }
}
