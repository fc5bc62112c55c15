//! Roster writes: register, heartbeat, remove, and applying liveness decisions. Each is one
//! transaction that also appends its event, so a revision exists exactly when its change does.

use super::removed::{self, REMOVED_BY_OPERATOR};
use super::{PeerRecord, Store, StoreError, events, ms, tokens as token_rows, ts};
use crate::addressing::{self, AllocError, SubnetId};
use crate::liveness::{self, LivenessChange, LivenessPolicy, Verdict};
use crate::node_auth::{CertSerials, NodeAuthError, NodeProof};
use crate::registration::{self, Admission, AdmissionError, KnownPeer, PresentedToken};
use crate::tokens;
use rusqlite::{Connection, Row, Transaction, TransactionBehavior, params};
use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;
use tabbify_pki::{IssuedCert, MeshCa};
use tabbify_wire::mesh::{
    HeartbeatRequest, NodeResources, Peer, RegisterRequest, RemovedPeer, RosterEvent,
    RosterEventKind,
};
use tabbify_wire::{Endpoint, Ipv6Prefix, PublicKeyB64, Tag, Timestamp};

/// A register request that passed body validation, with what came with it.
#[derive(Debug, Clone)]
pub struct RegisterCommand {
    pub request: RegisterRequest,
    /// The bearer value of `Authorization`, if any.
    pub join_token: Option<String>,
    pub open_join: bool,
    /// Where the search for a free subnet starts (random in production).
    pub alloc_start: SubnetId,
    /// The node certificate the connection presented (mTLS), or the peer credential from the
    /// body (`--insecure-no-mtls`).
    pub proof: Option<NodeProof>,
    /// With mTLS: the CA and the node's CSR; the answer then carries a certificate instead of a
    /// peer credential.
    pub certificate: Option<CertificateRequest>,
}

/// What it takes to issue a node certificate inside the registration transaction.
#[derive(Debug, Clone)]
pub struct CertificateRequest {
    pub ca: Arc<MeshCa>,
    pub csr: String,
    pub ttl: Duration,
}

impl CertificateRequest {
    fn issue(&self, peer: &Peer, now: Timestamp) -> Result<IssuedCert, tabbify_pki::CaError> {
        self.ca.issue_node(
            &self.csr,
            &peer.peer_id,
            peer.ula,
            &peer.subnet.to_string(),
            self.ttl,
            now.0 / 1000,
        )
    }
}

#[derive(Debug, Clone)]
pub struct Registered {
    pub peer: Peer,
    /// Only without mTLS.
    pub credential: Option<String>,
    /// Only with mTLS.
    pub certificate: Option<IssuedCert>,
    pub admission: Admission,
    pub event: Option<RosterEvent>,
    pub revision: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(
        "public key {} belonged to peer {} ({:?}), {} at {}; it may not join again until an operator runs `tcli peers readmit {}` (or the node joins with a new key)",
        .0.public_key, .0.peer_id, .0.display_name, .0.reason, .0.removed_at.to_rfc3339(), .0.peer_id
    )]
    Removed(Box<RemovedPeer>),
    #[error(transparent)]
    Admission(#[from] AdmissionError),
    #[error(transparent)]
    Address(#[from] AllocError),
    #[error(transparent)]
    Certificate(#[from] tabbify_pki::CaError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for RegisterError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(e.into())
    }
}

#[derive(Debug, Clone)]
pub struct HeartbeatOutcome {
    pub event: Option<RosterEvent>,
    pub revision: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    #[error(transparent)]
    Auth(#[from] NodeAuthError),
    #[error(transparent)]
    TagNotAllowed(AdmissionError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error(transparent)]
    Auth(#[from] NodeAuthError),
    #[error(transparent)]
    Certificate(#[from] tabbify_pki::CaError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// Registers a new key or re-registers a known one. Token use, address and event are one
    /// transaction: either all happen or none does.
    pub fn register(
        &mut self,
        cmd: RegisterCommand,
        now: Timestamp,
    ) -> Result<Registered, RegisterError> {
        let req = &cmd.request;
        let mtls = cmd.certificate.is_some();
        let known_id = self.by_key.get(req.public_key.as_str());
        let proven_by_certificate = match (&cmd.proof, known_id) {
            (Some(proof @ NodeProof::Certificate { .. }), Some(id)) => self
                .authenticate(proof, mtls, true, now.0 / 1000)
                .is_ok_and(|proven| &proven == id),
            _ => false,
        };
        let known_rec = self
            .by_key
            .get(req.public_key.as_str())
            .and_then(|id| self.peers.get(id));
        if known_rec.is_none()
            && let Some(gone) = self.removed.get(req.public_key.as_str())
        {
            return Err(RegisterError::Removed(Box::new(gone.clone())));
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;

        let token_record;
        let presented = match (known_rec, cmd.join_token.as_deref()) {
            (Some(_), _) | (None, None) => PresentedToken::None,
            (None, Some(text)) => match tokens::parse_join_token(text) {
                Ok(token) => {
                    token_record = token_rows::load(&tx, &token.id)?;
                    PresentedToken::Parsed {
                        token,
                        record: token_record.as_ref(),
                    }
                }
                Err(e) => PresentedToken::Malformed(e.to_string()),
            },
        };
        let known = known_rec.map(|r| KnownPeer {
            peer_id: &r.peer.peer_id,
            credential_hash: &r.credential_hash,
            allowed_tags: r.allowed_tags.as_deref(),
            proven_by_certificate,
        });
        // With mTLS the certificate is the only proof of ownership.
        let credential = if mtls {
            None
        } else {
            req.peer_credential.as_deref()
        };
        let admission = registration::admit(
            known.as_ref(),
            credential,
            &presented,
            cmd.open_join,
            &req.tags,
            now,
        )?;
        let subnet = addressing::allocate_subnet(
            self.mesh,
            &self.used,
            known_rec.map(|r| r.subnet),
            req.requested_ula,
            cmd.alloc_start,
        )?;

        let (mut record, credential, kind) = match known_rec {
            Some(old) => {
                let (peer, changed) = registration::reregistered(&old.peer, req, now);
                let record = PeerRecord {
                    peer: Arc::new(peer),
                    ..old.clone()
                };
                // Only a proven caller gets here, so it already holds this credential.
                let credential = req.peer_credential.clone().filter(|_| !mtls);
                (
                    record,
                    credential,
                    changed.then_some(RosterEventKind::Updated),
                )
            }
            None => {
                let peer_id = registration::new_peer_id();
                let secret = tokens::new_secret();
                let credential = tokens::format_peer_credential(&peer_id, &secret);
                let allowed_tags = match &presented {
                    PresentedToken::Parsed {
                        record: Some(rec), ..
                    } => rec.tags.clone(),
                    _ => None,
                };
                let token_id = match &admission {
                    Admission::Token { token_id } => Some(token_id.clone()),
                    _ => None,
                };
                let record = new_record(
                    self.mesh,
                    subnet,
                    peer_id,
                    req,
                    now,
                    &secret,
                    allowed_tags,
                    token_id,
                );
                let credential = (!mtls).then_some(credential);
                (record, credential, Some(RosterEventKind::Joined))
            }
        };
        let certificate = match &cmd.certificate {
            Some(request) => {
                let issued = request.issue(&record.peer, now)?;
                record.cert_serials = record.cert_serials.rotated(issued.serial.clone());
                Some(issued)
            }
            None => None,
        };

        if let Admission::Token { token_id } = &admission {
            token_rows::consume_use(&tx, token_id)?;
        }
        write_peer(&tx, &self.bytes_serialised, &record)?;
        let event = match kind {
            Some(kind) => Some(events::append(
                &tx,
                &self.bytes_serialised,
                self.revision + 1,
                kind,
                &record.peer,
                now,
            )?),
            None => None,
        };
        tx.commit()?;

        if event.is_some() {
            self.revision += 1;
        }
        let peer = Peer::clone(&record.peer);
        // Everything about the peer is on disk now.
        self.unflushed.remove(&peer.peer_id);
        self.durable_seen
            .insert(peer.peer_id.clone(), peer.last_seen);
        self.remember(record);
        Ok(Registered {
            peer,
            credential,
            certificate,
            admission,
            event,
            revision: self.revision,
        })
    }

    /// Records a heartbeat from the node `proof` identifies.
    ///
    /// A heartbeat that changes what other nodes see (coming back online, new tags, endpoints or
    /// version) is one transaction with its event, committed before the answer. A plain one only
    /// refreshes `last_seen` and `resources`: that happens in memory, and the peer is queued for
    /// [`Store::flush_heartbeats`] (which the liveness task runs every second) when its
    /// resources changed or its `last_seen` on disk is older than [`LAST_SEEN_PERSIST_EVERY`].
    /// A kill -9 loses at most those refreshes; liveness after a restart never counts time
    /// before the restart, so no peer is marked offline for it.
    ///
    /// [`LAST_SEEN_PERSIST_EVERY`]: super::LAST_SEEN_PERSIST_EVERY
    pub fn heartbeat(
        &mut self,
        proof: &NodeProof,
        mtls: bool,
        req: &HeartbeatRequest,
        now: Timestamp,
    ) -> Result<HeartbeatOutcome, HeartbeatError> {
        let peer_id = self.authenticate(proof, mtls, false, now.0 / 1000)?;
        let rec = self
            .peers
            .get(&peer_id)
            .ok_or(HeartbeatError::Auth(NodeAuthError::UnknownPeer))?;
        if let Some(allowed) = &rec.allowed_tags
            && !req.tags.is_empty()
        {
            registration::check_peer_tags(&rec.peer.peer_id, &req.tags, allowed)
                .map_err(HeartbeatError::TagNotAllowed)?;
        }
        let (peer, changed) = registration::heartbeat_applied(&rec.peer, req, now);
        if changed {
            let record = PeerRecord {
                peer: Arc::new(peer),
                ..rec.clone()
            };
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(StoreError::from)?;
            write_peer(&tx, &self.bytes_serialised, &record)?;
            let event = events::append(
                &tx,
                &self.bytes_serialised,
                self.revision + 1,
                RosterEventKind::Updated,
                &record.peer,
                now,
            )?;
            tx.commit().map_err(StoreError::from)?;
            self.revision += 1;
            self.unflushed.remove(&peer_id);
            self.durable_seen.insert(peer_id, now);
            self.remember(record);
            return Ok(HeartbeatOutcome {
                event: Some(event),
                revision: self.revision,
            });
        }
        let resources_changed = peer.resources != rec.peer.resources;
        let seen_on_disk = self.durable_seen.get(&peer_id).copied().unwrap_or_default();
        let stale = now.unix_ms().saturating_sub(seen_on_disk.unix_ms())
            >= u64::try_from(super::LAST_SEEN_PERSIST_EVERY.as_millis()).unwrap_or(u64::MAX);
        if resources_changed || stale {
            self.unflushed.insert(peer_id);
        }
        self.refresh(peer);
        Ok(HeartbeatOutcome {
            event: None,
            revision: self.revision,
        })
    }

    /// Writes the queued heartbeat refreshes (`last_seen`, `resources`) in one transaction.
    /// Returns how many peers were written.
    pub fn flush_heartbeats(&mut self) -> Result<usize, StoreError> {
        if self.unflushed.is_empty() {
            return Ok(0);
        }
        let ids: Vec<String> = self.unflushed.drain().collect();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut written = Vec::with_capacity(ids.len());
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE peers SET last_seen = ?2, resources = ?3 WHERE peer_id = ?1",
            )?;
            for id in &ids {
                let Some(rec) = self.peers.get(id) else {
                    continue;
                };
                let resources = resources_json(rec.peer.resources.as_ref());
                self.bytes_serialised.set(
                    self.bytes_serialised.get() + resources.as_ref().map_or(0, |r| r.len() as u64),
                );
                stmt.execute(params![id, ms(rec.peer.last_seen), resources])?;
                written.push((id, rec.peer.last_seen));
            }
        }
        let n = written.len();
        if let Err(e) = tx.commit() {
            // Nothing was written: try again next time.
            self.unflushed.extend(ids);
            return Err(e.into());
        }
        for (id, seen) in written {
            self.durable_seen.insert(id.clone(), seen);
        }
        Ok(n)
    }

    /// Writes every heartbeat refresh that memory has and disk does not (a clean shutdown,
    /// consistency checks).
    pub fn flush_all_heartbeats(&mut self) -> Result<usize, StoreError> {
        self.visited(self.peers.len());
        let behind: Vec<String> = self
            .peers
            .values()
            .filter(|r| self.durable_seen.get(&r.peer.peer_id) != Some(&r.peer.last_seen))
            .map(|r| r.peer.peer_id.clone())
            .collect();
        self.unflushed.extend(behind);
        self.flush_heartbeats()
    }

    /// Issues a new certificate to the node `proof` identifies (its current one may have
    /// expired, not been revoked); the one before the current stops working.
    pub fn renew_certificate(
        &mut self,
        proof: &NodeProof,
        request: &CertificateRequest,
        now: Timestamp,
    ) -> Result<IssuedCert, RenewError> {
        let peer_id = self.authenticate(proof, true, true, now.0 / 1000)?;
        let Some(rec) = self.peers.get(&peer_id) else {
            return Err(RenewError::Auth(NodeAuthError::UnknownPeer));
        };
        let issued = request.issue(&rec.peer, now)?;
        let serials = rec.cert_serials.rotated(issued.serial.clone());
        self.conn
            .prepare_cached(
                "UPDATE peers SET cert_serial = ?2, prev_cert_serial = ?3 WHERE peer_id = ?1",
            )
            .and_then(|mut s| s.execute(params![peer_id, serials.current, serials.previous]))
            .map_err(StoreError::from)?;
        if let Some(rec) = self.peers.get_mut(&peer_id) {
            rec.cert_serials = serials;
        }
        Ok(issued)
    }

    /// Revokes every certificate of `peer_id`: its next request is refused and its streams
    /// close. `false` when there is no such peer.
    pub fn revoke_certificates(&mut self, peer_id: &str) -> Result<bool, StoreError> {
        if !self.peers.contains_key(peer_id) {
            return Ok(false);
        }
        self.conn.execute(
            "UPDATE peers SET cert_serial = NULL, prev_cert_serial = NULL WHERE peer_id = ?1",
            params![peer_id],
        )?;
        if let Some(rec) = self.peers.get_mut(peer_id) {
            rec.cert_serials = CertSerials::default();
        }
        self.auth_changes.push(peer_id.to_string());
        self.auth_generation += 1;
        Ok(true)
    }

    /// Removes a peer now and frees its address. `None` when there is no such peer.
    /// Removes a peer now and frees its address; its key is refused until re-admitted. `None`
    /// when there is no such peer.
    pub fn remove_peer(
        &mut self,
        peer_id: &str,
        now: Timestamp,
    ) -> Result<Option<RosterEvent>, StoreError> {
        let Some(rec) = self.peers.get(peer_id) else {
            return Ok(None);
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (event, removed) = removed::remove_in(
            &tx,
            &self.bytes_serialised,
            rec,
            self.revision + 1,
            REMOVED_BY_OPERATOR,
            now,
        )?;
        tx.commit()?;
        self.revision += 1;
        self.forget(peer_id);
        self.remember_removed(removed);
        Ok(Some(event))
    }

    /// Applies the liveness decision due at `now`; returns the events, in order.
    pub fn apply_liveness(
        &mut self,
        policy: &LivenessPolicy,
        serving_since: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<RosterEvent>, StoreError> {
        self.visited(self.peers.len());
        let mut changes: Vec<LivenessChange> = self
            .peers
            .values()
            .filter_map(|r| {
                let p = &r.peer;
                liveness::judge(policy, p.last_seen, p.online, serving_since, now).map(
                    |v| match v {
                        Verdict::Offline => LivenessChange::Offline(p.peer_id.clone()),
                        Verdict::Purge => LivenessChange::Purge(p.peer_id.clone()),
                    },
                )
            })
            .collect();
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        // Deterministic order of events within one tick.
        changes.sort_by(|a, b| change_peer(a).cmp(change_peer(b)));
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut out = Vec::with_capacity(changes.len());
        let mut updated = Vec::new();
        let mut purged = Vec::new();
        let mut revision = self.revision;
        for change in &changes {
            let Some(rec) = self.peers.get(change_peer(change)) else {
                continue;
            };
            revision += 1;
            match change {
                LivenessChange::Offline(_) => {
                    let mut rec = rec.clone();
                    Arc::make_mut(&mut rec.peer).online = false;
                    tx.execute(
                        "UPDATE peers SET online = 0 WHERE peer_id = ?1",
                        params![rec.peer.peer_id],
                    )?;
                    out.push(events::append(
                        &tx,
                        &self.bytes_serialised,
                        revision,
                        RosterEventKind::Offline,
                        &rec.peer,
                        now,
                    )?);
                    updated.push(rec);
                }
                LivenessChange::Purge(id) => {
                    tx.execute("DELETE FROM peers WHERE peer_id = ?1", params![id])?;
                    let mut last = Peer::clone(&rec.peer);
                    last.online = false;
                    out.push(events::append(
                        &tx,
                        &self.bytes_serialised,
                        revision,
                        RosterEventKind::Removed,
                        &last,
                        now,
                    )?);
                    purged.push(id.clone());
                }
            }
        }
        tx.commit()?;
        self.revision = revision;
        for rec in updated {
            self.remember(rec);
        }
        for id in purged {
            self.forget(&id);
        }
        Ok(out)
    }
}

fn change_peer(c: &LivenessChange) -> &str {
    match c {
        LivenessChange::Offline(id) | LivenessChange::Purge(id) => id,
    }
}

#[allow(clippy::too_many_arguments)]
fn new_record(
    mesh: Ipv6Prefix,
    subnet: SubnetId,
    peer_id: String,
    req: &RegisterRequest,
    now: Timestamp,
    secret: &str,
    allowed_tags: Option<Vec<Tag>>,
    join_token_id: Option<String>,
) -> PeerRecord {
    PeerRecord {
        peer: Arc::new(Peer {
            peer_id,
            ula: addressing::node_ula(mesh, subnet),
            subnet: addressing::subnet_prefix(mesh, subnet),
            display_name: req.display_name.clone(),
            tags: req.tags.clone(),
            public_key: req.public_key.clone(),
            endpoints: req.endpoints.clone(),
            last_seen: now,
            online: true,
            version: req.version.clone(),
            joined_at: Some(now),
            resources: req.resources,
        }),
        subnet,
        credential_hash: tokens::hash_secret(secret),
        allowed_tags,
        join_token_id,
        cert_serials: CertSerials::default(),
    }
}

fn resources_json(r: Option<&NodeResources>) -> Option<String> {
    r.and_then(|r| serde_json::to_string(r).ok())
}

fn write_peer(
    tx: &Transaction<'_>,
    serialised: &Cell<u64>,
    rec: &PeerRecord,
) -> Result<(), StoreError> {
    let p = &rec.peer;
    let allowed = match &rec.allowed_tags {
        Some(t) => Some(serde_json::to_string(t)?),
        None => None,
    };
    let tags = serde_json::to_string(&p.tags)?;
    let endpoints = serde_json::to_string(&p.endpoints)?;
    let resources = resources_json(p.resources.as_ref());
    let n = [
        allowed.as_ref(),
        Some(&tags),
        Some(&endpoints),
        resources.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(String::len)
    .sum::<usize>();
    serialised.set(serialised.get() + n as u64);
    tx.prepare_cached(
        "INSERT INTO peers (peer_id, public_key, subnet, display_name, tags, allowed_tags,
             endpoints, version, resources, credential_hash, joined_at, last_seen, online,
             join_token_id, cert_serial, prev_cert_serial)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
         ON CONFLICT (peer_id) DO UPDATE SET
             display_name = excluded.display_name, tags = excluded.tags,
             allowed_tags = excluded.allowed_tags, endpoints = excluded.endpoints,
             version = excluded.version, resources = excluded.resources,
             credential_hash = excluded.credential_hash, last_seen = excluded.last_seen,
             online = excluded.online, cert_serial = excluded.cert_serial,
             prev_cert_serial = excluded.prev_cert_serial",
    )?
    .execute(params![
        p.peer_id,
        p.public_key.as_str(),
        i64::from(rec.subnet),
        p.display_name,
        tags,
        allowed,
        endpoints,
        p.version,
        resources,
        &rec.credential_hash[..],
        ms(p.joined_at.unwrap_or(p.last_seen)),
        ms(p.last_seen),
        p.online,
        rec.join_token_id,
        rec.cert_serials.current,
        rec.cert_serials.previous,
    ])?;
    Ok(())
}

pub(super) fn load_all(conn: &Connection, mesh: Ipv6Prefix) -> Result<Vec<PeerRecord>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT peer_id, public_key, subnet, display_name, tags, allowed_tags, endpoints, version,
                resources, credential_hash, joined_at, last_seen, online, join_token_id,
                cert_serial, prev_cert_serial
         FROM peers",
    )?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(record_from_row(row, mesh)?);
    }
    Ok(out)
}

fn record_from_row(row: &Row<'_>, mesh: Ipv6Prefix) -> Result<PeerRecord, StoreError> {
    let peer_id: String = row.get(0)?;
    let corrupt = |what: &str, e: &dyn std::fmt::Display| {
        StoreError::Corrupt(format!("peer {peer_id}: {what}: {e}"))
    };
    let key: String = row.get(1)?;
    let public_key = PublicKeyB64::parse(&key).map_err(|e| corrupt("public_key", &e))?;
    let subnet_raw: i64 = row.get(2)?;
    let subnet = SubnetId::try_from(subnet_raw).map_err(|e| corrupt("subnet", &e))?;
    let tags: Vec<Tag> =
        serde_json::from_str(&row.get::<_, String>(4)?).map_err(|e| corrupt("tags", &e))?;
    let allowed_tags: Option<Vec<Tag>> = match row.get::<_, Option<String>>(5)? {
        Some(t) => Some(serde_json::from_str(&t).map_err(|e| corrupt("allowed_tags", &e))?),
        None => None,
    };
    let endpoints: Vec<Endpoint> =
        serde_json::from_str(&row.get::<_, String>(6)?).map_err(|e| corrupt("endpoints", &e))?;
    let resources: Option<NodeResources> = match row.get::<_, Option<String>>(8)? {
        Some(t) => Some(serde_json::from_str(&t).map_err(|e| corrupt("resources", &e))?),
        None => None,
    };
    let hash: Vec<u8> = row.get(9)?;
    let credential_hash: [u8; 32] = hash
        .as_slice()
        .try_into()
        .map_err(|_| corrupt("credential_hash", &"not 32 bytes"))?;
    Ok(PeerRecord {
        peer: Arc::new(Peer {
            ula: addressing::node_ula(mesh, subnet),
            subnet: addressing::subnet_prefix(mesh, subnet),
            display_name: row.get(3)?,
            tags,
            public_key,
            endpoints,
            last_seen: ts(row.get(11)?),
            online: row.get(12)?,
            version: row.get(7)?,
            joined_at: Some(ts(row.get(10)?)),
            resources,
            peer_id: peer_id.clone(),
        }),
        subnet,
        credential_hash,
        allowed_tags,
        join_token_id: row.get(13)?,
        cert_serials: CertSerials {
            current: row.get(14)?,
            previous: row.get(15)?,
        },
    })
}
