//! The async face of the store: one thread owns [`Store`] and runs the jobs handlers send it over
//! a channel, one after another; new roster events are broadcast to watchers.
//!
//! A single owner serialises every change (revisions need that anyway), keeps SQLite off the
//! async workers, and lets a burst of requests queue as messages instead of blocked threads.
//! Events are broadcast by the owner right after the job that made them, so the broadcast order is
//! the revision order and a watcher that subscribes before reading the log never misses one.
//!
//! The owner also keeps apps placed: a job that changed the roster (it produced an event) is
//! followed by a placement run before the next job starts, and the apps revision after every job
//! is published on a `watch` channel that the assignment streams follow.

use crate::guards::Guards;
use crate::liveness::LivenessPolicy;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use crate::stream_limit::StreamLimiter;
use crate::tokens::{self, SecretHash};
use crate::watch::LiveEvent;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tabbify_wire::mesh::{PeerId, RosterEvent};
use tabbify_wire::{Ipv6Prefix, Timestamp};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// How many events a slow watcher may fall behind before it re-reads the log.
const BROADCAST_CAPACITY: usize = 4096;
/// Jobs waiting for the store before senders wait too.
const JOB_QUEUE: usize = 4096;
/// Batches of peers whose credentials changed that a stream may fall behind on before it
/// re-checks its identity anyway.
const AUTH_CHANGES_CAPACITY: usize = 1024;

/// The peers that left the roster or lost their certificates in one store job.
pub type AuthChanges = Arc<[PeerId]>;

type Job = Box<dyn FnOnce(&mut Store, &broadcast::Sender<LiveEvent>) + Send>;

/// Fixed facts the handlers need.
#[derive(Debug, Clone)]
pub struct Settings {
    pub open_join: bool,
    pub liveness: LivenessPolicy,
    pub mesh: Ipv6Prefix,
    pub event_log_capacity: u64,
    /// When this process started serving; liveness does not count time before it.
    pub serving_since: Timestamp,
    /// How long a replica stays on an offline node before it is placed elsewhere.
    pub node_lost_grace: Duration,
    /// Where nodes fetch artifacts when a request names no appsrv (`--appsrv`).
    pub default_appsrv: Option<String>,
    /// The mesh CA and node certificate lifetime; `None` with `--insecure-no-mtls`.
    pub mtls: Option<MeshTls>,
    /// Stream caps and the loopback-replica allowance (`guards`).
    pub guards: Guards,
}

/// What mTLS needs at request time.
#[derive(Debug, Clone)]
pub struct MeshTls {
    pub ca: std::sync::Arc<tabbify_pki::MeshCa>,
    pub node_cert_ttl: Duration,
    /// Join tokens carry this after their secret, so nodes trust the coordinator by it. `None`
    /// when the coordinator serves an operator's certificate (nodes use the system roots).
    pub token_pin: Option<tabbify_pki::CaFingerprint>,
}

impl Settings {
    /// The interval as the wire carries it (whole seconds, at least 1).
    pub fn heartbeat_interval_secs(&self) -> u64 {
        let d = self.liveness.heartbeat_interval;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the store task stopped unexpectedly: {0}")]
    Task(String),
}

pub struct Service {
    jobs: mpsc::Sender<Job>,
    events: broadcast::Sender<LiveEvent>,
    apps_revision: watch::Receiver<u64>,
    auth_changes: broadcast::Sender<AuthChanges>,
    admin_hash: SecretHash,
    /// Signs operator tokens; its public half is pinned by every node at join.
    signing_key: tabbify_auth::SigningKey,
    pub settings: Settings,
    pub metrics: Metrics,
    /// Cancelled when the server shuts down; ends watch streams.
    pub shutdown: CancellationToken,
    /// Open watch streams, capped per caller and in total.
    pub streams: Arc<StreamLimiter>,
}

impl Service {
    /// Starts the thread that owns `store`; it ends when the service is dropped.
    pub fn new(store: Store, admin_token: &str, settings: Settings) -> Result<Self, ServiceError> {
        Self::with_broadcast_capacity(store, admin_token, settings, BROADCAST_CAPACITY)
    }

    /// Like [`Service::new`] with a chosen broadcast depth (tests use a tiny one to force lag).
    pub fn with_broadcast_capacity(
        store: Store,
        admin_token: &str,
        settings: Settings,
        capacity: usize,
    ) -> Result<Self, ServiceError> {
        let (events, _) = broadcast::channel(capacity.max(1));
        let (jobs, queue) = mpsc::channel(JOB_QUEUE);
        let (apps_tx, apps_revision) = watch::channel(store.apps_revision());
        let (auth_changes, _) = broadcast::channel(AUTH_CHANGES_CAPACITY);
        let broadcaster = events.clone();
        let auth_tx = auth_changes.clone();
        std::thread::Builder::new()
            .name("tabbify-store".into())
            .spawn(move || own_store(store, queue, broadcaster, apps_tx, auth_tx))
            .map_err(|e| ServiceError::Task(format!("cannot start the store thread: {e}")))?;
        let streams = StreamLimiter::new(
            settings.guards.watch_streams_per_identity,
            settings.guards.watch_streams_total,
        );
        Ok(Self {
            streams,
            jobs,
            events,
            apps_revision,
            auth_changes,
            admin_hash: tokens::hash_secret(admin_token),
            // A key of its own until the server hands it the one kept in the data dir.
            signing_key: tabbify_auth::SigningKey::generate(),
            settings,
            metrics: Metrics::new(),
            shutdown: CancellationToken::new(),
        })
    }

    /// Uses `key` to sign operator tokens (the server loads it from `<data-dir>/signing-key`).
    pub fn with_signing_key(mut self, key: tabbify_auth::SigningKey) -> Self {
        self.signing_key = key;
        self
    }

    /// The key that signs operator tokens.
    pub fn signing_key(&self) -> &tabbify_auth::SigningKey {
        &self.signing_key
    }

    /// True when `presented` is the admin token (constant-time).
    pub fn is_admin(&self, presented: &str) -> bool {
        tokens::hashes_equal(&tokens::hash_secret(presented), &self.admin_hash)
    }

    /// A receiver of every event committed after this call, each encoded once for all.
    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.events.subscribe()
    }

    /// Follows the apps revision: it changes after every job that changed an app or a node's
    /// assignment set.
    pub fn watch_apps(&self) -> watch::Receiver<u64> {
        self.apps_revision.clone()
    }

    /// Receives, after every store job that had some, the peers that left the roster or lost
    /// their certificates, so a stream serving one of them can re-check it (and only such a
    /// stream: the others have nothing to do).
    pub fn subscribe_auth(&self) -> broadcast::Receiver<AuthChanges> {
        self.auth_changes.subscribe()
    }

    /// True when nodes authenticate with certificates (the default).
    pub fn mtls(&self) -> bool {
        self.settings.mtls.is_some()
    }

    /// Runs `f` on the store thread.
    pub async fn read<T, F>(&self, f: F) -> Result<T, ServiceError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> T + Send + 'static,
    {
        self.write(move |store, _| f(store)).await
    }

    /// Runs `f` on the store thread; events `f` pushes into its second argument are broadcast
    /// before the next job starts.
    pub async fn write<T, F>(&self, f: F) -> Result<T, ServiceError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store, &mut Vec<RosterEvent>) -> T + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let grace = self.settings.node_lost_grace;
        let job: Job = Box::new(move |store, broadcaster| {
            let mut new_events = Vec::new();
            let out = f(store, &mut new_events);
            if !new_events.is_empty() {
                // The roster changed: replicas may have to move, pending ones may fit now.
                let changed: Vec<&str> =
                    new_events.iter().map(|e| e.peer.peer_id.as_str()).collect();
                if store.placement_affected_by(&changed)
                    && let Err(e) = store.place_apps(Timestamp::now(), grace)
                {
                    tracing::error!(error = %e, "placement after a roster change failed");
                }
            }
            for ev in &new_events {
                // Encoded once here; every watcher sends these same bytes. No receiver is fine:
                // nobody is watching.
                let _ = broadcaster.send(LiveEvent::encode(ev));
            }
            // The caller may have gone away (client disconnected); the change stands.
            let _ = reply.send(out);
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| ServiceError::Task("the store thread has stopped".into()))?;
        answer
            .await
            .map_err(|_| ServiceError::Task("the store job panicked; see the log".into()))
    }

    /// Writes the batched heartbeat refreshes, applies liveness and prunes the event log;
    /// called by the background task.
    pub async fn liveness_tick(&self) -> Result<usize, ServiceError> {
        let policy = self.settings.liveness;
        let since = self.settings.serving_since;
        let keep = self.settings.event_log_capacity;
        self.write(move |store, sink| -> Result<usize, StoreError> {
            store.flush_heartbeats()?;
            let events = store.apply_liveness(&policy, since, Timestamp::now())?;
            for ev in &events {
                tracing::info!(
                    peer_id = %ev.peer.peer_id,
                    name = %ev.peer.display_name,
                    kind = ev.kind.as_str(),
                    revision = ev.revision,
                    "liveness change"
                );
            }
            let n = events.len();
            sink.extend(events);
            store.prune_events(keep)?;
            Ok(n)
        })
        .await?
        .map_err(ServiceError::from)
    }

    /// Runs placement when it may be due (the once-a-second pass that catches lapsed grace
    /// periods and new free resources from heartbeats; see [`Store::place_apps_if_due`]).
    pub async fn placement_tick(&self) -> Result<(), ServiceError> {
        let grace = self.settings.node_lost_grace;
        self.write(move |store, _| store.place_apps_if_due(Timestamp::now(), grace))
            .await?
            .map_err(ServiceError::from)
    }

    /// How often the background task runs: every second, or faster for short test intervals.
    pub fn liveness_period(&self) -> Duration {
        (self.settings.liveness.heartbeat_interval / 2)
            .clamp(Duration::from_millis(5), Duration::from_secs(1))
    }
}

/// The store thread: runs jobs in arrival order until every sender is gone. A panicking job is
/// logged and dropped (its caller gets an error); the store updates memory only after a commit,
/// so the state it leaves is still consistent with the file.
fn own_store(
    mut store: Store,
    mut queue: mpsc::Receiver<Job>,
    broadcaster: broadcast::Sender<LiveEvent>,
    apps_revision: watch::Sender<u64>,
    auth_changes: broadcast::Sender<AuthChanges>,
) {
    while let Some(job) = queue.blocking_recv() {
        let ran = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut store, &broadcaster)));
        if ran.is_err() {
            tracing::error!("a store job panicked; continuing with the next one");
        }
        let value = store.apps_revision();
        apps_revision.send_if_modified(|seen| {
            let changed = *seen != value;
            *seen = value;
            changed
        });
        let changed = store.take_auth_changes();
        if !changed.is_empty() {
            // No receiver is fine: no stream is open.
            let _ = auth_changes.send(Arc::from(changed));
        }
    }
    tracing::debug!("store thread finished");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(interval: Duration) -> Settings {
        Settings {
            open_join: false,
            liveness: LivenessPolicy {
                heartbeat_interval: interval,
                offline_after_missed: 3,
                retention: Duration::from_secs(3600),
            },
            mesh: "fd00:1:2::/48".parse().unwrap(),
            event_log_capacity: 10,
            serving_since: Timestamp(0),
            node_lost_grace: Duration::from_secs(30),
            default_appsrv: None,
            mtls: None,
            guards: crate::guards::Guards::default(),
        }
    }

    #[test]
    fn interval_on_the_wire_rounds_up_to_whole_seconds() {
        assert_eq!(
            settings(Duration::from_secs(5)).heartbeat_interval_secs(),
            5
        );
        assert_eq!(
            settings(Duration::from_millis(200)).heartbeat_interval_secs(),
            1
        );
        assert_eq!(
            settings(Duration::from_millis(5500)).heartbeat_interval_secs(),
            6
        );
    }
}
