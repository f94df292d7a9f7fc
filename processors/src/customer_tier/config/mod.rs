//! The `customer_tier` settings, their defaults and their pure validation (no I/O).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use vla_pipeline::config::{ConfigProblem, duration};

use super::labels;
pub use crate::OnExisting;
use crate::pattern::{MetricGlob, ScalarText};

/// The `customer_tier` processor's settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the customer table comes from: exactly one of `inline`, `file`, `postgres`.
    pub source: SourceConfig,
    /// The attribute that carries the customer id (default `customer_id`).
    #[serde(default = "default_customer_id_key")]
    pub customer_id_key: String,
    /// The attribute the tier is written to (default `tier`).
    #[serde(default = "default_tier_key")]
    pub tier_key: String,
    /// The tier given to customers missing from the table (default `unknown`).
    #[serde(default = "default_default_tier")]
    pub default_tier: String,
    /// Other fields of the customer row to add: row field → attribute key (default none).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// What to enrich: data points, resources, or both (default `both`).
    #[serde(default)]
    pub apply_to: ApplyTo,
    /// What to do when the point already has the attribute (default `keep`).
    #[serde(default = "OnExisting::keep")]
    pub on_existing: OnExisting,
    /// Remove the customer id from the points of some metrics after enrichment.
    #[serde(default)]
    pub drop_customer_id: Option<DropConfig>,
}

/// Where the customer table comes from; exactly one of the three must be set.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Customers written in the config: id → tier, or id → `{tier: ..., other fields}`.
    #[serde(default)]
    pub inline: Option<BTreeMap<String, InlineCustomer>>,
    /// A YAML (`.yaml`/`.yml`) or CSV (`.csv`) file; a relative path is relative to the
    /// collector's working directory.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Whether the file must exist at start-up (default true; file sources only). With
    /// `false` a missing file starts the component without a table until the file appears.
    #[serde(default)]
    pub required: Option<bool>,
    /// How often the file is checked for changes (default 5s, at least 100ms; file sources only).
    #[serde(default, deserialize_with = "optional_duration")]
    pub reload_interval: Option<Duration>,
    /// A PostgreSQL query run periodically.
    #[serde(default)]
    pub postgres: Option<PostgresConfig>,
}

/// One customer written inline: just a tier, or a row with `tier` and other fields.
#[derive(Debug, Clone, PartialEq)]
pub enum InlineCustomer {
    /// `cust-0001: enterprise`.
    Tier(String),
    /// `cust-0002: { tier: pro, plan: annual }`.
    Fields(BTreeMap<String, String>),
}

/// The `postgres` source. Its `Debug` hides the DSN, which may hold a password.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// A libpq-style connection string: `host=db port=5432 user=vla dbname=billing`
    /// (`hostaddr=10.0.0.7` may stand in for `host=`).
    pub dsn: String,
    /// A file holding the password, read at each connection attempt (trailing newline
    /// trimmed); instead of `password=` in the DSN.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The query; its columns are `customer_id` (or the first column), `tier`, and extra
    /// fields (default `SELECT customer_id, tier FROM customers`).
    #[serde(default = "default_query")]
    pub query: String,
    /// How often the query runs (default 30s, at least 100ms).
    #[serde(default = "default_refresh_interval", deserialize_with = "duration")]
    pub refresh_interval: Duration,
    /// The bound on one refresh: connect and query (default 5s, at least 10ms).
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("dsn", &"<hidden>")
            .field("password_file", &self.password_file)
            .field("query", &self.query)
            .field("refresh_interval", &self.refresh_interval)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Which attributes get the tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyTo {
    /// Data points that carry the customer id.
    Points,
    /// Resources whose attributes carry the customer id.
    Resources,
    /// Both.
    #[default]
    Both,
}

impl ApplyTo {
    pub(crate) fn points(self) -> bool {
        matches!(self, ApplyTo::Points | ApplyTo::Both)
    }
    pub(crate) fn resources(self) -> bool {
        matches!(self, ApplyTo::Resources | ApplyTo::Both)
    }
}

/// Which metrics lose their customer id after enrichment.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropConfig {
    /// Metric names (as sent in OTLP) or `*` globs whose points lose the id.
    pub include: Vec<String>,
    /// Names or globs excluded from `include`.
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// The default `postgres.query`.
pub const DEFAULT_QUERY: &str = "SELECT customer_id, tier FROM customers";
/// The default file `reload_interval`.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);
/// The shortest `reload_interval` and `refresh_interval`: shorter would turn the refresher
/// into a busy loop against the file system or the database.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// The shortest postgres `timeout`: below it no connection can be made.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(10);

fn default_customer_id_key() -> String {
    "customer_id".to_owned()
}
fn default_tier_key() -> String {
    "tier".to_owned()
}
fn default_default_tier() -> String {
    "unknown".to_owned()
}
fn default_query() -> String {
    DEFAULT_QUERY.to_owned()
}
fn default_refresh_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

impl<'de> Deserialize<'de> for InlineCustomer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = InlineCustomer;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a tier, or a map with `tier` and other fields of the customer")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<InlineCustomer, E> {
                Ok(InlineCustomer::Tier(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<InlineCustomer, E> {
                Ok(InlineCustomer::Tier(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<InlineCustomer, E> {
                Ok(InlineCustomer::Tier(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<InlineCustomer, A::Error> {
                let mut fields = BTreeMap::new();
                while let Some((k, ScalarText(v))) = map.next_entry::<String, ScalarText>()? {
                    if fields.insert(k.clone(), v).is_some() {
                        return Err(de::Error::custom(format!("duplicate field `{k}`")));
                    }
                }
                Ok(InlineCustomer::Fields(fields))
            }
        }
        d.deserialize_any(V)
    }
}

impl InlineCustomer {
    /// The tier, if written and not empty.
    pub(crate) fn tier(&self) -> Option<&str> {
        let tier = match self {
            InlineCustomer::Tier(t) => t.as_str(),
            InlineCustomer::Fields(f) => f.get("tier").map(String::as_str).unwrap_or(""),
        };
        (!tier.trim().is_empty()).then_some(tier)
    }
}

impl SourceConfig {
    /// Whether the file must exist at start-up (`required`, default true).
    pub(crate) fn file_required(&self) -> bool {
        self.required.unwrap_or(true)
    }

    /// The names of the sources that are set.
    fn set(&self) -> Vec<&'static str> {
        let mut set = Vec::new();
        if self.inline.is_some() {
            set.push("inline");
        }
        if self.file.is_some() {
            set.push("file");
        }
        if self.postgres.is_some() {
            set.push("postgres");
        }
        set
    }
}

impl Config {
    /// Pure checks (no I/O): exactly one source, non-empty keys, query and DSN, intervals not
    /// below their minimums, `reload_interval` and `required` only with a file, added attribute
    /// keys usable as Prometheus labels, valid globs and inline entries. Problems are reported under `path` (e.g. `processors.customer_tier`).
    pub fn validate(&self, path: &str) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let mut problem =
            |at: String, message: String| problems.push(ConfigProblem::new(at, message));
        let src = format!("{path}.source");
        match self.source.set().as_slice() {
            [_] => {}
            [] => problem(
                src.clone(),
                "set exactly one of inline, file, postgres".into(),
            ),
            many => problem(
                src.clone(),
                format!(
                    "set only one of inline, file, postgres (found {})",
                    many.join(", ")
                ),
            ),
        }
        if let Some(inline) = &self.source.inline {
            let at = format!("{src}.inline");
            if inline.is_empty() {
                problem(at.clone(), "must list at least one customer".into());
            }
            for (id, customer) in inline {
                if id.trim().is_empty() {
                    problem(at.clone(), "customer ids must not be empty".into());
                    continue;
                }
                if customer.tier().is_none() {
                    let sub = match customer {
                        InlineCustomer::Tier(_) => "",
                        InlineCustomer::Fields(_) => "tier",
                    };
                    let (at, message) = keyed(
                        &at,
                        id,
                        sub,
                        "a tier is required and must not be empty".into(),
                    );
                    problem(at, message);
                }
                if let InlineCustomer::Fields(fields) = customer
                    && fields.contains_key("customer_id")
                {
                    let (at, message) = keyed(
                        &at,
                        id,
                        "customer_id",
                        "not allowed here: the map key is the customer id".into(),
                    );
                    problem(at, message);
                }
            }
        }
        if let Some(file) = &self.source.file {
            let text = file.to_string_lossy();
            if text.trim().is_empty() {
                problem(format!("{src}.file"), "must not be empty".into());
            } else if super::table::FileFormat::of(file).is_none() {
                problem(
                    format!("{src}.file"),
                    format!("{text:?}: expected a name ending in .yaml, .yml or .csv"),
                );
            }
        }
        if self.source.required.is_some() && self.source.file.is_none() {
            problem(
                format!("{src}.required"),
                "only applies to a file source".into(),
            );
        }
        if let Some(interval) = self.source.reload_interval {
            let at = format!("{src}.reload_interval");
            if self.source.file.is_none() {
                problem(
                    at,
                    "only applies to a file source (postgres has refresh_interval)".into(),
                );
            } else if let Some(why) = at_least(interval, MIN_INTERVAL) {
                problem(at, why);
            }
        }
        if let Some(pg) = &self.source.postgres {
            let at = format!("{src}.postgres");
            if pg.dsn.trim().is_empty() {
                problem(format!("{at}.dsn"), "must not be empty".into());
            } else {
                match tokio_postgres::Config::from_str(&pg.dsn) {
                    Err(e) => problem(
                        format!("{at}.dsn"),
                        format!(
                            "not a valid connection string: {}",
                            vla_pipeline::error_chain(&e)
                        ),
                    ),
                    Ok(c) => {
                        let (hosts, addrs) = (c.get_hosts().len(), c.get_hostaddrs().len());
                        if hosts == 0 && addrs == 0 {
                            problem(
                                format!("{at}.dsn"),
                                "must name a host (host=... or hostaddr=...)".into(),
                            );
                        } else if hosts > 0 && addrs > 0 && hosts != addrs {
                            problem(
                                format!("{at}.dsn"),
                                format!(
                                    "host names {hosts} hosts but hostaddr {addrs} addresses; \
                                     give one address per host, or only one of the two"
                                ),
                            );
                        }
                        if c.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
                            problem(
                                format!("{at}.dsn"),
                                "sslmode=require is not supported (connections are plain TCP)"
                                    .into(),
                            );
                        }
                        if c.get_password().is_some() && pg.password_file.is_some() {
                            problem(
                                format!("{at}.password_file"),
                                "the dsn has a password= already; set the password in one \
                                 place"
                                    .into(),
                            );
                        }
                    }
                }
            }
            if pg
                .password_file
                .as_ref()
                .is_some_and(|f| f.as_os_str().is_empty())
            {
                problem(format!("{at}.password_file"), "must not be empty".into());
            }
            if pg.query.trim().is_empty() {
                problem(format!("{at}.query"), "must not be empty".into());
            }
            if let Some(why) = at_least(pg.refresh_interval, MIN_INTERVAL) {
                problem(format!("{at}.refresh_interval"), why);
            }
            if let Some(why) = at_least(pg.timeout, MIN_TIMEOUT) {
                problem(format!("{at}.timeout"), why);
            }
        }
        for (name, value) in [
            ("customer_id_key", &self.customer_id_key),
            ("tier_key", &self.tier_key),
            ("default_tier", &self.default_tier),
        ] {
            if value.trim().is_empty() {
                problem(format!("{path}.{name}"), "must not be empty".into());
            }
        }
        // The keys the processor adds become Prometheus labels: each must make a valid,
        // unreserved label, distinct from the others' and the customer id's.
        let id_label = labels::label_name(&self.customer_id_key);
        let tier_label = labels::label_name(&self.tier_key);
        if !self.tier_key.trim().is_empty() {
            if let Some(why) = labels::problem(&self.tier_key) {
                problem(format!("{path}.tier_key"), why);
            } else if self.tier_key == self.customer_id_key {
                problem(
                    format!("{path}.tier_key"),
                    "must differ from customer_id_key".into(),
                );
            } else if tier_label == id_label {
                problem(
                    format!("{path}.tier_key"),
                    format!(
                        "{:?} and customer_id_key {:?} both become the label {tier_label:?}",
                        self.tier_key, self.customer_id_key
                    ),
                );
            }
        }
        // Label → (attribute key, who adds or carries it).
        let mut seen: BTreeMap<String, (&str, String)> = BTreeMap::new();
        seen.insert(
            id_label,
            (&self.customer_id_key, "customer_id_key".to_owned()),
        );
        seen.entry(tier_label)
            .or_insert((&self.tier_key, "tier_key".to_owned()));
        let at_attributes = format!("{path}.attributes");
        for (field, key) in &self.attributes {
            let mut report = |message: String| {
                let (at, message) = keyed(&at_attributes, field, "", message);
                problem(at, message);
            };
            if field.trim().is_empty() {
                problem(
                    at_attributes.clone(),
                    "field names must not be empty".into(),
                );
                continue;
            }
            if field == "customer_id" || field == "tier" {
                report(format!(
                    "{field:?} is not an extra field (the tier is always added under tier_key)"
                ));
            }
            if key.trim().is_empty() {
                report("the attribute key must not be empty".into());
                continue;
            }
            if let Some(why) = labels::problem(key) {
                report(why);
                continue;
            }
            let label = labels::label_name(key);
            match seen.get(&label) {
                Some((other, who)) if other == key && who.ends_with("_key") => report(format!(
                    "attribute key {key:?} clashes with tier_key or customer_id_key"
                )),
                Some((other, who)) if other == key => {
                    report(format!("attribute key {key:?} is also used by {who}"))
                }
                Some((other, who)) => report(format!(
                    "attribute key {key:?} becomes the label {label:?}, as {who} {other:?} does"
                )),
                None => {
                    seen.insert(label, (key, format!("field {field:?}")));
                }
            }
        }
        if let Some(drop) = &self.drop_customer_id {
            let at = format!("{path}.drop_customer_id");
            if drop.include.is_empty() {
                problem(
                    format!("{at}.include"),
                    "must list at least one metric name or glob".into(),
                );
            }
            for (list, patterns) in [("include", &drop.include), ("exclude", &drop.exclude)] {
                for (i, p) in patterns.iter().enumerate() {
                    if let Err(why) = MetricGlob::check(p) {
                        problem(format!("{at}.{list}[{i}]"), why);
                    }
                }
            }
        }
        problems
    }
}

/// `must be at least <min> (got <d>)` when `d` is shorter than `min`.
fn at_least(d: Duration, min: Duration) -> Option<String> {
    (d < min).then(|| format!("must be at least {min:?} (got {d:?})"))
}

/// The problem path of `sub` (a field such as `tier`, or nothing) under the map key `key` of
/// `at`, and the message to go with it. The collector turns a problem path back into YAML
/// segments by splitting it at `.` and `[` (`YamlPath::join_dotted` in
/// `collector/src/config/diag.rs`) and has no quoting for keys, so a key holding `.`, `[` or
/// `]` (an id like `cust.0001`) cannot be written into a path without sending the line
/// locator astray. Such a problem is reported at `at` (whose line the locator finds) and
/// the message names the key, quoted: `"cust.0001".tier: ...`.
fn keyed(at: &str, key: &str, sub: &str, message: String) -> (String, String) {
    let sub_path = if sub.is_empty() {
        String::new()
    } else {
        format!(".{sub}")
    };
    if key.contains(['.', '[', ']']) {
        (at.to_owned(), format!("{key:?}{sub_path}: {message}"))
    } else {
        (format!("{at}.{key}{sub_path}"), message)
    }
}

/// The include/exclude lists, compiled.
#[derive(Debug, Clone)]
pub(crate) struct MetricFilter {
    include: Vec<MetricGlob>,
    exclude: Vec<MetricGlob>,
}

impl MetricFilter {
    pub(crate) fn new(config: &DropConfig) -> Self {
        let compile = |v: &[String]| v.iter().map(|p| MetricGlob::new(p)).collect();
        Self {
            include: compile(&config.include),
            exclude: compile(&config.exclude),
        }
    }

    /// Whether a metric of this name loses its customer id.
    pub(crate) fn matches(&self, name: &str) -> bool {
        self.include.iter().any(|g| g.matches(name))
            && !self.exclude.iter().any(|g| g.matches(name))
    }
}

#[cfg(test)]
mod tests;
