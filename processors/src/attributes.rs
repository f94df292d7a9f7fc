//! The `attributes` processor: inserts, updates, upserts or deletes data-point attributes.
//!
//! It follows the OpenTelemetry Collector's `attributes` processor for metrics, with the
//! actions `insert` (only when the key is absent), `update` (only when present), `upsert`
//! (always), `delete` and `hash` (the value replaced by its hex SHA-256). The new value is a literal `value` (string, integer, double or
//! boolean) or copied `from_attribute` another attribute of the same point (nothing happens
//! when that attribute is absent). Actions run in order on every data point.
//!
//! ```yaml
//! processors:
//!   attributes/env:
//!     actions:
//!       - { key: deployment.environment, value: prod, action: upsert }
//!       - { key: customer_tier, from_attribute: tier, action: insert }
//!       - { key: tier, action: delete }
//! ```

use std::fmt;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};
use vla_pipeline::config::ConfigProblem;
use vla_pipeline::{MetricBatch, Processor};

/// The config `type` of this processor.
pub const TYPE: &str = "attributes";

/// The `attributes` processor's settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The actions, applied in order to every data point.
    pub actions: Vec<Action>,
}

/// One action on one attribute key.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// The attribute the action acts on.
    pub key: String,
    /// What to do.
    pub action: ActionKind,
    /// The literal value to set (insert, update, upsert).
    #[serde(default)]
    pub value: Option<AttrValue>,
    /// Copy the value of this attribute instead of a literal (insert, update, upsert).
    #[serde(default)]
    pub from_attribute: Option<String>,
}

/// What an action does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Set the attribute only when it is absent.
    Insert,
    /// Set the attribute only when it is present.
    Update,
    /// Set the attribute whether present or not.
    Upsert,
    /// Remove the attribute.
    Delete,
    /// Replace a present value with the hex SHA-256 of its text (pseudonymises an id while
    /// keeping series apart).
    Hash,
}

/// A literal attribute value written in the config.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// A string.
    String(String),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Double(f64),
    /// A boolean.
    Bool(bool),
}

impl<'de> Deserialize<'de> for AttrValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = AttrValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AttrValue, E> {
                Ok(AttrValue::String(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<AttrValue, E> {
                Ok(AttrValue::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<AttrValue, E> {
                Ok(AttrValue::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<AttrValue, E> {
                i64::try_from(v)
                    .map(AttrValue::Int)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<AttrValue, E> {
                Ok(AttrValue::Double(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl AttrValue {
    fn to_any_value(&self) -> AnyValue {
        let value = match self {
            AttrValue::String(s) => any_value::Value::StringValue(s.clone()),
            AttrValue::Int(i) => any_value::Value::IntValue(*i),
            AttrValue::Double(d) => any_value::Value::DoubleValue(*d),
            AttrValue::Bool(b) => any_value::Value::BoolValue(*b),
        };
        AnyValue { value: Some(value) }
    }
}

impl Config {
    /// Checks the actions; problems are reported under `path` (e.g. `processors.attributes`).
    pub fn validate(&self, path: &str) -> Vec<ConfigProblem> {
        validate_actions(&self.actions, &format!("{path}.actions"))
    }
}

/// Checks a list of actions at `list` (the `resource` processor's `attributes` too).
pub(crate) fn validate_actions(actions: &[Action], list: &str) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    if actions.is_empty() {
        problems.push(ConfigProblem::new(list, "must list at least one action"));
    }
    for (i, a) in actions.iter().enumerate() {
        let at = format!("{list}[{i}]");
        if a.key.is_empty() {
            problems.push(ConfigProblem::new(format!("{at}.key"), "must not be empty"));
        }
        match (a.action, &a.value, &a.from_attribute) {
            (ActionKind::Delete | ActionKind::Hash, None, None) => {}
            (ActionKind::Delete | ActionKind::Hash, _, _) => problems.push(ConfigProblem::new(
                at,
                "a delete or hash action takes no value or from_attribute",
            )),
            (_, Some(_), Some(_)) => problems.push(ConfigProblem::new(
                at,
                "set either value or from_attribute, not both",
            )),
            (_, None, None) => {
                problems.push(ConfigProblem::new(at, "needs a value or a from_attribute"))
            }
            (_, None, Some(from)) if from.is_empty() => problems.push(ConfigProblem::new(
                format!("{at}.from_attribute"),
                "must not be empty",
            )),
            _ => {}
        }
    }
    problems
}

/// Where an action's new value comes from.
#[derive(Debug)]
enum Source {
    Literal(AnyValue),
    FromAttribute(String),
    Nothing,
}

#[derive(Debug)]
struct CompiledAction {
    key: String,
    kind: ActionKind,
    source: Source,
}

/// The `attributes` processor.
#[derive(Debug)]
pub struct Attributes {
    actions: Actions,
}

impl Attributes {
    /// A processor running the (validated) `config`'s actions.
    pub fn new(config: &Config) -> Self {
        Self {
            actions: Actions::new(&config.actions),
        }
    }
}

/// Compiled actions, applied in order to one attribute list.
#[derive(Debug)]
pub(crate) struct Actions(Vec<CompiledAction>);

impl Actions {
    /// Compiles validated actions.
    pub(crate) fn new(actions: &[Action]) -> Self {
        let actions = actions
            .iter()
            .map(|a| CompiledAction {
                key: a.key.clone(),
                kind: a.action,
                source: match (&a.value, &a.from_attribute) {
                    (Some(v), _) => Source::Literal(v.to_any_value()),
                    (None, Some(from)) => Source::FromAttribute(from.clone()),
                    (None, None) => Source::Nothing,
                },
            })
            .collect();
        Self(actions)
    }

    /// Runs the actions on `attrs`.
    pub(crate) fn apply(&self, attrs: &mut Vec<KeyValue>) {
        for a in &self.0 {
            let pos = attrs.iter().position(|kv| kv.key == a.key);
            if a.kind == ActionKind::Delete {
                attrs.retain(|kv| kv.key != a.key);
                continue;
            }
            if a.kind == ActionKind::Hash {
                if let Some(v) = pos.and_then(|i| attrs[i].value.as_mut()) {
                    hash_value(v);
                }
                continue;
            }
            let allowed = match a.kind {
                ActionKind::Insert => pos.is_none(),
                ActionKind::Update => pos.is_some(),
                _ => true,
            };
            if !allowed {
                continue;
            }
            let value = match &a.source {
                Source::Literal(v) => v.clone(),
                Source::FromAttribute(from) => {
                    match attrs
                        .iter()
                        .find(|kv| &kv.key == from)
                        .and_then(|kv| kv.value.clone())
                    {
                        Some(v) => v,
                        None => continue,
                    }
                }
                Source::Nothing => continue,
            };
            match pos {
                Some(i) => attrs[i].value = Some(value),
                None => attrs.push(KeyValue {
                    key: a.key.clone(),
                    value: Some(value),
                    ..Default::default()
                }),
            }
        }
    }
}

/// Replaces a value with the lowercase hex SHA-256 of its text (strings as they are, other
/// scalars as printed, bytes as they are; arrays and maps by their protobuf encoding).
fn hash_value(v: &mut AnyValue) {
    use sha2::Digest as _;
    use std::fmt::Write as _;
    let mut h = sha2::Sha256::new();
    match &v.value {
        Some(any_value::Value::StringValue(s)) => h.update(s.as_bytes()),
        Some(any_value::Value::BoolValue(b)) => h.update(if *b { "true" } else { "false" }),
        Some(any_value::Value::IntValue(i)) => h.update(i.to_string()),
        Some(any_value::Value::DoubleValue(d)) => h.update(d.to_string()),
        Some(any_value::Value::BytesValue(b)) => h.update(b),
        Some(other) => h.update(prost::Message::encode_to_vec(&AnyValue {
            value: Some(other.clone()),
        })),
        None => return,
    }
    let mut hex = String::with_capacity(64);
    for byte in h.finalize() {
        let _ = write!(hex, "{byte:02x}");
    }
    v.value = Some(any_value::Value::StringValue(hex));
}

impl Processor for Attributes {
    fn process(&mut self, batch: &mut MetricBatch) {
        batch.for_each_point_mut(|_, attrs| self.actions.apply(attrs));
    }
}

impl vla_pipeline::registry::Component for Attributes {
    const TYPE: &'static str = TYPE;
    const EXAMPLE: &'static str = "\
actions:
  - { key: deployment.environment, value: prod, action: upsert }
  - { key: customer_tier, from_attribute: tier, action: insert }
  - { key: tier, action: delete }
";
    type Config = Config;

    fn validate(config: &Config, path: &str) -> Vec<ConfigProblem> {
        config.validate(path)
    }
}

impl vla_pipeline::registry::ProcessorType for Attributes {
    fn build(
        config: &Config,
        _: vla_pipeline::registry::BuildContext<'_>,
    ) -> Result<Box<dyn vla_pipeline::registry::ProcessorFactory>, vla_pipeline::registry::BuildError>
    {
        let config = config.clone();
        Ok(Box::new(vla_pipeline::registry::PerPipeline(move || {
            Box::new(Attributes::new(&config)) as Box<dyn vla_pipeline::Processor>
        })))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use vla_pipeline::fixtures;

    fn config(json: serde_json::Value) -> Config {
        serde_json::from_value(json).unwrap()
    }

    /// Runs one action list over one point with `attrs`; returns the attributes as text.
    fn run(actions: serde_json::Value, attrs: &[(&str, &str)]) -> Vec<String> {
        let cfg = config(serde_json::json!({ "actions": actions }));
        assert!(cfg.validate("p").is_empty(), "{:?}", cfg.validate("p"));
        let mut batch = MetricBatch::new(
            "otlp".into(),
            vec![fixtures::resource(
                "svc",
                vec![fixtures::gauge("g", "", &[(1.0, attrs)])],
            )],
        );
        Attributes::new(&cfg).process(&mut batch);
        let mut out = Vec::new();
        batch.for_each_point_mut(|_, attrs| {
            for kv in attrs.iter() {
                let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => s.clone(),
                    Some(any_value::Value::IntValue(i)) => format!("int:{i}"),
                    Some(any_value::Value::DoubleValue(d)) => format!("double:{d}"),
                    Some(any_value::Value::BoolValue(b)) => format!("bool:{b}"),
                    other => format!("{other:?}"),
                };
                out.push(format!("{}={v}", kv.key));
            }
        });
        out
    }

    #[test]
    fn actions_table() {
        use serde_json::json;
        type Case = (
            &'static str,
            serde_json::Value,
            &'static [(&'static str, &'static str)],
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "insert absent",
                json!([{"key": "env", "value": "prod", "action": "insert"}]),
                &[("a", "1")],
                vec!["a=1", "env=prod"],
            ),
            (
                "insert present keeps old",
                json!([{"key": "a", "value": "x", "action": "insert"}]),
                &[("a", "1")],
                vec!["a=1"],
            ),
            (
                "update present",
                json!([{"key": "a", "value": "x", "action": "update"}]),
                &[("a", "1")],
                vec!["a=x"],
            ),
            (
                "update absent does nothing",
                json!([{"key": "b", "value": "x", "action": "update"}]),
                &[("a", "1")],
                vec!["a=1"],
            ),
            (
                "upsert both ways",
                json!([
                    {"key": "a", "value": "x", "action": "upsert"},
                    {"key": "b", "value": 7, "action": "upsert"}
                ]),
                &[("a", "1")],
                vec!["a=x", "b=int:7"],
            ),
            (
                "typed literals",
                json!([
                    {"key": "d", "value": 0.5, "action": "insert"},
                    {"key": "t", "value": true, "action": "insert"}
                ]),
                &[],
                vec!["d=double:0.5", "t=bool:true"],
            ),
            (
                "delete",
                json!([{"key": "a", "action": "delete"}]),
                &[("a", "1"), ("b", "2")],
                vec!["b=2"],
            ),
            (
                "copy then delete = rename",
                json!([
                    {"key": "tier", "from_attribute": "t", "action": "insert"},
                    {"key": "t", "action": "delete"}
                ]),
                &[("t", "gold")],
                vec!["tier=gold"],
            ),
            (
                "from absent attribute does nothing",
                json!([{"key": "tier", "from_attribute": "missing", "action": "upsert"}]),
                &[("a", "1")],
                vec!["a=1"],
            ),
        ];
        for (name, actions, attrs, want) in cases {
            assert_eq!(run(actions, attrs), want, "{name}");
        }
    }

    #[test]
    fn validation_messages() {
        let cfg = config(serde_json::json!({"actions": [
            {"key": "", "action": "delete"},
            {"key": "a", "action": "delete", "value": "x"},
            {"key": "a", "action": "insert"},
            {"key": "a", "action": "upsert", "value": 1, "from_attribute": "b"},
        ]}));
        let got: Vec<String> = cfg
            .validate("processors.attributes")
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(
            got,
            vec![
                "processors.attributes.actions[0].key: must not be empty",
                "processors.attributes.actions[1]: a delete or hash action takes no value or from_attribute",
                "processors.attributes.actions[2]: needs a value or a from_attribute",
                "processors.attributes.actions[3]: set either value or from_attribute, not both",
            ]
        );
        let empty = config(serde_json::json!({"actions": []}));
        assert_eq!(
            empty.validate("p")[0].to_string(),
            "p.actions: must list at least one action"
        );
        let err = serde_json::from_value::<Config>(serde_json::json!({"actions": [
            {"key": "a", "action": "extract"}
        ]}))
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("unknown variant `extract`"), "{err}");
    }
}
