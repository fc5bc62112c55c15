//! Checking a token: pure, with the clock as a parameter, and precise about why it refuses.

use crate::keys::VerifyingKey;
use crate::token::{Claims, TOKEN_PREFIX, TOKEN_VERSION, signed_message};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tabbify_wire::operator::Scope;
use tabbify_wire::{ErrorCode, Tag};

/// Longest token text looked at; anything longer is malformed without decoding it.
const MAX_TOKEN_LEN: usize = 8 * 1024;
/// How far in the future an issue time may lie (clocks of the coordinator and a node differ).
pub const CLOCK_SKEW_SECS: u64 = 60;

/// The node a request reached, for tokens limited to node names or tags.
#[derive(Debug, Clone, Copy)]
pub struct NodeFacts<'a> {
    pub name: &'a str,
    pub tags: &'a [Tag],
}

/// What the request needs.
#[derive(Debug, Clone, Copy)]
pub struct Requirement<'a> {
    pub scope: Scope,
    /// `None` where no node is involved (the appsrv).
    pub node: Option<NodeFacts<'a>>,
}

/// Why a token is refused. The `Display` text is what the 401's `message` says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no operator token: send `Authorization: Bearer tbfo_…` (get one with `tcli login`)")]
    Missing,
    #[error("the operator token is malformed: {0}")]
    Malformed(String),
    #[error("the operator token's signature does not match this mesh's signing key")]
    BadSignature,
    #[error("the operator token is not valid yet (issued at {iat}, now {now}; check the clocks)")]
    NotYetValid { iat: u64, now: u64 },
    #[error("the operator token expired at {exp} (now {now}); get a new one with `tcli login`")]
    Expired { exp: u64, now: u64 },
    #[error(
        "the operator token does not grant {needed} (it grants: {})",
        list(held)
    )]
    WrongScope { needed: Scope, held: Vec<Scope> },
    #[error("the operator token is not valid on node {node:?} (it is limited to {limits})")]
    WrongNode { node: String, limits: String },
}

fn list(scopes: &[Scope]) -> String {
    if scopes.is_empty() {
        return "nothing".into();
    }
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Refusal {
    /// The error code of the 401 body.
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::Missing => ErrorCode::TokenMissing,
            Refusal::Malformed(_) => ErrorCode::TokenMalformed,
            Refusal::BadSignature => ErrorCode::TokenBadSignature,
            Refusal::NotYetValid { .. } => ErrorCode::TokenNotYetValid,
            Refusal::Expired { .. } => ErrorCode::TokenExpired,
            Refusal::WrongScope { .. } => ErrorCode::WrongScope,
            Refusal::WrongNode { .. } => ErrorCode::WrongNode,
        }
    }

    /// The `WWW-Authenticate` value of the 401 (RFC 6750 error codes).
    pub fn www_authenticate(&self) -> &'static str {
        match self {
            Refusal::Missing => "Bearer realm=\"tabbify\"",
            Refusal::WrongScope { .. } | Refusal::WrongNode { .. } => {
                "Bearer realm=\"tabbify\", error=\"insufficient_scope\""
            }
            _ => "Bearer realm=\"tabbify\", error=\"invalid_token\"",
        }
    }
}

/// The token of an `Authorization` header value (`Bearer <token>`, scheme case-insensitive);
/// `None` for an absent header, another scheme or an empty value.
pub fn bearer_value(header: Option<&str>) -> Option<&str> {
    let h = header?.trim();
    let (scheme, rest) = h.split_once(' ')?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Checks `token` (absent = [`Refusal::Missing`]) against `key` at `now` (Unix seconds) for
/// `need`. The signature is checked before the claims are parsed, so nothing unauthenticated
/// is ever interpreted.
pub fn verify(
    token: Option<&str>,
    key: &VerifyingKey,
    now: u64,
    need: &Requirement<'_>,
) -> Result<Claims, Refusal> {
    let token = token.map(str::trim).filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Err(Refusal::Missing);
    };
    let malformed = |why: &str| Refusal::Malformed(why.to_string());
    if token.len() > MAX_TOKEN_LEN {
        return Err(malformed("longer than any token"));
    }
    if !token.starts_with(TOKEN_PREFIX) {
        return Err(malformed(&format!("it does not start with {TOKEN_PREFIX}")));
    }
    let (signed_part, sig_b64) = token
        .rsplit_once('.')
        .ok_or_else(|| malformed("no `.` before the signature"))?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig_b64)
        .map_err(|_| malformed("the signature is not base64url"))?;
    let sig: [u8; 64] = sig
        .try_into()
        .map_err(|_| malformed("the signature is not 64 bytes"))?;
    let payload = URL_SAFE_NO_PAD
        .decode(&signed_part[TOKEN_PREFIX.len()..])
        .map_err(|_| malformed("the payload is not base64url"))?;
    key.0
        .verify_strict(
            &signed_message(signed_part),
            &ed25519_dalek::Signature::from_bytes(&sig),
        )
        .map_err(|_| Refusal::BadSignature)?;
    let claims: Claims = serde_json::from_slice(&payload)
        .map_err(|e| malformed(&format!("its claims do not parse ({e})")))?;
    if claims.v != TOKEN_VERSION {
        return Err(malformed(&format!(
            "version {} (this node understands {TOKEN_VERSION})",
            claims.v
        )));
    }
    if claims.iat > now.saturating_add(CLOCK_SKEW_SECS) {
        return Err(Refusal::NotYetValid {
            iat: claims.iat,
            now,
        });
    }
    if now >= claims.exp {
        return Err(Refusal::Expired {
            exp: claims.exp,
            now,
        });
    }
    if !claims.scopes.contains(&need.scope) {
        return Err(Refusal::WrongScope {
            needed: need.scope,
            held: claims.scopes.clone(),
        });
    }
    if let Some(node) = need.node {
        check_node(&claims, node)?;
    }
    Ok(claims)
}

/// A limited token passes on a node whose name is listed (when names are given) and that
/// carries one of the listed tags (when tags are given).
fn check_node(claims: &Claims, node: NodeFacts<'_>) -> Result<(), Refusal> {
    let name_ok = claims
        .nodes
        .as_ref()
        .is_none_or(|names| names.iter().any(|n| n == node.name));
    let tag_ok = claims
        .tags
        .as_ref()
        .is_none_or(|tags| tags.iter().any(|t| node.tags.contains(t)));
    if name_ok && tag_ok {
        return Ok(());
    }
    let mut limits = Vec::new();
    if let Some(names) = &claims.nodes {
        limits.push(format!("nodes {}", names.join(", ")));
    }
    if let Some(tags) = &claims.tags {
        let t: Vec<&str> = tags.iter().map(Tag::as_str).collect();
        limits.push(format!("nodes tagged {}", t.join(" or ")));
    }
    Err(Refusal::WrongNode {
        node: node.name.to_string(),
        limits: limits.join(" and "),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::keys::SigningKey;
    use crate::token::{Grant, encode, mint};

    const NOW: u64 = 1_800_000_000;

    fn key() -> SigningKey {
        SigningKey::from_seed([3; 32])
    }

    fn grant(scopes: &[Scope]) -> Grant {
        Grant {
            subject: "ops".into(),
            scopes: scopes.to_vec(),
            ttl_secs: 3600,
            nodes: None,
            tags: None,
        }
    }

    fn tag(s: &str) -> Tag {
        Tag::new(s).unwrap()
    }

    fn read_on(node: &str, tags: &'static [Tag]) -> Requirement<'static> {
        Requirement {
            scope: Scope::NodeRead,
            node: Some(NodeFacts {
                name: Box::leak(node.to_string().into_boxed_str()),
                tags,
            }),
        }
    }

    const WRITE: Requirement<'static> = Requirement {
        scope: Scope::NodeWrite,
        node: None,
    };
    const READ: Requirement<'static> = Requirement {
        scope: Scope::NodeRead,
        node: None,
    };

    #[test]
    fn a_good_token_passes_and_returns_its_claims() {
        let k = key();
        let (t, claims) = mint(&k, &grant(&[Scope::NodeRead, Scope::NodeWrite]), NOW);
        let got = verify(Some(&t), &k.verifying_key(), NOW + 10, &WRITE).unwrap();
        assert_eq!(got, claims);
        assert_eq!(got.sub, "ops");
        // Surrounding whitespace (a token pasted from a file) is fine.
        assert!(verify(Some(&format!(" {t}\n")), &k.verifying_key(), NOW, &READ).is_ok());
    }

    #[test]
    fn missing_tokens() {
        let vk = key().verifying_key();
        for t in [None, Some(""), Some("   ")] {
            assert_eq!(verify(t, &vk, NOW, &READ), Err(Refusal::Missing), "{t:?}");
        }
    }

    #[test]
    fn malformed_tokens_say_what_is_wrong() {
        let k = key();
        let vk = k.verifying_key();
        let (good, _) = mint(&k, &grant(&[Scope::NodeRead]), NOW);
        let (head, sig) = good.rsplit_once('.').unwrap();
        let long = "x".repeat(MAX_TOKEN_LEN + 1);
        let cases = [
            ("tbfa_admin-token", "does not start with tbfo_"),
            (long.as_str(), "longer than any token"),
            ("tbfo_abc", "no `.`"),
            (&format!("{head}.***"), "signature is not base64url"),
            (&format!("{head}.AAAA"), "not 64 bytes"),
            (&format!("tbfo_!!.{sig}"), "payload is not base64url"),
        ];
        for (t, why) in cases {
            match verify(Some(t), &vk, NOW, &READ) {
                Err(Refusal::Malformed(m)) => assert!(m.contains(why), "{t:.40}: {m}"),
                other => panic!("{t:.40}: {other:?}"),
            }
        }
    }

    #[test]
    fn signed_claims_that_do_not_parse_or_have_another_version_are_malformed() {
        let k = key();
        let (_, mut claims) = mint(&k, &grant(&[Scope::NodeRead]), NOW);
        claims.v = 2;
        let t = encode(&k, &claims);
        match verify(Some(&t), &k.verifying_key(), NOW, &READ) {
            Err(Refusal::Malformed(m)) => assert!(m.contains("version 2"), "{m}"),
            other => panic!("{other:?}"),
        }
        // A field this code does not know (say, a newer restriction) is refused, not ignored.
        let json = br#"{"v":1,"sub":"x","iat":1,"exp":99999999999,"jti":"a","scopes":["node:read"],"ips":["10.0.0.1"]}"#;
        let signed_part = format!("tbfo_{}", URL_SAFE_NO_PAD.encode(json));
        let sig = k.sign(&signed_message(&signed_part));
        let t = format!("{signed_part}.{}", URL_SAFE_NO_PAD.encode(sig));
        match verify(Some(&t), &k.verifying_key(), NOW, &READ) {
            Err(Refusal::Malformed(m)) => assert!(m.contains("ips"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn another_key_or_a_changed_payload_is_a_bad_signature() {
        let k = key();
        let (t, claims) = mint(&k, &grant(&[Scope::NodeRead]), NOW);
        let other = SigningKey::from_seed([4; 32]).verifying_key();
        assert_eq!(
            verify(Some(&t), &other, NOW, &READ),
            Err(Refusal::BadSignature)
        );
        // Grant yourself node:write by editing the payload and keeping the signature.
        let mut wider = claims.clone();
        wider.scopes.push(Scope::NodeWrite);
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&wider).unwrap());
        let sig = t.rsplit_once('.').unwrap().1;
        let forged = format!("tbfo_{forged_payload}.{sig}");
        assert_eq!(
            verify(Some(&forged), &k.verifying_key(), NOW, &WRITE),
            Err(Refusal::BadSignature)
        );
        // A flipped bit in the signature.
        let (head, sig) = t.rsplit_once('.').unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(sig).unwrap();
        bytes[10] ^= 1;
        let flipped = format!("{head}.{}", URL_SAFE_NO_PAD.encode(bytes));
        assert_eq!(
            verify(Some(&flipped), &k.verifying_key(), NOW, &READ),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn validity_window_with_skew_for_the_issue_time_only() {
        let k = key();
        let vk = k.verifying_key();
        let (t, _) = mint(&k, &grant(&[Scope::NodeRead]), NOW);
        assert!(verify(Some(&t), &vk, NOW - CLOCK_SKEW_SECS, &READ).is_ok());
        assert_eq!(
            verify(Some(&t), &vk, NOW - CLOCK_SKEW_SECS - 1, &READ),
            Err(Refusal::NotYetValid {
                iat: NOW,
                now: NOW - CLOCK_SKEW_SECS - 1
            })
        );
        assert!(verify(Some(&t), &vk, NOW + 3599, &READ).is_ok());
        assert_eq!(
            verify(Some(&t), &vk, NOW + 3600, &READ),
            Err(Refusal::Expired {
                exp: NOW + 3600,
                now: NOW + 3600
            })
        );
        let zero = Grant {
            ttl_secs: 0,
            ..grant(&[Scope::NodeRead])
        };
        let (t, _) = mint(&k, &zero, NOW);
        assert!(matches!(
            verify(Some(&t), &vk, NOW, &READ),
            Err(Refusal::Expired { .. })
        ));
    }

    #[test]
    fn scopes_are_not_implied_by_each_other() {
        let k = key();
        let vk = k.verifying_key();
        let (read, _) = mint(&k, &grant(&[Scope::NodeRead]), NOW);
        let err = verify(Some(&read), &vk, NOW, &WRITE).unwrap_err();
        assert_eq!(
            err,
            Refusal::WrongScope {
                needed: Scope::NodeWrite,
                held: vec![Scope::NodeRead]
            }
        );
        assert!(
            err.to_string().contains("does not grant node:write"),
            "{err}"
        );
        let (write, _) = mint(&k, &grant(&[Scope::NodeWrite]), NOW);
        assert!(matches!(
            verify(Some(&write), &vk, NOW, &READ),
            Err(Refusal::WrongScope { .. })
        ));
        let (art, _) = mint(&k, &grant(&[Scope::ArtifactsWrite]), NOW);
        let art_need = Requirement {
            scope: Scope::ArtifactsWrite,
            node: None,
        };
        assert!(verify(Some(&art), &vk, NOW, &art_need).is_ok());
        assert!(verify(Some(&art), &vk, NOW, &WRITE).is_err());
        let (none, _) = mint(&k, &grant(&[]), NOW);
        let err = verify(Some(&none), &vk, NOW, &READ).unwrap_err();
        assert!(err.to_string().contains("grants: nothing"), "{err}");
    }

    #[test]
    fn node_names_and_tags_limit_where_a_token_works() {
        static EU: std::sync::LazyLock<Vec<Tag>> =
            std::sync::LazyLock::new(|| vec![Tag::new("wasm").unwrap(), Tag::new("eu").unwrap()]);
        static US: std::sync::LazyLock<Vec<Tag>> =
            std::sync::LazyLock::new(|| vec![Tag::new("wasm").unwrap(), Tag::new("us").unwrap()]);
        let k = key();
        let vk = k.verifying_key();
        let names = Grant {
            nodes: Some(vec!["a".into(), "b".into()]),
            ..grant(&[Scope::NodeRead])
        };
        let (t, _) = mint(&k, &names, NOW);
        assert!(verify(Some(&t), &vk, NOW, &read_on("a", &EU)).is_ok());
        assert!(verify(Some(&t), &vk, NOW, &read_on("b", &US)).is_ok());
        let err = verify(Some(&t), &vk, NOW, &read_on("c", &EU)).unwrap_err();
        assert_eq!(err.code(), ErrorCode::WrongNode);
        assert!(err.to_string().contains("\"c\"") && err.to_string().contains("nodes a, b"));

        let tags = Grant {
            tags: Some(vec![tag("eu"), tag("ap")]),
            ..grant(&[Scope::NodeRead])
        };
        let (t, _) = mint(&k, &tags, NOW);
        assert!(verify(Some(&t), &vk, NOW, &read_on("x", &EU)).is_ok());
        assert!(matches!(
            verify(Some(&t), &vk, NOW, &read_on("x", &US)),
            Err(Refusal::WrongNode { .. })
        ));

        let both = Grant {
            nodes: Some(vec!["a".into()]),
            tags: Some(vec![tag("eu")]),
            ..grant(&[Scope::NodeRead])
        };
        let (t, _) = mint(&k, &both, NOW);
        assert!(verify(Some(&t), &vk, NOW, &read_on("a", &EU)).is_ok());
        assert!(verify(Some(&t), &vk, NOW, &read_on("a", &US)).is_err());
        assert!(verify(Some(&t), &vk, NOW, &read_on("b", &EU)).is_err());
        // Without a node in the requirement (the appsrv), node limits do not apply.
        assert!(verify(Some(&t), &vk, NOW, &READ).is_ok());
        // An unlimited token works everywhere.
        let (t, _) = mint(&k, &grant(&[Scope::NodeRead]), NOW);
        assert!(verify(Some(&t), &vk, NOW, &read_on("zz", &US)).is_ok());
    }

    #[test]
    fn the_scope_is_checked_before_the_node() {
        let k = key();
        let g = Grant {
            nodes: Some(vec!["a".into()]),
            ..grant(&[Scope::NodeRead])
        };
        let (t, _) = mint(&k, &g, NOW);
        let need = Requirement {
            scope: Scope::NodeWrite,
            node: Some(NodeFacts {
                name: "b",
                tags: &[],
            }),
        };
        assert!(matches!(
            verify(Some(&t), &k.verifying_key(), NOW, &need),
            Err(Refusal::WrongScope { .. })
        ));
    }

    #[test]
    fn bearer_header_values() {
        assert_eq!(bearer_value(Some("Bearer tbfo_x")), Some("tbfo_x"));
        assert_eq!(bearer_value(Some("bearer   tbfo_x ")), Some("tbfo_x"));
        assert_eq!(bearer_value(Some("Basic abc")), None);
        assert_eq!(bearer_value(Some("Bearer ")), None);
        assert_eq!(bearer_value(Some("tbfo_x")), None);
        assert_eq!(bearer_value(None), None);
    }

    #[test]
    fn refusals_map_to_codes_and_challenges() {
        assert_eq!(Refusal::Missing.code(), ErrorCode::TokenMissing);
        assert_eq!(Refusal::BadSignature.code(), ErrorCode::TokenBadSignature);
        assert!(
            Refusal::BadSignature
                .www_authenticate()
                .contains("invalid_token")
        );
        assert!(
            Refusal::WrongScope {
                needed: Scope::NodeWrite,
                held: vec![]
            }
            .www_authenticate()
            .contains("insufficient_scope")
        );
    }
}
