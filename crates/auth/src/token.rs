//! The claims a token carries, its text form, and minting.

use crate::keys::SigningKey;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use tabbify_wire::Tag;
use tabbify_wire::operator::Scope;

/// Prefix of a token's text form.
pub const TOKEN_PREFIX: &str = "tbfo_";
/// The claims format this code writes and accepts.
pub const TOKEN_VERSION: u32 = 1;

/// Signatures cover this context string followed by the token text before the `.`, so a
/// signature made for anything else with the same key can never pass as a token's.
pub(crate) const SIGNING_CONTEXT: &[u8] = b"tabbify operator token\n";

/// What a token says. Unknown fields are refused: a newer coordinator's restriction that this
/// code does not understand must not be ignored (fail closed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Format version, [`TOKEN_VERSION`].
    pub v: u32,
    /// Who holds it (for logs).
    pub sub: String,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expires at, Unix seconds (refused from this second on).
    pub exp: u64,
    /// Random id (hex), for logs and audit.
    pub jti: String,
    pub scopes: Vec<Scope>,
    /// Only nodes with one of these names accept it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<String>>,
    /// Only nodes carrying one of these tags accept it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Tag>>,
}

impl Claims {
    /// Reads a token's claims WITHOUT checking its signature: for a holder deciding whether
    /// its cached token is still worth sending (expiry, scopes). Never a reason to allow
    /// anything; that is [`crate::verify`]'s job.
    pub fn peek_unverified(token: &str) -> Option<Claims> {
        let signed_part = token.trim().rsplit_once('.')?.0;
        let payload = URL_SAFE_NO_PAD
            .decode(signed_part.strip_prefix(TOKEN_PREFIX)?)
            .ok()?;
        serde_json::from_slice(&payload).ok()
    }
}

/// What to mint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub subject: String,
    pub scopes: Vec<Scope>,
    pub ttl_secs: u64,
    pub nodes: Option<Vec<String>>,
    pub tags: Option<Vec<Tag>>,
}

/// Signs a token for `grant`, issued at `now` (Unix seconds). Returns its text and its claims.
pub fn mint(key: &SigningKey, grant: &Grant, now: u64) -> (String, Claims) {
    let mut scopes = grant.scopes.clone();
    scopes.sort();
    scopes.dedup();
    let claims = Claims {
        v: TOKEN_VERSION,
        sub: grant.subject.clone(),
        iat: now,
        exp: now.saturating_add(grant.ttl_secs),
        jti: hex::encode(rand::random::<[u8; 16]>()),
        scopes,
        nodes: grant.nodes.clone(),
        tags: grant.tags.clone(),
    };
    (encode(key, &claims), claims)
}

/// The text form of `claims` signed with `key` (tests use it to forge odd tokens).
pub(crate) fn encode(key: &SigningKey, claims: &Claims) -> String {
    // Serialising a struct of strings, integers and enums cannot fail.
    let json = serde_json::to_vec(claims).unwrap_or_default();
    let signed_part = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(json));
    let sig = key.sign(&signed_message(&signed_part));
    format!("{signed_part}.{}", URL_SAFE_NO_PAD.encode(sig))
}

pub(crate) fn signed_message(signed_part: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNING_CONTEXT.len() + signed_part.len());
    m.extend_from_slice(SIGNING_CONTEXT);
    m.extend_from_slice(signed_part.as_bytes());
    m
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn minted_tokens_have_the_prefix_and_a_fresh_id() {
        let key = SigningKey::from_seed([1; 32]);
        let grant = Grant {
            subject: "alice".into(),
            scopes: vec![Scope::NodeWrite, Scope::NodeRead, Scope::NodeWrite],
            ttl_secs: 600,
            nodes: None,
            tags: None,
        };
        let (a, ca) = mint(&key, &grant, 1000);
        let (b, cb) = mint(&key, &grant, 1000);
        assert!(a.starts_with(TOKEN_PREFIX) && a.contains('.'));
        assert_ne!(a, b);
        assert_ne!(ca.jti, cb.jti);
        assert_eq!(ca.jti.len(), 32);
        assert_eq!(ca.scopes, vec![Scope::NodeRead, Scope::NodeWrite]);
        assert_eq!((ca.iat, ca.exp), (1000, 1600));
        assert!(!a.contains('='), "no padding: {a}");
        assert_eq!(Claims::peek_unverified(&a), Some(ca));
        assert_eq!(Claims::peek_unverified("tbfa_x"), None);
        assert_eq!(Claims::peek_unverified("tbfo_!!.x"), None);
    }
}
