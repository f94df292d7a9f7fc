#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use vla_pipeline::fixtures;
use vla_pipeline::{MetricBatch, attr_str};

use super::*;

fn config(json: serde_json::Value) -> Config {
    serde_json::from_value(json).unwrap()
}

fn inline_config(extra: serde_json::Value) -> Config {
    let mut json = serde_json::json!({"source": {"inline": {
        "cust-0001": "enterprise",
        "cust-0002": {"tier": "pro", "plan": "annual", "region": "eu-west"},
    }}});
    if let (Some(obj), Some(extra)) = (json.as_object_mut(), extra.as_object()) {
        obj.extend(extra.clone());
    }
    config(json)
}

fn build(cfg: &Config) -> (CustomerTier, SelfMetrics) {
    let telemetry = SelfMetrics::new();
    let tier = CustomerTier::new("customer_tier".into(), cfg, &telemetry).unwrap();
    (tier, telemetry)
}

fn value(t: &SelfMetrics, name: &str, extra: &[(&str, &str)]) -> i64 {
    let mut labels = vec![("processor", "customer_tier")];
    labels.extend_from_slice(extra);
    t.value(name, &labels)
        .unwrap_or_else(|| panic!("{name} {extra:?} not registered"))
}

/// Every point's attributes as `k=v`, sorted, per point in batch order.
fn point_attrs(batch: &mut MetricBatch) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    batch.for_each_point_mut(|_, attrs| out.push(text(attrs)));
    out
}

fn text(attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> Vec<String> {
    let mut v: Vec<String> = attrs
        .iter()
        .map(|kv| format!("{}={}", kv.key, attr_str(attrs, &kv.key).unwrap_or("?")))
        .collect();
    v.sort();
    v
}

fn one_gauge(points: &[(f64, &[(&str, &str)])]) -> MetricBatch {
    MetricBatch::new(
        "otlp".into(),
        vec![fixtures::resource(
            "vla-api",
            vec![fixtures::gauge("vla.quota.used", "", points)],
        )],
    )
}

#[test]
fn inline_lookup_default_tier_and_counts() {
    let (tier, t) = build(&inline_config(serde_json::json!({})));
    let mut batch = one_gauge(&[
        (1.0, &[("customer_id", "cust-0001")]),
        (2.0, &[("customer_id", "cust-0002"), ("model", "rt-2")]),
        (3.0, &[("customer_id", "cust-9999")]),
        (4.0, &[("model", "rt-2")]),
    ]);
    tier.processor().process(&mut batch);
    assert_eq!(
        point_attrs(&mut batch),
        vec![
            vec!["customer_id=cust-0001", "tier=enterprise"],
            vec!["customer_id=cust-0002", "model=rt-2", "tier=pro"],
            vec!["customer_id=cust-9999", "tier=unknown"],
            vec!["model=rt-2"],
        ]
    );
    let points = "vla_collector_processor_customer_tier_data_points_total";
    assert_eq!(value(&t, points, &[("result", "enriched")]), 2);
    assert_eq!(value(&t, points, &[("result", "default")]), 1);
    assert_eq!(value(&t, "vla_collector_lookup_entries", &[]), 2);
    assert_eq!(
        value(
            &t,
            "vla_collector_lookup_refreshes_total",
            &[("result", "ok")]
        ),
        1
    );
    let report = tier.status().report();
    assert_eq!(
        (report.source.as_str(), report.status, report.entries),
        ("inline", "ok", 2)
    );
    assert!(tier.refresher(CancellationToken::new()).is_none());
}

#[test]
fn keep_versus_overwrite() {
    let points: &[(f64, &[(&str, &str)])] = &[
        (1.0, &[("customer_id", "cust-0002"), ("tier", "trial")]),
        (2.0, &[("customer_id", "cust-9999"), ("tier", "trial")]),
    ];
    let extra = serde_json::json!({"attributes": {"plan": "customer_plan"}});
    let (keep, _) = build(&inline_config(extra.clone()));
    let mut batch = one_gauge(points);
    keep.processor().process(&mut batch);
    assert_eq!(
        point_attrs(&mut batch),
        vec![
            vec![
                "customer_id=cust-0002",
                "customer_plan=annual",
                "tier=trial"
            ],
            vec!["customer_id=cust-9999", "tier=trial"],
        ]
    );
    let mut cfg = inline_config(extra);
    cfg.on_existing = OnExisting::Overwrite;
    let (overwrite, _) = build(&cfg);
    let mut batch = one_gauge(points);
    overwrite.processor().process(&mut batch);
    assert_eq!(
        point_attrs(&mut batch),
        vec![
            vec!["customer_id=cust-0002", "customer_plan=annual", "tier=pro"],
            vec!["customer_id=cust-9999", "tier=unknown"],
        ]
    );
}

#[test]
fn extra_attributes_and_custom_keys() {
    let (tier, _) = build(&inline_config(serde_json::json!({
        "customer_id_key": "cid",
        "tier_key": "customer_tier",
        "default_tier": "none",
        "attributes": {"plan": "customer_plan", "region": "customer_region", "name": "customer_name"},
    })));
    let mut batch = one_gauge(&[
        (1.0, &[("cid", "cust-0002")]),
        (2.0, &[("cid", "cust-0001")]),
        (3.0, &[("cid", "nobody")]),
        (4.0, &[("customer_id", "cust-0001")]),
    ]);
    tier.processor().process(&mut batch);
    assert_eq!(
        point_attrs(&mut batch),
        vec![
            vec![
                "cid=cust-0002",
                "customer_plan=annual",
                "customer_region=eu-west",
                "customer_tier=pro"
            ],
            vec!["cid=cust-0001", "customer_tier=enterprise"],
            vec!["cid=nobody", "customer_tier=none"],
            vec!["customer_id=cust-0001"],
        ]
    );
}

fn resource_batch() -> MetricBatch {
    MetricBatch::new(
        "otlp".into(),
        vec![
            fixtures::resource_with(
                &[("service.name", "robot-gw"), ("customer_id", "cust-0001")],
                vec![fixtures::gauge(
                    "vla.robot.battery",
                    "",
                    &[(1.0, &[]), (2.0, &[("customer_id", "cust-0002")])],
                )],
            ),
            fixtures::resource(
                "vla-api",
                vec![fixtures::gauge("g", "", &[(3.0, &[("customer_id", "x")])])],
            ),
        ],
    )
}

fn resource_attrs(batch: &MetricBatch) -> Vec<Vec<String>> {
    batch
        .resource_metrics()
        .iter()
        .map(|rm| text(&rm.resource.as_ref().unwrap().attributes))
        .collect()
}

#[test]
fn resources_points_or_both() {
    let cases = [
        (
            ApplyTo::Both,
            vec![
                vec![
                    "customer_id=cust-0001",
                    "service.name=robot-gw",
                    "tier=enterprise",
                ],
                vec!["service.name=vla-api"],
            ],
            vec![
                vec![],
                vec!["customer_id=cust-0002", "tier=pro"],
                vec!["customer_id=x", "tier=unknown"],
            ],
            (2, 1),
        ),
        (
            ApplyTo::Resources,
            vec![
                vec![
                    "customer_id=cust-0001",
                    "service.name=robot-gw",
                    "tier=enterprise",
                ],
                vec!["service.name=vla-api"],
            ],
            vec![vec![], vec!["customer_id=cust-0002"], vec!["customer_id=x"]],
            (2, 0),
        ),
        (
            ApplyTo::Points,
            vec![
                vec!["customer_id=cust-0001", "service.name=robot-gw"],
                vec!["service.name=vla-api"],
            ],
            vec![
                vec![],
                vec!["customer_id=cust-0002", "tier=pro"],
                vec!["customer_id=x", "tier=unknown"],
            ],
            (1, 1),
        ),
    ];
    for (apply_to, resources, points, (enriched, defaulted)) in cases {
        let mut cfg = inline_config(serde_json::json!({}));
        cfg.apply_to = apply_to;
        let (tier, t) = build(&cfg);
        let mut batch = resource_batch();
        tier.processor().process(&mut batch);
        assert_eq!(resource_attrs(&batch), resources, "{apply_to:?}");
        let points: Vec<Vec<String>> = points
            .into_iter()
            .map(|p| p.into_iter().map(String::from).collect())
            .collect();
        assert_eq!(point_attrs(&mut batch), points, "{apply_to:?}");
        let name = "vla_collector_processor_customer_tier_data_points_total";
        assert_eq!(
            (
                value(&t, name, &[("result", "enriched")]),
                value(&t, name, &[("result", "default")])
            ),
            (enriched, defaulted),
            "{apply_to:?}"
        );
    }
}

#[test]
fn drop_customer_id_with_include_exclude_and_merge() {
    let (tier, t) = build(&inline_config(serde_json::json!({
        "drop_customer_id": {
            "include": ["vla.customer.*"],
            "exclude": ["vla.customer.requests"],
        },
    })));
    let ok: &[(&str, &str)] = &[("customer_id", "cust-0001"), ("outcome", "ok")];
    let ok2: &[(&str, &str)] = &[("customer_id", "cust-0002"), ("outcome", "ok")];
    let ok3: &[(&str, &str)] = &[("customer_id", "cust-0003"), ("outcome", "ok")];
    let mut batch = MetricBatch::new(
        "otlp".into(),
        vec![fixtures::resource(
            "vla-api",
            vec![
                // Matched: the id goes, the tiers stay apart.
                fixtures::delta_sum(
                    "vla.customer.safety_incidents",
                    "",
                    true,
                    &[(1.0, ok), (2.0, ok3), (4.0, ok2)],
                ),
                // Excluded: keeps its ids.
                fixtures::cumulative_sum(
                    "vla.customer.requests",
                    "",
                    true,
                    &[(5.0, ok), (6.0, ok3)],
                ),
                // Not included.
                fixtures::gauge("vla.quota.used", "", &[(7.0, ok)]),
                // Included but a summary: skipped.
                fixtures::summary("vla.customer.latency", "s", &[(0.5, 0.1)], 3, 0.9, ok),
            ],
        )],
    );
    assert_eq!(batch.data_points(), 7);
    tier.processor().process(&mut batch);
    assert_eq!(batch.data_points(), 7, "three tiers: nothing to merge");
    let rm = &batch.resource_metrics()[0].scope_metrics[0].metrics;
    let sums: Vec<(Vec<String>, f64)> = match &rm[0].data {
        Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Sum(s)) => s
            .data_points
            .iter()
            .map(|p| {
                let v = match p.value {
                    Some(
                        opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsDouble(
                            d,
                        ),
                    ) => d,
                    _ => f64::NAN,
                };
                (text(&p.attributes), v)
            })
            .collect(),
        _ => panic!("sum"),
    };
    assert_eq!(
        sums,
        vec![
            (
                vec!["outcome=ok".to_owned(), "tier=enterprise".to_owned()],
                1.0
            ),
            (
                vec!["outcome=ok".to_owned(), "tier=unknown".to_owned()],
                2.0
            ),
            (vec!["outcome=ok".to_owned(), "tier=pro".to_owned()], 4.0),
        ]
    );
    let mut all = point_attrs(&mut batch);
    all.drain(..3);
    assert_eq!(
        all,
        vec![
            vec!["customer_id=cust-0001", "outcome=ok", "tier=enterprise"],
            vec!["customer_id=cust-0003", "outcome=ok", "tier=unknown"],
            vec!["customer_id=cust-0001", "outcome=ok", "tier=enterprise"],
            vec!["customer_id=cust-0001", "outcome=ok", "tier=enterprise"],
        ]
    );
    assert_eq!(
        value(
            &t,
            "vla_collector_processor_customer_tier_merged_data_points_total",
            &[]
        ),
        0
    );
    assert_eq!(
        value(
            &t,
            "vla_collector_processor_customer_tier_drop_skipped_data_points_total",
            &[("reason", "summary")]
        ),
        1
    );
    // Two customers of the same tier: their points merge.
    let mut batch = MetricBatch::new(
        "otlp".into(),
        vec![fixtures::resource(
            "vla-api",
            vec![fixtures::delta_sum(
                "vla.customer.safety_incidents",
                "",
                true,
                &[
                    (1.0, ok3),
                    (2.0, &[("customer_id", "cust-0004"), ("outcome", "ok")]),
                ],
            )],
        )],
    );
    tier.processor().process(&mut batch);
    assert_eq!(batch.data_points(), 1);
    assert_eq!(
        point_attrs(&mut batch),
        vec![vec!["outcome=ok", "tier=unknown"]]
    );
    assert_eq!(
        value(
            &t,
            "vla_collector_processor_customer_tier_merged_data_points_total",
            &[]
        ),
        1
    );
}

#[test]
fn until_a_table_loads_points_and_resources_pass_untouched() {
    // The worst case: overwrite would replace the tier the API sent, and the dropped ids
    // would merge every customer into one series.
    let cfg = config(serde_json::json!({
        "source": {"postgres": {"dsn": "host=127.0.0.1 port=1 dbname=billing"}},
        "on_existing": "overwrite",
        "attributes": {"plan": "customer_plan"},
        "drop_customer_id": {"include": ["vla.*"]},
    }));
    let (tier, t) = build(&cfg);
    let mut processor = tier.processor();
    let points: &[(f64, &[(&str, &str)])] = &[
        (1.0, &[("customer_id", "cust-0001"), ("tier", "enterprise")]),
        (2.0, &[("customer_id", "cust-0002"), ("tier", "enterprise")]),
        (3.0, &[("customer_id", "cust-0003")]),
        (4.0, &[("model", "rt-2")]),
    ];
    let mut batch = one_gauge(points);
    let sent = batch.resource_metrics().to_vec();
    processor.process(&mut batch);
    assert_eq!(batch.resource_metrics(), &sent[..], "points untouched");
    let mut batch = resource_batch();
    let sent = batch.resource_metrics().to_vec();
    processor.process(&mut batch);
    assert_eq!(batch.resource_metrics(), &sent[..], "resources untouched");
    let name = "vla_collector_processor_customer_tier_data_points_total";
    let counts = |t: &SelfMetrics| {
        [
            value(t, name, &[("result", "no_table")]),
            value(t, name, &[("result", "enriched")]),
            value(t, name, &[("result", "default")]),
            value(
                t,
                "vla_collector_processor_customer_tier_merged_data_points_total",
                &[],
            ),
        ]
    };
    // 3 points with an id, then 3 points whose own or resource's id counts.
    assert_eq!(counts(&t), [6, 0, 0, 0]);

    // The first load ends the pass-through.
    tier.shared.install(vec![RawRow {
        id: "cust-0001".into(),
        tier: "pro".into(),
        fields: vec![("plan".into(), "annual".into())],
    }]);
    let mut batch = one_gauge(points);
    processor.process(&mut batch);
    assert_eq!(
        point_attrs(&mut batch),
        vec![
            vec!["customer_plan=annual", "tier=pro"],
            vec!["tier=unknown"],
            vec!["model=rt-2"],
        ]
    );
    assert_eq!(counts(&t), [6, 1, 2, 1]);
}

#[test]
fn invalid_settings_and_files_fail_new() {
    let t = SelfMetrics::new();
    let err = CustomerTier::new(
        "customer_tier/x".into(),
        &config(serde_json::json!({"source": {}})),
        &t,
    )
    .err()
    .unwrap()
    .to_string();
    assert_eq!(
        err,
        "invalid customer_tier settings: processors.customer_tier/x.source: set exactly one of inline, file, postgres"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("customers.yaml");
    let cfg = config(serde_json::json!({"source": {"file": path}}));
    let err = CustomerTier::new("c".into(), &cfg, &t)
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        err,
        format!(
            "cannot read customer file {} (processors.c.source.file)",
            path.display()
        )
    );
    let chain = vla_pipeline::error_chain(&CustomerTier::new("c".into(), &cfg, &t).err().unwrap());
    assert_eq!(
        chain.matches("No such file or directory").count(),
        1,
        "the cause is printed once: {chain}"
    );
    std::fs::write(
        &path,
        "customers:\n  - {customer_id: a, tier: pro}\n  - {customer_id: b}\n",
    )
    .unwrap();
    let err = CustomerTier::new("c".into(), &cfg, &t)
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        err,
        format!("{}:3: customer \"b\": missing tier", path.display())
    );
    // `required: false` excuses a missing file only, not a broken one.
    let optional = config(serde_json::json!({"source": {"file": path, "required": false}}));
    let err = CustomerTier::new("c".into(), &optional, &t)
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        err,
        format!("{}:3: customer \"b\": missing tier", path.display())
    );
    // ... and applies to a file source only.
    let inline = config(serde_json::json!({"source": {"inline": {"a": "pro"}, "required": true}}));
    let err = CustomerTier::new("c".into(), &inline, &t)
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        err,
        "invalid customer_tier settings: processors.c.source.required: only applies to a file source"
    );
}

/// Counts the warnings logged while it is the thread's default subscriber.
#[derive(Clone, Default)]
struct Warnings(Arc<std::sync::atomic::AtomicUsize>);

impl Warnings {
    fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl tracing::Subscriber for Warnings {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

// One thread (the default runtime), so the subscriber sees the refresher's logs too.
#[tokio::test]
async fn an_optional_file_may_appear_after_start_up() {
    let warnings = Warnings::default();
    let _logs = tracing::subscriber::set_default(warnings.clone());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("customers.yaml");
    // A long interval: only the quicker retries before the first load can pick the file up
    // within the test's deadline.
    let cfg = config(serde_json::json!({"source": {
        "file": path, "required": false, "reload_interval": "30s"
    }}));
    let (tier, t) = build(&cfg);
    let report = tier.status().report();
    assert_eq!(report.status, "failing");
    assert_eq!(
        report.last_error.as_deref(),
        Some(
            format!(
                "customer file {} not found; customers get no tier until it appears",
                path.display()
            )
            .as_str()
        )
    );
    assert_eq!((report.entries, report.loaded_at_unix), (0, None));
    assert_eq!(tier_of(&tier, "cust-0001"), "-", "no table: untouched");
    let name = "vla_collector_processor_customer_tier_data_points_total";
    assert_eq!(
        [
            value(&t, name, &[("result", "no_table")]),
            value(&t, name, &[("result", "default")]),
        ],
        [1, 0]
    );
    let refreshes = |result| {
        value(
            &t,
            "vla_collector_lookup_refreshes_total",
            &[("result", result)],
        )
    };
    assert_eq!((refreshes("ok"), refreshes("error")), (0, 1));
    assert_eq!(warnings.count(), 1);

    let shutdown = CancellationToken::new();
    let task = tokio::spawn(tier.refresher(shutdown.clone()).unwrap());
    wait_until("a second check", || refreshes("error") >= 2).await;
    let report = tier.status().report();
    assert_eq!(report.status, "failing");
    assert!(
        report.last_error.unwrap().contains("not found"),
        "the message stays"
    );
    assert_eq!(warnings.count(), 1, "one warning per failure streak");

    replace(&path, "cust-0001: enterprise\ncust-0002: pro\n");
    wait_until("the file's first load", || {
        tier.status().report().status == "ok"
    })
    .await;
    assert_eq!(tier.status().report().entries, 2);
    assert_eq!(refreshes("ok"), 1);
    assert_eq!(value(&t, "vla_collector_lookup_entries", &[]), 2);
    assert_eq!(tier_of(&tier, "cust-0001"), "enterprise");
    assert_eq!(tier_of(&tier, "cust-9999"), "unknown");
    assert_eq!(warnings.count(), 1);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .unwrap()
        .unwrap();
}

#[test]
fn an_optional_file_that_exists_loads_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("customers.csv");
    std::fs::write(&path, "customer_id,tier\ncust-0001,pro\n").unwrap();
    let cfg = config(serde_json::json!({"source": {"file": path, "required": false}}));
    let (tier, _) = build(&cfg);
    let report = tier.status().report();
    assert_eq!((report.status, report.entries), ("ok", 1));
    assert_eq!(tier_of(&tier, "cust-0001"), "pro");
}

/// Polls `check` every 10 ms until it holds or 10 s pass.
async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn tier_of(tier: &CustomerTier, customer: &str) -> String {
    let mut batch = one_gauge(&[(1.0, &[("customer_id", customer)])]);
    tier.processor().process(&mut batch);
    let mut out = String::new();
    batch.for_each_point_mut(|_, attrs| out = attr_str(attrs, "tier").unwrap_or("-").to_owned());
    out
}

/// Replaces the file atomically, as the docs ask.
fn replace(path: &std::path::Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_reloads_on_change_and_keeps_the_last_good_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("customers.csv");
    std::fs::write(&path, "customer_id,tier\ncust-0001,pro\n").unwrap();
    let cfg = config(serde_json::json!({"source": {"file": path, "reload_interval": "100ms"}}));
    let (tier, t) = build(&cfg);
    assert_eq!(
        tier.status().report().source,
        format!("file {}", path.display())
    );
    assert_eq!(tier_of(&tier, "cust-0001"), "pro");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(tier.refresher(shutdown.clone()).unwrap());

    replace(
        &path,
        "customer_id,tier\ncust-0001,enterprise\ncust-0002,free\n",
    );
    wait_until("the new tier", || {
        tier_of(&tier, "cust-0001") == "enterprise"
    })
    .await;
    assert_eq!(tier_of(&tier, "cust-0002"), "free");
    let ok = || {
        value(
            &t,
            "vla_collector_lookup_refreshes_total",
            &[("result", "ok")],
        )
    };
    let errors = || {
        value(
            &t,
            "vla_collector_lookup_refreshes_total",
            &[("result", "error")],
        )
    };
    assert_eq!((ok(), errors()), (2, 0));
    assert_eq!(value(&t, "vla_collector_lookup_entries", &[]), 2);

    // A broken version: the last good table stays, the status fails once per version.
    replace(&path, "customer_id,tier\ncust-0001,free\ncust-0003,\n");
    wait_until("the failure", || tier.status().report().status == "failing").await;
    let report = tier.status().report();
    assert_eq!(
        report.last_error.as_deref(),
        Some(format!("{}:3: customer \"cust-0003\": missing tier", path.display()).as_str())
    );
    assert_eq!((report.entries, report.consecutive_failures), (2, 1));
    assert_eq!(tier_of(&tier, "cust-0001"), "enterprise");
    // Two more checks of the unchanged broken file: neither reports it again.
    let checks = || value(&t, "vla_collector_lookup_checks_total", &[]);
    let seen = checks();
    wait_until("two more checks", || checks() >= seen + 2).await;
    assert_eq!(
        errors(),
        1,
        "an unchanged broken file is not reported again"
    );

    // A missing file is a failure too; its return with good content recovers.
    std::fs::remove_file(&path).unwrap();
    wait_until("the read failure", || errors() >= 2).await;
    assert!(
        tier.status()
            .report()
            .last_error
            .unwrap()
            .starts_with("cannot read ")
    );
    replace(&path, "customer_id,tier\ncust-0001,gold\n");
    wait_until("the recovery", || tier.status().report().status == "ok").await;
    assert_eq!(tier_of(&tier, "cust-0001"), "gold");
    assert_eq!(tier_of(&tier, "cust-0002"), "unknown");
    assert_eq!(value(&t, "vla_collector_lookup_entries", &[]), 1);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_source_starts_empty_and_fails_without_a_server() {
    // A long interval: before the first load the refresher retries within a second anyway.
    let cfg = config(serde_json::json!({"source": {"postgres": {
        "dsn": "host=127.0.0.1 port=1 user=vla password=s3cret dbname=billing",
        "refresh_interval": "30s",
        "timeout": "1s",
    }}}));
    let (tier, t) = build(&cfg);
    let report = tier.status().report();
    assert_eq!(
        (report.source.as_str(), report.status),
        ("postgres 127.0.0.1:1/billing", "pending")
    );
    assert_eq!(tier_of(&tier, "cust-0001"), "-", "no table yet: no tier");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(tier.refresher(shutdown.clone()).unwrap());
    wait_until("two failures", || {
        tier.status().report().failures_total >= 2
    })
    .await;
    let report = tier.status().report();
    assert_eq!(report.status, "failing");
    let error = report.last_error.unwrap();
    assert!(
        error.starts_with("postgres 127.0.0.1:1/billing: "),
        "{error}"
    );
    assert!(!error.contains("s3cret"), "{error}");
    assert!(
        value(
            &t,
            "vla_collector_lookup_refreshes_total",
            &[("result", "error")]
        ) >= 2
    );
    let started = Instant::now();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_millis(500));
}
