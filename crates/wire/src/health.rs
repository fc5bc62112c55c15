//! `/health` and `/v1/about` bodies of the supervisor and the coordinator.

use crate::Tag;
use serde::{Deserialize, Serialize};
use std::net::Ipv6Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeshState {
    /// Not yet registered (or the coordinator is unreachable and we never were).
    Joining,
    /// Registered and, once the data plane exists, the TUN is up and the roster applied.
    Joined,
    /// Started with `--no-mesh`.
    NoMesh,
}

/// Supervisor `GET /health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SupervisorHealth {
    pub status: String,
    pub firecracker: bool,
    pub docker: bool,
    pub ula: Option<Ipv6Addr>,
    pub name: String,
    pub version: String,
    pub mesh: MeshState,
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// Which VMM backs the `firecracker` capability, when one was found.
    #[serde(default)]
    pub vmm: Option<String>,
    #[serde(default)]
    pub peer_id: Option<String>,
    #[serde(default)]
    pub coordinator: Option<String>,
    #[serde(default)]
    pub uptime_secs: u64,
    /// `/dev/kvm` runs guests (the `firecracker` tag also needs a VMM).
    #[serde(default)]
    pub kvm: bool,
    /// What the KVM check found, for people: why `kvm` is false.
    #[serde(default)]
    pub kvm_detail: String,
    /// How microVM apps run here, when they can: `firecracker`, `qemu-kvm` or `qemu-tcg` (QEMU
    /// emulating the CPU: slow, never advertised as the `firecracker` tag).
    #[serde(default)]
    pub vm_runtime: Option<String>,
    /// Why the node is not (or no longer) in the mesh, when it is not.
    #[serde(default)]
    pub mesh_error: Option<String>,
}

/// Coordinator `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorHealth {
    pub status: String,
    pub version: String,
    pub tls: bool,
    pub open_join: bool,
    pub peers_total: u64,
    pub peers_online: u64,
    pub revision: u64,
    pub mesh_prefix: String,
}
