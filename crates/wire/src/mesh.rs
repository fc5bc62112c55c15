//! The coordinator's mesh API: register, heartbeat, roster and its watch stream.

use crate::{Endpoint, Ipv6Prefix, PublicKeyB64, Tag, Timestamp};
use serde::{Deserialize, Serialize};
use std::net::Ipv6Addr;

/// A peer's stable identifier, assigned by the coordinator at first registration.
pub type PeerId = String;

/// What a node says about its capacity. Free figures let the coordinator place apps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct NodeResources {
    pub cpus: f64,
    pub memory_mb: u64,
    #[serde(default)]
    pub cpus_free: f64,
    #[serde(default)]
    pub memory_mb_free: u64,
}

/// `POST /v1/mesh/register`, with `Authorization: Bearer <join token>` for a new peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub public_key: PublicKeyB64,
    pub display_name: String,
    #[serde(default)]
    pub tags: Vec<Tag>,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub requested_ula: Option<Ipv6Addr>,
    pub version: String,
    /// The credential a previous registration returned: proves the caller is this key's owner,
    /// and lets it re-register without a join token.
    #[serde(default)]
    pub peer_credential: Option<String>,
    #[serde(default)]
    pub resources: Option<NodeResources>,
    /// A PKCS#10 request (PEM) for the node's TLS key: with mTLS the coordinator answers with
    /// a client certificate for it, which then authenticates every later call.
    #[serde(default)]
    pub csr: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub peer_id: PeerId,
    pub ula: Ipv6Addr,
    pub subnet: Ipv6Prefix,
    pub mesh_prefix: Ipv6Prefix,
    pub heartbeat_interval_secs: u64,
    /// Secret for heartbeats and re-registration; `Authorization: Bearer <credential>`. Only a
    /// coordinator running with `--insecure-no-mtls` hands these out.
    #[serde(default)]
    pub peer_credential: Option<String>,
    /// The node's client certificate (PEM, then the mesh CA), issued for the CSR it sent.
    #[serde(default)]
    pub client_certificate: Option<String>,
    /// The mesh CA (PEM): the node keeps it and trusts the coordinator by it from now on.
    #[serde(default)]
    pub ca_certificate: Option<String>,
    /// The underlay address the coordinator saw the request come from.
    #[serde(default)]
    pub observed_addr: Option<std::net::IpAddr>,
    pub revision: u64,
    /// The public key that signs operator tokens (`tbfk_…`): the node pins it and checks
    /// tokens on its control API with it, offline. Absent from older coordinators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<String>,
}

/// `POST /v1/mesh/certificate`: a node renews its client certificate over mTLS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewCertificateRequest {
    pub csr: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewCertificateResponse {
    /// PEM: the new certificate, then the mesh CA.
    pub client_certificate: String,
    /// Seconds since the Unix epoch.
    pub not_after: u64,
}

/// `POST /v1/mesh/heartbeat`, with `Authorization: Bearer <peer credential>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HeartbeatRequest {
    #[serde(default)]
    pub tags: Vec<Tag>,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub resources: Option<NodeResources>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    pub heartbeat_interval_secs: u64,
    pub revision: u64,
    /// The underlay address the coordinator saw this heartbeat come from: lets a node notice
    /// that it moved (or sits behind NAT) and advertise the right endpoint.
    #[serde(default)]
    pub observed_addr: Option<std::net::IpAddr>,
}

/// One node as the roster shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Peer {
    pub peer_id: PeerId,
    pub ula: Ipv6Addr,
    pub subnet: Ipv6Prefix,
    pub display_name: String,
    pub tags: Vec<Tag>,
    pub public_key: PublicKeyB64,
    pub endpoints: Vec<Endpoint>,
    pub last_seen: Timestamp,
    pub online: bool,
    pub version: String,
    #[serde(default)]
    pub joined_at: Option<Timestamp>,
    #[serde(default)]
    pub resources: Option<NodeResources>,
}

/// `GET /v1/mesh/peers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerList {
    pub peers: Vec<Peer>,
    /// The roster revision this list reflects.
    #[serde(default)]
    pub revision: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RosterEventKind {
    Joined,
    Updated,
    Offline,
    Removed,
}

impl RosterEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RosterEventKind::Joined => "joined",
            RosterEventKind::Updated => "updated",
            RosterEventKind::Offline => "offline",
            RosterEventKind::Removed => "removed",
        }
    }
}

/// One change to the roster. Revisions increase by one per change, with no gaps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RosterEvent {
    pub revision: u64,
    pub kind: RosterEventKind,
    /// The peer after the change (for `removed`, as it was last).
    pub peer: Peer,
    pub at: Timestamp,
}

/// Sent first on `GET /v1/mesh/watch` when the requested revision is older than the event log
/// keeps (or absent): the whole roster as of `revision`; events follow from `revision + 1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RosterSnapshot {
    pub revision: u64,
    pub peers: Vec<Peer>,
}

/// SSE event names on the watch stream: the four [`RosterEventKind`]s plus this one.
pub const SSE_SNAPSHOT: &str = "snapshot";

/// A peer an operator removed (`DELETE /v1/mesh/peers/{id}` or a cascading token revocation).
/// Its public key is refused at registration until `POST /v1/admin/removed-peers/{id}/readmit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedPeer {
    pub peer_id: PeerId,
    pub public_key: PublicKeyB64,
    pub display_name: String,
    pub removed_at: Timestamp,
    /// Why: `removed by an operator`, `join token <id> revoked with --cascade`.
    pub reason: String,
}

/// `GET /v1/admin/removed-peers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedPeerList {
    pub removed_peers: Vec<RemovedPeer>,
}
