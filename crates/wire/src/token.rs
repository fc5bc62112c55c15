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

/// A join token as an operator passes it around: the secret part (`tbfj_<id>_<secret>`, what
/// the coordinator checks) and, after a `.`, the SHA-256 of the mesh CA certificate in hex
/// (what the node pins, so the token alone is enough to trust the right coordinator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinTokenText<'a> {
    pub secret: &'a str,
    /// 64 lowercase hex digits, when the token carries a pin.
    pub ca_fingerprint: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the part of the join token after `.` must be the mesh CA's SHA-256 fingerprint (64 hex digits); copy the whole token as `tcli token create` printed it"
)]
pub struct BadTokenPin;

/// Splits `tbfj_<id>_<secret>[.<ca sha256 hex>]`. The secret part is not checked here.
pub fn split_join_token(text: &str) -> Result<JoinTokenText<'_>, BadTokenPin> {
    let text = text.trim();
    match text.split_once('.') {
        None => Ok(JoinTokenText {
            secret: text,
            ca_fingerprint: None,
        }),
        Some((secret, pin)) => {
            if pin.len() == 64
                && pin
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                Ok(JoinTokenText {
                    secret,
                    ca_fingerprint: Some(pin),
                })
            } else {
                Err(BadTokenPin)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_token_pins() {
        let pin = "ab".repeat(32);
        let text = format!("tbfj_0011_secret-x.{pin}");
        let t = split_join_token(&text).unwrap();
        assert_eq!(t.secret, "tbfj_0011_secret-x");
        assert_eq!(t.ca_fingerprint, Some(pin.as_str()));
        let plain = split_join_token(" tbfj_0011_s ").unwrap();
        assert_eq!(plain.secret, "tbfj_0011_s");
        assert_eq!(plain.ca_fingerprint, None);
        for bad in [
            "tbfj_1_s.",
            "tbfj_1_s.abc",
            &format!("tbfj_1_s.{}", "AB".repeat(32)),
        ] {
            assert_eq!(split_join_token(bad), Err(BadTokenPin), "{bad}");
        }
    }
}
