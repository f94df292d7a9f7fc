//! The shipped monitoring stack, checked without a Docker engine:
//! - `configs/docker-compose.yml`: container names `vlaapi-<service>`, the dev/prod profiles,
//!   the seed's ports, named volumes declared and used, every host path it mounts present in
//!   the repo, Prometheus's retention flags, no literal secret, the collector built from the
//!   Dockerfile, Alertmanager's secret files where `alertmanager.yml` reads them;
//! - `configs/prometheus/prometheus.yml`: `promtool check config` (which also checks the rule
//!   files it names), the seed's 15 s intervals, and every scrape target a compose service
//!   that listens on that port;
//! - `Dockerfile`: builds the binaries that exist, copies files that exist, runs as non-root;
//! - `scripts/stack`: parses, and answers `--help`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Value {
    serde_saphyr::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn compose() -> Value {
    yaml("configs/docker-compose.yml")
}

/// Compose paths are relative to the compose file's folder.
fn from_compose_dir(path: &str) -> PathBuf {
    repo("configs").join(path)
}

fn services(c: &Value) -> &serde_json::Map<String, Value> {
    c["services"].as_object().expect("services: is a mapping")
}

/// Compose interpolation as it resolves with an empty environment: `${VAR:-default}` and
/// `${VAR-default}` give the default, `${VAR}`, `${VAR:?err}` and `${VAR?err}` give "".
fn resolve(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("an unclosed ${") + start;
        let inner = &rest[start + 2..end];
        if let Some((_, default)) = inner.split_once(":-").or_else(|| inner.split_once('-')) {
            out.push_str(default);
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|x| x.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// A service's short-syntax volumes as (source, target).
fn mounts(service: &Value) -> Vec<(String, String)> {
    strings(&service["volumes"])
        .iter()
        .map(|m| {
            let mut parts = m.split(':');
            let src = parts.next().unwrap().to_owned();
            let dst = parts
                .next()
                .unwrap_or_else(|| panic!("{m}: a volume without a target"));
            (src, dst.to_owned())
        })
        .collect()
}

fn is_host_path(src: &str) -> bool {
    src.starts_with('.') || src.starts_with('/') || src.starts_with('~')
}

/// The file in the repo that a container path of `service` comes from, through its mounts.
fn host_file(service: &Value, container_path: &str) -> Option<PathBuf> {
    mounts(service)
        .into_iter()
        .filter(|(src, _)| src.starts_with('.'))
        .find_map(|(src, dst)| {
            let rel = container_path.strip_prefix(&dst)?;
            let base = from_compose_dir(src.trim_start_matches("./"));
            match rel.strip_prefix('/') {
                Some(rel) => Some(base.join(rel)),
                None if rel.is_empty() => Some(base),
                None => None, // /etc/vla2 is not under /etc/vla
            }
        })
}

/// A service's published ports (short syntax, `[ADDR:]PUBLISHED:TARGET`) as (published, target).
fn ports(service: &Value) -> Vec<(u16, u16)> {
    strings(&service["ports"])
        .iter()
        .map(|p| {
            let p = resolve(p);
            let mut parts = p.trim_end_matches("/tcp").rsplit(':');
            let target = parts.next().unwrap().parse().unwrap();
            let published = parts.next().unwrap_or_else(|| panic!("{p}: not published"));
            (published.parse().unwrap(), target)
        })
        .collect()
}

/// Each service, its profiles (all in dev and prod, except the GPU exporter, prod only, and
/// the simulator, dev only) and the ports it publishes (the seed's, and the collector's).
const SERVICES: &[(&str, &[&str], &[u16])] = &[
    ("prometheus", &["dev", "prod"], &[9090]),
    ("grafana", &["dev", "prod"], &[3000]),
    ("alertmanager", &["dev", "prod"], &[9093]),
    ("node-exporter", &["dev", "prod"], &[9100]),
    ("postgres-exporter", &["dev", "prod"], &[9187]),
    ("redis-exporter", &["dev", "prod"], &[9121]),
    ("collector", &["dev", "prod"], &[4317, 4318, 8888, 9464]),
    ("simulator", &["dev"], &[]),
    ("dcgm-exporter", &["prod"], &[9400]),
];

#[test]
fn every_service_is_named_vlaapi_and_in_its_profiles() {
    let c = compose();
    let got: BTreeSet<&str> = services(&c).keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = SERVICES.iter().map(|p| p.0).collect();
    assert_eq!(got, want);
    for (name, profiles, _) in SERVICES {
        let s = &services(&c)[*name];
        assert_eq!(s["container_name"], format!("vlaapi-{name}"), "{name}");
        let mut got = strings(&s["profiles"]);
        got.sort();
        assert_eq!(got, *profiles, "{name}: profiles");
    }
}

#[test]
fn the_seeds_ports_are_published_by_their_service_on_the_same_port() {
    let c = compose();
    for (name, _, want) in SERVICES {
        let got = ports(&services(&c)[*name]);
        assert!(got.iter().all(|(p, t)| p == t), "{name}: {got:?}");
        let got: Vec<u16> = got.iter().map(|p| p.0).collect();
        assert_eq!(got, *want, "{name}");
    }
}

#[test]
fn named_volumes_are_declared_and_used_where_the_data_lives() {
    let c = compose();
    let declared: BTreeSet<&str> = c["volumes"]
        .as_object()
        .expect("top-level volumes:")
        .keys()
        .map(String::as_str)
        .collect();
    let mut used = BTreeMap::new();
    for (name, s) in services(&c) {
        for (src, dst) in mounts(s) {
            if !is_host_path(&src) {
                assert!(
                    declared.contains(src.as_str()),
                    "{name}: {src} not declared"
                );
                used.insert(src, (name.clone(), dst));
            }
        }
    }
    let used_names: BTreeSet<&str> = used.keys().map(String::as_str).collect();
    assert_eq!(used_names, declared, "declared but unused, or the reverse");
    assert_eq!(
        used["prometheus-data"],
        ("prometheus".to_owned(), "/prometheus".to_owned())
    );
    assert_eq!(
        used["grafana-data"],
        ("grafana".to_owned(), "/var/lib/grafana".to_owned())
    );
    let flags = strings(&services(&c)["prometheus"]["command"]);
    assert!(flags.contains(&"--storage.tsdb.path=/prometheus".to_owned()));
}

#[test]
fn every_host_path_mounted_exists_in_the_repo() {
    let c = compose();
    // The node exporter reads the host itself; nothing else may reach outside the repo.
    let host_system = ["/proc", "/sys", "/"];
    for (name, s) in services(&c) {
        for (src, dst) in mounts(s) {
            if src.starts_with('.') {
                let path = from_compose_dir(&src);
                assert!(
                    path.exists(),
                    "{name}: {src} (for {dst}) is not in the repo"
                );
            } else if src.starts_with('/') {
                assert!(
                    name == "node-exporter" && host_system.contains(&src.as_str()),
                    "{name}: mounts the host's {src}"
                );
            }
        }
    }
    // Secrets' files come from the environment; unset, they are /dev/null (never a file in
    // the repo, which would put a secret under version control).
    for (id, secret) in c["secrets"].as_object().expect("top-level secrets:") {
        let file = secret["file"]
            .as_str()
            .unwrap_or_else(|| panic!("{id}: file"));
        assert!(
            file.starts_with("${"),
            "{id}: {file} is not from the environment"
        );
        assert_eq!(resolve(file), "/dev/null", "{id}");
    }
    // What each server is told to read is in a mount that exists: (service, path inside, file
    // under configs/).
    let svc = services(&c);
    let cases = "prometheus /etc/prometheus/prometheus.yml prometheus/prometheus.yml
        alertmanager /etc/alertmanager/config/alertmanager.yml alertmanager/alertmanager.yml
        collector /etc/vla/collector.yaml collector-docker.yaml
        grafana /etc/grafana/provisioning grafana/provisioning
        grafana /var/lib/grafana/dashboards grafana/dashboards";
    for case in cases.lines() {
        let [name, inside, want] = case.split_whitespace().collect::<Vec<_>>()[..] else {
            panic!("{case}")
        };
        let got = host_file(&svc[name], inside).unwrap_or_else(|| panic!("{name}: {inside}"));
        assert_eq!(got, from_compose_dir(want), "{name}: {inside}");
        assert!(got.exists(), "{name}: {} is missing", got.display());
    }
    let flag = |name: &str, prefix: &str| {
        strings(&svc[name]["command"])
            .into_iter()
            .find_map(|f| f.strip_prefix(prefix).map(str::to_owned))
            .unwrap_or_else(|| panic!("{name}: no {prefix}"))
    };
    assert_eq!(
        flag("prometheus", "--config.file="),
        "/etc/prometheus/prometheus.yml"
    );
    assert_eq!(
        flag("alertmanager", "--config.file="),
        "/etc/alertmanager/config/alertmanager.yml"
    );
    let collector = strings(&svc["collector"]["command"]);
    assert_eq!(
        collector,
        ["vla-collector", "--config", "/etc/vla/collector.yaml"]
    );
}

#[test]
fn prometheus_keeps_30_days_or_50_gb_and_accepts_remote_write() {
    let c = compose();
    let flags = strings(&services(&c)["prometheus"]["command"]);
    for want in [
        "--storage.tsdb.retention.time=30d",
        "--storage.tsdb.retention.size=50GB",
        "--web.enable-remote-write-receiver",
        "--web.enable-lifecycle",
    ] {
        assert!(
            flags.iter().any(|f| f == want),
            "{want} missing from {flags:?}"
        );
    }
    let retention: Vec<_> = flags.iter().filter(|f| f.contains("retention")).collect();
    assert_eq!(retention.len(), 2, "{retention:?}");
}

/// Keys whose values are secrets: lower-cased substrings, space-separated.
const SECRET_KEYS: &str = "password passwd secret token api_key apikey routing_key service_key webhook dsn data_source_name api_url";

/// Hosts of notification webhooks: their URLs are credentials.
const WEBHOOK_HOSTS: &[&str] = &[
    "hooks.slack.com",
    "events.pagerduty.com",
    "discord.com/api/webhooks",
    "webhook.office.com",
];

/// A value that is only `${VAR}`, `${VAR:?..}`, `${VAR?..}` or `${VAR:-}`: from the
/// environment, with no literal default.
fn from_env_without_default(v: &str) -> bool {
    v.starts_with("${") && v.ends_with('}') && v.matches("${").count() == 1 && resolve(v).is_empty()
}

/// Every literal secret in `v`, by YAML path.
fn literal_secrets(v: &Value, path: &str, out: &mut Vec<String>) {
    let key_is_secret = |k: &str| {
        let k = k.to_ascii_lowercase();
        SECRET_KEYS.split(' ').any(|s| k.contains(s))
    };
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = format!("{path}.{k}");
                match v {
                    Value::String(s) if key_is_secret(k) && !from_env_without_default(s) => {
                        out.push(format!("{p}: {s}"));
                    }
                    Value::Number(_) | Value::Bool(_) if key_is_secret(k) => {
                        out.push(format!("{p}: {v}"));
                    }
                    _ => literal_secrets(v, &p, out),
                }
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                literal_secrets(v, &format!("{path}[{i}]"), out);
            }
        }
        Value::String(s) => {
            // The list form of `environment:`: KEY=value.
            if let Some((k, val)) = s.split_once('=')
                && !k.contains(' ')
                && key_is_secret(k)
                && !from_env_without_default(val)
            {
                out.push(format!("{path}: {s}"));
            }
            if WEBHOOK_HOSTS.iter().any(|h| s.contains(h)) {
                out.push(format!("{path}: a webhook URL"));
            }
            // user:password@ in a URL
            if let Some(after) = s.split_once("://").map(|x| x.1) {
                let authority = after.split('/').next().unwrap_or("");
                if let Some((userinfo, _)) = authority.rsplit_once('@')
                    && let Some((_, pass)) = userinfo.split_once(':')
                    && !from_env_without_default(pass)
                {
                    out.push(format!("{path}: a password in a URL"));
                }
            }
        }
        _ => {}
    }
}

fn secrets_in(yaml_text: &str) -> Vec<String> {
    let v: Value = serde_saphyr::from_str(yaml_text).unwrap();
    let mut out = Vec::new();
    literal_secrets(&v, "", &mut out);
    out
}

#[test]
fn the_compose_file_holds_no_literal_secret() {
    let text = read("configs/docker-compose.yml");
    assert_eq!(secrets_in(&text), Vec::<String>::new());
    // Comments too: no webhook URL, even as an example.
    for host in WEBHOOK_HOSTS {
        assert!(!text.contains(host), "{host} in docker-compose.yml");
    }
    // The secrets the servers need come from the environment, required where there is no safe
    // default.
    let c = compose();
    let env = |s: &str, k: &str| {
        services(&c)[s]["environment"][k]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let grafana = env("grafana", "GF_SECURITY_ADMIN_PASSWORD");
    assert!(
        grafana.starts_with("${GRAFANA_ADMIN_PASSWORD:?"),
        "{grafana}"
    );
    let dsn = env("postgres-exporter", "DATA_SOURCE_NAME");
    assert!(dsn.starts_with("${POSTGRES_EXPORTER_DSN:?"), "{dsn}");
}

/// The check above can fail: it finds each kind of literal secret.
#[test]
fn the_secret_check_finds_literal_secrets() {
    let bad = r#"
services:
  a:
    environment:
      GF_SECURITY_ADMIN_PASSWORD: admin
      REDIS_PASSWORD: "${REDIS_PASSWORD:-hunter2}"
      DATA_SOURCE_NAME: postgresql://u:pw@db:5432/x
  b:
    environment:
      - SMTP_PASSWORD=letmein
    command: ["--url", "https://hooks.slack.com/services/T0/B0/X"]
  c:
    password: 1234
"#;
    let found = secrets_in(bad);
    assert_eq!(found.len(), 6, "{found:#?}");
    let good = r#"
services:
  a:
    environment:
      GF_SECURITY_ADMIN_PASSWORD: "${GRAFANA_ADMIN_PASSWORD:?set it}"
      REDIS_PASSWORD: "${REDIS_PASSWORD:-}"
  b:
    environment: ["SMTP_PASSWORD=${SMTP_PASSWORD}"]
secrets:
  slack-webhook-url: { file: "${F:-/dev/null}" }
"#;
    assert_eq!(secrets_in(good), Vec::<String>::new());
}

#[test]
fn alertmanager_gets_each_secret_file_its_config_reads() {
    let c = compose();
    let am = &services(&c)["alertmanager"];
    let declared: BTreeSet<&str> = c["secrets"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut targets = BTreeSet::new();
    for s in am["secrets"].as_array().expect("alertmanager: secrets") {
        let source = s["source"].as_str().unwrap();
        assert!(declared.contains(source), "{source} is not declared");
        targets.insert(s["target"].as_str().unwrap().to_owned());
    }
    let mut read_by_config = BTreeSet::new();
    files_read(
        &yaml("configs/alertmanager/alertmanager.yml"),
        &mut read_by_config,
    );
    assert!(
        !read_by_config.is_empty(),
        "alertmanager.yml reads no secret file?"
    );
    assert_eq!(targets, read_by_config);
}

/// Every value of a `*_file` key (api_url_file, routing_key_file, ...) in an Alertmanager config.
fn files_read(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match v.as_str() {
                    Some(s) if k.ends_with("_file") => {
                        out.insert(s.to_owned());
                    }
                    _ => files_read(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| files_read(v, out)),
        _ => {}
    }
}

#[test]
fn the_collector_is_built_from_the_dockerfile_and_the_simulator_reuses_its_image() {
    let c = compose();
    let svc = services(&c);
    let build = &svc["collector"]["build"];
    let context = from_compose_dir(build["context"].as_str().unwrap());
    assert_eq!(
        context.canonicalize().unwrap(),
        repo("").canonicalize().unwrap()
    );
    let dockerfile = context.join(build["dockerfile"].as_str().unwrap());
    assert!(dockerfile.is_file(), "{}", dockerfile.display());
    assert_eq!(svc["simulator"]["image"], svc["collector"]["image"]);
    assert_eq!(svc["simulator"]["build"], svc["collector"]["build"]);
    let sim = strings(&svc["simulator"]["command"]);
    assert_eq!(sim[0], "vla-api-sim");
    assert!(
        sim.windows(2)
            .any(|w| w == ["--endpoint", "http://collector:4317"]),
        "{sim:?}"
    );
    // The GPU exporter asks for the NVIDIA runtime.
    let devices = &svc["dcgm-exporter"]["deploy"]["resources"]["reservations"]["devices"][0];
    assert_eq!(devices["driver"], "nvidia");
    assert!(strings(&devices["capabilities"]).contains(&"gpu".to_owned()));
    // Healthchecks where the image has a way to make one.
    for name in [
        "prometheus",
        "grafana",
        "alertmanager",
        "node-exporter",
        "postgres-exporter",
        "collector",
        "dcgm-exporter",
    ] {
        assert!(
            svc[name]["healthcheck"]["test"].is_array(),
            "{name}: no healthcheck"
        );
    }
}

/// The collector's container config listens where compose publishes and Prometheus scrapes.
#[test]
fn the_docker_collector_config_listens_on_every_interface() {
    let v = yaml("configs/collector-docker.yaml");
    let otlp = &v["receivers"]["otlp"]["protocols"];
    assert_eq!(otlp["grpc"]["endpoint"], "0.0.0.0:4317");
    assert_eq!(otlp["http"]["endpoint"], "0.0.0.0:4318");
    assert_eq!(v["exporters"]["prometheus"]["endpoint"], "0.0.0.0:9464");
    assert_eq!(
        v["service"]["telemetry"]["metrics"]["address"],
        "0.0.0.0:8888"
    );
}

#[test]
fn promtool_accepts_prometheus_yml_and_its_rule_files() {
    let out = Command::new("promtool")
        .args(["check", "config", "configs/prometheus/prometheus.yml"])
        .current_dir(repo(""))
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
    assert!(out.status.success(), "{text}");
    assert!(text.contains("SUCCESS: 2 rule files found"), "{text}");
}

/// The scrape jobs: job name, targets, honor_labels.
const JOBS: &[(&str, &str, bool)] = &[
    ("vla-collector", "collector:8888", false),
    ("vla-collector-exporter", "collector:9464", true),
    ("node", "node-exporter:9100", false),
    ("dcgm", "dcgm-exporter:9400", false),
    ("postgres", "postgres-exporter:9187", false),
    ("redis", "redis-exporter:9121", false),
    ("alertmanager", "alertmanager:9093", false),
    ("prometheus", "localhost:9090", false),
];

#[test]
fn prometheus_scrapes_every_service_of_the_stack_every_15s() {
    let p = yaml("configs/prometheus/prometheus.yml");
    assert_eq!(p["global"]["scrape_interval"], "15s");
    assert_eq!(p["global"]["evaluation_interval"], "15s");
    assert_eq!(strings(&p["rule_files"]), ["alerts.yml", "recording.yml"]);
    let am = &p["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"];
    assert_eq!(strings(am), ["alertmanager:9093"]);
    assert!(
        p["remote_write"].is_null(),
        "scrape and remote-write the same series?"
    );

    let jobs = p["scrape_configs"].as_array().unwrap();
    let got: Vec<&str> = jobs
        .iter()
        .map(|j| j["job_name"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = JOBS.iter().map(|j| j.0).collect();
    assert_eq!(got, want);
    let c = compose();
    for (job, target, honor) in JOBS {
        let j = jobs.iter().find(|j| j["job_name"] == *job).unwrap();
        assert_eq!(
            strings(&j["static_configs"][0]["targets"]),
            [*target],
            "{job}"
        );
        assert_eq!(
            j["honor_labels"].as_bool().unwrap_or(false),
            *honor,
            "{job}: honor_labels"
        );
        // The target is a compose service listening on that port (Prometheus scrapes itself).
        let (host, port) = target.split_once(':').unwrap();
        let port: u16 = port.parse().unwrap();
        let service = if host == "localhost" {
            "prometheus"
        } else {
            host
        };
        let listens = ports(&services(&c)[service])
            .iter()
            .any(|(_, t)| *t == port);
        assert!(listens, "{job}: {service} does not listen on {port}");
    }
}

#[test]
fn the_dockerfile_builds_the_binaries_that_exist_and_runs_as_non_root() {
    let text = read("Dockerfile");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let froms: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(froms.len(), 2, "{froms:?}");
    assert!(
        froms[0].starts_with("FROM rust:") && froms[0].ends_with(" AS builder"),
        "{}",
        froms[0]
    );
    assert!(
        froms[1].contains("debian:") && froms[1].contains("-slim"),
        "{}",
        froms[1]
    );

    // The packages and binaries it builds are the workspace's.
    let out = Command::new(option_env!("CARGO").unwrap_or("cargo"))
        .args(["metadata", "--no-deps", "--format-version=1", "--offline"])
        .current_dir(repo(""))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let bins: BTreeSet<String> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter().map(move |t| (p, t)))
        .filter(|(_, t)| strings(&t["kind"]) == ["bin"])
        .map(|(p, t)| {
            format!(
                "{} {}",
                p["name"].as_str().unwrap(),
                t["name"].as_str().unwrap()
            )
        })
        .collect();
    for (package, bin) in [
        ("vla-collector", "vla-collector"),
        ("vla-sdk", "vla-api-sim"),
    ] {
        assert!(
            bins.contains(&format!("{package} {bin}")),
            "no {bin} in {package}: {bins:?}"
        );
        for needle in [
            format!("-p {package}"),
            format!("--bin {bin}"),
            format!("release/{bin}"),
        ] {
            assert!(text.contains(&needle), "the Dockerfile lacks `{needle}`");
        }
    }

    // Every file it copies from the context exists.
    for l in lines
        .iter()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from="))
    {
        let words: Vec<&str> = l.split_whitespace().skip(1).collect();
        for src in &words[..words.len() - 1] {
            assert!(
                repo(src).exists(),
                "Dockerfile: COPY {src}: not in the repo"
            );
        }
    }
    let user = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "USER {user}"
    );
    let expose: BTreeSet<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(str::split_whitespace)
        .collect();
    assert_eq!(expose, BTreeSet::from(["4317", "4318", "8888", "9464"]));
    let cmd = lines
        .iter()
        .find_map(|l| l.strip_prefix("CMD "))
        .expect("a CMD");
    assert_eq!(
        cmd,
        r#"["vla-collector", "--config", "/etc/vla/collector.yaml"]"#
    );
    assert!(text.contains("COPY configs/collector-docker.yaml /etc/vla/collector.yaml"));

    let ignore = read(".dockerignore");
    let ignored: BTreeSet<&str> = ignore
        .lines()
        .map(|l| l.trim().trim_end_matches('/'))
        .collect();
    assert!(
        ignored.contains("target") && ignored.contains(".git"),
        "{ignore}"
    );
}

#[test]
fn scripts_stack_parses_and_explains_itself() {
    let script = repo("scripts/stack");
    let run = |program: &Path, args: &[&str]| Command::new(program).args(args).output().unwrap();
    let syntax = run(Path::new("bash"), &["-n", script.to_str().unwrap()]);
    assert!(
        syntax.status.success(),
        "{}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    let help = run(&script, &["--help"]);
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for needle in [
        "--scenario",
        "--rate",
        "--data",
        "apt-get install -y prometheus prometheus-alertmanager",
        "cargo build --release -p vla-collector -p vla-sdk",
    ] {
        assert!(
            help.contains(needle),
            "--help does not mention {needle}:\n{help}"
        );
    }
    assert_eq!(run(&script, &["--bogus"]).status.code(), Some(2));
}
