//! The `otlp` receiver's config, in the OpenTelemetry Collector's shape.
//!
//! ```yaml
//! receivers:
//!   otlp:
//!     protocols:
//!       grpc:                      # a key with no value enables the protocol with defaults
//!         keepalive:
//!           server_parameters: { time: 2h, timeout: 20s, max_connection_age: 30m }
//!       http:
//!         endpoint: 0.0.0.0:4318
//!         max_request_body_size_mib: 32
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use vla_pipeline::config::ConfigProblem;

/// Default gRPC endpoint (loopback only; write `0.0.0.0:4317` to listen on every interface).
pub const DEFAULT_GRPC_ENDPOINT: &str = "127.0.0.1:4317";
/// Default HTTP endpoint.
pub const DEFAULT_HTTP_ENDPOINT: &str = "127.0.0.1:4318";
/// Default size limit of one gRPC message and of one HTTP body (after decompression), in MiB.
pub const DEFAULT_MAX_SIZE_MIB: u64 = 16;

const MIB: u64 = 1024 * 1024;
/// Sizes above this are surely typos (and would overflow a 32-bit `usize`).
const MAX_SIZE_MIB: u64 = 2047;

/// The `otlp` receiver's config.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Which protocols to serve; at least one.
    pub protocols: Protocols,
}

/// The protocols to serve. A key that is present, even with no value (`grpc:`), enables the
/// protocol with its defaults, as in the OpenTelemetry Collector; an absent key disables it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Protocols {
    /// OTLP/gRPC, when enabled.
    #[serde(deserialize_with = "present_means_enabled")]
    pub grpc: Option<GrpcConfig>,
    /// OTLP/HTTP, when enabled.
    #[serde(deserialize_with = "present_means_enabled")]
    pub http: Option<HttpConfig>,
}

/// `protocols.grpc`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// `ip:port` to listen on.
    pub endpoint: String,
    /// Largest accepted (decompressed) message, in MiB.
    pub max_recv_msg_size_mib: u64,
    /// Limit of concurrent HTTP/2 streams per connection; `None` = the server's default.
    pub max_concurrent_streams: Option<u32>,
    /// HTTP/2 keepalive and connection age.
    pub keepalive: Keepalive,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            endpoint: DEFAULT_GRPC_ENDPOINT.to_owned(),
            max_recv_msg_size_mib: DEFAULT_MAX_SIZE_MIB,
            max_concurrent_streams: None,
            keepalive: Keepalive::default(),
        }
    }
}

/// `protocols.grpc.keepalive`, in the OpenTelemetry Collector's shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Keepalive {
    /// What the server does to the connections it accepted.
    pub server_parameters: ServerParameters,
}

/// `protocols.grpc.keepalive.server_parameters`. Everything unset by default: no pings, and
/// connections live as long as their clients keep them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerParameters {
    /// Send an HTTP/2 ping on a connection after it has been quiet this long (finds dead peers
    /// behind NATs and load balancers that drop idle connections).
    #[serde(deserialize_with = "vla_pipeline::config::optional_duration")]
    pub time: Option<Duration>,
    /// Close the connection when a ping is not answered within this long (default
    /// [`DEFAULT_KEEPALIVE_TIMEOUT`]; needs `time`).
    #[serde(deserialize_with = "vla_pipeline::config::optional_duration")]
    pub timeout: Option<Duration>,
    /// Ask a client to reconnect (HTTP/2 GOAWAY) once its connection is this old, so that
    /// clients spread over collectors added behind a load balancer.
    #[serde(deserialize_with = "vla_pipeline::config::optional_duration")]
    pub max_connection_age: Option<Duration>,
    /// After `max_connection_age`, how long requests in flight get before the connection is
    /// closed (default: no limit; needs `max_connection_age`).
    #[serde(deserialize_with = "vla_pipeline::config::optional_duration")]
    pub max_connection_age_grace: Option<Duration>,
}

/// Default of `keepalive.server_parameters.timeout`.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Shortest ping interval: pinging more often only loads the clients.
pub const MIN_KEEPALIVE_TIME: Duration = Duration::from_secs(1);

impl GrpcConfig {
    /// The endpoint as a socket address (checked by [`Config::validate`]).
    pub fn socket_addr(&self) -> Result<SocketAddr, String> {
        parse_endpoint(&self.endpoint)
    }

    /// The message size limit in bytes.
    pub fn max_recv_msg_size_bytes(&self) -> usize {
        mib_to_bytes(self.max_recv_msg_size_mib)
    }
}

/// `protocols.http`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `ip:port` to listen on.
    pub endpoint: String,
    /// Largest accepted body, in MiB; applies both to the body as sent and after
    /// decompression (a defence against gzip bombs).
    pub max_request_body_size_mib: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            endpoint: DEFAULT_HTTP_ENDPOINT.to_owned(),
            max_request_body_size_mib: DEFAULT_MAX_SIZE_MIB,
        }
    }
}

impl HttpConfig {
    /// The endpoint as a socket address (checked by [`Config::validate`]).
    pub fn socket_addr(&self) -> Result<SocketAddr, String> {
        parse_endpoint(&self.endpoint)
    }

    /// The body size limit in bytes.
    pub fn max_request_body_size_bytes(&self) -> usize {
        mib_to_bytes(self.max_request_body_size_mib)
    }
}

impl Config {
    /// Checks the config without I/O; problems are reported under `path` (the receiver's
    /// own YAML path, e.g. `receivers.otlp`).
    pub fn validate(&self, path: &str) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.protocols.grpc.is_none() && self.protocols.http.is_none() {
            problems.push(ConfigProblem::new(
                format!("{path}.protocols"),
                "enable at least one protocol: `grpc` or `http` (an empty key such as `grpc:` \
                 enables it with defaults)",
            ));
        }
        if let Some(grpc) = &self.protocols.grpc {
            let base = format!("{path}.protocols.grpc");
            check_endpoint(&mut problems, &base, &grpc.endpoint);
            check_size(
                &mut problems,
                &base,
                "max_recv_msg_size_mib",
                grpc.max_recv_msg_size_mib,
            );
            if grpc.max_concurrent_streams == Some(0) {
                problems.push(ConfigProblem::new(
                    format!("{base}.max_concurrent_streams"),
                    "must be at least 1 (leave it out for the default)",
                ));
            }
            check_keepalive(
                &mut problems,
                &format!("{base}.keepalive.server_parameters"),
                &grpc.keepalive.server_parameters,
            );
        }
        if let Some(http) = &self.protocols.http {
            let base = format!("{path}.protocols.http");
            check_endpoint(&mut problems, &base, &http.endpoint);
            check_size(
                &mut problems,
                &base,
                "max_request_body_size_mib",
                http.max_request_body_size_mib,
            );
        }
        if let (Some(g), Some(h)) = (&self.protocols.grpc, &self.protocols.http)
            && let (Ok(ga), Ok(ha)) = (g.socket_addr(), h.socket_addr())
            && ga == ha
            && ga.port() != 0
        {
            problems.push(ConfigProblem::new(
                format!("{path}.protocols.http.endpoint"),
                format!("{ha} is also the grpc endpoint; use two different ports"),
            ));
        }
        problems
    }
}

/// `null` (a key with no value) becomes the defaults; a missing key stays `None` through
/// `#[serde(default)]` on the struct.
fn present_means_enabled<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Some(Option::<T>::deserialize(d)?.unwrap_or_default()))
}

fn parse_endpoint(endpoint: &str) -> Result<SocketAddr, String> {
    vla_pipeline::config::parse_listen_addr(endpoint)
}

fn check_endpoint(problems: &mut Vec<ConfigProblem>, base: &str, endpoint: &str) {
    if let Err(message) = parse_endpoint(endpoint) {
        problems.push(ConfigProblem::new(format!("{base}.endpoint"), message));
    }
}

fn check_keepalive(problems: &mut Vec<ConfigProblem>, base: &str, k: &ServerParameters) {
    let mut problem = |field: &str, message: String| {
        problems.push(ConfigProblem::new(format!("{base}.{field}"), message));
    };
    if let Some(t) = k.time
        && t < MIN_KEEPALIVE_TIME
    {
        problem(
            "time",
            format!("must be at least 1s (got {t:?}); leave it out to send no pings"),
        );
    }
    if k.timeout.is_some_and(|t| t.is_zero()) {
        problem("timeout", "must be greater than 0 (e.g. 20s)".to_owned());
    }
    if k.timeout.is_some() && k.time.is_none() {
        problem(
            "timeout",
            "has no effect without `time` (the ping interval); set both".to_owned(),
        );
    }
    if k.max_connection_age.is_some_and(|t| t.is_zero()) {
        problem(
            "max_connection_age",
            "must be greater than 0 (leave it out for no limit)".to_owned(),
        );
    }
    if k.max_connection_age_grace.is_some() && k.max_connection_age.is_none() {
        problem(
            "max_connection_age_grace",
            "has no effect without `max_connection_age`; set both".to_owned(),
        );
    }
}

fn check_size(problems: &mut Vec<ConfigProblem>, base: &str, field: &str, mib: u64) {
    if mib == 0 || mib > MAX_SIZE_MIB {
        problems.push(ConfigProblem::new(
            format!("{base}.{field}"),
            format!("must be between 1 and {MAX_SIZE_MIB} (MiB), got {mib}"),
        ));
    }
}

fn mib_to_bytes(mib: u64) -> usize {
    usize::try_from(mib.saturating_mul(MIB)).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Result<Config, String> {
        serde_saphyr::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn a_key_without_value_enables_the_protocol_with_defaults() {
        let c = yaml("protocols:\n  grpc:\n").unwrap();
        assert_eq!(c.protocols.grpc, Some(GrpcConfig::default()));
        assert_eq!(c.protocols.http, None);
        assert_eq!(
            c.protocols.grpc.as_ref().map(|g| g.endpoint.as_str()),
            Some("127.0.0.1:4317")
        );
        let c = yaml("protocols:\n  http: {}\n  grpc: { max_recv_msg_size_mib: 32 }\n").unwrap();
        assert_eq!(c.protocols.http, Some(HttpConfig::default()));
        let grpc = c.protocols.grpc.unwrap();
        assert_eq!(grpc.max_recv_msg_size_mib, 32);
        assert_eq!(grpc.max_recv_msg_size_bytes(), 32 * 1024 * 1024);
        assert_eq!(grpc.endpoint, DEFAULT_GRPC_ENDPOINT);
        let c = yaml("protocols:\n  http:\n    endpoint: 0.0.0.0:14318\n").unwrap();
        let http = c.protocols.http.unwrap();
        assert_eq!(http.endpoint, "0.0.0.0:14318");
        assert_eq!(http.max_request_body_size_bytes(), 16 * 1024 * 1024);
        assert_eq!(http.socket_addr(), Ok("0.0.0.0:14318".parse().unwrap()));
    }

    #[test]
    fn unknown_fields_are_errors() {
        for text in [
            "protocol:\n  grpc:\n",
            "protocols:\n  thrift:\n",
            "protocols:\n  grpc:\n    endpiont: 127.0.0.1:1\n",
            "protocols:\n  http:\n    max_request_body_size: 1\n",
        ] {
            let err = yaml(text).expect_err(text);
            assert!(err.contains("unknown field"), "{text}: {err}");
        }
    }

    #[test]
    fn validation_reports_every_problem_with_its_path() {
        assert_eq!(
            Config::default().validate("receivers.otlp"),
            vec![ConfigProblem::new(
                "receivers.otlp.protocols",
                "enable at least one protocol: `grpc` or `http` (an empty key such as `grpc:` \
                 enables it with defaults)"
            )]
        );
        let bad = Config {
            protocols: Protocols {
                grpc: Some(GrpcConfig {
                    endpoint: "collector.internal:4317".into(),
                    max_recv_msg_size_mib: 0,
                    max_concurrent_streams: Some(0),
                    keepalive: Keepalive::default(),
                }),
                http: Some(HttpConfig {
                    endpoint: "127.0.0.1".into(),
                    max_request_body_size_mib: 4096,
                }),
            },
        };
        let problems = bad.validate("receivers.otlp/a");
        let got: Vec<(&str, &str)> = problems
            .iter()
            .map(|p| (p.path.as_str(), p.message.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "receivers.otlp/a.protocols.grpc.endpoint",
                    "invalid endpoint \"collector.internal:4317\": expected an IP address and \
                     port, e.g. 127.0.0.1:4317, 0.0.0.0:4317 or [::1]:4317 (host names other than \
                     localhost are not resolved)"
                ),
                (
                    "receivers.otlp/a.protocols.grpc.max_recv_msg_size_mib",
                    "must be between 1 and 2047 (MiB), got 0"
                ),
                (
                    "receivers.otlp/a.protocols.grpc.max_concurrent_streams",
                    "must be at least 1 (leave it out for the default)"
                ),
                (
                    "receivers.otlp/a.protocols.http.endpoint",
                    "invalid endpoint \"127.0.0.1\": expected an IP address and port, e.g. \
                     127.0.0.1:4317, 0.0.0.0:4317 or [::1]:4317 (host names other than localhost \
                     are not resolved)"
                ),
                (
                    "receivers.otlp/a.protocols.http.max_request_body_size_mib",
                    "must be between 1 and 2047 (MiB), got 4096"
                ),
            ]
        );
    }

    #[test]
    fn same_endpoint_for_both_protocols_is_a_problem() {
        let c = yaml(
            "protocols:\n  grpc: { endpoint: 127.0.0.1:5000 }\n  http: { endpoint: 127.0.0.1:5000 }\n",
        )
        .unwrap();
        let problems = c.validate("receivers.otlp");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "receivers.otlp.protocols.http.endpoint");
        assert!(problems[0].message.contains("also the grpc endpoint"));
        let both = yaml("protocols: { grpc: , http: }").unwrap();
        assert_eq!(both.validate("r"), vec![]);
    }
}
