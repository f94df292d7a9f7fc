//! Why one OTLP export request was not accepted, and the one place that turns that into a
//! gRPC status or an HTTP response.
//!
//! Per the OTLP specification, malformed input is not retryable (gRPC `INVALID_ARGUMENT`,
//! HTTP 400), while a full or closing pipeline is (gRPC `UNAVAILABLE`, HTTP 503 with
//! `Retry-After`); nothing here ever answers a 500.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use vla_pipeline::SendError;

use super::http::{BodyFormat, encode_status};

/// Why an export request was refused.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The body could not be decoded (bad protobuf, bad JSON, corrupt compression).
    #[error("malformed {what}: {source}")]
    Malformed {
        /// What failed to decode, e.g. `protobuf body`.
        what: &'static str,
        /// The decoder's complaint.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The `Content-Type` is neither protobuf nor JSON.
    #[error(
        "unsupported Content-Type: send application/x-protobuf or application/json \
         (OTLP/HTTP)"
    )]
    UnsupportedContentType,
    /// The `Content-Encoding` is not one we decode.
    #[error("unsupported Content-Encoding: send gzip, deflate or identity")]
    UnsupportedEncoding,
    /// The body or message (as sent, or after decompression) exceeds the configured limit.
    #[error("request exceeds the limit of {limit} bytes ({setting})")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
        /// The config field that sets it.
        setting: &'static str,
    },
    /// The pipeline refused the data; the client should retry later.
    #[error("{0}")]
    Refused(#[from] SendError),
}

impl RequestError {
    /// A short, fixed reason, for logs (never includes client-controlled text).
    pub fn reason(&self) -> &'static str {
        match self {
            RequestError::Malformed { .. } => "malformed",
            RequestError::UnsupportedContentType => "unsupported_content_type",
            RequestError::UnsupportedEncoding => "unsupported_encoding",
            RequestError::TooLarge { .. } => "too_large",
            RequestError::Refused(SendError::Full) => "pipeline_full",
            RequestError::Refused(SendError::Closed) => "shutting_down",
            RequestError::Refused(SendError::MemoryLimit) => "memory_limit",
            RequestError::Refused(SendError::NotPersisted) => "not_persisted",
        }
    }

    /// Whether this is the client's fault (counted as an invalid request) rather than
    /// backpressure.
    pub fn is_invalid_request(&self) -> bool {
        !matches!(self, RequestError::Refused(_))
    }

    /// The HTTP status of this error.
    pub fn http_status(&self) -> StatusCode {
        match self {
            RequestError::Malformed { .. } | RequestError::UnsupportedEncoding => {
                StatusCode::BAD_REQUEST
            }
            RequestError::UnsupportedContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RequestError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::Refused(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The gRPC code of this error.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            // OTLP clients retry OUT_OF_RANGE and may retry RESOURCE_EXHAUSTED, which would
            // resend an over-size request forever; INVALID_ARGUMENT makes them drop it.
            RequestError::Malformed { .. }
            | RequestError::UnsupportedContentType
            | RequestError::UnsupportedEncoding
            | RequestError::TooLarge { .. } => tonic::Code::InvalidArgument,
            RequestError::Refused(_) => tonic::Code::Unavailable,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            RequestError::Refused(e) => Some(e.retry_after()),
            _ => None,
        }
    }

    /// The HTTP response: the status, a `google.rpc.Status` body in the request's encoding
    /// (plain text when the encoding is unknown), and `Retry-After` for refusals.
    pub fn into_http_response(self, format: Option<BodyFormat>) -> Response {
        let status = self.http_status();
        let message = self.to_string();
        let (content_type, body) = match format {
            Some(f) => (
                f.content_type(),
                encode_status(f, self.grpc_code(), &message),
            ),
            None => ("text/plain; charset=utf-8", message.into_bytes()),
        };
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some(after) = self.retry_after() {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(after.as_secs().max(1)),
            );
        }
        response
    }
}

impl From<RequestError> for tonic::Status {
    fn from(e: RequestError) -> Self {
        tonic::Status::new(e.grpc_code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_mapping_to_both_protocols() {
        let malformed = || RequestError::Malformed {
            what: "protobuf body",
            source: "bad tag".into(),
        };
        let table: Vec<(RequestError, u16, tonic::Code, &str, bool)> = vec![
            (
                malformed(),
                400,
                tonic::Code::InvalidArgument,
                "malformed",
                true,
            ),
            (
                RequestError::UnsupportedContentType,
                415,
                tonic::Code::InvalidArgument,
                "unsupported_content_type",
                true,
            ),
            (
                RequestError::UnsupportedEncoding,
                400,
                tonic::Code::InvalidArgument,
                "unsupported_encoding",
                true,
            ),
            (
                RequestError::TooLarge {
                    limit: 10,
                    setting: "x",
                },
                413,
                tonic::Code::InvalidArgument,
                "too_large",
                true,
            ),
            (
                SendError::Full.into(),
                503,
                tonic::Code::Unavailable,
                "pipeline_full",
                false,
            ),
            (
                SendError::Closed.into(),
                503,
                tonic::Code::Unavailable,
                "shutting_down",
                false,
            ),
            (
                SendError::MemoryLimit.into(),
                503,
                tonic::Code::Unavailable,
                "memory_limit",
                false,
            ),
        ];
        for (e, http, grpc, reason, invalid) in table {
            assert_eq!(e.http_status().as_u16(), http, "{e:?}");
            assert_eq!(e.grpc_code(), grpc, "{e:?}");
            assert_eq!(e.reason(), reason);
            assert_eq!(e.is_invalid_request(), invalid, "{e:?}");
            let message = e.to_string();
            let status = tonic::Status::from(e);
            assert_eq!((status.code(), status.message()), (grpc, message.as_str()));
        }
        assert_eq!(malformed().to_string(), "malformed protobuf body: bad tag");
    }

    #[test]
    fn http_responses_carry_status_body_and_retry_after() {
        let r = RequestError::from(SendError::Closed).into_http_response(Some(BodyFormat::Json));
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let r = RequestError::UnsupportedContentType.into_http_response(None);
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
    }
}
