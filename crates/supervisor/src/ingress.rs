//! `--ingress ADDR`: this node serves `http://ADDR/app/<name>/…` for operators and clients
//! outside the mesh, and proxies each request over the mesh to a running replica wherever it
//! runs. Where the replicas are comes from the coordinator (`/v1/apps/{name}/endpoints` with this
//! node's client certificate, cached for a second); the proxy is `tabbify-ingress`.

use anyhow::{Context, Result};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tabbify_client::CoordinatorClient;
use tabbify_ingress::{AppLookup, CoordinatorEndpoints, EndpointSource, Ingress, SourceError};
use tabbify_wire::Ipv6Prefix;
use tabbify_wire::app::AppName;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct IngressServer {
    pub addr: SocketAddr,
    /// The peer credential its lookups use (`None` with mTLS); a new registration with another
    /// one restarts it.
    pub credential: Option<String>,
    stop: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
}

impl IngressServer {
    pub async fn start(
        bind: SocketAddr,
        client: CoordinatorClient,
        credential: Option<String>,
        mesh: Ipv6Prefix,
    ) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .with_context(|| format!("binding the ingress on {bind}"))?;
        let addr = listener.local_addr().context("ingress address")?;
        let source = MeshOnly {
            inner: CoordinatorEndpoints::new(client, credential.clone()),
            mesh,
        };
        let app = axum::Router::new().merge(Ingress::new(source).router());
        let (stop, mut stop_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            })
            .await
        });
        tracing::info!(%addr, "ingress listening");
        println!("tabbify-supervisor ingress on http://{addr}/app/<name>/");
        Ok(Self {
            addr,
            credential,
            stop,
            task,
        })
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .is_err()
        {
            tracing::warn!("ingress did not stop within 5s");
        }
    }
}

/// The coordinator's endpoints, of which only app addresses inside the mesh are used: whatever
/// a coordinator (or a node that fooled an older one) says, this ingress never proxies to the
/// metadata service, a LAN host or this machine's loopback. A node's own `::1` (its control
/// API) is not an app address either.
struct MeshOnly {
    inner: CoordinatorEndpoints,
    mesh: Ipv6Prefix,
}

impl EndpointSource for MeshOnly {
    async fn lookup(&self, app: &AppName) -> Result<AppLookup, SourceError> {
        Ok(match self.inner.lookup(app).await? {
            AppLookup::Replicas(mut found) => {
                found.retain(|addr| {
                    let ok = in_mesh(*addr, self.mesh);
                    if !ok {
                        tracing::warn!(%app, %addr, "the coordinator named a replica outside the mesh; not proxying to it");
                    }
                    ok
                });
                AppLookup::Replicas(found)
            }
            other => other,
        })
    }
}

/// An app address in the mesh: inside `mesh`, with a host number of 2 or more in its /64.
fn in_mesh(addr: SocketAddr, mesh: Ipv6Prefix) -> bool {
    match addr.ip().to_canonical() {
        // Truncation keeps the low 64 bits: the host's number within its /64.
        IpAddr::V6(v6) => mesh.contains(v6) && (u128::from(v6) as u64) >= 2,
        IpAddr::V4(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_app_addresses_in_the_mesh_are_proxied_to() {
        let mesh: Ipv6Prefix = "fd12:3456:789a::/48".parse().unwrap();
        let ok = |s: &str| in_mesh(s.parse().unwrap(), mesh);
        assert!(ok("[fd12:3456:789a:7::2]:8080"));
        assert!(!ok("[fd12:3456:789a:7::1]:8730"));
        assert!(!ok("[fd12:3456:789a:7::]:8080"));
        assert!(!ok("[fd99:3456:789a:7::2]:8080"));
        assert!(!ok("169.254.169.254:80"));
        assert!(!ok("[::ffff:169.254.169.254]:80"));
        assert!(!ok("127.0.0.1:8080"));
        assert!(!ok("[::1]:8080"));
    }
}
