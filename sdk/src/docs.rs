//! `docs/metrics.md`, generated from the catalogue (a test fails when the file is stale).

use std::fmt::Write as _;

use crate::catalogue::{CATALOGUE, LabelValues, MetricSpec, Section};
use crate::labels::OPEN_VALUE_RULE;
use crate::telemetry::{CUSTOMER_OVERFLOW, DEFAULT_MAX_CUSTOMERS, MAX_SERIES_LIMIT};

fn label_cell(spec: &MetricSpec) -> String {
    if spec.labels.is_empty() {
        return "none".to_owned();
    }
    spec.labels
        .iter()
        .map(|l| {
            let values = match l.values {
                LabelValues::Closed(v) => v.join(" \\| "),
                LabelValues::Open => "open".to_owned(),
                LabelValues::Customer => "customer id, capped".to_owned(),
                LabelValues::GpuIndex => "GPU index".to_owned(),
            };
            format!("`{}` ({values})", l.key)
        })
        .collect::<Vec<_>>()
        .join("<br>")
}

/// The Markdown reference of every catalogue metric, as committed in `docs/metrics.md`.
pub fn catalogue_markdown() -> String {
    let mut out = String::new();
    out.push_str(
        "# Metrics reference\n\n\
         Generated from `vla_sdk::catalogue()` (`sdk/src/catalogue.rs`): edit the catalogue, \
         then run `VLA_UPDATE_DOCS=1 cargo test -p vla-sdk --lib docs` to rewrite this file. \
         A test fails when it is stale.\n\n\
         Names are what Prometheus stores after the collector's OpenTelemetry-to-Prometheus \
         translation. Every series also carries the resource labels `job` \
         (`service.namespace/service.name`) and `instance` (`service.instance.id`), \
         `otel_scope_name`, and whatever `external_labels` the remote-write exporter adds. \
         Histograms are stored as `_bucket{le}`, `_sum` and `_count`.\n\n",
    );
    let _ = writeln!(
        out,
        "Label values: closed sets list every value; *open* values follow the rule \
         \"{OPEN_VALUE_RULE}\"; customer ids follow the same rule and are capped per process \
         (`max_customers`, default {DEFAULT_MAX_CUSTOMERS}; later ids are written as \
         `{CUSTOMER_OVERFLOW}`). The SDK keeps at most {MAX_SERIES_LIMIT} series per metric; past that, \
         OpenTelemetry folds new label sets into one series labelled \
         `otel_metric_overflow=\"true\"`. Counters whose labels are all closed sets start at 0 \
         on every combination, so `increase()` sees their first event.\n"
    );
    for section in [
        Section::Core,
        Section::Business,
        Section::System,
        Section::Dashboards,
    ] {
        let _ = writeln!(out, "## {}\n", section.title());
        if section == Section::Dashboards {
            out.push_str(
                "Not in the seed's Metrics Reference: each one is here because a dashboard panel \
                 or an alert needs it.\n\n",
            );
        }
        out.push_str(
            "| Prometheus name | type | OTel instrument (unit) | labels | meaning | used by |\n\
             |---|---|---|---|---|---|\n",
        );
        for m in CATALOGUE.iter().filter(|m| m.section == section) {
            let unit = if m.unit.is_empty() {
                String::new()
            } else {
                format!(" (`{}`)", m.unit)
            };
            let mut meaning = m.description.to_owned();
            if !m.buckets.is_empty() {
                let b: Vec<String> = m.buckets.iter().map(f64::to_string).collect();
                let _ = write!(meaning, " Buckets: {}.", b.join(", "));
            }
            let _ = writeln!(
                out,
                "| `{}` | {} | `{}`{unit} | {} | {meaning} | {} |",
                m.prometheus_name,
                m.instrument.prometheus_type(),
                m.otel_name,
                label_cell(m),
                m.used_by,
            );
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_reference_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md");
        let want = catalogue_markdown();
        if std::env::var_os("VLA_UPDATE_DOCS").is_some() {
            std::fs::write(path, &want).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == want,
            "docs/metrics.md is stale: run `VLA_UPDATE_DOCS=1 cargo test -p vla-sdk --lib docs` \
             and commit the result"
        );
    }

    #[test]
    fn every_metric_has_a_row() {
        let md = catalogue_markdown();
        for m in CATALOGUE {
            let row = format!(
                "| `{}` | {} |",
                m.prometheus_name,
                m.instrument.prometheus_type()
            );
            assert_eq!(md.matches(&row).count(), 1, "{}", m.prometheus_name);
        }
    }
}
