//! The HTTP side: one POST per request body, and the mapping of responses to export outcomes
//! (the only place where HTTP statuses become `ExportError`s).

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use vla_pipeline::ExportError;

use super::config::Config;
use crate::ExporterBuildError;

/// `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("vla-collector/", env!("CARGO_PKG_VERSION"));

/// How much of an error response body goes into the log message.
const BODY_EXCERPT: usize = 1024;

/// The outcome class of one request, for the `status` label of the request counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusClass {
    Success,
    ClientError,
    TooManyRequests,
    ServerError,
    Timeout,
    Transport,
}

impl StatusClass {
    pub const ALL: [StatusClass; 6] = [
        StatusClass::Success,
        StatusClass::ClientError,
        StatusClass::TooManyRequests,
        StatusClass::ServerError,
        StatusClass::Timeout,
        StatusClass::Transport,
    ];

    pub fn label(self) -> &'static str {
        match self {
            StatusClass::Success => "2xx",
            StatusClass::ClientError => "4xx",
            StatusClass::TooManyRequests => "429",
            StatusClass::ServerError => "5xx",
            StatusClass::Timeout => "timeout",
            StatusClass::Transport => "transport_error",
        }
    }
}

/// A remote-write HTTP client with its fixed headers.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    url: String,
    /// The URL as logs show it: no user info, no query string (either may hold a secret).
    shown_url: String,
    headers: HeaderMap,
}

impl Client {
    pub fn new(config: &Config) -> Result<Self, ExporterBuildError> {
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) else {
                continue; // refused by `validate`
            };
            headers.insert(name, value);
        }
        // Inserted last so that user headers can never override them.
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("snappy"));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        headers.insert(
            HeaderName::from_static("x-prometheus-remote-write-version"),
            HeaderValue::from_static("0.1.0"),
        );
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .no_proxy()
            // A redirect would turn the POST into a GET and lose the body.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(ExporterBuildError::HttpClient)?;
        Ok(Self {
            http,
            url: config.endpoint.clone(),
            shown_url: shown_url(&config.endpoint),
            headers,
        })
    }

    /// POSTs one snappy-compressed body; `Ok` on 2xx.
    pub async fn send(&self, body: bytes::Bytes) -> (StatusClass, Result<(), ExportError>) {
        let response = self
            .http
            .post(&self.url)
            .headers(self.headers.clone())
            .body(body)
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                let timeout = e.is_timeout();
                let message = format!(
                    "remote write request to {} failed: {}",
                    self.shown_url,
                    vla_pipeline::error_chain(&e.without_url())
                );
                return if timeout {
                    (
                        StatusClass::Timeout,
                        Err(ExportError::Retryable {
                            reason: "timeout",
                            message,
                            retry_after: None,
                        }),
                    )
                } else {
                    (
                        StatusClass::Transport,
                        Err(ExportError::Retryable {
                            reason: "transport_error",
                            message,
                            retry_after: None,
                        }),
                    )
                };
            }
        };
        let status = response.status();
        if status.is_success() {
            // The spec says to ignore the body; draining it lets the connection be reused.
            let _ = response.bytes().await;
            return (StatusClass::Success, Ok(()));
        }
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let body = read_capped(response, MAX_ERROR_BODY).await;
        let excerpt = excerpt(&body);
        let message = format!("remote write endpoint answered {status}: {excerpt}");
        classify(status, retry_after, message)
    }
}

/// How much of an error response body is read (the log shows an excerpt of it anyway).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Reads at most `cap` bytes of a response body.
async fn read_capped(mut response: reqwest::Response, cap: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < cap {
        match response.chunk().await {
            Ok(Some(chunk)) => out.extend_from_slice(&chunk[..chunk.len().min(cap - out.len())]),
            _ => break,
        }
    }
    out
}

/// `scheme://host[:port]/path` of an endpoint: what logs may show of it.
pub(crate) fn shown_url(endpoint: &str) -> String {
    if !endpoint.contains(['@', '?']) {
        return endpoint.to_owned();
    }
    match endpoint.parse::<http::Uri>() {
        Ok(uri) => {
            format!(
                "{}://{}{}",
                uri.scheme_str().unwrap_or("http"),
                uri.host().unwrap_or_default(),
                uri.port().map(|p| format!(":{p}")).unwrap_or_default()
            ) + uri.path()
        }
        Err(_) => "<invalid endpoint>".to_owned(),
    }
}

/// Maps a non-2xx status to its outcome.
pub(crate) fn classify(
    status: StatusCode,
    retry_after: Option<Duration>,
    message: String,
) -> (StatusClass, Result<(), ExportError>) {
    if status == StatusCode::TOO_MANY_REQUESTS {
        return (
            StatusClass::TooManyRequests,
            Err(ExportError::Retryable {
                reason: "http_429",
                message,
                retry_after,
            }),
        );
    }
    // Prometheus without `--enable-feature=native-histograms` answers 500 to a request with
    // histograms: retrying cannot help and would hold up the shard's other samples.
    if status == StatusCode::INTERNAL_SERVER_ERROR
        && message.contains("native histograms are disabled")
    {
        return (
            StatusClass::ServerError,
            Err(ExportError::Permanent {
                reason: "native_histograms_disabled",
                message: format!(
                    "{message} (start Prometheus with --enable-feature=native-histograms, or set \
                     send_native_histograms: false to send classic buckets)"
                ),
            }),
        );
    }
    if status.is_server_error() {
        return (
            StatusClass::ServerError,
            Err(ExportError::Retryable {
                reason: "http_5xx",
                message,
                retry_after,
            }),
        );
    }
    let reason = match status.as_u16() {
        400 => "http_400",
        401 => "http_401",
        403 => "http_403",
        404 => "http_404",
        413 => "http_413",
        415 => "http_415",
        _ => "http_4xx",
    };
    (
        StatusClass::ClientError,
        Err(ExportError::Permanent { reason, message }),
    )
}

/// The first ~1 KiB of a response body, as text, cut on a character boundary.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.len() <= BODY_EXCERPT {
        return text.to_owned();
    }
    let mut end = BODY_EXCERPT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], body.len())
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date (IMF-fixdate), relative to `now`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses an IMF-fixdate such as `Sun, 06 Nov 1994 08:49:37 GMT`.
fn parse_http_date(s: &str) -> Option<SystemTime> {
    let rest = s.split_once(", ")?.1;
    let mut parts = rest.split(' ');
    let day: u32 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':');
    let h: u64 = hms.next()?.parse().ok()?;
    let m: u64 = hms.next()?.parse().ok()?;
    let sec: u64 = hms.next()?.parse().ok()?;
    if parts.next()? != "GMT" || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(year, month, i64::from(day));
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + m * 60 + sec;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // 1994-11-06 08:49:37
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 2026 00:00:00 GMT", SystemTime::UNIX_EPOCH),
            Some(Duration::from_secs(1_767_225_600))
        );
        for bad in [
            "",
            "-1",
            "soon",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "06 Nov 1994",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad}");
        }
    }

    #[test]
    fn statuses_map_to_outcomes() {
        let cases = [
            (503, StatusClass::ServerError, Some("http_5xx"), None),
            (500, StatusClass::ServerError, Some("http_5xx"), None),
            (429, StatusClass::TooManyRequests, Some("http_429"), None),
            (400, StatusClass::ClientError, None, Some("http_400")),
            (404, StatusClass::ClientError, None, Some("http_404")),
            (422, StatusClass::ClientError, None, Some("http_4xx")),
        ];
        let (c, r) = classify(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            "remote write endpoint answered 500 Internal Server Error: native histograms are disabled"
                .into(),
        );
        assert_eq!(c, StatusClass::ServerError);
        assert!(
            matches!(r, Err(ExportError::Permanent { reason: "native_histograms_disabled", ref message }) if message.contains("--enable-feature=native-histograms")),
            "{r:?}"
        );
        for (code, class, retry, perm) in cases {
            let (c, r) = classify(StatusCode::from_u16(code).unwrap(), None, "m".into());
            assert_eq!(c, class, "{code}");
            match r {
                Err(ExportError::Retryable { reason, .. }) => assert_eq!(Some(reason), retry),
                Err(ExportError::Permanent { reason, .. }) => assert_eq!(Some(reason), perm),
                Ok(()) => panic!("{code} must fail"),
            }
        }
    }

    #[test]
    fn long_bodies_are_cut() {
        let body = "é".repeat(1000);
        let e = excerpt(body.as_bytes());
        assert!(e.starts_with("éé"));
        assert!(e.ends_with("(2000 bytes)"), "{e}");
        assert!(e.len() < 1100);
    }
}
