//! The per-batch work: enrich points and resources from the snapshot, then drop the customer
//! id from the configured metrics and merge what collides. No I/O, no locks: the snapshot is
//! loaded once per batch, and the counters are added once per batch. Until a table has loaded
//! (a postgres source that has not answered yet) the batch passes untouched.

use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric};
use vla_pipeline::self_metrics::Counter;
use vla_pipeline::{MetricBatch, Processor, attr_str};

use super::Shared;
use super::config::{ApplyTo, Config, MetricFilter, OnExisting};
use super::merge::{self, SkipReason};
use super::table::Table;

/// The compiled settings of the enrichment.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) id_key: String,
    pub(crate) tier_key: String,
    pub(crate) default_tier: String,
    /// Row fields to add, and the attribute key of each (same order).
    pub(crate) extra_fields: Vec<String>,
    pub(crate) extra_keys: Vec<String>,
    pub(crate) apply_to: ApplyTo,
    pub(crate) on_existing: OnExisting,
    pub(crate) drop: Option<MetricFilter>,
}

impl Settings {
    pub(crate) fn new(config: &Config) -> Self {
        let (extra_fields, extra_keys) = config
            .attributes
            .iter()
            .map(|(field, key)| (field.clone(), key.clone()))
            .unzip();
        Self {
            id_key: config.customer_id_key.clone(),
            tier_key: config.tier_key.clone(),
            default_tier: config.default_tier.clone(),
            extra_fields,
            extra_keys,
            apply_to: config.apply_to,
            on_existing: config.on_existing,
            drop: config.drop_customer_id.as_ref().map(MetricFilter::new),
        }
    }
}

/// The per-batch counters.
#[derive(Debug)]
pub(crate) struct PointCounters {
    pub(crate) enriched: Counter,
    pub(crate) defaulted: Counter,
    pub(crate) no_table: Counter,
    pub(crate) merged: Counter,
    pub(crate) skipped: [(SkipReason, Counter); 3],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Enriched,
    Default,
    /// No table has loaded yet: the point was left as it was.
    NoTable,
}

#[derive(Debug, Default)]
struct Tally {
    enriched: u64,
    defaulted: u64,
    no_table: u64,
    merged: u64,
    skipped: [u64; 3],
}

impl Tally {
    fn count(&mut self, outcome: Option<Outcome>) {
        match outcome {
            Some(Outcome::Enriched) => self.enriched += 1,
            Some(Outcome::Default) => self.defaulted += 1,
            Some(Outcome::NoTable) => self.no_table += 1,
            None => {}
        }
    }
}

/// One pipeline's `customer_tier` processor; it shares the snapshot with its siblings.
pub(crate) struct TierProcessor {
    pub(crate) shared: Arc<Shared>,
    /// The merge's working memory, reused from batch to batch.
    pub(crate) scratch: merge::Scratch,
}

impl Processor for TierProcessor {
    fn process(&mut self, batch: &mut MetricBatch) {
        let shared = &*self.shared;
        let scratch = &mut self.scratch;
        let settings = &shared.settings;
        let snapshot = shared.table.load_full();
        // `None` until the first load: enrich leaves everything as it is, and ids are not
        // dropped (they would merge every customer into one series without a tier).
        let table = snapshot.as_deref();
        let mut tally = Tally::default();
        let mut rms = batch.resource_metrics_mut();
        for rm in rms.iter_mut() {
            let resource_outcome = match (&mut rm.resource, settings.apply_to.resources()) {
                (Some(r), true) => enrich(settings, table, &mut r.attributes),
                _ => None,
            };
            for m in rm
                .scope_metrics
                .iter_mut()
                .flat_map(|sm| sm.metrics.iter_mut())
            {
                for_each_point_attrs(m, |attrs| {
                    let own = if settings.apply_to.points() {
                        enrich(settings, table, attrs)
                    } else {
                        None
                    };
                    tally.count(own.or(resource_outcome));
                });
                if table.is_some()
                    && let Some(filter) = &settings.drop
                    && filter.matches(&m.name)
                {
                    let out = merge::drop_key_and_merge(m, &settings.id_key, scratch);
                    tally.merged += out.merged as u64;
                    if let Some((reason, n)) = out.skipped
                        && let Some(i) = shared
                            .counters
                            .skipped
                            .iter()
                            .position(|(r, _)| *r == reason)
                    {
                        tally.skipped[i] += n as u64;
                    }
                }
            }
        }
        drop(rms);
        let c = &shared.counters;
        for (counter, n) in [
            (&c.enriched, tally.enriched),
            (&c.defaulted, tally.defaulted),
            (&c.no_table, tally.no_table),
            (&c.merged, tally.merged),
        ] {
            if n > 0 {
                counter.add(n);
            }
        }
        for ((_, counter), n) in c.skipped.iter().zip(tally.skipped) {
            if n > 0 {
                counter.add(n);
            }
        }
    }
}

/// Calls `f` with the attributes of every data point of `m`.
fn for_each_point_attrs(m: &mut Metric, mut f: impl FnMut(&mut Vec<KeyValue>)) {
    match &mut m.data {
        Some(metric::Data::Gauge(g)) => g.data_points.iter_mut().for_each(|p| f(&mut p.attributes)),
        Some(metric::Data::Sum(s)) => s.data_points.iter_mut().for_each(|p| f(&mut p.attributes)),
        Some(metric::Data::Histogram(h)) => {
            h.data_points.iter_mut().for_each(|p| f(&mut p.attributes))
        }
        Some(metric::Data::ExponentialHistogram(h)) => {
            h.data_points.iter_mut().for_each(|p| f(&mut p.attributes))
        }
        Some(metric::Data::Summary(s)) => {
            s.data_points.iter_mut().for_each(|p| f(&mut p.attributes))
        }
        None => {}
    }
}

/// Adds the tier (and extra fields) of the customer in `attrs`; `None` when there is no
/// customer id. Without a table (`None`) nothing is added.
fn enrich(
    settings: &Settings,
    table: Option<&Table>,
    attrs: &mut Vec<KeyValue>,
) -> Option<Outcome> {
    let id = attr_str(attrs, &settings.id_key)?;
    let Some(table) = table else {
        return Some(Outcome::NoTable);
    };
    let on_existing = settings.on_existing;
    match table.get(id) {
        Some(entry) => {
            let extra = || {
                settings
                    .extra_keys
                    .iter()
                    .zip(entry.extra.iter())
                    .filter_map(|(key, value)| Some((key.as_str(), value.as_deref()?)))
            };
            // Room for every attribute that will be added, so the Vec grows at most once.
            let missing = std::iter::once(settings.tier_key.as_str())
                .chain(extra().map(|(key, _)| key))
                .filter(|key| !attrs.iter().any(|kv| kv.key == *key))
                .count();
            attrs.reserve(missing);
            set(on_existing, attrs, &settings.tier_key, &entry.tier);
            for (key, value) in extra() {
                set(on_existing, attrs, key, value);
            }
            Some(Outcome::Enriched)
        }
        None => {
            set(
                on_existing,
                attrs,
                &settings.tier_key,
                &settings.default_tier,
            );
            Some(Outcome::Default)
        }
    }
}

/// Sets string attribute `key` to `value`: added when absent; when present, replaced only with
/// `overwrite` and only when it holds something else (so an equal value costs no allocation).
fn set(on_existing: OnExisting, attrs: &mut Vec<KeyValue>, key: &str, value: &str) {
    let string_value = || {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        })
    };
    match attrs.iter_mut().find(|kv| kv.key == key) {
        Some(kv) => {
            if on_existing == OnExisting::Overwrite && !holds_str(kv, value) {
                kv.value = string_value();
            }
        }
        None => attrs.push(KeyValue {
            key: key.to_owned(),
            value: string_value(),
            ..Default::default()
        }),
    }
}

/// Whether `kv` holds exactly the string `value`.
fn holds_str(kv: &KeyValue, value: &str) -> bool {
    matches!(
        kv.value.as_ref().and_then(|v| v.value.as_ref()),
        Some(any_value::Value::StringValue(s)) if s == value
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.into())),
            }),
            ..Default::default()
        }
    }

    fn str_ptr(attrs: &[KeyValue], key: &str) -> *const u8 {
        match attrs
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        {
            Some(any_value::Value::StringValue(s)) => s.as_ptr(),
            _ => panic!("no string {key}"),
        }
    }

    #[test]
    fn overwrite_keeps_an_equal_value_and_replaces_a_different_one() {
        let mut attrs = vec![kv("tier", "pro"), kv("plan", "monthly")];
        let before = str_ptr(&attrs, "tier");
        set(OnExisting::Overwrite, &mut attrs, "tier", "pro");
        assert_eq!(
            str_ptr(&attrs, "tier"),
            before,
            "an equal value is not reallocated"
        );
        set(OnExisting::Overwrite, &mut attrs, "plan", "annual");
        set(OnExisting::Keep, &mut attrs, "tier", "free");
        set(OnExisting::Keep, &mut attrs, "region", "eu");
        assert_eq!(
            attrs,
            vec![kv("tier", "pro"), kv("plan", "annual"), kv("region", "eu")]
        );
        assert!(!holds_str(&KeyValue::default(), ""));
    }
}
