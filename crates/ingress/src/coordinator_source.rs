//! The [`EndpointSource`] a node's ingress uses: the coordinator's
//! `GET /v1/apps/{name}/endpoints`, remembered for a short while so a busy app costs the
//! coordinator one request per second, not one per request.

use crate::cache::LookupCache;
use crate::source::{AppLookup, EndpointSource, SourceError};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tabbify_client::CoordinatorClient;
use tabbify_wire::app::AppName;

/// How long an answer is used before asking again.
pub const DEFAULT_TTL: Duration = Duration::from_secs(1);
/// How long an older answer is still used when the coordinator cannot be asked.
pub const DEFAULT_STALE_FOR: Duration = Duration::from_secs(60);

/// Replicas as the coordinator reports them, cached. Concurrent misses for one app may each ask
/// the coordinator; with a one-second cache that is a burst per second at most.
#[derive(Debug)]
pub struct CoordinatorEndpoints {
    client: CoordinatorClient,
    /// `None`: the client's certificate identifies the node (mTLS).
    token: Option<String>,
    cache: Mutex<LookupCache>,
}

impl CoordinatorEndpoints {
    /// `token` is the admin token or, without mTLS, the node's peer credential; with mTLS a
    /// node passes `None` and its client certificate identifies it.
    pub fn new(client: CoordinatorClient, token: Option<String>) -> Self {
        Self::with_ttl(client, token, DEFAULT_TTL, DEFAULT_STALE_FOR)
    }

    pub fn with_ttl(
        client: CoordinatorClient,
        token: Option<String>,
        ttl: Duration,
        stale_for: Duration,
    ) -> Self {
        Self {
            client,
            token,
            cache: Mutex::new(LookupCache::new(ttl, stale_for)),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, LookupCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn ask(&self, app: &AppName) -> Result<AppLookup, tabbify_client::ClientError> {
        match self.client.app_endpoints(self.token.as_deref(), app).await {
            Ok(answer) => Ok(AppLookup::Replicas(answer.endpoints)),
            Err(e) if e.status() == Some(404) => Ok(AppLookup::Unknown),
            Err(e) => Err(e),
        }
    }
}

impl EndpointSource for CoordinatorEndpoints {
    async fn lookup(&self, app: &AppName) -> Result<AppLookup, SourceError> {
        if let Some(hit) = self.cache().fresh(app, Instant::now()) {
            return Ok(hit.clone());
        }
        match self.ask(app).await {
            Ok(lookup) => {
                self.cache()
                    .put(app.clone(), lookup.clone(), Instant::now());
                Ok(lookup)
            }
            Err(e) => {
                if let Some(stale) = self.cache().stale(app, Instant::now()) {
                    tracing::warn!(%app, error = %e, "cannot ask the coordinator for the app's replicas; using the last answer");
                    return Ok(stale.clone());
                }
                Err(SourceError::from_error(e))
            }
        }
    }
}
