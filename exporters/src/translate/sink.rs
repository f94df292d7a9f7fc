//! What a translation hands out: the [`Sample`]s of a batch, each with its [`Family`], given
//! to a [`SampleSink`] (the remote-write encoder, the scrape endpoint's store).

use super::labels::LabelSet;
use super::names::PromType;

/// A metric family: what the `# HELP` / `# TYPE` lines say.
#[derive(Debug, Clone, Copy)]
pub struct Family<'a> {
    /// The family name (`vla_inference_duration_seconds`, `vla_inference_requests_total`).
    pub name: &'a str,
    /// The Prometheus type.
    pub ty: PromType,
    /// The OTel description.
    pub help: &'a str,
}

/// One Prometheus sample.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    /// The family it belongs to.
    pub family: Family<'a>,
    /// The series' metric name (`__name__`): the family name, or with `_bucket`/`_sum`/`_count`.
    pub name: &'a str,
    /// The labels shared by every series of the point (sorted; no `__name__`, `le`, `quantile`).
    pub labels: &'a LabelSet,
    /// `le` or `quantile` with its value; it replaces a shared label of the same name.
    pub extra: Option<(&'static str, &'a str)>,
    /// Changes whenever `labels` changes, so sinks can reuse work done for the previous sample.
    pub label_set_id: u64,
    /// The value (the stale-marker NaN for points flagged "no recorded value").
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

impl Sample<'_> {
    /// Calls `f` for every label of the series in sorted order, `__name__` included.
    pub fn for_each_label(&self, mut f: impl FnMut(&str, &str)) {
        let mut name_done = false;
        let mut extra = self.extra;
        for (n, v) in self.labels.iter() {
            if !name_done && n > "__name__" {
                f("__name__", self.name);
                name_done = true;
            }
            if let Some((en, ev)) = extra
                && n >= en
            {
                f(en, ev);
                extra = None;
                if n == en {
                    continue;
                }
            }
            f(n, v);
        }
        if !name_done {
            f("__name__", self.name);
        }
        if let Some((en, ev)) = extra {
            f(en, ev);
        }
    }
}

/// Receives the samples of a translated batch.
pub trait SampleSink {
    /// One sample; called in batch order.
    fn sample(&mut self, sample: &Sample<'_>);

    /// One native histogram sample of the series `sample` names (its `value` is unused); only
    /// called when the translator's `exponential` option is `Native`. The default drops it:
    /// a sink without native histograms is given classic buckets instead.
    fn native_histogram(&mut self, sample: &Sample<'_>, histogram: &super::NativeHistogram) {
        let _ = (sample, histogram);
    }

    /// Whether the sink keeps a series cache ([`SampleSink::cached_point`]); when `false`
    /// (the default) the translator computes no point keys.
    fn uses_point_cache(&self) -> bool {
        false
    }

    /// Called before a point's samples, with `key`: bytes that identify everything the
    /// point's label set is built from (its resource/scope context and its attributes), and
    /// the `label_set_id` its samples will carry. Returning `true` says the sink already knows
    /// the labels of that key (from an earlier point, possibly an earlier batch), so the
    /// translator skips building them and `Sample::labels` is **not** up to date for this
    /// point's samples. The default returns `false`.
    fn cached_point(&mut self, key: &[u8], label_set_id: u64) -> bool {
        let _ = (key, label_set_id);
        false
    }
}
