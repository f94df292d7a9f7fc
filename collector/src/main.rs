//! The `vla-collector` binary.
//!
//! ```text
//! vla-collector [--config FILE]               run (default: the embedded configs/collector.yaml)
//! vla-collector validate [--config FILE]      check a config; exit 2 when it has errors
//! vla-collector components [TYPE]             list the component types, or show one's example
//! ```
//!
//! Logs go to stderr, configured by `service.telemetry.logs` (`RUST_LOG` overrides the level),
//! in colour only on a terminal and without `NO_COLOR`.
//! SIGINT or SIGTERM stops the collector cleanly within `service.shutdown_timeout`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;
use vla_collector::config::{self, Config, Diagnostics, Kind, LogFormat, Source};

/// mimalloc instead of glibc malloc: the hot path (OTLP decode, then drop of every decoded
/// string and vector) allocates and frees heavily across threads, where glibc spends ~20% of
/// the CPU in malloc/free/consolidate and fragments RSS.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status of an invalid config.
const EXIT_INVALID_CONFIG: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "vla-collector",
    version,
    about = "Receives OpenTelemetry metrics over OTLP and exports them to Prometheus."
)]
struct Cli {
    /// The pipeline config (YAML). Without it, the embedded configs/collector.yaml is used.
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the config without starting anything; list every problem (exit 2 on errors).
    Validate,
    /// List the receiver, processor and exporter types this build knows; with a type, print
    /// its documented example config.
    Components {
        /// A component type, e.g. `otlp` or `customer_tier`.
        #[arg(value_name = "TYPE")]
        ty: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Components { ty: None }) => {
            for kind in Kind::ALL {
                println!("{}: {}", kind.section(), kind.types().join(", "));
            }
            ExitCode::SUCCESS
        }
        Some(Command::Components { ty: Some(ty) }) => {
            let found: Vec<_> = config::REGISTRY
                .all()
                .iter()
                .filter(|t| t.name == ty)
                .collect();
            if found.is_empty() {
                eprintln!("error: no component type {ty:?}; `vla-collector components` lists them");
                return ExitCode::FAILURE;
            }
            for t in found {
                println!("{}:\n  {}:", t.kind.section(), t.name);
                for line in t.example.lines() {
                    println!("    {line}");
                }
            }
            ExitCode::SUCCESS
        }
        Some(Command::Validate) => match load(cli.config.as_deref()) {
            Ok(Some(c)) => {
                print_warnings(&c.warnings);
                println!("config OK: {} ({})", c.summary(), c.source);
                ExitCode::SUCCESS
            }
            Ok(None) => ExitCode::from(EXIT_INVALID_CONFIG),
            Err(e) => fail(&e),
        },
        None => match load(cli.config.as_deref()) {
            Ok(Some(c)) => match run(c) {
                Ok(code) => code,
                Err(e) => fail(&e),
            },
            Ok(None) => ExitCode::from(EXIT_INVALID_CONFIG),
            Err(e) => fail(&e),
        },
    }
}

/// Loads and validates the config; `Ok(None)` when it is invalid (the problems are printed).
fn load(path: Option<&std::path::Path>) -> anyhow::Result<Option<Config>> {
    let source = match path {
        Some(p) => Source::file(p).context("cannot load the config")?,
        None => Source::embedded(),
    };
    match source.validate() {
        Ok(c) => Ok(Some(c)),
        Err(d) => {
            print_problems(&d);
            Ok(None)
        }
    }
}

fn print_problems(d: &Diagnostics) {
    for line in d.error_lines() {
        eprintln!("{line}");
    }
    print_warnings(&d.warning_lines());
    let n = d.errors.len();
    eprintln!(
        "config invalid: {n} error{} in {}",
        if n == 1 { "" } else { "s" },
        d.source
    );
}

fn print_warnings(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("error: {e:#}");
    ExitCode::FAILURE
}

fn run(config: Config) -> anyhow::Result<ExitCode> {
    init_logging(&config.telemetry.logs);
    for w in &config.warnings {
        warn!("{w}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("vla-collector")
        .build()
        .context("cannot start the tokio runtime")?;
    let code = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        // Registered before anything starts, so an early SIGTERM is a clean stop too.
        let signals = Signals::register();
        tokio::spawn(signals.wait(shutdown.clone()));
        let report = vla_collector::run(config, shutdown)
            .await
            .context("the collector could not start")?;
        for f in &report.failures {
            warn!("{f}");
        }
        if report.failures.is_empty() && report.clean {
            Ok(ExitCode::SUCCESS)
        } else {
            // Something failed, or the shutdown deadline passed and data was counted dropped.
            Ok(ExitCode::FAILURE)
        }
    });
    // A blocking call that never returns (an NVML read on a GPU that fell off the bus) must not
    // keep the process alive after the shutdown is complete.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

/// The stop signals, registered up front.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn register() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listen = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(s) => Some(s),
                Err(e) => {
                    warn!(error = %e, signal = name, "cannot listen for this signal");
                    None
                }
            };
            Self {
                term: listen(SignalKind::terminate(), "SIGTERM"),
                int: listen(SignalKind::interrupt(), "SIGINT"),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Cancels `shutdown` on SIGINT or SIGTERM.
    async fn wait(self, shutdown: CancellationToken) {
        #[cfg(unix)]
        {
            async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            let (mut int, mut term) = (self.int, self.term);
            tokio::select! {
                _ = recv(&mut int) => info!(signal = "SIGINT", "signal received"),
                _ = recv(&mut term) => info!(signal = "SIGTERM", "signal received"),
            }
            shutdown.cancel();
            // A second signal means "stop now": what is still held is lost, so say so.
            tokio::select! {
                _ = recv(&mut int) => {}
                _ = recv(&mut term) => {}
            }
            error!("second stop signal: exiting without finishing the shutdown");
            std::process::exit(1);
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            info!(signal = "ctrl-c", "signal received");
            shutdown.cancel();
        }
    }
}

/// ANSI colour in the logs only when stderr is a terminal, and never with `NO_COLOR` set to
/// anything but the empty string.
fn colour() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Logs to stderr at the configured level and format; `RUST_LOG` wins when set.
fn init_logging(logs: &config::LogsConfig) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(logs.level.as_str()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour());
    match logs.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
