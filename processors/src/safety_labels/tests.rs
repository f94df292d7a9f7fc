#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use vla_pipeline::config::ConfigProblem;
use vla_pipeline::fixtures;
use vla_pipeline::opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use vla_pipeline::opentelemetry_proto::tonic::metrics::v1::{Metric, metric};

use super::*;

fn parse(yaml: &str) -> Config {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

/// Parses and validates `yaml`, failing on any problem.
fn valid(yaml: &str) -> Config {
    let cfg = parse(yaml);
    let problems = cfg.validate("p");
    assert!(problems.is_empty(), "{}", ConfigProblem::join(&problems));
    cfg
}

/// A counter `name` with one point per attribute set.
fn sum(name: &str, points: &[&[(&str, &str)]]) -> Metric {
    let points: Vec<(f64, &[(&str, &str)])> = points.iter().map(|p| (1.0, *p)).collect();
    fixtures::cumulative_sum(name, "", true, &points)
}

fn text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        other => format!("{other:?}"),
    }
}

/// Runs `processors` in order over `metrics`; returns each point as `metric: k=v k=v` with its
/// attributes sorted.
fn run_all(processors: &mut [SafetyLabels], metrics: Vec<Metric>) -> Vec<String> {
    let mut batch = MetricBatch::new("otlp".into(), vec![fixtures::resource("svc", metrics)]);
    for p in processors.iter_mut() {
        p.process(&mut batch);
    }
    let mut out = Vec::new();
    batch.for_each_point_mut(|ctx, attrs| {
        let mut kv: Vec<String> = attrs
            .iter()
            .map(|kv| format!("{}={}", kv.key, text(kv.value.as_ref())))
            .collect();
        kv.sort();
        out.push(format!("{}: {}", ctx.metric_name, kv.join(" ")));
    });
    out
}

fn run(cfg: &Config, metrics: Vec<Metric>) -> Vec<String> {
    run_all(&mut [SafetyLabels::new(cfg)], metrics)
}

/// One rule matching `attributes` (a YAML flow mapping) that sets `hit=yes`.
fn attribute_rule(attributes: &str) -> Config {
    valid(&format!(
        "rules:\n  - name: r\n    match: {{ attributes: {attributes} }}\n    set: {{ hit: \"yes\" }}\n"
    ))
}

#[test]
fn attribute_conditions_table() {
    type Case = (
        &'static str,
        &'static str,
        &'static [(&'static str, &'static str)],
        bool,
    );
    const VT: &str = "violation_type";
    let cases: &[Case] = &[
        (
            "equality",
            "{ violation_type: collision_risk }",
            &[(VT, "collision_risk")],
            true,
        ),
        (
            "equality, other value",
            "{ violation_type: collision_risk }",
            &[(VT, "force_limit")],
            false,
        ),
        (
            "equality is case-sensitive",
            "{ violation_type: collision_risk }",
            &[(VT, "Collision_Risk")],
            false,
        ),
        (
            "equality, attribute missing",
            "{ violation_type: collision_risk }",
            &[("severity", "low")],
            false,
        ),
        (
            "equality with a YAML number",
            "{ gpu: 3 }",
            &[("gpu", "3")],
            true,
        ),
        (
            "in",
            "{ violation_type: { in: [force_limit, speed_limit] } }",
            &[(VT, "speed_limit")],
            true,
        ),
        (
            "in, not listed",
            "{ violation_type: { in: [force_limit, speed_limit] } }",
            &[(VT, "collision_risk")],
            false,
        ),
        (
            "in, attribute missing",
            "{ violation_type: { in: [force_limit] } }",
            &[],
            false,
        ),
        (
            "not_in, listed",
            "{ severity: { not_in: [low, medium] } }",
            &[("severity", "low")],
            false,
        ),
        (
            "not_in, not listed",
            "{ severity: { not_in: [low, medium] } }",
            &[("severity", "high")],
            true,
        ),
        (
            "not_in, attribute missing qualifies",
            "{ severity: { not_in: [low] } }",
            &[],
            true,
        ),
        (
            "not_in with exists, missing",
            "{ severity: { not_in: [low], exists: true } }",
            &[],
            false,
        ),
        (
            "regex is a full match",
            "{ severity: { regex: crit } }",
            &[("severity", "critical")],
            false,
        ),
        (
            "regex full match",
            "{ severity: { regex: \"crit.*\" } }",
            &[("severity", "critical")],
            true,
        ),
        (
            "regex alternation anchored",
            "{ severity: { regex: \"(?i)crit(ical)?|sev0\" } }",
            &[("severity", "SEV0")],
            true,
        ),
        (
            "regex alternation, suffix",
            "{ severity: { regex: \"(?i)crit(ical)?|sev0\" } }",
            &[("severity", "sev01")],
            false,
        ),
        (
            "regex alternation, prefix",
            "{ severity: { regex: \"(?i)crit(ical)?|sev0\" } }",
            &[("severity", "xcrit")],
            false,
        ),
        (
            "regex, attribute missing",
            "{ severity: { regex: \".*\" } }",
            &[],
            false,
        ),
        (
            "regex and in together",
            "{ severity: { regex: \"[a-z]+\", in: [High, high] } }",
            &[("severity", "High")],
            false,
        ),
        (
            "exists true, present",
            "{ customer_id: { exists: true } }",
            &[("customer_id", "c1")],
            true,
        ),
        (
            "exists true, missing",
            "{ customer_id: { exists: true } }",
            &[],
            false,
        ),
        (
            "exists false, present",
            "{ customer_id: { exists: false } }",
            &[("customer_id", "c1")],
            false,
        ),
        (
            "exists false, missing",
            "{ customer_id: { exists: false } }",
            &[],
            true,
        ),
        (
            "all conditions hold",
            "{ violation_type: force_limit, severity: high }",
            &[(VT, "force_limit"), ("severity", "high")],
            true,
        ),
        (
            "one condition fails",
            "{ violation_type: force_limit, severity: high }",
            &[(VT, "force_limit"), ("severity", "low")],
            false,
        ),
        ("no conditions", "{}", &[("a", "b")], true),
    ];
    for (name, attributes, attrs, hit) in cases {
        let cfg = attribute_rule(attributes);
        let out = run(&cfg, vec![sum("vla.safety.incidents", &[attrs])]);
        assert_eq!(out.len(), 1, "{name}");
        assert_eq!(out[0].contains("hit=yes"), *hit, "{name}: {}", out[0]);
    }
}

#[test]
fn non_string_attributes_compare_by_their_label_text() {
    let typed = |key: &str, value: any_value::Value| KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    };
    type Case = (&'static str, &'static str, any_value::Value, bool);
    let cases: Vec<Case> = vec![
        (
            "int equality",
            "{ v: 42 }",
            any_value::Value::IntValue(42),
            true,
        ),
        (
            "int in",
            "{ v: { in: [\"1\", \"42\"] } }",
            any_value::Value::IntValue(42),
            true,
        ),
        (
            "int regex",
            "{ v: { regex: \"4.\" } }",
            any_value::Value::IntValue(42),
            true,
        ),
        (
            "bool equality",
            "{ v: true }",
            any_value::Value::BoolValue(true),
            true,
        ),
        (
            "bool other",
            "{ v: true }",
            any_value::Value::BoolValue(false),
            false,
        ),
        (
            "double",
            "{ v: \"0.5\" }",
            any_value::Value::DoubleValue(0.5),
            true,
        ),
        (
            "bytes in no set",
            "{ v: { in: [\"\"] } }",
            any_value::Value::BytesValue(vec![]),
            false,
        ),
        (
            "bytes not_in",
            "{ v: { not_in: [x] } }",
            any_value::Value::BytesValue(vec![1]),
            true,
        ),
        (
            "bytes exist",
            "{ v: { exists: true } }",
            any_value::Value::BytesValue(vec![1]),
            true,
        ),
    ];
    for (name, attributes, value, hit) in cases {
        let cfg = attribute_rule(attributes);
        let mut m = sum("m", &[&[]]);
        if let Some(metric::Data::Sum(s)) = &mut m.data {
            s.data_points[0].attributes.push(typed("v", value));
        }
        let out = run(&cfg, vec![m]);
        assert_eq!(out[0].contains("hit=yes"), hit, "{name}: {}", out[0]);
    }
}

#[test]
fn metric_patterns_table() {
    let cases: &[(&str, &str, bool)] = &[
        ("vla.safety.incidents", "vla.safety.incidents", true),
        ("vla.safety.incidents", "vla.safety.incidents.extra", false),
        ("vla.safety.*", "vla.safety.incidents", true),
        ("vla.safety.*", "vla.safety.", true),
        ("vla.safety.*", "vla.customer.safety_incidents", false),
        ("*.safety_incidents", "vla.customer.safety_incidents", true),
        ("vla.*.incidents", "vla.safety.incidents", true),
        ("vla.*.incidents", "vla.safety.rejections", false),
        ("*safety*", "vla.customer.safety_incidents", true),
        ("ab*ba", "aba", false),
        ("a*b*a", "aba", true),
        ("a*b*a", "aa", false),
        ("*", "anything", true),
        (
            "{ regex: \"vla\\\\.safety\\\\.(incidents|rejections)\" }",
            "vla.safety.rejections",
            true,
        ),
        (
            "{ regex: \"vla\\\\.safety\\\\.(incidents|rejections)\" }",
            "vla.safety.reviews",
            false,
        ),
        (
            "{ regex: \"vla\\\\.safety\\\\.(incidents|rejections)\" }",
            "x.vla.safety.incidents",
            false,
        ),
    ];
    for (pattern, name, hit) in cases {
        let pattern = if pattern.starts_with('{') {
            pattern.to_string()
        } else {
            format!("\"{pattern}\"")
        };
        let cfg = valid(&format!(
            "rules:\n  - name: r\n    match: {{ metric: {pattern} }}\n    set: {{ hit: \"yes\" }}\n"
        ));
        let out = run(&cfg, vec![sum(name, &[&[]])]);
        assert_eq!(out[0].contains("hit=yes"), *hit, "{pattern} vs {name}");
        // The same pattern as the processor's `metrics` scope, with a catch-all default.
        let scoped = valid(&format!(
            "metrics: [{pattern}]\nrules:\n  - {{ name: never, match: {{ attributes: {{ x: y }} }}, set: {{ a: b }} }}\ndefault: {{ hit: \"yes\" }}\n"
        ));
        let out = run(&scoped, vec![sum(name, &[&[]])]);
        assert_eq!(
            out[0].contains("hit=yes"),
            *hit,
            "metrics: [{pattern}] vs {name}"
        );
    }
}

const MODES: &str = r#"
rules:
  - name: physical
    match: { attributes: { violation_type: collision_risk } }
    set: { safety_category: physical_harm, requires_review: "true" }
  - name: critical
    match: { attributes: { severity: { regex: "(?i)crit" } } }
    set: { severity: critical, requires_review: urgent }
  - name: sees-the-point-as-it-arrived
    match: { attributes: { severity: critical } }
    set: { escalated: "yes" }
default: { safety_category: other }
"#;

#[test]
fn first_versus_all_table() {
    let point: &[(&str, &str)] = &[("violation_type", "collision_risk"), ("severity", "CRIT")];
    let cases: &[(&str, &str)] = &[
        (
            "first",
            "m: requires_review=true safety_category=physical_harm severity=CRIT violation_type=collision_risk",
        ),
        (
            "all",
            "m: requires_review=urgent safety_category=physical_harm severity=critical violation_type=collision_risk",
        ),
    ];
    for (mode, want) in cases {
        let cfg = valid(&format!("mode: {mode}\n{MODES}"));
        assert_eq!(run(&cfg, vec![sum("m", &[point])]), vec![*want], "{mode}");
    }
}

#[test]
fn default_only_when_no_rule_matched() {
    for mode in ["first", "all"] {
        let cfg = valid(&format!(
            "mode: {mode}\nmetrics: [\"vla.safety.*\"]\n{MODES}"
        ));
        let out = run(
            &cfg,
            vec![
                sum(
                    "vla.safety.incidents",
                    &[
                        &[("violation_type", "collision_risk")],
                        &[("violation_type", "force_limit")],
                        &[("severity", "critical")],
                    ],
                ),
                sum("vla.customer.safety_incidents", &[&[("severity", "low")]]),
            ],
        );
        assert_eq!(
            out,
            vec![
                "vla.safety.incidents: requires_review=true safety_category=physical_harm violation_type=collision_risk",
                "vla.safety.incidents: safety_category=other violation_type=force_limit",
                "vla.safety.incidents: escalated=yes severity=critical",
                "vla.customer.safety_incidents: severity=low",
            ],
            "{mode}"
        );
    }
}

#[test]
fn on_existing_table() {
    let point: &[(&str, &str)] = &[("severity", "CRIT"), ("safety_category", "legacy")];
    let rules = r#"
rules:
  - name: a
    match: { attributes: { severity: { exists: true } } }
    set: { severity: critical, safety_category: physical_harm, compliance_domain: first }
  - name: b
    match: { attributes: { severity: { exists: true } } }
    set: { compliance_domain: second }
"#;
    let cases: &[(&str, &str, &str)] = &[
        (
            "first",
            "overwrite",
            "m: compliance_domain=first safety_category=physical_harm severity=critical",
        ),
        (
            "first",
            "keep",
            "m: compliance_domain=first safety_category=legacy severity=CRIT",
        ),
        (
            "all",
            "overwrite",
            "m: compliance_domain=second safety_category=physical_harm severity=critical",
        ),
        // Keep protects the point's own labels, not those an earlier rule set.
        (
            "all",
            "keep",
            "m: compliance_domain=second safety_category=legacy severity=CRIT",
        ),
    ];
    for (mode, on_existing, want) in cases {
        let cfg = valid(&format!(
            "mode: {mode}\non_existing: {on_existing}\n{rules}"
        ));
        assert_eq!(
            run(&cfg, vec![sum("m", &[point])]),
            vec![*want],
            "{mode} {on_existing}"
        );
    }
    assert_eq!(valid(rules).on_existing, OnExisting::Overwrite);
}

#[test]
fn points_outside_metrics_are_untouched() {
    let cfg = valid(
        r#"
metrics: ["vla.safety.incidents", "vla.customer.*"]
rules:
  - name: everything-considered
    set: { considered: "yes" }
  - name: unreachable-but-valid-in-all-mode
    match: { metric: vla.inference.requests }
    set: { never: "yes" }
mode: all
"#,
    );
    let out = run(
        &cfg,
        vec![
            sum("vla.safety.incidents", &[&[("severity", "low")], &[]]),
            sum(
                "vla.safety.rejections",
                &[&[("violation_type", "force_limit")]],
            ),
            sum("vla.inference.requests", &[&[]]),
            sum("vla.customer.safety_incidents", &[&[]]),
            // The same metric again after others: the per-metric decision is reused.
            sum("vla.safety.rejections", &[&[]]),
        ],
    );
    assert_eq!(
        out,
        vec![
            "vla.safety.incidents: considered=yes severity=low",
            "vla.safety.incidents: considered=yes",
            "vla.safety.rejections: violation_type=force_limit",
            "vla.inference.requests: ",
            "vla.customer.safety_incidents: considered=yes",
            "vla.safety.rejections: ",
        ]
    );
}

#[test]
fn many_metric_names_stay_correct_past_the_cache_bound() {
    let cfg =
        valid("rules:\n  - { name: r, match: { metric: \"m.*7\" }, set: { seven: \"yes\" } }\n");
    let mut p = SafetyLabels::new(&cfg);
    let names: Vec<String> = (0..MAX_CACHED_METRICS + 100)
        .map(|i| format!("m.{i}"))
        .collect();
    let metrics = names.iter().map(|n| sum(n, &[&[]])).collect();
    let out = run_all(std::slice::from_mut(&mut p), metrics);
    let hits = out.iter().filter(|l| l.contains("seven=yes")).count();
    let want = names.iter().filter(|n| n.ends_with('7')).count();
    assert_eq!(hits, want);
    assert!(p.cache.plans.len() <= MAX_CACHED_METRICS);
    assert_eq!(p.cache.plans.len(), 100);
}

/// The ```yaml block of this module's documentation.
fn doc_example() -> String {
    let source = include_str!("mod.rs");
    let mut lines = source
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .skip_while(|l| *l != "```yaml")
        .skip(1);
    let block: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
    block.join("\n")
}

#[derive(serde::Deserialize)]
struct Processors {
    processors: std::collections::BTreeMap<String, Config>,
}

#[test]
fn doc_example_classifies_the_simulator_violation_types() {
    let doc: Processors = serde_saphyr::from_str(&doc_example()).unwrap();
    for (id, cfg) in &doc.processors {
        let problems = cfg.validate(&format!("processors.{id}"));
        assert!(problems.is_empty(), "{}", ConfigProblem::join(&problems));
    }
    let category = &doc.processors["safety_labels/category"];
    let severity = &doc.processors["safety_labels/severity"];
    assert_eq!(
        category.added_keys(),
        BTreeSet::from(
            ["compliance_domain", "requires_review", "safety_category"].map(String::from)
        )
    );
    let mut processors = [SafetyLabels::new(category), SafetyLabels::new(severity)];
    // (violation_type, severity) → (safety_category, severity, requires_review)
    let cases: &[(&str, &str, &str, &str, &str)] = &[
        ("collision_risk", "high", "physical_harm", "high", "true"),
        ("force_limit", "CRIT", "physical_harm", "critical", "true"),
        ("speed_limit", "low", "physical_harm", "low", "true"),
        (
            "human_proximity",
            "Sev0",
            "physical_harm",
            "critical",
            "true",
        ),
        (
            "workspace_boundary",
            "medium",
            "workspace",
            "medium",
            "false",
        ),
        (
            "workspace_boundary",
            "whatever",
            "workspace",
            "medium",
            "true",
        ),
        ("restricted_object", "P1", "misuse", "high", "true"),
        (
            "harmful_instruction",
            "critical",
            "misuse",
            "critical",
            "true",
        ),
        ("new_kind", "low", "other", "low", "true"),
    ];
    for (vt, sev, category, severity, review) in cases {
        let point: &[(&str, &str)] = &[("violation_type", vt), ("severity", sev)];
        let out = run_all(&mut processors, vec![sum("vla.safety.incidents", &[point])]);
        let s = &out[0];
        for want in [
            format!("safety_category={category}"),
            format!("severity={severity}"),
            format!("requires_review={review}"),
        ] {
            assert!(
                s.split(' ').any(|kv| kv == want),
                "{vt}/{sev}: want {want} in {s}"
            );
        }
    }
    // Metrics without a violation type get no category; a missing severity is not invented.
    let out = run_all(
        &mut processors,
        vec![
            sum("vla.safety.score", &[&[]]),
            sum(
                "vla.safety.incidents",
                &[&[("violation_type", "speed_limit")]],
            ),
        ],
    );
    assert_eq!(
        out,
        vec![
            "vla.safety.score: ",
            "vla.safety.incidents: compliance_domain=iso_10218 requires_review=true safety_category=physical_harm violation_type=speed_limit",
        ]
    );
    // Severity normalisation also reaches the per-customer counter, which has no category.
    let out = run_all(
        &mut processors,
        vec![sum(
            "vla.customer.safety_incidents",
            &[&[("customer_id", "c1"), ("severity", "CRITICAL")]],
        )],
    );
    assert_eq!(
        out,
        vec!["vla.customer.safety_incidents: customer_id=c1 severity=critical"]
    );
}

#[test]
fn brief_example_parses_with_defaults_and_typed_values() {
    let cfg = valid(
        r#"
mode: first            # first matching rule wins
metrics: ["vla.safety.*", "vla.customer.safety_incidents"]
on_existing: overwrite
rules:
  - name: physical-harm
    match:
      metric: "vla.safety.*"
      attributes:
        violation_type: { in: [collision_risk, force_limit, speed_limit, human_proximity] }
    set: { safety_category: physical_harm, compliance_domain: iso_10218, requires_review: true }
  - name: critical-sev
    match: { attributes: { severity: { regex: "(?i)crit(ical)?|sev0" } } }
    set: { severity: critical, weight: 3, ratio: 0.5 }
default: { safety_category: other, requires_review: false }
"#,
    );
    assert_eq!(cfg.mode, Mode::First);
    assert_eq!(cfg.rules[0].set["requires_review"], "true");
    assert_eq!(cfg.rules[1].set["weight"], "3");
    assert_eq!(cfg.rules[1].set["ratio"], "0.5");
    assert_eq!(cfg.default.as_ref().unwrap()["requires_review"], "false");
    assert_eq!(
        cfg.rules[0].r#match.attributes["violation_type"],
        AttrMatcher::Conditions(AttrConditions {
            one_of: Some(
                [
                    "collision_risk",
                    "force_limit",
                    "speed_limit",
                    "human_proximity"
                ]
                .map(String::from)
                .to_vec()
            ),
            ..Default::default()
        })
    );
    assert_eq!(
        cfg.metrics,
        Some(vec![
            MetricPattern::Glob("vla.safety.*".into()),
            MetricPattern::Glob("vla.customer.safety_incidents".into())
        ])
    );
    assert_eq!(
        cfg.added_keys().into_iter().collect::<Vec<_>>(),
        [
            "compliance_domain",
            "ratio",
            "requires_review",
            "safety_category",
            "severity",
            "weight"
        ]
    );
    let out = run(
        &cfg,
        vec![
            sum(
                "vla.safety.incidents",
                &[&[("violation_type", "force_limit"), ("severity", "sev0")]],
            ),
            sum(
                "vla.customer.safety_incidents",
                &[&[("severity", "sev0")], &[("severity", "low")]],
            ),
        ],
    );
    assert_eq!(
        out,
        vec![
            "vla.safety.incidents: compliance_domain=iso_10218 requires_review=true safety_category=physical_harm severity=sev0 violation_type=force_limit",
            "vla.customer.safety_incidents: ratio=0.5 severity=critical weight=3",
            "vla.customer.safety_incidents: requires_review=false safety_category=other severity=low",
        ]
    );
    // Through JSON values, as the collector decodes components, the result is the same.
    let json: serde_json::Value = serde_saphyr::from_str(
        "rules: [{ name: r, match: { metric: { regex: \"a.*\" }, attributes: { v: 1 } }, set: { k: 2 } }]",
    )
    .unwrap();
    let cfg: Config = serde_json::from_value(json).unwrap();
    assert_eq!(
        cfg.rules[0].r#match.metric,
        Some(MetricPattern::Regex("a.*".into()))
    );
    assert_eq!(
        cfg.rules[0].r#match.attributes["v"],
        AttrMatcher::Equals("1".into())
    );
    assert_eq!(cfg.rules[0].set["k"], "2");
}

#[test]
fn parse_errors_name_the_field() {
    let cases: &[(&str, &str)] = &[
        (
            "rules: [{ name: r, match: { attributes: { s: { regx: a } } }, set: { k: v } }]",
            "unknown field `regx`",
        ),
        (
            "rules: [{ name: r, match: { metric: { glob: a } }, set: { k: v } }]",
            "unknown field `glob`",
        ),
        ("mode: sometimes\nrules: []", "unknown variant `sometimes`"),
        ("on_existing: merge\nrules: []", "unknown variant `merge`"),
        (
            "rules: [{ name: r, set: { k: [a] } }]",
            "a string, number or boolean",
        ),
        ("rules: [{ set: { k: v } }]", "missing field `name`"),
        ("rule: []", "unknown field `rule`"),
    ];
    for (yaml, want) in cases {
        let err = serde_saphyr::from_str::<Config>(yaml)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{yaml}: {err}");
    }
}

#[test]
fn validate_reports_every_problem_with_its_path() {
    let cfg = parse(
        r#"
metrics: ["vla.safety.*", "vla safety", { regex: "(" }, ""]
rules:
  - name: a
    match:
      metric: "vla.[x]"
      attributes:
        severity: { regex: "(" }
        violation_type: { in: [] }
        "": x
        kind: {}
        gone: { exists: false, in: [x] }
        fine: { not_in: [] }
    set: {}
  - name: a
    match: { attributes: { x: y } }
    set: { "1bad": x, __reserved: y, ok: "", "safety.category": z, _fine: v }
  - name: ""
    match: { metric: { regex: "a)" } }
    set: { fine: x }
default: { "bad-key": x }
"#,
    );
    let got: Vec<String> = cfg
        .validate("processors.safety_labels")
        .iter()
        .map(ToString::to_string)
        .collect();
    let p = "processors.safety_labels";
    let want = [
        format!(
            "{p}.metrics[1]: invalid metric pattern \"vla safety\": ' ' cannot appear in a metric name; only * is a wildcard (write {{ regex: \"...\" }} for more)"
        ),
        format!("{p}.metrics[2].regex: invalid regex \"(\": unclosed group"),
        format!(
            "{p}.metrics[3]: must not be empty; write a metric name or a glob such as vla.inference.*"
        ),
        format!(
            "{p}.rules[0].match.metric: invalid metric pattern \"vla.[x]\": '[' cannot appear in a metric name; only * is a wildcard (write {{ regex: \"...\" }} for more)"
        ),
        format!("{p}.rules[0].match.attributes: an attribute key must not be empty"),
        format!("{p}.rules[0].match.attributes.fine.not_in: must list at least one value"),
        format!(
            "{p}.rules[0].match.attributes.gone.exists: exists: false never holds together with in or regex, which need the attribute"
        ),
        format!(
            "{p}.rules[0].match.attributes.kind: needs at least one of in, not_in, regex, exists (or a plain value for equality)"
        ),
        format!(
            "{p}.rules[0].match.attributes.severity.regex: invalid regex \"(\": unclosed group"
        ),
        format!("{p}.rules[0].match.attributes.violation_type.in: must list at least one value"),
        format!("{p}.rules[0].set: must set at least one label"),
        format!("{p}.rules[1].name: duplicate rule name \"a\" (already used by rules[0])"),
        format!(
            "{p}.rules[1].set.1bad: invalid label name \"1bad\": must start with a letter or _ ([a-zA-Z_][a-zA-Z0-9_]*)"
        ),
        format!(
            "{p}.rules[1].set.__reserved: invalid label name \"__reserved\": names starting with __ are reserved by Prometheus"
        ),
        format!(
            "{p}.rules[1].set.ok: must not be empty (an empty Prometheus label is the same as no label)"
        ),
        format!(
            "{p}.rules[1].set: [\"safety.category\"]: invalid label name \"safety.category\": may hold only letters, digits and _ ([a-zA-Z_][a-zA-Z0-9_]*)"
        ),
        format!("{p}.rules[2].name: must not be empty"),
        format!("{p}.rules[2].match.metric.regex: invalid regex \"a)\": unopened group"),
        format!(
            "{p}.default.bad-key: invalid label name \"bad-key\": may hold only letters, digits and _ ([a-zA-Z_][a-zA-Z0-9_]*)"
        ),
    ];
    assert_eq!(got, want);
}

#[test]
fn validate_refuses_empty_lists_and_rules_that_never_apply() {
    let msgs = |yaml: &str| -> Vec<String> {
        parse(yaml)
            .validate("p")
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    assert_eq!(
        msgs("metrics: []\nrules: []\ndefault: {}"),
        [
            "p.metrics: must list at least one metric name or pattern; omit it to consider every metric",
            "p.rules: must list at least one rule",
            "p.default: must set at least one label; omit it for no default",
        ]
    );
    let catch_all = r#"
rules:
  - { name: specific, match: { attributes: { a: b } }, set: { k: v } }
  - { name: everything, set: { k: w } }
  - { name: later, match: { attributes: { a: c } }, set: { k: x } }
default: { k: d }
"#;
    assert_eq!(
        msgs(catch_all),
        [
            "p.rules[2]: never applies: rules[1] (\"everything\") has no conditions and wins in mode first",
            "p.default: never applies: rules[1] (\"everything\") has no conditions, so every point matches a rule",
        ]
    );
    // In mode all a later rule still applies, but the default still never does.
    assert_eq!(
        msgs(&format!("mode: all\n{catch_all}")),
        [
            "p.default: never applies: rules[1] (\"everything\") has no conditions, so every point matches a rule",
        ]
    );
}

#[test]
fn new_skips_what_does_not_compile_instead_of_panicking() {
    // Built in code, bypassing validate.
    let rule = |name: &str, regex: &str, key: &str| Rule {
        name: name.into(),
        r#match: Match {
            metric: None,
            attributes: [(
                "severity".to_owned(),
                AttrMatcher::Conditions(AttrConditions {
                    regex: Some(regex.into()),
                    ..Default::default()
                }),
            )]
            .into(),
        },
        set: [(key.to_owned(), "yes".to_owned())].into(),
    };
    let cfg = Config {
        mode: Mode::All,
        metrics: Some(vec![
            MetricPattern::Glob("bad glob".into()),
            MetricPattern::Regex("(".into()),
            MetricPattern::Glob("m".into()),
        ]),
        on_existing: OnExisting::Overwrite,
        rules: vec![
            rule("broken", "(", "broken"),
            rule("fine", "crit.*", "fine"),
        ],
        default: None,
    };
    assert_eq!(cfg.validate("p").len(), 3);
    let out = run(
        &cfg,
        vec![
            sum("m", &[&[("severity", "critical")]]),
            sum("bad glob", &[&[("severity", "critical")]]),
        ],
    );
    assert_eq!(
        out,
        vec![
            "m: fine=yes severity=critical",
            "bad glob: severity=critical"
        ]
    );
}

#[test]
fn label_names_the_exporters_would_change_or_override_are_refused() {
    let cases: &[(&str, Option<&str>)] = &[
        ("safety_category", None),
        ("_private", None),
        ("a_b_", None),
        ("job", Some("set by the exporters from the resource")),
        ("instance", Some("set by the exporters from the resource")),
        ("otel_scope_name", Some("instrumentation scope")),
        ("otel_scope_version", Some("instrumentation scope")),
        ("le", Some("histogram buckets and summary quantiles")),
        ("quantile", Some("histogram buckets and summary quantiles")),
        ("__name__", Some("reserved by Prometheus")),
        ("__x", Some("reserved by Prometheus")),
        ("safety__category", Some("collapse a run of _")),
        ("a___", Some("collapse a run of _")),
        ("Job", None),
        ("jobs", None),
    ];
    for (key, want) in cases {
        for yaml in [
            format!("rules: [{{ name: r, set: {{ {key}: x }} }}]"),
            format!(
                "rules: [{{ name: r, match: {{ attributes: {{ a: b }} }}, set: {{ k: v }} }}]\ndefault: {{ {key}: x }}"
            ),
        ] {
            let problems = parse(&yaml).validate("p");
            match want {
                None => assert!(problems.is_empty(), "{key}: {problems:?}"),
                Some(want) => {
                    assert_eq!(problems.len(), 1, "{key}: {problems:?}");
                    assert!(
                        problems[0].path.ends_with(&format!(".{key}")),
                        "{problems:?}"
                    );
                    assert!(problems[0].message.contains(want), "{key}: {problems:?}");
                }
            }
        }
    }
    // Two keys that the exporters would merge (`a_b` and `a__b`) cannot both pass.
    let problems = parse("rules: [{ name: r, set: { a_b: x, a__b: y } }]").validate("p");
    assert_eq!(
        problems.iter().map(|p| &*p.path).collect::<Vec<_>>(),
        ["p.rules[0].set.a__b"]
    );
}

#[test]
fn keys_with_dots_are_reported_on_their_mapping() {
    let cfg = parse(
        r#"
rules:
  - name: r
    match:
      attributes:
        vla.severity: { regex: "(", in: [] }
        "a[0]": { exists: false, in: [x] }
        "weird]": {}
        plain: { regex: "(" }
    set: { k: v }
default: { vla.category: x }
"#,
    );
    let got: Vec<String> = cfg.validate("p").iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "p.rules[0].match.attributes: [\"a[0]\"].exists: exists: false never holds together with in or regex, which need the attribute",
            "p.rules[0].match.attributes.plain.regex: invalid regex \"(\": unclosed group",
            "p.rules[0].match.attributes: [\"vla.severity\"].in: must list at least one value",
            "p.rules[0].match.attributes: [\"vla.severity\"].regex: invalid regex \"(\": unclosed group",
            "p.rules[0].match.attributes: [\"weird]\"]: needs at least one of in, not_in, regex, exists (or a plain value for equality)",
            "p.default: [\"vla.category\"]: invalid label name \"vla.category\": may hold only letters, digits and _ ([a-zA-Z_][a-zA-Z0-9_]*)",
        ]
    );
    // The collector splits problem paths at every `.` (`YamlPath::join_dotted`), so no path
    // may hold part of a key: it would be looked for under a `vla` key, on the wrong line.
    for problem in cfg.validate("p") {
        assert!(
            [
                "p.rules[0].match.attributes",
                "p.rules[0].match.attributes.plain.regex",
                "p.default"
            ]
            .contains(&problem.path.as_str()),
            "{problem}"
        );
    }
}

#[test]
fn considered_points_are_counted_by_result() {
    let t = SelfMetrics::new();
    let count = |id: &str, result: &str| {
        t.value(
            "vla_collector_processor_safety_labels_data_points_total",
            &[("processor", id), ("result", result)],
        )
    };
    let with_default = valid(
        r#"
metrics: ["vla.safety.*"]
rules:
  - { name: a, match: { attributes: { v: a } }, set: { hit: a } }
  - { name: b, match: { metric: vla.safety.b, attributes: { v: b } }, set: { hit: b } }
default: { hit: none }
"#,
    );
    let without_default = Config {
        default: None,
        ..with_default.clone()
    };
    let metrics = || {
        vec![
            // matched, default, matched
            sum(
                "vla.safety.a",
                &[&[("v", "a")], &[("v", "b")], &[("v", "a")]],
            ),
            // matched (rule b), default
            sum("vla.safety.b", &[&[("v", "b")], &[]]),
            // not considered: not counted at all
            sum("other", &[&[("v", "a")], &[("v", "b")]]),
        ]
    };
    let id_d: ComponentId = "safety_labels/d".into();
    let id_n: ComponentId = "safety_labels/n".into();
    let mut d = SafetyLabels::new(&with_default).with_telemetry(&id_d, &t);
    let mut n = SafetyLabels::new(&without_default).with_telemetry(&id_n, &t);
    for _ in 0..2 {
        let mut batch = MetricBatch::new("otlp".into(), vec![fixtures::resource("svc", metrics())]);
        d.process(&mut batch);
        let mut batch = MetricBatch::new("otlp".into(), vec![fixtures::resource("svc", metrics())]);
        n.process(&mut batch);
    }
    assert_eq!(count("safety_labels/d", "matched"), Some(6));
    assert_eq!(count("safety_labels/d", "default"), Some(4));
    assert_eq!(count("safety_labels/d", "unmatched"), Some(0));
    assert_eq!(count("safety_labels/n", "matched"), Some(6));
    assert_eq!(count("safety_labels/n", "default"), Some(0));
    assert_eq!(count("safety_labels/n", "unmatched"), Some(4));

    // A metric that no rule can apply to, without a default, is counted as unmatched too.
    let id: ComponentId = "safety_labels/m".into();
    let mut m = SafetyLabels::new(&valid(
        "rules: [{ name: r, match: { metric: x }, set: { k: v } }]",
    ))
    .with_telemetry(&id, &t);
    let mut batch = MetricBatch::new(
        "otlp".into(),
        vec![fixtures::resource("svc", vec![sum("y", &[&[], &[]])])],
    );
    m.process(&mut batch);
    assert_eq!(count("safety_labels/m", "unmatched"), Some(2));
    assert_eq!(count("safety_labels/m", "matched"), Some(0));
}
