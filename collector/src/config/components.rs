//! The component registry as the collector sees it: one table of every receiver, processor
//! and exporter type, filled by each component crate's `register` function (the trait is
//! [`vla_pipeline::registry`]). Parsing, validation, the `components` listing, the listen
//! endpoints bound before start and building all go through it; nothing here names a
//! component type.

use std::any::Any;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use serde::de::DeserializeOwned;
use serde_json::Value;
use vla_pipeline::Exporter;
use vla_pipeline::config::ConfigProblem;
use vla_pipeline::driver::DriverConfig;
use vla_pipeline::registry::{
    BuildContext, BuildError, BuiltReceiver, Component, ExporterType, ProcessorFactory,
    ProcessorType, ReceiverType, Registry,
};

use super::diag::{Diagnostic, Seg, YamlPath};
use super::suggest;

/// The three kinds of component sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `receivers`
    Receiver,
    /// `processors`
    Processor,
    /// `exporters`
    Exporter,
}

impl Kind {
    /// Every kind, in config order.
    pub const ALL: [Kind; 3] = [Kind::Receiver, Kind::Processor, Kind::Exporter];

    /// The top-level section and pipeline field name (`receivers`, ...).
    pub fn section(self) -> &'static str {
        match self {
            Kind::Receiver => "receivers",
            Kind::Processor => "processors",
            Kind::Exporter => "exporters",
        }
    }

    /// The singular noun (`receiver`, ...).
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Receiver => "receiver",
            Kind::Processor => "processor",
            Kind::Exporter => "exporter",
        }
    }

    /// The registered component types of this kind, by name.
    pub fn types(self) -> Vec<&'static str> {
        REGISTRY.of(self).map(|t| t.name).collect()
    }
}

/// A registered component type.
#[derive(Debug)]
pub struct ComponentType {
    /// Its kind.
    pub kind: Kind,
    /// Its config `type`.
    pub name: &'static str,
    /// Its documented example settings (YAML).
    pub example: &'static str,
    parse: fn(&Value, &YamlPath) -> Result<ComponentConfig, Vec<Diagnostic>>,
}

impl ComponentType {
    /// Parses and validates settings of this type found at `path`.
    pub fn parse(
        &self,
        value: &Value,
        path: &YamlPath,
    ) -> Result<ComponentConfig, Vec<Diagnostic>> {
        (self.parse)(value, path)
    }
}

/// Every component type this build knows, sorted by kind then name.
#[derive(Debug, Default)]
pub struct Types(Vec<ComponentType>);

impl Types {
    /// The types of `kind`, by name.
    pub fn of(&self, kind: Kind) -> impl Iterator<Item = &ComponentType> {
        self.0.iter().filter(move |t| t.kind == kind)
    }

    /// The type `name` of `kind`.
    pub fn get(&self, kind: Kind, name: &str) -> Option<&ComponentType> {
        self.of(kind).find(|t| t.name == name)
    }

    /// Every type.
    pub fn all(&self) -> &[ComponentType] {
        &self.0
    }
}

impl Registry for Types {
    fn receiver<C: ReceiverType>(&mut self) {
        self.0.push(entry::<C>(Kind::Receiver, parse_receiver::<C>));
    }
    fn processor<C: ProcessorType>(&mut self) {
        self.0
            .push(entry::<C>(Kind::Processor, parse_processor::<C>));
    }
    fn exporter<C: ExporterType>(&mut self) {
        self.0.push(entry::<C>(Kind::Exporter, parse_exporter::<C>));
    }
}

fn entry<C: Component>(
    kind: Kind,
    parse: fn(&Value, &YamlPath) -> Result<ComponentConfig, Vec<Diagnostic>>,
) -> ComponentType {
    ComponentType {
        kind,
        name: C::TYPE,
        example: C::EXAMPLE,
        parse,
    }
}

/// The table: every component crate's `register`.
pub static REGISTRY: LazyLock<Types> = LazyLock::new(|| {
    let mut t = Types::default();
    vla_receivers::register(&mut t);
    vla_processors::register(&mut t);
    vla_exporters::register(&mut t);
    t.0.sort_by(|a, b| (a.kind, a.name).cmp(&(b.kind, b.name)));
    t
});

/// A component's typed, validated settings, whatever its type.
#[derive(Clone)]
pub struct ComponentConfig(Arc<dyn Erased>);

/// A receiver's settings.
pub type ReceiverConfig = ComponentConfig;
/// A processor's settings.
pub type ProcessorConfig = ComponentConfig;
/// An exporter's settings (with its queue and retry settings).
pub type ExporterConfig = ComponentConfig;

impl std::fmt::Debug for ComponentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ComponentConfig {
    /// The config `type`.
    pub fn type_name(&self) -> &'static str {
        self.0.type_name()
    }

    /// Whether this is a `C`.
    pub fn is<C: Component>(&self) -> bool {
        self.0.type_name() == C::TYPE && self.0.as_any().is::<C::Config>()
    }

    /// The typed settings, when they are a `T`.
    pub fn get<T: 'static>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref()
    }

    /// The endpoints it listens on: (setting below the component, `ip:port` text).
    pub fn listen_endpoints(&self) -> Vec<(&'static str, &str)> {
        self.0.listen_endpoints()
    }

    /// An exporter's queue and retry settings (the defaults for other kinds).
    pub fn driver_config(&self) -> DriverConfig {
        self.0.driver().cloned().unwrap_or_default()
    }

    /// Builds it as a receiver.
    pub fn build_receiver(&self, ctx: BuildContext<'_>) -> Result<BuiltReceiver, BuildError> {
        self.0.build_receiver(ctx)
    }

    /// Builds it as a processor.
    pub fn build_processor(
        &self,
        ctx: BuildContext<'_>,
    ) -> Result<Box<dyn ProcessorFactory>, BuildError> {
        self.0.build_processor(ctx)
    }

    /// Builds it as an exporter.
    pub fn build_exporter(&self, ctx: BuildContext<'_>) -> Result<Arc<dyn Exporter>, BuildError> {
        self.0.build_exporter(ctx)
    }
}

fn wrong_kind(ty: &str, kind: &str) -> BuildError {
    format!("{ty} is not {kind} type").into()
}

/// A typed config behind [`ComponentConfig`].
trait Erased: Send + Sync {
    fn type_name(&self) -> &'static str;
    fn as_any(&self) -> &dyn Any;
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result;
    fn listen_endpoints(&self) -> Vec<(&'static str, &str)>;
    fn driver(&self) -> Option<&DriverConfig> {
        None
    }
    fn build_receiver(&self, _: BuildContext<'_>) -> Result<BuiltReceiver, BuildError> {
        Err(wrong_kind(self.type_name(), "a receiver"))
    }
    fn build_processor(
        &self,
        _: BuildContext<'_>,
    ) -> Result<Box<dyn ProcessorFactory>, BuildError> {
        Err(wrong_kind(self.type_name(), "a processor"))
    }
    fn build_exporter(&self, _: BuildContext<'_>) -> Result<Arc<dyn Exporter>, BuildError> {
        Err(wrong_kind(self.type_name(), "an exporter"))
    }
}

struct AsReceiver<C: Component>(C::Config);
struct AsProcessor<C: Component>(C::Config);
struct AsExporter<C: Component>(C::Config, DriverConfig);

macro_rules! common {
    () => {
        fn type_name(&self) -> &'static str {
            C::TYPE
        }
        fn as_any(&self) -> &dyn Any {
            &self.0
        }
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_tuple(C::TYPE).field(&self.0).finish()
        }
        fn listen_endpoints(&self) -> Vec<(&'static str, &str)> {
            C::listen_endpoints(&self.0)
        }
    };
}

impl<C: ReceiverType> Erased for AsReceiver<C> {
    common!();
    fn build_receiver(&self, ctx: BuildContext<'_>) -> Result<BuiltReceiver, BuildError> {
        C::build(&self.0, ctx)
    }
}

impl<C: ProcessorType> Erased for AsProcessor<C> {
    common!();
    fn build_processor(
        &self,
        ctx: BuildContext<'_>,
    ) -> Result<Box<dyn ProcessorFactory>, BuildError> {
        C::build(&self.0, ctx)
    }
}

impl<C: ExporterType> Erased for AsExporter<C> {
    common!();
    fn driver(&self) -> Option<&DriverConfig> {
        Some(&self.1)
    }
    fn build_exporter(&self, ctx: BuildContext<'_>) -> Result<Arc<dyn Exporter>, BuildError> {
        C::build(&self.0, ctx)
    }
}

fn parse_receiver<C: ReceiverType>(
    value: &Value,
    path: &YamlPath,
) -> Result<ComponentConfig, Vec<Diagnostic>> {
    let c = decode::<C::Config>(value, path)?;
    checked(path, C::validate(&c, &path.to_string()))?;
    Ok(ComponentConfig(Arc::new(AsReceiver::<C>(c))))
}

fn parse_processor<C: ProcessorType>(
    value: &Value,
    path: &YamlPath,
) -> Result<ComponentConfig, Vec<Diagnostic>> {
    let c = decode::<C::Config>(value, path)?;
    checked(path, C::validate(&c, &path.to_string()))?;
    Ok(ComponentConfig(Arc::new(AsProcessor::<C>(c))))
}

fn parse_exporter<C: ExporterType>(
    value: &Value,
    path: &YamlPath,
) -> Result<ComponentConfig, Vec<Diagnostic>> {
    let c = decode::<C::Config>(value, path)?;
    let p = path.to_string();
    let driver = with_driver(path, C::validate(&c, &p), C::driver(&c, &p))?;
    Ok(ComponentConfig(Arc::new(AsExporter::<C>(c, driver))))
}

/// Parses and checks a component of type `ty` at `path`; `None` when the type is unknown.
pub(crate) fn parse(
    kind: Kind,
    ty: &str,
    value: &Value,
    path: &YamlPath,
) -> Option<Result<ComponentConfig, Vec<Diagnostic>>> {
    Some(REGISTRY.get(kind, ty)?.parse(value, path))
}

/// `Ok` when `problems` is empty, else the problems as diagnostics.
fn checked(path: &YamlPath, problems: Vec<ConfigProblem>) -> Result<(), Vec<Diagnostic>> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems
            .iter()
            .map(|p| Diagnostic::from_problem(path, p))
            .collect())
    }
}

/// Merges a component's `validate` problems with its driver config's, without duplicates.
fn with_driver(
    path: &YamlPath,
    mut problems: Vec<ConfigProblem>,
    driver: Result<DriverConfig, Vec<ConfigProblem>>,
) -> Result<DriverConfig, Vec<Diagnostic>> {
    match driver {
        Ok(d) => checked(path, problems).map(|()| d),
        Err(more) => {
            for p in more {
                if !problems.contains(&p) {
                    problems.push(p);
                }
            }
            checked(path, problems).map(|()| DriverConfig::default())
        }
    }
}

/// Most problems reported for one component; past it, the first ones are enough to go on.
const MAX_PROBLEMS_PER_COMPONENT: usize = 32;

/// Deserializes a component's value (`null`, a key with no value, means all defaults) and
/// turns serde errors into diagnostics at their exact nested paths. Serde stops at the first
/// error, so each offending key is taken out and decoding tried again, until it succeeds or
/// a problem cannot be stepped over: every unknown field and every bad value of a component
/// is reported at once (a required field reported missing because its bad value was taken
/// out is not reported twice).
pub(crate) fn decode<T: DeserializeOwned>(
    value: &Value,
    path: &YamlPath,
) -> Result<T, Vec<Diagnostic>> {
    let mut value = if value.is_null() {
        Value::Object(serde_json::Map::new())
    } else {
        value.clone()
    };
    let mut problems: Vec<Diagnostic> = Vec::new();
    let mut removed: Vec<YamlPath> = Vec::new();
    loop {
        let err = match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(t) if problems.is_empty() => return Ok(t),
            Ok(_) => return Err(problems),
            Err(err) => err,
        };
        let mut at = path.clone();
        for seg in err.path().iter() {
            match seg {
                serde_path_to_error::Segment::Seq { index } => at = at.index(*index),
                serde_path_to_error::Segment::Map { key }
                | serde_path_to_error::Segment::Enum { variant: key } => at = at.key(key.clone()),
                serde_path_to_error::Segment::Unknown => break,
            }
        }
        let message = err.into_inner().to_string();
        let d = serde_diagnostic(at, &message);
        let missing = message
            .strip_prefix("missing field `")
            .map(|rest| rest.trim_end_matches('`'));
        let echo = missing.is_some_and(|field| removed.iter().any(|r| *r == d.path.key(field)));
        if !echo {
            problems.push(d.clone());
        }
        if missing.is_some() || problems.len() >= MAX_PROBLEMS_PER_COMPONENT {
            return Err(problems);
        }
        let relative = d
            .path
            .segments()
            .get(path.segments().len()..)
            .unwrap_or_default();
        if !remove_key(&mut value, relative) {
            return Err(problems);
        }
        removed.push(d.path);
    }
}

/// Removes the mapping key at `path` (relative to `value`); false when `path` does not end
/// in a key that exists.
fn remove_key(value: &mut Value, path: &[Seg]) -> bool {
    let Some((Seg::Key(last), parents)) = path.split_last() else {
        return false;
    };
    let mut v = value;
    for seg in parents {
        v = match (seg, v) {
            (Seg::Key(k), Value::Object(m)) => match m.get_mut(k) {
                Some(next) => next,
                None => return false,
            },
            (Seg::Index(i), Value::Array(a)) => match a.get_mut(*i) {
                Some(next) => next,
                None => return false,
            },
            _ => return false,
        };
    }
    match v {
        Value::Object(m) => m.remove(last).is_some(),
        _ => false,
    }
}

/// Rewrites serde's messages into ours: unknown fields and values get a did-you-mean (and the
/// unknown key goes into the path), type errors say what was expected in YAML words.
pub(crate) fn serde_diagnostic(at: YamlPath, msg: &str) -> Diagnostic {
    if let Some(rest) = msg.strip_prefix("unknown field `")
        && let Some((field, expected)) = rest.split_once('`')
    {
        let valid = backticked(expected);
        // serde_path_to_error's path usually ends at the unknown key already.
        let ends_with_field =
            matches!(at.segments().last(), Some(super::diag::Seg::Key(k)) if k == field);
        let at = if ends_with_field { at } else { at.key(field) };
        return Diagnostic::at(at, unknown("field", field, &valid));
    }
    if let Some(rest) = msg.strip_prefix("unknown variant `")
        && let Some((variant, expected)) = rest.split_once('`')
    {
        let valid = backticked(expected);
        return Diagnostic::at(at, unknown("value", variant, &valid));
    }
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let field = rest.trim_end_matches('`');
        return Diagnostic::at(at, format!("missing required field {field:?}"));
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = msg.strip_prefix(prefix)
            && let Some((got, expected)) = rest.rsplit_once(", expected ")
        {
            let got = if got.starts_with("string ") && may_hold_a_secret(&at, got) {
                "a string (not shown: it may hold a secret)"
            } else {
                got
            };
            return Diagnostic::at(
                at,
                format!("expected {}, got {}", yaml_words(expected), got),
            );
        }
    }
    Diagnostic::at(at, msg)
}

/// Whether a string value (`got`, as serde quotes it) at `at` may be a credential (a
/// connection string, a password, a header), so an error must not echo it: judged by the
/// setting's name and by the value's shape.
fn may_hold_a_secret(at: &YamlPath, got: &str) -> bool {
    const NAMES: &[&str] = &[
        "dsn",
        "password",
        "secret",
        "token",
        "auth",
        "header",
        "credential",
    ];
    const SHAPES: &[&str] = &[
        "password=",
        "passwd=",
        "secret",
        "token",
        "apikey",
        "api_key",
    ];
    let by_name = at.segments().iter().any(|seg| match seg {
        super::diag::Seg::Key(k) => {
            let k = k.to_ascii_lowercase();
            NAMES.iter().any(|w| k.contains(w))
        }
        super::diag::Seg::Index(_) => false,
    });
    let value = got.to_ascii_lowercase();
    // `scheme://user:password@host`
    let userinfo = value
        .split_once("://")
        .is_some_and(|(_, rest)| rest.split('/').next().is_some_and(|a| a.contains('@')));
    by_name || userinfo || SHAPES.iter().any(|s| value.contains(s))
}

/// `unknown field "endpont" (did you mean "endpoint"?)`, or the valid names when none is close.
pub(crate) fn unknown(what: &str, name: &str, valid: &[&str]) -> String {
    match suggest::did_you_mean(name, valid.iter().copied()) {
        Some(s) => format!("unknown {what} {name:?} (did you mean {s:?}?)"),
        None if valid.is_empty() => format!("unknown {what} {name:?} (none are allowed here)"),
        None => format!(
            "unknown {what} {name:?}; valid {what}s: {}",
            valid.join(", ")
        ),
    }
}

/// The names between backticks in serde's "expected one of `a`, `b`".
fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// Serde's Rust type names in the words of a YAML author.
fn yaml_words(expected: &str) -> String {
    match expected {
        "usize" | "u64" | "u32" | "u16" | "u8" => "a non-negative integer".to_owned(),
        "isize" | "i64" | "i32" | "i16" | "i8" => "an integer".to_owned(),
        "f64" | "f32" => "a number".to_owned(),
        "a map" => "a mapping".to_owned(),
        "a sequence" => "a list".to_owned(),
        e if e.starts_with("struct ") => "a mapping".to_owned(),
        e if e.starts_with("a boolean") => "true or false".to_owned(),
        e => e.to_owned(),
    }
}

/// A parsed listen endpoint for the clash check: `None` for port 0 (never clashes).
pub(crate) fn claimable(endpoint: &str) -> Option<SocketAddr> {
    vla_pipeline::config::parse_listen_addr(endpoint)
        .ok()
        .filter(|a| a.port() != 0)
}

/// Whether two listen addresses cannot both be bound (same port, same or wildcard IP).
pub(crate) fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && (a.ip() == b.ip()
            || a.ip().is_unspecified() && a.is_ipv4() == b.is_ipv4()
            || b.ip().is_unspecified() && a.is_ipv4() == b.is_ipv4()
            || a.ip().is_unspecified() && b.ip().is_unspecified())
}
