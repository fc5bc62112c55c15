//! `--ingress ADDR`: this node serves `http://ADDR/app/<name>/…` for operators and clients
//! outside the mesh, and proxies each request over the mesh to a running replica wherever it
//! runs. Where the replicas are comes from the coordinator (`/v1/apps/{name}/endpoints` with this
//! node's client certificate, cached for a second); the proxy is `tabbify-ingress`.

use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::time::Duration;
use tabbify_client::CoordinatorClient;
use tabbify_ingress::{CoordinatorEndpoints, Ingress};
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
    ) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .with_context(|| format!("binding the ingress on {bind}"))?;
        let addr = listener.local_addr().context("ingress address")?;
        let source = CoordinatorEndpoints::new(client, credential.clone());
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
