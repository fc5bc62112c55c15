//! The app's address in front of its container: every connection accepted on the runner's
//! listener is joined byte for byte to a connection to the container's port (TCP, so anything
//! HTTP can do, upgrades included, passes through). When the container cannot be reached the
//! client gets a 502 saying so instead of a reset. For containers (and microVMs, which use the same
//! forwarding to the guest's address on its tap), the runner's request counters count connections.

use crate::stats::RequestStats;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Header naming why the runner, not the app, answered (as for wasm apps).
pub const ERROR_HEADER: &str = "x-tabbify-error";
/// How long a connection to the container may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the runner reads a refused client's request before closing, so the client sees the
/// 502 rather than a reset.
const DRAIN_REFUSED: Duration = Duration::from_millis(500);

/// What the runner forwards to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Container,
    MicroVm,
}

impl Target {
    fn noun(self) -> &'static str {
        match self {
            Target::Container => "the app's container",
            Target::MicroVm => "the app's microVM",
        }
    }

    fn error_code(self) -> &'static str {
        match self {
            Target::Container => "container-unreachable",
            Target::MicroVm => "guest-unreachable",
        }
    }
}

/// The runner's answer when the container or guest cannot be reached.
fn unreachable_response_for(target: Target, message: &str) -> Vec<u8> {
    let body = format!("{message}\n");
    format!(
        "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain; charset=utf-8\r\n{ERROR_HEADER}: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        target.error_code(),
        body.len()
    )
    .into_bytes()
}

/// Joins `client` to the container at `upstream` until both sides are done. `None`: the app has
/// no network to forward to.
pub async fn forward(client: TcpStream, upstream: Option<SocketAddr>, stats: Arc<RequestStats>) {
    forward_to(Target::Container, client, upstream, stats).await;
}

/// [`forward`] to a container or a microVM's guest.
pub async fn forward_to(
    target: Target,
    mut client: TcpStream,
    upstream: Option<SocketAddr>,
    stats: Arc<RequestStats>,
) {
    let noun = target.noun();
    let _in_flight = stats.begin();
    let _ = client.set_nodelay(true);
    let connected = match upstream {
        None => Err("the app runs with network = \"none\": nothing listens for it".to_string()),
        Some(addr) => match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(format!("{noun} does not answer on {addr}: {e}")),
            Err(_) => Err(format!(
                "{noun} did not accept a connection on {addr} within {} s",
                CONNECT_TIMEOUT.as_secs()
            )),
        },
    };
    match connected {
        Ok(mut container) => {
            let _ = container.set_nodelay(true);
            match tokio::io::copy_bidirectional(&mut client, &mut container).await {
                Ok(_) => stats.served(),
                // A client or container closing abruptly is their business, not a failure of ours.
                Err(e) => {
                    stats.served();
                    tracing::debug!(error = %e, "proxied connection ended with an error");
                }
            }
        }
        Err(message) => {
            tracing::warn!(%message, "cannot reach the app");
            stats.failed(message.clone());
            refuse(client, &unreachable_response_for(target, &message)).await;
        }
    }
}

async fn refuse(mut client: TcpStream, response: &[u8]) {
    // Read what the client sent first (briefly), so closing does not reset the connection under
    // the answer.
    let mut scratch = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(50), client.read(&mut scratch)).await;
    if client.write_all(response).await.is_err() {
        return;
    }
    let _ = client.shutdown().await;
    let _ = tokio::time::timeout(DRAIN_REFUSED, async {
        while matches!(client.read(&mut scratch).await, Ok(n) if n > 0) {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn exchange(listener: &TcpListener, request: &[u8]) -> String {
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(request).await.unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn joins_the_client_to_the_container() {
        let container = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = container.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = container.accept().await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(b"echo:").await.unwrap();
            s.write_all(&buf).await.unwrap();
        });
        let listener = Arc::new(TcpListener::bind("127.0.0.1:0").await.unwrap());
        let stats = Arc::new(RequestStats::default());
        let (l, s) = (listener.clone(), stats.clone());
        let proxy = tokio::spawn(async move {
            let (client, _) = l.accept().await.unwrap();
            forward(client, Some(upstream), s).await;
        });
        assert_eq!(exchange(&listener, b"hello").await, "echo:hello");
        proxy.await.unwrap();
        let snap = stats.snapshot();
        assert_eq!((snap.served, snap.failed, snap.in_flight), (1, 0, 0));
    }

    #[tokio::test]
    async fn an_unreachable_container_gets_a_502() {
        // A port nothing listens on: bind, learn it, close.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead = closed.local_addr().unwrap();
        drop(closed);
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stats = Arc::new(RequestStats::default());
        let s = stats.clone();
        let listener = Arc::new(front);
        let l = listener.clone();
        tokio::spawn(async move {
            let (client, _) = l.accept().await.unwrap();
            forward(client, Some(dead), s).await;
        });
        let answer = exchange(&listener, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 502 "), "{answer}");
        assert!(
            answer.contains("x-tabbify-error: container-unreachable"),
            "{answer}"
        );
        assert!(answer.contains("does not answer"), "{answer}");
        let snap = stats.snapshot();
        assert_eq!((snap.served, snap.failed), (0, 1));
    }

    #[tokio::test]
    async fn no_network_means_a_502_that_says_so() {
        let listener = Arc::new(TcpListener::bind("127.0.0.1:0").await.unwrap());
        let l = listener.clone();
        tokio::spawn(async move {
            let (client, _) = l.accept().await.unwrap();
            forward(client, None, Arc::default()).await;
        });
        let answer = exchange(&listener, b"GET / HTTP/1.1\r\n\r\n").await;
        assert!(answer.contains("network = \"none\""), "{answer}");
    }
}
