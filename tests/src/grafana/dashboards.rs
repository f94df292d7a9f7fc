//! The four dashboards of the seed, panel by panel, on the model of [`super`].

use super::{Dashboard, Panel, Row, Target, Variable};

/// `panel` with one `histogram_quantile` target per `(quantile, legend)` over the buckets
/// `bucket_selector` selects, summed `by` the given labels (and `le`).
fn quantiles(panel: Panel, qs: &[(f64, &str)], bucket_selector: &str, by: &str) -> Panel {
    let by = if by.is_empty() {
        "le".to_owned()
    } else {
        format!("{by}, le")
    };
    qs.iter().fold(panel, |p, (q, legend)| {
        p.target(Target::new(
            format!(
                "histogram_quantile({q}, sum by ({by}) \
                 (rate({bucket_selector}[$__rate_interval])))"
            ),
            *legend,
        ))
    })
}

/// A dashboard `(uid, title, name)` refreshed every `refresh`, showing `time_from` to now; its
/// file is `<name>-dashboard.json` and `name` is its tag beside `vla`.
pub(super) fn dashboard(
    (uid, title, name): (&str, &str, &str),
    (refresh, time_from): (&str, &str),
    description: &str,
    rows: Vec<Row>,
) -> Dashboard {
    Dashboard {
        uid: uid.into(),
        title: title.into(),
        description: description.into(),
        file_name: format!("{name}-dashboard.json"),
        tags: vec!["vla".into(), name.into()],
        refresh: refresh.into(),
        time_from: time_from.into(),
        variables: Vec::new(),
        rows,
    }
}

/// Operations: real-time traffic, latency, errors and capacity for on-call engineers.
pub fn operations() -> Dashboard {
    let overview = Row::new(
        "Overview",
        vec![
            Panel::stat("Success rate")
                .describe("Successful requests over all requests, last 5 minutes.")
                .unit("percentunit")
                .thresholds("red", &[(0.95, "orange"), (0.99, "green")])
                .target(Target::new(
                    "job:vla_inference_success:ratio_rate5m",
                    "{{job}}",
                )),
            Panel::stat("Error rate")
                .describe("Failed requests over all requests, last 5 minutes (HighErrorRate: 5 %).")
                .unit("percentunit")
                .thresholds("green", &[(0.02, "orange"), (0.05, "red")])
                .target(Target::new(
                    "job:vla_inference_errors:ratio_rate5m",
                    "{{job}}",
                )),
            Panel::gauge("Worker utilization")
                .describe("Busy inference workers over running workers.")
                .unit("percentunit")
                .range(0.0, 1.0)
                .thresholds("green", &[(0.8, "orange"), (0.95, "red")])
                .target(Target::new("job:vla_worker:utilization_ratio", "{{job}}")),
            Panel::stat("Service health")
                .describe(
                    "1 while a component's health check passes, 0 when it fails or the job \
                     stopped reporting (the ServiceDown alert's two conditions).",
                )
                .range(0.0, 1.0)
                .thresholds("red", &[(1.0, "green")])
                .target(Target::new(
                    "min by (job, component) (vla_service_up) or label_replace(0 * group by \
                     (job) (max_over_time(vla_service_up{component=\"api\"}[1h]) unless on \
                     (job) vla_service_up), \"component\", \"api\", \"\", \"\")",
                    "{{job}} {{component}}",
                )),
        ],
    );
    let traffic = Row::new(
        "Traffic and errors",
        vec![
            Panel::timeseries("Request rate by model and robot type")
                .describe("Inference requests per second, 5-minute rate.")
                .unit("reqps")
                .target(Target::new(
                    "sum by (model, robot_type) \
                     (job_model_robot_type:vla_inference_requests:rate5m)",
                    "{{model}} / {{robot_type}}",
                )),
            Panel::timeseries("Error rate by status code")
                .describe("Share of all requests ending in each status other than success.")
                .unit("percentunit")
                .target(Target::new(
                    "sum by (status) \
                     (job_status:vla_inference_requests:rate5m{status!=\"success\"}) \
                     / ignoring (status) group_left () \
                     sum(job:vla_inference_requests:rate5m)",
                    "{{status}}",
                )),
            quantiles(
                Panel::timeseries("Latency percentiles (p50, p95, p99)")
                    .describe("Inference latency over all models (HighLatency: p99 over 2 s).")
                    .unit("s")
                    .thresholds("green", &[(2.0, "red")]),
                &[(0.5, "p50"), (0.95, "p95"), (0.99, "p99")],
                "vla_inference_duration_seconds_bucket",
                "",
            ),
            Panel::bargauge("Top errors by type")
                .describe("Failed inferences by cause and model over the time range.")
                .unit("short")
                .target(Target::new(
                    "topk(10, sum by (error_type, model) \
                     (increase(vla_inference_errors_total[$__range])))",
                    "{{error_type}} ({{model}})",
                )),
        ],
    );
    let gpu = "{{instance}} GPU {{gpu_id}}";
    let capacity = Row::new(
        "Capacity",
        vec![
            Panel::timeseries("GPU utilization")
                .unit("percent")
                .range(0.0, 100.0)
                .size(8, 8)
                .target(Target::new("vla_gpu_utilization_percent", gpu)),
            Panel::timeseries("GPU temperature")
                .describe("GPU core temperature (GPUOverheating: 85 °C).")
                .unit("celsius")
                .thresholds("green", &[(85.0, "red")])
                .size(8, 8)
                .target(Target::new("vla_gpu_temperature_celsius", gpu)),
            Panel::timeseries("Queue depth")
                .describe("Requests waiting for a free worker (HighQueueDepth: 80).")
                .unit("short")
                .thresholds("green", &[(80.0, "red")])
                .size(8, 8)
                .target(Target::new(
                    "max by (job, instance) (vla_inference_queue_depth)",
                    "{{instance}}",
                )),
            Panel::timeseries("Worker utilization over time")
                .unit("percentunit")
                .range(0.0, 1.0)
                .target(Target::new("job:vla_worker:utilization_ratio", "{{job}}")),
            Panel::timeseries("Database connection pool")
                .describe("Connections in use over the pool size.")
                .unit("percentunit")
                .range(0.0, 1.0)
                .target(Target::new(
                    "sum by (job) (vla_db_connections_active) \
                     / sum by (job) (vla_db_connections_max)",
                    "{{job}}",
                )),
        ],
    );
    dashboard(
        ("vla-ops", "VLA Operations", "ops"),
        ("10s", "now-1h"),
        "Real-time operational metrics of the VLA inference API, for on-call engineers and SREs.",
        vec![overview, traffic, capacity],
    )
}

/// Business: 30-day inference volume, revenue and customers.
pub fn business() -> Dashboard {
    let revenue = Row::new(
        "Revenue",
        vec![
            Panel::stat("Monthly Recurring Revenue (MRR)")
                .unit("currencyUSD")
                .target(Target::new("max(vla_mrr_total)", "MRR")),
            Panel::stat("Average Revenue Per User (ARPU)")
                .describe("MRR over customers active in the last 30 days.")
                .unit("currencyUSD")
                .target(Target::new(
                    "max(vla_mrr_total) / max(vla_customers_active)",
                    "ARPU",
                )),
            Panel::stat("Churn rate")
                .describe("Customers who cancelled in the last 30 days over all customers.")
                .unit("percentunit")
                .thresholds("green", &[(0.05, "orange"), (0.1, "red")])
                .target(Target::new(
                    "max(vla_customers_churned) / max(vla_customers_total)",
                    "churn",
                )),
            Panel::piechart("Revenue distribution")
                .describe("Revenue earned by tier over the time range.")
                .unit("currencyUSD")
                .size(6, 5)
                .target(Target::new(
                    "sum by (tier) (increase(vla_revenue_total[$__range]))",
                    "{{tier}}",
                )),
        ],
    );
    let usage = Row::new(
        "Usage",
        vec![
            Panel::timeseries("Daily inference counts by tier")
                .unit("short")
                .bars()
                .target(
                    Target::new(
                        "sum by (tier) (increase(vla_inference_requests_total[1d]))",
                        "{{tier}}",
                    )
                    .every("1d"),
                ),
            Panel::piechart("Usage by model")
                .describe("Inference requests by model over the time range.")
                .unit("short")
                .target(Target::new(
                    "sum by (model) (increase(vla_inference_requests_total[$__range]))",
                    "{{model}}",
                )),
        ],
    );
    let customers = Row::new(
        "Customers",
        vec![
            Panel::timeseries("Customer growth trends")
                .unit("short")
                .size(8, 8)
                .target(Target::new("max(vla_customers_total)", "total"))
                .target(Target::new("max(vla_customers_active)", "active (30 d)"))
                .target(Target::new("max(vla_customers_churned)", "churned (30 d)")),
            Panel::table("Top 10 customers")
                .describe("Customers by requests over the time range.")
                .size(8, 8)
                .target(Target::new(
                    "topk(10, sum by (customer_id) \
                     (increase(vla_customer_requests_total[$__range])))",
                    "{{customer_id}}",
                )),
            Panel::bargauge("Quota utilization")
                .describe("The ten customers nearest their quota: used over limit (alert: 95 %).")
                .unit("percentunit")
                .range(0.0, 1.0)
                .thresholds("green", &[(0.8, "orange"), (0.95, "red")])
                .size(8, 8)
                .target(Target::new(
                    "topk(10, max by (customer_id, tier) \
                     (job_customer_id_tier:vla_quota:ratio))",
                    "{{customer_id}} ({{tier}})",
                )),
        ],
    );
    dashboard(
        ("vla-business", "VLA Business", "business"),
        ("5m", "now-30d"),
        "Business analytics of the VLA inference API over 30 days: usage, revenue, customers.",
        vec![revenue, usage, customers],
    )
}

/// Safety: 7-day incidents, rejections, checks and compliance.
pub fn safety() -> Dashboard {
    let status =
        Row::new(
            "Status",
            vec![
            Panel::stat("Critical safety alerts")
                .describe("Critical incidents over the time range (CriticalSafetyIncident: any).")
                .unit("short")
                .thresholds("green", &[(1.0, "red")])
                .target(Target::new(
                    "sum(increase(vla_safety_incidents_total{severity=\"critical\"}[$__range]))",
                    "critical",
                )),
            Panel::gauge("Compliance score")
                .describe("Share of the compliance checklist passed.")
                .unit("percentunit")
                .range(0.0, 1.0)
                .thresholds("red", &[(0.9, "orange"), (0.95, "green")])
                .target(Target::new(
                    "min by (job) (vla_safety_compliance_score)",
                    "{{job}}",
                )),
            Panel::stat("False positive rate")
                .describe("Reviewed incidents found to be false positives over all reviewed.")
                .unit("percentunit")
                .thresholds("green", &[(0.1, "orange"), (0.25, "red")])
                .target(Target::new(
                    "sum(increase(vla_safety_reviews_total{outcome=\"false_positive\"}[$__range])) \
                     / sum(increase(vla_safety_reviews_total[$__range]))",
                    "false positives",
                )),
            Panel::stat("Safety rejections (last hour)")
                .describe("Requests refused by the safety check (SafetyIncidentSurge: 100/h).")
                .unit("short")
                .thresholds("green", &[(100.0, "red")])
                .target(Target::new("job:vla_safety_rejections:increase1h", "{{job}}")),
        ],
        );
    let incidents = Row::new(
        "Incidents",
        vec![
            Panel::timeseries("Safety incident counts by severity")
                .describe("Incidents per hour.")
                .unit("short")
                .bars()
                .target(
                    Target::new(
                        "sum by (severity) (increase(vla_safety_incidents_total[1h]))",
                        "{{severity}}",
                    )
                    .every("1h"),
                ),
            Panel::piechart("Violation type distribution")
                .unit("short")
                .target(Target::new(
                    "sum by (violation_type) (increase(vla_safety_incidents_total[$__range]))",
                    "{{violation_type}}",
                )),
            Panel::piechart("Incidents by safety category")
                .describe(
                    "Incident categories as the collector's safety_labels rules assign them \
                     (configs/collector.yaml).",
                )
                .unit("short")
                .target(Target::new(
                    "sum by (safety_category) (increase(vla_safety_incidents_total[$__range]))",
                    "{{safety_category}}",
                )),
            Panel::timeseries("Safety score trends")
                .describe("Fleet safety score, 0 (unsafe) to 1 (no incidents).")
                .unit("percentunit")
                .range(0.0, 1.0)
                .target(Target::new("min by (job) (vla_safety_score)", "{{job}}")),
            Panel::bargauge("Top violating customers")
                .describe("Customers with the most safety incidents over the time range.")
                .unit("short")
                .target(Target::new(
                    "topk(10, sum by (customer_id) \
                     (increase(vla_customer_safety_incidents_total[$__range])))",
                    "{{customer_id}}",
                )),
        ],
    );
    let checks = Row::new(
        "Checks",
        vec![
            Panel::timeseries("Rejection rate over time")
                .describe("Requests refused by the safety check over all requests, 5-minute rate.")
                .unit("percentunit")
                .target(Target::new(
                    "job:vla_safety_rejections:ratio_rate5m",
                    "{{job}}",
                )),
            quantiles(
                Panel::timeseries("Safety check latency")
                    .describe("Time one safety check takes, on the instruction and on the action.")
                    .unit("s"),
                &[(0.5, "{{stage}} p50"), (0.99, "{{stage}} p99")],
                "vla_safety_check_duration_seconds_bucket",
                "stage",
            ),
        ],
    );
    dashboard(
        ("vla-safety", "VLA Safety", "safety"),
        ("1m", "now-7d"),
        "Safety and compliance of the VLA inference API over 7 days.",
        vec![status, incidents, checks],
    )
}

/// Customer Analytics: one customer's usage, quality and quota, picked with `$customer`.
pub fn customer_analytics() -> Dashboard {
    // Every query is about the customer picked in the `$customer` variable.
    let requests = "vla_customer_requests_total{customer_id=\"$customer\"}";
    let errors = "vla_customer_requests_total{customer_id=\"$customer\", status=\"error\"}";
    let successes = "vla_customer_requests_total{customer_id=\"$customer\", status=\"success\"}";
    let summary = Row::new(
        "Summary",
        vec![
            Panel::stat("Total requests")
                .unit("short")
                .target(Target::new(
                    format!("sum(increase({requests}[$__range]))"),
                    "requests",
                )),
            Panel::stat("Error rate")
                .describe("Failed requests over all of the customer's requests.")
                .unit("percentunit")
                .thresholds("green", &[(0.02, "orange"), (0.05, "red")])
                .target(Target::new(
                    format!(
                        "sum(increase({errors}[$__range])) / sum(increase({requests}[$__range]))"
                    ),
                    "errors",
                )),
            Panel::stat("Feedback rate")
                .describe("Ratings given over requests made.")
                .unit("percentunit")
                .target(Target::new(
                    format!(
                        "sum(increase(vla_feedback_total{{customer_id=\"$customer\"}}[$__range])) \
                         / sum(increase({requests}[$__range]))"
                    ),
                    "feedback",
                )),
            Panel::gauge("Quota utilization")
                .describe("Used over limit in the current quota period.")
                .unit("percentunit")
                .range(0.0, 1.0)
                .thresholds("green", &[(0.8, "orange"), (0.95, "red")])
                .target(Target::new(
                    "max(job_customer_id_tier:vla_quota:ratio{customer_id=\"$customer\"})",
                    "quota",
                )),
        ],
    );
    let usage = Row::new(
        "Usage",
        vec![
            Panel::timeseries("Usage patterns by robot type")
                .unit("reqps")
                .target(Target::new(
                    format!("sum by (robot_type) (rate({requests}[$__rate_interval]))"),
                    "{{robot_type}}",
                )),
            Panel::piechart("Instruction category distribution")
                .unit("short")
                .target(Target::new(
                    format!("sum by (instruction_category) (increase({requests}[$__range]))"),
                    "{{instruction_category}}",
                )),
            Panel::timeseries("Peak usage hours")
                .describe(
                    "Requests per hour over the range: the tallest bars are the peak hours \
                     (PromQL has no hour-of-day grouping of a counter).",
                )
                .unit("short")
                .bars()
                .size(24, 8)
                .target(
                    Target::new(
                        format!("sum(increase({requests}[1h]))"),
                        "requests per hour",
                    )
                    .every("1h"),
                ),
        ],
    );
    let quality = Row::new(
        "Quality",
        vec![
            Panel::bargauge("Success rate by robot")
                .describe("Successful requests over all requests, per robot type.")
                .unit("percentunit")
                .range(0.0, 1.0)
                .thresholds("red", &[(0.95, "orange"), (0.99, "green")])
                .target(Target::new(
                    format!(
                        "sum by (robot_type) (increase({successes}[$__range])) \
                         / sum by (robot_type) (increase({requests}[$__range]))"
                    ),
                    "{{robot_type}}",
                )),
            quantiles(
                Panel::timeseries("Customer-specific latency")
                    .describe("Inference latency of this customer's requests.")
                    .unit("s"),
                &[(0.5, "p50"), (0.95, "p95"), (0.99, "p99")],
                "vla_customer_inference_duration_seconds_bucket{customer_id=\"$customer\"}",
                "",
            ),
        ],
    );
    let mut d = dashboard(
        (
            "vla-customer",
            "VLA Customer Analytics",
            "customer-analytics",
        ),
        ("5m", "now-30d"),
        "Per-customer usage, quality and quota of the VLA inference API, for customer success.",
        vec![summary, usage, quality],
    );
    d.variables.push(Variable {
        name: "customer".into(),
        label: "Customer".into(),
        query: "label_values(vla_customer_requests_total, customer_id)".into(),
    });
    d
}
