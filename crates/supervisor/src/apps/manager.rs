//! The app manager: the one owner of the app table. API handlers send it [`Command`]s and await
//! the reply; the watchers of runner processes and the deploy preparations send it [`Event`]s.
//! It decides (restart policy, addresses, state) with the pure modules and does only small,
//! quick effects itself (record writes, spawning a runner); anything slow (writing an artifact,
//! waiting for a runner) happens in other tasks that report back here.
//!
//! The lifecycle commands are in `lifecycle`, deploys in `deploy`, start-up adoption in `adopt`.

use super::AppsConfig;
use super::error::AppError;
use super::layout::Layout;
use super::record::{AppRecord, RunnerRecord, VersionRecord};
use super::runner_proc::{self, ExitSource, RunnerEvent, WatchSettings};
use super::upload::Upload;
use super::view;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tabbify_wire::Timestamp;
use tabbify_wire::app::AppId;
use tabbify_wire::node_apps::AppInfo;
use tabbify_wire::runner::RunnerIdentity;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub type Reply<T> = oneshot::Sender<Result<T, AppError>>;

/// The answer to a deploy: the app, and whether the deploy created it (or replaced a version).
#[derive(Debug)]
pub struct Deployed {
    pub info: AppInfo,
    pub created: bool,
}

/// What the API asks of the manager.
pub enum Command {
    Deploy {
        upload: Box<Upload>,
        reply: Reply<Deployed>,
    },
    List {
        reply: oneshot::Sender<Vec<AppInfo>>,
    },
    Get {
        id: AppId,
        reply: Reply<AppInfo>,
    },
    Stop {
        id: AppId,
        reply: Reply<AppInfo>,
    },
    Start {
        id: AppId,
        reply: Reply<AppInfo>,
    },
    Restart {
        id: AppId,
        reply: Reply<AppInfo>,
    },
    Reset {
        id: AppId,
        reply: Reply<AppInfo>,
    },
    Delete {
        id: AppId,
        reply: Reply<()>,
    },
    /// Where the app's log is.
    LogFile {
        id: AppId,
        reply: Reply<PathBuf>,
    },
}

/// What other tasks report to the manager.
pub enum Event {
    /// A deploy's files are written and its runner started (or not).
    Launched {
        id: AppId,
        version: u32,
        result: Result<runner_proc::Spawned, AppError>,
    },
    /// A runner's watcher saw something.
    Runner {
        id: AppId,
        pid: u32,
        event: RunnerEvent,
    },
}

/// Why the supervisor is ending a runner (an exit without one is a failure for the policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Stop,
    /// Stop, then start again.
    Restart,
    /// Replaced by a newer version.
    Retire,
    Delete,
    /// Killed because it did not serve; counts as a failure.
    Kill(String),
}

/// A runner process of one version of an app.
pub struct Instance {
    pub version: u32,
    pub identity: RunnerIdentity,
    pub started_at: Timestamp,
    pub serving: bool,
    pub ending: Option<Ending>,
    /// When a runner asked to stop gets SIGKILL if it is still there.
    pub kill_at: Option<Timestamp>,
    /// Where this runner's output starts in `runner.out`.
    pub output_offset: u64,
    watcher: JoinHandle<()>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

impl Instance {
    pub fn record(&self) -> RunnerRecord {
        RunnerRecord {
            identity: self.identity,
            started_at: self.started_at,
        }
    }
}

/// A deploy in progress.
pub struct Pending {
    pub version: u32,
    /// The deploy created the app (nothing served under this name before).
    pub created: bool,
    /// `None` while the files are written and the runner starts.
    pub instance: Option<Instance>,
    pub reply: Option<Reply<Deployed>>,
}

/// An API call waiting for an outcome.
pub enum Waiter {
    /// For the runner to serve (start, restart, reset).
    Up(Reply<AppInfo>),
    /// For the runner to be gone (stop).
    Down(Reply<AppInfo>),
}

/// One app in the table.
pub struct AppEntry {
    pub record: AppRecord,
    pub current: Option<Instance>,
    pub pending: Option<Pending>,
    /// Older versions draining after a redeploy.
    pub retiring: Vec<Instance>,
    pub restart_at: Option<Timestamp>,
    pub waiters: Vec<Waiter>,
    /// Delete requested: these wait for every runner to be gone.
    pub deleting: Option<Vec<Reply<()>>>,
}

impl AppEntry {
    pub fn new(record: AppRecord) -> Self {
        Self {
            record,
            current: None,
            pending: None,
            retiring: Vec::new(),
            restart_at: None,
            waiters: Vec::new(),
            deleting: None,
        }
    }

    pub fn current_version(&self) -> Option<&VersionRecord> {
        self.record.current.as_ref()
    }
}

pub struct Manager {
    pub cfg: AppsConfig,
    pub layout: Layout,
    pub apps: BTreeMap<AppId, AppEntry>,
    pub events: mpsc::UnboundedSender<Event>,
}

impl Manager {
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::UnboundedReceiver<Event>,
    ) {
        let mut status = self.cfg.status.subscribe();
        let mut subnet = None;
        let mut docker = self.cfg.status.snapshot().caps.docker;
        loop {
            let (seen, docker_now) = {
                let s = status.borrow_and_update();
                (s.subnet, s.caps.docker)
            };
            if seen != subnet {
                subnet = seen;
                self.reconcile_addresses();
            }
            if docker_now && !docker {
                self.docker_returned(Timestamp::now());
            }
            docker = docker_now;
            let wake = self.next_wake();
            let sleep = async move {
                match wake {
                    Some(at) => tokio::time::sleep(until(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                command = commands.recv() => match command {
                    Some(c) => self.on_command(c),
                    None => return,
                },
                Some(event) = events.recv() => self.on_event(event),
                _ = status.changed() => {}
                _ = sleep => {}
            }
            self.on_tick(Timestamp::now());
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Deploy { upload, reply } => self.deploy(*upload, reply),
            Command::List { reply } => {
                let caps = self.cfg.status.snapshot().caps;
                let list = self.apps.values().filter_map(|e| view::info(e, &caps));
                let _ = reply.send(list.collect());
            }
            Command::Get { id, reply } => {
                let _ = reply.send(self.info(&id));
            }
            Command::Stop { id, reply } => self.stop(&id, reply),
            Command::Start { id, reply } => self.start(&id, reply),
            Command::Restart { id, reply } => self.restart(&id, reply),
            Command::Reset { id, reply } => self.reset(&id, reply),
            Command::Delete { id, reply } => self.delete(&id, reply),
            Command::LogFile { id, reply } => {
                let _ = reply.send(self.entry(&id).map(|_| self.layout.log_file(&id)));
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Launched {
                id,
                version,
                result,
            } => self.on_launched(&id, version, result),
            Event::Runner { id, pid, event } => match event {
                RunnerEvent::Serving => self.on_serving(&id, pid),
                RunnerEvent::Unresponsive(why) => self.on_unresponsive(&id, pid, why),
                RunnerEvent::Exited(seen) => self.on_exited(&id, pid, seen),
            },
        }
    }

    pub fn entry(&self, id: &AppId) -> Result<&AppEntry, AppError> {
        self.apps
            .get(id)
            .ok_or_else(|| AppError::unknown_app(id.as_str()))
    }

    /// The app as the API shows it.
    pub fn info(&self, id: &AppId) -> Result<AppInfo, AppError> {
        let caps = self.cfg.status.snapshot().caps;
        view::info(self.entry(id)?, &caps).ok_or_else(|| AppError::unknown_app(id.as_str()))
    }

    /// Writes the record of `id`; a failure is logged (the state in memory stays authoritative
    /// and the next change writes again).
    pub fn save(&self, id: &AppId) {
        if let Some(e) = self.apps.get(id)
            && let Err(err) = e.record.save(&self.layout)
        {
            tracing::error!(app = %id, error = %err, "cannot write the app record");
        }
    }

    /// Starts watching a runner; its events come back as [`Event::Runner`].
    pub fn new_instance(
        &self,
        id: &AppId,
        version: u32,
        identity: RunnerIdentity,
        started_at: Timestamp,
        exit: ExitSource,
        output_offset: u64,
    ) -> Instance {
        let events = self.events.clone();
        let app = id.clone();
        let pid = identity.pid;
        let settings = WatchSettings {
            health_every: self.cfg.health_interval,
            start_timeout: self.cfg.start_timeout,
        };
        let watcher = tokio::spawn(runner_proc::watch(
            identity,
            self.layout.socket(id, version),
            exit,
            settings,
            move |event| {
                let _ = events.send(Event::Runner {
                    id: app.clone(),
                    pid,
                    event,
                });
            },
        ));
        Instance {
            version,
            identity,
            started_at,
            serving: false,
            ending: None,
            kill_at: None,
            output_offset,
            watcher,
        }
    }

    /// The earliest moment something is due: a restart, a kill of a runner that did not stop,
    /// the end of a healthy period.
    fn next_wake(&self) -> Option<Timestamp> {
        let mut wake: Option<Timestamp> = None;
        let mut consider = |t: Option<Timestamp>| {
            if let Some(t) = t {
                wake = Some(wake.map_or(t, |w| w.min(t)));
            }
        };
        for e in self.apps.values() {
            consider(e.restart_at);
            for i in e.instances() {
                consider(i.kill_at);
            }
            if let (Some(cur), Some(v)) = (&e.current, e.current_version())
                && cur.serving
                && e.record.restart.consecutive_failures > 0
            {
                let healthy = Duration::from_millis(v.manifest.restart.reset_after_ms);
                consider(Some(after(cur.started_at, healthy)));
            }
        }
        wake
    }

    fn on_tick(&mut self, now: Timestamp) {
        let ids: Vec<AppId> = self.apps.keys().cloned().collect();
        for id in ids {
            let Some(e) = self.apps.get_mut(&id) else {
                continue;
            };
            for i in e.instances_mut() {
                if i.kill_at.is_some_and(|t| t <= now) {
                    i.kill_at = None;
                    tracing::warn!(app = %id, pid = i.identity.pid, "runner still there after the stop grace period; killing it");
                    runner_proc::kill(&i.identity);
                }
            }
            if let (Some(cur), Some(v)) = (&e.current, &e.record.current)
                && cur.serving
            {
                let settled = e
                    .record
                    .restart
                    .settle(&v.manifest.restart, cur.started_at, now);
                if settled != e.record.restart {
                    e.record.restart = settled;
                    tracing::info!(app = %id, "healthy again; the restart backoff starts over");
                    self.save(&id);
                }
            }
            let Some(e) = self.apps.get_mut(&id) else {
                continue;
            };
            if e.restart_at.is_some_and(|t| t <= now) {
                e.restart_at = None;
                if e.current.is_none() && e.deleting.is_none() {
                    self.launch_current(&id);
                }
            }
        }
    }
}

impl AppEntry {
    /// Every live runner of the app.
    pub fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.current
            .iter()
            .chain(self.pending.iter().filter_map(|p| p.instance.as_ref()))
            .chain(self.retiring.iter())
    }

    pub fn instances_mut(&mut self) -> impl Iterator<Item = &mut Instance> {
        self.current
            .iter_mut()
            .chain(self.pending.iter_mut().filter_map(|p| p.instance.as_mut()))
            .chain(self.retiring.iter_mut())
    }
}

/// Asks a runner to stop (drain for the grace period, then exit); SIGKILL follows if it is still
/// there a little after the grace period. A free function so callers can hold the entry mutably.
pub fn send_stop(
    layout: &Layout,
    grace: Duration,
    id: &AppId,
    instance: &mut Instance,
    ending: Ending,
) {
    instance.ending = Some(ending);
    instance.kill_at = Some(after(Timestamp::now(), grace + Duration::from_secs(2)));
    let identity = instance.identity;
    let client = tabbify_runner::RunnerClient::new(layout.socket(id, instance.version));
    tokio::spawn(async move {
        if let Err(e) = client.stop(grace).await {
            tracing::warn!(pid = identity.pid, error = %e, "runner did not take the stop; killing it");
            runner_proc::kill(&identity);
        }
    });
}

/// `t + d`.
pub fn after(t: Timestamp, d: Duration) -> Timestamp {
    Timestamp(
        t.unix_ms()
            .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    )
}

/// How long until `t`.
fn until(t: Timestamp) -> Duration {
    Duration::from_millis(t.unix_ms().saturating_sub(Timestamp::now().unix_ms()))
}
