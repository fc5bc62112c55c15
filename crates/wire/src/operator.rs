//! Operator tokens as the wire carries them: the scopes a token grants and the admin API that
//! mints them (`POST /v1/admin/operator-tokens`). The token text itself, its signature and its
//! checks live in `tabbify-auth`.

use crate::{Tag, Timestamp};
use serde::{Deserialize, Serialize};

/// What an operator token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Read a node's control API: apps, logs, metrics, about.
    #[serde(rename = "node:read")]
    NodeRead,
    /// Change a node's apps: deploy, stop, start, restart, reset, delete.
    #[serde(rename = "node:write")]
    NodeWrite,
    /// Upload artifacts to the appsrv.
    #[serde(rename = "artifacts:write")]
    ArtifactsWrite,
    /// Read the coordinator's roster (peers, the roster watch) and app endpoints. Only a token
    /// valid on every node carries it: the roster names every node.
    #[serde(rename = "mesh:read")]
    MeshRead,
}

impl Scope {
    pub const ALL: [Scope; 4] = [
        Scope::NodeRead,
        Scope::NodeWrite,
        Scope::ArtifactsWrite,
        Scope::MeshRead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::NodeRead => "node:read",
            Scope::NodeWrite => "node:write",
            Scope::ArtifactsWrite => "artifacts:write",
            Scope::MeshRead => "mesh:read",
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope {0:?} (known: node:read, node:write, artifacts:write, mesh:read)")]
pub struct UnknownScope(pub String);

impl std::str::FromStr for Scope {
    type Err = UnknownScope;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|sc| sc.as_str() == s)
            .ok_or_else(|| UnknownScope(s.to_string()))
    }
}

/// `POST /v1/admin/operator-tokens`. Operator input: unknown fields are rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CreateOperatorTokenRequest {
    /// At least one.
    pub scopes: Vec<Scope>,
    /// Lifetime in seconds; the coordinator has a default and a maximum.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    /// Who holds it (shown in node logs); default `operator`.
    #[serde(default)]
    pub subject: Option<String>,
    /// Only nodes with one of these names accept it.
    #[serde(default)]
    pub nodes: Option<Vec<String>>,
    /// Only nodes carrying one of these tags accept it.
    #[serde(default)]
    pub tags: Option<Vec<Tag>>,
}

/// The answer to a mint: the token (shown once; the coordinator keeps no copy) and what it says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedOperatorToken {
    pub token: String,
    pub id: String,
    pub subject: String,
    pub scopes: Vec<Scope>,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    #[serde(default)]
    pub nodes: Option<Vec<String>>,
    #[serde(default)]
    pub tags: Option<Vec<Tag>>,
}

/// `GET /v1/mesh/signing-key`: the public key that signs operator tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeyInfo {
    /// `tbfk_<base64url of the ed25519 public key>`.
    pub public_key: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_as_their_names() {
        for s in Scope::ALL {
            let json = serde_json::to_string(&s).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(s.as_str().parse::<Scope>(), Ok(s));
        }
        assert!("node:admin".parse::<Scope>().is_err());
        assert!(serde_json::from_str::<Scope>("\"root\"").is_err());
    }

    #[test]
    fn requests_reject_unknown_fields() {
        let err = serde_json::from_str::<CreateOperatorTokenRequest>(
            r#"{"scopes":["node:read"],"admin":true}"#,
        );
        assert!(err.is_err());
        let ok: CreateOperatorTokenRequest =
            serde_json::from_str(r#"{"scopes":["node:read","node:write"],"ttl_secs":60}"#)
                .unwrap_or_default();
        assert_eq!(ok.scopes, vec![Scope::NodeRead, Scope::NodeWrite]);
    }
}
