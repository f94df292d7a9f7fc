//! The Prometheus side of the monitoring stack, checked with the real tools and against the
//! SDK's catalogue:
//! - `promtool check config` on `prometheus.yml` (and the rule files it names), `promtool check
//!   rules` and `promtool test rules` (every alert fires just over its threshold
//!   after its `for:`, and stays quiet just under it or when not held long enough);
//! - the thirteen alerts are the seed's, with severities, `for:`, team and service labels,
//!   annotations and runbook sections that exist;
//! - every PromQL expression of the alerts, the recording rules and the dashboards names only
//!   metrics and labels that the catalogue (or a recording rule built from it) produces, plus
//!   the labels that the enrichment processors of `configs/collector.yaml` add to them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use promql_parser::label::Labels;
use promql_parser::parser::{self, Expr, LabelModifier};
use serde_json::Value;
use vla_e2e::repo_path;
use vla_sdk::catalogue::{CATALOGUE, Instrument, by_prometheus_name};

fn yaml(path: &str) -> Value {
    vla_e2e::repo_yaml(path).unwrap_or_else(|e| panic!("{e}"))
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo_path(""))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "promtool not runnable ({e}); run scripts/test or `apt-get install -y prometheus`"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// Every rule of a rule file.
fn rules(path: &str) -> Vec<Value> {
    yaml(path)["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .collect()
}

#[test]
fn promtool_accepts_prometheus_yml_and_its_rule_files() {
    let out = promtool(&["check", "config", "configs/prometheus/prometheus.yml"]);
    assert!(out.contains("SUCCESS: 2 rule files found"), "{out}");
}

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() {
    let out = promtool(&[
        "check",
        "rules",
        "configs/prometheus/recording.yml",
        "configs/prometheus/alerts.yml",
    ]);
    assert!(out.contains("SUCCESS: 13 rules found"), "{out}");
    let out = promtool(&["test", "rules", "configs/prometheus/tests/alerts_test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

/// The seed's alerts: name, severity, and the `for:` it states.
const SEED_ALERTS: &[(&str, &str, Option<&str>)] = &[
    ("HighErrorRate", "critical", Some("5m")),
    ("GPUOverheating", "critical", Some("2m")),
    ("SafetyIncidentSurge", "critical", None),
    ("CriticalSafetyIncident", "critical", None),
    ("ServiceDown", "critical", None),
    ("ModelInferenceFailure", "critical", None),
    ("HighLatency", "warning", Some("5m")),
    ("GPUMemoryHigh", "warning", Some("5m")),
    ("HighQueueDepth", "warning", Some("5m")),
    ("HighValidationFailureRate", "warning", None),
    ("QuotaExceeded", "warning", None),
    ("WorkerOverloaded", "warning", None),
    ("RateLimitHitRate", "warning", None),
];

#[test]
fn the_thirteen_alerts_are_the_seeds_with_labels_annotations_and_runbooks() {
    let alerts = rules("configs/prometheus/alerts.yml");
    let names: Vec<&str> = alerts
        .iter()
        .map(|a| a["alert"].as_str().unwrap())
        .collect();
    let mut want: Vec<&str> = SEED_ALERTS.iter().map(|a| a.0).collect();
    let mut got = names.clone();
    want.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, want);
    let runbooks = std::fs::read_to_string(repo_path("docs/runbooks.md")).unwrap();
    let anchors: BTreeSet<String> = runbooks
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    for (name, severity, for_) in SEED_ALERTS {
        let a = alerts.iter().find(|a| a["alert"] == *name).unwrap();
        assert_eq!(a["labels"]["severity"], *severity, "{name}");
        assert_eq!(a["labels"]["service"], "vla-api", "{name}");
        let team = if name.starts_with("Safety") || name.starts_with("CriticalSafety") {
            "safety"
        } else {
            "sre"
        };
        assert_eq!(a["labels"]["team"], team, "{name}");
        if let Some(f) = for_ {
            assert_eq!(a["for"], *f, "{name}: the seed's duration");
        }
        let ann = &a["annotations"];
        assert!(
            ann["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{name}"
        );
        assert!(
            ann["description"].as_str().unwrap().contains("$value")
                || ann["description"].as_str().unwrap().contains("$labels"),
            "{name}: the description shows the value"
        );
        let url = ann["runbook_url"].as_str().unwrap();
        let anchor = url.strip_prefix("docs/runbooks.md#").unwrap();
        assert_eq!(anchor, name.to_ascii_lowercase(), "{name}");
        assert!(
            anchors.contains(anchor),
            "{name}: no `## {name}` in docs/runbooks.md"
        );
    }
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_unit_test() {
    let tests = yaml("configs/prometheus/tests/alerts_test.yml");
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for t in tests["tests"].as_array().unwrap() {
        for case in t["alert_rule_test"].as_array().unwrap() {
            let name = case["alertname"].as_str().unwrap().to_owned();
            let empty = case["exp_alerts"].as_array().is_none_or(Vec::is_empty);
            if empty {
                quiet.insert(name);
            } else {
                firing.insert(name);
            }
        }
    }
    let all: BTreeSet<String> = SEED_ALERTS.iter().map(|a| a.0.to_owned()).collect();
    assert_eq!(firing, all, "alerts with a firing case");
    assert_eq!(quiet, all, "alerts with a quiet case");
}

// ---- The catalogue check ----

/// Labels every series of the API carries besides its own (resource, scope, remote write).
const RESOURCE_LABELS: &[&str] = &[
    "job",
    "instance",
    "otel_scope_name",
    "otel_scope_version",
    "cluster",
];

/// What the check knows: catalogue families, recording rules as they are defined, and the
/// labels the shipped collector config adds to a metric (by OTLP name).
struct Known {
    recorded: BTreeMap<String, BTreeSet<String>>,
    collector: vla_collector::config::Config,
}

impl Known {
    fn new() -> Self {
        let collector = vla_collector::config::Source::file(&repo_path("configs/collector.yaml"))
            .unwrap()
            .validate()
            .unwrap_or_else(|d| panic!("{d}"));
        Self {
            recorded: BTreeMap::new(),
            collector,
        }
    }

    /// The labels the processors of `configs/collector.yaml` may add to points of a metric
    /// whose own labels are `labels`.
    fn added_by_collector(&self, otel_name: &str, labels: &BTreeSet<String>) -> BTreeSet<String> {
        use vla_processors::{customer_tier, safety_labels};
        let mut added = BTreeSet::new();
        for p in self.collector.processors.values() {
            if let Some(c) = p.get::<safety_labels::Config>()
                && c.considers(otel_name)
            {
                added.extend(c.added_keys());
            }
            if let Some(c) = p.get::<customer_tier::Config>()
                && labels.contains(&c.customer_id_key)
            {
                added.insert(c.tier_key.clone());
                added.extend(c.attributes.values().cloned());
            }
        }
        added
    }

    /// The labels a series name carries, or why it is unknown.
    fn labels_of_series(&self, name: &str) -> Result<BTreeSet<String>, String> {
        if let Some(labels) = self.recorded.get(name) {
            return Ok(labels.clone());
        }
        let spec = by_prometheus_name(name)
            .ok_or_else(|| format!("metric {name:?} is not in the catalogue"))?;
        let mut labels: BTreeSet<String> = spec.label_keys().map(str::to_owned).collect();
        let added = self.added_by_collector(spec.otel_name, &labels);
        labels.extend(added);
        labels.extend(RESOURCE_LABELS.iter().map(|l| (*l).to_owned()));
        if spec.instrument == Instrument::Histogram && name.ends_with("_bucket") {
            labels.insert("le".into());
        }
        Ok(labels)
    }

    /// Checks `expr` and returns the labels its result carries.
    fn check(&self, expr: &Expr) -> Result<BTreeSet<String>, String> {
        let need = |labels: &Labels, have: &BTreeSet<String>, what: &str| {
            for l in &labels.labels {
                if !have.contains(l) {
                    return Err(format!("{what} label {l:?} is not on {have:?}"));
                }
            }
            Ok(())
        };
        match expr {
            Expr::VectorSelector(vs) => {
                let name = vs
                    .name
                    .clone()
                    .or_else(|| {
                        vs.matchers
                            .matchers
                            .iter()
                            .find(|m| m.name == "__name__")
                            .map(|m| m.value.clone())
                    })
                    .ok_or("a selector without a metric name")?;
                let labels = self.labels_of_series(&name)?;
                for m in vs
                    .matchers
                    .matchers
                    .iter()
                    .chain(vs.matchers.or_matchers.iter().flatten())
                {
                    if m.name != "__name__" && !labels.contains(&m.name) {
                        return Err(format!("{name} has no label {:?}", m.name));
                    }
                }
                Ok(labels)
            }
            Expr::MatrixSelector(ms) => self.check(&Expr::VectorSelector(ms.vs.clone())),
            Expr::Aggregate(a) => {
                let inner = self.check(&a.expr)?;
                if let Some(p) = &a.param {
                    self.check(p)?;
                }
                match &a.modifier {
                    Some(LabelModifier::Include(l)) => {
                        need(l, &inner, "by")?;
                        Ok(l.labels.iter().cloned().collect())
                    }
                    Some(LabelModifier::Exclude(l)) => {
                        need(l, &inner, "without")?;
                        Ok(inner
                            .into_iter()
                            .filter(|x| !l.labels.contains(x))
                            .collect())
                    }
                    None if matches!(a.op.to_string().as_str(), "topk" | "bottomk" | "limitk") => {
                        Ok(inner)
                    }
                    None => Ok(BTreeSet::new()),
                }
            }
            Expr::Binary(b) => {
                let lhs = self.check(&b.lhs)?;
                let rhs = self.check(&b.rhs)?;
                if let Some(m) = &b.modifier {
                    if let Some(LabelModifier::Include(on)) = &m.matching {
                        need(on, &lhs, "on")?;
                        need(on, &rhs, "on")?;
                    }
                    if let Some(extra) = m.card.labels() {
                        need(extra, &rhs, "group_left/right")?;
                    }
                }
                Ok(lhs.union(&rhs).cloned().collect())
            }
            Expr::Paren(p) => self.check(&p.expr),
            Expr::Unary(u) => self.check(&u.expr),
            Expr::Subquery(s) => self.check(&s.expr),
            Expr::Call(c) => {
                let mut labels = BTreeSet::new();
                let mut first = true;
                for arg in &c.args.args {
                    let l = self.check(arg)?;
                    if first {
                        labels = l;
                        first = false;
                    }
                }
                match c.func.name {
                    "histogram_quantile" => {
                        let vector = c
                            .args
                            .args
                            .get(1)
                            .ok_or("histogram_quantile without a vector")?;
                        let mut l = self.check(vector)?;
                        if !l.remove("le") {
                            return Err("histogram_quantile over series without `le`".into());
                        }
                        Ok(l)
                    }
                    "absent" | "absent_over_time" => Ok(absent_labels(&c.args.args[0])),
                    "label_replace" => {
                        if let Some(Expr::StringLiteral(dst)) = c.args.args.get(1).map(|b| &**b) {
                            labels.insert(dst.val.clone());
                        }
                        Ok(labels)
                    }
                    "vector" | "time" | "scalar" => Ok(BTreeSet::new()),
                    _ => Ok(labels),
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Ok(BTreeSet::new()),
            Expr::Extension(_) => Err("unexpected extension".into()),
        }
    }
}

/// `absent()` keeps the equality matchers' labels.
fn absent_labels(arg: &Expr) -> BTreeSet<String> {
    let vs = match arg {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return BTreeSet::new(),
    };
    vs.matchers
        .matchers
        .iter()
        .filter(|m| m.name != "__name__" && m.op.to_string() == "=")
        .map(|m| m.name.clone())
        .collect()
}

/// Grafana's variables in a dashboard query, replaced with what Prometheus would see.
fn expand_grafana(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1d")
        .replace("${customer}", "cust-0001")
        .replace("$customer", "cust-0001")
}

/// Parses and checks one expression; `label_values(metric, label)` (a Grafana variable query)
/// is checked as the selector plus the label.
fn check_expr(known: &Known, expr: &str) -> Result<BTreeSet<String>, String> {
    let expr = expand_grafana(expr);
    if let Some(args) = expr
        .trim()
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
    {
        let (selector, label) = args
            .rsplit_once(',')
            .ok_or("label_values needs two arguments")?;
        let labels = known.check(&parser::parse(selector.trim())?)?;
        let label = label.trim();
        return if labels.contains(label) {
            Ok(labels)
        } else {
            Err(format!("label_values: no label {label:?}"))
        };
    }
    let parsed = parser::parse(&expr).map_err(|e| format!("does not parse: {e}"))?;
    known.check(&parsed)
}

/// Every expression of the monitoring stack, with where it comes from; recording rules are
/// learnt in file order, so later expressions may use them.
fn check_stack(known: &mut Known) -> Vec<String> {
    let mut problems = Vec::new();
    for rule in rules("configs/prometheus/recording.yml") {
        let name = rule["record"].as_str().unwrap();
        match check_expr(known, rule["expr"].as_str().unwrap()) {
            Ok(labels) => {
                known.recorded.insert(name.to_owned(), labels);
            }
            Err(e) => problems.push(format!("recording.yml {name}: {e}")),
        }
    }
    for rule in rules("configs/prometheus/alerts.yml") {
        let name = rule["alert"].as_str().unwrap();
        if let Err(e) = check_expr(known, rule["expr"].as_str().unwrap()) {
            problems.push(format!("alerts.yml {name}: {e}"));
        }
    }
    for (dashboard, panel, expr) in vla_e2e::grafana::all_queries() {
        if let Err(e) = check_expr(known, &expr) {
            problems.push(format!(
                "dashboard {dashboard}, panel {panel:?}: {e}: {expr}"
            ));
        }
    }
    problems
}

#[test]
fn every_expression_names_only_catalogue_metrics_and_labels() {
    let mut known = Known::new();
    let problems = check_stack(&mut known);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // Each recording rule follows level:metric:operations.
    for name in known.recorded.keys() {
        assert_eq!(name.split(':').count(), 3, "{name}");
    }
    assert!(!CATALOGUE.is_empty());
}

#[test]
fn the_check_catches_a_broken_name_or_label() {
    let mut known = Known::new();
    assert!(check_stack(&mut known).is_empty());
    let cases = [
        (
            "rate(vla_inference_request_total[5m])",
            "metric \"vla_inference_request_total\" is not in the catalogue",
        ),
        (
            "sum by (customer_id) (rate(vla_inference_requests_total[5m]))",
            "by label \"customer_id\" is not on",
        ),
        (
            "vla_gpu_temperature_celsius{gpu=\"0\"}",
            "vla_gpu_temperature_celsius has no label \"gpu\"",
        ),
        (
            "histogram_quantile(0.99, sum by (job) (rate(vla_inference_duration_seconds_bucket[5m])))",
            "histogram_quantile over series without `le`",
        ),
        (
            "job:vla_inference_errors:ratio_rate5m{model=\"pi0\"}",
            "job:vla_inference_errors:ratio_rate5m has no label \"model\"",
        ),
        (
            "sum(rate(vla_inference_requests_total[5m]) ",
            "does not parse",
        ),
        (
            "sum by (safety_category) (rate(vla_inference_requests_total[5m]))",
            "by label \"safety_category\" is not on",
        ),
        (
            "sum by (customer_plan) (rate(vla_inference_requests_total[5m]))",
            "by label \"customer_plan\" is not on",
        ),
        (
            "label_values(vla_customer_requests_total, customer)",
            "label_values: no label \"customer\"",
        ),
    ];
    for (expr, want) in cases {
        let err = check_expr(&known, expr).expect_err(expr);
        assert!(err.contains(want), "{expr}: {err}");
    }
    // And what is right passes.
    for ok in [
        "sum by (job, model) (rate(vla_inference_requests_total{status=\"error\"}[5m]))",
        "vla_quota_used / on (customer_id, tier, job, instance) vla_quota_limit",
        "absent_over_time(vla_service_up{component=\"api\"}[2m])",
        "topk(10, sum by (customer_id) (increase(vla_customer_requests_total[$__range])))",
        // Added by configs/collector.yaml's safety_labels and customer_tier.
        "sum by (safety_category, requires_review) (vla_safety_incidents_total)",
        "sum by (tier, customer_plan) (vla_customer_requests_total)",
    ] {
        check_expr(&known, ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
}
