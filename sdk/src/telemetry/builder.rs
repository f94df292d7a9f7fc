//! [`TelemetryBuilder`]: the settings of a [`Telemetry`], and the OTLP exporter (with TLS
//! when the `tls` feature is on) built from them.

use std::time::Duration;

use opentelemetry_otlp::{MetricExporter, WithExportConfig, WithTonicConfig};

use super::{DEFAULT_MAX_CUSTOMERS, Telemetry};
use crate::BuildError;
use crate::settings::{self, Env, Requested, Resolved, Temporality};

/// Builds a [`Telemetry`]; see the crate docs for the settings and their environment variables.
#[derive(Debug, Clone)]
pub struct TelemetryBuilder {
    pub(super) requested: Requested,
    pub(super) max_customers: usize,
}

impl Default for TelemetryBuilder {
    fn default() -> Self {
        Self {
            requested: Requested::default(),
            max_customers: DEFAULT_MAX_CUSTOMERS,
        }
    }
}

impl TelemetryBuilder {
    /// The collector's OTLP gRPC endpoint, e.g. `http://127.0.0.1:4317`.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.requested.endpoint = Some(url.into());
        self
    }

    /// A header (gRPC metadata) sent with every export, e.g. an API key. Never logged.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.requested.headers.push((name.into(), value.into()));
        self
    }

    /// Compress exports with gzip.
    pub fn gzip(mut self, on: bool) -> Self {
        self.requested.gzip = Some(on);
        self
    }

    /// How often metrics are exported.
    pub fn export_interval(mut self, every: Duration) -> Self {
        self.requested.interval = Some(every);
        self
    }

    /// How long one export may take.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.requested.timeout = Some(timeout);
        self
    }

    /// Cumulative (default, what Prometheus wants) or delta.
    pub fn temporality(mut self, temporality: Temporality) -> Self {
        self.requested.temporality = Some(temporality);
        self
    }

    /// `service.name` (default `vla-api`).
    pub fn service_name(self, name: impl Into<String>) -> Self {
        self.resource_attribute("service.name", name)
    }

    /// `service.instance.id` (default `<host>-<pid>`).
    pub fn service_instance_id(self, id: impl Into<String>) -> Self {
        self.resource_attribute("service.instance.id", id)
    }

    /// `deployment.environment`, e.g. `prod`.
    pub fn deployment_environment(self, env: impl Into<String>) -> Self {
        self.resource_attribute("deployment.environment", env)
    }

    /// `host.name` (default: the machine's host name).
    pub fn host_name(self, host: impl Into<String>) -> Self {
        self.resource_attribute("host.name", host)
    }

    /// Any other resource attribute.
    pub fn resource_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.requested.resource.push((key.into(), value.into()));
        self
    }

    /// The PEM file of the CA that signs the collector's certificate, for `https://` endpoints
    /// (default: `OTEL_EXPORTER_OTLP_CERTIFICATE`, else the system's roots). Needs the `tls`
    /// feature.
    pub fn tls_ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.requested.tls.ca = Some(path.into());
        self
    }

    /// A client certificate and its key (PEM files) for collectors that require mutual TLS
    /// (default: `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` and `_CLIENT_KEY`).
    pub fn tls_client_identity(
        mut self,
        cert: impl Into<std::path::PathBuf>,
        key: impl Into<std::path::PathBuf>,
    ) -> Self {
        self.requested.tls.client_cert = Some(cert.into());
        self.requested.tls.client_key = Some(key.into());
        self
    }

    /// The name the collector's certificate must carry, when it differs from the endpoint's
    /// host.
    pub fn tls_domain(mut self, name: impl Into<String>) -> Self {
        self.requested.tls.domain = Some(name.into());
        self
    }

    /// Export on or off; off makes every instrument a no-op (as `OTEL_SDK_DISABLED=true` does).
    pub fn enabled(mut self, on: bool) -> Self {
        self.requested.enabled = Some(on);
        self
    }

    /// The most distinct customer ids one process writes; later ones are written as
    /// [`CUSTOMER_OVERFLOW`] (default [`DEFAULT_MAX_CUSTOMERS`]).
    pub fn max_customers(mut self, max: usize) -> Self {
        self.max_customers = max.max(1);
        self
    }

    /// Resolves the settings against the process environment and starts exporting.
    ///
    /// Fails only on settings that cannot work (a malformed endpoint or variable); an absent
    /// collector is not an error: exports fail, are logged rate-limited, and are retried.
    pub fn build(self) -> Result<Telemetry, BuildError> {
        self.build_with_env(&settings::process_env)
    }

    /// [`Self::build`] with `env` in place of the process environment.
    #[doc(hidden)]
    pub fn build_with_env(self, env: Env<'_>) -> Result<Telemetry, BuildError> {
        let resolved = self.requested.resolve(env)?;
        Telemetry::start(resolved, self.max_customers)
    }
}

pub(super) fn otlp_exporter(s: &Resolved) -> Result<MetricExporter, BuildError> {
    let headers = s
        .headers
        .iter()
        .map(|(k, v)| {
            let name = tonic::metadata::MetadataKey::from_bytes(k.as_bytes()).map_err(|_| {
                BuildError::Setting {
                    field: "headers",
                    problem: format!("{k:?} is not a valid gRPC metadata key"),
                }
            })?;
            let value = tonic::metadata::MetadataValue::try_from(v.as_str()).map_err(|_| {
                BuildError::Setting {
                    field: "headers",
                    problem: format!("the value of {k:?} is not valid header text"),
                }
            })?;
            Ok((name, value))
        })
        .collect::<Result<Vec<_>, BuildError>>()?;
    // The interceptor runs after the OTLP exporter's own header handling, so values set in
    // code replace any the exporter read from OTEL_EXPORTER_OTLP_HEADERS itself.
    let interceptor = move |mut req: tonic::Request<()>| {
        for (name, value) in &headers {
            req.metadata_mut().insert(name.clone(), value.clone());
        }
        Ok(req)
    };
    let mut b = MetricExporter::builder()
        .with_tonic()
        .with_endpoint(s.endpoint.clone())
        .with_timeout(s.timeout)
        .with_interceptor(interceptor)
        .with_temporality(match s.temporality {
            Temporality::Cumulative => opentelemetry_sdk::metrics::Temporality::Cumulative,
            Temporality::Delta => opentelemetry_sdk::metrics::Temporality::Delta,
        });
    if s.gzip {
        b = b.with_compression(opentelemetry_otlp::Compression::Gzip);
    }
    #[cfg(feature = "tls")]
    if let Some(tls) = &s.tls {
        b = b.with_tls_config(tls_config(tls));
    }
    b.build().map_err(BuildError::Exporter)
}

#[cfg(feature = "tls")]
fn tls_config(tls: &crate::settings::TlsPem) -> tonic::transport::ClientTlsConfig {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut c = ClientTlsConfig::new();
    c = match &tls.ca {
        Some(ca) => c.ca_certificate(Certificate::from_pem(ca)),
        None => c.with_native_roots(),
    };
    if let Some((cert, key)) = &tls.identity {
        c = c.identity(Identity::from_pem(cert, key));
    }
    if let Some(domain) = &tls.domain {
        c = c.domain_name(domain.clone());
    }
    c
}
