//! Starting and stopping the control API listeners: TCP (tokens checked) and the unix socket
//! for root on the node (no token; the socket is 0600). Binding the node's ULA can race the
//! kernel finishing the address setup on the TUN device, so binding retries briefly.

use crate::api::{ApiState, authorised_router, router};
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
        let app = authorised_router(state);
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

/// The control API on a unix socket, for root on the node: the same routes, no token.
pub struct ControlSocket {
    pub path: PathBuf,
    stop: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
}

impl ControlSocket {
    /// Binds `path` with mode 0600 (its directory is created 0700 when missing). The socket is
    /// bound under a temporary name, made private, then renamed into place, so it is never
    /// reachable with wider permissions. A stale socket is replaced; one another live
    /// supervisor answers on is an error.
    pub async fn start(path: &Path, state: ApiState) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        tabbify_fsutil::ensure_dir(dir, 0o700)
            .with_context(|| format!("creating {}", dir.display()))?;
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            anyhow::bail!(
                "another process already serves the control socket {}",
                path.display()
            );
        }
        let name = path
            .file_name()
            .context("the control socket path has no file name")?
            .to_string_lossy();
        let tmp = dir.join(format!(".{name}.tmp-{:08x}", rand::random::<u32>()));
        let listener = tokio::net::UnixListener::bind(&tmp)
            .with_context(|| format!("binding the control socket {}", tmp.display()))?;
        let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&tmp);
            return Err(e)
                .with_context(|| format!("placing the control socket {}", path.display()));
        }
        let (stop, mut stop_rx) = watch::channel(false);
        let app = router(state);
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                })
                .await
        });
        tracing::info!(path = %path.display(), "control socket listening (no token; root only)");
        Ok(Self {
            path: path.to_path_buf(),
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
            tracing::warn!("control socket did not stop within 5s");
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
