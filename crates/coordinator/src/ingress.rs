//! The coordinator's ingress: `http://<listen>/app/<name>/…` proxied to a running replica, with
//! the replicas read straight from the coordinator's own app table (no HTTP round trip, no
//! cache to go stale). The proxy itself is `tabbify-ingress`.

use crate::service::Service;
use std::sync::Arc;
use tabbify_ingress::{AppLookup, EndpointSource, SourceError};
use tabbify_wire::app::AppName;

/// Replicas reported running on online nodes, from the store; never an address outside the
/// mesh (see `replica_address::proxyable`).
pub struct StoreEndpoints {
    pub service: Arc<Service>,
}

impl EndpointSource for StoreEndpoints {
    async fn lookup(&self, app: &AppName) -> Result<AppLookup, SourceError> {
        let name = app.clone();
        let loopback_ok = self.service.settings.guards.allow_loopback_replicas;
        let found = self
            .service
            .read(move |s| s.app_endpoints(&name, loopback_ok))
            .await
            .map_err(SourceError::from_error)?;
        Ok(match found {
            None => AppLookup::Unknown,
            Some(e) => AppLookup::Replicas(e.endpoints),
        })
    }
}
