//! Export settings: what the builder was told, then the standard OpenTelemetry environment
//! variables, then defaults, in that order of precedence (values set in code win).
//!
//! Variables read (the signal-specific `OTEL_EXPORTER_OTLP_METRICS_*` one before the generic
//! `OTEL_EXPORTER_OTLP_*`): `ENDPOINT`, `PROTOCOL` (only `grpc`), `HEADERS`
//! (`k=v,k2=v2`, values percent-decoded), `COMPRESSION` (`gzip`, `none`), `TIMEOUT` (ms),
//! `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE` (`cumulative`, `delta`),
//! `OTEL_METRIC_EXPORT_INTERVAL` (ms), `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`
//! (`k=v,...`, percent-decoded), `OTEL_SDK_DISABLED` (`true` turns export off), and with the
//! `tls` feature `CERTIFICATE`, `CLIENT_CERTIFICATE` and `CLIENT_KEY` (PEM file paths).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::BuildError;

/// How sums and histograms are aggregated between exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Temporality {
    /// Totals since start (what Prometheus expects), the default.
    #[default]
    Cumulative,
    /// Changes since the last export (for backends that want deltas, and less memory in the
    /// API process; the collector's `deltatocumulative` processor turns them back into
    /// cumulative series for Prometheus, as the shipped configs do).
    Delta,
}

/// The default gRPC endpoint.
pub const DEFAULT_GRPC_ENDPOINT: &str = "http://localhost:4317";
/// The default export interval (the OTel default is 60 s; 10 s suits a 15 s scrape-like view).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// The default per-export timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default service name.
pub const DEFAULT_SERVICE_NAME: &str = "vla-api";

/// What the builder was told in code; `None` means "not set, ask the environment".
#[derive(Debug, Clone, Default)]
pub(crate) struct Requested {
    pub endpoint: Option<String>,
    pub headers: Vec<(String, String)>,
    pub gzip: Option<bool>,
    pub timeout: Option<Duration>,
    pub interval: Option<Duration>,
    pub temporality: Option<Temporality>,
    pub resource: Vec<(String, String)>,
    pub enabled: Option<bool>,
    pub tls: TlsFiles,
}

/// TLS material as PEM file paths; each unset one is looked up in the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    /// CA bundle that signs the collector's certificate (default: the system's roots).
    pub ca: Option<PathBuf>,
    /// Client certificate, for collectors that require mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key.
    pub client_key: Option<PathBuf>,
    /// The name to verify the collector's certificate against (default: the endpoint's host).
    pub domain: Option<String>,
}

impl TlsFiles {
    fn is_empty(&self) -> bool {
        *self == TlsFiles::default()
    }
}

/// TLS material read from its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsPem {
    pub ca: Option<Vec<u8>>,
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    pub domain: Option<String>,
}

/// The settings export runs with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Resolved {
    pub enabled: bool,
    pub endpoint: String,
    /// Header names are lower-case; code wins over the environment per name.
    pub headers: BTreeMap<String, String>,
    pub gzip: bool,
    pub timeout: Duration,
    pub interval: Duration,
    pub temporality: Temporality,
    pub resource: BTreeMap<String, String>,
    /// Set for `https://` endpoints.
    pub tls: Option<TlsPem>,
}

/// Reads one variable; tests pass a map instead of the process environment.
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, blank values treated as unset.
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn metrics_or_generic(env: Env<'_>, suffix: &str) -> Option<(String, String)> {
    let specific = format!("OTEL_EXPORTER_OTLP_METRICS_{suffix}");
    let generic = format!("OTEL_EXPORTER_OTLP_{suffix}");
    env(&specific)
        .map(|v| (specific, v))
        .or_else(|| env(&generic).map(|v| (generic, v)))
}

fn bad_env(var: &str, value: &str, expected: &str) -> BuildError {
    BuildError::Env {
        var: var.to_owned(),
        value: value.to_owned(),
        expected: expected.to_owned(),
    }
}

fn millis(var: &str, value: &str) -> Result<Duration, BuildError> {
    value
        .trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| bad_env(var, value, "a whole number of milliseconds"))
}

/// Decodes `%XX` escapes (the W3C baggage form the OTel variables use).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `k=v,k2=v2` with percent-decoded keys and values.
fn key_values(var: &str, value: &str) -> Result<Vec<(String, String)>, BuildError> {
    value
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| bad_env(var, value, "comma-separated key=value pairs"))?;
            let k = percent_decode(k.trim());
            if k.is_empty() {
                return Err(bad_env(var, value, "comma-separated key=value pairs"));
            }
            Ok((k, percent_decode(v.trim())))
        })
        .collect()
}

fn host_name(env: Env<'_>) -> Option<String> {
    env("HOSTNAME").or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
    })
}

impl Requested {
    /// Applies code, then `env`, then defaults.
    pub(crate) fn resolve(&self, env: Env<'_>) -> Result<Resolved, BuildError> {
        let enabled = match self.enabled {
            Some(e) => e,
            None => match env("OTEL_SDK_DISABLED") {
                Some(v) if v.trim().eq_ignore_ascii_case("true") => false,
                Some(v) if v.trim().eq_ignore_ascii_case("false") => true,
                Some(v) => return Err(bad_env("OTEL_SDK_DISABLED", &v, "true or false")),
                None => true,
            },
        };
        if let Some((var, v)) = metrics_or_generic(env, "PROTOCOL")
            && v.trim() != "grpc"
        {
            return Err(bad_env(&var, &v, "grpc (vla-sdk exports OTLP over gRPC)"));
        }
        let endpoint = match &self.endpoint {
            Some(e) => e.clone(),
            None => env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
                .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"))
                .unwrap_or_else(|| DEFAULT_GRPC_ENDPOINT.to_owned()),
        };
        check_endpoint(&endpoint)?;
        let mut headers = BTreeMap::new();
        if let Some((var, v)) = metrics_or_generic(env, "HEADERS") {
            for (k, v) in key_values(&var, &v)? {
                headers.insert(k.to_ascii_lowercase(), v);
            }
        }
        for (k, v) in &self.headers {
            headers.insert(k.to_ascii_lowercase(), v.clone());
        }
        for name in headers.keys() {
            check_header_name(name)?;
        }
        let gzip = match self.gzip {
            Some(g) => g,
            None => match metrics_or_generic(env, "COMPRESSION") {
                None => false,
                Some((var, v)) => match v.trim() {
                    "gzip" => true,
                    "none" => false,
                    _ => return Err(bad_env(&var, &v, "gzip or none")),
                },
            },
        };
        let timeout = match self.timeout {
            Some(t) => t,
            None => match metrics_or_generic(env, "TIMEOUT") {
                Some((var, v)) => millis(&var, &v)?,
                None => DEFAULT_TIMEOUT,
            },
        };
        let interval = match self.interval {
            Some(i) => i,
            None => match env("OTEL_METRIC_EXPORT_INTERVAL") {
                Some(v) => millis("OTEL_METRIC_EXPORT_INTERVAL", &v)?,
                None => DEFAULT_INTERVAL,
            },
        };
        if interval.is_zero() {
            return Err(BuildError::Setting {
                field: "export_interval",
                problem: "must be above zero".into(),
            });
        }
        let temporality = match self.temporality {
            Some(t) => t,
            None => {
                let var = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE";
                match env(var) {
                    None => Temporality::Cumulative,
                    Some(v) if v.trim().eq_ignore_ascii_case("cumulative") => {
                        Temporality::Cumulative
                    }
                    Some(v) if v.trim().eq_ignore_ascii_case("delta") => Temporality::Delta,
                    Some(v) => return Err(bad_env(var, &v, "cumulative or delta")),
                }
            }
        };
        let tls = resolve_tls(&self.tls, &endpoint, env)?;
        // Resource: detected defaults < OTEL_RESOURCE_ATTRIBUTES < OTEL_SERVICE_NAME < code.
        let mut resource = BTreeMap::new();
        resource.insert("service.name".to_owned(), DEFAULT_SERVICE_NAME.to_owned());
        if let Some(host) = host_name(env) {
            resource.insert("host.name".to_owned(), host.clone());
            resource.insert(
                "service.instance.id".to_owned(),
                format!("{host}-{}", std::process::id()),
            );
        }
        if let Some(v) = env("OTEL_RESOURCE_ATTRIBUTES") {
            resource.extend(key_values("OTEL_RESOURCE_ATTRIBUTES", &v)?);
        }
        if let Some(v) = env("OTEL_SERVICE_NAME") {
            resource.insert("service.name".to_owned(), v);
        }
        resource.extend(self.resource.iter().cloned());
        Ok(Resolved {
            enabled,
            endpoint,
            headers,
            gzip,
            timeout,
            interval,
            temporality,
            resource,
            tls,
        })
    }
}

fn read_pem(field: &'static str, path: &PathBuf) -> Result<Vec<u8>, BuildError> {
    std::fs::read(path).map_err(|e| BuildError::Setting {
        field,
        problem: format!("cannot read {}: {e}", path.display()),
    })
}

/// TLS for `https://` endpoints: code's files, else the environment's; files without https
/// (or https without the `tls` feature) are refused rather than ignored.
fn resolve_tls(
    code: &TlsFiles,
    endpoint: &str,
    env: Env<'_>,
) -> Result<Option<TlsPem>, BuildError> {
    let file = |set: &Option<PathBuf>, suffix: &str| {
        set.clone()
            .or_else(|| metrics_or_generic(env, suffix).map(|(_, v)| PathBuf::from(v)))
    };
    let files = TlsFiles {
        ca: file(&code.ca, "CERTIFICATE"),
        client_cert: file(&code.client_cert, "CLIENT_CERTIFICATE"),
        client_key: file(&code.client_key, "CLIENT_KEY"),
        domain: code.domain.clone(),
    };
    let https = endpoint.starts_with("https://");
    if !https {
        // Files set in code for a plain endpoint are a mistake; the environment's may serve
        // other signals, so they are left alone.
        if !code.is_empty() {
            return Err(BuildError::Setting {
                field: "tls",
                problem: format!("TLS files are set but the endpoint {endpoint:?} is not https://"),
            });
        }
        return Ok(None);
    }
    if !cfg!(feature = "tls") {
        return Err(BuildError::Setting {
            field: "endpoint",
            problem: format!(
                "{endpoint:?} needs TLS: build vla-sdk with its `tls` feature, or send plain \
                 OTLP to a collector on the same host"
            ),
        });
    }
    let identity = match (&files.client_cert, &files.client_key) {
        (Some(cert), Some(key)) => Some((
            read_pem("tls.client_certificate", cert)?,
            read_pem("tls.client_key", key)?,
        )),
        (None, None) => None,
        _ => {
            return Err(BuildError::Setting {
                field: "tls",
                problem: "a client certificate needs its key, and a key its certificate".into(),
            });
        }
    };
    Ok(Some(TlsPem {
        ca: files
            .ca
            .as_ref()
            .map(|p| read_pem("tls.ca", p))
            .transpose()?,
        identity,
        domain: files.domain,
    }))
}

fn check_endpoint(endpoint: &str) -> Result<(), BuildError> {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') => {}
        _ => {
            return Err(BuildError::Setting {
                field: "endpoint",
                problem: format!("{endpoint:?} is not an http:// or https:// URL with a host"),
            });
        }
    }
    Ok(())
}

fn check_header_name(name: &str) -> Result<(), BuildError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(BuildError::Setting {
            field: "headers",
            problem: format!("{name:?} is not a valid header name"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_without_code_or_environment() {
        let r = Requested::default()
            .resolve(&env_of(&[("HOSTNAME", "h1")]))
            .unwrap();
        assert!(r.enabled);
        assert_eq!(r.endpoint, DEFAULT_GRPC_ENDPOINT);
        assert!(r.headers.is_empty());
        assert!(!r.gzip);
        assert_eq!(r.timeout, DEFAULT_TIMEOUT);
        assert_eq!(r.interval, DEFAULT_INTERVAL);
        assert_eq!(r.temporality, Temporality::Cumulative);
        assert_eq!(r.resource["service.name"], "vla-api");
        assert_eq!(r.resource["host.name"], "h1");
        assert_eq!(
            r.resource["service.instance.id"],
            format!("h1-{}", std::process::id())
        );
    }

    #[test]
    fn environment_fills_what_code_left_unset() {
        let env = env_of(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4317"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://metrics:4317"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-api-key=s%3Dcret, tenant=acme",
            ),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "1500"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "3000"),
            ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "Delta"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=from-attrs,deployment.environment=prod,host.name=h9",
            ),
            ("OTEL_SERVICE_NAME", "from-service-name"),
        ]);
        let r = Requested::default().resolve(&env).unwrap();
        assert_eq!(r.endpoint, "http://metrics:4317", "signal-specific first");
        assert_eq!(r.headers["x-api-key"], "s=cret", "percent-decoded");
        assert_eq!(r.headers["tenant"], "acme");
        assert!(r.gzip);
        assert_eq!(
            r.timeout,
            Duration::from_millis(1500),
            "signal-specific first"
        );
        assert_eq!(r.interval, Duration::from_secs(3));
        assert_eq!(r.temporality, Temporality::Delta);
        assert_eq!(r.resource["service.name"], "from-service-name");
        assert_eq!(r.resource["deployment.environment"], "prod");
        assert_eq!(r.resource["host.name"], "h9");
    }

    #[test]
    fn code_wins_over_environment() {
        let env = env_of(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4317"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-api-key=from-env,tenant=acme",
            ),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "3000"),
            ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta"),
            ("OTEL_SERVICE_NAME", "env-name"),
            ("OTEL_SDK_DISABLED", "true"),
        ]);
        let code = Requested {
            endpoint: Some("http://code:4317".into()),
            headers: vec![("X-API-Key".into(), "from-code".into())],
            gzip: Some(false),
            timeout: Some(Duration::from_millis(700)),
            interval: Some(Duration::from_secs(1)),
            temporality: Some(Temporality::Cumulative),
            resource: vec![("service.name".into(), "code-name".into())],
            enabled: Some(true),
            tls: TlsFiles::default(),
        };
        let r = code.resolve(&env).unwrap();
        assert!(r.enabled);
        assert_eq!(r.endpoint, "http://code:4317");
        assert_eq!(r.headers["x-api-key"], "from-code");
        assert_eq!(r.headers["tenant"], "acme", "other env headers are kept");
        assert!(!r.gzip);
        assert_eq!(r.timeout, Duration::from_millis(700));
        assert_eq!(r.interval, Duration::from_secs(1));
        assert_eq!(r.temporality, Temporality::Cumulative);
        assert_eq!(r.resource["service.name"], "code-name");
    }

    #[test]
    fn bad_values_name_their_variable_or_field() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "5s")],
                "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT=\"5s\": expected a whole number of milliseconds",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
                "OTEL_EXPORTER_OTLP_PROTOCOL=\"http/json\": expected grpc (vla-sdk exports OTLP over gRPC)",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")],
                "OTEL_EXPORTER_OTLP_COMPRESSION=\"zstd\": expected gzip or none",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_HEADERS", "novalue")],
                "OTEL_EXPORTER_OTLP_HEADERS=\"novalue\": expected comma-separated key=value pairs",
            ),
            (
                &[("OTEL_SDK_DISABLED", "yes")],
                "OTEL_SDK_DISABLED=\"yes\": expected true or false",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")],
                "endpoint: \"collector:4317\" is not an http:// or https:// URL with a host",
            ),
            (
                &[("OTEL_METRIC_EXPORT_INTERVAL", "0")],
                "export_interval: must be above zero",
            ),
        ];
        for (pairs, want) in cases {
            let err = Requested::default().resolve(&env_of(pairs)).unwrap_err();
            assert_eq!(err.to_string(), *want);
        }
        let code = Requested {
            headers: vec![("bad header".into(), "v".into())],
            ..Requested::default()
        };
        assert_eq!(
            code.resolve(&env_of(&[])).unwrap_err().to_string(),
            "headers: \"bad header\" is not a valid header name"
        );
    }

    #[test]
    fn tls_files_need_an_https_endpoint_and_the_tls_feature() {
        let code = Requested {
            tls: TlsFiles {
                ca: Some("/nonexistent/ca.pem".into()),
                ..TlsFiles::default()
            },
            ..Requested::default()
        };
        assert_eq!(
            code.resolve(&env_of(&[])).unwrap_err().to_string(),
            "tls: TLS files are set but the endpoint \"http://localhost:4317\" is not https://"
        );
        let https = Requested {
            endpoint: Some("https://collector:4317".into()),
            ..code
        };
        let err = https.resolve(&env_of(&[])).unwrap_err().to_string();
        if cfg!(feature = "tls") {
            assert!(
                err.starts_with("tls.ca: cannot read /nonexistent/ca.pem: "),
                "{err}"
            );
        } else {
            assert_eq!(
                err,
                "endpoint: \"https://collector:4317\" needs TLS: build vla-sdk with its `tls` \
                 feature, or send plain OTLP to a collector on the same host"
            );
        }
        // The environment's certificate variables are left alone for plain endpoints.
        let r = Requested::default()
            .resolve(&env_of(&[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/x.pem")]))
            .unwrap();
        assert_eq!(r.tls, None);
    }

    #[test]
    fn sdk_disabled_from_environment() {
        let r = Requested::default()
            .resolve(&env_of(&[("OTEL_SDK_DISABLED", "TRUE")]))
            .unwrap();
        assert!(!r.enabled);
    }
}
