//! What the data plane reports about itself: per-peer traffic, handshakes, endpoints and drops.
//! Serializable so the thin binary can expose it to tests and operators as JSON.

use super::offload::Offloads;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use tabbify_wire::{Endpoint, Ipv6Prefix, PublicKeyB64};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerStats {
    pub public_key: PublicKeyB64,
    pub allowed: Ipv6Prefix,
    /// Where packets to the peer go now (configured or learned by roaming).
    pub endpoint: Option<Endpoint>,
    /// Inner bytes received from / sent to the peer.
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    /// Seconds since the current session's handshake; `None` without a session.
    pub last_handshake_secs_ago: Option<f64>,
    /// Packets from this peer whose inner source was outside `allowed`.
    pub dropped_source: u64,
    /// Packets for this peer dropped because it has no endpoint.
    pub dropped_no_endpoint: u64,
    /// How often the peer was followed to a new address.
    pub roams: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DataPlaneStats {
    pub listen_port: u16,
    pub peers: Vec<PeerStats>,
    /// Outbound packets whose destination no peer's prefix holds (or not IPv6).
    pub dropped_no_route: u64,
    /// Inbound datagrams for no known peer (unknown key or session index).
    pub dropped_unknown_peer: u64,
    /// Inbound datagrams that failed parsing, MACs or decryption.
    pub dropped_invalid: u64,
    /// Sum of the peers' `dropped_source`.
    pub dropped_source: u64,
    /// Cookie replies sent because handshakes arrived faster than the rate limit.
    pub cookies_sent: u64,
    /// The segmentation offloads in use.
    #[serde(default)]
    pub offload: Offloads,
    /// `UDP_SEGMENT` messages sent (each carrying several datagrams).
    #[serde(default)]
    pub gso_messages: u64,
    /// Received messages in which `UDP_GRO` had glued several datagrams.
    #[serde(default)]
    pub gro_messages: u64,
}

/// Counters that belong to no single peer.
#[derive(Debug, Default)]
pub struct PlaneCounters {
    pub dropped_no_route: AtomicU64,
    pub dropped_unknown_peer: AtomicU64,
    pub dropped_invalid: AtomicU64,
    pub cookies_sent: AtomicU64,
    pub gso_messages: AtomicU64,
    pub gro_messages: AtomicU64,
}

impl PlaneCounters {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
