//! Every `configs/collector*.yaml` passes validation (new files are picked up by the glob).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use vla_collector::config::{Source, validate};

#[test]
fn every_collector_config_in_configs_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("configs/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("collector") && (name.ends_with(".yaml") || name.ends_with(".yml"))
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 2,
        "expected at least collector.yaml and collector-remote-write.yaml, found {files:?}"
    );
    let mut failures = Vec::new();
    for file in &files {
        let source = Source::file(file).expect("readable");
        // No environment: every `${env:...}` in a shipped config must have a default.
        match validate(&source, &|_| None) {
            Ok(c) => {
                assert!(
                    c.warnings.is_empty(),
                    "{}: {:?}",
                    file.display(),
                    c.warnings
                );
                assert!(!c.pipelines.is_empty());
            }
            Err(d) => failures.push(d.to_string()),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_embedded_default_is_configs_collector_yaml() {
    let on_disk = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/collector.yaml"),
    )
    .unwrap();
    assert_eq!(Source::embedded().text, on_disk);
    let c = Source::embedded().validate().unwrap();
    assert_eq!(c.telemetry.metrics.address.to_string(), "127.0.0.1:8888");
    assert_eq!(c.pipelines.len(), 1);
    assert_eq!(c.pipelines[0].exporters, vec!["prometheus".into()]);
    let last = c.pipelines[0].processors.last().unwrap();
    assert_eq!(c.processors[last].type_name(), "batch");
}

#[test]
fn the_remote_write_config_uses_prom_rw_url() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/collector-remote-write.yaml");
    let source = Source::file(&path).unwrap();
    let endpoint = |c: &vla_collector::config::Config| {
        let p: &vla_exporters::prometheus_remote_write::Config =
            c.exporters["prometheusremotewrite"].get().unwrap();
        p.endpoint.clone()
    };
    let default = validate(&source, &|_| None).unwrap();
    assert_eq!(endpoint(&default), "http://127.0.0.1:9090/api/v1/write");
    let set = validate(&source, &|n| {
        (n == "PROM_RW_URL").then(|| "http://prom:9090/api/v1/write".to_owned())
    })
    .unwrap();
    assert_eq!(endpoint(&set), "http://prom:9090/api/v1/write");
}

/// The remote-write block shipped commented out in the default config is valid once a user
/// uncomments it and lists it in the pipeline, as the comment tells them to.
#[test]
fn the_commented_remote_write_block_of_the_default_config_is_valid() {
    let text = Source::embedded().text;
    let mut in_block = false;
    let mut uncommented = Vec::new();
    for line in text.lines() {
        if line.starts_with("  # prometheusremotewrite:") {
            in_block = true;
        } else if in_block && !line.starts_with("  #   ") {
            in_block = false;
        }
        uncommented.push(if in_block {
            line.replacen("  # ", "  ", 1)
        } else {
            line.to_owned()
        });
    }
    let text = uncommented.join("\n").replace(
        "exporters: [prometheus]",
        "exporters: [prometheus, prometheusremotewrite]",
    );
    assert!(
        text.contains("\n  prometheusremotewrite:\n    endpoint:"),
        "{text}"
    );
    let c = validate(&Source::text("collector.yaml (uncommented)", text), &|_| {
        None
    })
    .unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        c.pipelines[0].exporters,
        vec!["prometheus".into(), "prometheusremotewrite".into()]
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

/// The config example in README.md is valid and draws no warning, so what users copy works.
#[test]
fn the_readme_config_example_is_valid() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let start = readme.find("```yaml\n").expect("a yaml block in README.md") + "```yaml\n".len();
    let len = readme[start..].find("```").expect("the block ends");
    let example = &readme[start..start + len];
    let c = validate(&Source::text("README.md example", example), &|_| None)
        .unwrap_or_else(|d| panic!("{d}"));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.pipelines[0].exporters.len(), 2);
}

/// The production remote-write config keeps its backlog in a write-ahead log on disk.
#[test]
fn the_remote_write_config_turns_the_write_ahead_log_on() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/collector-remote-write.yaml");
    let source = Source::file(&path).unwrap();
    let c = validate(&source, &|n| {
        (n == "VLA_WAL_DIR").then(|| "/data/wal".to_owned())
    })
    .unwrap();
    let driver = c.exporters["prometheusremotewrite"].driver_config();
    let wal = driver.wal.as_ref().expect("wal on");
    assert_eq!(
        wal.directory,
        Path::new("/data/wal/prometheusremotewrite"),
        "one directory per exporter under VLA_WAL_DIR"
    );
    assert_eq!(wal.max_bytes, 1 << 30);
    assert!(driver.sample_age_limit.is_some());
}
