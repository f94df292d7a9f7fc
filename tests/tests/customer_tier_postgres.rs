//! The `customer_tier` processor against a real PostgreSQL (Debian's `postgresql`):
//!
//! 1. The rows' tiers (and a configured extra column) are applied, unknown customers get the
//!    default tier; an `UPDATE` shows within a refresh; a frozen (hung) server is bounded by
//!    `timeout`; with the server stopped the last good table stays in use while the status
//!    fails and failures are counted; a restart recovers; an emptied table fails the refresh
//!    and keeps the last good table.
//! 2. Bad queries (a missing table, no `tier` column, duplicate ids, no rows) fail with a clear
//!    message and load no table.
//!
//! Where the timeout itself is not under test it is 5 s, and a test waits for the message it
//! expects rather than taking the first failure: on a loaded machine (several servers starting
//! at once) an early attempt may time out instead.
//! 3. Starting with the server down leaves points untouched (no default tier, ids kept, even
//!    with `on_existing: overwrite` and `drop_customer_id`) and counts them as `no_table`, with
//!    a failing status, until it is up.
//! 4. A `password_file` is read at each attempt: with password authentication on, the right
//!    password loads, a wrong one fails (never shown), and fixing the file recovers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use vla_e2e::eventually;
use vla_e2e::postgres::Postgres;
use vla_pipeline::lookup::SourceReport;
use vla_pipeline::{MetricBatch, SelfMetrics, attr_str, fixtures};
use vla_processors::customer_tier::{Config, CustomerTier};

const WAIT: Duration = Duration::from_secs(15);
const ID: &str = "customer_tier/db";

fn tier_config(dsn: &str, query: &str, timeout: &str) -> Config {
    serde_json::from_value(serde_json::json!({
        "source": {"postgres": {
            "dsn": dsn,
            "query": query,
            "refresh_interval": "200ms",
            "timeout": timeout,
        }},
        "attributes": {"plan": "customer_plan"},
    }))
    .unwrap()
}

/// The `(tier, customer_plan)` a point of `customer` leaves the processor with.
fn enrich(tier: &CustomerTier, customer: &str) -> (String, Option<String>) {
    let mut batch = MetricBatch::new(
        "otlp".into(),
        vec![fixtures::resource(
            "vla-api",
            vec![fixtures::delta_sum(
                "vla.customer.requests",
                "{request}",
                true,
                &[(1.0, &[("customer_id", customer), ("outcome", "ok")])],
            )],
        )],
    );
    tier.processor().process(&mut batch);
    let mut out = (String::new(), None);
    batch.for_each_point_mut(|_, attrs| {
        out = (
            attr_str(attrs, "tier").unwrap_or("-").to_owned(),
            attr_str(attrs, "customer_plan").map(str::to_owned),
        );
    });
    out
}

fn tier_of(tier: &CustomerTier, customer: &str) -> String {
    enrich(tier, customer).0
}

fn points(t: &SelfMetrics, result: &str) -> i64 {
    t.value(
        "vla_collector_processor_customer_tier_data_points_total",
        &[("processor", ID), ("result", result)],
    )
    .unwrap_or(-1)
}

fn refreshes(t: &SelfMetrics, result: &str) -> i64 {
    t.value(
        "vla_collector_lookup_refreshes_total",
        &[("processor", ID), ("result", result)],
    )
    .unwrap_or(-1)
}

/// Waits until the status satisfies `check`; returns that report.
async fn status_until(
    tier: &CustomerTier,
    what: &str,
    check: impl Fn(&SourceReport) -> bool,
) -> SourceReport {
    let status = tier.status();
    eventually(WAIT, || {
        let r = status.report();
        let ok = check(&r);
        async move {
            if ok {
                Ok(r)
            } else {
                Err(format!("waiting for {what}: {r:?}"))
            }
        }
    })
    .await
    .unwrap()
}

/// Waits until the status's latest error contains `text`; returns that report.
async fn error_until(tier: &CustomerTier, text: &str) -> SourceReport {
    status_until(tier, text, |r| {
        r.last_error.as_deref().is_some_and(|e| e.contains(text))
    })
    .await
}

async fn tier_until(tier: &CustomerTier, customer: &str, want: &str) {
    eventually(WAIT, || {
        let got = tier_of(tier, customer);
        async move {
            if got == want {
                Ok(())
            } else {
                Err(format!("{customer}: tier {got}, want {want}"))
            }
        }
    })
    .await
    .unwrap();
}

const SCHEMA: &str =
    "CREATE TABLE customers (customer_id text PRIMARY KEY, tier text NOT NULL, plan text);
     INSERT INTO customers VALUES
       ('cust-0001', 'enterprise', 'annual'),
       ('cust-0002', 'pro', NULL),
       ('cust-0003', 'free', 'monthly');";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_from_postgres_follow_updates_and_survive_an_outage() {
    let mut pg = Postgres::start().await.expect("postgres");
    pg.execute(SCHEMA).await.unwrap();
    let telemetry = SelfMetrics::new();
    // The hang below tests the timeout: 1 s.
    let cfg = tier_config(
        &pg.dsn(),
        "SELECT customer_id, tier, plan FROM customers",
        "1s",
    );
    let tier = CustomerTier::new(ID.into(), &cfg, &telemetry).unwrap();
    let description = format!("postgres 127.0.0.1:{}/postgres", pg.port());
    let report = tier.status().report();
    assert_eq!(
        (report.source.as_str(), report.status),
        (description.as_str(), "pending")
    );
    assert_eq!(
        enrich(&tier, "cust-0001"),
        ("-".into(), None),
        "untouched until the first refresh"
    );
    assert_eq!(
        (
            points(&telemetry, "no_table"),
            points(&telemetry, "default")
        ),
        (1, 0)
    );

    let shutdown = CancellationToken::new();
    let task = tokio::spawn(tier.refresher(shutdown.clone()).unwrap());
    let report = status_until(&tier, "the first load", |r| r.status == "ok").await;
    assert_eq!(report.entries, 3);
    assert_eq!(
        enrich(&tier, "cust-0001"),
        ("enterprise".into(), Some("annual".into()))
    );
    assert_eq!(enrich(&tier, "cust-0002"), ("pro".into(), None));
    assert_eq!(
        enrich(&tier, "cust-0003"),
        ("free".into(), Some("monthly".into()))
    );
    assert_eq!(enrich(&tier, "cust-9999"), ("unknown".into(), None));
    let entries = || telemetry.value("vla_collector_lookup_entries", &[("processor", ID)]);
    assert_eq!(entries(), Some(3));

    // An UPDATE shows within a refresh.
    pg.execute("UPDATE customers SET tier = 'enterprise' WHERE customer_id = 'cust-0002'")
        .await
        .unwrap();
    tier_until(&tier, "cust-0002", "enterprise").await;

    // A hung server: each attempt ends at `timeout`, the table stays.
    pg.freeze();
    let report = status_until(&tier, "a timeout", |r| r.status == "failing").await;
    let error = report.last_error.unwrap_or_default();
    assert_eq!(error, format!("{description}: timed out after 1s"));
    assert_eq!(tier_of(&tier, "cust-0002"), "enterprise");
    pg.thaw();
    status_until(&tier, "recovery after the hang", |r| r.status == "ok").await;

    // The server stops: the last good table stays in use, failures are counted.
    let errors_before = refreshes(&telemetry, "error");
    pg.stop().await.unwrap();
    let report = status_until(&tier, "two failures", |r| {
        r.status == "failing" && r.consecutive_failures >= 2
    })
    .await;
    assert_eq!(report.entries, 3);
    let error = report.last_error.unwrap_or_default();
    assert!(error.starts_with(&format!("{description}: ")), "{error}");
    assert!(refreshes(&telemetry, "error") >= errors_before + 2);
    assert_eq!(
        enrich(&tier, "cust-0001"),
        ("enterprise".into(), Some("annual".into()))
    );
    assert_eq!(tier_of(&tier, "cust-0002"), "enterprise");
    assert_eq!(entries(), Some(3));

    // It comes back: the refresher recovers on its own.
    pg.start_server().await.unwrap();
    pg.execute("DELETE FROM customers WHERE customer_id = 'cust-0003'")
        .await
        .unwrap();
    let report = status_until(&tier, "recovery", |r| r.status == "ok" && r.entries == 2).await;
    assert_eq!(report.consecutive_failures, 0);
    assert_eq!(tier_of(&tier, "cust-0003"), "unknown");
    assert_eq!(entries(), Some(2));

    // An emptied table is a failed refresh, not an empty table.
    pg.execute("DELETE FROM customers").await.unwrap();
    let report = error_until(&tier, "no customers").await;
    assert_eq!(
        report.last_error.unwrap_or_default(),
        format!("{description}: the query returned no customers; keeping the last table")
    );
    assert_eq!((report.status, report.entries), ("failing", 2));
    assert_eq!(tier_of(&tier, "cust-0001"), "enterprise");
    assert_eq!(entries(), Some(2));

    let started = Instant::now();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queries_fail_with_a_clear_message() {
    let pg = Postgres::start().await.expect("postgres");
    pg.execute(SCHEMA).await.unwrap();
    let description = format!("postgres 127.0.0.1:{}/postgres", pg.port());
    let cases = [
        (
            "SELECT customer_id, tier FROM missing_table",
            "query failed: db error: ERROR: relation \"missing_table\" does not exist",
        ),
        (
            "SELECT customer_id, plan FROM customers",
            "the query's result has no `tier` column (columns: customer_id, plan)",
        ),
        (
            "SELECT customer_id, tier FROM customers UNION ALL SELECT 'cust-0001', 'free'",
            "row 4: customer \"cust-0001\": duplicate (first in row 1)",
        ),
        (
            "SELECT customer_id, plan AS tier FROM customers ORDER BY customer_id",
            "row 2: customer \"cust-0002\": tier is NULL or empty",
        ),
        (
            "SELECT customer_id, tier FROM customers WHERE false",
            "the query returned no customers; keeping the last table",
        ),
    ];
    for (query, want) in cases {
        let telemetry = SelfMetrics::new();
        let cfg = tier_config(&pg.dsn(), query, "5s");
        let tier = CustomerTier::new(ID.into(), &cfg, &telemetry).unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(tier.refresher(shutdown.clone()).unwrap());
        let report = error_until(&tier, want).await;
        assert_eq!(
            report.last_error.unwrap_or_default(),
            format!("{description}: {want}"),
            "{query}"
        );
        assert_eq!(report.entries, 0, "{query}");
        assert_eq!(refreshes(&telemetry, "ok"), 0, "{query}");
        assert!(refreshes(&telemetry, "error") >= 1, "{query}");
        assert_eq!(
            tier_of(&tier, "cust-0001"),
            "-",
            "no table: no tier; {query}"
        );
        shutdown.cancel();
        task.await.unwrap();
    }
    // Columns by name in any order; an id column not named customer_id is taken first.
    let telemetry = SelfMetrics::new();
    let query = "SELECT plan, tier, customer_id FROM customers";
    let tier =
        CustomerTier::new(ID.into(), &tier_config(&pg.dsn(), query, "5s"), &telemetry).unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(tier.refresher(shutdown.clone()).unwrap());
    status_until(&tier, "a load", |r| r.status == "ok").await;
    assert_eq!(
        enrich(&tier, "cust-0003"),
        ("free".into(), Some("monthly".into()))
    );
    shutdown.cancel();
    task.await.unwrap();
    let query = "SELECT customer_id AS id, tier FROM customers";
    let tier =
        CustomerTier::new(ID.into(), &tier_config(&pg.dsn(), query, "5s"), &telemetry).unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(tier.refresher(shutdown.clone()).unwrap());
    status_until(&tier, "a load", |r| r.status == "ok").await;
    assert_eq!(tier_of(&tier, "cust-0001"), "enterprise");
    shutdown.cancel();
    task.await.unwrap();
}

/// Two customers' points, one with the tier the API sent, in one metric.
fn api_batch() -> MetricBatch {
    MetricBatch::new(
        "otlp".into(),
        vec![fixtures::resource(
            "vla-api",
            vec![fixtures::cumulative_sum(
                "vla.customer.requests",
                "{request}",
                true,
                &[
                    (3.0, &[("customer_id", "cust-0001"), ("tier", "trial")]),
                    (5.0, &[("customer_id", "cust-0002")]),
                ],
            )],
        )],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_with_the_database_down_leaves_points_untouched_until_it_is_up() {
    let mut pg = Postgres::create().expect("initdb");
    let telemetry = SelfMetrics::new();
    // The settings where a default tier would do the most harm: it would replace the API's
    // tier, and dropping the ids would merge both customers into one `unknown` series.
    let cfg: Config = serde_json::from_value(serde_json::json!({
        "source": {"postgres": {
            "dsn": pg.dsn(),
            "query": "SELECT customer_id, tier, plan FROM customers",
            "refresh_interval": "200ms",
            "timeout": "5s",
        }},
        "attributes": {"plan": "customer_plan"},
        "on_existing": "overwrite",
        "drop_customer_id": {"include": ["vla.customer.requests"]},
    }))
    .unwrap();
    let tier = CustomerTier::new(ID.into(), &cfg, &telemetry).unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(tier.refresher(shutdown.clone()).unwrap());
    let report = status_until(&tier, "the failure", |r| r.status == "failing").await;
    assert_eq!(report.entries, 0);
    assert!(report.loaded_at_unix.is_none());
    let mut batch = api_batch();
    let sent = batch.resource_metrics().to_vec();
    tier.processor().process(&mut batch);
    assert_eq!(
        batch.resource_metrics(),
        &sent[..],
        "no table yet: points untouched"
    );
    assert_eq!(
        [
            points(&telemetry, "no_table"),
            points(&telemetry, "enriched"),
            points(&telemetry, "default"),
        ],
        [2, 0, 0]
    );

    pg.start_server().await.expect("postgres");
    pg.execute(SCHEMA).await.unwrap();
    let report = status_until(&tier, "ok", |r| r.status == "ok").await;
    assert_eq!(report.entries, 3);
    assert!(report.failures_total >= 1);
    assert!(refreshes(&telemetry, "ok") >= 1);
    // Now the table decides: the API's tier is overwritten, the ids go, tiers stay apart.
    let mut batch = api_batch();
    tier.processor().process(&mut batch);
    // (tier, still has its customer id)
    let mut got = Vec::new();
    batch.for_each_point_mut(|_, attrs| {
        got.push((
            attr_str(attrs, "tier").unwrap_or("-").to_owned(),
            attr_str(attrs, "customer_id").is_some(),
        ));
    });
    assert_eq!(
        got,
        vec![("enterprise".to_owned(), false), ("pro".to_owned(), false)]
    );
    assert_eq!(points(&telemetry, "enriched"), 2);
    assert_eq!(points(&telemetry, "no_table"), 2);
    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_file_is_read_at_each_attempt() {
    // A password that a double-quoted YAML dsn could not carry.
    const PASSWORD: &str = r#"pw "with" \ quotes"#;
    let pg = Postgres::start().await.expect("postgres");
    pg.execute(SCHEMA).await.unwrap();
    pg.execute(&format!(
        "CREATE ROLE vla LOGIN PASSWORD '{PASSWORD}'; GRANT SELECT ON customers TO vla"
    ))
    .await
    .unwrap();
    pg.require_passwords().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pg-password");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let dsn = format!("host=127.0.0.1 port={} user=vla dbname=postgres", pg.port());
    let cfg: Config = serde_json::from_value(serde_json::json!({
        "source": {"postgres": {
            "dsn": dsn,
            "password_file": file,
            "query": "SELECT customer_id, tier FROM customers",
            "refresh_interval": "200ms",
            "timeout": "5s",
        }},
    }))
    .unwrap();
    let telemetry = SelfMetrics::new();
    let tier = CustomerTier::new(ID.into(), &cfg, &telemetry).unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(tier.refresher(shutdown.clone()).unwrap());
    let report = status_until(&tier, "a load with the password", |r| r.status == "ok").await;
    assert_eq!(report.entries, 3);
    assert_eq!(tier_of(&tier, "cust-0002"), "pro");

    // A wrong password: the refresh fails without showing it; the table stays.
    std::fs::write(&file, "not-the-password\n").unwrap();
    let report = error_until(&tier, "password authentication failed").await;
    assert_eq!(report.status, "failing");
    let error = report.last_error.unwrap_or_default();
    assert!(!error.contains("not-the-password"), "{error}");
    assert_eq!(tier_of(&tier, "cust-0002"), "pro");

    // An unreadable file names the file and the setting.
    std::fs::remove_file(&file).unwrap();
    let report = status_until(&tier, "the missing file", |r| {
        r.last_error
            .as_deref()
            .is_some_and(|e| e.contains("password file"))
    })
    .await;
    let error = report.last_error.unwrap_or_default();
    assert!(
        error.contains(&format!(
            "cannot read the password file {} (processors.{ID}.source.postgres.password_file)",
            file.display()
        )),
        "{error}"
    );

    // The file is fixed: the next attempt reads it again.
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    status_until(&tier, "recovery", |r| r.status == "ok").await;
    shutdown.cancel();
    task.await.unwrap();
}
