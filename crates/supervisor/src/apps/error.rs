//! Why an app request failed, and how each reason reaches the client: an HTTP status and a
//! [`tabbify_wire::ErrorBody`] whose message says exactly what is wrong.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tabbify_wire::{ErrorBody, ErrorCode};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    /// A malformed request: a bad manifest, a missing or unknown multipart part, a bad query.
    #[error("{0}")]
    BadRequest(String),
    /// A well-formed request this node cannot do (e.g. a runtime it does not run).
    #[error("{0}")]
    Unsupported(String),
    /// The upload is larger than the node takes.
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    NotFound(String),
    /// The app is busy with something else (a deploy in progress, being deleted, parked).
    #[error("{0}")]
    Conflict(String),
    /// The runner refused the artifact when loading it.
    #[error("{0}")]
    InvalidArtifact(String),
    /// The runner ended before it served.
    #[error("{0}")]
    AppFailed(String),
    /// The node cannot do it now (not joined yet, shutting down).
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unsupported(_) | AppError::InvalidArtifact(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            AppError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::AppFailed(_) => StatusCode::BAD_GATEWAY,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            AppError::BadRequest(_) | AppError::Unsupported(_) => ErrorCode::BadRequest,
            AppError::TooLarge(_) => ErrorCode::PayloadTooLarge,
            AppError::NotFound(_) => ErrorCode::NotFound,
            AppError::Conflict(_) => ErrorCode::Conflict,
            AppError::InvalidArtifact(_) => ErrorCode::InvalidArtifact,
            AppError::AppFailed(_) => ErrorCode::AppFailed,
            AppError::Unavailable(_) => ErrorCode::Unavailable,
            AppError::Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn unknown_app(id: &str) -> Self {
        AppError::NotFound(format!("no app with id {id:?} on this node"))
    }

    pub fn manager_gone() -> Self {
        AppError::Unavailable("the app manager is not running (the node is shutting down)".into())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(%status, error = %self, "app request failed");
        }
        (status, Json(ErrorBody::new(self.code(), self.to_string()))).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes_match() {
        let cases = [
            (AppError::BadRequest("x".into()), 400, ErrorCode::BadRequest),
            (
                AppError::Unsupported("x".into()),
                422,
                ErrorCode::BadRequest,
            ),
            (
                AppError::TooLarge("x".into()),
                413,
                ErrorCode::PayloadTooLarge,
            ),
            (AppError::unknown_app("a"), 404, ErrorCode::NotFound),
            (AppError::Conflict("x".into()), 409, ErrorCode::Conflict),
            (
                AppError::InvalidArtifact("x".into()),
                422,
                ErrorCode::InvalidArtifact,
            ),
            (AppError::AppFailed("x".into()), 502, ErrorCode::AppFailed),
            (AppError::manager_gone(), 503, ErrorCode::Unavailable),
            (AppError::Internal("x".into()), 500, ErrorCode::Internal),
        ];
        for (e, status, code) in cases {
            assert_eq!(e.status().as_u16(), status, "{e:?}");
            assert_eq!(e.code(), code, "{e:?}");
        }
        assert!(
            AppError::unknown_app("nope")
                .to_string()
                .contains("\"nope\"")
        );
    }
}
