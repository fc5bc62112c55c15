//! Operator tokens at the coordinator: the signing key kept in the data dir, and the check of
//! a mint request (pure). Minted tokens are shown once and never stored or logged: a node checks
//! them with the public key alone.

use std::path::Path;
use std::time::Duration;
use tabbify_auth::{Grant, SigningKey};
use tabbify_wire::operator::{CreateOperatorTokenRequest, Scope};

/// File name of the signing key inside the data dir (mode 0600, written atomically).
pub const SIGNING_KEY_FILE: &str = "signing-key";
/// The public key's text form, written beside it at every start (mode 0644).
pub const PUBLIC_KEY_FILE: &str = "signing-key.pub";
/// Lifetime of a token when the request names none: a working day.
pub const DEFAULT_TTL: Duration = Duration::from_secs(12 * 3600);
/// Longest lifetime a token may get. Tokens cannot be revoked one by one (they are checked
/// offline), so they are kept short; rotating the signing key revokes them all.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Shortest lifetime worth minting.
pub const MIN_TTL: Duration = Duration::from_secs(10);
const MAX_NAMES: usize = 256;
const MAX_NAME_LEN: usize = 128;

/// Reads `<data_dir>/signing-key`, creating it on the first start.
pub fn load_or_create_signing_key(data_dir: &Path) -> Result<SigningKey, tabbify_auth::KeyError> {
    let path = data_dir.join(SIGNING_KEY_FILE);
    let (key, created) = SigningKey::load_or_create(&path)?;
    // The public half beside it, for an appsrv on this host (`--token-key-file`).
    key.verifying_key().save(&data_dir.join(PUBLIC_KEY_FILE))?;
    if created {
        tracing::info!(path = %path.display(), public_key = %key.verifying_key(), "created the operator-token signing key");
    } else {
        tracing::info!(public_key = %key.verifying_key(), "operator-token signing key loaded");
    }
    Ok(key)
}

/// Checks a mint request and turns it into what to sign; the error is the 400's message.
pub fn check_request(req: &CreateOperatorTokenRequest) -> Result<Grant, String> {
    if req.scopes.is_empty() {
        return Err(
            "scopes: name at least one of node:read, node:write, artifacts:write, mesh:read".into(),
        );
    }
    let ttl = req.ttl_secs.map(Duration::from_secs).unwrap_or(DEFAULT_TTL);
    if ttl < MIN_TTL || ttl > MAX_TTL {
        return Err(format!(
            "ttl_secs must be between {} and {} (got {})",
            MIN_TTL.as_secs(),
            MAX_TTL.as_secs(),
            ttl.as_secs()
        ));
    }
    let subject = req.subject.clone().unwrap_or_else(|| "operator".into());
    check_name("subject", &subject)?;
    if let Some(nodes) = &req.nodes {
        if nodes.is_empty() || nodes.len() > MAX_NAMES {
            return Err(format!(
                "nodes: give between 1 and {MAX_NAMES} names, or leave it out for every node"
            ));
        }
        for n in nodes {
            check_name("nodes", n)?;
        }
    }
    if let Some(tags) = &req.tags
        && (tags.is_empty() || tags.len() > MAX_NAMES)
    {
        return Err(format!(
            "tags: give between 1 and {MAX_NAMES} tags, or leave it out for every node"
        ));
    }
    if req.scopes.contains(&Scope::MeshRead) && (req.nodes.is_some() || req.tags.is_some()) {
        return Err(
            "mesh:read reads the whole roster, so a token that grants it cannot be limited to \
             nodes or tags; mint it separately"
                .into(),
        );
    }
    Ok(Grant {
        subject,
        scopes: req.scopes.clone(),
        ttl_secs: ttl.as_secs(),
        nodes: req.nodes.clone(),
        tags: req.tags.clone(),
    })
}

fn check_name(field: &str, name: &str) -> Result<(), String> {
    if name.trim().is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(format!(
            "{field}: {name:?} must be 1 to {MAX_NAME_LEN} printable characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tabbify_wire::Tag;

    fn req(scopes: &[Scope]) -> CreateOperatorTokenRequest {
        CreateOperatorTokenRequest {
            scopes: scopes.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults() {
        let g = check_request(&req(&[Scope::NodeRead])).unwrap();
        assert_eq!(g.ttl_secs, DEFAULT_TTL.as_secs());
        assert_eq!(g.subject, "operator");
        assert_eq!((g.nodes, g.tags), (None, None));
    }

    #[test]
    fn refusals() {
        assert!(check_request(&req(&[])).unwrap_err().contains("scopes"));
        for ttl in [0, 9, MAX_TTL.as_secs() + 1, u64::MAX] {
            let r = CreateOperatorTokenRequest {
                ttl_secs: Some(ttl),
                ..req(&[Scope::NodeRead])
            };
            assert!(check_request(&r).unwrap_err().contains("ttl_secs"), "{ttl}");
        }
        let r = CreateOperatorTokenRequest {
            nodes: Some(vec![]),
            ..req(&[Scope::NodeRead])
        };
        assert!(check_request(&r).unwrap_err().contains("nodes"));
        let r = CreateOperatorTokenRequest {
            nodes: Some(vec!["ok".into(), "bad\nname".into()]),
            ..req(&[Scope::NodeRead])
        };
        assert!(check_request(&r).unwrap_err().contains("printable"));
        let r = CreateOperatorTokenRequest {
            subject: Some(" ".into()),
            ..req(&[Scope::NodeRead])
        };
        assert!(check_request(&r).unwrap_err().contains("subject"));
        let r = CreateOperatorTokenRequest {
            tags: Some(vec![]),
            ..req(&[Scope::NodeRead])
        };
        assert!(check_request(&r).unwrap_err().contains("tags"));
    }

    #[test]
    fn limits_are_kept() {
        let r = CreateOperatorTokenRequest {
            ttl_secs: Some(MAX_TTL.as_secs()),
            nodes: Some(vec!["a".into()]),
            tags: Some(vec![Tag::new("eu").unwrap()]),
            subject: Some("ci".into()),
            ..req(&[Scope::ArtifactsWrite])
        };
        let g = check_request(&r).unwrap();
        assert_eq!(g.ttl_secs, MAX_TTL.as_secs());
        assert_eq!(g.nodes, Some(vec!["a".to_string()]));
        assert_eq!(g.subject, "ci");
    }

    #[test]
    fn the_signing_key_is_kept_across_starts() {
        let d = tempfile::tempdir().unwrap();
        let a = load_or_create_signing_key(d.path()).unwrap();
        let b = load_or_create_signing_key(d.path()).unwrap();
        assert_eq!(a.verifying_key(), b.verifying_key());
    }

    #[test]
    fn mesh_read_cannot_be_limited_to_nodes() {
        let limited = CreateOperatorTokenRequest {
            nodes: Some(vec!["edge-1".into()]),
            ..req(&[Scope::NodeRead, Scope::MeshRead])
        };
        let err = check_request(&limited).unwrap_err();
        assert!(err.contains("mesh:read"), "{err}");
        let tagged = CreateOperatorTokenRequest {
            tags: Some(vec![Tag::new("eu").unwrap()]),
            ..req(&[Scope::MeshRead])
        };
        assert!(check_request(&tagged).is_err());
        assert!(check_request(&req(&[Scope::MeshRead])).is_ok());
    }
}
