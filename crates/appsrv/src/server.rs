//! The HTTP face of the store: `PUT`, `GET` (with ranges) and `HEAD` on
//! `/v1/blobs/sha256:<hex>`, plus `/health` and `/metrics`. Uploads need an operator token with
//! the `artifacts:write` scope, signed by the coordinator's key the server was started with
//! (checked offline, see `tabbify-auth`); downloads are open (a digest names exactly one
//! content).

use crate::store::{BlobStore, PutOutcome, StoreError};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;
use tabbify_wire::app::ArtifactDigest;
use tabbify_wire::{ErrorBody, ErrorCode};
use tower::ServiceExt;
use tower_http::services::ServeFile;

pub struct AppsrvState {
    pub store: BlobStore,
    /// The key upload tokens are checked with; `None` disables uploads.
    pub token_key: Option<tabbify_auth::VerifyingKey>,
    pub metrics: crate::metrics::Metrics,
}

pub fn router(state: Arc<AppsrvState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route(
            "/v1/blobs/{digest}",
            get(download).head(download).put(upload),
        )
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// A refused request: status plus the JSON error body.
struct ApiError(StatusCode, ErrorBody);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

fn error(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Response {
    ApiError(status, ErrorBody::new(code, message)).into_response()
}

fn parse_digest(text: &str) -> Result<ArtifactDigest, ApiError> {
    ArtifactDigest::parse(text).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            ErrorBody::new(ErrorCode::BadRequest, e.to_string()),
        )
    })
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok", "version": tabbify_wire::SOFTWARE_VERSION}))
}

async fn metrics(State(st): State<Arc<AppsrvState>>) -> Response {
    let text = st.metrics.render(&st.store.blob_dir());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn download(
    State(st): State<Arc<AppsrvState>>,
    Path(digest): Path<String>,
    req: Request,
) -> Response {
    let digest = match parse_digest(&digest) {
        Ok(d) => d,
        Err(r) => return r.into_response(),
    };
    let path = st.store.path_of(&digest);
    if !path.is_file() {
        st.metrics.download("not_found");
        return error(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("no blob {digest}"),
        );
    }
    st.metrics.download("served");
    match ServeFile::new(path).oneshot(req).await {
        Ok(resp) => resp.map(Body::new),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            e.to_string(),
        ),
    }
}

fn authorised(
    headers: &HeaderMap,
    key: Option<&tabbify_auth::VerifyingKey>,
) -> Result<tabbify_auth::Claims, ApiError> {
    let Some(key) = key else {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            ErrorBody::new(
                ErrorCode::Forbidden,
                "uploads are disabled on this server (start it with --token-key or --token-key-file)",
            ),
        ));
    };
    let sent = tabbify_auth::bearer_value(
        headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let need = tabbify_auth::Requirement {
        scope: tabbify_auth::Scope::ArtifactsWrite,
        node: None,
    };
    tabbify_auth::verify(sent, key, now, &need).map_err(|r| {
        tracing::warn!(reason = %r, "upload refused");
        ApiError(
            StatusCode::UNAUTHORIZED,
            ErrorBody::new(r.code(), r.to_string()),
        )
    })
}

async fn upload(
    State(st): State<Arc<AppsrvState>>,
    Path(digest): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // A refusal before the body is read: the body is left unread, so the connection cannot carry
    // another request; say so, or a client reusing it races the close.
    let unread = |r: ApiError| {
        let mut resp = r.into_response();
        resp.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
        resp
    };
    let claims = match authorised(&headers, st.token_key.as_ref()) {
        Ok(c) => c,
        Err(r) => {
            st.metrics.upload("refused");
            return unread(r);
        }
    };
    let digest = match parse_digest(&digest) {
        Ok(d) => d,
        Err(r) => return unread(r),
    };
    tracing::info!(%digest, subject = %claims.sub, token_id = %claims.jti, "upload authorised");
    match st.store.put(&digest, body.into_data_stream()).await {
        Ok(PutOutcome::Created) => {
            st.metrics.upload("created");
            tracing::info!(%digest, "blob stored");
            (
                StatusCode::CREATED,
                Json(serde_json::json!({"digest": digest})),
            )
                .into_response()
        }
        Ok(PutOutcome::Existed) => {
            st.metrics.upload("existed");
            (StatusCode::OK, Json(serde_json::json!({"digest": digest}))).into_response()
        }
        Err(e @ StoreError::Mismatch { .. }) => {
            st.metrics.upload("mismatch");
            tracing::warn!(error = %e, "upload refused");
            error(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                e.to_string(),
            )
        }
        Err(e @ StoreError::TooLarge { .. }) => {
            st.metrics.upload("too_large");
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge,
                e.to_string(),
            )
        }
        Err(e @ StoreError::Body(_)) => {
            st.metrics.upload("failed");
            error(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                e.to_string(),
            )
        }
        Err(e @ StoreError::Io { .. }) => {
            st.metrics.upload("failed");
            tracing::error!(error = %e, "upload failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                e.to_string(),
            )
        }
    }
}
