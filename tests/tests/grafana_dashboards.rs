//! The Grafana dashboards of `configs/grafana/`: the committed JSON is what
//! `vla_e2e::grafana` renders, it is well formed (ids, grid, datasource, refresh, the seed's
//! panels), and every panel query returns data from a Prometheus that the pipeline filled
//! (simulator → `vla-sdk` → `vla-collector` → remote write, recording rules loaded).
//!
//! After changing a dashboard, rewrite the files with
//! `VLA_UPDATE_DASHBOARDS=1 cargo test -p vla-e2e --test grafana_dashboards`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use vla_e2e::grafana::{Dashboard, GRID_WIDTH, SCHEMA_VERSION, all_queries, dashboards};
use vla_e2e::{Prometheus, free_port};
use vla_sdk::sim::{Scenario, SimConfig, Simulation};

const DASHBOARDS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/grafana/dashboards");
const DATASOURCES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../configs/grafana/provisioning/datasources/prometheus.yml"
);
const PROVIDERS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../configs/grafana/provisioning/dashboards/vla.yml"
);

const WAIT: Duration = Duration::from_secs(20);

/// Each dashboard: uid, file, refresh, time range start, and the seed's panels (its wording,
/// then the title(s) of the panel(s) that show it).
type SeedPanels = &'static [(&'static str, &'static [&'static str])];
const SEED: &[(&str, &str, &str, &str, SeedPanels)] = &[
    (
        "vla-ops",
        "ops-dashboard.json",
        "10s",
        "now-1h",
        &[
            (
                "Request rate by model and robot type",
                &["Request rate by model and robot type"],
            ),
            (
                "Latency percentiles (p50, p95, p99)",
                &["Latency percentiles (p50, p95, p99)"],
            ),
            ("Error rate by status code", &["Error rate by status code"]),
            (
                "GPU utilization and temperature",
                &["GPU utilization", "GPU temperature"],
            ),
            ("Queue depth monitoring", &["Queue depth"]),
            ("Worker utilization", &["Worker utilization"]),
            ("Top errors by type", &["Top errors by type"]),
            ("Success rate", &["Success rate"]),
        ],
    ),
    (
        "vla-business",
        "business-dashboard.json",
        "5m",
        "now-30d",
        &[
            (
                "Daily inference counts by tier",
                &["Daily inference counts by tier"],
            ),
            ("Revenue distribution", &["Revenue distribution"]),
            ("Customer growth trends", &["Customer growth trends"]),
            ("Usage by model", &["Usage by model"]),
            ("Top 10 customers", &["Top 10 customers"]),
            ("Quota utilization", &["Quota utilization"]),
            (
                "Monthly Recurring Revenue (MRR)",
                &["Monthly Recurring Revenue (MRR)"],
            ),
            (
                "Average Revenue Per User (ARPU)",
                &["Average Revenue Per User (ARPU)"],
            ),
            ("Churn rate", &["Churn rate"]),
        ],
    ),
    (
        "vla-safety",
        "safety-dashboard.json",
        "1m",
        "now-7d",
        &[
            (
                "Safety incident counts by severity",
                &["Safety incident counts by severity"],
            ),
            (
                "Violation type distribution",
                &["Violation type distribution"],
            ),
            ("Safety score trends", &["Safety score trends"]),
            ("Top violating customers", &["Top violating customers"]),
            ("Rejection rate over time", &["Rejection rate over time"]),
            ("Safety check latency", &["Safety check latency"]),
            ("Critical safety alerts", &["Critical safety alerts"]),
            ("Compliance score", &["Compliance score"]),
            ("False positive rate", &["False positive rate"]),
        ],
    ),
    (
        "vla-customer",
        "customer-analytics-dashboard.json",
        "5m",
        "now-30d",
        &[
            (
                "Usage patterns by robot type",
                &["Usage patterns by robot type"],
            ),
            (
                "Instruction category distribution",
                &["Instruction category distribution"],
            ),
            ("Success rate by robot", &["Success rate by robot"]),
            ("Customer-specific latency", &["Customer-specific latency"]),
            ("Feedback rate", &["Feedback rate"]),
            ("Peak usage hours", &["Peak usage hours"]),
            ("Total requests", &["Total requests"]),
            ("Quota utilization", &["Quota utilization"]),
            ("Error rate", &["Error rate"]),
        ],
    ),
];

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn committed(d: &Dashboard) -> Value {
    let path = format!("{DASHBOARDS_DIR}/{}", d.file_name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

/// The provisioned datasource's uid (the one datasource, and the default).
fn provisioned_datasource_uid() -> String {
    let ds = yaml(DATASOURCES);
    let list = ds["datasources"].as_array().expect("datasources: a list");
    assert_eq!(list.len(), 1, "{DATASOURCES}: one datasource");
    assert_eq!(list[0]["type"], "prometheus", "{DATASOURCES}");
    assert_eq!(list[0]["url"], "http://prometheus:9090", "{DATASOURCES}");
    assert_eq!(list[0]["isDefault"], true, "{DATASOURCES}");
    list[0]["uid"].as_str().expect("datasource uid").to_owned()
}

#[test]
fn committed_dashboards_are_current() {
    let update = std::env::var("VLA_UPDATE_DASHBOARDS").is_ok_and(|v| v == "1");
    for d in dashboards() {
        let path = format!("{DASHBOARDS_DIR}/{}", d.file_name);
        let want = d.render();
        if update {
            std::fs::create_dir_all(DASHBOARDS_DIR).unwrap();
            std::fs::write(&path, &want).unwrap();
        }
        let got = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            got == want,
            "{path} is stale: run `VLA_UPDATE_DASHBOARDS=1 cargo test -p vla-e2e --test \
             grafana_dashboards` and commit the result"
        );
    }
    // No dashboard file that the definitions do not produce.
    let files: BTreeSet<String> = std::fs::read_dir(DASHBOARDS_DIR)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let defined: BTreeSet<String> = dashboards().into_iter().map(|d| d.file_name).collect();
    assert_eq!(files, defined);
}

#[test]
fn provisioning_points_grafana_at_prometheus_and_the_dashboards() {
    assert_eq!(provisioned_datasource_uid(), "prometheus");
    let providers = yaml(PROVIDERS);
    let list = providers["providers"]
        .as_array()
        .expect("providers: a list");
    assert_eq!(list.len(), 1, "{PROVIDERS}: one provider");
    assert_eq!(list[0]["type"], "file", "{PROVIDERS}");
    assert_eq!(
        list[0]["options"]["path"], "/var/lib/grafana/dashboards",
        "{PROVIDERS}"
    );
    assert_eq!(providers["apiVersion"], 1, "{PROVIDERS}");
}

/// Every `datasource` object anywhere under `v`, with its JSON path.
fn datasources<'a>(v: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                if k == "datasource" {
                    out.push((format!("{path}.{k}"), child));
                }
                datasources(child, format!("{path}.{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                datasources(child, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn overlap(a: &Value, b: &Value) -> bool {
    let r = |g: &Value| {
        let n = |k: &str| g[k].as_u64().unwrap();
        (n("x"), n("y"), n("x") + n("w"), n("y") + n("h"))
    };
    let (ax0, ay0, ax1, ay1) = r(a);
    let (bx0, by0, bx1, by1) = r(b);
    ax0 < bx1 && bx0 < ax1 && ay0 < by1 && by0 < ay1
}

#[test]
fn dashboards_are_well_formed_and_hold_the_seed_panels() {
    let uid = provisioned_datasource_uid();
    let defined = dashboards();
    assert_eq!(defined.len(), SEED.len());
    for (d, (want_uid, file, refresh, from, seed_panels)) in defined.iter().zip(SEED) {
        let j = committed(d);
        let name = format!("{file} ({want_uid})");
        assert_eq!(d.file_name, *file);
        assert_eq!(j["uid"], *want_uid, "{name}");
        assert_eq!(j["schemaVersion"], SCHEMA_VERSION, "{name}");
        assert_eq!(j["refresh"], *refresh, "{name}");
        assert_eq!(j["time"]["from"], *from, "{name}");
        assert_eq!(j["time"]["to"], "now", "{name}");

        let panels = j["panels"].as_array().expect("panels");
        let ids: BTreeSet<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
        assert_eq!(ids.len(), panels.len(), "{name}: panel ids are not unique");
        for (i, p) in panels.iter().enumerate() {
            let g = &p["gridPos"];
            let (x, w, h) = (g["x"].as_u64(), g["w"].as_u64(), g["h"].as_u64());
            let (x, w, h) = (x.unwrap(), w.unwrap(), h.unwrap());
            assert!(
                w >= 1 && h >= 1,
                "{name}: {}: empty gridPos {g}",
                p["title"]
            );
            assert!(
                x + w <= u64::from(GRID_WIDTH),
                "{name}: {} is wider than the grid: {g}",
                p["title"]
            );
            for q in &panels[i + 1..] {
                assert!(
                    !overlap(g, &q["gridPos"]),
                    "{name}: {} {g} overlaps {} {}",
                    p["title"],
                    q["title"],
                    q["gridPos"]
                );
            }
        }

        let mut all = Vec::new();
        datasources(&j, String::new(), &mut all);
        let non_rows = panels.iter().filter(|p| p["type"] != "row");
        assert_eq!(
            all.len(),
            non_rows
                .clone()
                .map(|p| 1 + p["targets"].as_array().unwrap().len())
                .sum::<usize>()
                + j["templating"]["list"].as_array().unwrap().len(),
            "{name}: every panel, target and variable names a datasource"
        );
        for (path, ds) in all {
            assert_eq!(ds["uid"], uid.as_str(), "{name}: {path}");
            assert_eq!(ds["type"], "prometheus", "{name}: {path}");
        }

        let mut titles = BTreeSet::new();
        for p in non_rows {
            let title = p["title"].as_str().unwrap();
            assert!(titles.insert(title), "{name}: two panels titled {title:?}");
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{name}: {title:?} has no query");
            for t in targets {
                assert!(!t["expr"].as_str().unwrap().is_empty(), "{name}: {title:?}");
            }
            let kind = p["type"].as_str().unwrap();
            assert!(
                [
                    "timeseries",
                    "stat",
                    "gauge",
                    "bargauge",
                    "table",
                    "piechart"
                ]
                .contains(&kind),
                "{name}: {title:?} is a {kind}"
            );
        }
        for (seed, want) in *seed_panels {
            for t in *want {
                assert!(
                    titles.contains(t),
                    "{name}: the seed's {seed:?} needs a panel {t:?}; panels: {titles:?}"
                );
            }
        }
    }
    let customer = &defined[3];
    assert_eq!(customer.variables.len(), 1);
    assert_eq!(customer.variables[0].name, "customer");
    assert_eq!(
        customer.variables[0].query,
        "label_values(vla_customer_requests_total, customer_id)"
    );
}

/// Metric names in a query: `vla_*` identifiers and recording-rule names (with `:`).
fn metric_names(expr: &str) -> Vec<&str> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("vla_") || t.contains(':'))
        .collect()
}

/// `label_values(metric, label)` (Grafana's variable query) as PromQL: one series per value.
fn variable_promql(query: &str) -> Option<(String, String)> {
    let args = query.strip_prefix("label_values(")?.strip_suffix(')')?;
    let (metric, label) = args.split_once(',')?;
    let label = label.trim().to_owned();
    Some((format!("count by ({label}) ({})", metric.trim()), label))
}

/// A panel query as Grafana would send it for a short time range.
fn substitute(expr: &str, customer: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__range", "1h")
        .replace("$__interval", "15s")
        .replace("$customer", customer)
}

/// Fills Prometheus through the real pipeline and runs every panel and variable query.
#[tokio::test(flavor = "multi_thread")]
async fn every_query_returns_data_from_the_pipeline() {
    let started = Instant::now();
    // The recording rules as committed, evaluated every second instead of every 15 s.
    let (rules, _) = vla_e2e::fast_rules("configs/prometheus/recording.yml", "1s").unwrap();
    let config = "global:\n  evaluation_interval: 1s\nrule_files:\n  - recording.yml\n";
    let prom = Prometheus::start_with(free_port(), config, &[("recording.yml", &rules)])
        .await
        .expect("prometheus");
    // The collector as shipped (configs/collector.yaml): its enrichment adds labels that
    // panels group by (safety_category, tier).
    let ports = vla_e2e::Ports::new();
    let config = vla_e2e::shipped_pipeline_config(&ports, &prom.write_url(), "100ms", |_| {})
        .expect("configs/collector.yaml");
    let collector = vla_e2e::Collector::start(&config, ports.telemetry)
        .await
        .expect("collector");
    let telemetry = vla_e2e::api_telemetry(ports.grpc, "api-dashboards").unwrap();

    // Every scenario, in two rounds with an export after each: counters get two samples, so
    // rate() and increase() have something to work on.
    let mut sims: Vec<Simulation> = Scenario::ALL
        .iter()
        .map(|s| {
            Simulation::new(SimConfig {
                scenario: *s,
                rate: 40.0,
                seed: 5,
                ..SimConfig::default()
            })
        })
        .collect();
    for _round in 0..2 {
        for sim in &mut sims {
            for _ in 0..5 {
                sim.step(&telemetry);
            }
        }
        let t = telemetry.clone();
        tokio::task::spawn_blocking(move || t.force_flush())
            .await
            .unwrap()
            .expect("the export reaches the collector");
    }
    let total: u64 = sims.iter().map(|s| s.totals().total_requests()).sum();
    prom.wait_for(
        &format!("sum(vla_inference_requests_total) == {total}"),
        1,
        WAIT,
    )
    .await
    .unwrap_or_else(|e| panic!("the second export did not arrive: {e}"));

    // The recording rules the dashboards use have been evaluated on both samples.
    let mut rules_used = BTreeSet::new();
    for (_, _, expr) in all_queries() {
        rules_used.extend(
            metric_names(&expr)
                .into_iter()
                .filter(|n| n.contains(':'))
                .map(str::to_owned),
        );
    }
    assert!(!rules_used.is_empty());
    for rule in &rules_used {
        prom.wait_for(rule, 1, WAIT)
            .await
            .unwrap_or_else(|e| panic!("recording rule {rule} produced nothing: {e}"));
    }

    // `$customer`: the busiest of the values the variable query offers.
    let variables: BTreeMap<(String, String), String> = all_queries()
        .into_iter()
        .filter(|(_, title, _)| title.starts_with('$'))
        .map(|(uid, title, q)| ((uid, title), q))
        .collect();
    let mut failures = Vec::new();
    let mut offered = BTreeSet::new();
    for ((uid, name), query) in &variables {
        let (promql, label) = variable_promql(query)
            .unwrap_or_else(|| panic!("{uid}: variable {name}: unknown query {query}"));
        let got = prom.query(&promql).await.unwrap();
        if got.is_empty() {
            failures.push(format!(
                "{uid}: variable {name}: {query} (as {promql}) offers nothing"
            ));
        }
        offered.extend(
            got.into_iter()
                .filter_map(|s| s.labels.get(&label).cloned()),
        );
    }
    let busiest = prom
        .query("topk(1, sum by (customer_id) (vla_customer_requests_total))")
        .await
        .unwrap();
    let customer = busiest[0].labels["customer_id"].clone();
    assert!(
        offered.contains(&customer),
        "{customer} not among {offered:?}"
    );

    // Every panel query returns a number; ratios stay between 0 and 1.
    let units: BTreeMap<(String, String), Option<String>> = dashboards()
        .iter()
        .flat_map(|d| {
            d.panels()
                .map(|p| ((d.uid.clone(), p.title.clone()), p.unit.clone()))
        })
        .collect();
    // Each target's legend, whose `{{label}}`s the results must carry.
    let legends: BTreeMap<(String, String, String), String> = dashboards()
        .iter()
        .flat_map(|d| {
            d.panels().flat_map(move |p| {
                p.targets.iter().map(move |t| {
                    (
                        (d.uid.clone(), p.title.clone(), t.expr.clone()),
                        t.legend.clone(),
                    )
                })
            })
        })
        .collect();
    let mut ran = 0;
    for (uid, title, expr) in all_queries() {
        let Some(unit) = units.get(&(uid.clone(), title.clone())) else {
            continue; // a variable, run above
        };
        ran += 1;
        let q = substitute(&expr, &customer);
        let what = format!("dashboard {uid}, panel {title:?}, query `{q}`");
        let got = match prom.query(&q).await {
            Ok(got) => got,
            Err(e) => {
                failures.push(format!("{what}: {e}"));
                continue;
            }
        };
        let values: Vec<f64> = got
            .iter()
            .map(|s| s.value)
            .filter(|v| !v.is_nan())
            .collect();
        let legend = legends
            .get(&(uid.clone(), title.clone(), expr.clone()))
            .map(String::as_str)
            .unwrap_or("");
        let unlabelled: Vec<&str> = legend
            .split("{{")
            .skip(1)
            .filter_map(|rest| rest.split_once("}}").map(|(label, _)| label.trim()))
            .filter(|label| {
                !got.iter()
                    .any(|s| s.labels.get(*label).is_some_and(|v| !v.is_empty()))
            })
            .collect();
        if values.is_empty() {
            failures.push(format!("{what}: no sample (or only NaN): {got:?}"));
        } else if !unlabelled.is_empty() {
            failures.push(format!(
                "{what}: no sample carries the legend's {unlabelled:?}: {got:?}"
            ));
        } else if unit.as_deref() == Some("percentunit")
            && values.iter().any(|v| !(0.0..=1.0).contains(v))
        {
            failures.push(format!("{what}: a ratio outside 0..1: {values:?}"));
        }
    }
    assert_eq!(ran + variables.len(), all_queries().len());
    assert!(
        failures.is_empty(),
        "{} queries failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    drop(collector);
    eprintln!(
        "ran {} queries in {:?}",
        ran + variables.len(),
        started.elapsed()
    );
}
