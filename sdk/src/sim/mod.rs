//! A deterministic simulator of the VLA API's traffic, recording through [`Telemetry`].
//!
//! A fleet of customers on every tier drives robots of several types, asking models for
//! actions; GPU workers answer with log-normal latencies; some requests fail validation, the
//! safety check, the rate limit or the model; incidents, reviews, feedback, quota use and
//! revenue follow. One [`Simulation::step`] is one second of traffic. The same seed and
//! settings give the same sequence of recordings.
//!
//! Each [`Scenario`] other than `steady` crosses the thresholds of one or more of the
//! monitoring stack's alerts (the seed's list; the rules themselves live in `configs/`), and
//! `steady` stays under all of them. Rates are per simulated second: `--unpaced` runs compress
//! time, so per-second alerts see more than the scenario's rate.
//!
//! | scenario | alerts it fires |
//! |---|---|
//! | `steady` | none |
//! | `error-spike` | HighErrorRate, ModelInferenceFailure |
//! | `gpu-overheat` | GPUOverheating |
//! | `gpu-memory` | GPUMemoryHigh |
//! | `safety-surge` | SafetyIncidentSurge, CriticalSafetyIncident |
//! | `quota-exhaustion` | QuotaExceeded, RateLimitHitRate |
//! | `overload` | HighLatency, HighQueueDepth, WorkerOverloaded |
//! | `bad-input` | HighValidationFailureRate |
//! | `service-down` | ServiceDown |

mod random;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::labels::{
    Component, CustomerId, ErrorType, GpuId, InstructionCategory, ModelName, Rating, ReviewOutcome,
    RobotType, SafetyStage, Severity, Tier, ValidationReason, ViolationType,
};
use crate::telemetry::{CustomerCounts, GpuStats, Inference, Outcome, SafetyIncident, Telemetry};
use random::{log_normal, normal, poisson, weighted};

/// What the simulated fleet is going through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "simulator", derive(clap::ValueEnum))]
pub enum Scenario {
    /// Normal traffic: every alert stays quiet.
    #[default]
    Steady,
    /// 35 % of one model's requests fail, 6 % of the others'.
    ErrorSpike,
    /// Half the GPUs run at about 90 °C.
    GpuOverheat,
    /// Every GPU's memory is 97 % full.
    GpuMemory,
    /// 8 % of requests are refused by the safety check, with critical incidents.
    SafetySurge,
    /// The two busiest customers are at their quota and hammer the rate limit.
    QuotaExhaustion,
    /// Workers are saturated: the queue grows and latency quadruples.
    Overload,
    /// 4 % of requests fail validation.
    BadInput,
    /// The API's health check fails.
    ServiceDown,
}

impl Scenario {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Steady => "steady",
            Scenario::ErrorSpike => "error-spike",
            Scenario::GpuOverheat => "gpu-overheat",
            Scenario::GpuMemory => "gpu-memory",
            Scenario::SafetySurge => "safety-surge",
            Scenario::QuotaExhaustion => "quota-exhaustion",
            Scenario::Overload => "overload",
            Scenario::BadInput => "bad-input",
            Scenario::ServiceDown => "service-down",
        }
    }

    /// Every scenario.
    pub const ALL: &'static [Scenario] = &[
        Scenario::Steady,
        Scenario::ErrorSpike,
        Scenario::GpuOverheat,
        Scenario::GpuMemory,
        Scenario::SafetySurge,
        Scenario::QuotaExhaustion,
        Scenario::Overload,
        Scenario::BadInput,
        Scenario::ServiceDown,
    ];
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The simulation's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Seeds every random choice.
    pub seed: u64,
    /// Mean inference requests per simulated second.
    pub rate: f64,
    /// Customers in the fleet.
    pub customers: usize,
    /// GPUs serving the models.
    pub gpus: u32,
    /// What the fleet goes through.
    pub scenario: Scenario,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            rate: 50.0,
            customers: 24,
            gpus: 4,
            scenario: Scenario::Steady,
        }
    }
}

/// Models served: name, traffic weight, median latency in seconds.
const MODELS: &[(&str, f64, f64)] = &[
    ("pi0", 0.4, 0.12),
    ("openvla-7b", 0.3, 0.35),
    ("octo-base", 0.2, 0.08),
    ("rt-2-x", 0.1, 0.6),
];
/// The model whose errors spike in `error-spike`.
const FLAKY_MODEL: usize = 1;
/// Robot types and their traffic weights.
const ROBOTS: &[(&str, f64)] = &[
    ("franka-panda", 0.35),
    ("ur5e", 0.3),
    ("aloha-bimanual", 0.2),
    ("unitree-go2", 0.15),
];
const CATEGORY_WEIGHTS: &[f64] = &[0.35, 0.2, 0.2, 0.1, 0.1, 0.05];
const ERROR_WEIGHTS: &[f64] = &[0.3, 0.1, 0.4, 0.15, 0.05];
const VIOLATION_WEIGHTS: &[f64] = &[0.25, 0.2, 0.15, 0.15, 0.1, 0.1, 0.05];
const VALIDATION_WEIGHTS: &[f64] = &[0.25, 0.2, 0.15, 0.1, 0.1, 0.2];
/// Sigma of the latency log-normal: p99 is about 2.3 times the median.
const LATENCY_SIGMA: f64 = 0.35;
/// Worker pool sized for 60 % utilization at the configured rate.
const TARGET_UTILIZATION: f64 = 0.6;
/// Mean service time across the model mix, in seconds.
const MEAN_SERVICE_SECS: f64 = 0.25;
const GPU_MEMORY_BYTES: u64 = 80 * 1024 * 1024 * 1024;

/// One simulated customer.
#[derive(Debug, Clone)]
struct Customer {
    id: CustomerId,
    tier: Tier,
    /// Share of the traffic (Zipf-like: a few customers make most requests).
    weight: f64,
    /// Index into `ROBOTS` of the robot type they mostly use.
    main_robot: usize,
    quota_used: u64,
    quota_limit: u64,
    /// At quota: every request is refused by the rate limiter.
    exhausted: bool,
    seen: bool,
}

fn tier_for_rank(rank: usize) -> Tier {
    match rank {
        0 => Tier::Enterprise,
        1..=2 => Tier::Pro,
        3..=6 => Tier::Starter,
        _ => Tier::Free,
    }
}

fn quota_limit(tier: Tier) -> u64 {
    match tier {
        Tier::Free => 5_000,
        Tier::Starter => 50_000,
        Tier::Pro => 500_000,
        Tier::Enterprise => 5_000_000,
    }
}

fn monthly_price(tier: Tier) -> f64 {
    match tier {
        Tier::Free => 0.0,
        Tier::Starter => 99.0,
        Tier::Pro => 499.0,
        Tier::Enterprise => 4_999.0,
    }
}

fn usage_price(tier: Tier) -> f64 {
    match tier {
        Tier::Free => 0.0,
        Tier::Starter => 0.002,
        Tier::Pro => 0.0015,
        Tier::Enterprise => 0.001,
    }
}

fn severity_of(v: ViolationType, rng: &mut StdRng) -> Severity {
    match v {
        ViolationType::HarmfulInstruction | ViolationType::HumanProximity => Severity::High,
        ViolationType::CollisionRisk | ViolationType::ForceLimit => {
            if rng.random_bool(0.5) {
                Severity::Medium
            } else {
                Severity::Low
            }
        }
        _ => Severity::Low,
    }
}

/// What a run has recorded so far: counts, and the extremes of the gauges.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    /// Simulated seconds.
    pub seconds: u64,
    /// Inference requests by `status`.
    pub requests: BTreeMap<&'static str, u64>,
    /// Requests that reached each model, and how many of those failed.
    pub model_requests: BTreeMap<&'static str, (u64, u64)>,
    /// Requests that reached a model and took longer than 2 s.
    pub slower_than_2s: u64,
    /// Safety incidents by `severity`.
    pub incidents: BTreeMap<&'static str, u64>,
    /// Revenue in US dollars.
    pub revenue_usd: f64,
    /// The highest GPU temperature set.
    pub max_gpu_temperature: f64,
    /// The highest GPU memory use set, as a share of the GPU's memory.
    pub max_gpu_memory_share: f64,
    /// The highest queue depth set.
    pub max_queue_depth: u64,
    /// The highest worker utilization set (busy / running).
    pub max_worker_utilization: f64,
    /// The highest quota use of any customer (used / limit).
    pub max_quota_share: f64,
    /// Seconds in which some component's health check failed.
    pub seconds_unhealthy: u64,
}

impl Totals {
    /// All inference requests.
    pub fn total_requests(&self) -> u64 {
        self.requests.values().sum()
    }

    /// The highest error share of any model (requests that reached it).
    pub fn max_model_error_share(&self) -> f64 {
        self.model_requests
            .values()
            .map(|(n, failed)| *failed as f64 / (*n).max(1) as f64)
            .fold(0.0, f64::max)
    }

    /// The share of model-served requests slower than 2 s (above 1 %: p99 is over 2 s).
    pub fn share_slower_than_2s(&self) -> f64 {
        let served: u64 = self.model_requests.values().map(|(n, _)| n).sum();
        self.slower_than_2s as f64 / served.max(1) as f64
    }
}

impl fmt::Display for Totals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} s simulated, {} requests (",
            self.seconds,
            self.total_requests()
        )?;
        for (i, (status, n)) in self.requests.iter().enumerate() {
            write!(f, "{}{status} {n}", if i > 0 { ", " } else { "" })?;
        }
        write!(f, "), safety incidents (")?;
        for (i, (sev, n)) in self.incidents.iter().enumerate() {
            write!(f, "{}{sev} {n}", if i > 0 { ", " } else { "" })?;
        }
        write!(
            f,
            "), revenue ${:.2}, queue depth up to {}, hottest GPU {:.1} °C",
            self.revenue_usd, self.max_queue_depth, self.max_gpu_temperature
        )
    }
}

/// The simulated fleet and its random source.
#[derive(Debug)]
pub struct Simulation {
    config: SimConfig,
    rng: StdRng,
    customers: Vec<Customer>,
    customer_weights: Vec<f64>,
    models: Vec<ModelName>,
    model_weights: Vec<f64>,
    robots: Vec<RobotType>,
    robot_weights: Vec<f64>,
    workers_total: u64,
    safety_score: f64,
    totals: Totals,
}

impl Simulation {
    /// A fleet as `config` describes it.
    pub fn new(config: SimConfig) -> Self {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let n = config.customers.max(1);
        let customers: Vec<Customer> = (0..n)
            .filter_map(|rank| {
                let tier = tier_for_rank(rank);
                let limit = quota_limit(tier);
                let exhausted = config.scenario == Scenario::QuotaExhaustion && rank < 2.min(n);
                let used = if exhausted {
                    limit
                } else {
                    (limit as f64 * rng.random_range(0.05..0.5)) as u64
                };
                Some(Customer {
                    id: CustomerId::new(&format!("cust-{:04}", rank + 1)).ok()?,
                    tier,
                    weight: 1.0 / ((rank + 1) as f64).powf(0.9),
                    main_robot: rng.random_range(0..ROBOTS.len()),
                    quota_used: used,
                    quota_limit: limit,
                    exhausted,
                    seen: false,
                })
            })
            .collect();
        let customer_weights = customers.iter().map(|c| c.weight).collect();
        let models = MODELS
            .iter()
            .filter_map(|(m, _, _)| ModelName::new(m).ok())
            .collect();
        let robots = ROBOTS
            .iter()
            .filter_map(|(r, _)| RobotType::new(r).ok())
            .collect();
        let workers_total =
            ((config.rate * MEAN_SERVICE_SECS / TARGET_UTILIZATION).ceil() as u64).max(4);
        Self {
            config,
            rng,
            customers,
            customer_weights,
            models,
            model_weights: MODELS.iter().map(|m| m.1).collect(),
            robots,
            robot_weights: ROBOTS.iter().map(|r| r.1).collect(),
            workers_total,
            safety_score: 0.99,
            totals: Totals::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// What has been recorded so far.
    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// Simulates one second of traffic and records it.
    pub fn step(&mut self, t: &Telemetry) {
        let scenario = self.config.scenario;
        let mut n = poisson(&mut self.rng, self.config.rate);
        let mut incidents_now = 0u64;
        // Requests, then the hot customers' extra burst into the rate limiter.
        let burst = if scenario == Scenario::QuotaExhaustion {
            (self.config.rate * 0.3).max(12.0).round() as u64
        } else {
            0
        };
        let hot = self.customers.len().min(2);
        for i in 0..n + burst {
            let c = if i < n {
                weighted(&mut self.rng, &self.customer_weights)
            } else {
                (i as usize) % hot
            };
            incidents_now += self.request(t, c);
        }
        n += burst;
        self.totals.seconds += 1;
        self.gauges(t, n, incidents_now);
    }

    /// One request from customer `c`; returns the safety incidents it caused.
    fn request(&mut self, t: &Telemetry, c: usize) -> u64 {
        let scenario = self.config.scenario;
        let rng = &mut self.rng;
        let robot = if rng.random_bool(0.7) {
            self.customers[c].main_robot
        } else {
            weighted(rng, &self.robot_weights)
        };
        let model = weighted(rng, &self.model_weights);
        let category = InstructionCategory::ALL[weighted(rng, CATEGORY_WEIGHTS)];
        let rate = self.config.rate.max(1.0);
        let customer = &mut self.customers[c];
        customer.seen = true;
        let reject_p = match scenario {
            Scenario::SafetySurge => 0.08,
            // About 30 refusals an hour at any rate: well under the 100/h alert.
            _ => 30.0 / (3600.0 * rate),
        };
        let invalid_p = if scenario == Scenario::BadInput {
            0.04
        } else {
            0.003
        };
        let mut incidents = 0;
        let mut latency = Duration::ZERO;
        let outcome = if customer.exhausted || rng.random_bool(0.002) {
            Outcome::RateLimited
        } else if rng.random_bool(invalid_p) {
            Outcome::Invalid(ValidationReason::ALL[weighted(rng, VALIDATION_WEIGHTS)])
        } else {
            let check = log_normal(rng, 0.003, 0.4);
            t.record_safety_check(SafetyStage::Instruction, Duration::from_secs_f64(check));
            if rng.random_bool(reject_p) {
                let v = ViolationType::ALL[weighted(rng, VIOLATION_WEIGHTS)];
                let severity = severity_of(v, rng);
                t.record_safety_incident(&SafetyIncident {
                    severity,
                    violation_type: v,
                    customer: &customer.id,
                });
                *self.totals.incidents.entry(severity.as_str()).or_default() += 1;
                incidents += 1;
                if rng.random_bool(0.3) {
                    let outcome = if rng.random_bool(0.12) {
                        ReviewOutcome::FalsePositive
                    } else {
                        ReviewOutcome::Confirmed
                    };
                    t.record_safety_review(v, outcome);
                }
                Outcome::Rejected(v)
            } else {
                let slow = if scenario == Scenario::Overload {
                    4.0
                } else {
                    1.0
                };
                let secs = log_normal(rng, MODELS[model].2 * slow, LATENCY_SIGMA).min(30.0);
                latency = Duration::from_secs_f64(secs);
                let action_check = log_normal(rng, 0.006, 0.4);
                t.record_safety_check(SafetyStage::Action, Duration::from_secs_f64(action_check));
                let error_p = match scenario {
                    Scenario::ErrorSpike if model == FLAKY_MODEL => 0.35,
                    Scenario::ErrorSpike => 0.06,
                    _ => 0.004,
                };
                if rng.random_bool(error_p) {
                    Outcome::Error(ErrorType::ALL[weighted(rng, ERROR_WEIGHTS)])
                } else {
                    Outcome::Success
                }
            }
        };
        if outcome != Outcome::RateLimited {
            customer.quota_used += 1;
            if customer.quota_used * 100 >= customer.quota_limit * 85 {
                // A new quota period: steady customers never get near the 95 % alert.
                customer.quota_used = 0;
            }
        }
        t.record_inference(&Inference {
            model: &self.models[model],
            robot_type: &self.robots[robot],
            tier: customer.tier,
            customer: &customer.id,
            instruction_category: category,
            outcome,
            duration: latency,
        });
        *self
            .totals
            .requests
            .entry(outcome.status().as_str())
            .or_default() += 1;
        if outcome.reached_model() {
            let (n, failed) = self
                .totals
                .model_requests
                .entry(MODELS[model].0)
                .or_default();
            *n += 1;
            *failed += u64::from(outcome != Outcome::Success);
            self.totals.slower_than_2s += u64::from(latency > Duration::from_secs(2));
        }
        match outcome {
            Outcome::Success => {
                let fee = usage_price(customer.tier);
                t.record_revenue(customer.tier, fee);
                self.totals.revenue_usd += fee;
                if rng.random_bool(0.04) {
                    let rating = if rng.random_bool(0.88) {
                        Rating::Positive
                    } else {
                        Rating::Negative
                    };
                    t.record_feedback(&customer.id, rating);
                }
            }
            Outcome::Error(_) if rng.random_bool(0.3) => {
                t.record_feedback(&customer.id, Rating::Negative);
            }
            _ => {}
        }
        incidents
    }

    /// Once a second: incidents that are not refusals, then every gauge.
    fn gauges(&mut self, t: &Telemetry, requests: u64, mut incidents: u64) {
        let scenario = self.config.scenario;
        let rng = &mut self.rng;
        // Near-misses flagged after the action ran: about one in five minutes, never
        // critical...
        if rng.random_bool(1.0 / 300.0) {
            let c = weighted(rng, &self.customer_weights);
            let v = ViolationType::ALL[weighted(rng, VIOLATION_WEIGHTS)];
            let severity = severity_of(v, rng);
            t.record_safety_incident(&SafetyIncident {
                severity,
                violation_type: v,
                customer: &self.customers[c].id,
            });
            *self.totals.incidents.entry(severity.as_str()).or_default() += 1;
            incidents += 1;
        }
        // ...except in a surge, where a person gets too close every ten seconds or so.
        if scenario == Scenario::SafetySurge && rng.random_bool(0.1) {
            let c = weighted(rng, &self.customer_weights);
            t.record_safety_incident(&SafetyIncident {
                severity: Severity::Critical,
                violation_type: ViolationType::HumanProximity,
                customer: &self.customers[c].id,
            });
            *self.totals.incidents.entry("critical").or_default() += 1;
            incidents += 1;
        }
        let per_request = incidents as f64 / requests.max(1) as f64;
        let instant = (1.0 - per_request * 5.0).clamp(0.0, 1.0);
        self.safety_score = 0.9 * self.safety_score + 0.1 * instant;
        t.set_safety_score(self.safety_score);
        let compliance = if scenario == Scenario::SafetySurge {
            0.82
        } else {
            0.97
        };
        t.set_compliance_score(compliance + normal(rng) * 0.005);

        // Workers and queue (Little's law on the service time).
        let overloaded = scenario == Scenario::Overload;
        let busy = (self.config.rate * MEAN_SERVICE_SECS * (1.0 + 0.1 * normal(rng))).max(0.0);
        let active = if overloaded {
            self.workers_total
        } else {
            (busy.round() as u64).min(self.workers_total)
        };
        let load = active as f64 / self.workers_total as f64;
        t.set_workers(active, self.workers_total);
        self.totals.max_worker_utilization = self.totals.max_worker_utilization.max(load);
        // Requests wait only when workers are busy: a few at 60 %, many once saturated.
        let depth = if overloaded {
            110 + poisson(rng, 20.0)
        } else {
            poisson(rng, 1.0 + 12.0 * load * load)
        };
        t.set_queue_depth(depth);
        self.totals.max_queue_depth = self.totals.max_queue_depth.max(depth);
        t.set_db_connections(
            (10.0 + 20.0 * load + normal(rng)).round().max(0.0) as u64,
            50,
        );

        // GPUs follow the load; some overheat or fill up in their scenarios.
        let mut hottest = f64::MIN;
        for g in 0..self.config.gpus {
            let hot = scenario == Scenario::GpuOverheat && g < self.config.gpus.div_ceil(2);
            let temp = if hot {
                90.0 + 1.5 * normal(rng)
            } else {
                58.0 + 18.0 * load + normal(rng)
            };
            let memory_share = if scenario == Scenario::GpuMemory {
                0.97 + 0.005 * normal(rng).abs()
            } else {
                0.45 + 0.1 * load
            };
            hottest = hottest.max(temp);
            self.totals.max_gpu_memory_share =
                self.totals.max_gpu_memory_share.max(memory_share.min(1.0));
            t.record_gpu(&GpuStats {
                gpu: GpuId(g),
                utilization_percent: (30.0 + 60.0 * load + 3.0 * normal(rng)).clamp(0.0, 100.0),
                temperature_celsius: temp,
                memory_used_bytes: (GPU_MEMORY_BYTES as f64 * memory_share.min(1.0)) as u64,
                memory_total_bytes: GPU_MEMORY_BYTES,
            });
        }
        self.totals.max_gpu_temperature = self.totals.max_gpu_temperature.max(hottest);

        // Quota, customers and revenue from subscriptions.
        let mut mrr = 0.0;
        let mut active_customers = 0;
        for c in &self.customers {
            t.set_quota(&c.id, c.tier, c.quota_used, c.quota_limit);
            self.totals.max_quota_share = self
                .totals
                .max_quota_share
                .max(c.quota_used as f64 / c.quota_limit as f64);
            mrr += monthly_price(c.tier);
            active_customers += u64::from(c.seen);
        }
        for tier in Tier::ALL {
            let monthly: f64 = self
                .customers
                .iter()
                .filter(|c| c.tier == *tier)
                .map(|c| monthly_price(c.tier))
                .sum();
            let per_second = monthly / (30.0 * 86_400.0);
            t.record_revenue(*tier, per_second);
            self.totals.revenue_usd += per_second;
        }
        t.set_mrr(mrr);
        let n = self.customers.len() as u64;
        t.set_customers(CustomerCounts {
            total: n + n / 4,
            active: active_customers,
            churned: (n / 20).max(1),
        });
        let api_down = scenario == Scenario::ServiceDown;
        for component in Component::ALL {
            t.set_service_up(*component, !(api_down && *component == Component::Api));
        }
        self.totals.seconds_unhealthy += u64::from(api_down);
    }
}

#[cfg(test)]
mod tests;
