//! Join tokens: the admin API that creates, lists and revokes them.

use crate::{Tag, Timestamp};
use serde::{Deserialize, Serialize};

/// `POST /v1/admin/join-tokens`. Operator input: unknown fields are rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CreateJoinTokenRequest {
    /// Lifetime in seconds; default one day.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    /// Number of joins allowed; default 1. Ignored when `reusable`.
    #[serde(default)]
    pub uses: Option<u32>,
    /// Unlimited joins until it expires or is revoked.
    #[serde(default)]
    pub reusable: bool,
    /// When set, a node joining with this token may only advertise these tags.
    #[serde(default)]
    pub tags: Option<Vec<Tag>>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinTokenState {
    Active,
    Expired,
    UsedUp,
    Revoked,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenInfo {
    pub id: String,
    #[serde(default)]
    pub description: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// `None` for a reusable token.
    pub uses_allowed: Option<u32>,
    pub uses: u32,
    #[serde(default)]
    pub tags: Option<Vec<Tag>>,
    pub state: JoinTokenState,
}

/// The answer to a create: the secret is shown once and never stored in clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedJoinToken {
    pub token: String,
    #[serde(flatten)]
    pub info: JoinTokenInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenList {
    pub tokens: Vec<JoinTokenInfo>,
}

/// The answer to `DELETE /v1/admin/join-tokens/{id}?cascade=true`: the token is revoked and
/// every peer it admitted is removed (their keys are refused until re-admitted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedJoinToken {
    pub id: String,
    pub removed_peers: Vec<crate::mesh::RemovedPeer>,
}
