//! Enrichment end to end: the API's telemetry (`vla-sdk`) through `vla-collector` on
//! `configs/collector.yaml` as shipped, into a real Prometheus, arrives with the customer's tier
//! (from `configs/customers.yaml`), the safety labels of the shipped rules, and the GPU model
//! joined from the `nvml` receiver (with a fake GPU source here). The tier also comes from a
//! real PostgreSQL (Debian's `postgresql`). Then the failure modes: a customer file broken
//! while running, a file broken at start-up, the database going down, and a host without a GPU.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vla_e2e::postgres::Postgres;
use vla_e2e::{Collector, Ports, Prometheus, collector_binary, eventually};
use vla_sdk::{
    CustomerId, Inference, InstructionCategory, ModelName, Outcome, RobotType, SafetyIncident,
    Severity, Telemetry, Tier, ViolationType,
};

const WAIT: Duration = Duration::from_secs(20);

/// The API's telemetry as a worker pinned to GPU `gpu` sends it: `gpu_id` is a resource
/// attribute, so every request metric of that worker can be joined to the GPU.
fn worker_telemetry(grpc_port: u16, instance: &str, gpu: &str) -> Telemetry {
    Telemetry::builder()
        .endpoint(format!("http://127.0.0.1:{grpc_port}"))
        .service_name("vla-api")
        .resource_attribute("service.namespace", "vla")
        .resource_attribute("gpu_id", gpu)
        .service_instance_id(instance)
        .export_interval(Duration::from_secs(3600))
        .build()
        .unwrap()
}

fn request(t: &Telemetry, customer: &str, tier: Tier) {
    t.record_inference(&Inference {
        model: &ModelName::new("openvla-7b").unwrap(),
        robot_type: &RobotType::new("franka").unwrap(),
        tier,
        customer: &CustomerId::new(customer).unwrap(),
        instruction_category: InstructionCategory::PickPlace,
        outcome: Outcome::Success,
        duration: Duration::from_millis(180),
    });
}

async fn flush(t: &Telemetry) {
    let t = t.clone();
    tokio::task::spawn_blocking(move || t.force_flush())
        .await
        .unwrap()
        .expect("the export reaches the collector");
}

/// Replaces `path`'s content at once (write, then rename), as an editor or a deploy would.
fn replace_file(path: &std::path::Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Records a request of `customer` and exports until Prometheus holds one with `tier`;
/// returns how many requests it recorded.
async fn request_until_tier(api: &Telemetry, prom: &Prometheus, customer: &str, tier: &str) -> u32 {
    let q = format!("vla_customer_requests_total{{customer_id=\"{customer}\",tier=\"{tier}\"}}");
    let deadline = Instant::now() + WAIT;
    let mut sent = 0;
    loop {
        request(api, customer, Tier::Free);
        sent += 1;
        flush(api).await;
        if !prom.query(&q).await.unwrap().is_empty() {
            return sent;
        }
        assert!(Instant::now() < deadline, "{q}: nothing after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One more request of customer `acme` reaches Prometheus still as `enterprise`, the series
/// then holding all `total` of its requests (the API's counter is cumulative).
async fn acme_is_still_enterprise(api: &Telemetry, prom: &Prometheus, total: u32) {
    request(api, "acme", Tier::Free);
    flush(api).await;
    let q = format!(
        "vla_customer_requests_total{{customer_id=\"acme\",tier=\"enterprise\"}} == {total}"
    );
    prom.wait_for(&q, 1, WAIT).await.unwrap();
}

/// Failed loads of the `customer_tier` table, and the self-metrics they were read from.
async fn lookup_errors(c: &Collector) -> (f64, std::collections::BTreeMap<String, f64>) {
    let metrics = c.self_metrics().await.unwrap();
    let errors = metrics
        .get("vla_collector_lookup_refreshes_total{processor=\"customer_tier\",result=\"error\"}")
        .copied()
        .unwrap_or(0.0);
    (errors, metrics)
}

/// The collector's `/ready` body.
async fn ready(c: &Collector) -> (u16, Value) {
    let resp = reqwest::get(format!("{}/ready", c.telemetry_url))
        .await
        .unwrap();
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap())
}

/// The `/ready` entry of one component.
fn component<'a>(body: &'a Value, kind: &str, id: &str) -> &'a Value {
    body["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == kind && c["id"] == id)
        .unwrap_or_else(|| panic!("no {kind} {id} in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_arrives_with_its_tier_safety_labels_and_gpu_model() {
    let prom = Prometheus::start(&[]).await.expect("prometheus");
    let ports = Ports::new();
    let config = vla_e2e::shipped_pipeline_config(&ports, &prom.write_url(), "100ms", |doc| {
        doc["receivers"]["nvml"] = json!({
            "collection_interval": "200ms",
            "source": "fake",
            "fake": { "gpus": 2, "model": "NVIDIA H100 80GB HBM3" },
            "metrics": { "vla": true, "dcgm": true },
        });
    })
    .unwrap();
    let collector = Collector::start(&config, ports.telemetry)
        .await
        .expect("collector");

    // The fake GPUs are polled before the API's export, so the join has a snapshot.
    prom.wait_for("vla_gpu_available == 1", 1, WAIT)
        .await
        .unwrap();

    let api = worker_telemetry(ports.grpc, "api-enrich", "1");
    request(&api, "cust-0001", Tier::Enterprise);
    request(&api, "cust-0009", Tier::Free);
    request(&api, "cust-9999", Tier::Free);
    let who = CustomerId::new("cust-0002").unwrap();
    api.record_safety_incident(&SafetyIncident {
        severity: Severity::Critical,
        violation_type: ViolationType::CollisionRisk,
        customer: &who,
    });
    api.record_safety_incident(&SafetyIncident {
        severity: Severity::Low,
        violation_type: ViolationType::WorkspaceBoundary,
        customer: &who,
    });
    flush(&api).await;

    // Tier (and plan) from configs/customers.yaml; an unknown customer gets default_tier.
    for (customer, tier, plan) in [
        ("cust-0001", "enterprise", "annual"),
        ("cust-0009", "free", "none"),
    ] {
        let q = format!(
            "vla_customer_requests_total{{customer_id=\"{customer}\",tier=\"{tier}\",\
             customer_plan=\"{plan}\",job=\"vla/vla-api\"}} == 1"
        );
        prom.wait_for(&q, 1, WAIT).await.unwrap();
    }
    prom.wait_for(
        "vla_customer_requests_total{customer_id=\"cust-9999\",tier=\"unknown\"} == 1",
        1,
        WAIT,
    )
    .await
    .unwrap();
    // A metric without a customer id is untouched (once it is there at all).
    prom.wait_for("sum(vla_inference_requests_total) == 3", 1, WAIT)
        .await
        .unwrap();
    let untouched = prom
        .query("vla_inference_requests_total{customer_plan!=\"\"}")
        .await
        .unwrap();
    assert!(untouched.is_empty(), "{untouched:?}");

    // The shipped safety rules: collision_risk is physical harm and, critical, needs review;
    // workspace_boundary at low severity does not.
    prom.wait_for(
        "vla_safety_incidents_total{violation_type=\"collision_risk\",severity=\"critical\",\
         safety_category=\"physical_harm\",compliance_domain=\"iso_10218\",\
         requires_review=\"true\"} == 1",
        1,
        WAIT,
    )
    .await
    .unwrap();
    prom.wait_for(
        "vla_safety_incidents_total{violation_type=\"workspace_boundary\",\
         safety_category=\"workspace\",requires_review=\"false\"} == 1",
        1,
        WAIT,
    )
    .await
    .unwrap();
    // The Safety dashboard's grouping sees both categories.
    let by_category = prom
        .query("sum by (safety_category) (vla_safety_incidents_total)")
        .await
        .unwrap();
    let categories: Vec<&str> = by_category
        .iter()
        .filter(|s| s.value > 0.0)
        .filter_map(|s| s.labels.get("safety_category").map(String::as_str))
        .collect();
    assert!(
        categories.contains(&"physical_harm") && categories.contains(&"workspace"),
        "{by_category:?}"
    );

    // The worker's latency, sliced by the model of the GPU it runs on.
    prom.wait_for(
        "vla_inference_duration_seconds_count{gpu_model=\"NVIDIA H100 80GB HBM3\",\
         job=\"vla/vla-api\"} == 3",
        1,
        WAIT,
    )
    .await
    .unwrap();

    // The GPU readings themselves, under the catalogue's names and DCGM's.
    for gpu in ["0", "1"] {
        for q in [
            format!(
                "vla_gpu_temperature_celsius{{gpu_id=\"{gpu}\",model_name=\"NVIDIA H100 80GB HBM3\"}}"
            ),
            format!("vla_gpu_utilization_percent{{gpu_id=\"{gpu}\"}}"),
            format!(
                "vla_gpu_memory_used_bytes{{gpu_id=\"{gpu}\"}} < vla_gpu_memory_total_bytes{{gpu_id=\"{gpu}\"}}"
            ),
            format!(
                "DCGM_FI_DEV_GPU_TEMP{{gpu=\"{gpu}\",device=\"nvidia{gpu}\",modelName=\"NVIDIA H100 80GB HBM3\"}}"
            ),
            format!(
                "DCGM_FI_DEV_FB_USED{{gpu=\"{gpu}\"}} * 1048576 == on(gpu) group_left label_replace(vla_gpu_memory_used_bytes, \"gpu\", \"$1\", \"gpu_id\", \"(.*)\")"
            ),
        ] {
            prom.wait_for(&q, 1, WAIT)
                .await
                .unwrap_or_else(|e| panic!("{q}: {e}"));
        }
    }
    let temps = prom.query("vla_gpu_temperature_celsius").await.unwrap();
    assert!(
        temps.iter().all(|s| (20.0..=95.0).contains(&s.value)),
        "{temps:?}"
    );

    // /ready shows the customer table's source as loaded and the GPUs as seen.
    let (code, body) = ready(&collector).await;
    assert_eq!(code, 200, "{body}");
    let tier = &component(&body, "processor", "customer_tier")["source"];
    assert_eq!(tier["status"], "ok", "{body}");
    assert_eq!(tier["entries"], 24, "{body}");
    let gpus = &component(&body, "receiver", "nvml")["source"];
    assert_eq!(
        (&gpus["status"], &gpus["entries"]),
        (&json!("ok"), &json!(2)),
        "{body}"
    );
    drop(collector);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_customer_file_is_reloaded_and_a_broken_one_keeps_the_last_good_table() {
    let prom = Prometheus::start(&[]).await.expect("prometheus");
    let ports = Ports::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("customers.csv");
    std::fs::write(&file, "customer_id,tier\nacme,pro\nglobex,free\n").unwrap();
    let config = vla_e2e::shipped_pipeline_config(&ports, &prom.write_url(), "100ms", |doc| {
        doc["processors"]["customer_tier"]["source"] =
            json!({ "file": file, "reload_interval": "100ms" });
        doc["processors"]["customer_tier"]["on_existing"] = json!("overwrite");
    })
    .unwrap();
    let collector = Collector::start(&config, ports.telemetry)
        .await
        .expect("collector");
    let api = vla_e2e::api_telemetry(ports.grpc, "api-reload").unwrap();
    // The quota gauge carries the API's own tier; the table's replaces it (on_existing:
    // overwrite). The request counter has no tier of its own and gets the table's.
    let acme_id = CustomerId::new("acme").unwrap();
    api.set_quota(&acme_id, Tier::Free, 10, 100);
    request(&api, "acme", Tier::Free);
    flush(&api).await;
    prom.wait_for(
        "vla_customer_requests_total{customer_id=\"acme\",tier=\"pro\"} == 1",
        1,
        WAIT,
    )
    .await
    .unwrap();
    prom.wait_for(
        "vla_quota_used{customer_id=\"acme\",tier=\"pro\"} == 10",
        1,
        WAIT,
    )
    .await
    .unwrap();
    let free = prom
        .query("vla_quota_used{customer_id=\"acme\",tier=\"free\"}")
        .await
        .unwrap();
    assert!(free.is_empty(), "the API's tier was not replaced: {free:?}");

    // An upgrade in the file shows within a reload.
    replace_file(&file, "customer_id,tier\nacme,enterprise\nglobex,free\n");
    let c = &collector;
    eventually(WAIT, || async move {
        let metrics = c.self_metrics().await.map_err(|e| e.to_string())?;
        let loads = metrics
            .get("vla_collector_lookup_refreshes_total{processor=\"customer_tier\",result=\"ok\"}")
            .copied()
            .unwrap_or(0.0);
        (loads >= 2.0)
            .then_some(())
            .ok_or(format!("not reloaded ({loads} loads)"))
    })
    .await
    .unwrap();
    // The API's counter is cumulative: the series with the new tier holds every request.
    let mut acme = 1 + request_until_tier(&api, &prom, "acme", "enterprise").await;

    // A broken edit: the last good table stays in use, and /ready says so with the line.
    replace_file(&file, "customer_id,tier\nacme,pro\nglobex\n");
    let (code, body) = eventually(WAIT, || async move {
        let (code, body) = ready(c).await;
        (component(&body, "processor", "customer_tier")["source"]["status"] == "failing")
            .then_some((code, body.clone()))
            .ok_or(format!("the broken file is not reported: {body}"))
    })
    .await
    .unwrap();
    assert_eq!(
        code, 200,
        "a broken customer file must not take the collector out: {body}"
    );
    let source = &component(&body, "processor", "customer_tier")["source"];
    let error = source["last_error"].as_str().unwrap();
    assert!(
        error.contains("customers.csv") && error.contains(":3"),
        "the error names the file and line: {error}"
    );
    assert_eq!(source["entries"], 2, "{body}");
    acme += 1;
    acme_is_still_enterprise(&api, &prom, acme).await;
    let (errors, metrics) = lookup_errors(&collector).await;
    assert!(errors >= 1.0, "{metrics:?}");
    drop(collector);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_file_that_does_not_load_stops_the_start_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("customers.yaml");
    std::fs::write(
        &file,
        "customers:\n  - { customer_id: acme, tier: pro }\n  - { customer_id: globex }\n",
    )
    .unwrap();
    // Port 0 everywhere: the start must fail on the file, never on a port another test took.
    let ports = Ports {
        grpc: 0,
        http: 0,
        scrape: 0,
        telemetry: 0,
    };
    let config = vla_e2e::shipped_pipeline_config(
        &ports,
        "http://127.0.0.1:9/api/v1/write",
        "100ms",
        |doc| doc["processors"]["customer_tier"]["source"] = json!({ "file": file }),
    )
    .unwrap();
    let config_file = dir.path().join("collector.yaml");
    std::fs::write(&config_file, config).unwrap();
    let mut child = std::process::Command::new(collector_binary().unwrap())
        .arg("--config")
        .arg(&config_file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It must refuse to start; if it starts anyway, stop it rather than hang the suite.
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the collector started on a broken customer file");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("customer_tier") && stderr.contains("customers.yaml:3"),
        "the error names the processor, the file and the line: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_gpu_the_collector_reports_none_and_runs_on() {
    let prom = Prometheus::start(&[]).await.expect("prometheus");
    let ports = Ports::new();
    let config = vla_e2e::shipped_pipeline_config(&ports, &prom.write_url(), "100ms", |doc| {
        // A library that is not there: a host without the NVIDIA driver, on any machine.
        doc["receivers"]["nvml"] = json!({
            "collection_interval": "100ms",
            "library_path": "/nonexistent/libnvidia-ml.so.1",
        });
    })
    .unwrap();
    let collector = Collector::start(&config, ports.telemetry)
        .await
        .expect("collector");
    prom.wait_for("vla_gpu_available == 0", 1, WAIT)
        .await
        .unwrap();
    // Several polls later: still one log line about it, still serving.
    let api = vla_e2e::api_telemetry(ports.grpc, "api-nogpu").unwrap();
    request(&api, "cust-0001", Tier::Enterprise);
    flush(&api).await;
    prom.wait_for(
        "vla_customer_requests_total{customer_id=\"cust-0001\",tier=\"enterprise\"} == 1",
        1,
        WAIT,
    )
    .await
    .unwrap();
    let (code, body) = ready(&collector).await;
    assert_eq!(code, 200, "{body}");
    let nvml = &component(&body, "receiver", "nvml")["source"];
    assert_eq!(nvml["status"], "failing", "{body}");
    assert!(
        nvml["last_error"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/libnvidia-ml.so.1"),
        "{body}"
    );
    let log = collector.process.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("nvml") && l.contains("WARN"))
        .count();
    assert_eq!(lines, 1, "one warning, not one per poll:\n{log}");
    let none = prom.query("vla_gpu_temperature_celsius").await.unwrap();
    assert!(none.is_empty(), "{none:?}");
    drop(collector);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tier_comes_from_postgresql_follows_an_update_and_survives_the_database_going_down() {
    let mut db = Postgres::start().await.expect("postgresql");
    db.execute(
        "CREATE TABLE customers (customer_id text PRIMARY KEY, tier text NOT NULL, plan text);
         INSERT INTO customers VALUES ('acme', 'pro', 'annual'), ('globex', 'free', NULL);",
    )
    .await
    .unwrap();
    let prom = Prometheus::start(&[]).await.expect("prometheus");
    let ports = Ports::new();
    // Trust authentication ignores the password; it is there to prove it leaks nowhere.
    let dsn = format!("{} password=s3cret-e2e", db.dsn());
    let config = vla_e2e::shipped_pipeline_config(&ports, &prom.write_url(), "100ms", |doc| {
        doc["processors"]["customer_tier"] = json!({
            "source": { "postgres": {
                "dsn": dsn,
                "query": "SELECT customer_id, tier, plan FROM customers",
                "refresh_interval": "200ms",
                "timeout": "2s",
            }},
            "on_existing": "overwrite",
            "attributes": { "plan": "customer_plan" },
        });
    })
    .unwrap();
    let collector = Collector::start(&config, ports.telemetry)
        .await
        .expect("collector");
    let c = &collector;
    eventually(WAIT, || async move {
        let (_, body) = ready(c).await;
        let source = component(&body, "processor", "customer_tier")["source"].clone();
        (source["status"] == "ok" && source["entries"] == 2)
            .then_some(())
            .ok_or(format!("the table is not loaded: {source}"))
    })
    .await
    .unwrap();
    let described = {
        let (_, body) = ready(c).await;
        component(&body, "processor", "customer_tier")["source"]["source"].clone()
    };
    assert_eq!(
        described,
        json!(format!("postgres 127.0.0.1:{}/postgres", db.port())),
        "the source is named without credentials"
    );

    // The row's tier and plan, in Prometheus.
    let api = vla_e2e::api_telemetry(ports.grpc, "api-pg").unwrap();
    request(&api, "acme", Tier::Free);
    request(&api, "globex", Tier::Free);
    flush(&api).await;
    prom.wait_for(
        "vla_customer_requests_total{customer_id=\"acme\",tier=\"pro\",customer_plan=\"annual\"} == 1",
        1,
        WAIT,
    )
    .await
    .unwrap();
    let globex = prom
        .wait_for(
            "vla_customer_requests_total{customer_id=\"globex\",tier=\"free\"}",
            1,
            WAIT,
        )
        .await
        .unwrap();
    assert!(
        !globex[0].labels.contains_key("customer_plan"),
        "a NULL column adds no label: {globex:?}"
    );

    // An upgrade in the database shows within a refresh.
    db.execute("UPDATE customers SET tier = 'enterprise' WHERE customer_id = 'acme'")
        .await
        .unwrap();
    // The API's counter is cumulative: the series with the new tier holds every request.
    let mut acme = 1 + request_until_tier(&api, &prom, "acme", "enterprise").await;

    // The database goes down: the last table stays in use, /ready says so, the collector stays
    // ready, and the failures are counted.
    db.stop().await.unwrap();
    let body = eventually(WAIT, || async move {
        let (code, body) = ready(c).await;
        let source = &component(&body, "processor", "customer_tier")["source"];
        (code == 200 && source["status"] == "failing" && source["entries"] == 2)
            .then_some(body.clone())
            .ok_or(format!("the outage is not reported: {code} {body}"))
    })
    .await
    .unwrap();
    assert!(
        !body.to_string().contains("s3cret"),
        "no password on /ready: {body}"
    );
    acme += 1;
    acme_is_still_enterprise(&api, &prom, acme).await;
    let (errors, metrics) = lookup_errors(&collector).await;
    assert!(errors >= 1.0, "{metrics:?}");
    assert!(!format!("{metrics:?}").contains("s3cret"));
    let log = collector.process.log();
    assert!(
        log.contains("customer_tier") && !log.contains("s3cret"),
        "the outage is logged, without the password:\n{log}"
    );
    drop(collector);
}
