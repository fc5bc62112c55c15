//! The node's place in the data plane: opens the TUN device and WireGuard socket for the address
//! the coordinator assigned, advertises where peers can reach us, and keeps the peer set equal to
//! the coordinator's roster by following its watch stream (resuming from the last revision after
//! any disconnect).

use crate::endpoints::{MeshSide, advertised_endpoints, interface_addrs};
use crate::roster::{Applied, Roster};
use crate::status::StatusHandle;
use anyhow::{Context, Result};
use futures_util::StreamExt;
use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::Duration;
use tabbify_client::CoordinatorClient;
use tabbify_mesh::dataplane::{DEFAULT_MTU, DataPlane, DataPlaneConfig, peers_from_roster};
use tabbify_wire::Endpoint;
use tabbify_wire::health::MeshState;
use tabbify_wire::mesh::RegisterResponse;
use tokio::task::JoinHandle;

/// What the data plane needs from the supervisor's configuration.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    pub private_key: [u8; 32],
    pub tun_name: String,
    pub listen_port: u16,
    pub advertise: Vec<Endpoint>,
}

pub struct MeshLink {
    pub ula: Ipv6Addr,
    dataplane: Arc<DataPlane>,
    follower: JoinHandle<()>,
    refresher: JoinHandle<()>,
}

/// How often interface addresses are re-read, so a node that moves tells its peers.
const ENDPOINT_REFRESH: Duration = Duration::from_secs(2);

struct EndpointSource {
    advertise: Vec<Endpoint>,
    port: u16,
    mesh: MeshSide,
}

impl EndpointSource {
    /// Recomputes the advertised endpoints; a change wakes the heartbeat task.
    fn refresh(&self, status: &StatusHandle) {
        let now = advertised_endpoints(
            &self.advertise,
            status.snapshot().observed_addr,
            &interface_addrs(),
            self.port,
            &self.mesh,
        );
        if status.snapshot().endpoints != now {
            tracing::info!(endpoints = ?now, "advertised endpoints");
            status.update(|s| s.endpoints = now);
        }
    }
}

async fn refresh_endpoints(source: EndpointSource, status: StatusHandle) {
    loop {
        tokio::time::sleep(ENDPOINT_REFRESH).await;
        source.refresh(&status);
    }
}

impl MeshLink {
    pub async fn start(
        settings: &LinkSettings,
        reg: &RegisterResponse,
        client: CoordinatorClient,
        status: StatusHandle,
    ) -> Result<Self> {
        let cfg = DataPlaneConfig {
            private_key: settings.private_key,
            tun_name: settings.tun_name.clone(),
            listen_port: settings.listen_port,
            ula: reg.ula,
            subnet: reg.subnet,
            mesh_prefix: reg.mesh_prefix,
            mtu: DEFAULT_MTU,
        };
        let dataplane = Arc::new(
            DataPlane::start(cfg)
                .await
                .context("starting the mesh data plane")?,
        );
        tracing::info!(tun = %settings.tun_name, ula = %reg.ula, port = dataplane.local_port(), "data plane up");
        let endpoints = EndpointSource {
            advertise: settings.advertise.clone(),
            port: dataplane.local_port(),
            mesh: MeshSide {
                tun_name: settings.tun_name.clone(),
                prefix: reg.mesh_prefix,
            },
        };
        endpoints.refresh(&status);
        let refresher = tokio::spawn(refresh_endpoints(endpoints, status.clone()));
        let follower = tokio::spawn(follow_roster(
            client,
            reg.peer_credential.clone(),
            dataplane.clone(),
            settings.private_key,
            status,
        ));
        Ok(Self {
            ula: reg.ula,
            dataplane,
            follower,
            refresher,
        })
    }

    pub fn dataplane(&self) -> Arc<DataPlane> {
        self.dataplane.clone()
    }

    /// Stops following the roster and removes the TUN device.
    pub async fn shutdown(self) {
        self.follower.abort();
        self.refresher.abort();
        let _ = self.follower.await;
        let _ = self.refresher.await;
        match Arc::try_unwrap(self.dataplane) {
            Ok(dp) => {
                if let Err(e) = dp.shutdown().await {
                    tracing::warn!(error = %e, "data plane shutdown");
                }
            }
            Err(_) => tracing::warn!("data plane still referenced at shutdown; dropping it"),
        }
    }
}

/// Follows the roster; the stream is sent with the node's credential so the coordinator counts
/// it under this peer (its stream cap is per caller), not under a NAT address shared with others.
async fn follow_roster(
    client: CoordinatorClient,
    credential: String,
    dataplane: Arc<DataPlane>,
    private_key: [u8; 32],
    status: StatusHandle,
) {
    let self_key = tabbify_mesh::dataplane::keys::public_key(&private_key);
    let mut roster = Roster::default();
    let mut synced = false;
    loop {
        match client.watch_as_peer(&credential, roster.revision()).await {
            Ok(stream) => {
                tracing::debug!(since = ?roster.revision(), "following the roster");
                let mut stream = std::pin::pin!(stream);
                while let Some(item) = stream.next().await {
                    let msg = match item {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::warn!(error = %e, "roster stream broke");
                            break;
                        }
                    };
                    match roster.apply(msg) {
                        Applied::Changed => {
                            let peers = peers_from_roster(&self_key, &roster.peers());
                            dataplane.set_peers(peers);
                            if !synced {
                                synced = true;
                                status.update(|s| s.mesh = MeshState::Joined);
                                tracing::info!(revision = ?roster.revision(), "roster applied");
                            }
                        }
                        Applied::Unchanged => {}
                        Applied::Gap { expected, got } => {
                            tracing::warn!(
                                expected,
                                got,
                                "roster stream skipped revisions; resuming"
                            );
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot follow the roster"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
