//! Bringing the coordinator up and down: data dir, admin token, mesh CA and server certificate,
//! store, listener, the liveness and placement tasks, and a graceful shutdown with a bounded
//! drain.

use crate::admin_token::{self, AdminTokenError};
use crate::api;
use crate::config::{CoordinatorConfig, TlsConfig};
use crate::service::{MeshTls, Service, Settings};
use crate::store::{DB_FILE, Store, StoreError};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tabbify_wire::Timestamp;
use tokio::net::TcpListener;

/// How long open connections (watch streams, slow clients) get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    DataDir(#[from] AdminTokenError),
    #[error("cannot open the database {path}")]
    Store {
        path: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("operator-token signing key: {0}")]
    SigningKey(#[from] tabbify_auth::KeyError),
    #[error("startup task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Ca(#[from] tabbify_pki::CaError),
    #[error("TLS: {0}")]
    Tls(String),
}

/// How long the coordinator's own certificate from the mesh CA is valid (a new one is issued at
/// every start).
const SERVER_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// The names and addresses the coordinator's certificate covers: loopback, the host name, the
/// address it listens on (every local address when it listens on all), and `--tls-san`.
fn certificate_names(listen: SocketAddr, extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    if let Ok(host) = nix::unistd::gethostname()
        && let Some(host) = host.to_str()
        && !host.is_empty()
    {
        names.push(host.to_string());
    }
    if listen.ip().is_unspecified() {
        if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
            for ifa in addrs {
                let Some(addr) = ifa.address else { continue };
                if let Some(v4) = addr.as_sockaddr_in() {
                    names.push(v4.ip().to_string());
                } else if let Some(v6) = addr.as_sockaddr_in6() {
                    let ip = v6.ip();
                    // Link-local addresses need a zone, which no URL the nodes use carries.
                    if (ip.segments()[0] & 0xffc0) != 0xfe80 {
                        names.push(ip.to_string());
                    }
                }
            }
        }
    } else {
        names.push(listen.ip().to_canonical().to_string());
    }
    names.extend(
        extra
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()),
    );
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// The CA, the server config, and whether join tokens pin the CA (not when an operator's own
/// certificate is served: nodes then trust it by the system roots).
fn tls_setup(
    data_dir: &std::path::Path,
    listen: SocketAddr,
    tls: &TlsConfig,
) -> Result<(MeshTls, Arc<rustls::ServerConfig>), StartError> {
    let ca = Arc::new(tabbify_pki::MeshCa::load_or_create(data_dir)?);
    let (chain, key, pinned) = match &tls.operator_cert {
        Some((cert_path, key_path)) => {
            let read = |p: &std::path::Path| {
                std::fs::read(p)
                    .map_err(|e| StartError::Tls(format!("reading {}: {e}", p.display())))
            };
            let chain =
                tabbify_pki::pem::certificates(&read(cert_path)?, &cert_path.display().to_string())
                    .map_err(|e| StartError::Tls(e.to_string()))?;
            let key =
                tabbify_pki::pem::private_key(&read(key_path)?, &key_path.display().to_string())
                    .map_err(|e| StartError::Tls(e.to_string()))?;
            (chain, key, false)
        }
        None => {
            let names = certificate_names(listen, &tls.extra_sans);
            tracing::info!(names = %names.join(","), "issued the coordinator's certificate from the mesh CA");
            let (chain, key) = ca.issue_server(&names, SERVER_CERT_VALIDITY)?;
            (chain, key, true)
        }
    };
    let config = tabbify_pki::tls::server_config(chain, key, ca.cert_der())
        .map_err(|e| StartError::Tls(e.to_string()))?;
    let mesh = MeshTls {
        token_pin: pinned.then(|| ca.fingerprint()),
        ca,
        node_cert_ttl: tls.node_cert_ttl,
    };
    Ok((mesh, Arc::new(config)))
}

/// A coordinator with its state loaded and its port bound, ready to serve.
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    service: Arc<Service>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Server {
    pub async fn start(config: CoordinatorConfig) -> Result<Self, StartError> {
        let data_dir = config.data_dir.clone();
        let tls_config = config.tls.clone();
        let listen = config.listen;
        let (store, admin_token, tls, signing_key) = tokio::task::spawn_blocking(move || {
            admin_token::ensure_data_dir(&data_dir)?;
            let admin_token = admin_token::load_or_create(&data_dir)?;
            let signing_key = crate::operator_tokens::load_or_create_signing_key(&data_dir)?;
            let tls = match &tls_config {
                Some(t) => Some(tls_setup(&data_dir, listen, t)?),
                None => None,
            };
            let path = data_dir.join(DB_FILE);
            let store = Store::open(&path).map_err(|source| StartError::Store { path, source })?;
            Ok::<_, StartError>((store, admin_token, tls, signing_key))
        })
        .await
        .map_err(|e| StartError::Task(e.to_string()))??;
        let (mtls, server_tls) = match tls {
            Some((m, c)) => (Some(m), Some(c)),
            None => (None, None),
        };

        let settings = Settings {
            open_join: config.open_join,
            liveness: config.liveness,
            mesh: store.mesh_prefix(),
            event_log_capacity: config.event_log_capacity,
            serving_since: Timestamp::now(),
            node_lost_grace: config.node_lost_grace,
            default_appsrv: config.appsrv.clone(),
            mtls,
            guards: config.guards,
        };
        let service = Arc::new(
            Service::new(store, &admin_token, settings)
                .map_err(|e| StartError::Task(e.to_string()))?
                .with_signing_key(signing_key),
        );
        // One placement pass before serving, so the first answers already carry pending reasons.
        if let Err(e) = service.placement_tick().await {
            tracing::error!(error = %e, "placement pass at startup failed");
        }
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        if config.open_join {
            tracing::warn!(
                "--open-join: ANY machine that reaches {local_addr} can join the mesh without a join token"
            );
        }
        match &service.settings.mtls {
            None => tracing::warn!(
                "--insecure-no-mtls: serving plain HTTP on {local_addr}; join tokens and peer credentials cross the network in clear text"
            ),
            Some(m) => tracing::info!(
                ca_fingerprint = %m.ca.fingerprint(),
                tokens_pin_the_ca = m.token_pin.is_some(),
                node_cert_ttl = ?m.node_cert_ttl,
                "serving TLS; nodes authenticate with client certificates"
            ),
        }
        tracing::info!(
            listen = %local_addr,
            data_dir = %config.data_dir.display(),
            mesh = %service.settings.mesh,
            heartbeat_interval = ?config.liveness.heartbeat_interval,
            node_lost_grace = ?config.node_lost_grace,
            appsrv = config.appsrv.as_deref().unwrap_or("-"),
            "coordinator ready"
        );
        Ok(Self {
            listener,
            local_addr,
            service,
            tls: server_tls,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `https://ADDR` (or `http://` with `--insecure-no-mtls`).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr)
    }

    pub fn service(&self) -> Arc<Service> {
        Arc::clone(&self.service)
    }

    /// Serves until `shutdown` completes, then drains connections for up to ten seconds.
    pub async fn serve<F>(self, shutdown: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let svc = self.service;
        let liveness = tokio::spawn(liveness_loop(Arc::clone(&svc)));
        let placement = tokio::spawn(placement_loop(Arc::clone(&svc)));
        let cancel = svc.shutdown.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections, closing watch streams");
            cancel.cancel();
        });
        let app = api::router(Arc::clone(&svc));
        crate::listener::serve(
            self.listener,
            self.tls,
            app,
            svc.shutdown.clone(),
            DRAIN_TIMEOUT,
        )
        .await;
        svc.shutdown.cancel();
        liveness.abort();
        placement.abort();
        if let Err(e) = svc.write(|s, _| s.checkpoint()).await {
            tracing::warn!(error = %e, "final checkpoint failed");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

async fn liveness_loop(svc: Arc<Service>) {
    let mut tick = tokio::time::interval(svc.liveness_period());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = svc.shutdown.cancelled() => return,
        }
        if let Err(e) = svc.liveness_tick().await {
            tracing::error!(error = %e, "liveness pass failed");
        }
    }
}

/// How often placement runs besides after every app and roster change.
const PLACEMENT_PERIOD: Duration = Duration::from_secs(1);

/// Places apps once a second (the first pass at once, so pending reasons are known right after
/// a restart).
async fn placement_loop(svc: Arc<Service>) {
    let mut tick = tokio::time::interval(PLACEMENT_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = svc.shutdown.cancelled() => return,
        }
        if let Err(e) = svc.placement_tick().await {
            tracing::error!(error = %e, "placement pass failed");
        }
    }
}
