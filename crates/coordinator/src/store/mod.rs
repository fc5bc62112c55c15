//! The coordinator's state: one SQLite file (WAL) and the in-memory view loaded from it.
//!
//! `Store` is the single owner of the roster, the join tokens, the address plan, the event log
//! and the app table (apps, assignments, node reports, the apps revision). Every change is one SQLite transaction; the in-memory maps are updated only after the
//! commit succeeds, so a failed write leaves both the file and memory as they were. Callers hold
//! it behind one mutex (see `service`), which also serialises revisions.

mod apps;
mod events;
mod listing;
mod peers;
mod removed;
mod schema;
mod tokens;

pub use apps::{PutApp, ReportError};
pub use events::{EncodedEvent, EncodedEventsAfter, EventsAfter};
pub use listing::PeerListView;
pub use peers::{
    CertificateRequest, HeartbeatError, HeartbeatOutcome, RegisterCommand, RegisterError,
    Registered, RenewError,
};
pub use removed::{CascadeRevoked, REMOVED_BY_OPERATOR};
pub use tokens::{CreateTokenError, RevokeError};

use crate::addressing::{self, SubnetId};
use crate::apps::AppsState;
use crate::node_auth::{self, CertSerials, KnownIdentity, NodeAuthError, NodeProof};
use crate::placement::SlotKey;
use crate::tokens::SecretHash;
use rand::Rng;
use rusqlite::{Connection, OptionalExtension, params};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use tabbify_wire::mesh::{Peer, PeerId, RemovedPeer, RosterSnapshot};
use tabbify_wire::{Ipv6Prefix, Tag, Timestamp};

/// File name of the database inside the data dir.
pub const DB_FILE: &str = "coordinator.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    // The cause is part of the message (not a `source`), so a `{:#}` chain does not repeat it.
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    #[error(
        "database {path} has schema version {found}; this coordinator understands up to {supported}"
    )]
    SchemaTooNew {
        path: String,
        found: i64,
        supported: i64,
    },
    #[error("database holds an invalid record: {0}")]
    Corrupt(String),
    #[error("cannot encode a record: {0}")]
    Encode(serde_json::Error),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        Self::Encode(e)
    }
}

/// One peer as the store keeps it: the public view plus what only the coordinator sees.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerRecord {
    /// Shared so a roster listing copies pointers, not 10,000 peers, while holding the lock.
    pub peer: Arc<Peer>,
    pub subnet: SubnetId,
    pub credential_hash: SecretHash,
    /// Set when the peer joined with a tag-restricted token; enforced on every later update.
    pub allowed_tags: Option<Vec<Tag>>,
    pub join_token_id: Option<String>,
    /// The node certificates it may present (mTLS).
    pub cert_serials: CertSerials,
}

/// What the store has done so far, counted (not timed) so tests can show that one change costs
/// the same whatever the size of the roster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkCounters {
    /// Rows SQLite inserted, updated or deleted (`sqlite3_total_changes`).
    pub rows_written: u64,
    /// Bytes of JSON the store produced (event bodies, listing fragments, peer columns).
    pub bytes_serialised: u64,
    /// Peer records a pass over the roster looked at.
    pub peers_visited: u64,
}

impl WorkCounters {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &WorkCounters) -> WorkCounters {
        WorkCounters {
            rows_written: self.rows_written - earlier.rows_written,
            bytes_serialised: self.bytes_serialised - earlier.bytes_serialised,
            peers_visited: self.peers_visited - earlier.peers_visited,
        }
    }
}

/// How old the `last_seen` on disk may get while heartbeats keep arriving. Only a restart reads
/// it, and liveness never counts time before a restart, so it need not follow every heartbeat.
pub const LAST_SEEN_PERSIST_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

pub struct Store {
    conn: Connection,
    mesh: Ipv6Prefix,
    revision: u64,
    peers: HashMap<PeerId, PeerRecord>,
    by_key: HashMap<String, PeerId>,
    used: BTreeSet<SubnetId>,
    /// The roster in address order with each peer's wire JSON, refreshed whenever the peer
    /// changes (see `listing`).
    listing: BTreeMap<SubnetId, listing::ListedPeer>,
    /// Apps, assignments, reports and the apps revision (see `apps`).
    apps: AppsState,
    /// Why each unplaced slot is unplaced, as of the last placement (recomputed, not stored).
    pending: BTreeMap<SlotKey, String>,
    /// Goes up whenever a peer leaves the roster or loses its certificates, so open streams
    /// re-check who they serve (see `service`).
    auth_generation: u64,
    /// Keys of peers an operator removed, refused at registration until re-admitted (by key).
    removed: HashMap<String, RemovedPeer>,
    /// Peers counted online (kept up to date so `/health` does not walk the roster).
    online: u64,
    /// Peers whose `last_seen` / `resources` in memory are newer than on disk; written in one
    /// transaction by [`Store::flush_heartbeats`].
    unflushed: HashSet<PeerId>,
    /// The `last_seen` each peer has on disk (for [`LAST_SEEN_PERSIST_EVERY`]).
    durable_seen: HashMap<PeerId, Timestamp>,
    /// Peers that left the roster or lost their certificates since the last
    /// [`Store::take_auth_changes`].
    auth_changes: Vec<PeerId>,
    bytes_serialised: Cell<u64>,
    peers_visited: Cell<u64>,
    /// Placement ran at least once since the store was opened (`pending` is known).
    placed_once: bool,
}

impl Store {
    /// Opens (creating when absent) the database at `path` and loads the roster.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path)?;
        schema::configure(&conn)?;
        schema::migrate(&mut conn, path)?;
        let mesh = load_or_create_mesh_prefix(&conn)?;
        let revision = events::current_revision(&conn)?;
        let records = peers::load_all(&conn, mesh)?;
        let app_state = apps::load(&conn)?;
        let removed_peers = removed::load_all(&conn)?;
        let mut store = Self {
            conn,
            mesh,
            revision,
            peers: HashMap::with_capacity(records.len()),
            by_key: HashMap::with_capacity(records.len()),
            used: BTreeSet::new(),
            listing: BTreeMap::new(),
            apps: app_state,
            pending: BTreeMap::new(),
            auth_generation: 0,
            removed: HashMap::with_capacity(removed_peers.len()),
            online: 0,
            unflushed: HashSet::new(),
            durable_seen: HashMap::with_capacity(records.len()),
            auth_changes: Vec::new(),
            bytes_serialised: Cell::new(0),
            peers_visited: Cell::new(0),
            placed_once: false,
        };
        for rec in records {
            store
                .durable_seen
                .insert(rec.peer.peer_id.clone(), rec.peer.last_seen);
            store.remember(rec);
        }
        for r in removed_peers {
            store.remember_removed(r);
        }
        tracing::info!(
            path = %path.display(),
            mesh = %mesh,
            peers = store.peers.len(),
            revision,
            apps = store.apps.apps.len(),
            apps_revision = store.apps.revision,
            "store opened"
        );
        Ok(store)
    }

    pub fn mesh_prefix(&self) -> Ipv6Prefix {
        self.mesh
    }

    /// The revision of the last change (0 before the first).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// `(total, online)` peer counts.
    pub fn counts(&self) -> (u64, u64) {
        (self.peers.len() as u64, self.online)
    }

    /// What the store has done since it was opened (see [`WorkCounters`]).
    pub fn work(&self) -> WorkCounters {
        WorkCounters {
            rows_written: self.conn.total_changes(),
            bytes_serialised: self.bytes_serialised.get(),
            peers_visited: self.peers_visited.get(),
        }
    }

    /// Counts `n` bytes of JSON produced.
    fn serialised(&self, n: usize) {
        self.bytes_serialised
            .set(self.bytes_serialised.get() + n as u64);
    }

    /// Counts `n` peer records looked at by a pass over the roster.
    fn visited(&self, n: usize) {
        self.peers_visited.set(self.peers_visited.get() + n as u64);
    }

    /// The peers that left the roster or lost their certificates since the last call: their
    /// open streams must re-check who they serve.
    pub fn take_auth_changes(&mut self) -> Vec<PeerId> {
        std::mem::take(&mut self.auth_changes)
    }

    pub fn peer(&self, peer_id: &str) -> Option<&Peer> {
        self.peers.get(peer_id).map(|r| &*r.peer)
    }

    /// Changes whenever a peer leaves the roster or loses its certificates.
    pub fn auth_generation(&self) -> u64 {
        self.auth_generation
    }

    /// The peer `proof` identifies. `mtls`: only certificates count; `allow_expired`: the
    /// caller only renews its certificate.
    pub fn authenticate(
        &self,
        proof: &NodeProof,
        mtls: bool,
        allow_expired: bool,
        now_unix: u64,
    ) -> Result<PeerId, NodeAuthError> {
        let claimed = proof.claimed_peer().ok_or(NodeAuthError::UnknownPeer)?;
        let known = self.peers.get(&claimed).map(|r| KnownIdentity {
            peer_id: &r.peer.peer_id,
            credential_hash: &r.credential_hash,
            serials: &r.cert_serials,
        });
        node_auth::check(known, proof, mtls, allow_expired, now_unix)?;
        Ok(claimed)
    }

    /// The whole roster as of now; prefer [`Store::peer_list`], which shares the peers' JSON.
    pub fn snapshot(&self) -> RosterSnapshot {
        let list = self.peer_list(None);
        RosterSnapshot {
            revision: list.revision,
            peers: list.peers.iter().map(|p| Peer::clone(p)).collect(),
        }
    }

    fn remember(&mut self, rec: PeerRecord) {
        let listed = listing::ListedPeer::new(Arc::clone(&rec.peer));
        self.serialised(listed.json_len());
        self.listing.insert(rec.subnet, listed);
        self.used.insert(rec.subnet);
        self.by_key.insert(
            rec.peer.public_key.as_str().to_string(),
            rec.peer.peer_id.clone(),
        );
        self.online += u64::from(rec.peer.online);
        if let Some(old) = self.peers.insert(rec.peer.peer_id.clone(), rec) {
            self.online -= u64::from(old.peer.online);
        }
    }

    /// Replaces a known peer's public view (same key, same subnet): the hot path of a heartbeat.
    fn refresh(&mut self, peer: Peer) {
        let Some(rec) = self.peers.get_mut(&peer.peer_id) else {
            return;
        };
        self.online = self.online - u64::from(rec.peer.online) + u64::from(peer.online);
        rec.peer = Arc::new(peer);
        let listed = listing::ListedPeer::new(Arc::clone(&rec.peer));
        let n = listed.json_len();
        self.listing.insert(rec.subnet, listed);
        self.serialised(n);
    }

    fn forget(&mut self, peer_id: &str) -> Option<PeerRecord> {
        let rec = self.peers.remove(peer_id)?;
        self.online -= u64::from(rec.peer.online);
        self.unflushed.remove(peer_id);
        self.durable_seen.remove(peer_id);
        self.auth_changes.push(rec.peer.peer_id.clone());
        self.auth_generation += 1;
        self.listing.remove(&rec.subnet);
        self.used.remove(&rec.subnet);
        self.by_key.remove(rec.peer.public_key.as_str());
        Some(rec)
    }

    /// Folds the WAL back into the main file (on a clean shutdown).
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.flush_all_heartbeats()?;
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Checks that memory and file agree (used by tests after crashes and restarts).
    pub fn verify_consistency(&mut self) -> Result<(), StoreError> {
        self.flush_all_heartbeats()?;
        let on_disk = peers::load_all(&self.conn, self.mesh)?;
        if on_disk.len() != self.peers.len() {
            return Err(StoreError::Corrupt(format!(
                "{} peers in memory, {} on disk",
                self.peers.len(),
                on_disk.len()
            )));
        }
        for rec in &on_disk {
            if self.peers.get(&rec.peer.peer_id) != Some(rec) {
                return Err(StoreError::Corrupt(format!(
                    "peer {} differs between memory and disk",
                    rec.peer.peer_id
                )));
            }
        }
        for (id, rec) in &self.peers {
            let fresh = listing::ListedPeer::new(Arc::clone(&rec.peer));
            if self.listing.get(&rec.subnet) != Some(&fresh) {
                return Err(StoreError::Corrupt(format!(
                    "peer {id}: listing entry is stale"
                )));
            }
        }
        if self.listing.len() != self.peers.len() {
            return Err(StoreError::Corrupt("listing has extra entries".into()));
        }
        let mut removed_on_disk = removed::load_all(&self.conn)?;
        removed_on_disk.sort_by(|a, b| (a.removed_at, &a.peer_id).cmp(&(b.removed_at, &b.peer_id)));
        if removed_on_disk != self.removed_peers() {
            return Err(StoreError::Corrupt(
                "removed keys differ between memory and disk".into(),
            ));
        }
        if apps::load(&self.conn)? != self.apps {
            return Err(StoreError::Corrupt(
                "the app table differs between memory and disk".into(),
            ));
        }
        events::verify_contiguous(&self.conn, self.revision)
    }
}

fn load_or_create_mesh_prefix(conn: &Connection) -> Result<Ipv6Prefix, StoreError> {
    let stored: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'mesh_prefix'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(text) = stored {
        let prefix: Ipv6Prefix = text
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("mesh_prefix {text:?}: {e}")))?;
        if !addressing::is_valid_mesh_prefix(&prefix) {
            return Err(StoreError::Corrupt(format!(
                "mesh_prefix {prefix} is not an fd00::/8 /48"
            )));
        }
        return Ok(prefix);
    }
    let prefix = addressing::mesh_prefix_from_global_id(rand::rng().random());
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('mesh_prefix', ?1)",
        params![prefix.to_string()],
    )?;
    tracing::info!(mesh = %prefix, "created a new mesh prefix");
    Ok(prefix)
}

/// Milliseconds as SQLite stores them.
fn ms(t: Timestamp) -> i64 {
    i64::try_from(t.unix_ms()).unwrap_or(i64::MAX)
}

fn ts(v: i64) -> Timestamp {
    Timestamp(u64::try_from(v).unwrap_or(0))
}

#[cfg(test)]
mod tests;
