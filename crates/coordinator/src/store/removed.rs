//! The keys of peers an operator removed. Removing a peer deletes its record, so without this a
//! node could register its key again at once with any join token it still holds (a reusable
//! one, say) and be back as if nothing happened. Its key is refused until an operator re-admits
//! it; a node that joins with a new key is a new peer and needs a valid token like any other.
//! Liveness purges (a node offline past the retention) are not removals: such a node may return.

use super::{PeerRecord, Store, StoreError, events, ms, tokens as token_rows, ts};
use crate::store::RevokeError;
use rusqlite::{Connection, Transaction, TransactionBehavior, params};
use std::cell::Cell;
use tabbify_wire::mesh::{Peer, RemovedPeer, RosterEvent, RosterEventKind};
use tabbify_wire::{PublicKeyB64, Timestamp};

/// The reason recorded when an operator removes a peer.
pub const REMOVED_BY_OPERATOR: &str = "removed by an operator";

/// What a cascading revocation did.
#[derive(Debug, Clone)]
pub struct CascadeRevoked {
    pub events: Vec<RosterEvent>,
    pub removed: Vec<RemovedPeer>,
}

pub(super) fn load_all(conn: &Connection) -> Result<Vec<RemovedPeer>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT public_key, peer_id, display_name, removed_at, reason FROM removed_keys",
    )?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let key: String = row.get(0)?;
        let public_key = PublicKeyB64::parse(&key)
            .map_err(|e| StoreError::Corrupt(format!("removed key {key:?}: {e}")))?;
        out.push(RemovedPeer {
            public_key,
            peer_id: row.get(1)?,
            display_name: row.get(2)?,
            removed_at: ts(row.get(3)?),
            reason: row.get(4)?,
        });
    }
    Ok(out)
}

fn insert(tx: &Transaction<'_>, r: &RemovedPeer) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO removed_keys (public_key, peer_id, display_name, removed_at, reason)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (public_key) DO UPDATE SET peer_id = excluded.peer_id,
             display_name = excluded.display_name, removed_at = excluded.removed_at,
             reason = excluded.reason",
    )?
    .execute(params![
        r.public_key.as_str(),
        r.peer_id,
        r.display_name,
        ms(r.removed_at),
        r.reason
    ])?;
    Ok(())
}

/// Deletes a peer's row, remembers its key as removed and appends the `removed` event, inside
/// the caller's transaction.
pub(super) fn remove_in(
    tx: &Transaction<'_>,
    serialised: &Cell<u64>,
    rec: &PeerRecord,
    revision: u64,
    reason: &str,
    now: Timestamp,
) -> Result<(RosterEvent, RemovedPeer), StoreError> {
    tx.execute(
        "DELETE FROM peers WHERE peer_id = ?1",
        params![rec.peer.peer_id],
    )?;
    let removed = RemovedPeer {
        peer_id: rec.peer.peer_id.clone(),
        public_key: rec.peer.public_key.clone(),
        display_name: rec.peer.display_name.clone(),
        removed_at: now,
        reason: reason.to_string(),
    };
    insert(tx, &removed)?;
    let mut last = Peer::clone(&rec.peer);
    last.online = false;
    let event = events::append(
        tx,
        serialised,
        revision,
        RosterEventKind::Removed,
        &last,
        now,
    )?;
    Ok((event, removed))
}

impl Store {
    /// The removed peer that held `public_key`, if its key is still refused.
    pub fn removed_key(&self, public_key: &str) -> Option<&RemovedPeer> {
        self.removed.get(public_key)
    }

    /// Every removed peer whose key is refused, oldest removal first.
    pub fn removed_peers(&self) -> Vec<RemovedPeer> {
        let mut list: Vec<RemovedPeer> = self.removed.values().cloned().collect();
        list.sort_by(|a, b| (a.removed_at, &a.peer_id).cmp(&(b.removed_at, &b.peer_id)));
        list
    }

    /// Lets the key of a removed peer register again (with a join token, as a new peer).
    /// `which` is the removed peer's id or its public key. `None` when nothing matches.
    pub fn readmit(&mut self, which: &str) -> Result<Option<RemovedPeer>, StoreError> {
        let Some(found) = self
            .removed
            .values()
            .find(|r| r.peer_id == which || r.public_key.as_str() == which)
            .cloned()
        else {
            return Ok(None);
        };
        self.conn.execute(
            "DELETE FROM removed_keys WHERE public_key = ?1",
            params![found.public_key.as_str()],
        )?;
        self.removed.remove(found.public_key.as_str());
        Ok(Some(found))
    }

    /// Revokes join token `id` and removes every peer it admitted, in one transaction; their
    /// keys are refused until re-admitted.
    pub fn revoke_join_token_cascade(
        &mut self,
        id: &str,
        now: Timestamp,
    ) -> Result<CascadeRevoked, RevokeError> {
        self.visited(self.peers.len());
        let mut admitted: Vec<&PeerRecord> = self
            .peers
            .values()
            .filter(|r| r.join_token_id.as_deref() == Some(id))
            .collect();
        admitted.sort_by(|a, b| a.peer.peer_id.cmp(&b.peer.peer_id));
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        if !token_rows::revoke_in(&tx, id, now)? {
            return Err(RevokeError::NotFound(id.to_string()));
        }
        let reason = format!("join token {id} revoked with --cascade");
        let mut revision = self.revision;
        let mut events = Vec::with_capacity(admitted.len());
        let mut removed = Vec::with_capacity(admitted.len());
        for rec in &admitted {
            revision += 1;
            let (ev, r) = remove_in(&tx, &self.bytes_serialised, rec, revision, &reason, now)?;
            events.push(ev);
            removed.push(r);
        }
        tx.commit().map_err(StoreError::from)?;
        self.revision = revision;
        for r in &removed {
            self.forget(&r.peer_id);
            self.removed
                .insert(r.public_key.as_str().to_string(), r.clone());
        }
        Ok(CascadeRevoked { events, removed })
    }

    pub(super) fn remember_removed(&mut self, r: RemovedPeer) {
        self.removed.insert(r.public_key.as_str().to_string(), r);
    }
}
