//! The app table on disk: creating, updating and deleting apps, running placement, taking the
//! nodes' state reports, and the apps revision.
//!
//! Every change builds the next [`AppsState`] beside the current one, writes the difference in
//! one transaction (the app change and the placement it causes together), and swaps the new state
//! in only after the commit. The apps revision goes up by one for each commit that changes an app
//! or some node's assignment set, and each such node's set is stamped with it.

use super::{Store, StoreError, ms, ts};
use crate::app_spec::{self, AppSpec};
use crate::apps::{self, AppRecord, AppsState, AssignmentRecord, StoredReport};
use crate::placement::{self, AppDemand, NodeFacts, Placed, PlacementChange, PlacementInput};
use crate::replica_address::{self, AddressRefusal, ReportContext};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tabbify_wire::Timestamp;
use tabbify_wire::app::{AppName, ArtifactDigest, Manifest};
use tabbify_wire::mesh::PeerId;
use tabbify_wire::placement::{
    AppEndpoints, AppList, AppView, AssignmentSet, NodeAppsReport, NodeAppsReportAck, ReplicaReport,
};

/// The longest error text kept from a node's report.
const MAX_REPORT_ERROR_CHARS: usize = 4096;

/// Why a state report was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Refused(#[from] AddressRefusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What `put_app` did.
#[derive(Debug, Clone, PartialEq)]
pub struct PutApp {
    pub created: bool,
    pub view: AppView,
}

impl Store {
    /// The apps revision of the last change (0 before the first).
    pub fn apps_revision(&self) -> u64 {
        self.apps.revision
    }

    /// Creates the app or updates the one with its name, and places it, in one transaction.
    pub fn put_app(
        &mut self,
        spec: AppSpec,
        now: Timestamp,
        grace: Duration,
    ) -> Result<PutApp, StoreError> {
        let name = spec.manifest.app.name.clone();
        let record = match self.apps.apps.get(&name) {
            None => AppRecord {
                version: 1,
                spec,
                created_at: now,
                updated_at: now,
            },
            Some(old) => {
                let bump = app_spec::is_new_version(
                    &old.spec.manifest_text,
                    old.spec.artifact_digest.as_ref(),
                    &spec,
                );
                let changed = bump || old.spec.appsrv_url != spec.appsrv_url;
                AppRecord {
                    version: old.version + u64::from(bump),
                    spec,
                    created_at: old.created_at,
                    updated_at: if changed { now } else { old.updated_at },
                }
            }
        };
        let created = !self.apps.apps.contains_key(&name);
        let mut next = self.apps.clone();
        let unchanged = next.apps.get(&name).is_some_and(|old| **old == record);
        if !unchanged {
            next.apps.insert(name.clone(), Arc::new(record));
        }
        self.place_and_commit(next, now, grace)?;
        let view = self
            .app_view(&name)
            .ok_or_else(|| StoreError::Corrupt(format!("app {name} vanished after its commit")))?;
        Ok(PutApp { created, view })
    }

    /// Deletes an app and withdraws its replicas. False when there is no such app.
    pub fn delete_app(
        &mut self,
        name: &AppName,
        now: Timestamp,
        grace: Duration,
    ) -> Result<bool, StoreError> {
        if !self.apps.apps.contains_key(name) {
            return Ok(false);
        }
        let mut next = self.apps.clone();
        next.apps.remove(name);
        self.place_and_commit(next, now, grace)?;
        Ok(true)
    }

    /// Runs placement over the current apps and roster and persists what changed.
    pub fn place_apps(&mut self, now: Timestamp, grace: Duration) -> Result<(), StoreError> {
        self.place_and_commit(self.apps.clone(), now, grace)
    }

    /// Runs placement if the passing of time or new heartbeat figures could change it: the
    /// first pass, a pending slot (free resources move with heartbeats), or a replica on an
    /// offline node (its grace period runs out). Otherwise nothing is read.
    pub fn place_apps_if_due(&mut self, now: Timestamp, grace: Duration) -> Result<(), StoreError> {
        let due = !self.placed_once
            || !self.pending.is_empty()
            || self
                .apps
                .assignments
                .values()
                .any(|a| a.placed.lost_at.is_some());
        if due {
            self.place_apps(now, grace)?;
        }
        Ok(())
    }

    /// Whether a roster change of `peers` may change placement: they hold (or held) a replica,
    /// or a slot is pending and one of them is an online node with that app's runtime tag.
    /// Placement reads the whole roster, so a join that cannot matter (no apps, every slot
    /// placed) skips it.
    pub fn placement_affected_by(&self, peers: &[&str]) -> bool {
        if self.apps.apps.is_empty() && self.apps.assignments.is_empty() {
            return false;
        }
        if !self.placed_once {
            return true;
        }
        let holds = |id: &str| {
            self.apps.node_revisions.contains_key(id)
                || self
                    .apps
                    .assignments
                    .values()
                    .any(|a| a.placed.peer_id == id)
        };
        if peers.iter().any(|id| holds(id)) {
            return true;
        }
        if self.pending.is_empty() {
            return false;
        }
        let wanted: Vec<tabbify_wire::Tag> = self
            .pending
            .keys()
            .filter_map(|(app, _)| self.apps.apps.get(app))
            .map(|a| placement::runtime_tag(a.spec.runtime()))
            .collect();
        peers
            .iter()
            .filter_map(|id| self.peers.get(*id))
            .any(|r| r.peer.online && wanted.iter().any(|t| r.peer.tags.contains(t)))
    }

    /// Records a node's report of the apps it runs for its assignments. A report that names a
    /// replica address the node may not claim (see `replica_address`) is refused whole and
    /// nothing of it is kept.
    pub fn report_apps(
        &mut self,
        peer: &str,
        report: NodeAppsReport,
        loopback_ok: bool,
        now: Timestamp,
    ) -> Result<NodeAppsReportAck, ReportError> {
        self.check_report_addresses(peer, &report, loopback_ok)?;
        let mut by_app: BTreeMap<AppName, ReplicaReport> = BTreeMap::new();
        for mut r in report.apps {
            if let Some(e) = &mut r.error
                && e.chars().count() > MAX_REPORT_ERROR_CHARS
            {
                *e = e.chars().take(MAX_REPORT_ERROR_CHARS).collect();
            }
            by_app.insert(r.app.clone(), r);
        }
        let mut next = self.apps.clone();
        let mut accepted = 0u32;
        for ((app, _), a) in next.assignments.iter_mut() {
            if a.placed.peer_id != peer {
                continue;
            }
            a.report = by_app.remove(app).map(|report| {
                accepted += 1;
                StoredReport {
                    report,
                    reported_at: now,
                }
            });
        }
        if !by_app.is_empty() {
            tracing::debug!(peer_id = %peer, ignored = by_app.len(), "report names apps not assigned to the node");
        }
        self.commit_apps(next)?;
        Ok(NodeAppsReportAck {
            revision: self.apps.node_revision(peer),
            accepted,
        })
    }

    /// Every address in `report` must be an app address of `peer` on the app's port.
    fn check_report_addresses(
        &self,
        peer: &str,
        report: &NodeAppsReport,
        loopback_ok: bool,
    ) -> Result<(), AddressRefusal> {
        let Some(node) = self.peers.get(peer) else {
            // The caller was resolved from its credential moments ago; a peer removed since has
            // no assignments, so nothing of its report would be kept anyway.
            return Ok(());
        };
        for r in &report.apps {
            let Some(addr) = r.address else { continue };
            let ctx = ReportContext {
                subnet: node.peer.subnet,
                node_ula: node.peer.ula,
                port: self
                    .apps
                    .apps
                    .get(&r.app)
                    .map(|a| a.spec.manifest.http.port),
                loopback_ok,
            };
            replica_address::check_report_address(&r.app, addr, &ctx)?;
        }
        Ok(())
    }

    pub fn app_view(&self, name: &AppName) -> Option<AppView> {
        let app = self.apps.apps.get(name)?;
        Some(apps::app_view(&self.apps, app, &self.pending, &|id| {
            self.peer(id)
        }))
    }

    pub fn app_list(&self) -> AppList {
        AppList {
            apps: self
                .apps
                .apps
                .values()
                .map(|app| apps::app_view(&self.apps, app, &self.pending, &|id| self.peer(id)))
                .collect(),
            revision: self.apps.revision,
        }
    }

    /// Where an ingress may send requests for `name`: running replicas on online nodes, and of
    /// those only the addresses an ingress may proxy to (`replica_address::proxyable`), whatever
    /// was stored.
    pub fn app_endpoints(&self, name: &AppName, loopback_ok: bool) -> Option<AppEndpoints> {
        let app = self.apps.apps.get(name)?;
        let mut found = apps::endpoints(&self.apps, app, &|id| self.peer(id));
        found.endpoints.retain(|addr| {
            let ok = replica_address::proxyable(*addr, self.mesh, loopback_ok);
            if !ok {
                tracing::warn!(app = %name, %addr, "a stored replica address is outside the mesh; not proxying to it");
            }
            ok
        });
        Some(found)
    }

    pub fn assignment_set(&self, peer: &str) -> AssignmentSet {
        self.apps.assignment_set(peer)
    }

    /// Places `next`'s apps on the current roster and commits the result.
    fn place_and_commit(
        &mut self,
        mut next: AppsState,
        now: Timestamp,
        grace: Duration,
    ) -> Result<(), StoreError> {
        self.placed_once = true;
        self.visited(self.peers.len());
        let nodes: Vec<NodeFacts> = self
            .peers
            .values()
            .map(|r| NodeFacts {
                peer_id: r.peer.peer_id.clone(),
                name: r.peer.display_name.clone(),
                online: r.peer.online,
                tags: r.peer.tags.clone(),
                resources: r.peer.resources,
                joined_at: r.peer.joined_at.unwrap_or(r.peer.last_seen),
            })
            .collect();
        let demands: Vec<AppDemand> = next
            .apps
            .values()
            .map(|a| AppDemand {
                name: a.name().clone(),
                runtime: a.spec.runtime(),
                replicas: a.spec.manifest.app.replicas,
                resources: a.spec.manifest.resources,
            })
            .collect();
        let current: BTreeMap<_, Placed> = next
            .assignments
            .iter()
            .map(|(k, a)| (k.clone(), a.placed.clone()))
            .collect();
        let plan = placement::place(&PlacementInput {
            apps: &demands,
            current: &current,
            nodes: &nodes,
            now,
            node_lost_grace: grace,
        });
        let mut previous = std::mem::take(&mut next.assignments);
        next.assignments = plan
            .placed
            .into_iter()
            .map(|(slot, placed)| {
                // A report belongs to the node it came from: it survives only if the slot stays.
                let report = previous
                    .remove(&slot)
                    .filter(|old| old.placed.peer_id == placed.peer_id)
                    .and_then(|old| old.report);
                (slot, AssignmentRecord { placed, report })
            })
            .collect();
        next.node_revisions
            .retain(|peer, _| self.peers.contains_key(peer));
        self.commit_apps(next)?;
        for change in &plan.changes {
            match change {
                PlacementChange::Placed { slot, peer_id } => {
                    tracing::info!(app = %slot.0, replica = slot.1, %peer_id, "replica placed");
                }
                PlacementChange::Withdrawn { slot, peer_id, why } => {
                    tracing::info!(app = %slot.0, replica = slot.1, %peer_id, why = why.as_str(), "replica withdrawn");
                }
            }
        }
        for (slot, reason) in &plan.pending {
            if self.pending.get(slot) != Some(reason) {
                tracing::info!(app = %slot.0, replica = slot.1, %reason, "replica pending");
            }
        }
        self.pending = plan.pending;
        Ok(())
    }

    /// Writes the difference between the current state and `next` in one transaction, stamping
    /// the revision when an app or a node's set changed, then makes `next` current.
    fn commit_apps(&mut self, mut next: AppsState) -> Result<(), StoreError> {
        let changed_nodes: Vec<PeerId> = self
            .apps
            .nodes_in_either(&next)
            .into_iter()
            // A node that left the roster has no set to stamp.
            .filter(|p| self.peers.contains_key(p))
            .filter(|p| self.apps.node_assignments(p) != next.node_assignments(p))
            .collect();
        next.revision = self.apps.revision;
        if self.apps.apps_differ(&next) || !changed_nodes.is_empty() {
            next.revision += 1;
            for peer in changed_nodes {
                next.node_revisions.insert(peer, next.revision);
            }
        }
        if next == self.apps {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        write_diff(&tx, &self.apps, &next)?;
        tx.commit()?;
        self.apps = next;
        Ok(())
    }
}

fn rev_sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn write_diff(tx: &Transaction<'_>, old: &AppsState, new: &AppsState) -> Result<(), StoreError> {
    for name in old.apps.keys().filter(|n| !new.apps.contains_key(*n)) {
        // Its assignments go with it (ON DELETE CASCADE).
        tx.execute("DELETE FROM apps WHERE name = ?1", params![name.as_str()])?;
    }
    for (name, app) in &new.apps {
        if old.apps.get(name).is_some_and(|o| **o == **app) {
            continue;
        }
        tx.prepare_cached(
            "INSERT INTO apps (name, version, manifest, artifact_digest, appsrv_url, created_at,
                 updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (name) DO UPDATE SET
                 version = excluded.version, manifest = excluded.manifest,
                 artifact_digest = excluded.artifact_digest, appsrv_url = excluded.appsrv_url,
                 updated_at = excluded.updated_at",
        )?
        .execute(params![
            name.as_str(),
            rev_sql(app.version),
            app.spec.manifest_text,
            app.spec
                .artifact_digest
                .as_ref()
                .map(ArtifactDigest::as_str),
            app.spec.appsrv_url,
            ms(app.created_at),
            ms(app.updated_at),
        ])?;
    }
    for (app, replica) in old.assignments.keys() {
        if !new.assignments.contains_key(&(app.clone(), *replica)) && new.apps.contains_key(app) {
            tx.execute(
                "DELETE FROM assignments WHERE app = ?1 AND replica = ?2",
                params![app.as_str(), replica],
            )?;
        }
    }
    for (slot, a) in &new.assignments {
        if old.assignments.get(slot) == Some(a) {
            continue;
        }
        let report = match &a.report {
            Some(r) => Some(serde_json::to_string(&r.report)?),
            None => None,
        };
        tx.prepare_cached(
            "INSERT INTO assignments (app, replica, peer_id, assigned_at, lost_at, report,
                 reported_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (app, replica) DO UPDATE SET
                 peer_id = excluded.peer_id, assigned_at = excluded.assigned_at,
                 lost_at = excluded.lost_at, report = excluded.report,
                 reported_at = excluded.reported_at",
        )?
        .execute(params![
            slot.0.as_str(),
            slot.1,
            a.placed.peer_id,
            ms(a.placed.assigned_at),
            a.placed.lost_at.map(ms),
            report,
            a.report.as_ref().map(|r| ms(r.reported_at)),
        ])?;
    }
    for peer in old.node_revisions.keys() {
        if !new.node_revisions.contains_key(peer) {
            tx.execute(
                "DELETE FROM node_assignments WHERE peer_id = ?1",
                params![peer],
            )?;
        }
    }
    for (peer, rev) in &new.node_revisions {
        if old.node_revisions.get(peer) != Some(rev) {
            tx.execute(
                "INSERT INTO node_assignments (peer_id, revision) VALUES (?1, ?2)
                 ON CONFLICT (peer_id) DO UPDATE SET revision = excluded.revision",
                params![peer, rev_sql(*rev)],
            )?;
        }
    }
    if old.revision != new.revision {
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('apps_revision', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![new.revision.to_string()],
        )?;
    }
    Ok(())
}

/// Reads the whole app table.
pub(super) fn load(conn: &Connection) -> Result<AppsState, StoreError> {
    let mut state = AppsState::default();
    let revision: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'apps_revision'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(text) = revision {
        state.revision = text
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("apps_revision {text:?}: {e}")))?;
    }

    let mut stmt = conn.prepare(
        "SELECT name, version, manifest, artifact_digest, appsrv_url, created_at, updated_at
         FROM apps",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let name: String = row.get(0)?;
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Corrupt(format!("app {name}: {what}: {e}"))
        };
        let manifest_text: String = row.get(2)?;
        let manifest =
            Manifest::from_toml_str(&manifest_text).map_err(|e| corrupt("manifest", &e))?;
        let artifact_digest = match row.get::<_, Option<String>>(3)? {
            Some(d) => Some(ArtifactDigest::parse(d).map_err(|e| corrupt("artifact_digest", &e))?),
            None => None,
        };
        let version: i64 = row.get(1)?;
        let record = AppRecord {
            version: u64::try_from(version).map_err(|e| corrupt("version", &e))?,
            spec: AppSpec {
                manifest_text,
                manifest,
                artifact_digest,
                appsrv_url: row.get(4)?,
            },
            created_at: ts(row.get(5)?),
            updated_at: ts(row.get(6)?),
        };
        if record.name().as_str() != name {
            return Err(corrupt("name", &"differs from the manifest's"));
        }
        state.apps.insert(record.name().clone(), Arc::new(record));
    }

    let mut stmt = conn.prepare(
        "SELECT app, replica, peer_id, assigned_at, lost_at, report, reported_at
         FROM assignments",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let app: String = row.get(0)?;
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Corrupt(format!("assignment of {app}: {what}: {e}"))
        };
        let name = AppName::new(app.clone()).map_err(|e| corrupt("app", &e))?;
        let replica: u32 = row.get(1)?;
        let report = match (
            row.get::<_, Option<String>>(5)?,
            row.get::<_, Option<i64>>(6)?,
        ) {
            (Some(text), Some(at)) => Some(StoredReport {
                report: serde_json::from_str(&text).map_err(|e| corrupt("report", &e))?,
                reported_at: ts(at),
            }),
            _ => None,
        };
        state.assignments.insert(
            (name, replica),
            AssignmentRecord {
                placed: Placed {
                    peer_id: row.get(2)?,
                    assigned_at: ts(row.get(3)?),
                    lost_at: row.get::<_, Option<i64>>(4)?.map(ts),
                },
                report,
            },
        );
    }

    let mut stmt = conn.prepare("SELECT peer_id, revision FROM node_assignments")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let rev: i64 = row.get(1)?;
        state
            .node_revisions
            .insert(row.get(0)?, u64::try_from(rev).unwrap_or(0));
    }
    Ok(state)
}
