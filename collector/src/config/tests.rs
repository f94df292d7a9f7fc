//! Config validation tests: one per message, env substitution, a valid full config.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use super::*;

fn env(name: &str) -> Option<String> {
    match name {
        "RW_URL" => Some("http://10.0.0.1:9090/api/v1/write".to_owned()),
        "GRPC_PORT" => Some("14317".to_owned()),
        _ => None,
    }
}

fn check(yaml: &str) -> Result<Config, Diagnostics> {
    validate(&Source::text("c.yaml", yaml), &env)
}

/// The words of the hint to add `deltatocumulative` (tested on its own below).
const DELTA_HINT: &str = "add the `deltatocumulative` processor";

/// The warnings other than the `deltatocumulative` hint, which every OTLP → Prometheus
/// pipeline of these tests gets.
fn other_warnings(c: &Config) -> Vec<String> {
    c.warnings
        .iter()
        .filter(|w| !w.contains(DELTA_HINT))
        .cloned()
        .collect()
}

/// The rendered errors of an invalid config.
fn errors(yaml: &str) -> Vec<String> {
    match check(yaml) {
        Ok(c) => panic!("expected errors, got a valid config: {c:?}"),
        Err(d) => d.error_lines(),
    }
}

/// A valid minimal config with `extra` appended under the top level.
const BASE: &str = "\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:4317
exporters:
  prometheus:
    endpoint: 127.0.0.1:9464
service:
  pipelines:
    metrics:
      receivers: [otlp]
      exporters: [prometheus]
";

#[test]
fn base_is_valid() {
    let c = check(BASE).unwrap();
    assert_eq!(
        c.summary(),
        "1 pipeline, 1 receiver, 0 processors, 1 exporter"
    );
    assert!(other_warnings(&c).is_empty(), "{:?}", c.warnings);
}

#[test]
fn valid_full_config() {
    let yaml = "\
receivers:
  otlp:
    protocols:
      grpc: { endpoint: \"127.0.0.1:${env:GRPC_PORT}\" }
      http:
  otlp/internal:
    protocols:
      http: { endpoint: 127.0.0.1:0 }
processors:
  attributes/env:
    actions:
      - { key: deployment.environment, value: prod, action: upsert }
  batch:
    send_batch_size: 100
    timeout: 1s
exporters:
  prometheusremotewrite:
    endpoint: ${env:RW_URL}
    sending_queue: { sizer: batches, queue_size: 10, when_full: drop }
  prometheus:
  debug/verbose:
    verbosity: detailed
service:
  pipelines:
    metrics:
      receivers: [otlp]
      processors: [attributes/env, batch]
      exporters: [prometheusremotewrite, prometheus]
    metrics/internal:
      receivers: [otlp, otlp/internal]
      exporters: [prometheus, debug/verbose]
  telemetry:
    metrics: { address: 0.0.0.0:18888 }
    logs: { level: debug, format: json }
  shutdown_timeout: 30s
";
    let c = check(yaml).unwrap();
    assert_eq!(
        c.summary(),
        "2 pipelines, 2 receivers, 2 processors, 3 exporters"
    );
    let otlp: &vla_receivers::otlp::Config = c.receivers["otlp"].get().unwrap();
    let grpc = otlp.protocols.grpc.as_ref().unwrap();
    assert_eq!(grpc.endpoint, "127.0.0.1:14317");
    assert_eq!(
        otlp.protocols.http.as_ref().unwrap().endpoint,
        "127.0.0.1:4318"
    );
    let rw = &c.exporters["prometheusremotewrite"];
    let cfg: &vla_exporters::prometheus_remote_write::Config = rw.get().unwrap();
    assert_eq!(cfg.endpoint, "http://10.0.0.1:9090/api/v1/write");
    let driver = rw.driver_config();
    assert_eq!(driver.queue_size, 10);
    assert_eq!(driver.sizer, vla_pipeline::driver::QueueSizer::Batches);
    assert_eq!(driver.when_full, vla_pipeline::driver::WhenFull::Drop);
    assert!(c.exporters["prometheus"].is::<vla_exporters::PrometheusExporter>());
    let p = &c.pipelines[0];
    assert_eq!(&*p.name, "metrics");
    assert_eq!(
        p.processors,
        vec![
            ComponentId::from("attributes/env"),
            ComponentId::from("batch")
        ]
    );
    let batch: &vla_processors::batch::Config = c.processors["batch"].get().unwrap();
    assert_eq!(
        (batch.send_batch_size, batch.timeout),
        (100, Duration::from_secs(1))
    );
    assert_eq!(p.exporters.len(), 2);
    let p2 = &c.pipelines[1];
    assert_eq!(&*p2.name, "metrics/internal");
    assert!(p2.processors.is_empty());
    assert_eq!(c.telemetry.metrics.address.to_string(), "0.0.0.0:18888");
    assert_eq!(c.telemetry.logs.level, LogLevel::Debug);
    assert_eq!(c.telemetry.logs.format, LogFormat::Json);
    assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
    assert!(other_warnings(&c).is_empty(), "{:?}", c.warnings);
}

#[test]
fn defaults() {
    let c = check(BASE).unwrap();
    assert_eq!(c.telemetry, TelemetryConfig::default());
    assert_eq!(c.telemetry.metrics.address.to_string(), "127.0.0.1:8888");
    assert_eq!(c.telemetry.logs.level, LogLevel::Info);
    assert_eq!(c.telemetry.logs.format, LogFormat::Text);
    assert_eq!(c.shutdown_timeout, DEFAULT_SHUTDOWN_TIMEOUT);
}

#[test]
fn the_embedded_config_is_valid() {
    let c = validate(&Source::embedded(), &|_| None).unwrap();
    assert_eq!(c.source, EMBEDDED_NAME);
    // The counts of the shipped file, read from its text (it has no env variable without a
    // default in its pipelines).
    let raw: serde_json::Value = serde_saphyr::from_str(EMBEDDED_CONFIG).unwrap();
    let pipelines = raw["service"]["pipelines"].as_object().unwrap();
    let distinct = |field: &str| {
        pipelines
            .values()
            .flat_map(|p| p[field].as_array().cloned().unwrap_or_default())
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .collect::<std::collections::BTreeSet<String>>()
            .len()
    };
    let plural = |n: usize, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "s" });
    assert_eq!(
        c.summary(),
        format!(
            "{}, {}, {}, {}",
            plural(pipelines.len(), "pipeline"),
            plural(distinct("receivers"), "receiver"),
            plural(distinct("processors"), "processor"),
            plural(distinct("exporters"), "exporter"),
        )
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn unset_env_variable_names_it_and_the_line() {
    let yaml = BASE.replace("127.0.0.1:9464", "${env:PROM_ADDR}");
    assert_eq!(
        errors(&yaml),
        vec![
            "c.yaml:8: environment variable PROM_ADDR is not set (used as \"${env:PROM_ADDR}\"); \
             set it, or give a default: \"${env:PROM_ADDR:-value}\""
        ]
    );
    let with_default = BASE.replace("127.0.0.1:9464", "${env:PROM_ADDR:-127.0.0.1:9999}");
    let c = check(&with_default).unwrap();
    let p: &vla_exporters::prometheus::Config = c.exporters["prometheus"].get().unwrap();
    assert_eq!(p.endpoint, "127.0.0.1:9999");
}

#[test]
fn yaml_syntax_error_has_a_line() {
    assert_eq!(
        errors("receivers:\n  otlp: [\n"),
        vec!["c.yaml:2: invalid YAML: unclosed bracket '[' (column 9)"]
    );
    assert_eq!(
        errors(&format!("{BASE}receivers:\n")),
        vec!["c.yaml:14: invalid YAML: duplicate mapping key: receivers (column 1)"]
    );
}

#[test]
fn yaml_1_1_booleans_and_leading_zeros_stay_strings() {
    // `on`/`yes` would be booleans under YAML 1.1; `0700` an octal number.
    let yaml = BASE.replace(
        "exporters:\n",
        "processors:\n  attributes:\n    actions:\n      - { key: a, value: on, action: insert }\n      - { key: b, value: 0700, action: insert }\nexporters:\n",
    )
    .replace("      exporters:", "      processors: [attributes]\n      exporters:");
    let c = check(&yaml).unwrap();
    use vla_processors::attributes::AttrValue;
    let a: &vla_processors::attributes::Config = c.processors["attributes"].get().unwrap();
    assert_eq!(a.actions[0].value, Some(AttrValue::String("on".into())));
    assert_eq!(a.actions[1].value, Some(AttrValue::String("0700".into())));
}

#[test]
fn empty_config() {
    assert_eq!(
        errors("# nothing\n"),
        vec!["c.yaml: the config is empty: it needs receivers, exporters and service.pipelines"]
    );
}

#[test]
fn unknown_top_level_field() {
    let yaml = BASE.replace("receivers:\n", "recievers:\n");
    assert_eq!(
        errors(&yaml)[0],
        "c.yaml:1: recievers: unknown field \"recievers\" (did you mean \"receivers\"?)"
    );
    let yaml = format!("{BASE}extensions:\n  health_check:\n");
    assert_eq!(
        errors(&yaml),
        vec![
            "c.yaml:14: extensions: extensions are not supported by vla-collector (health \
             checks and self-metrics are built in: see service.telemetry)"
        ]
    );
}

#[test]
fn unknown_component_type_suggests_and_lists() {
    let yaml = BASE.replace("  prometheus:\n", "  prometeus:\n");
    assert_eq!(
        errors(&yaml),
        vec![
            "c.yaml:7: exporters.prometeus: unknown exporter type \"prometeus\" (did you mean \
             \"prometheus\"?); valid types: debug, prometheus, prometheusremotewrite",
            // The pipeline's reference is then undefined too, with the suggestion reversed.
            "c.yaml:13: service.pipelines.metrics.exporters[0]: exporter \"prometheus\" is not \
             defined under exporters (did you mean \"prometeus\"?)",
        ]
    );
    let yaml = BASE
        .replace("  otlp:\n", "  kafka/x:\n")
        .replace("[otlp]", "[kafka/x]");
    assert_eq!(
        errors(&yaml),
        vec![
            "c.yaml:2: receivers.kafka/x: unknown receiver type \"kafka\"; valid types: nvml, otlp"
        ]
    );
    // The list is the registry's (a processor added to it shows here without a test edit).
    let yaml = format!("{BASE}processors:\n  prometheus:\n");
    let types = Kind::Processor.types();
    assert!(
        types.contains(&"batch") && types.contains(&"attributes"),
        "{types:?}"
    );
    assert_eq!(
        errors(&yaml),
        vec![format!(
            "c.yaml:15: processors.prometheus: unknown processor type \"prometheus\" \
             (\"prometheus\" is an exporter type); valid types: {}",
            types.join(", ")
        )]
    );
}

#[test]
fn invalid_component_id() {
    let yaml = BASE.replace("  otlp:\n", "  otlp/:\n");
    assert_eq!(
        errors(&yaml)[0],
        "c.yaml:2: receivers.otlp/: invalid receiver id \"otlp/\": expected \"type\" or \"type/name\""
    );
}

#[test]
fn unknown_field_inside_a_component_gets_path_and_suggestion() {
    let yaml = BASE.replace(
        "        endpoint: 127.0.0.1:4317",
        "        endpont: 127.0.0.1:4317",
    );
    assert_eq!(
        errors(&yaml),
        vec![
            "c.yaml:5: receivers.otlp.protocols.grpc.endpont: unknown field \"endpont\" (did \
             you mean \"endpoint\"?)"
        ]
    );
    let yaml = BASE.replace("    endpoint: 127.0.0.1:9464", "    colour: blue");
    let errs = errors(&yaml);
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with(
            "c.yaml:8: exporters.prometheus.colour: unknown field \"colour\"; valid fields: "
        ),
        "{errs:?}"
    );
    assert!(errs[0].contains("endpoint"), "{errs:?}");
}

#[test]
fn wrong_types_say_what_was_expected() {
    let yaml = format!("{BASE}processors:\n  batch:\n    timeout: 5\n    send_batch_size: lots\n");
    let yaml = yaml.replace(
        "      exporters:",
        "      processors: [batch]\n      exporters:",
    );
    // Both problems of the one component, each on its line.
    assert_eq!(
        errors(&yaml),
        vec![
            "c.yaml:17: processors.batch.timeout: expected a duration like 200ms, 5s or 1m30s, \
             got integer `5`",
            "c.yaml:18: processors.batch.send_batch_size: expected a non-negative integer, got \
             string \"lots\""
        ]
    );
    let yaml = format!("{BASE}processors:\n  batch:\n    timeout: 5\n").replace(
        "      exporters:",
        "      processors: [batch]\n      exporters:",
    );
    assert_eq!(
        errors(&yaml),
        vec![
            "c.yaml:17: processors.batch.timeout: expected a duration like 200ms, 5s or 1m30s, \
             got integer `5`"
        ]
    );
    let yaml = format!("{BASE}processors:\n  batch:\n    timeout: soon\n").replace(
        "      exporters:",
        "      processors: [batch]\n      exporters:",
    );
    assert_eq!(
        errors(&yaml),
        vec![
            "c.yaml:17: processors.batch.timeout: invalid duration \"soon\": expected a number \
             with a unit, e.g. 200ms, 5s, 1m30s"
        ]
    );
    let yaml = format!("{BASE}processors:\n  batch:\n    send_batch_size: lots\n").replace(
        "      exporters:",
        "      processors: [batch]\n      exporters:",
    );
    assert_eq!(
        errors(&yaml),
        vec![
            "c.yaml:17: processors.batch.send_batch_size: expected a non-negative integer, got \
             string \"lots\""
        ]
    );
    let yaml = BASE.replace("  pipelines:\n", "  shutdown_timeout: 5\n  pipelines:\n");
    assert_eq!(
        errors(&yaml),
        vec![
            "c.yaml:10: service.shutdown_timeout: expected a duration like 200ms, 5s or 1m30s, \
             got number 5"
        ]
    );
    let yaml = BASE.replace("receivers: [otlp]", "receivers: otlp");
    assert_eq!(
        errors(&yaml),
        vec![
            "c.yaml:12: service.pipelines.metrics.receivers: expected a list of receiver ids, \
             got string \"otlp\""
        ]
    );
}

#[test]
fn component_validation_problems_get_lines() {
    let yaml = BASE.replace("127.0.0.1:4317", "collector.internal:4317");
    let errs = errors(&yaml);
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with(
            "c.yaml:5: receivers.otlp.protocols.grpc.endpoint: invalid endpoint \"collector.internal:4317\""
        ),
        "{errs:?}"
    );
}

#[test]
fn undefined_component_in_pipeline() {
    let yaml = BASE.replace(
        "exporters: [prometheus]",
        "exporters: [prometheus, promethues/x]",
    );
    assert_eq!(
        errors(&yaml),
        vec![
            "c.yaml:13: service.pipelines.metrics.exporters[1]: exporter \"promethues/x\" is not \
             defined under exporters (did you mean \"prometheus\"?)"
        ]
    );
    let yaml = BASE.replace(
        "exporters: [prometheus]",
        "exporters: [prometheus, prometheu]",
    );
    assert_eq!(
        errors(&yaml),
        vec![
            "c.yaml:13: service.pipelines.metrics.exporters[1]: exporter \"prometheu\" is not \
             defined under exporters (did you mean \"prometheus\"?)"
        ]
    );
    let yaml = BASE.replace("exporters: [prometheus]", "exporters: [otlp]");
    assert_eq!(
        errors(&yaml),
        vec![
            "c.yaml:13: service.pipelines.metrics.exporters[0]: \"otlp\" is a receiver, not an \
             exporter (it is defined under receivers)"
        ]
    );
}

#[test]
fn listed_twice() {
    let yaml = BASE.replace("receivers: [otlp]", "receivers: [otlp, otlp]");
    assert_eq!(
        errors(&yaml),
        vec![
            "c.yaml:12: service.pipelines.metrics.receivers[1]: receiver \"otlp\" is listed twice"
        ]
    );
}

#[test]
fn pipeline_without_receivers_or_exporters() {
    let yaml = BASE.replace("      receivers: [otlp]\n", "");
    assert_eq!(
        errors(&yaml),
        vec![
            "c.yaml:11: service.pipelines.metrics: a pipeline needs at least one receiver: add \
             `receivers: [...]`"
        ]
    );
    let yaml = BASE.replace("exporters: [prometheus]", "exporters: []");
    assert_eq!(
        errors(&yaml),
        vec![
            "c.yaml:13: service.pipelines.metrics.exporters: a pipeline needs at least one \
             exporter: add `exporters: [...]`"
        ]
    );
}

#[test]
fn no_pipelines() {
    let yaml = "receivers:\n  otlp:\n    protocols: { grpc: }\nservice:\n  telemetry: {}\n";
    let d = check(yaml).unwrap_err();
    assert_eq!(
        d.error_lines(),
        vec![
            "c.yaml:4: service: no pipelines defined: add service.pipelines.metrics with \
             receivers and exporters"
        ]
    );
    assert_eq!(
        d.warning_lines(),
        vec![
            "c.yaml:2: receivers.otlp: receiver \"otlp\" is defined but not used by any \
             pipeline (it will not be started)"
        ]
    );
    let yaml = "service:\n  pipelines: {}\n";
    assert_eq!(
        errors(yaml),
        vec![
            "c.yaml:2: service.pipelines: no pipelines defined: add service.pipelines.metrics \
             with receivers and exporters"
        ]
    );
}

#[test]
fn batch_may_sit_anywhere_in_a_pipeline() {
    // A pipeline stage like any other: what it emits runs through the processors after it.
    let yaml = format!(
        "{BASE}processors:\n  batch:\n  attributes:\n    actions: [{{ key: a, value: b, action: insert }}]\n"
    )
    .replace(
        "      exporters:",
        "      processors:\n        - batch\n        - attributes\n      exporters:",
    );
    let c = check(&yaml).unwrap();
    assert_eq!(
        c.pipelines[0].processors,
        vec![ComponentId::from("batch"), ComponentId::from("attributes")]
    );
}

#[test]
fn every_unknown_field_of_one_component_is_reported_with_its_line_and_suggestion() {
    let yaml = format!(
        "{BASE}processors:\n  batch:\n    send_batch_sise: 10\n    timeout: 1s\n    timout: 2s\n"
    )
    .replace(
        "      exporters:",
        "      processors: [batch]\n      exporters:",
    );
    assert_eq!(
        errors(&yaml),
        vec![
            "c.yaml:17: processors.batch.send_batch_sise: unknown field \"send_batch_sise\" (did \
             you mean \"send_batch_size\"?)",
            "c.yaml:19: processors.batch.timout: unknown field \"timout\" (did you mean \
             \"timeout\"?)",
        ]
    );
    // Nested: two unknown fields under one protocol of the otlp receiver.
    let yaml = BASE.replace(
        "        endpoint: 127.0.0.1:4317\n",
        "        endpoint: 127.0.0.1:4317\n        max_recv_msg_size: 4\n        keepalve: {}\n",
    );
    let errs = errors(&yaml);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs[0].contains("receivers.otlp.protocols.grpc.max_recv_msg_size: unknown field")
            && errs[0].contains("did you mean \"max_recv_msg_size_mib\""),
        "{errs:#?}"
    );
    assert!(
        errs[1].contains("receivers.otlp.protocols.grpc.keepalve: unknown field"),
        "{errs:#?}"
    );
}

#[test]
fn a_bad_required_value_is_reported_once() {
    // The bad value is taken out to look for more problems; its "missing" echo is not shown.
    let yaml = BASE.replace("endpoint: 127.0.0.1:9464", "endpoint: [1, 2]");
    let errs = errors(&yaml);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].contains("exporters.prometheus.endpoint: expected"),
        "{errs:#?}"
    );
}

#[test]
fn same_endpoint_claimed_twice() {
    let yaml = BASE.replace("127.0.0.1:4317", "127.0.0.1:9464");
    assert_eq!(
        errors(&yaml),
        vec![
            "c.yaml:8: exporters.prometheus.endpoint: 127.0.0.1:9464 is already claimed by \
             receivers.otlp.protocols.grpc.endpoint: use another port"
        ]
    );
    let yaml = BASE.replace(
        "  pipelines:\n",
        "  telemetry:\n    metrics:\n      address: 0.0.0.0:4317\n  pipelines:\n",
    );
    assert_eq!(
        errors(&yaml),
        vec![
            "c.yaml:5: receivers.otlp.protocols.grpc.endpoint: 127.0.0.1:4317 is already claimed \
             by service.telemetry.metrics.address: use another port"
        ]
    );
    // Port 0 never clashes; an unused component does not bind.
    let yaml = BASE
        .replace("127.0.0.1:4317", "127.0.0.1:0")
        .replace("127.0.0.1:9464", "127.0.0.1:0");
    assert!(check(&yaml).is_ok());
}

#[test]
fn unused_components_are_warnings() {
    let yaml = format!("{BASE}processors:\n  batch:\n")
        .replace("  prometheus:\n", "  debug:\n  prometheus:\n");
    let c = check(&yaml).unwrap();
    assert_eq!(
        other_warnings(&c),
        vec![
            "c.yaml:7: exporters.debug: exporter \"debug\" is defined but not used by any \
             pipeline (it will not be started)",
            "c.yaml:16: processors.batch: processor \"batch\" is defined but not used by any \
             pipeline (it will not be started)",
        ]
    );
    assert!(!c.exporters.contains_key("debug"));
    assert!(c.processors.is_empty());
}

#[test]
fn log_level_and_format() {
    let yaml = BASE.replace(
        "  pipelines:\n",
        "  telemetry:\n    logs:\n      level: warning\n      format: yaml\n  pipelines:\n",
    );
    assert_eq!(
        errors(&yaml),
        vec![
            "c.yaml:12: service.telemetry.logs.level: unknown value \"warning\" (did you mean \
             \"warn\"?)",
            "c.yaml:13: service.telemetry.logs.format: unknown value \"yaml\"; valid values: \
             text, json",
        ]
    );
    let yaml = BASE.replace(
        "  pipelines:\n",
        "  telemetry:\n    metrics:\n      address: localhost\n      level: detailed\n  pipelines:\n",
    );
    assert_eq!(
        errors(&yaml),
        vec![
            "c.yaml:12: service.telemetry.metrics.address: invalid address \"localhost\": \
             expected an IP address and port, e.g. 127.0.0.1:8888 or 0.0.0.0:8888",
            "c.yaml:13: service.telemetry.metrics.level: unknown field \"level\"; valid fields: \
             address",
        ]
    );
}

#[test]
fn pipeline_names() {
    let yaml = BASE.replace("    metrics:\n", "    traces:\n");
    assert_eq!(
        errors(&yaml),
        vec![
            "c.yaml:11: service.pipelines.traces: traces pipelines are not supported: \
             vla-collector handles metrics only; name the pipeline \"metrics\" or \
             \"metrics/<name>\""
        ]
    );
    let yaml = BASE.replace("    metrics:\n", "    metrics/:\n");
    assert_eq!(
        errors(&yaml),
        vec![
            "c.yaml:11: service.pipelines.metrics/: invalid pipeline name \"metrics/\": expected \
             \"metrics\" or \"metrics/<name>\""
        ]
    );
    let yaml = BASE.replace("    metrics:\n", "    metrics/fast:\n");
    assert_eq!(&*check(&yaml).unwrap().pipelines[0].name, "metrics/fast");
}

#[test]
fn unknown_pipeline_field() {
    let yaml = BASE.replace(
        "exporters: [prometheus]",
        "exporters: [prometheus]\n      exporter: [x]",
    );
    assert_eq!(
        errors(&yaml),
        vec![
            "c.yaml:14: service.pipelines.metrics.exporter: unknown field \"exporter\" (did you \
             mean \"exporters\"?)"
        ]
    );
}

#[test]
fn unknown_value_in_a_component_enum() {
    let yaml = format!(
        "{BASE}processors:\n  attributes:\n    actions:\n      - key: a\n        action: extract\n"
    )
    .replace(
        "      exporters:",
        "      processors: [attributes]\n      exporters:",
    );
    assert_eq!(
        errors(&yaml),
        vec![
            "c.yaml:19: processors.attributes.actions[0].action: unknown value \"extract\"; valid \
             values: insert, update, upsert, delete, hash"
        ]
    );
}

#[test]
fn missing_required_field() {
    let yaml = format!("{BASE}  prometheusremotewrite:\n    timeout: 5s\n").replace(
        "exporters: [prometheus]",
        "exporters: [prometheus, prometheusremotewrite]",
    );
    // `exporters:` section got the new entry appended after service; move it.
    let yaml = yaml.replace("  prometheusremotewrite:\n    timeout: 5s\n", "");
    let yaml = yaml.replace(
        "    endpoint: 127.0.0.1:9464\n",
        "    endpoint: 127.0.0.1:9464\n  prometheusremotewrite:\n    timeout: 5s\n",
    );
    assert_eq!(
        errors(&yaml),
        vec!["c.yaml:9: exporters.prometheusremotewrite: missing required field \"endpoint\""]
    );
}

#[test]
fn every_problem_is_reported_at_once_in_file_order() {
    let yaml = "\
receivers:
  otlp:
    protocols:
      grpc: { endpont: 127.0.0.1:4317 }
processors:
  batch:
    timeout: 0
exporters:
  prometheus:
    endpoint: 127.0.0.1:9464
  lorging:
service:
  pipelines:
    metrics:
      receivers: [otlp]
      processors: [batch]
      exporters: [prometheus, debug]
    logs:
      receivers: [otlp]
  telemetry:
    logs: { level: loud }
";
    assert_eq!(
        errors(yaml),
        vec![
            "c.yaml:4: receivers.otlp.protocols.grpc.endpont: unknown field \"endpont\" (did you mean \"endpoint\"?)",
            "c.yaml:7: processors.batch.timeout: must be greater than 0 (e.g. 200ms)",
            "c.yaml:11: exporters.lorging: unknown exporter type \"lorging\"; valid types: debug, prometheus, prometheusremotewrite",
            "c.yaml:17: service.pipelines.metrics.exporters[1]: exporter \"debug\" is not defined under exporters",
            "c.yaml:18: service.pipelines.logs: logs pipelines are not supported: vla-collector handles metrics only; name the pipeline \"metrics\" or \"metrics/<name>\"",
            "c.yaml:21: service.telemetry.logs.level: unknown value \"loud\"; valid values: trace, debug, info, warn, error",
        ]
    );
}

#[test]
fn diagnostics_display_lists_everything() {
    let d = check("service:\n  pipelines: {}\nfoo: 1\n").unwrap_err();
    assert_eq!(
        d.to_string(),
        "c.yaml has 2 problems:\n  c.yaml:2: service.pipelines: no pipelines defined: add \
         service.pipelines.metrics with receivers and exporters\n  c.yaml:3: foo: unknown field \
         \"foo\"; valid fields: receivers, processors, exporters, service"
    );
}

#[test]
fn load_reads_files_and_reports_problems_as_config_error() {
    let dir = std::env::temp_dir().join(format!("vla-collector-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.yaml");
    std::fs::write(&good, BASE).unwrap();
    assert_eq!(load(Some(&good)).unwrap().pipelines.len(), 1);
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "service:\n  pipelines: {}\n").unwrap();
    match load(Some(&bad)) {
        Err(ConfigError::Invalid(d)) => assert_eq!(d.errors.len(), 1),
        other => panic!("{other:?}"),
    }
    match load(Some(&dir.join("missing.yaml"))) {
        Err(e @ ConfigError::Read { .. }) => {
            assert!(e.to_string().starts_with("cannot read config file "), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert!(load(None).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_otlp_to_prometheus_pipeline_without_deltatocumulative_is_told_to_add_it() {
    assert_eq!(
        check(BASE).unwrap().warnings,
        vec![
            "c.yaml:11: service.pipelines.metrics.processors: OTLP clients may send delta sums \
             and histograms, which Prometheus cannot store and the exporters drop (counted as \
             delta_temporality); add the `deltatocumulative` processor (before `batch`) to turn \
             them into cumulative series"
        ]
    );
    let converted = format!("{BASE}processors:\n  deltatocumulative:\n").replace(
        "      exporters: [prometheus]",
        "      processors: [deltatocumulative]\n      exporters: [prometheus]",
    );
    assert!(check(&converted).unwrap().warnings.is_empty());
    // A pipeline that cannot receive deltas, or writes nothing to Prometheus, needs none.
    let debug_only = BASE
        .replace(
            "  prometheus:\n    endpoint: 127.0.0.1:9464\n",
            "  debug:\n",
        )
        .replace("[prometheus]", "[debug]");
    assert!(check(&debug_only).unwrap().warnings.is_empty());
}

#[test]
fn aggregating_by_a_label_an_earlier_processor_deletes_is_refused() {
    let yaml = format!(
        "{BASE}processors:\n  attributes/strip:\n    actions:\n      - {{ key: tier, action: delete }}\n  aggregate:\n    rules:\n      - {{ metrics: [x], group_by: [tier] }}\n"
    );
    let wrong_order = yaml.replace(
        "      exporters: [prometheus]",
        "      processors: [attributes/strip, aggregate]\n      exporters: [prometheus]",
    );
    let errs = errors(&wrong_order);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("processors.aggregate.rules[0].group_by: groups by \"tier\", which \"attributes/strip\" deletes earlier in pipeline \"metrics\""),
        "{errs:?}"
    );
    let right_order = yaml.replace(
        "      exporters: [prometheus]",
        "      processors: [aggregate, attributes/strip]\n      exporters: [prometheus]",
    );
    assert!(check(&right_order).is_ok());
}

#[test]
fn blocking_remote_write_beside_other_exporters_is_a_warning() {
    let with_rw = |when_full: &str, processors: &str| {
        format!("{BASE}processors:\n  batch:\n")
            .replace(
                "exporters:\n  prometheus:\n",
                &format!(
                    "exporters:\n  prometheusremotewrite:\n    endpoint: http://127.0.0.1:9090/api/v1/write\n    sending_queue: {{ when_full: {when_full} }}\n  prometheus:\n"
                ),
            )
            .replace(
                "      exporters: [prometheus]",
                &format!("      processors: [{processors}]\n      exporters: [prometheusremotewrite, prometheus]"),
            )
    };
    assert_eq!(
        other_warnings(&check(&with_rw("block", "batch")).unwrap()),
        vec![
            "c.yaml:17: service.pipelines.metrics.exporters: while \"prometheusremotewrite\"'s \
             backend is down its queue fills and, with sending_queue.when_full: block, this \
             pipeline stops feeding its other exporters too; set when_full: drop on \
             \"prometheusremotewrite\" to keep them flowing (its drops are counted), or give it \
             a pipeline of its own"
        ]
    );
    assert!(other_warnings(&check(&with_rw("drop", "batch")).unwrap()).is_empty());
    let unbatched = with_rw("drop", "").replace("processors:\n  batch:\n", "");
    assert_eq!(
        other_warnings(&check(&unbatched).unwrap()),
        vec![
            "c.yaml:16: service.pipelines.metrics.processors: without a `batch` processor, \
             remote write sends at least one request per received request; add `batch` (usually last) \
             to group points up to its send_batch_size or timeout"
        ]
    );
}

#[test]
fn a_connection_string_in_the_wrong_place_is_not_echoed() {
    let yaml = format!(
        "{BASE}processors:\n  customer_tier:\n    source: {{ postgres: \"host=db user=vla \
         password=s3cret dbname=billing\" }}\n"
    );
    let text = errors(&yaml).join("\n");
    assert!(
        text.contains(
            "processors.customer_tier.source.postgres: expected a mapping, got a string (not shown"
        ),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
    // Wherever it lands, a value shaped like a credential is not echoed either.
    for value in [
        "postgres://vla:s3cret@db/billing",
        "host=db password=s3cret",
    ] {
        let yaml = format!("{BASE}processors:\n  customer_tier:\n    source: \"{value}\"\n");
        let text = errors(&yaml).join("\n");
        assert!(text.contains("customer_tier.source: expected"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }
    // An ordinary value is still shown, even under a postgres section.
    let yaml = format!(
        "{BASE}processors:\n  customer_tier:\n    source: {{ postgres: {{ dsn: x, refresh_interval: [1] }} }}\n"
    );
    let text = errors(&yaml).join("\n");
    assert!(!text.contains("not shown"), "{text}");
}

#[test]
fn gpu_stats_needs_one_nvml_receiver() {
    let with = |receivers: &str, pipeline_receivers: &str| {
        format!(
            "receivers:\n  otlp:\n    protocols: {{ grpc: {{ endpoint: 127.0.0.1:4317 }} }}\n{receivers}\
             processors:\n  gpu_stats: {{}}\n\
             exporters:\n  prometheus: {{ endpoint: 127.0.0.1:9464 }}\n\
             service:\n  pipelines:\n    metrics:\n      receivers: [{pipeline_receivers}]\n      \
             processors: [gpu_stats]\n      exporters: [prometheus]\n"
        )
    };
    let none = errors(&with("", "otlp")).join("\n");
    assert!(
        none.contains(
            "processors.gpu_stats: gpu_stats joins the GPU readings of an `nvml` receiver"
        ),
        "{none}"
    );
    let two = errors(&with(
        "  nvml: { source: fake }\n  nvml/b: { source: fake }\n",
        "otlp, nvml, nvml/b",
    ))
    .join("\n");
    assert!(
        two.contains("receivers.nvml/b: only one nvml receiver may run (\"nvml\" already"),
        "{two}"
    );
    let one = with("  nvml: { source: fake }\n", "otlp, nvml");
    check(&one).unwrap_or_else(|d| panic!("{d}"));
}

#[test]
fn grpc_keepalive_parses_in_the_collectors_shape_and_is_checked() {
    let yaml = BASE.replace(
        "        endpoint: 127.0.0.1:4317\n",
        "        endpoint: 127.0.0.1:4317\n        keepalive:\n          server_parameters:\n            time: 30s\n            timeout: 5s\n            max_connection_age: 10m\n            max_connection_age_grace: 30s\n",
    );
    let c = check(&yaml).unwrap();
    let otlp: &vla_receivers::otlp::Config = c.receivers["otlp"].get().unwrap();
    let k = &otlp
        .protocols
        .grpc
        .as_ref()
        .unwrap()
        .keepalive
        .server_parameters;
    assert_eq!(k.time, Some(Duration::from_secs(30)));
    assert_eq!(k.timeout, Some(Duration::from_secs(5)));
    assert_eq!(k.max_connection_age, Some(Duration::from_secs(600)));
    assert_eq!(k.max_connection_age_grace, Some(Duration::from_secs(30)));

    let bad = BASE.replace(
        "        endpoint: 127.0.0.1:4317\n",
        "        endpoint: 127.0.0.1:4317\n        keepalive:\n          server_parameters:\n            time: 100ms\n            max_connection_age_grace: 30s\n",
    );
    assert_eq!(
        errors(&bad),
        vec![
            "c.yaml:8: receivers.otlp.protocols.grpc.keepalive.server_parameters.time: must be \
             at least 1s (got 100ms); leave it out to send no pings",
            "c.yaml:9: receivers.otlp.protocols.grpc.keepalive.server_parameters.\
             max_connection_age_grace: has no effect without `max_connection_age`; set both",
        ]
    );
}

#[test]
fn a_memory_limiter_comes_first_once_with_a_spike_below_its_limit() {
    let yaml = format!(
        "{BASE}processors:\n  batch: {{}}\n  memory_limiter:\n    limit_bytes: 256MiB\n  memory_limiter/other:\n    limit_bytes: 1GiB\n"
    );
    let with = |list: &str| {
        yaml.replace(
            "      exporters: [prometheus]",
            &format!("      processors: [{list}]\n      exporters: [prometheus]"),
        )
    };
    assert!(check(&with("memory_limiter, batch")).is_ok());
    let errs = errors(&with("batch, memory_limiter"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("service.pipelines.metrics.processors[1]: \"memory_limiter\" must be the first processor"),
        "{errs:?}"
    );
    let errs = errors(&with("memory_limiter, memory_limiter/other"));
    assert!(
        errs.iter()
            .any(|e| e.contains("lists more than one memory_limiter")),
        "{errs:?}"
    );
    let errs = errors(
        &yaml
            .replace(
                "limit_bytes: 256MiB",
                "limit_bytes: 256MiB\n    spike_limit_bytes: 300MiB",
            )
            .replace(
                "      exporters: [prometheus]",
                "      processors: [memory_limiter]\n      exporters: [prometheus]",
            ),
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0]
            .contains("processors.memory_limiter.spike_limit_bytes: must be less than limit_bytes"),
        "{errs:?}"
    );
}

#[test]
fn write_ahead_logs_need_a_directory_each_and_valid_settings() {
    let rw = |name: &str, dir: &str| {
        format!(
            "  prometheusremotewrite{name}:\n    endpoint: http://127.0.0.1:9090/api/v1/write\n    \
             wal: {{ directory: {dir} }}\n"
        )
    };
    let yaml = BASE
        .replace(
            "exporters:\n",
            &format!(
                "exporters:\n{}{}",
                rw("", "/data/wal"),
                rw("/b", "/data/./wal/")
            ),
        )
        .replace(
            "exporters: [prometheus]",
            "exporters: [prometheus, prometheusremotewrite, prometheusremotewrite/b]",
        );
    let errs = errors(&yaml);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].contains(
            "exporters.prometheusremotewrite/b.wal.directory: /data/./wal/ is already the \
             write-ahead log of exporter \"prometheusremotewrite\""
        ),
        "{errs:#?}"
    );
    // Bad settings name their field.
    let yaml = BASE
        .replace(
            "exporters:\n",
            "exporters:\n  prometheusremotewrite:\n    endpoint: http://127.0.0.1:9090/api/v1/write\n    \
             sample_age_limit: 0s\n    wal: { directory: '', max_bytes: 10KiB, sync: interval, \
             sync_interval: 0s, max_in_memory: 1KiB }\n",
        )
        .replace(
            "exporters: [prometheus]",
            "exporters: [prometheus, prometheusremotewrite]",
        );
    let errs = errors(&yaml).join("\n");
    for field in [
        "wal.directory: is required",
        "wal.max_bytes: must be at least 1MiB",
        "wal.sync_interval: must be greater than 0",
        "wal.max_in_memory: must be between 64KiB",
        "sample_age_limit: must be greater than 0",
    ] {
        assert!(errs.contains(field), "{field}: {errs}");
    }
    let yaml = BASE
        .replace(
            "exporters:\n",
            "exporters:\n  prometheusremotewrite:\n    endpoint: http://127.0.0.1:9090/api/v1/write\n    \
             wal: { directory: /d, sync: sometimes }\n",
        )
        .replace(
            "exporters: [prometheus]",
            "exporters: [prometheus, prometheusremotewrite]",
        );
    let errs = errors(&yaml).join("\n");
    assert!(
        errs.contains("sync") && errs.contains("always") && errs.contains("interval"),
        "{errs}"
    );
}

#[test]
fn a_points_queue_under_two_batches_fails_naming_the_field_once() {
    let with_queue = |queue: &str| {
        format!("{BASE}processors:\n  batch:\n    send_batch_size: 2048\n")
            .replace(
                "exporters:\n  prometheus:\n",
                &format!(
                    "exporters:\n  prometheusremotewrite:\n    endpoint: http://127.0.0.1:9090/api/v1/write\n    sending_queue: {{ {queue}when_full: drop }}\n  prometheus:\n"
                ),
            )
            .replace(
                "      exporters: [prometheus]",
                "      processors: [batch]\n      exporters: [prometheusremotewrite, prometheus]\n    metrics/second:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [prometheusremotewrite]",
            )
    };
    // A queue_size written when it counted batches; two pipelines feed it, one error.
    let expected = |n: usize| {
        vec![format!(
            "c.yaml:9: exporters.prometheusremotewrite.sending_queue.queue_size: {n} points is \
             less than two batches of pipeline \"metrics\" (its batch processor sends once \
             send_batch_size 2048 points are pending, and a batch can exceed that by one \
             received request), so the queue would hold one batch at a time; queue_size counts \
             data points (sizer: points): set it to several batches (the default is 65536), or \
             set sizer: batches to count batches"
        )]
    };
    assert_eq!(errors(&with_queue("queue_size: 32, ")), expected(32));
    assert_eq!(errors(&with_queue("queue_size: 4095, ")), expected(4095));
    for ok in ["", "queue_size: 4096, ", "sizer: batches, queue_size: 32, "] {
        assert!(check(&with_queue(ok)).is_ok(), "{ok}");
    }
}
