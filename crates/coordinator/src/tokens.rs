//! Secrets the coordinator hands out and checks: join tokens, peer credentials, the admin token.
//!
//! Text formats, hashing, constant-time comparison and the pure decision "may this join token
//! admit this node now?" live here; the store only persists the records.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use tabbify_wire::token::JoinTokenState;
use tabbify_wire::{Tag, Timestamp};

/// Prefix of a join token: `tbfj_<id>_<secret>`.
pub const JOIN_TOKEN_PREFIX: &str = "tbfj_";
/// Prefix of a peer credential: `tbfp_<peer id>_<secret>`.
pub const PEER_CREDENTIAL_PREFIX: &str = "tbfp_";
/// Prefix of the admin token: `tbfa_<secret>`.
pub const ADMIN_TOKEN_PREFIX: &str = "tbfa_";

/// Random bytes behind every secret (256 bits).
const SECRET_BYTES: usize = 32;

/// SHA-256 of a secret; what the store keeps instead of the secret.
pub type SecretHash = [u8; 32];

pub fn hash_secret(secret: &str) -> SecretHash {
    Sha256::digest(secret.as_bytes()).into()
}

/// Compares two hashes without an early exit, so timing does not reveal how much matched.
pub fn hashes_equal(a: &SecretHash, b: &SecretHash) -> bool {
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A fresh random secret, base64url without padding.
pub fn new_secret() -> String {
    let bytes: [u8; SECRET_BYTES] = rand::rng().random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A fresh random identifier: 16 lowercase hex digits (no `_`, so it can sit inside a token).
pub fn new_id() -> String {
    let bytes: [u8; 8] = rand::rng().random();
    hex::encode(bytes)
}

/// A token split into the record it names and the secret that proves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdAndSecret {
    pub id: String,
    pub secret: String,
}

/// Why a presented token does not even parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a {kind}: expected {prefix}<id>_<secret>")]
pub struct MalformedToken {
    pub kind: &'static str,
    pub prefix: &'static str,
}

fn split_id_secret(
    text: &str,
    prefix: &'static str,
    kind: &'static str,
) -> Result<IdAndSecret, MalformedToken> {
    let malformed = MalformedToken { kind, prefix };
    let rest = text.trim().strip_prefix(prefix).ok_or(malformed.clone())?;
    let (id, secret) = rest.split_once('_').ok_or(malformed.clone())?;
    let id_ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    let secret_ok = !secret.is_empty()
        && secret.len() <= 128
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !id_ok || !secret_ok {
        return Err(malformed);
    }
    Ok(IdAndSecret {
        id: id.to_string(),
        secret: secret.to_string(),
    })
}

pub fn parse_join_token(text: &str) -> Result<IdAndSecret, MalformedToken> {
    split_id_secret(text, JOIN_TOKEN_PREFIX, "join token")
}

pub fn parse_peer_credential(text: &str) -> Result<IdAndSecret, MalformedToken> {
    split_id_secret(text, PEER_CREDENTIAL_PREFIX, "peer credential")
}

pub fn format_join_token(id: &str, secret: &str) -> String {
    format!("{JOIN_TOKEN_PREFIX}{id}_{secret}")
}

pub fn format_peer_credential(peer_id: &str, secret: &str) -> String {
    format!("{PEER_CREDENTIAL_PREFIX}{peer_id}_{secret}")
}

pub fn new_admin_token() -> String {
    format!("{ADMIN_TOKEN_PREFIX}{}", new_secret())
}

/// A join token as stored (the secret only as a hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinTokenRecord {
    pub id: String,
    pub secret_hash: SecretHash,
    pub description: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// `None`: reusable until it expires or is revoked.
    pub uses_allowed: Option<u32>,
    pub uses: u32,
    pub tags: Option<Vec<Tag>>,
    pub revoked_at: Option<Timestamp>,
}

/// The state of a token at `now`. Revocation wins over expiry, expiry over exhaustion, so the
/// answer names the operator's most deliberate act first.
pub fn token_state(rec: &JoinTokenRecord, now: Timestamp) -> JoinTokenState {
    if rec.revoked_at.is_some() {
        JoinTokenState::Revoked
    } else if now >= rec.expires_at {
        JoinTokenState::Expired
    } else if rec.uses_allowed.is_some_and(|allowed| rec.uses >= allowed) {
        JoinTokenState::UsedUp
    } else {
        JoinTokenState::Active
    }
}

/// Why a join token does not admit a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefusal {
    #[error(
        "a join token is required to register a new node: send `Authorization: Bearer tbfj_...`"
    )]
    Missing,
    #[error("join token is not known to this coordinator")]
    Unknown,
    #[error("join token {id} expired at {expires_at}")]
    Expired { id: String, expires_at: String },
    #[error("join token {id} is used up ({uses} of {allowed} joins)")]
    UsedUp { id: String, uses: u32, allowed: u32 },
    #[error("join token {id} was revoked")]
    Revoked { id: String },
    #[error("join token {id} does not allow tag(s) {denied}; allowed: {allowed}")]
    TagNotAllowed {
        id: String,
        denied: String,
        allowed: String,
    },
}

/// Decides whether `record` (looked up by the id in the presented token, `None` when there is no
/// such id) admits a node advertising `tags` at `now`.
pub fn check_join(
    presented: &IdAndSecret,
    record: Option<&JoinTokenRecord>,
    tags: &[Tag],
    now: Timestamp,
) -> Result<(), JoinRefusal> {
    let rec = record.ok_or(JoinRefusal::Unknown)?;
    if !hashes_equal(&hash_secret(&presented.secret), &rec.secret_hash) {
        return Err(JoinRefusal::Unknown);
    }
    match token_state(rec, now) {
        JoinTokenState::Revoked => {
            return Err(JoinRefusal::Revoked { id: rec.id.clone() });
        }
        JoinTokenState::Expired => {
            return Err(JoinRefusal::Expired {
                id: rec.id.clone(),
                expires_at: rec.expires_at.to_rfc3339(),
            });
        }
        JoinTokenState::UsedUp => {
            return Err(JoinRefusal::UsedUp {
                id: rec.id.clone(),
                uses: rec.uses,
                allowed: rec.uses_allowed.unwrap_or(0),
            });
        }
        JoinTokenState::Active => {}
    }
    if let Some(allowed) = &rec.tags {
        check_tags_allowed(tags, allowed).map_err(|denied| JoinRefusal::TagNotAllowed {
            id: rec.id.clone(),
            denied,
            allowed: join_tags(allowed.iter()),
        })?;
    }
    Ok(())
}

/// `Err(list of denied tags)` when `tags` is not a subset of `allowed`.
pub fn check_tags_allowed(tags: &[Tag], allowed: &[Tag]) -> Result<(), String> {
    let allowed: BTreeSet<&Tag> = allowed.iter().collect();
    let denied: BTreeSet<&Tag> = tags.iter().filter(|t| !allowed.contains(t)).collect();
    if denied.is_empty() {
        Ok(())
    } else {
        Err(join_tags(denied.into_iter()))
    }
}

fn join_tags<'a>(tags: impl Iterator<Item = &'a Tag>) -> String {
    let list: Vec<&str> = tags.map(Tag::as_str).collect();
    if list.is_empty() {
        "(none)".into()
    } else {
        list.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp(1_000_000);

    fn record(secret: &str) -> JoinTokenRecord {
        JoinTokenRecord {
            id: "abcd".into(),
            secret_hash: hash_secret(secret),
            description: None,
            created_at: Timestamp(0),
            expires_at: Timestamp(2_000_000),
            uses_allowed: Some(1),
            uses: 0,
            tags: None,
            revoked_at: None,
        }
    }

    fn presented(secret: &str) -> IdAndSecret {
        IdAndSecret {
            id: "abcd".into(),
            secret: secret.into(),
        }
    }

    fn tags(list: &[&str]) -> Vec<Tag> {
        list.iter().map(|t| Tag::new(*t).unwrap()).collect()
    }

    #[test]
    fn formats_round_trip() {
        let secret = new_secret();
        let id = new_id();
        assert_eq!(id.len(), 16);
        let text = format_join_token(&id, &secret);
        assert!(text.starts_with("tbfj_"));
        assert_eq!(
            parse_join_token(&text).unwrap(),
            IdAndSecret {
                id: id.clone(),
                secret: secret.clone()
            }
        );
        let cred = format_peer_credential(&id, &secret);
        assert_eq!(parse_peer_credential(&cred).unwrap().id, id);
        assert!(parse_join_token(&cred).is_err(), "kinds must not mix");
        assert!(new_admin_token().starts_with("tbfa_"));
    }

    #[test]
    fn secret_with_underscore_splits_at_the_first_one() {
        let parsed = parse_join_token("tbfj_00ff_a_b-c").unwrap();
        assert_eq!(parsed.id, "00ff");
        assert_eq!(parsed.secret, "a_b-c");
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        for bad in [
            "",
            "tbfj_",
            "tbfj_abcd",
            "tbfj__secret",
            "tbfj_ABCD_secret",
            "tbfj_xyz_secret",
            "tbfj_abcd_",
            "tbfj_abcd_sec ret",
            "tbfp_abcd_secret",
            "Bearer tbfj_abcd_s",
        ] {
            let err = parse_join_token(bad).unwrap_err();
            assert!(
                err.to_string().contains("tbfj_<id>_<secret>"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn hash_comparison() {
        assert!(hashes_equal(&hash_secret("a"), &hash_secret("a")));
        assert!(!hashes_equal(&hash_secret("a"), &hash_secret("b")));
        let mut h = hash_secret("a");
        h[31] ^= 1;
        assert!(!hashes_equal(&hash_secret("a"), &h));
    }

    #[test]
    fn states_and_their_precedence() {
        let mut rec = record("s");
        assert_eq!(token_state(&rec, NOW), JoinTokenState::Active);
        rec.uses = 1;
        assert_eq!(token_state(&rec, NOW), JoinTokenState::UsedUp);
        assert_eq!(
            token_state(&rec, Timestamp(2_000_000)),
            JoinTokenState::Expired
        );
        rec.revoked_at = Some(NOW);
        assert_eq!(
            token_state(&rec, Timestamp(3_000_000)),
            JoinTokenState::Revoked
        );
        let mut reusable = record("s");
        reusable.uses_allowed = None;
        reusable.uses = 1_000_000;
        assert_eq!(token_state(&reusable, NOW), JoinTokenState::Active);
        assert_eq!(
            token_state(&reusable, Timestamp(1_999_999)),
            JoinTokenState::Active
        );
    }

    #[test]
    fn check_join_names_each_reason() {
        let rec = record("right");
        assert_eq!(
            check_join(&presented("right"), Some(&rec), &[], NOW),
            Ok(())
        );
        assert_eq!(
            check_join(&presented("wrong"), Some(&rec), &[], NOW),
            Err(JoinRefusal::Unknown)
        );
        assert_eq!(
            check_join(&presented("right"), None, &[], NOW),
            Err(JoinRefusal::Unknown)
        );
        let err = check_join(&presented("right"), Some(&rec), &[], Timestamp(2_000_000));
        assert!(matches!(err, Err(JoinRefusal::Expired { .. })), "{err:?}");
        let mut used = rec.clone();
        used.uses = 1;
        assert_eq!(
            check_join(&presented("right"), Some(&used), &[], NOW),
            Err(JoinRefusal::UsedUp {
                id: "abcd".into(),
                uses: 1,
                allowed: 1
            })
        );
        let mut revoked = rec.clone();
        revoked.revoked_at = Some(NOW);
        assert_eq!(
            check_join(&presented("right"), Some(&revoked), &[], NOW),
            Err(JoinRefusal::Revoked { id: "abcd".into() })
        );
    }

    #[test]
    fn wrong_secret_reveals_nothing_about_state() {
        let mut rec = record("right");
        rec.revoked_at = Some(NOW);
        assert_eq!(
            check_join(&presented("wrong"), Some(&rec), &[], NOW),
            Err(JoinRefusal::Unknown)
        );
    }

    #[test]
    fn tag_restriction() {
        let mut rec = record("right");
        rec.tags = Some(tags(&["wasm", "docker"]));
        assert_eq!(
            check_join(&presented("right"), Some(&rec), &tags(&["wasm"]), NOW),
            Ok(())
        );
        assert_eq!(
            check_join(&presented("right"), Some(&rec), &[], NOW),
            Ok(())
        );
        let err = check_join(
            &presented("right"),
            Some(&rec),
            &tags(&["wasm", "gpu", "firecracker"]),
            NOW,
        )
        .unwrap_err();
        assert_eq!(
            err,
            JoinRefusal::TagNotAllowed {
                id: "abcd".into(),
                denied: "firecracker, gpu".into(),
                allowed: "wasm, docker".into()
            }
        );
        rec.tags = Some(vec![]);
        let err = check_join(&presented("right"), Some(&rec), &tags(&["wasm"]), NOW);
        assert!(
            err.unwrap_err().to_string().contains("allowed: (none)"),
            "empty allow-list allows nothing"
        );
    }
}
