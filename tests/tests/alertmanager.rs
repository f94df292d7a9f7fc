//! configs/alertmanager/alertmanager.yml, tested for real with Debian's Alertmanager 0.25:
//!
//! 1. `amtool check-config` accepts it (the secret files need not exist), a real Alertmanager
//!    starts on it, and it holds no secret, only `*_file` paths under /etc/alertmanager/secrets/.
//! 2. `amtool config routes test` sends every kind of alert to exactly the intended receivers.
//! 3. On a real Alertmanager (every receiver turned into a webhook of this test), ServiceDown
//!    inhibits the other alerts of its service (not its safety alerts) and a critical alert its
//!    warning twin, and only the alerts not inhibited are notified.
//! 4. End to end: the simulator's `error-spike` → vla-collector → Prometheus running the real
//!    alerts.yml and recording.yml (with `for:` and intervals shortened) → Alertmanager → the
//!    webhook receives HighErrorRate, firing, on both critical receivers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vla_e2e::alertmanager::{Alertmanager, Webhook, amtool_binary};
use vla_e2e::{Prometheus, eventually, fast_rules, free_port};
use vla_sdk::sim::{Scenario, SimConfig, Simulation};

const CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../configs/alertmanager/alertmanager.yml"
);
const SECRETS_DIR: &str = "/etc/alertmanager/secrets/";
const WAIT: Duration = Duration::from_secs(20);

fn amtool(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(amtool_binary().expect("amtool"))
        .args(args)
        .output()
        .expect("run amtool");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn load_yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every `(key, value)` in `v` at any depth.
fn walk<'a>(v: &'a Value, out: &mut Vec<(&'a str, &'a Value)>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                out.push((k, child));
                walk(child, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|c| walk(c, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_config_checks_loads_and_holds_no_secret() {
    let (ok, stdout, stderr) = amtool(&["check-config", CONFIG]);
    assert!(ok, "amtool check-config failed:\n{stdout}\n{stderr}");
    for want in ["SUCCESS", "- 2 inhibit rules", "- 4 receivers"] {
        assert!(stdout.contains(want), "{want:?} not in:\n{stdout}");
    }

    // Secrets come from files only, all in one directory.
    let cfg = load_yaml(CONFIG);
    let mut fields = Vec::new();
    walk(&cfg, &mut fields);
    let mut files = BTreeSet::new();
    for (key, value) in fields {
        assert!(
            ![
                "api_url",
                "slack_api_url",
                "routing_key",
                "service_key",
                "auth_password",
                "smtp_auth_password",
                "auth_secret",
                "smtp_auth_secret"
            ]
            .contains(&key),
            "inline secret {key} in {CONFIG}"
        );
        if key.ends_with("_file") {
            let path = value.as_str().unwrap();
            assert!(path.starts_with(SECRETS_DIR), "{key}: {path}");
            files.insert((key, path));
        }
    }
    assert_eq!(
        files,
        BTreeSet::from([
            (
                "api_url_file",
                "/etc/alertmanager/secrets/slack-webhook-url"
            ),
            (
                "routing_key_file",
                "/etc/alertmanager/secrets/pagerduty-routing-key"
            ),
            (
                "smtp_auth_password_file",
                "/etc/alertmanager/secrets/smtp-password"
            ),
        ])
    );

    // The server itself accepts the file as it is, secret files absent or not.
    let text = std::fs::read_to_string(CONFIG).unwrap();
    let am = Alertmanager::start(&text).await.expect("alertmanager");
    let status: Value = reqwest::get(format!("{}/api/v2/status", am.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["cluster"]["status"], "disabled", "{status}");
    assert!(
        status["config"]["original"]
            .as_str()
            .unwrap()
            .contains("pagerduty-sre"),
        "{status}"
    );
}

#[test]
fn every_kind_of_alert_reaches_exactly_its_receivers() {
    let config = format!("--config.file={CONFIG}");
    let cases: &[(&[&str], &str)] = &[
        // Critical SRE alerts page and post to the critical channel.
        (
            &["alertname=HighErrorRate", "severity=critical", "team=sre"],
            "pagerduty-sre,slack-critical",
        ),
        (
            &["alertname=ServiceDown", "severity=critical", "team=sre"],
            "pagerduty-sre,slack-critical",
        ),
        // Warnings go to the warnings channel only.
        (
            &["alertname=HighLatency", "severity=warning", "team=sre"],
            "slack-warnings",
        ),
        (
            &["alertname=QuotaExceeded", "severity=warning", "team=sre"],
            "slack-warnings",
        ),
        // Safety alerts also reach the safety team's inbox, at either severity.
        (
            &[
                "alertname=CriticalSafetyIncident",
                "severity=critical",
                "team=safety",
            ],
            "pagerduty-sre,slack-critical,email-safety",
        ),
        (
            &[
                "alertname=SafetyIncidentSurge",
                "severity=critical",
                "team=safety",
            ],
            "pagerduty-sre,slack-critical,email-safety",
        ),
        (
            &["alertname=SafetyWarning", "severity=warning", "team=safety"],
            "slack-warnings,email-safety",
        ),
        // Anything unlabelled is treated as a warning rather than dropped.
        (&["alertname=Unlabelled"], "slack-warnings"),
        (
            &["alertname=Odd", "severity=info", "team=safety"],
            "slack-warnings,email-safety",
        ),
    ];
    for (labels, want) in cases {
        let mut args = vec!["config", "routes", "test", config.as_str()];
        args.extend_from_slice(labels);
        args.extend_from_slice(&["service=vla-api", "job=vla/vla-api"]);
        let (ok, stdout, stderr) = amtool(&args);
        assert!(ok, "{labels:?}: amtool failed:\n{stdout}\n{stderr}");
        assert_eq!(stdout.trim(), *want, "{labels:?}");
    }
}

/// The repository's alertmanager.yml with each receiver's integrations replaced by one webhook
/// to `url` (receiver names, routes and inhibition rules as they are) and every group_wait and
/// group_interval cut to 1 s.
fn test_config(url: &str) -> String {
    let mut cfg = load_yaml(CONFIG);
    let receivers = cfg["receivers"].as_array_mut().unwrap();
    for r in receivers.iter_mut() {
        *r = json!({
            "name": r["name"].clone(),
            "webhook_configs": [{ "url": url, "send_resolved": false }],
        });
    }
    fn fast(route: &mut Value, root: bool) {
        for key in ["group_wait", "group_interval"] {
            if root || route.get(key).is_some() {
                route[key] = json!("1s");
            }
        }
        if let Some(children) = route.get_mut("routes").and_then(Value::as_array_mut) {
            children.iter_mut().for_each(|c| fast(c, false));
        }
    }
    fast(&mut cfg["route"], true);
    // JSON is YAML: Alertmanager reads it as it is.
    serde_json::to_string_pretty(&cfg).unwrap()
}

/// "alertname/service/severity" of an alert as the API or a webhook shows it.
/// `alertname/service/severity`, then `/job` when the job is not the usual `vla/vla-api`.
fn key(alert: &Value) -> String {
    let l = &alert["labels"];
    let s = |k: &str| l[k].as_str().unwrap_or_default().to_owned();
    let mut k = format!("{}/{}/{}", s("alertname"), s("service"), s("severity"));
    if s("job") != "vla/vla-api" {
        k = format!("{k}/{}", s("job"));
    }
    k
}

fn alert(labels: &[(&str, &str)]) -> Value {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    json!({ "labels": labels, "annotations": { "summary": "posted by the test" } })
}

#[tokio::test(flavor = "multi_thread")]
async fn service_down_and_critical_twins_inhibit_the_rest() {
    let hook = Webhook::start().await.expect("webhook");
    let am = Alertmanager::start(&test_config(hook.url()))
        .await
        .expect("alertmanager");
    let common = [("team", "sre"), ("job", "vla/vla-api")];
    let with = |extra: &[(&str, &str)]| {
        let mut l = common.to_vec();
        l.extend_from_slice(extra);
        alert(&l)
    };
    // Sources first, so the inhibitor knows them before any target's group is flushed.
    am.post_alerts(&json!([
        with(&[
            ("alertname", "ServiceDown"),
            ("severity", "critical"),
            ("service", "vla-api"),
            ("component", "api"),
        ]),
        with(&[
            ("alertname", "GPUOverheating"),
            ("severity", "critical"),
            ("service", "vla-batch"),
            ("gpu_id", "0"),
        ]),
    ]))
    .await
    .unwrap();
    eventually(WAIT, || async {
        let n = am.alerts().await.map_err(|e| e.to_string())?.len();
        if n == 2 {
            Ok(())
        } else {
            Err(format!("{n} alerts, want the 2 sources"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    am.post_alerts(&json!([
        // The service is down: its other alerts, critical or not, are inhibited.
        with(&[
            ("alertname", "HighLatency"),
            ("severity", "warning"),
            ("service", "vla-api"),
        ]),
        with(&[
            ("alertname", "HighErrorRate"),
            ("severity", "critical"),
            ("service", "vla-api"),
        ]),
        // ...but not in another job, where the API is up...
        with(&[
            ("alertname", "HighLatency"),
            ("severity", "warning"),
            ("service", "vla-api"),
            ("job", "vla/canary"),
        ]),
        // ...and never its safety alerts: they reach the safety team whatever else is down.
        with(&[
            ("alertname", "CriticalSafetyIncident"),
            ("severity", "critical"),
            ("service", "vla-api"),
            ("team", "safety"),
        ]),
        // The warning twin of a critical alert is inhibited (another GPU: labels other than
        // alertname and service need not match)...
        with(&[
            ("alertname", "GPUOverheating"),
            ("severity", "warning"),
            ("service", "vla-batch"),
            ("gpu_id", "1"),
        ]),
        // ...but not a warning of another name, nor a twin in another service.
        with(&[
            ("alertname", "GPUMemoryHigh"),
            ("severity", "warning"),
            ("service", "vla-batch"),
        ]),
        with(&[
            ("alertname", "GPUOverheating"),
            ("severity", "warning"),
            ("service", "vla-other"),
        ]),
    ]))
    .await
    .unwrap();

    // "alertname/service/severity" -> its state, and the alerts inhibiting it.
    let want: BTreeMap<String, String> = [
        ("ServiceDown/vla-api/critical", "active"),
        ("GPUOverheating/vla-batch/critical", "active"),
        (
            "HighLatency/vla-api/warning",
            "suppressed by [ServiceDown/vla-api/critical]",
        ),
        (
            "HighErrorRate/vla-api/critical",
            "suppressed by [ServiceDown/vla-api/critical]",
        ),
        (
            "GPUOverheating/vla-batch/warning",
            "suppressed by [GPUOverheating/vla-batch/critical]",
        ),
        ("CriticalSafetyIncident/vla-api/critical", "active"),
        ("HighLatency/vla-api/warning/vla/canary", "active"),
        ("GPUMemoryHigh/vla-batch/warning", "active"),
        ("GPUOverheating/vla-other/warning", "active"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .into();
    eventually(WAIT, || async {
        let alerts = am.alerts().await.map_err(|e| e.to_string())?;
        let by_fp: BTreeMap<&str, String> = alerts
            .iter()
            .map(|a| (a["fingerprint"].as_str().unwrap_or_default(), key(a)))
            .collect();
        let got: BTreeMap<String, String> = alerts
            .iter()
            .map(|a| {
                let state = a["status"]["state"].as_str().unwrap_or_default();
                let by: Vec<&str> = a["status"]["inhibitedBy"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|fp| {
                        by_fp
                            .get(fp.as_str().unwrap_or_default())
                            .map_or("?", |k| k.as_str())
                    })
                    .collect();
                let status = if by.is_empty() {
                    state.to_owned()
                } else {
                    format!("{state} by [{}]", by.join(", "))
                };
                (key(a), status)
            })
            .collect();
        if got == want {
            Ok(())
        } else {
            Err(format!(
                "alerts and inhibitors:\n got {got:#?}\nwant {want:#?}"
            ))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // Each alert not inhibited is notified on its route's receivers; none inhibited ever is.
    let notified = [
        (
            "ServiceDown",
            "vla-api",
            &["pagerduty-sre", "slack-critical"][..],
        ),
        (
            "GPUOverheating",
            "vla-batch",
            &["pagerduty-sre", "slack-critical"][..],
        ),
        (
            "CriticalSafetyIncident",
            "vla-api",
            &["pagerduty-sre", "slack-critical", "email-safety"][..],
        ),
        ("GPUMemoryHigh", "vla-batch", &["slack-warnings"][..]),
        ("GPUOverheating", "vla-other", &["slack-warnings"][..]),
    ];
    eventually(WAIT, || async {
        for (name, service, receivers) in notified {
            let got = hook.receivers_of(name, service);
            let want: BTreeSet<String> = receivers.iter().map(|r| (*r).to_owned()).collect();
            if got != want {
                return Err(format!(
                    "{name} in {service} notified to {got:?}, want {want:?}"
                ));
            }
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    for (receiver, _, a) in hook.alerts() {
        let k = key(&a);
        assert_eq!(
            want[&k], "active",
            "{k:?} was inhibited yet notified to {receiver}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_error_spike_pages_through_prometheus_and_alertmanager() {
    let (alert_rules, alert_names) = fast_rules("configs/prometheus/alerts.yml", "5s").unwrap();
    assert_eq!(alert_names.len(), 13, "{alert_names:?}");
    assert!(alert_names.iter().any(|n| n == "HighErrorRate"));
    let (recording_rules, _) = fast_rules("configs/prometheus/recording.yml", "5s").unwrap();

    let hook = Webhook::start().await.expect("webhook");
    let am = Alertmanager::start(&test_config(hook.url()))
        .await
        .expect("alertmanager");
    let am_target = am.url.trim_start_matches("http://");
    let prom_config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files: [recording.yml, alerts.yml]\n\
         alerting:\n  alertmanagers:\n    - api_version: v2\n      \
         static_configs: [{{ targets: ['{am_target}'] }}]\n"
    );
    let prom = Prometheus::start_with(
        free_port(),
        &prom_config,
        &[
            ("recording.yml", &recording_rules),
            ("alerts.yml", &alert_rules),
        ],
    )
    .await
    .expect("prometheus");
    let (ports, collector) = vla_e2e::collector_into(&prom, "100ms")
        .await
        .expect("collector");

    let telemetry = vla_e2e::api_telemetry(ports.grpc, "api-e2e").unwrap();
    let mut sim = Simulation::new(SimConfig {
        scenario: Scenario::ErrorSpike,
        rate: 30.0,
        seed: 5,
        ..SimConfig::default()
    });
    // Five simulated seconds per export, exported as fast as the pipeline takes them, until
    // Alertmanager has notified both critical receivers.
    let deadline = Instant::now() + Duration::from_secs(45);
    let want: BTreeSet<String> = ["pagerduty-sre", "slack-critical"].map(String::from).into();
    loop {
        if hook.receivers_of("HighErrorRate", "vla-api") == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no HighErrorRate notification on {want:?}; webhook got {:?}\nrules: {:?}\n\
             alertmanager log:\n{}",
            hook.alerts(),
            reqwest::get(format!("{}/api/v1/alerts", prom.url))
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
            am.process.log(),
        );
        for _ in 0..5 {
            sim.step(&telemetry);
        }
        let t = telemetry.clone();
        tokio::task::spawn_blocking(move || t.force_flush())
            .await
            .unwrap()
            .expect("export to the collector");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let fired: Vec<(String, String, Value)> = hook
        .alerts()
        .into_iter()
        .filter(|(_, _, a)| a["labels"]["alertname"] == "HighErrorRate")
        .collect();
    for (receiver, status, a) in &fired {
        assert_eq!(status, "firing", "{receiver}: {a}");
        assert_eq!(a["status"], "firing", "{receiver}: {a}");
        let labels: BTreeMap<String, String> = serde_json::from_value(a["labels"].clone()).unwrap();
        let want_labels: BTreeMap<String, String> = [
            ("alertname", "HighErrorRate"),
            ("severity", "critical"),
            ("team", "sre"),
            ("service", "vla-api"),
            ("job", "vla/vla-api"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
        assert_eq!(labels, want_labels, "{receiver}: {a}");
        // Prometheus names its host, not 127.0.0.1, in the link; its port and the rule are ours.
        let port = prom.url.rsplit(':').next().unwrap();
        assert!(
            a["generatorURL"].as_str().unwrap().contains(&format!(
                ":{port}/graph?g0.expr=job%3Avla_inference_errors%3Aratio_rate5m+%3E+0.05"
            )),
            "not from the test's Prometheus and rule: {a}"
        );
        assert!(
            a["annotations"]["summary"]
                .as_str()
                .unwrap()
                .starts_with("vla/vla-api: "),
            "{a}"
        );
    }
    // The simulator did cross the threshold, by the recording rule the alert reads.
    let ratio = prom
        .query("job:vla_inference_errors:ratio_rate5m")
        .await
        .unwrap();
    assert_eq!(ratio.len(), 1, "{ratio:?}");
    assert!(ratio[0].value > 0.05, "{ratio:?}");

    let t = telemetry.clone();
    drop(telemetry);
    tokio::task::spawn_blocking(move || drop(t)).await.unwrap();
    drop(collector);
}
