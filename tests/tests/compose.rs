//! The shipped monitoring stack, checked without a Docker engine:
//! - `configs/docker-compose.yml`: container names `vlaapi-<service>`, the dev/prod profiles,
//!   the seed's ports, named volumes declared and used, every host path it mounts present in
//!   the repo, Prometheus's retention flags, no variable required (so `down` and `config` work
//!   in a fresh shell), no literal secret and no password in any `environment:`, every secret a
//!   file named by a variable whose default is `/dev/null` or under the git-ignored
//!   `configs/secrets/`, each mounted secret read by its server (a `*_FILE` variable or
//!   `alertmanager.yml`), the Postgres exporter's target configurable, the collector built from
//!   the Dockerfile;
//! - `configs/collector-docker.yaml`: listens on every interface, forgets a series after 1m,
//!   enriches as the default config does with at least its memory budget;
//! - `configs/prometheus/prometheus.yml`: `promtool check config` (which also checks the rule
//!   files it names), the seed's 15 s intervals, and every scrape target a compose service
//!   that listens on that port;
//!
//! The Dockerfile and `scripts/stack` are checked in `stack_script.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use vla_e2e::repo_path as repo;

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Value {
    vla_e2e::repo_yaml(path).unwrap_or_else(|e| panic!("{e}"))
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
    // Secrets' files: see every_secret_is_a_file_named_by_a_variable_with_a_safe_default.
    // What each server is told to read is in a mount that exists: (service, path inside, file
    // under configs/).
    let svc = services(&c);
    let cases = "prometheus /etc/prometheus/prometheus.yml prometheus/prometheus.yml
        alertmanager /etc/alertmanager/config/alertmanager.yml alertmanager/alertmanager.yml
        collector /etc/vla/collector.yaml collector-docker.yaml
        collector /etc/vla/customers.yaml customers.yaml
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
const SECRET_KEYS: &str =
    "pass secret token api_key apikey routing_key service_key webhook dsn data_source_name api_url";

fn key_is_secret(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    SECRET_KEYS.split(' ').any(|s| k.contains(s))
}

/// `X_PASSWORD_FILE: /run/secrets/x` (and Grafana's `X__FILE`): the name of a file holding the
/// secret, not the secret.
fn is_file_reference(k: &str, v: &str) -> bool {
    k.to_ascii_lowercase().ends_with("_file")
        && v.starts_with('/')
        && !v.contains(char::is_whitespace)
}

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
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = format!("{path}.{k}");
                match v {
                    Value::String(s)
                        if key_is_secret(k)
                            && !from_env_without_default(s)
                            && !is_file_reference(k, s) =>
                    {
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
                && !is_file_reference(k, val)
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
    // The passwords the servers need are files they read, named in their environment; the
    // Postgres exporter's target and user are plain, configurable settings.
    let c = compose();
    let svc = services(&c);
    let grafana = environment(&svc["grafana"]);
    assert_eq!(
        grafana
            .get("GF_SECURITY_ADMIN_PASSWORD__FILE")
            .map(String::as_str),
        Some("/run/secrets/grafana-admin-password"),
        "{grafana:?}"
    );
    assert!(
        !grafana.contains_key("GF_SECURITY_ADMIN_PASSWORD"),
        "{grafana:?}"
    );
    let pg = environment(&svc["postgres-exporter"]);
    assert_eq!(
        pg.get("DATA_SOURCE_PASS_FILE").map(String::as_str),
        Some("/run/secrets/postgres-exporter-password"),
        "{pg:?}"
    );
    for gone in ["DATA_SOURCE_NAME", "DATA_SOURCE_PASS"] {
        assert!(
            !pg.contains_key(gone),
            "postgres-exporter: {gone} in {pg:?}"
        );
    }
    assert_eq!(
        pg["DATA_SOURCE_URI"],
        "${POSTGRES_EXPORTER_URI:-db:5432/vla}"
    );
    assert_eq!(pg["DATA_SOURCE_USER"], "${POSTGRES_EXPORTER_USER:-monitor}");
    // The target is configurable, and what it scrapes is said where it is set.
    let text_pg = &text[text.find("  postgres-exporter:").unwrap()..];
    let text_pg = &text_pg[..text_pg.find("\n  redis-exporter:").unwrap()];
    for needle in [
        "VLA API's own PostgreSQL",
        "outside this compose file",
        "POSTGRES_EXPORTER_URI",
    ] {
        assert!(
            text_pg.contains(needle),
            "postgres-exporter's comment lacks {needle:?}"
        );
    }
}

/// A service's `environment:`, map or list form, as written (not resolved).
fn environment(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect(),
        Value::Array(a) => a
            .iter()
            .map(|e| {
                let e = e.as_str().unwrap();
                let (k, v) = e.split_once('=').unwrap_or((e, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        Value::Null => BTreeMap::new(),
        other => panic!("environment: {other}"),
    }
}

/// Where a service's secrets land: long syntax `target`, else `/run/secrets/<source>`.
fn secret_targets(service: &Value) -> BTreeMap<String, String> {
    service["secrets"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| match s {
                    Value::String(source) => (format!("/run/secrets/{source}"), source.clone()),
                    _ => {
                        let source = s["source"].as_str().unwrap().to_owned();
                        let target = s["target"]
                            .as_str()
                            .map_or_else(|| format!("/run/secrets/{source}"), str::to_owned);
                        (target, source)
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// No password in any `environment:` (`docker inspect` shows it): each secret-named variable
/// is a `*_FILE` naming a secret mounted in that service, and every secret a service mounts is
/// read, through such a variable or (Alertmanager) its config file.
#[test]
fn no_password_is_in_any_environment_and_every_mounted_secret_is_read() {
    let c = compose();
    let am_reads = {
        let mut out = BTreeSet::new();
        files_read(&yaml("configs/alertmanager/alertmanager.yml"), &mut out);
        out
    };
    let mut file_vars = 0;
    for (name, s) in services(&c) {
        let env = environment(s);
        let mounted = secret_targets(s);
        let mut read = BTreeSet::new();
        for (k, v) in &env {
            if !key_is_secret(k) {
                continue;
            }
            // The one exception: redis_exporter has no plain password file (its
            // REDIS_PASSWORD_FILE is a JSON map), and the Redis may have no password.
            if (name.as_str(), k.as_str()) == ("redis-exporter", "REDIS_PASSWORD") {
                assert_eq!(v, "${REDIS_PASSWORD:-}", "{name}: {k}");
                continue;
            }
            assert!(
                k.ends_with("_FILE"),
                "{name}: {k} holds a secret in the environment"
            );
            assert!(
                mounted.contains_key(v),
                "{name}: {k}={v} is not a secret mounted there ({mounted:?})"
            );
            read.insert(v.clone());
            file_vars += 1;
        }
        if name == "alertmanager" {
            read.extend(am_reads.iter().cloned());
        }
        for target in mounted.keys() {
            assert!(
                read.contains(target),
                "{name}: {target} is mounted but read by nothing"
            );
        }
    }
    assert_eq!(
        file_vars, 2,
        "Grafana's and the Postgres exporter's password files"
    );
}

/// Each secret: (id, the variable naming its file, that variable's default).
const SECRETS: &[(&str, &str, &str)] = &[
    (
        "grafana-admin-password",
        "GRAFANA_ADMIN_PASSWORD_FILE",
        "./secrets/grafana-admin-password",
    ),
    (
        "postgres-exporter-password",
        "POSTGRES_EXPORTER_PASSWORD_FILE",
        "./secrets/postgres-exporter-password",
    ),
    (
        "slack-webhook-url",
        "ALERTMANAGER_SLACK_WEBHOOK_URL_FILE",
        "/dev/null",
    ),
    (
        "pagerduty-routing-key",
        "ALERTMANAGER_PAGERDUTY_ROUTING_KEY_FILE",
        "/dev/null",
    ),
    (
        "smtp-password",
        "ALERTMANAGER_SMTP_PASSWORD_FILE",
        "/dev/null",
    ),
];

/// Every secret's file comes from a variable with a default: `/dev/null` where an empty secret
/// still lets the server start (Alertmanager), else a file under `configs/secrets/`, which git
/// ignores, so that `up` fails for that service until the file is written.
#[test]
fn every_secret_is_a_file_named_by_a_variable_with_a_safe_default() {
    let c = compose();
    let declared = c["secrets"].as_object().expect("top-level secrets:");
    let got: BTreeSet<&str> = declared.keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = SECRETS.iter().map(|s| s.0).collect();
    assert_eq!(got, want);
    let mut required = Vec::new();
    for (id, var, default) in SECRETS {
        assert_eq!(
            declared[*id]["file"],
            format!("${{{var}:-{default}}}"),
            "{id}"
        );
        if *default != "/dev/null" {
            let rel = default.strip_prefix("./secrets/").unwrap_or_else(|| {
                panic!("{id}: {default} is neither /dev/null nor under ./secrets/")
            });
            assert_eq!(rel, *id, "{id}: the file is named after the secret");
            required.push(format!("configs/secrets/{rel}"));
        }
    }
    assert_eq!(required.len(), 2, "{required:?}");

    // configs/secrets/ holds only its README and .gitignore in git; the secrets are ignored.
    let ignore = read("configs/secrets/.gitignore");
    let rules: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(rules, ["*", "!.gitignore", "!README.md"]);
    let readme = read("configs/secrets/README.md");
    for (id, var, _) in &SECRETS[..2] {
        assert!(
            readme.contains(id) && readme.contains(var),
            "README.md: {id}, {var}"
        );
    }
    let check_ignore = |path: &str| {
        Command::new("git")
            .args(["check-ignore", "-q", "--", path])
            .current_dir(repo(""))
            .status()
            .ok()
            .and_then(|s| s.code())
    };
    match check_ignore("configs/secrets/README.md") {
        Some(128) | None => eprintln!("not a git checkout: .gitignore checked as text only"),
        readme => {
            assert_eq!(readme, Some(1), "git ignores configs/secrets/README.md");
            assert_eq!(check_ignore("configs/secrets/.gitignore"), Some(1));
            for path in &required {
                assert_eq!(check_ignore(path), Some(0), "git does not ignore {path}");
            }
        }
    }
}

/// Compose evaluates every `${VAR:?}` for every command, `down` and `config` included: none is
/// left, and every interpolation has a default.
#[test]
fn the_compose_file_needs_no_variable_set() {
    fn walk(v: &Value, path: &str, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => m
                .iter()
                .for_each(|(k, v)| walk(v, &format!("{path}.{k}"), out)),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, v)| walk(v, &format!("{path}[{i}]"), out)),
            Value::String(s) => {
                let mut rest = s.as_str();
                while let Some(start) = rest.find("${") {
                    let end = rest[start..].find('}').unwrap() + start;
                    let inner = &rest[start + 2..end];
                    let name_end = inner
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(inner.len());
                    if !inner[name_end..].starts_with(":-") {
                        out.push(format!("{path}: ${{{inner}}}"));
                    }
                    rest = &rest[end + 1..];
                }
            }
            _ => {}
        }
    }
    let mut bad = Vec::new();
    walk(&compose(), "", &mut bad);
    assert_eq!(bad, Vec::<String>::new());
    // The walk sees interpolations: there are some, and a required one would be caught.
    let mut seen = Vec::new();
    walk(
        &serde_saphyr::from_str::<Value>("a: { b: \"x ${P:?set P} ${Q:-1}\" }").unwrap(),
        "",
        &mut seen,
    );
    assert_eq!(seen, [".a.b: ${P:?set P}"]);
    assert!(read("configs/docker-compose.yml").contains("${VLA_PUBLISH_ADDR:-127.0.0.1}"));
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
      DATA_SOURCE_PASS: pw
      GF_SECURITY_ADMIN_PASSWORD__FILE: hunter2
  b:
    environment:
      - SMTP_PASSWORD=letmein
      - DATA_SOURCE_PASS_FILE=secret in a file name
    command: ["--url", "https://hooks.slack.com/services/T0/B0/X"]
  c:
    password: 1234
"#;
    let found = secrets_in(bad);
    assert_eq!(found.len(), 9, "{found:#?}");
    let good = r#"
services:
  a:
    environment:
      GF_SECURITY_ADMIN_PASSWORD: "${GRAFANA_ADMIN_PASSWORD:?set it}"
      GF_SECURITY_ADMIN_PASSWORD__FILE: /run/secrets/grafana-admin-password
      REDIS_PASSWORD: "${REDIS_PASSWORD:-}"
  b:
    environment: ["SMTP_PASSWORD=${SMTP_PASSWORD}", "DATA_SOURCE_PASS_FILE=/run/secrets/pg"]
secrets:
  slack-webhook-url: { file: "${F:-/dev/null}" }
  grafana-admin-password: { file: "${G:-./secrets/grafana-admin-password}" }
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

/// The container enriches as the default config does: the same receivers, processors and
/// pipeline, with the customer table where compose mounts it. Only its memory budget differs:
/// a server has more to give than a developer's laptop, in the same mode.
#[test]
fn the_docker_collector_config_enriches_as_the_default_does() {
    let docker = yaml("configs/collector-docker.yaml");
    let default = yaml("configs/collector.yaml");
    let mut processors = default["processors"].clone();
    processors["customer_tier"]["source"]["file"] = "/etc/vla/customers.yaml".into();
    let mut docker_processors = docker["processors"].clone();
    let (ours, theirs) = (
        &docker_processors["memory_limiter"],
        &processors["memory_limiter"],
    );
    assert_eq!(ours["mode"], theirs["mode"]);
    for key in ["limit_bytes", "spike_limit_bytes"] {
        let size = |v: &Value| {
            // `${env:NAME:-default}`: the default is what an unset environment gives.
            let text = v[key].as_str().unwrap_or_else(|| panic!("{key}: {v:?}"));
            let default = text
                .rsplit_once(":-")
                .map_or(text, |(_, d)| d.trim_end_matches('}'));
            vla_pipeline::config::parse_bytes(default).unwrap()
        };
        assert!(
            size(ours) >= size(theirs),
            "{key}: the container gets less memory than a laptop"
        );
    }
    docker_processors["memory_limiter"] = processors["memory_limiter"].clone();
    assert_eq!(docker_processors, processors);
    assert_eq!(docker["receivers"]["nvml"], default["receivers"]["nvml"]);
    assert_eq!(
        docker["service"]["pipelines"],
        default["service"]["pipelines"]
    );
}

/// A dead API's series leave the scrape endpoint after 1 minute (not the default 5), so that
/// ServiceDown, which fires when the API stops reporting for 2 minutes, is not held back by
/// 5 minutes of cached values; a live API, exporting every 10 s, refreshes them 6 times a minute.
#[test]
fn the_docker_collector_forgets_a_dead_apis_series_after_a_minute() {
    let v = yaml("configs/collector-docker.yaml");
    assert_eq!(v["exporters"]["prometheus"]["metric_expiration"], "1m");
    assert!(
        vla_sdk::DEFAULT_INTERVAL * 6 <= std::time::Duration::from_secs(60),
        "the SDK exports every {:?}: a live series could expire between exports",
        vla_sdk::DEFAULT_INTERVAL
    );
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
