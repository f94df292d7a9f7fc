//! The `customer_tier` processor: adds each customer's tier, and optionally other fields of
//! the customer's row (plan, region, name, ...), to the data points and resources that carry a
//! customer id, from a table refreshed in the background.
//!
//! A data point (`apply_to: points`), a resource (`apply_to: resources`) or both (the default)
//! whose attributes hold the string attribute `customer_id_key` (default `customer_id`) gets
//! the tier under `tier_key` (default `tier`), and each field listed in `attributes` (row field
//! → attribute key) that the row has. An unknown customer gets `default_tier` (default
//! `unknown`) and no other field; points without a customer id are left alone. With
//! `on_existing: keep` (the default) an attribute already present is left as it is; with
//! `overwrite` it is replaced. Until a table has loaded once (a `postgres` source whose first
//! query has not succeeded yet, a `file` with `required: false` that has not appeared yet)
//! nothing is changed at all: no tier, no default tier, no id dropped; those points are
//! counted as `no_table`.
//!
//! The added keys (`tier_key` and the `attributes` values) become Prometheus labels, so they
//! must be label names, dots allowed (the exporters turn `.` into `_`): `[a-zA-Z_][a-zA-Z0-9_.]*`,
//! not starting with `__`, not `job`, `instance`, `le` or `quantile`, and no two of them (nor
//! one and `customer_id_key`) may become the same label.
//!
//! The table is a snapshot swapped atomically by the refresher; `process` loads it once per
//! batch and never waits on I/O. When a refresh fails the last good table stays in use, the
//! source's status (shown by `/ready`) turns `failing`, one warning is logged per failure
//! streak and one info line on recovery.
//!
//! # Sources (exactly one)
//!
//! ```yaml
//! processors:
//!   customer_tier/inline:
//!     source:
//!       inline:
//!         cust-0001: enterprise
//!         cust-0002: { tier: pro, plan: annual }
//!   customer_tier/file:
//!     source: { file: configs/customers.yaml, reload_interval: 5s, required: true }
//!     attributes: { plan: customer_plan, region: customer_region }
//!   customer_tier/db:
//!     source:
//!       postgres:
//!         dsn: "host=db.internal port=5432 user=vla dbname=billing"
//!         password_file: /run/secrets/vla-pg-password
//!         query: "SELECT customer_id, tier, plan FROM customers"
//!         refresh_interval: 30s
//!         timeout: 5s
//!     default_tier: unknown
//!     on_existing: keep
//!     apply_to: both
//!     drop_customer_id:
//!       include: ["vla.customer.inference.duration", "vla.customer.*"]
//!       exclude: ["vla.customer.requests"]
//! ```
//!
//! - `inline` loads when the collector starts.
//! - `file` loads when the collector starts (a missing or invalid file fails start-up with the
//!   file and line), then is checked every `reload_interval` (default 5s, at least 100ms):
//!   when its stamp (size, modification and status-change times, inode, device) changed and
//!   its content differs, it is parsed again. A file that turns invalid keeps the last good
//!   table. Replace the file atomically (write a temporary file, then rename it); an empty
//!   file, or one without customers, is refused for this reason. A relative path is relative
//!   to the collector's working directory (the directory it was started from, not the config
//!   file's), which an unreadable file's error names.
//!
//!   `required: false` (default `true`; only with `file`) lets the file be missing at
//!   start-up: the component starts without a table (points pass untouched, see above), its
//!   status fails (`customer file configs/customers.yaml not found (relative to the working
//!   directory /srv/vla); customers get no tier until it appears`, one warning), and the
//!   file is loaded when it appears. A file that exists but cannot be read or parsed still
//!   fails start-up.
//! - `postgres` starts without a table (points pass untouched, see above) and runs the query
//!   at once, then every `refresh_interval` (default 30s, at least 100ms), on a fresh
//!   connection each time, without TLS; connecting and querying together are bounded by
//!   `timeout` (default 5s, at least 10ms). The DSN names the server with `host=` or
//!   `hostaddr=`. Columns are found by name: `customer_id` (or else the first column) and
//!   `tier` are required, every other column is an extra field (all values are read as text).
//!   NULL or empty ids and tiers, duplicate ids and a result without rows fail the refresh
//!   (the last table stays, as for an empty file). The DSN and the password are never
//!   logged: the source is shown as `postgres host:port/dbname`.
//!
//!   The password: `password_file` is read at each connection attempt (trailing newline
//!   trimmed; a rotated secret is picked up at the next refresh; a file that cannot be read
//!   fails that refresh, naming the file, never its content). The DSN may carry `password=`
//!   instead, e.g. from `${env:VLA_PG_PASSWORD}`; but that is substituted into the YAML text
//!   before parsing, so a password holding `"` or `\` breaks a double-quoted `dsn:` and needs
//!   single quotes in YAML (`dsn: 'host=db password=${env:VLA_PG_PASSWORD}'`), and one
//!   holding a space, `'` or `\` needs libpq quoting inside the DSN as well. Not both.
//!
//! Until a table has loaded once, the `file` and `postgres` refreshers try every
//! `min(reload_interval or refresh_interval, 1s)`, so a database or file that comes up just
//! after the collector is picked up within a second; after the first good load they keep to
//! the interval.
//!
//! # File formats
//!
//! YAML (`.yaml`, `.yml`), either a list of rows:
//!
//! ```yaml
//! customers:
//!   - { customer_id: cust-0001, tier: enterprise, plan: annual, region: eu-west, name: Acme Robotics }
//!   - customer_id: cust-0002
//!     tier: pro
//! ```
//!
//! or a map of customer id to tier, or to a row without `customer_id`:
//!
//! ```yaml
//! cust-0001: enterprise
//! cust-0002: { tier: pro, plan: monthly }
//! ```
//!
//! CSV (`.csv`): a header row naming `customer_id` and `tier` in any order, other columns are
//! extra fields; cells are trimmed, lines starting with `#` are comments, an empty cell means
//! "no value".
//!
//! ```text
//! customer_id,tier,plan,region
//! cust-0001,enterprise,annual,eu-west
//! ```
//!
//! Errors name the file and line: `configs/customers.yaml:7: customer "x": missing tier`.
//! Duplicate ids are errors.
//!
//! # Dropping the customer id
//!
//! `drop_customer_id` removes the customer id from the points of the metrics it matches
//! (names as sent in OTLP, exact or with `*` globs; `include` minus `exclude`) after the
//! enrichment, to bound series cardinality while keeping the tier. Points of one metric in one
//! resource and scope that then share a label set are merged into one: sums and gauges add
//! their values, explicit histograms with equal bounds add counts, bucket counts and sums (min
//! and max combined), keeping the earliest start time and latest time (see `merge`).
//! Exponential histograms, summaries and histograms whose points have different bounds keep
//! their ids (counted as skipped).
//!
//! Caveat for cumulative sums and histograms: the merge adds what one export carries, it keeps
//! no state between exports. The merged series is right while every export of a process
//! carries every customer's series, which the OpenTelemetry SDKs' cumulative exports do (a
//! series, once seen, is exported each time). But when a customer appears (a first request)
//! or disappears (a restart of the sending process, the SDK's cardinality limit), or its tier
//! changes, the merged counter steps up or down by that customer's whole total; Prometheus
//! reads a step down as a counter reset, and `rate()`/`increase()` then count the remaining
//! customers' totals again. Drop ids only on metrics where such steps are acceptable (or that
//! are gauges); otherwise keep the id and aggregate in queries. Delta sums are not a way out
//! here: the exporters drop delta sums and histograms. A `delta_to_cumulative`/aggregation
//! stage (a later issue) will keep per-series state and make the merge exact. Gauges are
//! summed, which suits per-customer counts (quota used), not ratios.
//!
//! # Self-metrics (label `processor=<id>`)
//!
//! - `vla_collector_lookup_refreshes_total{result="ok|error"}`: table loads;
//! - `vla_collector_lookup_entries`: customers in the table in use;
//! - `vla_collector_processor_customer_tier_data_points_total{result="enriched|default|no_table"}`: data
//!   points given a tier from the table, or the default tier, or left untouched because no
//!   table has loaded yet (a point without its own id counts by its resource's);
//! - `vla_collector_processor_customer_tier_merged_data_points_total`: points folded into another after the
//!   id was dropped;
//! - `vla_collector_processor_customer_tier_drop_skipped_data_points_total{reason}`: points that kept their id
//!   although `drop_customer_id` matched (`exponential_histogram`, `summary`,
//!   `histogram_bounds`).

mod config;
mod labels;
mod merge;
mod postgres;
mod process;
mod refresh;
mod table;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use vla_pipeline::config::ConfigProblem;
use vla_pipeline::lookup::SourceStatus;
use vla_pipeline::self_metrics::{Counter, Gauge};
use vla_pipeline::{BoxFuture, ComponentId, Processor, SelfMetrics};

pub use config::{
    ApplyTo, Config, DEFAULT_QUERY, DEFAULT_RELOAD_INTERVAL, DropConfig, InlineCustomer,
    OnExisting, PostgresConfig, SourceConfig,
};

use merge::SkipReason;
use postgres::PgSource;
use process::{PointCounters, Settings, TierProcessor};
use refresh::{CustomerFile, FileState};
use table::{RawRow, Table};

/// The config `type` of this processor.
pub const TYPE: &str = "customer_tier";

/// Why the customer table could not be built or refreshed.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    /// The customer file could not be read. The message names the file and the setting it
    /// came from; the OS error is the source (callers print the chain).
    #[error("cannot read customer file {} ({setting}{})", .path.display(), relative_to(.path, .cwd.as_deref()))]
    Read {
        /// The file, as configured.
        path: PathBuf,
        /// The YAML path of the setting: `processors.<id>.source.file`.
        setting: String,
        /// The working directory a relative `path` is resolved against, when known.
        cwd: Option<PathBuf>,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An optional customer file (`required: false`) does not exist (yet): not an error at
    /// start-up, but the source's status until the file appears.
    #[error("customer file {} not found{}; customers get no tier until it appears", .path.display(), in_directory(.path, .cwd.as_deref()))]
    Missing {
        /// The file, as configured.
        path: PathBuf,
        /// The working directory a relative `path` is resolved against, when known.
        cwd: Option<PathBuf>,
    },
    /// The customer file's content is invalid (at `line`, when known).
    #[error("{}{}: {message}", .path.display(), line_suffix(*.line))]
    Parse {
        /// The file, as configured.
        path: PathBuf,
        /// The 1-based line of the problem.
        line: Option<u64>,
        /// What is wrong.
        message: String,
    },
    /// An inline customer is invalid.
    #[error("inline customer {customer:?}: {message}")]
    Inline {
        /// The customer id.
        customer: String,
        /// What is wrong.
        message: String,
    },
    /// A PostgreSQL refresh failed: connection, timeout, query or result.
    #[error("{what}: {message}")]
    Postgres {
        /// The source without secrets: `postgres host:port/dbname`.
        what: String,
        /// What failed, one line.
        message: String,
    },
    /// The settings are invalid (`Config::validate` reports the same).
    #[error("invalid customer_tier settings: {0}")]
    Config(String),
}

fn line_suffix(line: Option<u64>) -> String {
    line.map(|l| format!(":{l}")).unwrap_or_default()
}

/// `, relative to the working directory /dir` for a relative path whose base is known.
fn relative_to(path: &std::path::Path, cwd: Option<&std::path::Path>) -> String {
    match cwd {
        Some(cwd) if path.is_relative() => {
            format!(", relative to the working directory {}", cwd.display())
        }
        _ => String::new(),
    }
}

/// ` (relative to the working directory /dir)` for a relative path whose base is known.
fn in_directory(path: &std::path::Path, cwd: Option<&std::path::Path>) -> String {
    match cwd {
        Some(cwd) if path.is_relative() => {
            format!(" (relative to the working directory {})", cwd.display())
        }
        _ => String::new(),
    }
}

impl TierError {
    /// Whether this is a customer file that does not exist.
    fn is_not_found(&self) -> bool {
        matches!(self, TierError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Where the table comes from, once built.
enum Source {
    Inline,
    File {
        file: CustomerFile,
        interval: Duration,
        initial: FileState,
    },
    Postgres(Box<PgSource>),
}

/// What the processors and the refresher share.
pub(crate) struct Shared {
    id: ComponentId,
    pub(crate) settings: Settings,
    /// `None` until a table has loaded once: points then pass untouched.
    pub(crate) table: ArcSwapOption<Table>,
    pub(crate) counters: PointCounters,
    status: SourceStatus,
    description: String,
    refreshes_ok: Counter,
    refreshes_error: Counter,
    /// Every check of the source, whatever came of it (an unchanged file included).
    pub(crate) checks: Counter,
    entries: Gauge,
}

impl Shared {
    // The status is published last in each of these: whoever waits on it (a test, /ready)
    // then sees the table, the counters and the gauge already updated.

    /// Swaps in a table of `rows` and records the good load.
    fn install(&self, rows: Vec<RawRow>) -> usize {
        let table = Table::build(rows, &self.settings.extra_fields);
        let n = table.len();
        self.table.store(Some(Arc::new(table)));
        self.entries.set(i64::try_from(n).unwrap_or(i64::MAX));
        self.refreshes_ok.inc();
        self.status.success(n as u64);
        n
    }

    /// Records a good check that found the table in use unchanged; returns its entries.
    fn still_good(&self) -> usize {
        let entries = self.table.load().as_ref().map_or(0, |t| t.len());
        self.refreshes_ok.inc();
        self.status.success(entries as u64);
        entries
    }

    /// Records a failed refresh; warns once per failure streak.
    fn failed(&self, error: &TierError, failing: &mut bool) {
        let message = vla_pipeline::error_chain(error).replace('\n', " ");
        self.refreshes_error.inc();
        self.status.failure(message.clone());
        if !*failing {
            *failing = true;
            if self.table.load().is_some() {
                warn!(
                    processor = %self.id,
                    source = %self.description,
                    error = %message,
                    "customer table refresh failed; keeping the last good table"
                );
            } else {
                warn!(
                    processor = %self.id,
                    source = %self.description,
                    error = %message,
                    "customer table not loaded; points pass untouched until it loads"
                );
            }
        }
    }

    /// Records a good refresh after failures (the table may not have changed).
    fn recovered(&self, failing: &mut bool, entries: usize) {
        if *failing {
            *failing = false;
            info!(
                processor = %self.id,
                source = %self.description,
                entries,
                "customer table refreshed again"
            );
        }
    }
}

/// The shared part of one `customer_tier` component: the snapshot, its status, its refresher.
pub struct CustomerTier {
    shared: Arc<Shared>,
    source: Source,
}

impl CustomerTier {
    /// Builds the table. `inline` and `file` load now: an unreadable or invalid file is an error
    /// naming the file and line (so a broken file fails start-up), except a file that does not
    /// exist with `required: false`, which starts without a table and a failing status.
    /// `postgres` starts without a table (points pass untouched, counted as `no_table`) and
    /// loads in the refresher's first run.
    pub fn new(
        id: ComponentId,
        config: &Config,
        telemetry: &SelfMetrics,
    ) -> Result<Self, TierError> {
        let problems = config.validate(&format!("processors.{id}"));
        if !problems.is_empty() {
            return Err(TierError::Config(ConfigProblem::join(&problems)));
        }
        let labels: &[(&str, &str)] = &[("processor", &id)];
        let with = |k: &'static str, v: &'static str| [("processor", &*id), (k, v)];
        let refreshes = "Loads of a lookup table, by result.";
        let points = "Data points with a customer id: given a tier from the table (enriched) or the \
                      default, or left untouched because no table has loaded yet (no_table).";
        let skipped =
            "Data points that kept their customer id although drop_customer_id matched, by reason.";
        let counters = PointCounters {
            enriched: telemetry.counter(
                "vla_collector_processor_customer_tier_data_points_total",
                points,
                &with("result", "enriched"),
            ),
            defaulted: telemetry.counter(
                "vla_collector_processor_customer_tier_data_points_total",
                points,
                &with("result", "default"),
            ),
            no_table: telemetry.counter(
                "vla_collector_processor_customer_tier_data_points_total",
                points,
                &with("result", "no_table"),
            ),
            merged: telemetry.counter(
                "vla_collector_processor_customer_tier_merged_data_points_total",
                "Data points merged into another after their customer id was dropped.",
                labels,
            ),
            skipped: [
                SkipReason::ExponentialHistogram,
                SkipReason::Summary,
                SkipReason::HistogramBounds,
            ]
            .map(|r| {
                let c = telemetry.counter(
                    "vla_collector_processor_customer_tier_drop_skipped_data_points_total",
                    skipped,
                    &with("reason", r.label()),
                );
                (r, c)
            }),
        };
        let mut missing = None;
        let (source, description, rows) = if let Some(inline) = &config.source.inline {
            (
                Source::Inline,
                "inline".to_owned(),
                Some(table::rows_from_inline(inline)?),
            )
        } else if let Some(path) = &config.source.file {
            let file = CustomerFile {
                path: path.clone(),
                setting: format!("processors.{id}.source.file"),
                cwd: std::env::current_dir().ok(),
            };
            // Only a file that does not exist may wait; one that does must load now.
            let (rows, initial) = match refresh::load_file(&file) {
                Ok((rows, state)) => (Some(rows), state),
                Err(e) if !config.source.file_required() && e.is_not_found() => {
                    missing = Some(file.missing_error());
                    (None, FileState::missing())
                }
                Err(e) => return Err(e),
            };
            let interval = config
                .source
                .reload_interval
                .unwrap_or(DEFAULT_RELOAD_INTERVAL);
            let description = format!("file {}", path.display());
            let source = Source::File {
                file,
                interval,
                initial,
            };
            (source, description, rows)
        } else if let Some(pg) = &config.source.postgres {
            let pg = PgSource::new(pg, &format!("processors.{id}.source.postgres"))?;
            let description = pg.description.clone();
            (Source::Postgres(Box::new(pg)), description, None)
        } else {
            return Err(TierError::Config("no source".into()));
        };
        let shared = Arc::new(Shared {
            settings: Settings::new(config),
            table: ArcSwapOption::empty(),
            counters,
            status: SourceStatus::new(description.clone()),
            description,
            refreshes_ok: telemetry.counter(
                "vla_collector_lookup_refreshes_total",
                refreshes,
                &with("result", "ok"),
            ),
            refreshes_error: telemetry.counter(
                "vla_collector_lookup_refreshes_total",
                refreshes,
                &with("result", "error"),
            ),
            checks: telemetry.counter(
                "vla_collector_lookup_checks_total",
                "Checks of a lookup source for a new version (file polls, queries), whatever \
                 their outcome.",
                labels,
            ),
            entries: telemetry.gauge(
                "vla_collector_lookup_entries",
                "Entries in the lookup table in use.",
                labels,
            ),
            id,
        });
        if let Some(rows) = rows {
            shared.install(rows);
        }
        if let Some(error) = missing {
            // Warns once; the refresher continues this failure streak without warning again.
            shared.failed(&error, &mut false);
        }
        Ok(Self { shared, source })
    }

    /// A processor sharing the snapshot (one per pipeline that lists the component).
    pub fn processor(&self) -> Box<dyn Processor> {
        Box::new(TierProcessor {
            shared: self.shared.clone(),
            scratch: merge::Scratch::default(),
        })
    }

    /// The source's health, for /ready.
    pub fn status(&self) -> SourceStatus {
        self.shared.status.clone()
    }

    /// The background refresher (file poll or postgres query loop; first postgres attempt
    /// immediately, then more often than the interval until a table has loaded), running until `shutdown` is cancelled; None for inline. Call it once:
    /// each call makes an independent loop. It needs a Tokio runtime with the time driver;
    /// file checks run on the blocking pool.
    pub fn refresher(&self, shutdown: CancellationToken) -> Option<BoxFuture<'static, ()>> {
        let shared = self.shared.clone();
        match &self.source {
            Source::Inline => None,
            Source::File {
                file,
                interval,
                initial,
            } => Some(Box::pin(refresh::file_loop(
                shared,
                file.clone(),
                *interval,
                initial.clone(),
                shutdown,
            ))),
            Source::Postgres(pg) => Some(Box::pin(refresh::postgres_loop(
                shared,
                (**pg).clone(),
                shutdown,
            ))),
        }
    }
}

impl vla_pipeline::registry::Component for CustomerTier {
    const TYPE: &'static str = TYPE;
    const EXAMPLE: &'static str = "\
source:
  inline:
    cust-0001: enterprise
    cust-0002: { tier: pro, plan: annual }
attributes: { plan: customer_plan }
default_tier: unknown
on_existing: keep
apply_to: both
";
    type Config = Config;

    fn validate(config: &Config, path: &str) -> Vec<vla_pipeline::config::ConfigProblem> {
        config.validate(path)
    }
}

impl vla_pipeline::registry::ProcessorType for CustomerTier {
    /// Loads the table once per component id (a file that does not load fails start-up); every
    /// pipeline listing it reads the same table.
    fn build(
        config: &Config,
        ctx: vla_pipeline::registry::BuildContext<'_>,
    ) -> Result<Box<dyn vla_pipeline::registry::ProcessorFactory>, vla_pipeline::registry::BuildError>
    {
        Ok(Box::new(CustomerTier::new(
            ctx.id.clone(),
            config,
            ctx.self_metrics,
        )?))
    }
}

impl vla_pipeline::registry::ProcessorFactory for CustomerTier {
    fn stage(&self) -> vla_pipeline::runner::Stage {
        vla_pipeline::runner::Stage::Process(self.processor())
    }

    fn status(&self) -> Option<vla_pipeline::lookup::SourceStatus> {
        Some(CustomerTier::status(self))
    }

    fn refresher(
        &self,
        stop: tokio_util::sync::CancellationToken,
    ) -> Option<vla_pipeline::BoxFuture<'static, ()>> {
        CustomerTier::refresher(self, stop)
    }
}

#[cfg(test)]
mod tests;
