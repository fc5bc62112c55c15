//! Who may use the control API over TCP: a request other than `/health` carries an operator token
//! signed by the key this node trusts, with `node:read` for reads (GET, HEAD) and `node:write`
//! for everything else, and not limited to other nodes. Tokens are checked offline (see
//! `tabbify-auth`); a refused request gets 401 with the reason and reaches no handler, so nothing
//! changes. Root on the node uses the unix socket instead, which has no token check.
//!
//! The key is the coordinator's, pinned in `<data-dir>/signing-key.pub` at join and kept when
//! the coordinator is down, or with `--no-mesh` a node-local key that signs the token written to
//! `<data-dir>/control-token`.

use crate::api::ApiState;
use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tabbify_auth::{Grant, NodeFacts, Refusal, Requirement, Scope, SigningKey, VerifyingKey};
use tabbify_wire::{ErrorBody, ErrorCode};

/// The coordinator's public key, pinned at join.
pub const PINNED_KEY_FILE: &str = "signing-key.pub";
/// `--no-mesh`: the node's own signing key (0600).
pub const LOCAL_KEY_FILE: &str = "local-signing-key";
/// `--no-mesh`: the operator token for this node (0600).
pub const CONTROL_TOKEN_FILE: &str = "control-token";
/// Lifetime of the `--no-mesh` token; it is written again well before it expires.
pub const LOCAL_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
const LOCAL_TOKEN_REFRESH: Duration = Duration::from_secs(24 * 3600);

/// The key tokens are checked with; `None` until the node has one. Clone freely.
#[derive(Clone, Default)]
pub struct TrustedKey(Arc<RwLock<Option<VerifyingKey>>>);

impl TrustedKey {
    pub fn new(key: Option<VerifyingKey>) -> Self {
        Self(Arc::new(RwLock::new(key)))
    }

    pub fn get(&self) -> Option<VerifyingKey> {
        *self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set(&self, key: VerifyingKey) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(key);
    }
}

/// The key pinned in `data_dir`, if any. A file that is there but unreadable is logged and
/// ignored: the node then refuses every token until it joins again (fail closed).
pub fn load_pinned(data_dir: &Path) -> Option<VerifyingKey> {
    let path = data_dir.join(PINNED_KEY_FILE);
    if !path.exists() {
        return None;
    }
    match VerifyingKey::load(&path) {
        Ok(k) => Some(k),
        Err(e) => {
            tracing::error!(error = %e, "ignoring the pinned signing key");
            None
        }
    }
}

/// Pins the key a registration carried (`tbfk_…`): saved to the data dir when it is new or
/// changed (the coordinator rotated it), then used for every later request.
pub fn pin(data_dir: &Path, trusted: &TrustedKey, text: &str) {
    let key = match VerifyingKey::from_text(text) {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = %e, "the coordinator sent a signing key that does not parse; keeping the old one");
            return;
        }
    };
    match trusted.get() {
        Some(old) if old == key => return,
        Some(old) => {
            tracing::warn!(old = %old, new = %key, "the coordinator's signing key changed; tokens signed with the old key are refused from now on")
        }
        None => tracing::info!(key = %key, "pinned the coordinator's signing key"),
    }
    if let Err(e) = key.save(&data_dir.join(PINNED_KEY_FILE)) {
        tracing::error!(error = %e, "could not save the pinned signing key (used until restart)");
    }
    trusted.set(key);
}

/// `--no-mesh`: loads or creates the node-local key, writes a fresh token to
/// `<data-dir>/control-token` (0600) and keeps rewriting it before it expires. Returns the key
/// tokens are checked with and the token file's path.
pub fn start_local_tokens(data_dir: &Path) -> anyhow::Result<(VerifyingKey, PathBuf)> {
    use anyhow::Context;
    let (key, _) = SigningKey::load_or_create(&data_dir.join(LOCAL_KEY_FILE))
        .context("the node-local signing key")?;
    let path = data_dir.join(CONTROL_TOKEN_FILE);
    write_local_token(&key, &path).with_context(|| format!("writing {}", path.display()))?;
    let (k, p) = (key.clone(), path.clone());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(LOCAL_TOKEN_REFRESH).await;
            if let Err(e) = write_local_token(&k, &p) {
                tracing::error!(error = %e, path = %p.display(), "could not renew the local control token");
            }
        }
    });
    Ok((key.verifying_key(), path))
}

fn write_local_token(key: &SigningKey, path: &Path) -> std::io::Result<()> {
    let grant = Grant {
        subject: "local".into(),
        scopes: vec![Scope::NodeRead, Scope::NodeWrite],
        ttl_secs: LOCAL_TOKEN_TTL.as_secs(),
        nodes: None,
        tags: None,
    };
    let (token, _) = tabbify_auth::mint(key, &grant, unix_now());
    tabbify_fsutil::atomic_write(path, format!("{token}\n").as_bytes(), 0o600)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The scope a request needs: reads need `node:read`, anything else `node:write`.
pub fn scope_for(method: &Method) -> Scope {
    if method == Method::GET || method == Method::HEAD {
        Scope::NodeRead
    } else {
        Scope::NodeWrite
    }
}

/// Paths open to anyone who reaches the port (the spec's verify commands use `/health`).
fn is_open(path: &str) -> bool {
    path == "/health"
}

/// Axum middleware of the TCP listener.
pub async fn require_token(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    if is_open(req.uri().path()) {
        return next.run(req).await;
    }
    let scope = scope_for(req.method());
    let token = tabbify_auth::bearer_value(
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    let Some(key) = st.trusted_key.get() else {
        return refuse(
            &req,
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "this node has no signing key to check operator tokens with yet (it has not joined a \
             coordinator); use the unix control socket",
            "Bearer realm=\"tabbify\"",
        );
    };
    let status = st.status.snapshot();
    let need = Requirement {
        scope,
        node: Some(NodeFacts {
            name: &status.name,
            tags: &status.tags,
        }),
    };
    match tabbify_auth::verify(token, &key, unix_now(), &need) {
        Ok(claims) => {
            if scope == Scope::NodeWrite {
                tracing::info!(subject = %claims.sub, token_id = %claims.jti, method = %req.method(), path = %req.uri().path(), "control API change authorised");
            }
            next.run(req).await
        }
        Err(r) => refusal(&req, &r),
    }
}

fn refusal(req: &Request, r: &Refusal) -> Response {
    refuse(
        req,
        StatusCode::UNAUTHORIZED,
        r.code(),
        &r.to_string(),
        r.www_authenticate(),
    )
}

fn refuse(
    req: &Request,
    status: StatusCode,
    code: ErrorCode,
    message: &str,
    challenge: &'static str,
) -> Response {
    tracing::warn!(method = %req.method(), path = %req.uri().path(), reason = %message, "control API request refused");
    let mut resp = (status, Json(ErrorBody::new(code, message))).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    if !(req.method() == Method::GET || req.method() == Method::HEAD) {
        // The body (an upload, maybe large) is left unread: the connection cannot carry another
        // request, and saying so keeps a client from racing the close.
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_and_writes() {
        assert_eq!(scope_for(&Method::GET), Scope::NodeRead);
        assert_eq!(scope_for(&Method::HEAD), Scope::NodeRead);
        for m in [
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::OPTIONS,
        ] {
            assert_eq!(scope_for(&m), Scope::NodeWrite, "{m}");
        }
        assert!(is_open("/health"));
        assert!(!is_open("/health/"));
        assert!(!is_open("/v1/apps"));
    }

    #[test]
    fn pinning_saves_and_replaces_the_key() {
        let d = tempfile::tempdir().unwrap();
        let trusted = TrustedKey::default();
        assert_eq!(load_pinned(d.path()), None);
        let a = SigningKey::from_seed([1; 32]).verifying_key();
        pin(d.path(), &trusted, &a.to_text());
        assert_eq!(trusted.get(), Some(a));
        assert_eq!(load_pinned(d.path()), Some(a));
        pin(d.path(), &trusted, "tbfk_junk");
        assert_eq!(trusted.get(), Some(a), "junk keeps the old key");
        let b = SigningKey::from_seed([2; 32]).verifying_key();
        pin(d.path(), &trusted, &b.to_text());
        assert_eq!(load_pinned(d.path()), Some(b));
    }

    #[tokio::test]
    async fn local_tokens_are_private_and_verify_with_the_local_key() {
        let d = tempfile::tempdir().unwrap();
        let (key, path) = start_local_tokens(d.path()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let token = std::fs::read_to_string(&path).unwrap();
        let need = Requirement {
            scope: Scope::NodeWrite,
            node: Some(NodeFacts {
                name: "any",
                tags: &[],
            }),
        };
        tabbify_auth::verify(Some(&token), &key, unix_now(), &need).unwrap();
        // Same key on the next start.
        let (again, _) = start_local_tokens(d.path()).unwrap();
        assert_eq!(again, key);
    }
}
