//! The component registry, walked: every registered type parses its documented example,
//! validates it and builds from it; the `components` listing is the table.

use std::net::TcpListener;

use vla_collector::config::{Kind, REGISTRY, YamlPath};
use vla_pipeline::SelfMetrics;
use vla_pipeline::gpu::GpuSnapshots;
use vla_pipeline::registry::{BuildContext, Listeners};

#[tokio::test]
async fn every_type_parses_validates_and_builds_its_documented_example() {
    let mut seen = Vec::new();
    for t in REGISTRY.all() {
        let path = YamlPath::root().key(t.kind.section()).key(t.name);
        let value: serde_json::Value = serde_saphyr::from_str(t.example)
            .unwrap_or_else(|e| panic!("{} {}: example is not YAML: {e}", t.kind.noun(), t.name));
        let config = t
            .parse(&value, &path)
            .unwrap_or_else(|d| panic!("{} {}: example is invalid: {d:?}", t.kind.noun(), t.name));
        assert_eq!(config.type_name(), t.name);
        // Every endpoint it claims is bound (on a free port) before it is built, as at start.
        let mut listeners = Listeners::new();
        for (setting, _) in config.listen_endpoints() {
            listeners.insert(setting, TcpListener::bind("127.0.0.1:0").unwrap());
        }
        let id = t.name.into();
        let metrics = SelfMetrics::new();
        let gpus = GpuSnapshots::new();
        let ctx = BuildContext {
            id: &id,
            self_metrics: &metrics,
            gpus: &gpus,
            listeners,
        };
        let what = format!("{} {}", t.kind.noun(), t.name);
        match t.kind {
            Kind::Receiver => {
                config
                    .build_receiver(ctx)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
            }
            Kind::Processor => {
                let factory = config
                    .build_processor(ctx)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                // One stage per pipeline that lists it.
                let _first = factory
                    .stage("metrics")
                    .unwrap_or_else(|e| panic!("{what}: stage: {e}"));
                let _second = factory
                    .stage("metrics/other")
                    .unwrap_or_else(|e| panic!("{what}: second stage: {e}"));
            }
            Kind::Exporter => {
                let exporter = config
                    .build_exporter(ctx)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                exporter.shutdown().await;
            }
        }
        seen.push((t.kind, t.name));
    }
    // The table holds every kind, each type once.
    for kind in Kind::ALL {
        assert!(
            seen.iter().any(|(k, _)| *k == kind),
            "no {} type",
            kind.noun()
        );
    }
    let mut names = seen.clone();
    names.dedup();
    assert_eq!(names.len(), seen.len(), "a type registered twice: {seen:?}");
}

#[test]
fn a_type_of_the_wrong_kind_refuses_to_build_as_another_kind() {
    let t = REGISTRY.get(Kind::Processor, "batch").unwrap();
    let config = t
        .parse(
            &serde_json::Value::Null,
            &YamlPath::root().key("processors").key("batch"),
        )
        .unwrap();
    let id = "batch".into();
    let metrics = SelfMetrics::new();
    let gpus = GpuSnapshots::new();
    let ctx = BuildContext {
        id: &id,
        self_metrics: &metrics,
        gpus: &gpus,
        listeners: Listeners::new(),
    };
    let err = config.build_exporter(ctx).err().unwrap();
    assert_eq!(err.to_string(), "batch is not an exporter type");
}
