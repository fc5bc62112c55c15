//! Operator tokens on the operator's side: `tcli login` mints one with the admin token and
//! caches it (0600, one file per coordinator under `$XDG_CACHE_HOME/tabbify/`, else
//! `~/.cache/tabbify/`); commands that call a node's control API take the cached one while it
//! is current and has the scope they need, and mint a new one otherwise, without asking.
//! `TABBIFY_OPERATOR_TOKEN` overrides both (a token handed to a script).

use anyhow::{Context, Result};
use sha2::Digest;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tabbify_auth::{Claims, Scope};
use tabbify_client::CoordinatorClient;
use tabbify_wire::operator::{CreateOperatorTokenRequest, CreatedOperatorToken};

/// A cached token is renewed when it has less than this left.
const RENEW_BEFORE: Duration = Duration::from_secs(120);
/// Lifetime of an upload token minted for one deploy.
pub const UPLOAD_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

/// Where the token for `coordinator` is cached.
pub fn cache_path(coordinator: &str) -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .context("neither XDG_CACHE_HOME nor HOME is set: nowhere to cache the token")?,
        )
        .join(".cache"),
    };
    let url = coordinator.trim_end_matches('/');
    let id = hex::encode(&sha2::Sha256::digest(url.as_bytes())[..8]);
    Ok(base.join("tabbify").join(format!("operator-token-{id}")))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// True when `token` still has a while to live and grants `scope` (read without checking the
/// signature: the node does that).
pub fn usable(token: &str, scope: Scope, now: u64) -> bool {
    Claims::peek_unverified(token)
        .is_some_and(|c| c.scopes.contains(&scope) && c.exp > now + RENEW_BEFORE.as_secs())
}

/// Mints a token and caches it for this coordinator.
pub async fn login(
    client: &CoordinatorClient,
    admin: &str,
    req: &CreateOperatorTokenRequest,
) -> Result<(CreatedOperatorToken, PathBuf)> {
    let created = client
        .create_operator_token(admin, req)
        .await
        .context("minting an operator token")?;
    let path = cache_path(client.base_url())?;
    if let Some(dir) = path.parent() {
        tabbify_fsutil::ensure_dir(dir, 0o700)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    tabbify_fsutil::atomic_write(&path, format!("{}\n", created.token).as_bytes(), 0o600)
        .with_context(|| format!("caching the token in {}", path.display()))?;
    Ok((created, path))
}

/// How a command gets a node token.
pub struct NodeTokens<'a> {
    pub client: &'a CoordinatorClient,
    /// Asked only when a token has to be minted.
    pub admin: &'a dyn Fn() -> Result<String>,
}

impl NodeTokens<'_> {
    /// A token for `scope`: `TABBIFY_OPERATOR_TOKEN`, else the cached one if it will do, else a
    /// new one (node:read and node:write, the coordinator's default lifetime), cached.
    pub async fn get(&self, scope: Scope) -> Result<String> {
        if let Some(t) = std::env::var("TABBIFY_OPERATOR_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
        {
            return Ok(t.trim().to_string());
        }
        if let Ok(path) = cache_path(self.client.base_url())
            && let Ok(text) = std::fs::read_to_string(&path)
            && usable(text.trim(), scope, unix_now())
        {
            return Ok(text.trim().to_string());
        }
        self.fresh().await
    }

    /// Mints and caches a new token (after a node refused the cached one, say because the
    /// signing key was rotated).
    pub async fn fresh(&self) -> Result<String> {
        let req = CreateOperatorTokenRequest {
            scopes: vec![Scope::NodeRead, Scope::NodeWrite, Scope::MeshRead],
            subject: Some(subject()),
            ..Default::default()
        };
        let (created, _) = login(self.client, &(self.admin)()?, &req).await?;
        Ok(created.token)
    }
}

/// Who the token says holds it: `$USER@tcli`.
pub fn subject() -> String {
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "operator".into());
    format!("{user}@tcli")
}

/// A short-lived `artifacts:write` token for one deploy's upload (not cached).
pub async fn upload_token(client: &CoordinatorClient, admin: &str) -> Result<String> {
    let req = CreateOperatorTokenRequest {
        scopes: vec![Scope::ArtifactsWrite],
        ttl_secs: Some(UPLOAD_TOKEN_TTL.as_secs()),
        subject: Some(subject()),
        ..Default::default()
    };
    Ok(client
        .create_operator_token(admin, &req)
        .await
        .context("minting an artifacts:write token for the upload")?
        .token)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cached_tokens_are_used_while_current_and_wide_enough() {
        let key = tabbify_auth::SigningKey::generate();
        let grant = tabbify_auth::Grant {
            subject: "t".into(),
            scopes: vec![Scope::NodeRead],
            ttl_secs: 3600,
            nodes: None,
            tags: None,
        };
        let (t, _) = tabbify_auth::mint(&key, &grant, 1000);
        assert!(usable(&t, Scope::NodeRead, 1000));
        assert!(!usable(&t, Scope::NodeWrite, 1000), "scope");
        assert!(!usable(&t, Scope::NodeRead, 4600 - 60), "about to expire");
        assert!(!usable("tbfa_admin", Scope::NodeRead, 1000));
    }

    #[test]
    fn one_cache_file_per_coordinator() {
        let a = cache_path("http://a:8888").unwrap();
        assert_eq!(a, cache_path("http://a:8888/").unwrap());
        assert_ne!(a, cache_path("http://b:8888").unwrap());
        assert!(a.to_string_lossy().contains("tabbify/operator-token-"));
    }
}
