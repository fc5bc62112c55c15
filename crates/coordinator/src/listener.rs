//! Accepting connections: TLS (with node certificates offered) by default, plain TCP only with
//! `--insecure-no-mtls`. Each connection's remote address and the node certificate it presented
//! (if any) ride on every request as extensions, so handlers decide who is calling without
//! knowing about sockets. Shutdown stops accepting, lets open requests finish, and gives up
//! after a deadline.

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tabbify_pki::NodeCertInfo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The node certificate the connection presented, checked against the mesh CA by the TLS
/// layer (expiry excepted: see `tabbify_pki::verify`). `None` on plain connections and for
/// clients that sent none (joining nodes, operators).
#[derive(Debug, Clone, Default)]
pub struct PeerCertificate(pub Option<Arc<NodeCertInfo>>);

/// Serves `router` on `listener` until `shutdown` is cancelled, then waits up to `drain` for
/// open connections to finish.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off a little instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            match acceptor {
                None => serve_connection(stream, remote, None, router, watcher).await,
                Some(acceptor) => {
                    if speaks_plain_http(&stream).await {
                        refuse_plain_http(stream).await;
                        return;
                    }
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                        .await
                    {
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
                    let cert = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .and_then(|der| NodeCertInfo::parse(der).ok())
                        .map(Arc::new);
                    serve_connection(tls, remote, cert, router, watcher).await;
                }
            }
        });
    }
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(drain) => {
            tracing::warn!("connections still open after {drain:?}; closing them");
        }
    }
}

/// True when the first byte is not a TLS handshake record (0x16): someone tried `http://`.
async fn speaks_plain_http(stream: &tokio::net::TcpStream) -> bool {
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) => first[0] != 0x16,
        _ => false,
    }
}

/// Answers a plain HTTP request on the TLS port with a 400 that says what to do.
async fn refuse_plain_http(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let body = "{\"error\":\"bad_request\",\"message\":\"this coordinator speaks TLS: use https:// (nodes and tcli trust it by the CA fingerprint in the join token); plain HTTP needs --insecure-no-mtls on the coordinator\"}";
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(answer.as_bytes())).await;
    let _ = stream.shutdown().await;
}

async fn serve_connection<I>(
    io: I,
    remote: SocketAddr,
    cert: Option<Arc<NodeCertInfo>>,
    router: Router,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = PeerCertificate(cert);
    let service = tower::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(remote));
        req.extensions_mut().insert(peer.clone());
        router.clone().oneshot(req.map(axum::body::Body::new))
    });
    let builder = Builder::new(TokioExecutor::new());
    let conn =
        builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%remote, error = %e, "connection ended with an error");
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PeerCertificate {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<PeerCertificate>()
            .cloned()
            .unwrap_or_default())
    }
}
