//! OTLP/HTTP: `POST /v1/metrics` on an axum server.

use std::future::Future;
use std::io::Read;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;

use super::{HttpConfig, Intake, RequestError};

/// The OTLP/HTTP path for metrics.
pub const METRICS_PATH: &str = "/v1/metrics";

const SIZE_SETTING: &str = "max_request_body_size_mib";

/// How an OTLP/HTTP body is encoded, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json` (OTLP/JSON).
    Json,
}

impl BodyFormat {
    /// Reads the `Content-Type` header; `None` when missing or unsupported.
    pub fn from_content_type(value: Option<&HeaderValue>) -> Option<Self> {
        let value = value?.to_str().ok()?;
        let media = value.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case("application/x-protobuf") {
            Some(BodyFormat::Protobuf)
        } else if media.eq_ignore_ascii_case("application/json") {
            Some(BodyFormat::Json)
        } else {
            None
        }
    }

    /// The `Content-Type` of responses in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            BodyFormat::Protobuf => "application/x-protobuf",
            BodyFormat::Json => "application/json",
        }
    }
}

/// `google.rpc.Status` without `details`, enough for OTLP/HTTP error bodies.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// Encodes a `google.rpc.Status` error body in `format`.
pub(super) fn encode_status(format: BodyFormat, code: tonic::Code, message: &str) -> Vec<u8> {
    match format {
        BodyFormat::Protobuf => RpcStatus {
            code: code as i32,
            message: message.to_owned(),
        }
        .encode_to_vec(),
        BodyFormat::Json => serde_json::json!({ "code": code as i32, "message": message })
            .to_string()
            .into_bytes(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    Deflate,
    Zstd,
}

impl Encoding {
    fn from_header(value: Option<&HeaderValue>) -> Result<Self, RequestError> {
        let Some(value) = value else {
            return Ok(Encoding::Identity);
        };
        let value = value
            .to_str()
            .map_err(|_| RequestError::UnsupportedEncoding)?
            .trim();
        if value.is_empty() || value.eq_ignore_ascii_case("identity") {
            Ok(Encoding::Identity)
        } else if value.eq_ignore_ascii_case("gzip") || value.eq_ignore_ascii_case("x-gzip") {
            Ok(Encoding::Gzip)
        } else if value.eq_ignore_ascii_case("deflate") {
            Ok(Encoding::Deflate)
        } else if value.eq_ignore_ascii_case("zstd") {
            Ok(Encoding::Zstd)
        } else {
            Err(RequestError::UnsupportedEncoding)
        }
    }
}

struct HttpState {
    intake: Intake,
    max_body: usize,
}

/// The OTLP/HTTP routes; `405` for other methods on `/v1/metrics`, `404` elsewhere.
pub(super) fn router(intake: Intake, config: &HttpConfig) -> Router {
    let state = Arc::new(HttpState {
        intake,
        max_body: config.max_request_body_size_bytes(),
    });
    Router::new()
        .route(METRICS_PATH, post(export))
        .with_state(state)
}

/// Serves HTTP on `listener` until `shutdown` resolves, then drains in-flight requests.
pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    config: &HttpConfig,
    intake: Intake,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(intake, config))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn export(State(state): State<Arc<HttpState>>, headers: HeaderMap, body: Body) -> Response {
    let format = BodyFormat::from_content_type(headers.get(header::CONTENT_TYPE));
    match handle(&state, format, &headers, body).await {
        Ok(format) => success(format),
        Err(e) => {
            state.intake.note_unless_refused(&e);
            e.into_http_response(format)
        }
    }
}

async fn handle(
    state: &HttpState,
    format: Option<BodyFormat>,
    headers: &HeaderMap,
    body: Body,
) -> Result<BodyFormat, RequestError> {
    let format = format.ok_or(RequestError::UnsupportedContentType)?;
    let encoding = Encoding::from_header(headers.get(header::CONTENT_ENCODING))?;
    // Over a memory limit: refuse before the body is read or decoded.
    if let Some(refused) = state.intake.refusing() {
        return Err(refused);
    }
    let limit = state.max_body;
    let too_large = RequestError::TooLarge {
        limit,
        setting: SIZE_SETTING,
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large);
    }
    let raw = read_body(body, limit).await?;
    let plain = decompress(raw, encoding, limit)?;
    match format {
        BodyFormat::Protobuf => {
            // A body read whole may be a slice of the connection's read buffer: the batch
            // keeps a copy of its own.
            let owned = if encoding == Encoding::Identity {
                Bytes::copy_from_slice(&plain)
            } else {
                plain
            };
            state.intake.export_encoded(owned, "protobuf body").await?;
        }
        BodyFormat::Json => {
            let request: ExportMetricsServiceRequest =
                serde_json::from_slice(&plain).map_err(|source| RequestError::Malformed {
                    what: "JSON body",
                    source: Box::new(source),
                })?;
            drop(plain);
            state.intake.export(request.resource_metrics).await?;
        }
    }
    Ok(format)
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, RequestError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(RequestError::TooLarge {
            limit,
            setting: SIZE_SETTING,
        }),
        Err(source) => Err(RequestError::Malformed {
            what: "request body (read failed)",
            source,
        }),
    }
}

fn decompress(raw: Bytes, encoding: Encoding, limit: usize) -> Result<Bytes, RequestError> {
    let reader: Box<dyn Read> = match encoding {
        Encoding::Identity => return Ok(raw),
        Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&raw[..])),
        Encoding::Deflate => Box::new(flate2::read::ZlibDecoder::new(&raw[..])),
        Encoding::Zstd => return zstd(&raw, limit),
    };
    // Read one byte past the limit to tell "exactly the limit" from "over it" without ever
    // holding more than that in memory (a gzip bomb stops here).
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|source| RequestError::Malformed {
            what: "compressed body",
            source: Box::new(source),
        })?;
    if out.len() > limit {
        return Err(RequestError::TooLarge {
            limit,
            setting: SIZE_SETTING,
        });
    }
    Ok(Bytes::from(out))
}

/// A zstd body (one frame or several concatenated), held to `limit` bytes like the others.
fn zstd(raw: &[u8], limit: usize) -> Result<Bytes, RequestError> {
    let malformed = |source: Box<dyn std::error::Error + Send + Sync>| RequestError::Malformed {
        what: "compressed body",
        source,
    };
    let mut input = raw;
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
    while !input.is_empty() {
        let frame = ruzstd::decoding::StreamingDecoder::new(&mut input)
            .map_err(|e| malformed(Box::new(e)))?;
        let room = (limit + 1).saturating_sub(out.len());
        frame
            .take(room as u64)
            .read_to_end(&mut out)
            .map_err(|e| malformed(Box::new(e)))?;
        if out.len() > limit {
            return Err(RequestError::TooLarge {
                limit,
                setting: SIZE_SETTING,
            });
        }
    }
    Ok(Bytes::from(out))
}

/// `200` with an empty `ExportMetricsServiceResponse` (no partial success) in `format`.
fn success(format: BodyFormat) -> Response {
    let body: &'static [u8] = match format {
        // The protobuf encoding of a message with no fields set is empty.
        BodyFormat::Protobuf => b"",
        BodyFormat::Json => b"{}",
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, format.content_type())],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn content_type_and_encoding_parsing() {
        let ct =
            |v: &'static str| BodyFormat::from_content_type(Some(&HeaderValue::from_static(v)));
        assert_eq!(ct("application/x-protobuf"), Some(BodyFormat::Protobuf));
        assert_eq!(
            ct("application/json; charset=utf-8"),
            Some(BodyFormat::Json)
        );
        assert_eq!(ct("APPLICATION/JSON"), Some(BodyFormat::Json));
        assert_eq!(ct("application/protobuf"), None);
        assert_eq!(ct("text/plain"), None);
        assert_eq!(BodyFormat::from_content_type(None), None);
        let enc = |v: &'static str| Encoding::from_header(Some(&HeaderValue::from_static(v))).ok();
        assert_eq!(Encoding::from_header(None).ok(), Some(Encoding::Identity));
        assert_eq!(enc("identity"), Some(Encoding::Identity));
        assert_eq!(enc("GZIP"), Some(Encoding::Gzip));
        assert_eq!(enc("deflate"), Some(Encoding::Deflate));
        assert_eq!(enc("zstd"), Some(Encoding::Zstd));
        assert_eq!(enc("br"), None);
        assert_eq!(enc("gzip, br"), None);
    }

    #[test]
    fn zstd_is_decompressed_capped_and_concatenated_frames_are_joined() {
        use ruzstd::encoding::{CompressionLevel, compress_to_vec};
        let data = vec![7u8; 1000];
        let z = Bytes::from(compress_to_vec(&data[..], CompressionLevel::Fastest));
        assert_eq!(
            decompress(z.clone(), Encoding::Zstd, 1000).unwrap(),
            &data[..]
        );
        assert!(matches!(
            decompress(z.clone(), Encoding::Zstd, 999),
            Err(RequestError::TooLarge { limit: 999, .. })
        ));
        let two: Vec<u8> = [
            &z[..],
            &compress_to_vec(&b"tail"[..], CompressionLevel::Fastest),
        ]
        .concat();
        let out = decompress(Bytes::from(two), Encoding::Zstd, 2000).unwrap();
        assert_eq!(out.len(), 1004);
        assert_eq!(&out[1000..], b"tail");
        assert!(matches!(
            decompress(Bytes::from_static(b"not zstd"), Encoding::Zstd, 10),
            Err(RequestError::Malformed { .. })
        ));
    }

    #[test]
    fn decompression_is_capped_at_the_limit() {
        let data = vec![7u8; 1000];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = Bytes::from(gz.finish().unwrap());
        assert_eq!(
            decompress(gz.clone(), Encoding::Gzip, 1000).unwrap(),
            &data[..]
        );
        assert!(matches!(
            decompress(gz, Encoding::Gzip, 999),
            Err(RequestError::TooLarge { limit: 999, .. })
        ));
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&data).unwrap();
        let z = Bytes::from(z.finish().unwrap());
        assert_eq!(decompress(z, Encoding::Deflate, 4096).unwrap().len(), 1000);
        assert!(matches!(
            decompress(Bytes::from_static(b"nope"), Encoding::Gzip, 10),
            Err(RequestError::Malformed {
                what: "compressed body",
                ..
            })
        ));
    }

    #[test]
    fn error_bodies_are_google_rpc_status() {
        let pb = encode_status(BodyFormat::Protobuf, tonic::Code::InvalidArgument, "bad");
        assert_eq!(
            RpcStatus::decode(&pb[..]).unwrap(),
            RpcStatus {
                code: 3,
                message: "bad".into()
            }
        );
        let json = encode_status(BodyFormat::Json, tonic::Code::Unavailable, "full \"x\"");
        assert_eq!(
            std::str::from_utf8(&json).unwrap(),
            r#"{"code":14,"message":"full \"x\""}"#
        );
    }
}
