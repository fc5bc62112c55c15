//! Request extractors whose failures are [`ApiError`]s with precise messages: JSON bodies (with
//! the path of the offending field) and bearer tokens.

use super::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use bytes::BytesMut;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use std::time::Duration;
use tabbify_wire::ErrorCode;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// A JSON body of type `T`. Unlike `axum::Json` it does not insist on a content type (so
/// `curl -d` works), and a bad body is a 400 naming the field and the reason.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// How much of an oversized body is read and thrown away before answering 413. Answering
/// while the client is still sending makes the kernel reset the connection, and the client never
/// sees the answer; past this size (or [`DRAIN_TIMEOUT`]) we accept that and just close.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
        format!("request body is larger than the limit of {BODY_LIMIT} bytes (1 MiB)"),
    )
}

/// Reads the body up to [`BODY_LIMIT`]; a larger one is drained (bounded) and refused with 413.
async fn read_body(req: Request) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > DRAIN_LIMIT) {
        return Err(too_large());
    }
    let mut stream = req.into_body().into_data_stream();
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(BODY_LIMIT));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        if buf.len() + chunk.len() > BODY_LIMIT {
            let mut seen = buf.len() + chunk.len();
            let drain = async {
                while let Some(Ok(c)) = stream.next().await {
                    seen += c.len();
                    if seen > DRAIN_LIMIT {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// A raw body of at most [`BODY_LIMIT`] bytes (413 beyond), for handlers that check the caller
/// before they parse, so an unauthorised client learns nothing from the validation.
pub struct LimitedBody(pub Bytes);

impl<S> FromRequest<S> for LimitedBody
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        read_body(req).await.map(LimitedBody)
    }
}

/// The revision a resuming stream starts after: `Last-Event-ID` (what a reconnecting
/// EventSource sends with its original URL, so it is newer) or else the `since` query value.
pub fn resume_revision(
    headers: &HeaderMap,
    since: Option<String>,
) -> Result<Option<u64>, ApiError> {
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("?").to_string());
    match last_event_id.or(since) {
        None => Ok(None),
        Some(text) => text.trim().parse::<u64>().map(Some).map_err(|_| {
            ApiError::bad_request(format!(
                "since / Last-Event-ID must be a revision number (a non-negative integer), got {text:?}"
            ))
        }),
    }
}

/// Parses `bytes` as one JSON value of type `T`, naming the failing field on error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "request body is empty; a JSON object is required",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            ApiError::bad_request(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::bad_request(format!("invalid JSON body at `{path}`: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    Ok(value)
}

/// The value of `Authorization: Bearer <value>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bearer {
    Absent,
    /// The header is there but is not a bearer credential.
    NotBearer,
    Value(String),
}

pub fn bearer(headers: &HeaderMap) -> Bearer {
    let Some(raw) = headers.get(header::AUTHORIZATION) else {
        return Bearer::Absent;
    };
    let Ok(text) = raw.to_str() else {
        return Bearer::NotBearer;
    };
    let mut parts = text.trim().splitn(2, ' ');
    match (parts.next(), parts.next()) {
        (Some(scheme), Some(value))
            if scheme.eq_ignore_ascii_case("bearer") && !value.trim().is_empty() =>
        {
            Bearer::Value(value.trim().to_string())
        }
        _ => Bearer::NotBearer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use tabbify_wire::mesh::RegisterRequest;

    #[test]
    fn json_errors_name_the_field() {
        let short_key = r#"{"public_key":"AAAA","display_name":"x","version":"1"}"#;
        let err = parse_json::<RegisterRequest>(short_key.as_bytes()).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(
            err.body.message.contains("`public_key`"),
            "{}",
            err.body.message
        );
        assert!(
            err.body.message.contains("32 bytes"),
            "{}",
            err.body.message
        );

        let bad_tag = r#"{"public_key":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=","display_name":"x","version":"1","tags":["wasm","Bad Tag"]}"#;
        let err = parse_json::<RegisterRequest>(bad_tag.as_bytes()).unwrap_err();
        assert!(
            err.body.message.contains("`tags[1]`"),
            "{}",
            err.body.message
        );
        assert!(
            err.body.message.contains("invalid syntax"),
            "{}",
            err.body.message
        );

        let err = parse_json::<RegisterRequest>(b"{\"public_key\": ").unwrap_err();
        assert!(err.body.message.contains("EOF"), "{}", err.body.message);
        let err = parse_json::<RegisterRequest>(b"  ").unwrap_err();
        assert!(err.body.message.contains("empty"), "{}", err.body.message);
        let err = parse_json::<serde_json::Value>(b"{} {}").unwrap_err();
        assert!(
            err.body.message.contains("trailing"),
            "{}",
            err.body.message
        );
    }

    #[tokio::test]
    async fn body_limit_is_exact_and_oversized_bodies_are_drained() {
        let at_limit = vec![b' '; BODY_LIMIT];
        let read = read_body(Request::new(axum::body::Body::from(at_limit)))
            .await
            .unwrap();
        assert_eq!(read.len(), BODY_LIMIT);
        // Streamed in pieces without a Content-Length, one byte over.
        let chunks = vec![
            Ok::<_, std::io::Error>(vec![b' '; BODY_LIMIT]),
            Ok(vec![b' '; 1]),
        ];
        let body = axum::body::Body::from_stream(futures_util::stream::iter(chunks));
        let err = read_body(Request::new(body)).await.unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(err.body.error, ErrorCode::PayloadTooLarge);
        // A declared size beyond what we would drain is refused without reading.
        let mut req = Request::new(axum::body::Body::empty());
        req.headers_mut().insert(
            header::CONTENT_LENGTH,
            HeaderValue::from_str(&(DRAIN_LIMIT + 1).to_string()).unwrap(),
        );
        assert_eq!(
            read_body(req).await.unwrap_err().status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    #[test]
    fn bearer_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), Bearer::Absent);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tbfj_a_b"),
        );
        assert_eq!(bearer(&h), Bearer::Value("tbfj_a_b".into()));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  x "),
        );
        assert_eq!(bearer(&h), Bearer::Value("x".into()));
        for bad in ["Basic abc", "Bearer", "Bearer   ", "tbfj_a_b"] {
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(bad));
            assert_eq!(bearer(&h), Bearer::NotBearer, "{bad}");
        }
    }
}
