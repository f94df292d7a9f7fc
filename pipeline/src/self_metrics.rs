//! The collector's own metrics: lock-free counters and gauges, rendered in Prometheus text.
//!
//! Components register what they count once, at build time, and keep the handle; the hot path
//! is one atomic add. Rendering (a scrape of the telemetry endpoint) takes the registry lock.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use parking_lot::Mutex;

/// A monotonic counter.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A gauge that can go up and down.
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// Adds `d` (may be negative).
    pub fn add(&self, d: i64) {
        self.0.fetch_add(d, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

type GaugeFn = Box<dyn Fn() -> i64 + Send + Sync>;

enum Value {
    Counter(Counter),
    Gauge(Gauge),
    GaugeFn(GaugeFn),
}

struct Series {
    name: &'static str,
    help: &'static str,
    labels: String,
    value: Value,
}

/// The registry of self-metrics; cheap to clone.
#[derive(Clone, Default)]
pub struct SelfMetrics {
    series: Arc<Mutex<Vec<Series>>>,
}

impl std::fmt::Debug for SelfMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfMetrics").finish_non_exhaustive()
    }
}

impl SelfMetrics {
    /// A new, empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or finds) the counter `name{labels}`.
    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
    ) -> Counter {
        let labels = render_labels(labels);
        let mut series = self.series.lock();
        if let Some(Series {
            value: Value::Counter(c),
            ..
        }) = series.iter().find(|s| s.name == name && s.labels == labels)
        {
            return c.clone();
        }
        let c = Counter::default();
        series.push(Series {
            name,
            help,
            labels,
            value: Value::Counter(c.clone()),
        });
        c
    }

    /// Registers (or finds) the gauge `name{labels}`.
    pub fn gauge(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Gauge {
        let labels = render_labels(labels);
        let mut series = self.series.lock();
        if let Some(Series {
            value: Value::Gauge(g),
            ..
        }) = series.iter().find(|s| s.name == name && s.labels == labels)
        {
            return g.clone();
        }
        let g = Gauge::default();
        series.push(Series {
            name,
            help,
            labels,
            value: Value::Gauge(g.clone()),
        });
        g
    }

    /// Registers a gauge read by calling `f` at render time (queue lengths, uptime).
    pub fn gauge_fn(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        f: impl Fn() -> i64 + Send + Sync + 'static,
    ) {
        let labels = render_labels(labels);
        let mut series = self.series.lock();
        series.retain(|s| !(s.name == name && s.labels == labels));
        series.push(Series {
            name,
            help,
            labels,
            value: Value::GaugeFn(Box::new(f)),
        });
    }

    /// Registers the length and capacity of a bounded channel as two gauges, each given as
    /// `(name, help)`. The gauges hold only a weak sender, so they never keep it open.
    pub fn channel_gauges<T: Send + 'static>(
        &self,
        length: (&'static str, &'static str),
        capacity: (&'static str, &'static str),
        labels: &[(&str, &str)],
        tx: &tokio::sync::mpsc::Sender<T>,
    ) {
        let weak = tx.downgrade();
        self.gauge_fn(length.0, length.1, labels, move || {
            weak.upgrade()
                .map(|s| (s.max_capacity() - s.capacity()) as i64)
                .unwrap_or(0)
        });
        let cap = tx.max_capacity() as i64;
        self.gauge_fn(capacity.0, capacity.1, labels, move || cap);
    }

    /// Reads one registered value (for tests and health checks); `None` if not registered.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<i64> {
        let labels = render_labels(labels);
        let series = self.series.lock();
        series
            .iter()
            .find(|s| s.name == name && s.labels == labels)
            .map(|s| read(&s.value))
    }

    /// Renders every series in the Prometheus text exposition format (0.0.4).
    pub fn render(&self) -> String {
        let series = self.series.lock();
        let mut order: Vec<usize> = (0..series.len()).collect();
        order.sort_by(|&a, &b| {
            (series[a].name, &series[a].labels).cmp(&(series[b].name, &series[b].labels))
        });
        let mut out = String::with_capacity(series.len() * 96);
        let mut last = "";
        for i in order {
            let s = &series[i];
            if s.name != last {
                let kind = match s.value {
                    Value::Counter(_) => "counter",
                    _ => "gauge",
                };
                let _ = writeln!(out, "# HELP {} {}", s.name, s.help);
                let _ = writeln!(out, "# TYPE {} {}", s.name, kind);
                last = s.name;
            }
            let _ = writeln!(out, "{}{} {}", s.name, s.labels, read(&s.value));
        }
        out
    }
}

fn read(v: &Value) -> i64 {
    match v {
        Value::Counter(c) => i64::try_from(c.get()).unwrap_or(i64::MAX),
        Value::Gauge(g) => g.get(),
        Value::GaugeFn(f) => f(),
    }
}

fn render_labels(labels: &[(&str, &str)]) -> String {
    let mut sorted: Vec<_> = labels.to_vec();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = String::new();
    exposition::push_labels(&mut out, sorted);
    out
}

/// Writing the Prometheus text exposition format (0.0.4), shared with the scrape exporter.
pub mod exposition {
    use std::fmt::Write as _;

    /// Appends a label value with `\`, `"` and newlines escaped.
    pub fn push_label_value(out: &mut String, value: &str) {
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
    }

    /// Appends a `# HELP` text with `\` and newlines escaped.
    pub fn push_help(out: &mut String, help: &str) {
        for c in help.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
    }

    /// Appends `{a="1",b="2"}`, or nothing for no labels; labels are written in the order
    /// given.
    pub fn push_labels<'a>(out: &mut String, labels: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let mut first = true;
        for (name, value) in labels {
            out.push(if first { '{' } else { ',' });
            first = false;
            out.push_str(name);
            out.push_str("=\"");
            push_label_value(out, value);
            out.push('"');
        }
        if !first {
            out.push('}');
        }
    }

    /// Appends a sample value: `NaN`, `+Inf`, `-Inf` or the shortest exact decimal.
    pub fn push_value(out: &mut String, v: f64) {
        if v.is_nan() {
            out.push_str("NaN");
        } else if v.is_infinite() {
            out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = write!(out, "{v}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_sorted_with_escaped_labels() {
        let t = SelfMetrics::new();
        let c = t.counter("b_total", "Bs.", &[("x", "a\"b"), ("a", "1")]);
        c.add(3);
        t.counter("b_total", "Bs.", &[("a", "1"), ("x", "a\"b")])
            .inc();
        t.gauge("a_len", "Length.", &[]).set(-2);
        t.gauge_fn("c_cap", "Cap.", &[("q", "p")], || 7);
        let text = t.render();
        assert_eq!(
            text,
            "# HELP a_len Length.\n# TYPE a_len gauge\na_len -2\n\
             # HELP b_total Bs.\n# TYPE b_total counter\nb_total{a=\"1\",x=\"a\\\"b\"} 4\n\
             # HELP c_cap Cap.\n# TYPE c_cap gauge\nc_cap{q=\"p\"} 7\n"
        );
        assert_eq!(t.value("b_total", &[("x", "a\"b"), ("a", "1")]), Some(4));
        assert_eq!(t.value("nope", &[]), None);
    }
}
