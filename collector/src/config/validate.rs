//! The validator: walks the parsed document section by section, decodes each component's
//! settings through the registry, resolves the pipelines and collects every problem with its
//! YAML path.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;
use std::time::Duration;

use serde_json::{Map, Value};
use vla_exporters::{DebugExporter, PrometheusExporter, PrometheusRemoteWriteExporter};
use vla_pipeline::ComponentId;
use vla_processors::aggregate::Aggregate;
use vla_processors::attributes::{ActionKind, Attributes};
use vla_processors::batch::Batch;
use vla_processors::deltatocumulative::DeltaToCumulative;
use vla_processors::gpu_stats::GpuStats;
use vla_processors::memory_limiter::MemoryLimiter;
use vla_receivers::OtlpReceiver;
use vla_receivers::nvml::NvmlReceiver;

use super::components::{
    self, ComponentConfig, ExporterConfig, Kind, ProcessorConfig, ReceiverConfig,
};
use super::diag::{Diagnostic, YamlPath};
use super::{Config, DEFAULT_SHUTDOWN_TIMEOUT, PipelineConfig, pipelines, suggest, telemetry};

pub(super) static EMPTY: LazyLock<Map<String, Value>> = LazyLock::new(Map::new);

/// Top-level fields.
const TOP_LEVEL: &[&str] = &["receivers", "processors", "exporters", "service"];
/// `service` fields.
const SERVICE: &[&str] = &["pipelines", "telemetry", "shutdown_timeout"];

/// A component as defined in its section: its type, and its typed config when valid.
pub(super) struct Defined {
    ty: String,
    config: Option<ComponentConfig>,
}

/// Walks the document, collecting every problem.
#[derive(Default)]
pub(super) struct Validator {
    pub(super) errors: Vec<Diagnostic>,
    pub(super) warnings: Vec<Diagnostic>,
    /// Exporters whose too-small queue was reported (once, however many pipelines feed it).
    queue_reported: std::collections::BTreeSet<ComponentId>,
}

impl Validator {
    pub(super) fn error(&mut self, path: YamlPath, message: impl Into<String>) {
        self.errors.push(Diagnostic::at(path, message));
    }

    /// `value` as a mapping with only `allowed` keys (`null` is an empty mapping).
    pub(super) fn mapping<'v>(
        &mut self,
        value: &'v Value,
        path: &YamlPath,
        allowed: Option<&[&str]>,
    ) -> Option<&'v Map<String, Value>> {
        let map = match value {
            Value::Null => &*EMPTY,
            Value::Object(m) => m,
            other => {
                self.error(
                    path.clone(),
                    format!("expected a mapping, got {}", describe(other)),
                );
                return None;
            }
        };
        if let Some(allowed) = allowed {
            for key in map.keys() {
                if !allowed.contains(&key.as_str()) {
                    let message = match (path.is_root(), key.as_str()) {
                        (true, "extensions" | "connectors") => format!(
                            "{key} are not supported by vla-collector (health checks and \
                             self-metrics are built in: see service.telemetry)"
                        ),
                        _ => components::unknown("field", key, allowed),
                    };
                    self.error(path.key(key.clone()), message);
                }
            }
        }
        Some(map)
    }

    pub(super) fn root(&mut self, root: &Value, source: &str) -> Option<Config> {
        let top = YamlPath::root();
        if root.is_null() {
            self.error(
                top,
                "the config is empty: it needs receivers, exporters and service.pipelines",
            );
            return None;
        }
        let map = self.mapping(root, &top, Some(TOP_LEVEL))?;
        let get = |k: &str| map.get(k).unwrap_or(&Value::Null);
        let receivers = self.section(get("receivers"), Kind::Receiver);
        let processors = self.section(get("processors"), Kind::Processor);
        let exporters = self.section(get("exporters"), Kind::Exporter);
        let ids = pipelines::Ids {
            receivers: receivers
                .iter()
                .map(|(k, d)| (k.clone(), d.ty.clone()))
                .collect(),
            processors: processors
                .iter()
                .map(|(k, d)| (k.clone(), d.ty.clone()))
                .collect(),
            exporters: exporters
                .iter()
                .map(|(k, d)| (k.clone(), d.ty.clone()))
                .collect(),
        };

        let service_path = top.key("service");
        let service = match map.get("service") {
            Some(s) => self.mapping(s, &service_path, Some(SERVICE)),
            None => Some(&*EMPTY),
        };
        let service = service.unwrap_or(&*EMPTY);
        let pipelines = self.pipelines(service.get("pipelines"), &service_path, &ids);
        let telemetry = telemetry::parse(self, service.get("telemetry"), &service_path);
        let shutdown_timeout = match service.get("shutdown_timeout") {
            None | Some(Value::Null) => DEFAULT_SHUTDOWN_TIMEOUT,
            Some(v) => self
                .duration(v, &service_path.key("shutdown_timeout"))
                .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT),
        };

        // Keep what pipelines use; warn about the rest.
        let used = |kind: Kind| -> BTreeSet<&str> {
            pipelines
                .iter()
                .flat_map(|p| match kind {
                    Kind::Receiver => &p.receivers,
                    Kind::Processor => &p.all_processors,
                    Kind::Exporter => &p.exporters,
                })
                .map(|s| s.as_ref())
                .collect()
        };
        let receivers = self.keep_used(Kind::Receiver, receivers, &used(Kind::Receiver));
        let processors = self.keep_used(Kind::Processor, processors, &used(Kind::Processor));
        let exporters = self.keep_used(Kind::Exporter, exporters, &used(Kind::Exporter));

        self.check_endpoints(&receivers, &exporters, telemetry.as_ref());
        self.check_wal_directories(&exporters);
        self.check_gpu_stats(&receivers, &processors);
        for p in &pipelines {
            self.warn_blocking_fan_out(&service_path, &p.name, &p.exporters, &exporters);
            self.warn_deltas_dropped(&service_path, p, &receivers, &processors, &exporters);
            self.check_aggregate_labels(p, &processors);
            self.check_memory_limiter(&service_path, p, &processors);
            self.check_queue_holds_a_batch(p, &processors, &exporters);
            let batched = p
                .all_processors
                .iter()
                .any(|id| processors.get(id).is_some_and(ComponentConfig::is::<Batch>));
            let remote_write = p.exporters.iter().any(|id| {
                exporters
                    .get(id)
                    .is_some_and(ComponentConfig::is::<PrometheusRemoteWriteExporter>)
            });
            if remote_write && !batched {
                self.warnings.push(Diagnostic::at(
                    service_path
                        .key("pipelines")
                        .key(p.name.as_ref())
                        .key("processors"),
                    "without a `batch` processor, remote write sends at least one request per \
                     received request; add `batch` (usually last) to group points up to its \
                     send_batch_size or timeout",
                ));
            }
        }

        let pipelines = pipelines
            .into_iter()
            .map(|p| PipelineConfig {
                name: p.name,
                receivers: p.receivers,
                processors: p.all_processors,
                exporters: p.exporters,
            })
            .collect();
        Some(Config {
            source: source.to_owned(),
            receivers,
            processors,
            exporters,
            pipelines,
            telemetry: telemetry?,
            shutdown_timeout,
            warnings: Vec::new(),
        })
    }

    /// Each write-ahead log needs a directory of its own (two exporters sharing one would
    /// interleave their records; the second would also fail on the lock at start-up).
    fn check_wal_directories(&mut self, exporters: &BTreeMap<ComponentId, ExporterConfig>) {
        let mut claimed: Vec<(ComponentId, std::path::PathBuf)> = Vec::new();
        for (id, e) in exporters {
            let Some(wal) = &e.driver_config().wal else {
                continue;
            };
            let dir = normalise(&wal.directory);
            if let Some((first, _)) = claimed.iter().find(|(_, d)| *d == dir) {
                self.error(
                    YamlPath::root()
                        .key("exporters")
                        .key(id.as_ref())
                        .join_dotted("wal.directory"),
                    format!(
                        "{} is already the write-ahead log of exporter {first:?}: give each exporter a directory of its own",
                        wal.directory.display()
                    ),
                );
            }
            claimed.push((id.clone(), dir));
        }
    }

    /// `gpu_stats` joins the snapshot that an `nvml` receiver polls: without one running it
    /// would never add anything; and there is one GPU snapshot per collector, so one receiver.
    fn check_gpu_stats(
        &mut self,
        receivers: &BTreeMap<ComponentId, ReceiverConfig>,
        processors: &BTreeMap<ComponentId, ProcessorConfig>,
    ) {
        let nvml: Vec<&ComponentId> = receivers
            .iter()
            .filter(|(_, r)| r.is::<NvmlReceiver>())
            .map(|(id, _)| id)
            .collect();
        for extra in nvml.iter().skip(1) {
            self.error(
                YamlPath::root().key("receivers").key(extra.as_ref()),
                format!(
                    "only one nvml receiver may run ({:?} already reads this host's GPUs): two \
                     would report every GPU twice and overwrite each other's readings for \
                     gpu_stats",
                    nvml[0]
                ),
            );
        }
        let has_nvml = !nvml.is_empty();
        for (id, p) in processors {
            if p.is::<GpuStats>() && !has_nvml {
                self.error(
                    YamlPath::root().key("processors").key(id.as_ref()),
                    "gpu_stats joins the GPU readings of an `nvml` receiver, and no pipeline \
                     uses one; add an nvml receiver to a pipeline (source: fake without a GPU)",
                );
            }
        }
    }

    /// A `memory_limiter` admits data where the receivers hand it to the pipeline, so it is
    /// listed first (as in the OpenTelemetry Collector), once.
    fn check_memory_limiter(
        &mut self,
        service_path: &YamlPath,
        p: &pipelines::RawPipeline,
        processors: &BTreeMap<ComponentId, ProcessorConfig>,
    ) {
        let path = service_path
            .key("pipelines")
            .key(p.name.as_ref())
            .key("processors");
        let limiters: Vec<(usize, &ComponentId)> = p
            .all_processors
            .iter()
            .enumerate()
            .filter(|(_, id)| {
                processors
                    .get(*id)
                    .is_some_and(ComponentConfig::is::<MemoryLimiter>)
            })
            .collect();
        for (i, id) in &limiters {
            if *i != 0 {
                self.error(
                    path.clone().index(*i),
                    format!(
                        "{id:?} must be the first processor: a memory_limiter admits data as the \
                         receivers hand it to the pipeline, before any processor runs, so \
                         listing it later would suggest otherwise; move it to the front"
                    ),
                );
            }
        }
        if limiters.len() > 1 {
            self.error(
                path,
                "lists more than one memory_limiter; a pipeline has one budget (pipelines may \
                 share one by listing the same id)",
            );
        }
    }

    /// An `aggregate` that groups by a label an `attributes` processor before it in the
    /// pipeline deletes would put every point in one group: refused.
    fn check_aggregate_labels(
        &mut self,
        p: &pipelines::RawPipeline,
        processors: &BTreeMap<ComponentId, ProcessorConfig>,
    ) {
        let mut deleted: Vec<(String, &ComponentId)> = Vec::new();
        for id in &p.all_processors {
            let Some(pc) = processors.get(id) else {
                continue;
            };
            if pc.is::<Attributes>()
                && let Some(c) = pc.get::<vla_processors::attributes::Config>()
            {
                for a in &c.actions {
                    if a.action == ActionKind::Delete {
                        deleted.push((a.key.clone(), id));
                    }
                }
            }
            if pc.is::<Aggregate>()
                && let Some(c) = pc.get::<vla_processors::aggregate::Config>()
            {
                for (i, rule) in c.rules.iter().enumerate() {
                    for key in rule.group_by_keys().unwrap_or_default() {
                        if let Some((_, by)) = deleted.iter().find(|(k, _)| k == key) {
                            self.error(
                                YamlPath::root()
                                    .key("processors")
                                    .key(id.as_ref())
                                    .key("rules")
                                    .index(i)
                                    .key("group_by"),
                                format!(
                                    "groups by {key:?}, which {by:?} deletes earlier in pipeline \
                                     {:?}: every point would fall in one group; move {id:?} \
                                     before {by:?} or stop deleting {key:?}",
                                    p.name
                                ),
                            );
                        }
                    }
                }
            }
        }
    }

    /// OTLP clients may send delta temporality (the OpenTelemetry SDKs do when asked to); the
    /// Prometheus exporters can only write cumulative series and drop deltas (counted), so a
    /// pipeline from an OTLP receiver to one of them without `deltatocumulative` is told which
    /// processor to add.
    fn warn_deltas_dropped(
        &mut self,
        service_path: &YamlPath,
        p: &pipelines::RawPipeline,
        receivers: &BTreeMap<ComponentId, ReceiverConfig>,
        processors: &BTreeMap<ComponentId, ProcessorConfig>,
        exporters: &BTreeMap<ComponentId, ExporterConfig>,
    ) {
        let otlp = p.receivers.iter().any(|id| {
            receivers
                .get(id)
                .is_some_and(ComponentConfig::is::<OtlpReceiver>)
        });
        let prometheus = p.exporters.iter().any(|id| {
            exporters.get(id).is_some_and(|e| {
                e.is::<PrometheusExporter>() || e.is::<PrometheusRemoteWriteExporter>()
            })
        });
        let converted = p.all_processors.iter().any(|id| {
            processors
                .get(id)
                .is_some_and(ComponentConfig::is::<DeltaToCumulative>)
        });
        if otlp && prometheus && !converted {
            self.warnings.push(Diagnostic::at(
                service_path
                    .key("pipelines")
                    .key(p.name.as_ref())
                    .key("processors"),
                "OTLP clients may send delta sums and histograms, which Prometheus cannot store \
                 and the exporters drop (counted as delta_temporality); add the \
                 `deltatocumulative` processor (before `batch`) to turn them into cumulative \
                 series",
            ));
        }
    }

    /// A queue counted in points that holds fewer than two batches of the pipeline feeding
    /// it holds one batch at a time (a batch leaves once `send_batch_size` points are pending,
    /// so it can exceed that by up to one received request) and makes every other wait or,
    /// with `when_full: drop`, drops it: almost always a `queue_size` written when it counted
    /// batches. Reported once per exporter, only where `queue_size` is written.
    fn check_queue_holds_a_batch(
        &mut self,
        p: &pipelines::RawPipeline,
        processors: &BTreeMap<ComponentId, ProcessorConfig>,
        exporters: &BTreeMap<ComponentId, ExporterConfig>,
    ) {
        let Some(batch_size) = p
            .all_processors
            .iter()
            .filter_map(|id| processors.get(id)?.get::<vla_processors::batch::Config>())
            .map(|b| b.send_batch_size)
            .max()
        else {
            return;
        };
        for id in &p.exporters {
            // Only exporters with a `sending_queue` section, where it sets a points queue_size.
            let Some(queue) = exporters
                .get(id)
                .and_then(|e| e.get::<vla_exporters::prometheus_remote_write::Config>())
                .map(|c| &c.sending_queue)
            else {
                continue;
            };
            let Some(written) = queue.queue_size else {
                continue;
            };
            if queue.sizer != vla_pipeline::driver::QueueSizer::Points
                || written >= batch_size.saturating_mul(2)
                || !self.queue_reported.insert(id.clone())
            {
                continue;
            }
            self.error(
                YamlPath::root()
                    .key("exporters")
                    .key(id.as_ref())
                    .key("sending_queue")
                    .key("queue_size"),
                format!(
                    "{written} points is less than two batches of pipeline {:?} (its batch \
                     processor sends once send_batch_size {batch_size} points are pending, \
                     and a batch can exceed that by one received request), so the queue would \
                     hold one batch at a time; queue_size counts data points (sizer: points): \
                     set it to several batches (the default is {}), or set sizer: batches to \
                     count batches",
                    &*p.name,
                    vla_pipeline::driver::QueueSizer::Points.default_queue_size(),
                ),
            );
        }
    }

    /// A pipeline fanning out to several exporters, one of which retries with a blocking
    /// queue: while that one's backend is down, the others receive nothing either.
    fn warn_blocking_fan_out(
        &mut self,
        service_path: &YamlPath,
        pipeline: &str,
        ids: &[ComponentId],
        exporters: &BTreeMap<ComponentId, ExporterConfig>,
    ) {
        // The debug exporter stalling with it does not matter; a scrape endpoint or a second
        // backend does.
        let others_that_matter = |me: &ComponentId| {
            ids.iter()
                .any(|o| o != me && exporters.get(o).is_some_and(|e| !e.is::<DebugExporter>()))
        };
        for id in ids {
            if !others_that_matter(id) {
                continue;
            }
            if let Some(e) = exporters.get(id)
                && e.is::<PrometheusRemoteWriteExporter>()
                && e.driver_config().when_full == vla_pipeline::driver::WhenFull::Block
                // A write-ahead log holds the backlog on disk instead of the queue.
                && e.driver_config().wal.is_none()
            {
                self.warnings.push(Diagnostic::at(
                    service_path.key("pipelines").key(pipeline).key("exporters"),
                    format!(
                        "while {id:?}'s backend is down its queue fills and, with \
                         sending_queue.when_full: block, this pipeline stops feeding its other \
                         exporters too; set when_full: drop on {id:?} to keep them flowing \
                         (its drops are counted), or give it a pipeline of its own"
                    ),
                ));
            }
        }
    }

    /// Parses one component section.
    fn section(&mut self, value: &Value, kind: Kind) -> BTreeMap<ComponentId, Defined> {
        let path = YamlPath::root().key(kind.section());
        let mut out = BTreeMap::new();
        let Some(map) = self.mapping(value, &path, None) else {
            return out;
        };
        for (id, v) in map {
            let at = path.key(id.clone());
            let (ty, name) = match id.split_once('/') {
                Some((t, n)) => (t, Some(n)),
                None => (id.as_str(), None),
            };
            if ty.is_empty() || name.is_some_and(|n| n.is_empty() || n.contains('/')) {
                self.error(
                    at,
                    format!(
                        "invalid {} id {id:?}: expected \"type\" or \"type/name\"",
                        kind.noun()
                    ),
                );
                continue;
            }
            let config = match components::parse(kind, ty, v, &at) {
                Some(Ok(c)) => Some(c),
                Some(Err(diags)) => {
                    self.errors.extend(diags);
                    None
                }
                None => {
                    self.error(at, unknown_type(kind, ty));
                    None
                }
            };
            out.insert(
                ComponentId::from(id.as_str()),
                Defined {
                    ty: ty.to_owned(),
                    config,
                },
            );
        }
        out
    }

    /// The used components with a valid config; warnings for the unused ones.
    fn keep_used(
        &mut self,
        kind: Kind,
        defined: BTreeMap<ComponentId, Defined>,
        used: &BTreeSet<&str>,
    ) -> BTreeMap<ComponentId, ComponentConfig> {
        let mut out = BTreeMap::new();
        for (id, d) in defined {
            if !used.contains(id.as_ref()) {
                if d.config.is_none() {
                    // Already reported as an error; "unused" would only add noise.
                    continue;
                }
                self.warnings.push(Diagnostic::at(
                    YamlPath::root().key(kind.section()).key(id.as_ref()),
                    format!(
                        "{} {id:?} is defined but not used by any pipeline (it will not be started)",
                        kind.noun()
                    ),
                ));
                continue;
            }
            if let Some(c) = d.config {
                out.insert(id, c);
            }
        }
        out
    }

    /// A duration such as `15s`.
    pub(crate) fn duration(&mut self, value: &Value, path: &YamlPath) -> Option<Duration> {
        let parsed = match value {
            Value::String(s) => vla_pipeline::config::parse_duration(s),
            Value::Number(n) if n.as_u64() == Some(0) => Ok(Duration::ZERO),
            other => Err(format!(
                "expected a duration like 200ms, 5s or 1m30s, got {}",
                describe(other)
            )),
        };
        parsed.map_err(|m| self.error(path.clone(), m)).ok()
    }
}

/// `unknown exporter type "prometeus" (did you mean "prometheus"?); valid types: ...`
fn unknown_type(kind: Kind, ty: &str) -> String {
    let valid = kind.types();
    let hint = suggest::hint(ty, valid.iter().copied());
    let elsewhere = Kind::ALL
        .into_iter()
        .find(|k| *k != kind && k.types().contains(&ty))
        .map(|k| format!(" ({ty:?} is {} {} type)", article(k.noun()), k.noun()))
        .unwrap_or_default();
    format!(
        "unknown {} type {ty:?}{hint}{elsewhere}; valid types: {}",
        kind.noun(),
        valid.join(", ")
    )
}

pub(super) fn article(noun: &str) -> &'static str {
    if noun.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// A value's kind and, for scalars, the value: `string "x"`, `integer 5`, `a list`.
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing (null)".to_owned(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "a mapping".to_owned(),
    }
}

/// A path without `.` components or a trailing slash, for comparing configured directories
/// (no I/O: symbolic links are not followed).
fn normalise(p: &std::path::Path) -> std::path::PathBuf {
    p.components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}
