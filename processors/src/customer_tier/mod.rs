//! The `customer_tier` processor: adds each customer's tier, and optionally other fields of
//! the customer's row (plan, region, ...), to the data points and resources that carry a
//! customer id. The table comes from an inline map, a YAML or CSV file reloaded when it
//! changes, or a PostgreSQL query refreshed on an interval; it is a snapshot swapped by a
//! background refresher, so `process` never waits on I/O, and a failing source keeps the last
//! good table. Unknown customers get `default_tier`; before a table has loaded, points pass
//! untouched.
//!
//! ```yaml
//! processors:
//!   customer_tier:
//!     source: { file: configs/customers.yaml, reload_interval: 5s, required: true }
//!     attributes: { plan: customer_plan }
//!     default_tier: unknown
//!     on_existing: keep
//! ```
//!
//! The full manual: `docs/components/customer_tier.md`.

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
    fn stage(
        &self,
        _pipeline: &str,
    ) -> Result<vla_pipeline::runner::Stage, vla_pipeline::registry::BuildError> {
        Ok(vla_pipeline::runner::Stage::Process(self.processor()))
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
