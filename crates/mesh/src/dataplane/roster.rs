//! From the coordinator's roster to the peer set the data plane should have: every other node
//! that is online, routed by its /64, reached at the first endpoint it advertised.

use super::config::{DEFAULT_PERSISTENT_KEEPALIVE, PeerConfig};
use tabbify_wire::mesh::Peer;

/// The peer set a node should have given the roster: skips the node itself (by key) and offline
/// peers. Endpoints are taken in the order the peer advertised them (the first is preferred);
/// every peer gets [`DEFAULT_PERSISTENT_KEEPALIVE`] so NAT mappings stay open and a roaming node is
/// followed. The result is sorted by public key, so equal rosters give equal peer sets.
pub fn peers_from_roster(self_key: &[u8; 32], roster: &[Peer]) -> Vec<PeerConfig> {
    let mut peers: Vec<PeerConfig> = roster
        .iter()
        .filter(|p| p.online && p.public_key.as_bytes() != self_key)
        .map(|p| PeerConfig {
            public_key: *p.public_key.as_bytes(),
            allowed: p.subnet,
            endpoint: p.endpoints.first().copied(),
            persistent_keepalive: Some(DEFAULT_PERSISTENT_KEEPALIVE),
        })
        .collect();
    peers.sort_by_key(|p| p.public_key);
    peers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::peer_plan::{PeerAction, PlanContext, plan_peers};
    use tabbify_wire::{PublicKeyB64, Timestamp};

    fn roster_peer(key: u8, n: u16, online: bool, endpoints: &[&str]) -> Peer {
        Peer {
            peer_id: format!("p{key}"),
            ula: format!("fd00:1:2:{n:x}::1").parse().unwrap(),
            subnet: format!("fd00:1:2:{n:x}::/64").parse().unwrap(),
            display_name: format!("node-{key}"),
            tags: vec![],
            public_key: PublicKeyB64::from_bytes([key; 32]),
            endpoints: endpoints.iter().map(|e| e.parse().unwrap()).collect(),
            last_seen: Timestamp(0),
            online,
            version: "0.1.0".into(),
            joined_at: None,
            resources: None,
        }
    }

    #[test]
    fn skips_self_and_offline_and_keeps_first_endpoint() {
        let roster = vec![
            roster_peer(3, 3, true, &["10.0.0.3:51820", "[fd99::3]:51820"]),
            roster_peer(1, 1, true, &["10.0.0.1:51820"]),
            roster_peer(2, 2, false, &["10.0.0.2:51820"]),
            roster_peer(4, 4, true, &[]),
        ];
        let peers = peers_from_roster(&[1; 32], &roster);
        let keys: Vec<u8> = peers.iter().map(|p| p.public_key[0]).collect();
        assert_eq!(keys, vec![3, 4]);
        assert_eq!(peers[0].endpoint, Some("10.0.0.3:51820".parse().unwrap()));
        assert_eq!(peers[0].allowed, "fd00:1:2:3::/64".parse().unwrap());
        assert_eq!(
            peers[0].persistent_keepalive,
            Some(DEFAULT_PERSISTENT_KEEPALIVE)
        );
        assert_eq!(peers[1].endpoint, None);
    }

    #[test]
    fn roster_changes_become_minimal_plans() {
        let ctx = PlanContext {
            self_key: [1; 32],
            own_subnet: "fd00:1:2:1::/64".parse().unwrap(),
            mesh_prefix: "fd00:1:2::/48".parse().unwrap(),
        };
        let mut roster = vec![
            roster_peer(1, 1, true, &["10.0.0.1:51820"]),
            roster_peer(2, 2, true, &["10.0.0.2:51820"]),
            roster_peer(3, 3, true, &["10.0.0.3:51820"]),
        ];
        let first = peers_from_roster(&[1; 32], &roster);
        // Reordering the roster changes nothing.
        roster.reverse();
        let again = peers_from_roster(&[1; 32], &roster);
        assert!(plan_peers(&ctx, &first, again).is_noop());
        // Peer 2 goes offline, peer 3 moves.
        roster[1].online = false;
        roster[0].endpoints = vec!["10.0.0.33:51820".parse().unwrap()];
        let next = peers_from_roster(&[1; 32], &roster);
        let plan = plan_peers(&ctx, &first, next);
        assert_eq!(plan.removed, vec![[2; 32]]);
        assert_eq!(
            plan.accepted,
            vec![(
                PeerConfig {
                    public_key: [3; 32],
                    allowed: "fd00:1:2:3::/64".parse().unwrap(),
                    endpoint: Some("10.0.0.33:51820".parse().unwrap()),
                    persistent_keepalive: Some(DEFAULT_PERSISTENT_KEEPALIVE),
                },
                PeerAction::Update {
                    endpoint: Some(Some("10.0.0.33:51820".parse().unwrap())),
                    allowed: false
                }
            )]
        );
    }
}
