//! The node's current status: the one piece of state the join, heartbeat and probe tasks update
//! and the control API reads. One owner: a `watch` channel; readers take cheap snapshots.

use crate::probe::Capabilities;
use std::net::Ipv6Addr;
use std::time::Instant;
use tabbify_wire::Tag;
use tabbify_wire::health::MeshState;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub name: String,
    pub mesh: MeshState,
    pub caps: Capabilities,
    pub tags: Vec<Tag>,
    /// Underlay endpoints advertised to peers (empty until the data plane is up).
    pub endpoints: Vec<tabbify_wire::Endpoint>,
    /// The underlay address the coordinator last saw us at.
    pub observed_addr: Option<std::net::IpAddr>,
    pub peer_id: Option<String>,
    pub ula: Option<Ipv6Addr>,
    /// The node's /64 (app addresses come from it); known once registered.
    pub subnet: Option<tabbify_wire::Ipv6Prefix>,
    pub public_key: String,
    pub coordinator: Option<String>,
    /// The last join or heartbeat failure, cleared on success.
    pub mesh_error: Option<String>,
    pub started: Instant,
}

/// Shared handle on the status. Clone freely.
#[derive(Debug, Clone)]
pub struct StatusHandle {
    tx: watch::Sender<NodeStatus>,
}

impl StatusHandle {
    pub fn new(initial: NodeStatus) -> Self {
        Self {
            tx: watch::Sender::new(initial),
        }
    }

    pub fn snapshot(&self) -> NodeStatus {
        self.tx.borrow().clone()
    }

    pub fn update(&self, f: impl FnOnce(&mut NodeStatus)) {
        self.tx.send_modify(f);
    }

    /// A receiver that wakes on every change (e.g. tags changed → heartbeat now).
    pub fn subscribe(&self) -> watch::Receiver<NodeStatus> {
        self.tx.subscribe()
    }
}
