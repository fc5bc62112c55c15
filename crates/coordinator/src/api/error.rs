//! Every failure of the HTTP API as a status plus an [`ErrorBody`], and the mapping from the
//! library's error types to them.

use crate::addressing::AllocError;
use crate::registration::AdmissionError;
use crate::service::ServiceError;
use crate::store::{
    CreateTokenError, HeartbeatError, RegisterError, ReportError, RevokeError, StoreError,
};
use crate::tokens::JoinRefusal;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tabbify_wire::{ErrorBody, ErrorCode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody::new(code, message),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    /// A failure of ours: the details go to the log, the client gets a stable message.
    pub fn internal(what: &str, err: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %err, "{what} failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            format!("{what} failed because of an internal error; the coordinator log has details"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        Self::internal("the request", &e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::internal("the database operation", &e)
    }
}

impl From<JoinRefusal> for ApiError {
    fn from(e: JoinRefusal) -> Self {
        let (status, code) = match &e {
            JoinRefusal::Missing => (StatusCode::UNAUTHORIZED, ErrorCode::TokenMissing),
            JoinRefusal::Unknown => (StatusCode::UNAUTHORIZED, ErrorCode::TokenUnknown),
            JoinRefusal::Expired { .. } => (StatusCode::UNAUTHORIZED, ErrorCode::TokenExpired),
            JoinRefusal::UsedUp { .. } => (StatusCode::UNAUTHORIZED, ErrorCode::TokenUsedUp),
            JoinRefusal::Revoked { .. } => (StatusCode::UNAUTHORIZED, ErrorCode::TokenRevoked),
            JoinRefusal::TagNotAllowed { .. } => (StatusCode::FORBIDDEN, ErrorCode::TagNotAllowed),
        };
        Self::new(status, code, e.to_string())
    }
}

impl From<AdmissionError> for ApiError {
    fn from(e: AdmissionError) -> Self {
        match e {
            AdmissionError::Join(refusal) => refusal.into(),
            AdmissionError::NotOwner => {
                Self::new(StatusCode::CONFLICT, ErrorCode::Conflict, e.to_string())
            }
            AdmissionError::Malformed(_) => Self::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::TokenUnknown,
                e.to_string(),
            ),
            AdmissionError::TagNotAllowed { .. } => Self::new(
                StatusCode::FORBIDDEN,
                ErrorCode::TagNotAllowed,
                e.to_string(),
            ),
        }
    }
}

impl From<AllocError> for ApiError {
    fn from(e: AllocError) -> Self {
        match e {
            AllocError::OutsidePrefix { .. } | AllocError::Reserved { .. } => {
                Self::bad_request(e.to_string())
            }
            AllocError::Taken { .. }
            | AllocError::AlreadyHolds { .. }
            | AllocError::Full { .. } => Self::new(
                StatusCode::CONFLICT,
                ErrorCode::AddressUnavailable,
                e.to_string(),
            ),
        }
    }
}

impl From<RegisterError> for ApiError {
    fn from(e: RegisterError) -> Self {
        match e {
            RegisterError::Removed(_) => {
                Self::new(StatusCode::FORBIDDEN, ErrorCode::PeerRemoved, e.to_string())
            }
            RegisterError::Admission(a) => a.into(),
            RegisterError::Address(a) => a.into(),
            RegisterError::Certificate(c) => Self::bad_request(c.to_string()),
            RegisterError::Store(s) => Self::internal("registration", &s),
        }
    }
}

impl From<HeartbeatError> for ApiError {
    fn from(e: HeartbeatError) -> Self {
        match e {
            HeartbeatError::Auth(a) => a.into(),
            HeartbeatError::TagNotAllowed(a) => a.into(),
            HeartbeatError::Store(s) => Self::internal("heartbeat", &s),
        }
    }
}

impl From<CreateTokenError> for ApiError {
    fn from(e: CreateTokenError) -> Self {
        match e {
            CreateTokenError::Invalid(msg) => Self::bad_request(msg),
            CreateTokenError::Store(s) => Self::internal("creating a join token", &s),
        }
    }
}

impl From<RevokeError> for ApiError {
    fn from(e: RevokeError) -> Self {
        match e {
            RevokeError::NotFound(_) => Self::not_found(e.to_string()),
            RevokeError::Store(s) => Self::internal("revoking a join token", &s),
        }
    }
}

impl From<ReportError> for ApiError {
    fn from(e: ReportError) -> Self {
        match e {
            ReportError::Refused(why) => Self::bad_request(why.to_string()),
            ReportError::Store(s) => Self::internal("recording the state report", &s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_refusals_map_to_401_with_their_code() {
        let cases = [
            (JoinRefusal::Missing, ErrorCode::TokenMissing),
            (JoinRefusal::Unknown, ErrorCode::TokenUnknown),
            (
                JoinRefusal::Expired {
                    id: "a".into(),
                    expires_at: "x".into(),
                },
                ErrorCode::TokenExpired,
            ),
            (
                JoinRefusal::UsedUp {
                    id: "a".into(),
                    uses: 1,
                    allowed: 1,
                },
                ErrorCode::TokenUsedUp,
            ),
            (
                JoinRefusal::Revoked { id: "a".into() },
                ErrorCode::TokenRevoked,
            ),
        ];
        for (refusal, code) in cases {
            let e = ApiError::from(refusal);
            assert_eq!(e.status, StatusCode::UNAUTHORIZED);
            assert_eq!(e.body.error, code);
        }
    }
}
