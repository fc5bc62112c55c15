//! The userspace TCP proxy from the app's address to the guest: accept on `listen`, connect to
//! `guest` (through the tap), copy both ways. No iptables, no forwarding: the guest is reachable
//! only through this, and only on the app's port.
//!
//! One task owns the listener and the set of connection tasks; dropping (or shutting down) the
//! [`Proxy`] ends that task, which closes the listening socket and every proxied connection.

use crate::error::{IoContext, Result};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// How long a connection to the guest may take before the client is dropped.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Counters of a proxy.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub accepted: AtomicU64,
    pub guest_unreachable: AtomicU64,
    pub active: AtomicU64,
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct Proxy {
    local: SocketAddr,
    guest: SocketAddr,
    stats: Arc<ProxyStats>,
    /// The accept loop; `None` once shut down.
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Listens on `listen` (port 0 picks one) and forwards every connection to `guest`.
pub async fn forward(listen: SocketAddr, guest: SocketAddr) -> Result<Proxy> {
    let listener = TcpListener::bind(listen)
        .await
        .io_ctx(|| format!("binding the app address {listen}"))?;
    let local = listener
        .local_addr()
        .io_ctx(|| "reading the proxy's address".into())?;
    let stats = Arc::new(ProxyStats::default());
    let task = tokio::spawn(accept_loop(listener, guest, stats.clone()));
    tracing::debug!(%local, %guest, "proxy listening");
    Ok(Proxy {
        local,
        guest,
        stats,
        task: Some(task),
    })
}

impl Proxy {
    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn guest_addr(&self) -> SocketAddr {
        self.guest
    }

    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }

    /// Closes the listener and every connection, and waits until they are gone.
    pub async fn shutdown(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, guest: SocketAddr, stats: Arc<ProxyStats>) {
    // Dropping this set (when the task is aborted) aborts every connection task.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    stats.accepted.fetch_add(1, Ordering::Relaxed);
                    conns.spawn(relay(client, peer, guest, stats.clone()));
                }
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn relay(mut client: TcpStream, peer: SocketAddr, guest: SocketAddr, stats: Arc<ProxyStats>) {
    let upstream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(guest)).await;
    let mut upstream = match upstream {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            stats.guest_unreachable.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, %guest, error = %e, "guest refused a proxied connection");
            return;
        }
        Err(_) => {
            stats.guest_unreachable.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, %guest, "guest did not answer a proxied connection in time");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    stats.active.fetch_add(1, Ordering::Relaxed);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    stats.active.fetch_sub(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let t = tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    loop {
                        let n = s.read(&mut buf).await.unwrap_or(0);
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (addr, t)
    }

    #[tokio::test]
    async fn bytes_flow_both_ways_and_shutdown_closes_everything() {
        let (echo, _t) = echo_server().await;
        let proxy = forward("127.0.0.1:0".parse().unwrap(), echo).await.unwrap();
        let mut c = TcpStream::connect(proxy.local_addr()).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        assert_eq!(proxy.stats().accepted.load(Ordering::Relaxed), 1);
        let local = proxy.local_addr();
        proxy.shutdown().await;
        // The open connection is closed and the port no longer accepts.
        let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert!(TcpStream::connect(local).await.is_err());
    }

    #[tokio::test]
    async fn an_unreachable_guest_closes_the_client_and_is_counted() {
        // A port that was just free: nothing listens there.
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let proxy = forward("127.0.0.1:0".parse().unwrap(), dead).await.unwrap();
        let mut c = TcpStream::connect(proxy.local_addr()).await.unwrap();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert_eq!(proxy.stats().guest_unreachable.load(Ordering::Relaxed), 1);
    }
}
