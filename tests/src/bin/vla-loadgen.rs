//! `vla-loadgen`: drives a running `vla-collector` with OTLP gRPC and counts what comes out of
//! its remote-write exporter in a built-in sink.
//!
//! ```text
//! vla-loadgen --grpc 127.0.0.1:4317 --sink 127.0.0.1:19291 --duration 10s \
//!             --points-per-request 1000 --concurrency 4 --collector-pid $(pidof vla-collector)
//! ```
//!
//! Workload (the one `docs/benchmarks.md` measures): each request holds `points-per-request` data points
//! over 40% gauges, 40% monotonic cumulative sums and 20% 12-bucket histograms, the same series
//! every time with advancing timestamps, as an SDK's periodic export looks. The sink answers
//! 204 to every remote-write request and counts samples. With `--collector-pid` the collector's
//! CPU time is read from /proc, giving data points per collector CPU-second, and its resident
//! memory is sampled every 50 ms (the peak and the end are reported).
//!
//! `--series N` makes the clients together send N distinct series (rounded up to whole
//! requests): each client cycles through its share, one request's worth of series at a time.
//! Without it every client repeats one request's series (`points × concurrency` in all).
//!
//! Latency: `--rate P` sends P data points per second in all, open loop: each client issues a
//! request on a fixed schedule whether or not the earlier ones were answered, so a slow
//! collector cannot slow the load down (no coordinated omission). Reported: the request
//! latency (`latency_p50_ms`, `latency_p99_ms`, `latency_max_ms`, from the time a request was
//! due to its answer) and, with `--sink`, the delivery latency (`delivery_p50_ms`,
//! `delivery_p99_ms`: from a point's timestamp, set when its request is sent, to its arrival
//! at the sink, for the oldest sample of each remote-write request). The first second is a
//! warm-up and is left out.
//!
//! Temporality: `--temporality delta` sends the sums and histograms as deltas (each point
//! starts where the series' previous point ended; the first has no start), so a collector
//! running `deltatocumulative` does its per-stream work on 60 % of the points. The default is
//! cumulative. With `--rate`, requests for one window may be in flight at once and arrive out
//! of order (the collector drops such deltas and counts them): use it with `--series` large
//! enough for many windows, or closed loop as `bench/run` does. A refused request leaves a
//! gap, which `deltatocumulative` accepts.
//!
//! Overload: `--sink-delay 200ms` makes the sink a slow backend (each request is answered
//! after the delay), so the collector can deliver only so much; with enough `--concurrency`
//! the clients offer many times that. `points_offered / points_accepted` is the overload
//! factor, and the refusals are reported by gRPC code.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

struct Args {
    grpc: String,
    sink: Option<String>,
    duration: Duration,
    points: usize,
    concurrency: usize,
    pid: Option<u32>,
    sink_delay: Duration,
    /// Distinct series across all clients (`None`: each client repeats one request's).
    series: Option<usize>,
    /// Open loop at this many data points per second in all (`None`: closed loop, each
    /// client sends its next request when the last one is answered).
    rate: Option<f64>,
    /// How sums and histograms are sent.
    temporality: AggregationTemporality,
}

fn parse_args() -> Args {
    let mut a = Args {
        grpc: "127.0.0.1:4317".into(),
        sink: None,
        duration: Duration::from_secs(10),
        points: 1000,
        concurrency: 4,
        pid: None,
        sink_delay: Duration::ZERO,
        series: None,
        rate: None,
        temporality: AggregationTemporality::Cumulative,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--grpc" => a.grpc = val(),
            "--sink" => a.sink = Some(val()),
            "--duration" => {
                let v = val();
                a.duration = Duration::from_secs_f64(
                    v.trim_end_matches('s')
                        .parse()
                        .expect("--duration like 10s"),
                );
            }
            "--points-per-request" => a.points = val().parse().expect("number"),
            "--concurrency" => a.concurrency = val().parse().expect("number"),
            "--series" => a.series = Some(val().parse().expect("--series like 100000")),
            "--rate" => {
                let rate: f64 = val().parse().expect("--rate like 250000 (points/s)");
                assert!(rate > 0.0 && rate.is_finite(), "--rate must be above 0");
                a.rate = Some(rate);
            }
            "--temporality" => {
                a.temporality = match val().as_str() {
                    "cumulative" => AggregationTemporality::Cumulative,
                    "delta" => AggregationTemporality::Delta,
                    other => panic!("--temporality is cumulative or delta, not {other}"),
                }
            }
            "--collector-pid" => a.pid = Some(val().parse().expect("pid")),
            "--sink-delay" => {
                let v = val();
                a.sink_delay = parse_ms(&v).expect("--sink-delay like 200ms");
            }
            "-h" | "--help" => {
                println!(
                    "vla-loadgen [--grpc ADDR] [--sink ADDR] [--sink-delay 0ms] [--duration 10s] [--points-per-request 1000] [--concurrency 4] [--series N] [--rate POINTS_PER_S] [--temporality cumulative|delta] [--collector-pid PID]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// `200ms` or `2s`.
fn parse_ms(v: &str) -> Option<Duration> {
    if let Some(ms) = v.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    v.strip_suffix('s')?
        .parse()
        .ok()
        .map(Duration::from_secs_f64)
}

/// A field of /proc/PID/status in kB (`VmRSS`, `VmHWM`).
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn kv(k: &str, v: String) -> KeyValue {
    KeyValue {
        key: k.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v)),
        }),
        ..Default::default()
    }
}

const BOUNDS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How many different requests (windows of `points` series each) a client cycles through
/// so that `concurrency` clients together send `series` distinct series (at least one).
fn windows(series: Option<usize>, points: usize, concurrency: usize) -> usize {
    series.map_or(1, |n| {
        n.div_ceil(concurrency.max(1))
            .div_ceil(points.max(1))
            .max(1)
    })
}

/// The request: `points` data points, 40/40/20 gauge/sum/histogram, up to 100 series per
/// metric (fewer in small requests, so the mix holds); `window` selects which of the client's
/// series sets (its `customer_id`s) it carries; sums and histograms have `temporality`.
fn build_request(
    points: usize,
    worker: usize,
    window: usize,
    temporality: AggregationTemporality,
) -> ExportMetricsServiceRequest {
    let per_metric = (points / 10).clamp(1, 100);
    let offset = window * per_metric;
    let mut metrics = Vec::new();
    let mut made = 0;
    let mut m = 0;
    while made < points {
        let n = per_metric.min(points - made);
        let attrs = |i: usize| {
            vec![
                kv("model", format!("model-{}", i % 5)),
                kv("robot_type", format!("robot-{}", i % 4)),
                kv("customer_id", format!("cust-{worker}-{}", offset + i)),
                kv("gpu_id", (i % 8).to_string()),
            ]
        };
        let number = |i: usize| NumberDataPoint {
            attributes: attrs(i),
            value: Some(number_data_point::Value::AsDouble(i as f64)),
            ..Default::default()
        };
        let data = match m % 5 {
            0 | 1 => metric::Data::Gauge(Gauge {
                data_points: (0..n).map(number).collect(),
            }),
            2 | 3 => metric::Data::Sum(Sum {
                data_points: (0..n).map(number).collect(),
                aggregation_temporality: temporality as i32,
                is_monotonic: true,
            }),
            _ => metric::Data::Histogram(Histogram {
                data_points: (0..n)
                    .map(|i| HistogramDataPoint {
                        attributes: attrs(i),
                        count: 12,
                        sum: Some(3.5),
                        bucket_counts: vec![1; 12],
                        explicit_bounds: BOUNDS.to_vec(),
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: temporality as i32,
            }),
        };
        let unit = if m % 5 == 4 { "s" } else { "1" };
        metrics.push(Metric {
            name: format!("vla.load.metric{m}"),
            unit: unit.to_owned(),
            data: Some(data),
            ..Default::default()
        });
        made += n;
        m += 1;
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "vla-api".into()),
                    kv("service.instance.id", format!("loadgen-{worker}")),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "vla-loadgen".into(),
                    ..Default::default()
                }),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// Sets every point's time to now and, when `start` is not 0, the start time of the sums and
/// histograms to `start` (a delta's interval begins where the series' last one ended).
/// Returns the time set.
fn stamp(req: &mut ExportMetricsServiceRequest, start: u64) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    for m in req
        .resource_metrics
        .iter_mut()
        .flat_map(|r| &mut r.scope_metrics)
        .flat_map(|s| &mut s.metrics)
    {
        match &mut m.data {
            Some(metric::Data::Gauge(g)) => g
                .data_points
                .iter_mut()
                .for_each(|p| p.time_unix_nano = now),
            Some(metric::Data::Sum(s)) => s.data_points.iter_mut().for_each(|p| {
                p.time_unix_nano = now;
                p.start_time_unix_nano = start;
            }),
            Some(metric::Data::Histogram(h)) => h.data_points.iter_mut().for_each(|p| {
                p.time_unix_nano = now;
                p.start_time_unix_nano = start;
            }),
            _ => {}
        }
    }
    now
}

/// Each of a client's windows: the time its series were last stamped, the start of their
/// next delta (0 before the first, and always for cumulative points, which carry none here).
struct Starts {
    last: Vec<u64>,
    delta: bool,
}

impl Starts {
    fn new(windows: usize, temporality: AggregationTemporality) -> Self {
        Self {
            last: vec![0; windows.max(1)],
            delta: temporality == AggregationTemporality::Delta,
        }
    }

    /// Stamps `req`, which carries window `window`.
    fn stamp(&mut self, req: &mut ExportMetricsServiceRequest, window: usize) {
        let start = if self.delta { self.last[window] } else { 0 };
        self.last[window] = stamp(req, start);
    }
}

/// Refused requests by gRPC code.
type RefusedByCode = Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>>;

/// Counts a refused request under its gRPC code.
fn count_refusal(refused: &AtomicU64, by_code: &RefusedByCode, status: &tonic::Status) {
    refused.fetch_add(1, Ordering::Relaxed);
    *by_code
        .lock()
        .expect("not poisoned")
        .entry(format!("{:?}", status.code()))
        .or_default() += 1;
}

/// One client of the open-loop mode.
struct OpenLoop {
    client: MetricsServiceClient<tonic::transport::Channel>,
    points: usize,
    worker: usize,
    windows: usize,
    temporality: AggregationTemporality,
    interval: Duration,
    start: Instant,
    dur: Duration,
    warm_up: Duration,
    latency: Arc<Latencies>,
    sent_points: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    offered: Arc<AtomicU64>,
    by_code: RefusedByCode,
}

/// Sends a request every `interval` until `dur` is over, each on its own task, and waits for
/// the answers; a request's latency counts from when it was due.
async fn open_loop(o: OpenLoop) {
    // Clients start spread over one interval, not all at once.
    let phase = o.interval.mul_f64(o.worker as f64 / 8.0 % 1.0);
    let mut due = tokio::time::Instant::from_std(o.start) + phase;
    let mut window = 0;
    let mut starts = Starts::new(o.windows, o.temporality);
    let mut inflight = tokio::task::JoinSet::new();
    while due.duration_since(tokio::time::Instant::from_std(o.start)) < o.dur {
        tokio::time::sleep_until(due).await;
        window = (window + 1) % o.windows.max(1);
        let mut req = build_request(o.points, o.worker, window, o.temporality);
        starts.stamp(&mut req, window);
        o.offered.fetch_add(o.points as u64, Ordering::Relaxed);
        let mut client = o.client.clone();
        let (latency, sent, refused, by_code) = (
            o.latency.clone(),
            o.sent_points.clone(),
            o.refused.clone(),
            o.by_code.clone(),
        );
        let (points, was_due, measure) = (o.points, due, due.into_std() >= o.start + o.warm_up);
        inflight.spawn(async move {
            match client.export(req).await {
                Ok(_) => {
                    sent.fetch_add(points as u64, Ordering::Relaxed);
                }
                Err(status) => count_refusal(&refused, &by_code, &status),
            }
            if measure {
                latency.record(was_due.elapsed());
            }
        });
        due += o.interval;
    }
    while inflight.join_next().await.is_some() {}
}

/// Remote-write messages, only as far as counting samples needs. Deliberately not the
/// exporter's full types: decoding every label into a `String` made the sink, which shares
/// the 2 cores with the collector, the bottleneck of the measurement (wall-clock throughput
/// halved).
mod rw {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }
}

/// CPU seconds (user + system) of a process, from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Latencies in microseconds, recorded after the warm-up.
#[derive(Default)]
struct Latencies {
    micros: std::sync::Mutex<Vec<u32>>,
}

impl Latencies {
    fn record(&self, d: Duration) {
        let us = u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
        self.micros.lock().expect("not poisoned").push(us);
    }

    /// Each quantile of `qs` in milliseconds (nearest rank), or `None` with no samples.
    fn quantiles(&self, qs: &[f64]) -> Option<Vec<f64>> {
        let mut v = self.micros.lock().expect("not poisoned").clone();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        Some(
            qs.iter()
                .map(|q| {
                    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
                    f64::from(v[rank - 1]) / 1000.0
                })
                .collect(),
        )
    }
}

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

async fn run_sink(
    addr: String,
    samples: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    delay: Duration,
    delivery: Option<(Arc<Latencies>, i64)>,
) {
    use axum::body::Bytes;
    use prost::Message;
    let app = axum::Router::new().route(
        "/api/v1/write",
        axum::routing::post(move |body: Bytes| {
            let (samples, requests) = (samples.clone(), requests.clone());
            async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let raw = snap::raw::Decoder::new().decompress_vec(&body);
                let Ok(raw) = raw else {
                    return axum::http::StatusCode::BAD_REQUEST;
                };
                match rw::WriteRequest::decode(raw.as_slice()) {
                    Ok(w) => {
                        let n: usize = w.timeseries.iter().map(|t| t.samples.len()).sum();
                        if let Some((lat, after_ms)) = &delivery {
                            let oldest = w
                                .timeseries
                                .iter()
                                .flat_map(|t| t.samples.iter().map(|s| s.timestamp))
                                .filter(|&ts| ts > 0)
                                .min();
                            if let Some(ts) = oldest.filter(|&ts| ts >= *after_ms) {
                                let ms = (now_ms() - ts).max(0) as u64;
                                lat.record(Duration::from_millis(ms));
                            }
                        }
                        samples.fetch_add(n as u64, Ordering::Relaxed);
                        requests.fetch_add(1, Ordering::Relaxed);
                        axum::http::StatusCode::NO_CONTENT
                    }
                    Err(_) => axum::http::StatusCode::BAD_REQUEST,
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .expect("bind sink");
    axum::serve(listener, app).await.expect("sink");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = parse_args();
    let samples = Arc::new(AtomicU64::new(0));
    let sink_requests = Arc::new(AtomicU64::new(0));
    let warm_up = Duration::from_secs(1);
    let request_latency = Arc::new(Latencies::default());
    let delivery_latency = Arc::new(Latencies::default());
    if let Some(addr) = args.sink.clone() {
        let delivery = args.rate.map(|_| {
            (
                delivery_latency.clone(),
                now_ms() + warm_up.as_millis() as i64,
            )
        });
        tokio::spawn(run_sink(
            addr,
            samples.clone(),
            sink_requests.clone(),
            args.sink_delay,
            delivery,
        ));
    }
    let sent_points = Arc::new(AtomicU64::new(0));
    let offered = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let refused_by_code: RefusedByCode = Arc::default();
    let cpu0 = args.pid.and_then(cpu_seconds);
    let start = Instant::now();
    let peak_rss_kb = Arc::new(AtomicU64::new(0));
    if let Some(pid) = args.pid {
        let peak = peak_rss_kb.clone();
        tokio::spawn(async move {
            loop {
                if let Some(kb) = status_kb(pid, "VmRSS") {
                    peak.fetch_max(kb, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }
    let windows = windows(args.series, args.points, args.concurrency);
    println!(
        "series                {}",
        windows * args.points * args.concurrency
    );
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let (grpc, points, dur) = (args.grpc.clone(), args.points, args.duration);
        let (sent_points, refused, offered, by_code) = (
            sent_points.clone(),
            refused.clone(),
            offered.clone(),
            refused_by_code.clone(),
        );
        let latency = request_latency.clone();
        let (rate, concurrency, temporality) = (args.rate, args.concurrency, args.temporality);
        workers.push(tokio::spawn(async move {
            let mut client = MetricsServiceClient::connect(format!("http://{grpc}"))
                .await
                .expect("connect to collector")
                .max_encoding_message_size(64 << 20);
            if let Some(rate) = rate {
                open_loop(OpenLoop {
                    client,
                    points,
                    worker: w,
                    windows,
                    temporality,
                    interval: Duration::from_secs_f64(points as f64 * concurrency as f64 / rate),
                    start,
                    dur,
                    warm_up,
                    latency,
                    sent_points,
                    refused,
                    offered,
                    by_code,
                })
                .await;
                return;
            }
            let mut req = build_request(points, w, 0, temporality);
            let mut window = 0;
            let mut starts = Starts::new(windows, temporality);
            while start.elapsed() < dur {
                if windows > 1 {
                    // Series rotate: each request carries the client's next window.
                    window = (window + 1) % windows;
                    req = build_request(points, w, window, temporality);
                }
                starts.stamp(&mut req, window);
                offered.fetch_add(points as u64, Ordering::Relaxed);
                match client.export(req.clone()).await {
                    Ok(_) => {
                        sent_points.fetch_add(points as u64, Ordering::Relaxed);
                    }
                    Err(status) => {
                        count_refusal(&refused, &by_code, &status);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let wall = start.elapsed().as_secs_f64();
    // Let the collector finish what it accepted before reading its CPU and the sink.
    let settle = Instant::now();
    let mut last = u64::MAX;
    while args.sink.is_some() && settle.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = samples.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    let cpu = match (args.pid.and_then(cpu_seconds), cpu0) {
        (Some(b), Some(a)) => Some(b - a),
        _ => None,
    };
    let points = sent_points.load(Ordering::Relaxed);
    let offered = offered.load(Ordering::Relaxed);
    if let Some(rate) = args.rate {
        println!("rate_points_per_s     {rate:.0}");
        if let Some(q) = request_latency.quantiles(&[0.5, 0.99, 1.0]) {
            println!("latency_p50_ms        {:.2}", q[0]);
            println!("latency_p99_ms        {:.2}", q[1]);
            println!("latency_max_ms        {:.2}", q[2]);
        }
        if let Some(q) = delivery_latency.quantiles(&[0.5, 0.99]) {
            println!("delivery_p50_ms       {:.0}", q[0]);
            println!("delivery_p99_ms       {:.0}", q[1]);
        }
    }
    println!(
        "delta                 {}",
        u8::from(args.temporality == AggregationTemporality::Delta)
    );
    println!("duration_s            {wall:.2}");
    println!("points_offered        {offered}");
    println!("points_accepted       {points}");
    if points > 0 {
        println!(
            "overload_factor       {:.1}",
            offered as f64 / points as f64
        );
    }
    println!("requests_refused      {}", refused.load(Ordering::Relaxed));
    for (code, n) in refused_by_code.lock().expect("not poisoned").iter() {
        println!("refused_{code:<14} {n}");
    }
    println!("points_per_s          {:.0}", points as f64 / wall);
    if args.sink.is_some() {
        let s = samples.load(Ordering::Relaxed);
        println!("rw_samples_received   {s}");
        println!(
            "rw_requests_received  {}",
            sink_requests.load(Ordering::Relaxed)
        );
        if points > 0 {
            println!("samples_per_point     {:.2}", s as f64 / points as f64);
        }
    }
    if let Some(pid) = args.pid {
        println!(
            "collector_peak_rss_mb {:.1}",
            peak_rss_kb.load(Ordering::Relaxed) as f64 / 1024.0
        );
        if let Some(kb) = status_kb(pid, "VmRSS") {
            println!("collector_end_rss_mb  {:.1}", kb as f64 / 1024.0);
        }
    }
    if let Some(cpu) = cpu {
        println!("collector_cpu_s       {cpu:.2}");
        if cpu > 0.0 {
            println!("points_per_cpu_s      {:.0}", points as f64 / cpu);
        }
    }
}
