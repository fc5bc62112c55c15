//! The JSON error body every HTTP API returns on a 4xx or 5xx.

use serde::{Deserialize, Serialize};

/// Machine-readable error codes. New codes may appear; clients treat unknown ones as `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    PayloadTooLarge,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    TokenMissing,
    TokenUnknown,
    TokenExpired,
    TokenUsedUp,
    TokenRevoked,
    TagNotAllowed,
    UnknownPeer,
    AddressUnavailable,
    Internal,
    Unavailable,
    /// An app's artifact was refused when the runner loaded it (422).
    InvalidArtifact,
    /// An app's runner exited before it served (502).
    AppFailed,
    /// A proxy (the ingress) reached no replica that answered (502).
    BadGateway,
    /// An operator token that does not parse as one (401).
    TokenMalformed,
    /// An operator token whose issue time lies in the future (401).
    TokenNotYetValid,
    /// An operator token not signed by the key this side trusts (401).
    TokenBadSignature,
    /// An operator token without the scope the request needs (401).
    WrongScope,
    /// An operator token limited to other nodes (401).
    WrongNode,
    /// A node's key belongs to a peer an operator removed; `tcli peers readmit` lets it back (403).
    PeerRemoved,
    /// The caller already holds as many open watch streams as allowed, or the coordinator does
    /// (429).
    TooManyStreams,
    #[serde(other)]
    Other,
}

/// `{"error": "<code>", "message": "<what a person reads>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorCode,
    pub message: String,
}

impl ErrorBody {
    pub fn new(error: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = serde_json::to_value(self.error)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "other".into());
        write!(f, "{code}: {}", self.message)
    }
}
