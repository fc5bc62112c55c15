//! Bringing the coordinator up and down: data dir, admin token, store, listener, the liveness
//! and placement tasks, and a graceful shutdown with a bounded drain.

use crate::admin_token::{self, AdminTokenError};
use crate::api;
use crate::config::CoordinatorConfig;
use crate::service::{Service, Settings};
use crate::store::{DB_FILE, Store, StoreError};
use std::future::{Future, IntoFuture};
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
    #[error("startup task failed: {0}")]
    Task(String),
}

/// A coordinator with its state loaded and its port bound, ready to serve.
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    service: Arc<Service>,
}

impl Server {
    pub async fn start(config: CoordinatorConfig) -> Result<Self, StartError> {
        let data_dir = config.data_dir.clone();
        let (store, admin_token) = tokio::task::spawn_blocking(move || {
            admin_token::ensure_data_dir(&data_dir)?;
            let admin_token = admin_token::load_or_create(&data_dir)?;
            let path = data_dir.join(DB_FILE);
            let store = Store::open(&path).map_err(|source| StartError::Store { path, source })?;
            Ok::<_, StartError>((store, admin_token))
        })
        .await
        .map_err(|e| StartError::Task(e.to_string()))??;

        let settings = Settings {
            open_join: config.open_join,
            liveness: config.liveness,
            mesh: store.mesh_prefix(),
            event_log_capacity: config.event_log_capacity,
            serving_since: Timestamp::now(),
            node_lost_grace: config.node_lost_grace,
            default_appsrv: config.appsrv.clone(),
            guards: config.guards,
        };
        let service = Arc::new(
            Service::new(store, &admin_token, settings)
                .map_err(|e| StartError::Task(e.to_string()))?,
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
        if !local_addr.ip().is_loopback() {
            tracing::warn!(
                "--insecure-no-mtls: serving plain, unauthenticated HTTP on {local_addr}"
            );
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
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
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
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections, closing watch streams");
            cancel.cancel();
        };
        let app = api::router(Arc::clone(&svc)).into_make_service_with_connect_info::<SocketAddr>();
        let serving = axum::serve(self.listener, app)
            .with_graceful_shutdown(signal)
            .into_future();
        let drain_deadline = {
            let cancel = svc.shutdown.clone();
            async move {
                cancel.cancelled().await;
                tokio::time::sleep(DRAIN_TIMEOUT).await;
            }
        };
        let result = tokio::select! {
            r = serving => r,
            _ = drain_deadline => {
                tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
                Ok(())
            }
        };
        svc.shutdown.cancel();
        liveness.abort();
        placement.abort();
        if let Err(e) = svc.write(|s, _| s.checkpoint()).await {
            tracing::warn!(error = %e, "final checkpoint failed");
        }
        tracing::info!("stopped");
        result
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
