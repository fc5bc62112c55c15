//! HTTPS for the appsrv: a certificate from the mesh CA (`tcli cert issue`), so nodes and `tcli`
//! check the server as they check the coordinator and artifacts never cross the network in
//! clear text. Each connection: TLS handshake with a deadline, then HTTP/1.1 or HTTP/2 on it.
//! Shutdown stops accepting and lets open requests finish, up to a deadline.

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open requests (a download, say) may run on after shutdown was asked for.
const DRAIN: Duration = Duration::from_secs(30);

/// Serves `router` over TLS on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(config);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let service = tower::service_fn(move |req: hyper::Request<Incoming>| {
                router.clone().oneshot(req.map(axum::body::Body::new))
            });
            let builder = Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(
                TokioIo::new(tls),
                TowerToHyperService::new(service),
            );
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
        });
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN) => {
            tracing::warn!("connections still open after {DRAIN:?}; closing them");
        }
    }
}

/// The server config for `cert_file` (the certificate, then the CA, PEM) and `key_file`.
pub fn load_config(
    cert_file: &std::path::Path,
    key_file: &std::path::Path,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use anyhow::Context;
    let cert_pem = std::fs::read(cert_file)
        .with_context(|| format!("reading --tls-cert {}", cert_file.display()))?;
    let key_pem = std::fs::read(key_file)
        .with_context(|| format!("reading --tls-key {}", key_file.display()))?;
    let chain = tabbify_pki::pem::certificates(&cert_pem, "--tls-cert")?;
    let key = tabbify_pki::pem::private_key(&key_pem, "--tls-key")?;
    let config = tabbify_pki::tls::plain_server_config(chain, key)
        .context("the certificate and key do not make a TLS server (do they belong together?)")?;
    Ok(Arc::new(config))
}
