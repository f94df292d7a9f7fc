//! The SDK against a real in-process OTLP gRPC server: every catalogue metric arrives with its
//! exact name, unit, type and label keys; shutdown sends the last values; headers, gzip and the
//! resource arrive; a hung collector neither blocks nor crashes recording.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Collector, Received, blocking};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::metrics::v1::Metric;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as NumberValue;
use vla_sdk::catalogue::{CATALOGUE, Instrument, LabelValues};
use vla_sdk::sim::{Scenario, SimConfig, Simulation};
use vla_sdk::{
    CustomerId, Inference, InstructionCategory, ModelName, Outcome, RobotType, Telemetry, Tier,
};

fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

/// Every metric of every request, by name (later exports replace earlier ones).
fn metrics(received: &[Received]) -> BTreeMap<String, Metric> {
    received
        .iter()
        .flat_map(|r| &r.request.resource_metrics)
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .map(|m| (m.name.clone(), m.clone()))
        .collect()
}

/// The attribute sets of a metric's points.
fn point_attrs(m: &Metric) -> Vec<BTreeMap<String, String>> {
    match m.data.as_ref().unwrap() {
        Data::Sum(s) => s.data_points.iter().map(|p| attrs(&p.attributes)).collect(),
        Data::Gauge(g) => g.data_points.iter().map(|p| attrs(&p.attributes)).collect(),
        Data::Histogram(h) => h.data_points.iter().map(|p| attrs(&p.attributes)).collect(),
        other => panic!("{}: unexpected data {other:?}", m.name),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_catalogue_metric_arrives_with_its_name_unit_type_and_labels() {
    let collector = Collector::start().await;
    let telemetry = collector.builder().build().unwrap();
    // Every scenario exercises a different corner; together they record every metric.
    for scenario in Scenario::ALL {
        let mut sim = Simulation::new(SimConfig {
            scenario: *scenario,
            rate: 40.0,
            ..SimConfig::default()
        });
        for _ in 0..20 {
            sim.step(&telemetry);
        }
    }
    let t = telemetry.clone();
    blocking(move || t.shutdown()).await.unwrap();
    let got = metrics(&collector.received());
    for spec in CATALOGUE {
        let m = got
            .get(spec.otel_name)
            .unwrap_or_else(|| panic!("{} was not exported", spec.otel_name));
        assert_eq!(m.unit, spec.unit, "{}", spec.otel_name);
        assert_eq!(m.description, spec.description, "{}", spec.otel_name);
        match (spec.instrument, m.data.as_ref().unwrap()) {
            (Instrument::Counter, Data::Sum(s)) => {
                assert!(s.is_monotonic, "{}", spec.otel_name);
                assert_eq!(
                    s.aggregation_temporality, 2,
                    "cumulative: {}",
                    spec.otel_name
                );
            }
            (Instrument::Gauge, Data::Gauge(_)) => {}
            (Instrument::Histogram, Data::Histogram(h)) => {
                for p in &h.data_points {
                    assert_eq!(p.explicit_bounds, spec.buckets, "{}", spec.otel_name);
                }
            }
            (want, data) => panic!("{}: {want:?} exported as {data:?}", spec.otel_name),
        }
        let want_keys: BTreeSet<&str> = spec.label_keys().collect();
        let points = point_attrs(m);
        assert!(!points.is_empty(), "{}", spec.otel_name);
        for point in points {
            let keys: BTreeSet<&str> = point.keys().map(String::as_str).collect();
            assert_eq!(keys, want_keys, "{}", spec.otel_name);
            for label in spec.labels {
                if let LabelValues::Closed(values) = label.values {
                    assert!(
                        values.contains(&point[label.key].as_str()),
                        "{} {}={}",
                        spec.otel_name,
                        label.key,
                        point[label.key]
                    );
                }
            }
        }
    }
    assert_eq!(
        got.len(),
        CATALOGUE.len(),
        "no metric outside the catalogue: {:?}",
        got.keys()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_sends_the_last_values_with_headers_resource_and_gzip() {
    let collector = Collector::start().await;
    let telemetry = collector
        .builder()
        .header("X-Api-Key", "k-123")
        .gzip(true)
        .build()
        .unwrap();
    let model = ModelName::new("pi0").unwrap();
    let robot = RobotType::new("ur5e").unwrap();
    let customer = CustomerId::new("acme").unwrap();
    let request = Inference {
        model: &model,
        robot_type: &robot,
        tier: Tier::Pro,
        customer: &customer,
        instruction_category: InstructionCategory::Assembly,
        outcome: Outcome::Success,
        duration: Duration::from_millis(300),
    };
    for _ in 0..3 {
        telemetry.record_inference(&request);
    }
    telemetry.set_queue_depth(7);
    telemetry.set_queue_depth(4);
    assert!(
        collector.received().is_empty(),
        "nothing exported before shutdown"
    );
    let t = telemetry.clone();
    blocking(move || t.shutdown()).await.unwrap();

    let received = collector.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].headers["x-api-key"], "k-123");
    assert_eq!(received[0].headers["grpc-encoding"], "gzip");
    let resource = attrs(
        &received[0].request.resource_metrics[0]
            .resource
            .as_ref()
            .unwrap()
            .attributes,
    );
    assert_eq!(resource["service.name"], "vla-api-test");
    assert_eq!(resource["service.instance.id"], "api-7");
    assert_eq!(resource["deployment.environment"], "test");
    assert!(resource.contains_key("host.name"));
    let got = metrics(&received);
    let Data::Sum(requests) = got["vla.inference.requests"].data.as_ref().unwrap() else {
        panic!()
    };
    assert_eq!(requests.data_points.len(), 1);
    assert_eq!(
        requests.data_points[0].value,
        Some(NumberValue::AsInt(3)),
        "cumulative total of the three requests"
    );
    assert_eq!(
        attrs(&requests.data_points[0].attributes),
        BTreeMap::from([
            ("model".to_owned(), "pi0".to_owned()),
            ("robot_type".to_owned(), "ur5e".to_owned()),
            ("status".to_owned(), "success".to_owned()),
            ("tier".to_owned(), "pro".to_owned()),
        ])
    );
    // Counters whose labels are all closed sets exist at 0 from the start, so Prometheus's
    // increase() sees the first event (an alert on any critical incident needs that).
    let Data::Sum(incidents) = got["vla.safety.incidents"].data.as_ref().unwrap() else {
        panic!()
    };
    assert_eq!(
        incidents.data_points.len(),
        4 * 7,
        "severity × violation_type"
    );
    assert!(
        incidents
            .data_points
            .iter()
            .all(|p| p.value == Some(NumberValue::AsInt(0)))
    );
    assert!(got.contains_key("vla.rate_limit.exceeded"));
    assert!(
        !got.contains_key("vla.feedback"),
        "open or customer labels: no zero series"
    );
    let Data::Gauge(depth) = got["vla.inference.queue_depth"].data.as_ref().unwrap() else {
        panic!()
    };
    assert_eq!(
        depth.data_points[0].value,
        Some(NumberValue::AsInt(4)),
        "last value"
    );
    let Data::Histogram(latency) = got["vla.inference.duration"].data.as_ref().unwrap() else {
        panic!()
    };
    assert_eq!(latency.data_points[0].count, 3);
    assert!((latency.data_points[0].sum.unwrap() - 0.9).abs() < 1e-9);

    // Recording after shutdown is accepted and goes nowhere; a second shutdown says so.
    telemetry.record_inference(&request);
    let t = telemetry.clone();
    let again = blocking(move || t.shutdown()).await;
    assert!(
        matches!(again, Err(vla_sdk::ShutdownError::AlreadyShutDown)),
        "{again:?}"
    );
    assert_eq!(collector.received().len(), 1);
    assert_eq!(telemetry.export_stats().succeeded(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn customers_past_the_cap_fold_into_one_series() {
    let collector = Collector::start().await;
    let telemetry = collector.builder().max_customers(2).build().unwrap();
    for name in ["c1", "c2", "c3", "c4", "c1"] {
        let c = CustomerId::new(name).unwrap();
        telemetry.set_quota(&c, Tier::Free, 1, 10);
    }
    let t = telemetry.clone();
    blocking(move || t.shutdown()).await.unwrap();
    let got = metrics(&collector.received());
    let ids: BTreeSet<String> = point_attrs(&got["vla.quota.used"])
        .into_iter()
        .map(|a| a["customer_id"].clone())
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from([
            "c1".to_owned(),
            "c2".to_owned(),
            vla_sdk::CUSTOMER_OVERFLOW.to_owned()
        ])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_collector_never_blocks_recording() {
    // A collector that takes connections and never answers: the listener stays open and is
    // never accepted from, so every export hangs until its timeout.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let telemetry = Telemetry::builder()
        .endpoint(format!("http://{}", hung.local_addr().unwrap()))
        .export_interval(Duration::from_secs(3600))
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let t = telemetry.clone();
    let flush = tokio::task::spawn_blocking(move || t.force_flush());
    let model = ModelName::new("pi0").unwrap();
    let robot = RobotType::new("ur5e").unwrap();
    let customer = CustomerId::new("acme").unwrap();
    for _ in 0..10_000 {
        telemetry.record_inference(&Inference {
            model: &model,
            robot_type: &robot,
            tier: Tier::Free,
            customer: &customer,
            instruction_category: InstructionCategory::Other,
            outcome: Outcome::Success,
            duration: Duration::from_millis(5),
        });
    }
    // All of that was recorded while the export was still waiting on the collector.
    assert!(
        !flush.is_finished(),
        "the export to the hung collector is still in flight"
    );
    assert!(
        flush.await.unwrap().is_err(),
        "it ends in a timeout, not a hang"
    );
    assert_eq!(telemetry.export_stats().failed(), 1);
    assert_eq!(telemetry.export_stats().succeeded(), 0);
    let t = telemetry.clone();
    assert!(blocking(move || t.shutdown()).await.is_err());
    drop(hung);
}
