//! Walking a batch: one call per metric to name it, one label set per point, and the
//! Prometheus samples each point yields, handed to a sink.

mod points;
mod raw;

pub(super) use raw::EncodedAttrs;

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use hashbrown::HashMap;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use vla_pipeline::MetricBatch;

use super::DROP_NAME_COLLISION;
use super::claims::{Claims, MetricIdentity, NameCollision};
use super::families::{EMPTY_NAMES, FAMILY_CACHE_MAX, FamilyKey, FamilyKeyRef, FamilyNames};
use super::float_labels::FloatLabels;
use super::labels::{LabelSet, prio};
use super::names::{PromType, metric_name};
use super::point_key::PointKeys;
use super::sink::{Family, Sample, SampleSink};

/// What the translation adds beyond the data itself.
#[derive(Debug, Clone, PartialEq)]
pub struct TranslateOptions {
    /// Prefix of every metric name.
    pub namespace: Option<String>,
    /// Labels added to every series unless the series has its own (`external_labels`).
    pub extra_labels: Vec<(String, String)>,
    /// Emit `target_info` per resource.
    pub target_info: bool,
    /// Add `otel_scope_name` / `otel_scope_version`.
    pub scope_info: bool,
    /// How exponential histograms are written.
    pub exponential: super::ExponentialHistograms,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        Self {
            namespace: None,
            extra_labels: Vec::new(),
            target_info: true,
            scope_info: true,
            exponential: super::ExponentialHistograms::default(),
        }
    }
}

/// What a translation did with the batch's points.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TranslateStats {
    /// OTLP data points translated into samples.
    pub points: u64,
    /// Samples produced (including `target_info`).
    pub samples: u64,
    /// Data points not translated, by reason.
    pub dropped: Vec<(&'static str, u64)>,
    /// The batch's first metric dropped for [`DROP_NAME_COLLISION`], for the exporter's warning.
    pub collision: Option<Arc<NameCollision>>,
}

impl TranslateStats {
    fn drop(&mut self, reason: &'static str, n: u64) {
        if n == 0 {
            return;
        }
        match self.dropped.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, c)) => *c += n,
            None => self.dropped.push((reason, n)),
        }
    }

    /// Counts a whole metric dropped because its Prometheus names belong to another metric.
    fn collide(&mut self, collision: &Arc<NameCollision>, points: usize) {
        self.drop(DROP_NAME_COLLISION, points as u64);
        if self.collision.is_none() {
            self.collision = Some(collision.clone());
        }
    }

    /// Points dropped for `reason`.
    pub fn dropped_for(&self, reason: &str) -> u64 {
        self.dropped
            .iter()
            .filter(|(r, _)| *r == reason)
            .map(|(_, n)| n)
            .sum()
    }
}

/// A point's attributes: decoded, or encoded ([`raw::EncodedAttrs`]).
#[derive(Debug, Clone, Copy)]
pub(super) enum Attrs<'a> {
    Decoded(&'a [KeyValue]),
    Encoded(raw::EncodedAttrs<'a>),
}

/// The timestamps of one resource's points: milliseconds, with the batch's arrival time for
/// points without one, and the latest of them (the time of the resource's `target_info`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    fallback_ms: i64,
    latest_ms: Option<i64>,
}

impl Clock {
    fn new(fallback_ms: i64) -> Self {
        Self {
            fallback_ms,
            latest_ms: None,
        }
    }

    /// A point's time in milliseconds (the fallback for 0, "not set").
    pub(super) fn ms(&self, nanos: u64) -> i64 {
        if nanos == 0 {
            self.fallback_ms
        } else {
            i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX)
        }
    }

    /// Notes a point's time.
    pub(super) fn note(&mut self, ms: i64) {
        if self.latest_ms.is_none_or(|l| ms > l) {
            self.latest_ms = Some(ms);
        }
    }

    fn latest(&self) -> i64 {
        self.latest_ms.unwrap_or(self.fallback_ms)
    }
}

/// Translates batches; keeps caches (names, label keys, buffers) between batches.
#[derive(Debug)]
pub struct Translator {
    options: TranslateOptions,
    target_info_name: Arc<str>,
    families: HashMap<FamilyKey, FamilyNames, foldhash::fast::RandomState>,
    /// Prometheus name → the metric that produced it first; cleared with `families`.
    claims: Claims,
    labels: LabelSet,
    label_set_id: u64,
    les: FloatLabels,
    quantiles: FloatLabels,
    scratch: String,
    /// Interned contexts and point-key buffers, for sinks that cache series.
    keys: PointKeys,
    /// The current scope's context id, when the sink caches series.
    context_id: Option<u64>,
    /// Reused buffers of the walk over encoded requests.
    raw: raw::Scratch,
    /// Whether encoded batches are translated from their bytes (off only in tests, to
    /// compare with the decoded walk).
    raw_path: bool,
}

const SERVICE_NAME: &str = "service.name";
const SERVICE_NAMESPACE: &str = "service.namespace";
const SERVICE_INSTANCE_ID: &str = "service.instance.id";

impl Translator {
    /// A translator with the given options.
    pub fn new(options: TranslateOptions) -> Self {
        let target_info_name = metric_name("target_info", "", PromType::Gauge, None);
        let target_info_name = match options.namespace.as_deref().filter(|n| !n.is_empty()) {
            Some(ns) => format!("{}_{target_info_name}", super::sanitize_metric_name(ns)),
            None => target_info_name,
        };
        let mut translator = Self {
            options,
            target_info_name: target_info_name.into(),
            families: HashMap::default(),
            claims: Claims::default(),
            labels: LabelSet::default(),
            label_set_id: 0,
            les: FloatLabels::default(),
            quantiles: FloatLabels::default(),
            scratch: String::new(),
            keys: PointKeys::default(),
            context_id: None,
            raw: raw::Scratch::default(),
            raw_path: true,
        };
        translator.reset_claims();
        translator
    }

    /// Forgets every claim except the reserved `target_info` (while it is emitted).
    fn reset_claims(&mut self) {
        self.claims.clear();
        if self.options.target_info {
            self.claims.reserve_target_info(&self.target_info_name);
        }
    }

    /// The same translator, reading encoded batches decoded (to compare the two walks).
    #[cfg(test)]
    pub(crate) fn decoded_walk_only(mut self) -> Self {
        self.raw_path = false;
        self
    }

    /// The options it translates with.
    pub fn options(&self) -> &TranslateOptions {
        &self.options
    }

    /// The names of a metric's family, or `None` when they collide with another metric's
    /// (its `points` are then counted as dropped). Once per metric per batch, never per point.
    fn family_names(
        &mut self,
        name: &str,
        unit: &str,
        ty: PromType,
        points: usize,
        stats: &mut TranslateStats,
    ) -> Option<&FamilyNames> {
        let names = self.names(name, unit, ty);
        match &names.collision {
            Some(collision) => {
                stats.collide(collision, points);
                None
            }
            None => Some(names),
        }
    }

    fn names(&mut self, name: &str, unit: &str, ty: PromType) -> &FamilyNames {
        let key = FamilyKeyRef { name, unit, ty };
        if !self.families.contains_key(&key) {
            if self.families.len() >= FAMILY_CACHE_MAX {
                self.families.clear();
                self.reset_claims();
            }
            let base = metric_name(name, unit, ty, self.options.namespace.as_deref());
            let mut names = FamilyNames {
                bucket: format!("{base}_bucket").into(),
                sum: format!("{base}_sum").into(),
                count: format!("{base}_count").into(),
                base: base.into(),
                collision: None,
            };
            let identity = MetricIdentity {
                name: name.into(),
                unit: unit.into(),
                ty,
            };
            let produced: &[&Arc<str>] = match ty {
                PromType::Counter | PromType::Gauge => &[&names.base],
                PromType::Histogram => &[&names.base, &names.bucket, &names.sum, &names.count],
                PromType::Summary => &[&names.base, &names.sum, &names.count],
            };
            names.collision = self.claims.claim(identity, produced).map(Arc::new);
            self.families.insert(
                FamilyKey {
                    name: name.into(),
                    unit: unit.into(),
                    ty,
                },
                names,
            );
        }
        // Just inserted or present; the fallback is never taken.
        self.families.get(&key).unwrap_or(&EMPTY_NAMES)
    }

    /// Translates a batch, handing every sample to `sink`.
    pub fn translate(&mut self, batch: &MetricBatch, sink: &mut impl SampleSink) -> TranslateStats {
        let mut stats = TranslateStats::default();
        let fallback_ms = batch
            .meta()
            .received_at
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        if self.raw_path
            && sink.uses_point_cache()
            && let Some(requests) = batch.encoded_requests()
        {
            for request in requests {
                self.translate_raw(request, fallback_ms, &mut stats, sink);
            }
            return stats;
        }
        for rm in batch.resource_metrics() {
            let resource_attrs: &[KeyValue] = rm
                .resource
                .as_ref()
                .map_or(&[], |r| r.attributes.as_slice());
            let resource_mark = self.begin_resource(resource_attrs);
            let mut clock = Clock::new(fallback_ms);
            for sm in &rm.scope_metrics {
                let scope_mark = self.begin_scope(resource_mark, sm.scope.as_ref(), sink);
                for m in &sm.metrics {
                    self.metric(m, scope_mark, &mut clock, &mut stats, sink);
                }
            }
            if self.options.target_info {
                self.target_info(resource_attrs, clock.latest(), &mut stats, sink);
            }
        }
        stats
    }

    /// Starts a resource: its context labels, sealed.
    fn begin_resource(&mut self, resource_attrs: &[KeyValue]) -> super::labels::Mark {
        self.labels.clear();
        self.push_context(resource_attrs);
        self.labels.seal()
    }

    /// Starts a scope of the resource begun at `resource_mark`: its labels, sealed, and its
    /// context id when the sink caches series.
    fn begin_scope(
        &mut self,
        resource_mark: super::labels::Mark,
        scope: Option<&InstrumentationScope>,
        sink: &impl SampleSink,
    ) -> super::labels::Mark {
        self.labels.truncate(resource_mark);
        if self.options.scope_info
            && let Some(scope) = scope
        {
            self.labels
                .push("otel_scope_name", &scope.name, prio::CONTEXT);
            self.labels
                .push("otel_scope_version", &scope.version, prio::CONTEXT);
        }
        let scope_mark = self.labels.seal();
        self.context_id = if sink.uses_point_cache() {
            Some(self.keys.context_id(&self.labels))
        } else {
            None
        };
        scope_mark
    }

    /// External labels, `job` and `instance`.
    fn push_context(&mut self, resource_attrs: &[KeyValue]) {
        for (k, v) in &self.options.extra_labels {
            self.labels.push(k, v, prio::EXTERNAL);
        }
        let get = |key: &str| {
            resource_attrs
                .iter()
                .find(|kv| kv.key == key)
                .and_then(|kv| kv.value.as_ref())
        };
        let mut job = std::mem::take(&mut self.scratch);
        job.clear();
        if let Some(name) = get(SERVICE_NAME) {
            if let Some(ns) = get(SERVICE_NAMESPACE) {
                super::labels::render_value(&mut job, Some(ns));
                if !job.is_empty() {
                    job.push('/');
                }
            }
            super::labels::render_value(&mut job, Some(name));
            self.labels.push("job", &job, prio::CONTEXT);
        }
        job.clear();
        if let Some(id) = get(SERVICE_INSTANCE_ID) {
            super::labels::render_value(&mut job, Some(id));
            self.labels.push("instance", &job, prio::CONTEXT);
        }
        self.scratch = job;
    }

    fn target_info(
        &mut self,
        resource_attrs: &[KeyValue],
        timestamp_ms: i64,
        stats: &mut TranslateStats,
        sink: &mut impl SampleSink,
    ) {
        let is_identifying =
            |k: &str| k == SERVICE_NAME || k == SERVICE_NAMESPACE || k == SERVICE_INSTANCE_ID;
        if resource_attrs.iter().all(|kv| is_identifying(&kv.key)) {
            return;
        }
        self.labels.clear();
        self.push_context(resource_attrs);
        self.labels.seal();
        for kv in resource_attrs.iter().filter(|kv| !is_identifying(&kv.key)) {
            self.labels
                .push_attr(&kv.key, kv.value.as_ref(), prio::ATTRIBUTE);
        }
        self.labels.finish();
        self.label_set_id += 1;
        let name = self.target_info_name.clone();
        let family = Family {
            name: &name,
            ty: PromType::Gauge,
            help: "Target metadata",
        };
        sink.sample(&Sample {
            family,
            name: &name,
            labels: &self.labels,
            extra: None,
            label_set_id: self.label_set_id,
            value: 1.0,
            timestamp_ms,
        });
        stats.samples += 1;
    }

    /// Builds the point's labels unless the sink has them cached under the point's key.
    fn point_labels_cached(
        &mut self,
        scope_mark: super::labels::Mark,
        attrs: Attrs<'_>,
        sink: &mut impl SampleSink,
    ) {
        if let Some(ctx) = self.context_id {
            let key = match attrs {
                Attrs::Decoded(attrs) => self.keys.point_key(ctx, attrs),
                Attrs::Encoded(attrs) => Some(self.keys.encoded_point_key(ctx, attrs)),
            };
            if let Some(key) = key
                && sink.cached_point(key, self.label_set_id + 1)
            {
                self.label_set_id += 1;
                return;
            }
        }
        match attrs {
            Attrs::Decoded(attrs) => self.point_labels(scope_mark, attrs),
            Attrs::Encoded(attrs) => {
                let mut decoded = std::mem::take(&mut self.raw.attrs);
                attrs.decode_into(&mut decoded);
                self.point_labels(scope_mark, &decoded);
                self.raw.attrs = decoded;
            }
        }
    }

    fn point_labels(&mut self, scope_mark: super::labels::Mark, attrs: &[KeyValue]) {
        self.labels.truncate(scope_mark);
        for kv in attrs {
            self.labels
                .push_attr(&kv.key, kv.value.as_ref(), prio::ATTRIBUTE);
        }
        self.labels.finish();
        self.label_set_id += 1;
    }
}
