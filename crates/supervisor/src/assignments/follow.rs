//! The assignment loop: follow this node's assignments at the coordinator over the resumable
//! event stream, make them true with the app manager, and report what runs. Every connection is
//! outbound, so a node behind NAT works.
//!
//! The stream is level-triggered (each event is the node's complete set), so the loop only keeps
//! the latest set and reconciles to it; [`super::reconcile`] decides, this module does the I/O.
//! Deploys and removals run as tasks so a slow artifact download never holds up a removal; their
//! outcome comes back over a channel to the one task that owns the loop's state. Which apps this
//! node runs *because of an assignment* is persisted in `assignments.json`, so a restarted
//! supervisor stops what it no longer owns and never touches apps an operator deployed by hand.

use super::ArtifactCache;
use super::reconcile::{self, Action, Assigned, Failure, Inputs, LocalApp, Owned};
use crate::apps::{AppError, AppsHandle, upload};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;
use tabbify_client::CoordinatorClient;
use tabbify_wire::Timestamp;
use tabbify_wire::app::{AppId, AppName, ArtifactDigest};
use tabbify_wire::mesh::RegisterResponse;
use tabbify_wire::node_apps::{AppInfo, AppState};
use tabbify_wire::placement::{Assignment, AssignmentSet, NodeAppsReport, ReplicaReport};
use tokio::sync::{mpsc, watch};

/// How often the loop reconciles and reports even when nothing arrives.
const TICK: Duration = Duration::from_secs(2);
/// Longest wait before reconnecting a dropped stream.
const RECONNECT_CAP: Duration = Duration::from_secs(10);

/// What `assignments.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Persisted {
    /// The revision of the last set applied, to resume the stream.
    #[serde(default)]
    revision: Option<u64>,
    #[serde(default)]
    owned: BTreeMap<AppName, Owned>,
}

/// The outcome of one task the loop started.
enum Done {
    Deployed {
        app: AppName,
        version: u64,
        app_id: AppId,
        artifact_digest: ArtifactDigest,
    },
    DeployFailed {
        app: AppName,
        version: u64,
        error: String,
    },
    Removed {
        app: AppName,
    },
    /// The delete failed; the next reconcile tries again.
    RemoveFailed {
        app: AppName,
    },
}

pub struct Follower {
    pub client: CoordinatorClient,
    pub apps: AppsHandle,
    pub cache: ArtifactCache,
    /// `<data-dir>/assignments.json`.
    pub state_file: PathBuf,
    /// The current registration: its credential authorises the stream and the reports.
    pub registered: watch::Receiver<Option<RegisterResponse>>,
}

struct LoopState {
    persisted: Persisted,
    latest: Option<AssignmentSet>,
    busy: BTreeSet<AppName>,
    failures: BTreeMap<AppName, Failure>,
    done_tx: mpsc::UnboundedSender<Done>,
}

impl Follower {
    /// Runs until the task is aborted.
    pub async fn run(mut self) {
        let persisted = self.load();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let mut st = LoopState {
            persisted,
            latest: None,
            busy: BTreeSet::new(),
            failures: BTreeMap::new(),
            done_tx,
        };
        let mut backoff = Duration::from_millis(250);
        loop {
            let Some(credential) = self.credential().await else {
                return;
            };
            let credential = credential.as_deref();
            // Without a set in hand, ask from scratch so the first event comes at once.
            let since = st.latest.as_ref().map(|s| s.revision);
            let stream = match self.client.watch_assignments(credential, since).await {
                Ok(s) => {
                    backoff = Duration::from_millis(250);
                    s
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "cannot follow assignments");
                    self.idle(&mut st, &mut done_rx, credential, backoff).await;
                    backoff = (backoff * 2).min(RECONNECT_CAP);
                    continue;
                }
            };
            tracing::debug!(?since, "following assignments");
            let mut stream = std::pin::pin!(stream);
            let mut tick = tokio::time::interval(TICK);
            loop {
                tokio::select! {
                    item = stream.next() => match item {
                        Some(Ok(set)) => {
                            tracing::info!(revision = set.revision, apps = set.assignments.len(), "assignments");
                            st.persisted.revision = Some(set.revision);
                            st.latest = Some(set);
                            self.save(&st.persisted);
                            self.step(&mut st, credential).await;
                        }
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "assignment stream broke; reconnecting");
                            break;
                        }
                        None => {
                            tracing::info!("assignment stream ended; reconnecting");
                            break;
                        }
                    },
                    Some(done) = done_rx.recv() => {
                        self.finish(&mut st, done);
                        self.step(&mut st, credential).await;
                    }
                    _ = tick.tick() => self.step(&mut st, credential).await,
                    changed = self.registered.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        // A new registration may carry a new credential: reconnect with it.
                        break;
                    }
                }
            }
            self.idle(&mut st, &mut done_rx, credential, backoff).await;
        }
    }

    /// Waits `wait` while still taking in the outcome of running tasks.
    async fn idle(
        &self,
        st: &mut LoopState,
        done_rx: &mut mpsc::UnboundedReceiver<Done>,
        credential: Option<&str>,
        wait: Duration,
    ) {
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return,
                Some(done) = done_rx.recv() => {
                    self.finish(st, done);
                    self.report(st, credential).await;
                }
            }
        }
    }

    /// Once registered: the peer credential to send (`Some(None)` with mTLS, where the client
    /// certificate identifies the node).
    async fn credential(&mut self) -> Option<Option<String>> {
        loop {
            if let Some(reg) = self.registered.borrow_and_update().as_ref() {
                return Some(reg.peer_credential.clone());
            }
            self.registered.changed().await.ok()?;
        }
    }

    fn load(&self) -> Persisted {
        match std::fs::read(&self.state_file) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %self.state_file.display(), error = %e, "assignments file does not parse; starting without it");
                Persisted::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persisted::default(),
            Err(e) => {
                tracing::warn!(file = %self.state_file.display(), error = %e, "cannot read the assignments file");
                Persisted::default()
            }
        }
    }

    fn save(&self, p: &Persisted) {
        let bytes = match serde_json::to_vec_pretty(p) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode the assignments file");
                return;
            }
        };
        if let Err(e) = tabbify_fsutil::atomic_write(&self.state_file, &bytes, 0o600) {
            tracing::error!(file = %self.state_file.display(), error = %e, "cannot write the assignments file");
        }
    }

    fn finish(&self, st: &mut LoopState, done: Done) {
        match done {
            Done::Deployed {
                app,
                version,
                app_id,
                artifact_digest,
            } => {
                tracing::info!(%app, version, %app_id, artifact = %artifact_digest, "assigned app deployed");
                st.busy.remove(&app);
                st.failures.remove(&app);
                st.persisted.owned.insert(
                    app,
                    Owned {
                        version,
                        app_id: Some(app_id),
                        artifact_digest: Some(artifact_digest),
                    },
                );
            }
            Done::DeployFailed {
                app,
                version,
                error,
            } => {
                let f = reconcile::record_failure(
                    st.failures.get(&app),
                    version,
                    error,
                    Timestamp::now(),
                );
                tracing::warn!(%app, version, attempts = f.attempts, error = %f.error, "assigned app did not deploy");
                st.busy.remove(&app);
                st.failures.insert(app, f);
            }
            Done::RemoveFailed { app } => {
                st.busy.remove(&app);
            }
            Done::Removed { app } => {
                tracing::info!(%app, "withdrawn app removed");
                st.busy.remove(&app);
                st.failures.remove(&app);
                st.persisted.owned.remove(&app);
            }
        }
        self.save(&st.persisted);
    }

    /// One reconcile: decide, start the tasks, then report.
    async fn step(&self, st: &mut LoopState, credential: Option<&str>) {
        let Some(set) = st.latest.clone() else {
            return;
        };
        let list = match self.apps.list().await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list apps; reconciling later");
                return;
            }
        };
        let local: BTreeMap<AppName, LocalApp> = list
            .iter()
            .map(|a| {
                (
                    a.name.clone(),
                    LocalApp {
                        app_id: a.app_id.clone(),
                        state: a.state,
                        artifact_digest: a.artifact_digest.clone(),
                    },
                )
            })
            .collect();
        let assigned: BTreeMap<AppName, Assigned> = set
            .assignments
            .iter()
            .map(|a| {
                (
                    a.app.clone(),
                    Assigned {
                        version: a.version,
                        artifact_digest: a.artifact_digest.clone(),
                    },
                )
            })
            .collect();
        let plan = reconcile::reconcile(Inputs {
            assigned: &assigned,
            owned: &st.persisted.owned,
            local: &local,
            busy: &st.busy,
            failures: &st.failures,
            now: Timestamp::now(),
        });
        for action in plan.actions {
            match action {
                Action::Restore {
                    app,
                    version,
                    found,
                } => {
                    let expected = st
                        .persisted
                        .owned
                        .get(&app)
                        .and_then(|o| o.artifact_digest.clone())
                        .or_else(|| set.get(&app).and_then(|a| a.artifact_digest.clone()));
                    tracing::warn!(
                        %app,
                        version,
                        %found,
                        expected = %expected.map_or("?".to_string(), |d| d.to_string()),
                        "an assigned app runs another artifact than assigned (replaced by hand?); deploying the assigned one again"
                    );
                    self.start_deploy(st, &set, app, version);
                }
                Action::Deploy { app, version } => self.start_deploy(st, &set, app, version),
                Action::Remove { app, app_id } => {
                    st.busy.insert(app.clone());
                    tokio::spawn(remove(self.apps.clone(), app, app_id, st.done_tx.clone()));
                }
            }
        }
        // The tasks just started have not changed the app table yet: the list read above is
        // what the report describes.
        self.send_report(st, credential, &list).await;
    }

    fn start_deploy(&self, st: &mut LoopState, set: &AssignmentSet, app: AppName, version: u64) {
        let Some(assignment) = set.get(&app).cloned() else {
            return;
        };
        st.busy.insert(app);
        tokio::spawn(deploy(
            self.apps.clone(),
            self.cache.clone(),
            assignment,
            version,
            st.done_tx.clone(),
        ));
    }

    /// Tells the coordinator the state of every assignment-driven app.
    async fn report(&self, st: &LoopState, credential: Option<&str>) {
        if let Ok(list) = self.apps.list().await {
            self.send_report(st, credential, &list).await;
        }
    }

    async fn send_report(&self, st: &LoopState, credential: Option<&str>, list: &[AppInfo]) {
        let assigned: BTreeMap<&AppName, &Assignment> = st
            .latest
            .iter()
            .flat_map(|s| s.assignments.iter().map(|a| (&a.app, a)))
            .collect();
        let mut apps = Vec::new();
        for (name, a) in &assigned {
            let owned = st.persisted.owned.get(*name);
            let here = list.iter().find(|i| &i.name == *name);
            let failure = st.failures.get(*name);
            let report = match (owned, here) {
                (Some(o), Some(info)) if o.app_id.as_ref() == Some(&info.app_id) => ReplicaReport {
                    app: (*name).clone(),
                    version: o.version,
                    state: info.state,
                    address: Some(info.address),
                    app_id: Some(info.app_id.clone()),
                    error: failure
                        .map(|f| f.error.clone())
                        .or_else(|| info.runtime_unavailable.clone()),
                },
                _ => ReplicaReport {
                    app: (*name).clone(),
                    version: a.version,
                    state: match failure {
                        Some(f) if f.attempts >= 3 => AppState::Crashloop,
                        Some(_) => AppState::Backoff,
                        None => AppState::Deploying,
                    },
                    address: None,
                    app_id: None,
                    error: failure.map(|f| f.error.clone()),
                },
            };
            apps.push(report);
        }
        let body = NodeAppsReport {
            applied_revision: st.latest.as_ref().map(|s| s.revision),
            apps,
        };
        if let Err(e) = self.client.report_apps_state(credential, &body).await {
            tracing::debug!(error = %e, "cannot report app state");
        }
    }
}

async fn deploy(
    apps: AppsHandle,
    cache: ArtifactCache,
    a: Assignment,
    version: u64,
    done: mpsc::UnboundedSender<Done>,
) {
    let result = async {
        let up = match (&a.artifact_digest, &a.appsrv_url) {
            (Some(digest), Some(appsrv)) => cache.prepare(&a.manifest, digest, appsrv).await?,
            (Some(digest), None) => {
                return Err(AppError::BadRequest(format!(
                    "the assignment names artifact {digest} but no appsrv to fetch it from"
                )));
            }
            (None, _) => upload::check(&a.manifest, None)?,
        };
        apps.deploy(up).await
    }
    .await;
    let msg = match result {
        Ok(d) => Done::Deployed {
            app: a.app,
            version,
            app_id: d.info.app_id,
            artifact_digest: d.info.artifact_digest,
        },
        Err(e) => Done::DeployFailed {
            app: a.app,
            version,
            error: e.to_string(),
        },
    };
    let _ = done.send(msg);
}

async fn remove(
    apps: AppsHandle,
    app: AppName,
    app_id: Option<AppId>,
    done: mpsc::UnboundedSender<Done>,
) {
    if let Some(id) = app_id {
        match apps.delete(id.clone()).await {
            Ok(()) | Err(AppError::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!(%app, %id, error = %e, "cannot remove a withdrawn app; trying again");
                tokio::time::sleep(TICK).await;
                let _ = done.send(Done::RemoveFailed { app });
                return;
            }
        }
    }
    let _ = done.send(Done::Removed { app });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_assignments_file_round_trips_and_tolerates_new_fields() {
        let mut p = Persisted {
            revision: Some(7),
            ..Default::default()
        };
        p.owned.insert(
            AppName::new("hello").unwrap(),
            Owned {
                version: 3,
                app_id: Some(AppId::new("hello-00000001").unwrap()),
                artifact_digest: Some(
                    ArtifactDigest::parse(format!("sha256:{}", "ab".repeat(32))).unwrap(),
                ),
            },
        );
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Persisted>(&text).unwrap(), p);
        let older: Persisted = serde_json::from_str(r#"{"owned":{},"later":1}"#).unwrap();
        assert_eq!(older, Persisted::default());
    }
}
