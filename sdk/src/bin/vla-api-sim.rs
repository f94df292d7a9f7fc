//! `vla-api-sim`: simulates the VLA API's traffic and sends its metrics to a collector.
//!
//! ```sh
//! cargo run -p vla-sdk --bin vla-api-sim -- --scenario error-spike --rate 100 --duration 5m
//! ```
//!
//! Every flag has an environment variable (`VLA_SIM_*`); the OTLP settings also read the
//! standard `OTEL_EXPORTER_OTLP_*` variables when no flag sets them.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use vla_sdk::Telemetry;
use vla_sdk::sim::{Scenario, SimConfig, Simulation};

/// Simulate a fleet of VLA API customers and export its metrics over OTLP gRPC.
#[derive(Debug, Parser)]
#[command(name = "vla-api-sim", version)]
struct Args {
    /// What the fleet goes through; each scenario but `steady` fires its alerts.
    #[arg(long, value_enum, default_value_t = Scenario::Steady, env = "VLA_SIM_SCENARIO")]
    scenario: Scenario,
    /// Mean inference requests per second.
    #[arg(long, default_value_t = 50.0, env = "VLA_SIM_RATE")]
    rate: f64,
    /// How long to run (`90s`, `5m`, `1h`); 0 runs until Ctrl-C.
    #[arg(long, default_value = "0", value_parser = parse_duration, env = "VLA_SIM_DURATION")]
    duration: Duration,
    /// Seeds every random choice: the same seed repeats the same run.
    #[arg(long, default_value_t = 1, env = "VLA_SIM_SEED")]
    seed: u64,
    /// Customers in the fleet.
    #[arg(long, default_value_t = 24, env = "VLA_SIM_CUSTOMERS")]
    customers: usize,
    /// GPUs serving the models.
    #[arg(long, default_value_t = 4, env = "VLA_SIM_GPUS")]
    gpus: u32,
    /// The collector's OTLP gRPC endpoint [default: OTEL_EXPORTER_OTLP_ENDPOINT, else
    /// http://localhost:4317].
    #[arg(long, env = "VLA_SIM_ENDPOINT")]
    endpoint: Option<String>,
    /// How often metrics are exported.
    #[arg(long, default_value = "5s", value_parser = parse_duration, env = "VLA_SIM_EXPORT_INTERVAL")]
    export_interval: Duration,
    /// Simulate as fast as the CPU allows instead of one simulated second per second.
    #[arg(long)]
    unpaced: bool,
}

/// Parses `500ms`, `90s`, `5m`, `1h` or a plain number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number with ms, s, m or h"))?;
    let secs = |k: u64| Duration::from_secs(n.saturating_mul(k));
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(secs(1)),
        "m" => Ok(secs(60)),
        "h" => Ok(secs(3600)),
        _ => Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    }
}

/// ANSI colour in the logs only when stderr is a terminal, and never with `NO_COLOR` set to
/// anything but the empty string.
fn colour() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(colour())
        .init();
    let args = Args::parse();
    if !(args.rate.is_finite() && args.rate > 0.0) {
        eprintln!("vla-api-sim: --rate must be above 0, got {}", args.rate);
        return ExitCode::from(2);
    }
    let mut builder = Telemetry::builder()
        .service_name("vla-api")
        .resource_attribute("service.namespace", "vla")
        .export_interval(args.export_interval);
    if let Some(endpoint) = &args.endpoint {
        builder = builder.endpoint(endpoint.clone());
    }
    let telemetry = match builder.build() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("vla-api-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let mut sim = Simulation::new(SimConfig {
        seed: args.seed,
        rate: args.rate,
        customers: args.customers,
        gpus: args.gpus,
        scenario: args.scenario,
    });
    tracing::info!(
        scenario = %args.scenario,
        rate = args.rate,
        seed = args.seed,
        endpoint = telemetry.endpoint(),
        "simulating"
    );
    let stop = stop_flag();
    let started = Instant::now();
    let mut next = started;
    let seconds = args.duration.as_secs();
    while seconds == 0 || sim.totals().seconds < seconds {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        sim.step(&telemetry);
        if !args.unpaced {
            next += Duration::from_secs(1);
            // Sleep in short slices so Ctrl-C is answered promptly.
            while Instant::now() < next && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep((next - Instant::now()).min(Duration::from_millis(100)));
            }
        }
    }
    let flushed = telemetry.shutdown();
    println!("{}", sim.totals());
    println!(
        "exports: {} succeeded, {} failed",
        telemetry.export_stats().succeeded(),
        telemetry.export_stats().failed()
    );
    match flushed {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vla-api-sim: the final export failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Set on SIGINT or SIGTERM, by a small runtime that only waits for them.
fn stop_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let set = flag.clone();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        });
        set.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    flag
}
