//! Apps on this node: the `/v1/apps` API, and the app manager behind it that runs one
//! `tabbify-runner` process per app, keeps a record of each in the data directory, restarts
//! runners by the app's restart policy, re-adopts them after a supervisor restart, and gives each
//! app its address (loopback without the mesh, its own /128 of the node's /64 with it).
//!
//! Map: [`api`] and [`upload`] (HTTP) → [`handle`] (channel) → `manager` (the one owner of the
//! app table; `deploy`, `lifecycle`, `adopt` are its parts) → [`runner_proc`] (processes) and
//! [`record`] (files). Decisions are pure: [`policy`] (restarts), [`addressing`] (addresses),
//! [`view`] (states). The API is documented in `docs/apps-api.md`.

pub mod addressing;
mod adopt;
pub mod api;
pub mod containers;
mod deploy;
pub mod error;
pub mod handle;
pub mod layout;
mod lifecycle;
pub mod lo_addr;
mod logs;
mod manager;
pub mod offer;
pub mod policy;
pub mod record;
pub mod runner_proc;
pub mod upload;
pub mod view;

pub use addressing::AddressMode;
pub use error::AppError;
pub use handle::AppsHandle;

use crate::status::StatusHandle;
use layout::Layout;
use manager::Manager;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// How the app manager runs.
#[derive(Debug, Clone)]
pub struct AppsConfig {
    pub data_dir: PathBuf,
    /// The `tabbify-runner` binary.
    pub runner_bin: PathBuf,
    pub mode: AddressMode,
    /// The node status: the /64 and ULA apps take their addresses from (with the mesh).
    pub status: StatusHandle,
    /// A runner not serving this long after it started is killed (and a deploy fails).
    pub start_timeout: Duration,
    /// Requests to an app running longer than this get 504.
    pub request_deadline: Duration,
    /// How long a stopping runner may drain before SIGKILL.
    pub stop_grace: Duration,
    /// Between health checks of a serving runner.
    pub health_interval: Duration,
    /// The largest deploy request bodies.
    pub max_upload: upload::UploadLimits,
    /// The guest kernel handed to microVM runners (`--vm-kernel`).
    pub vm_kernel: PathBuf,
}

/// The runner binary: `explicit`, else `tabbify-runner` beside our own executable, else the
/// one on `PATH`.
pub fn runner_bin(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("tabbify-runner")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("tabbify-runner"))
}

/// Loads the app records, adopts or respawns their runners, then runs the manager task.
pub async fn start(cfg: AppsConfig) -> AppsHandle {
    let (commands_tx, commands) = mpsc::channel(64);
    let (events_tx, events) = mpsc::unbounded_channel();
    let max_upload = cfg.max_upload;
    let mut manager = Manager {
        layout: Layout::new(&cfg.data_dir),
        cfg,
        apps: BTreeMap::new(),
        events: events_tx,
    };
    tracing::info!(runner = %manager.cfg.runner_bin.display(), mode = ?manager.cfg.mode, "app manager starting");
    enable_listener_handoff();
    manager.adopt_all().await;
    tokio::spawn(manager.run(commands, events));
    AppsHandle::new(commands_tx, max_upload)
}

/// The kernel setting that makes a redeploy lossless: when the old version's runner closes its
/// listening socket, connections still waiting in its accept queue move to the new version's
/// socket of the same SO_REUSEPORT group instead of being reset. Per network namespace; Linux
/// 5.14 and later.
const TCP_MIGRATE_REQ: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

fn enable_listener_handoff() {
    match std::fs::read_to_string(TCP_MIGRATE_REQ) {
        Ok(v) if v.trim() == "1" => {}
        Ok(_) => match std::fs::write(TCP_MIGRATE_REQ, "1") {
            Ok(()) => tracing::info!(
                "enabled net.ipv4.tcp_migrate_req: redeploys hand queued connections to the new version"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot enable net.ipv4.tcp_migrate_req; a redeploy may reset connections queued at the old version")
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "net.ipv4.tcp_migrate_req is not available (Linux < 5.14); a redeploy may reset connections queued at the old version")
        }
    }
}
