//! Where an app's replicas are. The ingress asks an [`EndpointSource`] once per request; the
//! source decides how fresh its answer is (the coordinator reads its store, a node caches the
//! coordinator's answer).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use tabbify_wire::app::AppName;

/// What a source knows about an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppLookup {
    /// No app has this name.
    Unknown,
    /// The addresses of the app's running replicas; empty when none runs.
    Replicas(Vec<SocketAddr>),
}

/// The source could not tell (the coordinator is unreachable, its store failed).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SourceError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    /// Wraps an error, keeping it as the source and its text as the message.
    pub fn from_error(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            message: error.to_string(),
            source: Some(Box::new(error)),
        }
    }
}

/// Looks up the running replicas of an app.
pub trait EndpointSource: Send + Sync + 'static {
    fn lookup(&self, app: &AppName) -> impl Future<Output = Result<AppLookup, SourceError>> + Send;
}

impl<S: EndpointSource> EndpointSource for Arc<S> {
    fn lookup(&self, app: &AppName) -> impl Future<Output = Result<AppLookup, SourceError>> + Send {
        S::lookup(self, app)
    }
}

/// A fixed table of apps, replaceable at runtime: for tests and for a mesh without a
/// coordinator. Cheap to clone; clones share the table.
#[derive(Debug, Clone, Default)]
pub struct StaticEndpoints {
    apps: Arc<RwLock<HashMap<AppName, Vec<SocketAddr>>>>,
}

impl StaticEndpoints {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the replicas of `app` (an empty list: known, nothing running).
    pub fn set(&self, app: AppName, replicas: Vec<SocketAddr>) {
        let mut apps = self.apps.write().unwrap_or_else(|p| p.into_inner());
        apps.insert(app, replicas);
    }

    /// Forgets `app`: it reads as unknown afterwards.
    pub fn remove(&self, app: &AppName) {
        let mut apps = self.apps.write().unwrap_or_else(|p| p.into_inner());
        apps.remove(app);
    }
}

impl EndpointSource for StaticEndpoints {
    async fn lookup(&self, app: &AppName) -> Result<AppLookup, SourceError> {
        let apps = self.apps.read().unwrap_or_else(|p| p.into_inner());
        Ok(match apps.get(app) {
            Some(replicas) => AppLookup::Replicas(replicas.clone()),
            None => AppLookup::Unknown,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_endpoints_tell_unknown_from_empty() {
        let source = StaticEndpoints::new();
        let a = AppName::new("a").unwrap();
        assert_eq!(source.lookup(&a).await.unwrap(), AppLookup::Unknown);
        source.set(a.clone(), vec![]);
        assert_eq!(
            source.lookup(&a).await.unwrap(),
            AppLookup::Replicas(vec![])
        );
        let shared = Arc::new(source.clone());
        source.remove(&a);
        assert_eq!(shared.lookup(&a).await.unwrap(), AppLookup::Unknown);
    }
}
