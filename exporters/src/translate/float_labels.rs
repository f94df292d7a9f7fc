//! Float label values (`le` bucket bounds, `quantile`s) formatted as Prometheus writes them,
//! kept between points so that repeating bounds are not formatted again.

/// Float label values (`le`, `quantile`) formatted once and reused while they repeat.
#[derive(Debug, Default)]
pub(super) struct FloatLabels {
    values: Vec<f64>,
    text: String,
    spans: Vec<(usize, usize)>,
}

impl FloatLabels {
    /// Formats `values` unless they are the ones already formatted (compared bit for bit).
    pub(super) fn update(&mut self, values: impl ExactSizeIterator<Item = f64> + Clone) {
        let same = values.len() == self.values.len()
            && values
                .clone()
                .zip(&self.values)
                .all(|(a, b)| a.to_bits() == b.to_bits());
        if same {
            return;
        }
        self.values.clear();
        self.text.clear();
        self.spans.clear();
        for v in values {
            self.values.push(v);
            let start = self.text.len();
            // As Prometheus writes `le` / `quantile`: `+Inf`, shortest round-trip decimal.
            vla_pipeline::self_metrics::exposition::push_value(&mut self.text, v);
            self.spans.push((start, self.text.len()));
        }
    }

    /// The text of the `i`-th value; empty past the end.
    pub(super) fn get(&self, i: usize) -> &str {
        self.spans
            .get(i)
            .and_then(|&(s, e)| self.text.get(s..e))
            .unwrap_or_default()
    }
}
