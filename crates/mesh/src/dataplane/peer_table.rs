//! The peer table the packet threads route by, and its single writer.
//!
//! `set_peers` (through [`PeerControl`], behind one mutex) is the only code that changes the peer
//! set: it plans the change, builds a new immutable [`PeerTable`] that reuses the links of kept
//! peers (so sessions survive), and publishes it. Packet threads keep a cached `Arc` of the
//! table and re-read the shared slot only when its generation number moves, so the per-packet
//! cost of the indirection is one atomic load.

use super::config::PeerConfig;
use super::keys::encode_key;
use super::link::{Link, TunnelFactory};
use super::peer_plan::{PeerAction, PlanContext, Rejection, plan_peers};
use super::prefix_table::PrefixTable;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::x25519::StaticSecret;
use std::collections::{HashMap, HashSet};
use std::net::Ipv6Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// boringtun shifts the peer index left by 8 bits inside a u32.
const INDEX_SPACE: u32 = 1 << 24;

pub struct PeerEntry {
    pub config: PeerConfig,
    pub link: Arc<Link>,
}

/// An immutable view of the peers: by key (handshake initiations), by session index (everything
/// else inbound) and by destination prefix (outbound).
#[derive(Default)]
pub struct PeerTable {
    entries: Vec<PeerEntry>,
    by_key: HashMap<[u8; 32], usize>,
    by_index: HashMap<u32, usize>,
    routes: PrefixTable<usize>,
}

impl PeerTable {
    fn build(entries: Vec<PeerEntry>) -> Self {
        let mut t = PeerTable {
            by_key: HashMap::with_capacity(entries.len()),
            by_index: HashMap::with_capacity(entries.len()),
            routes: PrefixTable::new(),
            entries: Vec::new(),
        };
        for (i, e) in entries.iter().enumerate() {
            t.by_key.insert(e.link.public_key, i);
            t.by_index.insert(e.link.index, i);
            t.routes.insert(e.config.allowed, i);
        }
        t.entries = entries;
        t
    }

    pub fn route(&self, destination: Ipv6Addr) -> Option<&PeerEntry> {
        self.routes.lookup(destination).map(|&i| &self.entries[i])
    }

    pub fn by_key(&self, key: &[u8; 32]) -> Option<&PeerEntry> {
        self.by_key.get(key).map(|&i| &self.entries[i])
    }

    pub fn by_index(&self, index: u32) -> Option<&PeerEntry> {
        self.by_index.get(&index).map(|&i| &self.entries[i])
    }

    pub fn entries(&self) -> &[PeerEntry] {
        &self.entries
    }
}

/// The published table.
pub struct TableSlot {
    table: RwLock<Arc<PeerTable>>,
    generation: AtomicU64,
}

impl TableSlot {
    pub fn new() -> Self {
        Self {
            table: RwLock::new(Arc::new(PeerTable::default())),
            generation: AtomicU64::new(0),
        }
    }

    pub fn load(&self) -> Arc<PeerTable> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn publish(&self, table: PeerTable) {
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// A packet thread's cached copy of the table.
pub struct TableReader {
    generation: u64,
    table: Arc<PeerTable>,
}

impl TableReader {
    pub fn new(slot: &TableSlot) -> Self {
        let generation = slot.generation.load(Ordering::Acquire);
        Self {
            generation,
            table: slot.load(),
        }
    }

    /// The current table, refreshed if a newer one was published.
    pub fn current(&mut self, slot: &TableSlot) -> &PeerTable {
        let g = slot.generation.load(Ordering::Acquire);
        if g != self.generation {
            self.generation = g;
            self.table = slot.load();
        }
        &self.table
    }
}

/// What one `set_peers` did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplySummary {
    pub created: usize,
    pub updated: usize,
    pub kept: usize,
    pub removed: usize,
    pub rejected: usize,
}

/// The single writer of the peer set.
pub struct PeerControl {
    ctx: PlanContext,
    factory: Arc<TunnelFactory>,
    current: Vec<PeerConfig>,
    links: HashMap<[u8; 32], Arc<Link>>,
    next_index: u32,
}

impl PeerControl {
    pub fn new(ctx: PlanContext, secret: StaticSecret, rate_limiter: Arc<RateLimiter>) -> Self {
        Self {
            ctx,
            factory: Arc::new(TunnelFactory {
                own_secret: secret,
                rate_limiter,
            }),
            current: Vec::new(),
            links: HashMap::new(),
            // A random start makes a restarted node's session indices unlike its last run's.
            next_index: rand::random::<u32>() % INDEX_SPACE,
        }
    }

    fn allocate_index(&mut self, in_use: &HashSet<u32>) -> u32 {
        loop {
            self.next_index = (self.next_index + 1) % INDEX_SPACE;
            if !in_use.contains(&self.next_index) {
                return self.next_index;
            }
        }
    }

    /// Applies the declarative peer set and publishes the new table.
    pub fn apply(&mut self, desired: Vec<PeerConfig>, slot: &TableSlot) -> ApplySummary {
        let plan = plan_peers(&self.ctx, &self.current, desired);
        let mut summary = ApplySummary {
            removed: plan.removed.len(),
            rejected: plan.rejected.len(),
            ..Default::default()
        };
        for (peer, why) in &plan.rejected {
            let reason = match why {
                Rejection::OwnKey => "it has this node's own key".to_string(),
                Rejection::DuplicateKey => "its key appears twice".to_string(),
                Rejection::OverlapsOwnSubnet => "its prefix overlaps this node's /64".to_string(),
                Rejection::OverlapsPeer(k) => format!("its prefix overlaps peer {}", encode_key(k)),
                Rejection::OutsideMesh => "its prefix is outside the mesh prefix".to_string(),
            };
            tracing::warn!(peer = %encode_key(&peer.public_key), allowed = %peer.allowed, "ignoring peer: {reason}");
        }
        if plan.is_noop() {
            summary.kept = plan.accepted.len();
            return summary;
        }
        for key in &plan.removed {
            self.links.remove(key);
            tracing::debug!(peer = %encode_key(key), "peer removed");
        }
        let mut in_use: HashSet<u32> = self.links.values().map(|l| l.index).collect();
        let mut entries = Vec::with_capacity(plan.accepted.len());
        let mut configs = Vec::with_capacity(plan.accepted.len());
        for (config, action) in plan.accepted {
            let existing = self.links.get(&config.public_key).cloned();
            let link = match (action, existing) {
                (PeerAction::Keep, Some(link)) => {
                    summary.kept += 1;
                    link
                }
                (PeerAction::Update { endpoint, .. }, Some(link)) => {
                    summary.updated += 1;
                    if let Some(e) = endpoint {
                        link.set_endpoint(e);
                    }
                    tracing::debug!(peer = %encode_key(&config.public_key), allowed = %config.allowed, "peer updated");
                    link
                }
                (_, old) => {
                    summary.created += 1;
                    if let Some(old) = old {
                        in_use.remove(&old.index);
                    }
                    let index = self.allocate_index(&in_use);
                    in_use.insert(index);
                    let link = Arc::new(Link::new(
                        Arc::clone(&self.factory),
                        config.public_key,
                        index,
                        config.endpoint,
                        config.persistent_keepalive,
                    ));
                    tracing::debug!(peer = %encode_key(&config.public_key), allowed = %config.allowed, "peer added");
                    self.links.insert(config.public_key, link.clone());
                    link
                }
            };
            entries.push(PeerEntry {
                config: config.clone(),
                link,
            });
            configs.push(config);
        }
        self.current = configs;
        slot.publish(PeerTable::build(entries));
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use boringtun::x25519::PublicKey;

    fn control() -> (PeerControl, TableSlot) {
        let secret = StaticSecret::from([7u8; 32]);
        let rl = Arc::new(RateLimiter::new(&PublicKey::from(&secret), 100));
        let ctx = PlanContext {
            self_key: PublicKey::from(&secret).to_bytes(),
            own_subnet: "fd00:1:2::/64".parse().unwrap(),
            mesh_prefix: "fd00:1:2::/48".parse().unwrap(),
        };
        (PeerControl::new(ctx, secret, rl), TableSlot::new())
    }

    fn peer(key: u8, n: u16) -> PeerConfig {
        PeerConfig {
            public_key: [key; 32],
            allowed: format!("fd00:1:2:{n:x}::/64").parse().unwrap(),
            endpoint: Some(format!("10.200.0.{key}:51820").parse().unwrap()),
            persistent_keepalive: None,
        }
    }

    #[test]
    fn kept_peers_keep_their_link_and_routes_follow_changes() {
        let (mut ctl, slot) = control();
        let mut reader = TableReader::new(&slot);
        assert!(reader.current(&slot).entries().is_empty());
        let s = ctl.apply(vec![peer(1, 1), peer(2, 2)], &slot);
        assert_eq!((s.created, s.removed), (2, 0));
        let t = reader.current(&slot);
        let link1 = t
            .route("fd00:1:2:1::5".parse().unwrap())
            .unwrap()
            .link
            .clone();
        assert_eq!(link1.public_key, [1; 32]);
        assert!(t.by_index(link1.index).is_some());
        assert!(t.by_key(&[2; 32]).is_some());

        // Peer 1 renumbered, peer 2 removed, peer 3 added.
        let mut p1 = peer(1, 1);
        p1.allowed = "fd00:1:2:11::/64".parse().unwrap();
        let s = ctl.apply(vec![p1, peer(3, 3)], &slot);
        assert_eq!((s.created, s.updated, s.removed), (1, 1, 1));
        let t = reader.current(&slot);
        let again = t
            .route("fd00:1:2:11::5".parse().unwrap())
            .unwrap()
            .link
            .clone();
        assert!(
            Arc::ptr_eq(&link1, &again),
            "session survives an in-place update"
        );
        assert!(t.route("fd00:1:2:1::5".parse().unwrap()).is_none());
        assert!(t.route("fd00:1:2:2::5".parse().unwrap()).is_none());
        assert!(t.by_key(&[2; 32]).is_none());
        let l3 = t.by_key(&[3; 32]).unwrap().link.index;
        assert_ne!(l3, link1.index);
        assert!(l3 < INDEX_SPACE);
    }

    #[test]
    fn idle_peers_hold_no_tunnel() {
        let (mut ctl, slot) = control();
        let peers: Vec<PeerConfig> = (1..=200u16)
            .map(|n| {
                let mut p = peer(0, n);
                p.public_key[..2].copy_from_slice(&n.to_le_bytes());
                p.public_key[31] = 1;
                p.persistent_keepalive = Some(25);
                p
            })
            .collect();
        let s = ctl.apply(peers, &slot);
        assert_eq!(s.created, 200);
        let t = slot.load();
        assert_eq!(t.entries().len(), 200);
        assert!(
            t.entries().iter().all(|e| !e.link.has_tunnel()),
            "no boringtun state until a packet or a handshake needs it"
        );
        assert!(t.entries()[0].link.snapshot().last_handshake.is_none());
    }

    #[test]
    fn noop_apply_does_not_republish() {
        let (mut ctl, slot) = control();
        ctl.apply(vec![peer(1, 1)], &slot);
        let g = slot.generation.load(Ordering::Acquire);
        let s = ctl.apply(vec![peer(1, 1)], &slot);
        assert_eq!(s.kept, 1);
        assert_eq!(slot.generation.load(Ordering::Acquire), g);
    }

    #[test]
    fn configured_endpoint_change_reaches_the_link() {
        let (mut ctl, slot) = control();
        ctl.apply(vec![peer(1, 1)], &slot);
        let mut moved = peer(1, 1);
        moved.endpoint = Some("10.200.0.77:51820".parse().unwrap());
        ctl.apply(vec![moved.clone()], &slot);
        let t = slot.load();
        assert_eq!(
            t.by_key(&[1; 32]).unwrap().link.snapshot().endpoint,
            moved.endpoint
        );
    }
}
