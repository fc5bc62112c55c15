//! HTTP client for the coordinator's API, used by the supervisor (register, heartbeat, watch) and
//! by `tcli` (roster, join tokens). Every call returns the coordinator's [`ErrorBody`] on failure,
//! so callers can tell a refused join token from an unreachable coordinator.

mod apps;
mod operator;
mod removed;
mod watch;

pub use apps::AppChange;
pub use tabbify_pki::{CaFingerprint, ClientCertSlot, ServerTrust};
pub use watch::WatchMessage;

use futures_util::Stream;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;
use tabbify_wire::health::CoordinatorHealth;
use tabbify_wire::mesh::{
    HeartbeatRequest, HeartbeatResponse, Peer, PeerList, RegisterRequest, RegisterResponse,
    RenewCertificateRequest, RenewCertificateResponse,
};
use tabbify_wire::token::{CreateJoinTokenRequest, CreatedJoinToken, JoinTokenList};
use tabbify_wire::{ErrorBody, ErrorCode, Tag};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("coordinator URL {0:?} is not valid: use http://host:port or https://host:port")]
    BadUrl(String),
    #[error("cannot reach the coordinator at {url}: {detail}")]
    Transport {
        url: String,
        /// The whole cause chain on one line (a refused certificate says why only deep down).
        detail: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot set up TLS for {url}: {detail}")]
    Tls { url: String, detail: String },
    #[error("coordinator refused {what} ({status}): {body}")]
    Api {
        what: String,
        status: u16,
        body: ErrorBody,
    },
    #[error("coordinator sent a response to {what} that does not parse: {detail}")]
    Decode { what: String, detail: String },
}

impl ClientError {
    /// The coordinator's error code, when it answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { body, .. } => Some(body.error),
            _ => None,
        }
    }

    /// HTTP status, when the coordinator answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when retrying later might succeed (network trouble or a 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport { .. } | ClientError::Decode { .. } => true,
            ClientError::Api { status, .. } => *status >= 500 || *status == 429,
            ClientError::BadUrl(_) | ClientError::Tls { .. } => false,
        }
    }
}

const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(4);

/// How to talk TLS to a coordinator (or an appsrv): how to trust it, and the node's client
/// certificate if it has one.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub trust: ServerTrust,
    pub identity: Option<std::sync::Arc<ClientCertSlot>>,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            trust: ServerTrust::System,
            identity: None,
        }
    }
}

/// `err` and every cause under it, `: `-separated.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

/// An HTTP client with `tls` (used for `https://` URLs only).
pub fn http_client(url: &str, tls: &TlsSettings) -> Result<reqwest::Client, ClientError> {
    let config =
        tabbify_pki::tls::client_config(&tls.trust, tls.identity.clone()).map_err(|e| {
            ClientError::Tls {
                url: url.into(),
                detail: e.to_string(),
            }
        })?;
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .use_preconfigured_tls(config)
        .build()
        .map_err(|e| ClientError::Tls {
            url: url.into(),
            detail: error_chain(&e),
        })
}

/// A handle on one coordinator. Cheap to clone; clones share the connection pool.
#[derive(Debug, Clone)]
pub struct CoordinatorClient {
    base: String,
    tls: TlsSettings,
    /// Swapped by [`CoordinatorClient::reset_connections`].
    http: std::sync::Arc<std::sync::RwLock<reqwest::Client>>,
}

impl CoordinatorClient {
    /// `base` is `http://host:port` or `https://host:port` (a trailing slash is fine); an
    /// `https` coordinator is trusted by the public web PKI roots.
    pub fn new(base: &str) -> Result<Self, ClientError> {
        Self::with_tls(base, &TlsSettings::default())
    }

    /// Like [`CoordinatorClient::new`], trusting the server and presenting a client
    /// certificate as `tls` says.
    pub fn with_tls(base: &str, tls: &TlsSettings) -> Result<Self, ClientError> {
        let trimmed = base.trim().trim_end_matches('/');
        let parsed = reqwest::Url::parse(trimmed).map_err(|_| ClientError::BadUrl(base.into()))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(ClientError::BadUrl(base.into()));
        }
        let http = http_client(trimmed, tls)?;
        Ok(Self {
            base: trimmed.to_string(),
            tls: tls.clone(),
            http: std::sync::Arc::new(std::sync::RwLock::new(http)),
        })
    }

    pub(crate) fn http(&self) -> reqwest::Client {
        match self.http.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Drops pooled connections: later requests open new ones, presenting the client
    /// certificate as it is now (call after a certificate was issued or renewed). Open streams
    /// keep their connections.
    pub fn reset_connections(&self) -> Result<(), ClientError> {
        let fresh = http_client(&self.base, &self.tls)?;
        match self.http.write() {
            Ok(mut c) => *c = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// How this client trusts servers: the mesh's other services (the appsrv) are trusted the
    /// same way (see [`http_client`]).
    pub fn tls_settings(&self) -> &TlsSettings {
        &self.tls
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http()
            .request(method, format!("{}{}", self.base, path))
            .timeout(Duration::from_secs(30))
    }

    async fn send<T: DeserializeOwned>(
        &self,
        what: &str,
        req: RequestBuilder,
    ) -> Result<T, ClientError> {
        let resp = self.send_raw(what, req).await?;
        let bytes = resp.bytes().await.map_err(|e| self.transport(e))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            what: what.into(),
            detail: e.to_string(),
        })
    }

    async fn send_raw(
        &self,
        what: &str,
        req: RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let resp = req.send().await.map_err(|e| self.transport(e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let bytes = resp.bytes().await.unwrap_or_default();
        Err(api_error(what, status, &bytes))
    }

    fn transport(&self, source: reqwest::Error) -> ClientError {
        ClientError::Transport {
            url: self.base.clone(),
            detail: error_chain(&source),
            source,
        }
    }

    fn json<B: Serialize>(&self, method: Method, path: &str, body: &B) -> RequestBuilder {
        self.request(method, path).json(body)
    }

    pub async fn health(&self) -> Result<CoordinatorHealth, ClientError> {
        self.send("health", self.request(Method::GET, "/health"))
            .await
    }

    /// Registers (or re-registers) a node. `join_token` is needed for a key the coordinator does
    /// not know yet; a known key proves itself with `req.peer_credential` instead.
    pub async fn register(
        &self,
        join_token: Option<&str>,
        req: &RegisterRequest,
    ) -> Result<RegisterResponse, ClientError> {
        let mut r = self.json(Method::POST, "/v1/mesh/register", req);
        if let Some(t) = join_token {
            r = r.bearer_auth(t);
        }
        self.send("register", r).await
    }

    /// `credential`: the peer credential, with a coordinator that runs `--insecure-no-mtls`;
    /// otherwise `None`, and the client certificate identifies the node.
    pub async fn heartbeat(
        &self,
        credential: Option<&str>,
        req: &HeartbeatRequest,
    ) -> Result<HeartbeatResponse, ClientError> {
        // Short: a heartbeat stuck on a dead connection (say, our address just changed) must
        // fail fast so the next one goes out on a fresh connection.
        let r = self
            .json(Method::POST, "/v1/mesh/heartbeat", req)
            .timeout(HEARTBEAT_TIMEOUT);
        self.send("heartbeat", with_bearer(r, credential)).await
    }

    /// Renews the node's client certificate (mTLS: the current one authenticates the call).
    pub async fn renew_certificate(
        &self,
        req: &RenewCertificateRequest,
    ) -> Result<RenewCertificateResponse, ClientError> {
        let r = self.json(Method::POST, "/v1/mesh/certificate", req);
        self.send("renew certificate", r).await
    }

    /// Revokes every certificate of a peer (admin).
    pub async fn revoke_certificates(
        &self,
        admin_token: &str,
        peer_id: &str,
    ) -> Result<(), ClientError> {
        let r = self
            .request(
                Method::POST,
                &format!("/v1/mesh/peers/{peer_id}/revoke-certificates"),
            )
            .bearer_auth(admin_token);
        self.send_raw("revoke certificates", r).await.map(drop)
    }

    /// The roster. `token`: the admin token, or (without mTLS) a peer credential; a node with
    /// mTLS passes `None`.
    pub async fn peers(
        &self,
        token: Option<&str>,
        tag: Option<&Tag>,
    ) -> Result<PeerList, ClientError> {
        let mut r = self.request(Method::GET, "/v1/mesh/peers");
        if let Some(t) = tag {
            r = r.query(&[("tag", t.as_str())]);
        }
        self.send("list peers", with_bearer(r, token)).await
    }

    pub async fn peer(&self, token: Option<&str>, peer_id: &str) -> Result<Peer, ClientError> {
        let r = self.request(Method::GET, &format!("/v1/mesh/peers/{peer_id}"));
        self.send("get peer", with_bearer(r, token)).await
    }

    /// Removes a peer from the roster (admin).
    pub async fn remove_peer(&self, admin_token: &str, peer_id: &str) -> Result<(), ClientError> {
        let r = self
            .request(Method::DELETE, &format!("/v1/mesh/peers/{peer_id}"))
            .bearer_auth(admin_token);
        self.send_raw("remove peer", r).await.map(drop)
    }

    pub async fn create_join_token(
        &self,
        admin_token: &str,
        req: &CreateJoinTokenRequest,
    ) -> Result<CreatedJoinToken, ClientError> {
        let r = self
            .json(Method::POST, "/v1/admin/join-tokens", req)
            .bearer_auth(admin_token);
        self.send("create join token", r).await
    }

    pub async fn list_join_tokens(&self, admin_token: &str) -> Result<JoinTokenList, ClientError> {
        let r = self
            .request(Method::GET, "/v1/admin/join-tokens")
            .bearer_auth(admin_token);
        self.send("list join tokens", r).await
    }

    pub async fn revoke_join_token(&self, admin_token: &str, id: &str) -> Result<(), ClientError> {
        let r = self
            .request(Method::DELETE, &format!("/v1/admin/join-tokens/{id}"))
            .bearer_auth(admin_token);
        self.send_raw("revoke join token", r).await.map(drop)
    }

    /// Follows the roster from `since` (exclusive). The stream ends when the connection drops;
    /// the caller reconnects with the last revision it saw.
    pub async fn watch(
        &self,
        token: Option<&str>,
        since: Option<u64>,
    ) -> Result<impl Stream<Item = Result<WatchMessage, ClientError>> + use<>, ClientError> {
        let mut r = with_bearer(
            self.http().get(format!("{}/v1/mesh/watch", self.base)),
            token,
        );
        if let Some(rev) = since {
            r = r.query(&[("since", rev)]);
        }
        let resp = self.send_raw("watch", r).await?;
        Ok(watch::parse_stream(resp.bytes_stream()))
    }
}

/// Adds `Authorization: Bearer` when there is something to send.
pub(crate) fn with_bearer(r: RequestBuilder, token: Option<&str>) -> RequestBuilder {
    match token {
        Some(t) => r.bearer_auth(t),
        None => r,
    }
}

/// The error for a non-2xx answer: the server's ErrorBody, or its first 500 characters.
fn api_error(what: &str, status: StatusCode, body: &[u8]) -> ClientError {
    let body = serde_json::from_slice::<ErrorBody>(body).unwrap_or_else(|_| {
        let text = String::from_utf8_lossy(body);
        ErrorBody::new(
            fallback_code(status),
            text.chars().take(500).collect::<String>(),
        )
    });
    ClientError::Api {
        what: what.into(),
        status: status.as_u16(),
        body,
    }
}

fn fallback_code(status: StatusCode) -> ErrorCode {
    match status.as_u16() {
        400 => ErrorCode::BadRequest,
        401 => ErrorCode::Unauthorized,
        403 => ErrorCode::Forbidden,
        404 => ErrorCode::NotFound,
        409 => ErrorCode::Conflict,
        413 => ErrorCode::PayloadTooLarge,
        500..=599 => ErrorCode::Internal,
        _ => ErrorCode::Other,
    }
}

/// GETs any of our JSON endpoints (e.g. a supervisor's `/health`).
pub async fn get_json<T: DeserializeOwned>(url: &str) -> Result<T, ClientError> {
    let resp = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|source| ClientError::Transport {
            url: url.into(),
            detail: error_chain(&source),
            source,
        })?;
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|source| ClientError::Transport {
            url: url.into(),
            detail: error_chain(&source),
            source,
        })?;
    if !status.is_success() {
        return Err(api_error(url, status, &bytes));
    }
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
        what: url.into(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_base_urls() {
        for bad in ["", "localhost:8888", "ftp://x", "http://"] {
            assert!(
                matches!(CoordinatorClient::new(bad), Err(ClientError::BadUrl(_))),
                "{bad}"
            );
        }
        let c = CoordinatorClient::new("http://127.0.0.1:8888/").unwrap();
        assert_eq!(c.base_url(), "http://127.0.0.1:8888");
    }
}
