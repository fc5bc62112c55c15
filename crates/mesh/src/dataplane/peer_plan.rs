//! Turning "the peer set the node should have" into "what to change": `set_peers` is declarative,
//! and this pure function decides which peers are new, gone, changed in place (endpoint or
//! AllowedIPs, keeping the session) or must be rebuilt, and which entries are refused and why.

use super::config::PeerConfig;
use std::collections::{HashMap, HashSet};
use tabbify_wire::{Endpoint, Ipv6Prefix};

/// What the plan needs to know about the node itself.
#[derive(Debug, Clone, Copy)]
pub struct PlanContext {
    pub self_key: [u8; 32],
    pub own_subnet: Ipv6Prefix,
    pub mesh_prefix: Ipv6Prefix,
}

/// Why a desired peer was left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The entry carries the node's own public key.
    OwnKey,
    /// An earlier entry has the same public key.
    DuplicateKey,
    /// Its prefix overlaps the node's own /64.
    OverlapsOwnSubnet,
    /// Its prefix overlaps the prefix of an earlier accepted peer (routing would be ambiguous).
    OverlapsPeer([u8; 32]),
    /// Its prefix is not inside the mesh prefix, so the kernel would never route it to us.
    OutsideMesh,
}

/// What happens to one accepted peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerAction {
    /// Not known before: create a tunnel.
    Create,
    /// Same configuration as before.
    Keep,
    /// Keep the tunnel and session; apply these changes.
    Update {
        /// `Some(e)` when the configured endpoint changed (a roamed endpoint is otherwise kept).
        endpoint: Option<Option<Endpoint>>,
        /// `true` when the AllowedIPs prefix changed.
        allowed: bool,
    },
    /// A property boringtun fixes at creation changed (persistent keepalive): new tunnel.
    Recreate,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerPlan {
    /// Accepted peers in the order given, each with its action.
    pub accepted: Vec<(PeerConfig, PeerAction)>,
    /// Keys present before and absent now.
    pub removed: Vec<[u8; 32]>,
    pub rejected: Vec<(PeerConfig, Rejection)>,
}

impl PeerPlan {
    /// True when applying the plan changes nothing.
    pub fn is_noop(&self) -> bool {
        self.removed.is_empty() && self.accepted.iter().all(|(_, a)| *a == PeerAction::Keep)
    }
}

fn overlaps(a: &Ipv6Prefix, b: &Ipv6Prefix) -> bool {
    a.covers(b) || b.covers(a)
}

/// Plans the move from `current` (the configs applied last time) to `desired`.
pub fn plan_peers(ctx: &PlanContext, current: &[PeerConfig], desired: Vec<PeerConfig>) -> PeerPlan {
    let before: HashMap<[u8; 32], &PeerConfig> =
        current.iter().map(|p| (p.public_key, p)).collect();
    let mut plan = PeerPlan::default();
    let mut seen: HashSet<[u8; 32]> = HashSet::with_capacity(desired.len());
    // Two /64s overlap only when equal, so the common case is one hash probe; prefixes of any
    // other length are compared against the accepted ones by hand (they are rare).
    let mut exact: HashMap<Ipv6Prefix, [u8; 32]> = HashMap::with_capacity(desired.len());
    let mut all: Vec<(Ipv6Prefix, [u8; 32])> = Vec::with_capacity(desired.len());
    let mut not_64: Vec<(Ipv6Prefix, [u8; 32])> = Vec::new();

    for peer in desired {
        let overlapping_peer = || {
            if let Some(owner) = exact.get(&peer.allowed) {
                return Some(*owner);
            }
            let candidates = if peer.allowed.len() == 64 {
                &not_64
            } else {
                &all
            };
            candidates
                .iter()
                .find(|(p, _)| overlaps(p, &peer.allowed))
                .map(|(_, k)| *k)
        };
        let rejection = if peer.public_key == ctx.self_key {
            Some(Rejection::OwnKey)
        } else if seen.contains(&peer.public_key) {
            Some(Rejection::DuplicateKey)
        } else if !ctx.mesh_prefix.covers(&peer.allowed) {
            Some(Rejection::OutsideMesh)
        } else if overlaps(&peer.allowed, &ctx.own_subnet) {
            Some(Rejection::OverlapsOwnSubnet)
        } else {
            overlapping_peer().map(Rejection::OverlapsPeer)
        };
        if let Some(r) = rejection {
            plan.rejected.push((peer, r));
            continue;
        }
        seen.insert(peer.public_key);
        exact.insert(peer.allowed, peer.public_key);
        all.push((peer.allowed, peer.public_key));
        if peer.allowed.len() != 64 {
            not_64.push((peer.allowed, peer.public_key));
        }
        let action = match before.get(&peer.public_key) {
            None => PeerAction::Create,
            Some(old) if old.persistent_keepalive != peer.persistent_keepalive => {
                PeerAction::Recreate
            }
            Some(old) if **old == peer => PeerAction::Keep,
            Some(old) => PeerAction::Update {
                endpoint: (old.endpoint != peer.endpoint).then_some(peer.endpoint),
                allowed: old.allowed != peer.allowed,
            },
        };
        plan.accepted.push((peer, action));
    }
    plan.removed = current
        .iter()
        .map(|p| p.public_key)
        .filter(|k| !seen.contains(k))
        .collect();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> PlanContext {
        PlanContext {
            self_key: [0; 32],
            own_subnet: "fd00:1:2:0::/64".parse().unwrap(),
            mesh_prefix: "fd00:1:2::/48".parse().unwrap(),
        }
    }

    fn peer(key: u8, n: u16) -> PeerConfig {
        PeerConfig {
            public_key: [key; 32],
            allowed: format!("fd00:1:2:{n:x}::/64").parse().unwrap(),
            endpoint: Some(format!("10.200.0.{key}:51820").parse().unwrap()),
            persistent_keepalive: Some(25),
        }
    }

    #[test]
    fn first_apply_creates_everyone() {
        let plan = plan_peers(&ctx(), &[], vec![peer(1, 1), peer(2, 2)]);
        assert_eq!(plan.accepted.len(), 2);
        assert!(plan.accepted.iter().all(|(_, a)| *a == PeerAction::Create));
        assert!(plan.removed.is_empty() && plan.rejected.is_empty());
    }

    #[test]
    fn same_set_is_a_noop() {
        let cur = vec![peer(1, 1), peer(2, 2)];
        let plan = plan_peers(&ctx(), &cur, cur.clone());
        assert!(plan.is_noop());
    }

    #[test]
    fn removal_addition_and_in_place_changes() {
        let cur = vec![peer(1, 1), peer(2, 2), peer(3, 3)];
        let mut moved = peer(2, 2);
        moved.endpoint = Some("10.200.0.99:51820".parse().unwrap());
        let mut renumbered = peer(3, 3);
        renumbered.allowed = "fd00:1:2:33::/64".parse().unwrap();
        let plan = plan_peers(&ctx(), &cur, vec![moved.clone(), renumbered, peer(4, 4)]);
        assert_eq!(plan.removed, vec![[1; 32]]);
        let actions: Vec<_> = plan
            .accepted
            .iter()
            .map(|(p, a)| (p.public_key[0], a.clone()))
            .collect();
        assert_eq!(
            actions,
            vec![
                (
                    2,
                    PeerAction::Update {
                        endpoint: Some(moved.endpoint),
                        allowed: false
                    }
                ),
                (
                    3,
                    PeerAction::Update {
                        endpoint: None,
                        allowed: true
                    }
                ),
                (4, PeerAction::Create),
            ]
        );
    }

    #[test]
    fn key_change_is_a_removal_plus_a_creation() {
        let cur = vec![peer(1, 1)];
        let plan = plan_peers(&ctx(), &cur, vec![peer(9, 1)]);
        assert_eq!(plan.removed, vec![[1; 32]]);
        assert_eq!(plan.accepted[0].1, PeerAction::Create);
    }

    #[test]
    fn keepalive_change_rebuilds_the_tunnel() {
        let cur = vec![peer(1, 1)];
        let mut p = peer(1, 1);
        p.persistent_keepalive = Some(5);
        let plan = plan_peers(&ctx(), &cur, vec![p]);
        assert_eq!(plan.accepted[0].1, PeerAction::Recreate);
    }

    #[test]
    fn refuses_self_duplicates_overlaps_and_outsiders() {
        let mut own = peer(0, 7);
        own.public_key = ctx().self_key;
        let dup = peer(1, 9);
        let mut on_own_subnet = peer(5, 0);
        on_own_subnet.allowed = "fd00:1:2:0::/64".parse().unwrap();
        let same_prefix = peer(6, 0x11);
        let mut wide = peer(7, 0);
        wide.allowed = "fd00:1:2:10::/60".parse().unwrap();
        let mut outside = peer(8, 0);
        outside.allowed = "fd00:9:9:1::/64".parse().unwrap();
        let plan = plan_peers(
            &ctx(),
            &[],
            vec![
                peer(1, 0x11),
                own,
                dup,
                on_own_subnet,
                same_prefix,
                wide,
                outside,
            ],
        );
        assert_eq!(plan.accepted.len(), 1);
        let reasons: Vec<_> = plan.rejected.iter().map(|(_, r)| r.clone()).collect();
        assert_eq!(
            reasons,
            vec![
                Rejection::OwnKey,
                Rejection::DuplicateKey,
                Rejection::OverlapsOwnSubnet,
                Rejection::OverlapsPeer([1; 32]),
                Rejection::OverlapsPeer([1; 32]),
                Rejection::OutsideMesh,
            ]
        );
    }

    #[test]
    fn a_wide_prefix_accepted_first_blocks_later_64s_inside_it() {
        let mut wide = peer(7, 0);
        wide.allowed = "fd00:1:2:10::/60".parse().unwrap();
        let plan = plan_peers(&ctx(), &[], vec![wide, peer(1, 0x11), peer(2, 0x21)]);
        assert_eq!(plan.accepted.len(), 2);
        assert_eq!(plan.rejected[0].1, Rejection::OverlapsPeer([7; 32]));
    }
}
