//! Starting and stopping the control API listener. Binding the node's ULA can race the kernel
//! finishing the address setup on the TUN device, so binding retries briefly.

use crate::api::{ApiState, router};
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct ApiServer {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
}

impl ApiServer {
    pub async fn start(bind: SocketAddr, state: ApiState) -> Result<Self> {
        let listener = bind_with_retry(bind).await?;
        let addr = listener.local_addr().context("control API address")?;
        let (stop, mut stop_rx) = watch::channel(false);
        let app = router(state);
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                })
                .await
        });
        tracing::info!(%addr, "control API listening");
        println!(
            "tabbify-supervisor listening on http://{}",
            display_addr(addr)
        );
        Ok(Self { addr, stop, task })
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        match tokio::time::timeout(Duration::from_secs(5), self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "control API ended with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "control API task failed"),
            Err(_) => tracing::warn!("control API did not stop within 5s"),
        }
    }
}

/// `[v6]:port` or `v4:port`, as a URL authority.
fn display_addr(addr: SocketAddr) -> String {
    addr.to_string()
}

async fn bind_with_retry(bind: SocketAddr) -> Result<TcpListener> {
    let mut last = None;
    for _ in 0..50 {
        match TcpListener::bind(bind).await {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("binding the control API on {bind}"));
            }
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("unknown")))
        .with_context(|| format!("binding the control API on {bind} (address never appeared)"))
}
