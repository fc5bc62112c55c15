//! Why the ingress answered a request itself instead of a replica, and the status and JSON
//! error body (`{"error": code, "message": text}`) each reason gets.

use crate::source::SourceError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use tabbify_wire::{ErrorBody, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// The path is not `/app/<name>[/...]`, or `<name>` is not a valid app name.
    #[error("no app at {0:?}: use /app/<name>/...")]
    NotAnAppPath(String),
    #[error("no app named {0:?}")]
    UnknownApp(String),
    #[error("app {0:?} has no running replica")]
    NoRunningReplica(String),
    #[error("cannot look up the replicas of app {app:?}: {source}")]
    Lookup {
        app: String,
        #[source]
        source: SourceError,
    },
    /// No replica could be connected to.
    #[error("no replica of app {app:?} could be reached (tried {tried}): {last}")]
    AllReplicasFailed {
        app: String,
        tried: usize,
        last: String,
    },
    /// The request reached a replica and then failed; it is not sent again, since the replica
    /// may have acted on it.
    #[error("the replica of app {app:?} at {addr} failed: {detail}")]
    ReplicaFailed {
        app: String,
        addr: SocketAddr,
        detail: String,
    },
}

impl IngressError {
    pub fn status(&self) -> StatusCode {
        match self {
            IngressError::NotAnAppPath(_) | IngressError::UnknownApp(_) => StatusCode::NOT_FOUND,
            IngressError::NoRunningReplica(_) | IngressError::Lookup { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            IngressError::AllReplicasFailed { .. } | IngressError::ReplicaFailed { .. } => {
                StatusCode::BAD_GATEWAY
            }
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            IngressError::NotAnAppPath(_) | IngressError::UnknownApp(_) => ErrorCode::NotFound,
            IngressError::NoRunningReplica(_) | IngressError::Lookup { .. } => {
                ErrorCode::Unavailable
            }
            IngressError::AllReplicasFailed { .. } | IngressError::ReplicaFailed { .. } => {
                ErrorCode::BadGateway
            }
        }
    }
}

impl IntoResponse for IngressError {
    fn into_response(self) -> Response {
        let body = ErrorBody::new(self.code(), self.to_string());
        let text = serde_json::to_vec(&body).unwrap_or_default();
        let mut resp = (self.status(), text).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_has_its_status_and_code() {
        let cases = [
            (IngressError::UnknownApp("a".into()), 404, "not_found"),
            (
                IngressError::NoRunningReplica("a".into()),
                503,
                "unavailable",
            ),
            (
                IngressError::AllReplicasFailed {
                    app: "a".into(),
                    tried: 2,
                    last: "refused".into(),
                },
                502,
                "bad_gateway",
            ),
        ];
        for (err, status, code) in cases {
            assert_eq!(err.status().as_u16(), status);
            assert_eq!(serde_json::to_value(err.code()).unwrap(), code);
        }
    }
}
