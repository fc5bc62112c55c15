//! A health-gated self-update, step by step:
//!
//! 1. read the manifest and plan ([`plan_update`]): nothing to do, refuse, or swap;
//! 2. download and verify the candidate into `releases/<v>` — a sha256 mismatch stops here with
//!    nothing moved;
//! 3. run the candidate's check mode ([`check_candidate`]) — a failure quarantines it, still
//!    with nothing moved;
//! 4. note the swap in `update-pending.json`, point `current` at the candidate, restart the
//!    supervisor;
//! 5. wait for steady health within the window ([`HealthGate`]); if it does not come, point
//!    `current` back, restart again, confirm the old version is healthy, and quarantine the
//!    candidate.
//!
//! A run that is killed between 4 and 5 leaves `update-pending.json`; the next run finishes the
//! interrupted gate first (keep the candidate if it is healthy, roll back otherwise).

use crate::check::{CheckSettings, check_candidate};
use crate::download::{DownloadError, ReleaseServer};
use crate::fetch::{FetchError, install_kernel, install_release};
use crate::gate::{GatePolicy, GateVerdict, HealthGate, UpdatePlan, plan_update};
use crate::health::{probe, probe_client};
use crate::layout::{Layout, LayoutError};
use crate::restart::RestartCommand;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The binary every release must carry.
pub const SUPERVISOR_BINARY: &str = "tabbify-supervisor";
const PENDING_FILE: &str = "update-pending.json";

#[derive(Debug, Clone)]
pub struct UpdateSettings {
    /// A version from the manifest; `None` takes `latest`.
    pub requested: Option<String>,
    /// Retry a quarantined version.
    pub force: bool,
    pub check: CheckSettings,
    pub restart: RestartCommand,
    /// Where the supervisor's `/health` answers.
    pub health_url: String,
    pub gate: GatePolicy,
    /// Time between health probes.
    pub probe_every: Duration,
}

/// How an update ended, when it ended in a known state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateOutcome {
    UpToDate {
        version: String,
    },
    Updated {
        from: String,
        to: String,
    },
    /// The candidate failed its check; nothing was swapped.
    Rejected {
        version: String,
        reason: String,
        quarantined: PathBuf,
    },
    /// The candidate failed after the swap; the old version is back and healthy.
    RolledBack {
        from: String,
        to: String,
        reason: String,
        quarantined: PathBuf,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("update refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Download(#[from] DownloadError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(
        "{to} failed after the swap ({reason}) and the rollback to {from} is not healthy either \
         ({rollback}); {to} is quarantined, `current` points at {from}"
    )]
    RollbackFailed {
        from: String,
        to: String,
        reason: String,
        rollback: String,
    },
    #[error("cannot record the pending update in {path}: {source}")]
    Pending {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What `update-pending.json` holds while a swapped candidate is on probation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PendingSwap {
    from: String,
    to: String,
}

/// Runs one update against the release server.
pub async fn run_update(
    server: &ReleaseServer,
    layout: &Layout,
    settings: &UpdateSettings,
) -> Result<UpdateOutcome, UpdateError> {
    layout.ensure()?;
    let _lock = layout.lock()?;
    if let Some(pending) = read_pending(layout) {
        if layout.current_version()?.as_deref() == Some(pending.to.as_str()) {
            tracing::warn!(from = %pending.from, to = %pending.to,
                "an earlier update was interrupted after its swap; finishing its health gate");
            if let Some(outcome) = finish_swap(layout, settings, &pending, false).await? {
                return Ok(outcome);
            }
        } else {
            clear_pending(layout)?;
        }
    }

    let manifest = server.manifest().await?;
    let release = manifest.select(settings.requested.as_deref())?;
    release.require_files(&[SUPERVISOR_BINARY])?;
    let current = layout.current_version()?;
    let quarantined = layout.is_quarantined(&release.version);
    let (from, to) = match plan_update(
        current.as_deref(),
        &release.version,
        quarantined,
        settings.force,
    ) {
        UpdatePlan::UpToDate { version } => return Ok(UpdateOutcome::UpToDate { version }),
        UpdatePlan::Refuse { reason } => return Err(UpdateError::Refused(reason)),
        UpdatePlan::Swap { from, to } => (from, to),
    };
    if quarantined {
        tracing::warn!(version = %to, "--force: retrying a quarantined release");
        let q = layout.quarantine_dir(&to);
        std::fs::remove_dir_all(&q).map_err(|source| {
            UpdateError::Layout(LayoutError::Io {
                what: "removing",
                path: q.clone(),
                source,
            })
        })?;
    }

    install_release(server, layout, release).await?;
    if let Some(kernel) = &manifest.guest_kernel {
        install_kernel(server, layout, kernel).await?;
    }

    tracing::info!(version = %to, "checking the candidate");
    if let Err(failure) = check_candidate(&layout.release_dir(&to), &to, &settings.check).await {
        let reason = format!("failed its check: {failure}");
        tracing::error!(version = %to, %reason, "candidate rejected");
        let quarantined = layout.quarantine(&to, &reason)?;
        return Ok(UpdateOutcome::Rejected {
            version: to,
            reason,
            quarantined,
        });
    }

    let pending = PendingSwap {
        from: from.clone(),
        to: to.clone(),
    };
    write_pending(layout, &pending)?;
    layout.switch_current(&to)?;
    tracing::info!(%from, %to, "current switched; restarting");
    let outcome = finish_swap(layout, settings, &pending, true).await?;
    Ok(outcome.unwrap_or(UpdateOutcome::Updated { from, to }))
}

/// Restarts (when asked) and gates `pending.to`; rolls back to `pending.from` when it fails.
/// `None` means the candidate is kept.
async fn finish_swap(
    layout: &Layout,
    settings: &UpdateSettings,
    pending: &PendingSwap,
    restart_first: bool,
) -> Result<Option<UpdateOutcome>, UpdateError> {
    let PendingSwap { from, to } = pending;
    let verdict = if restart_first {
        match settings.restart.run().await {
            Ok(()) => gate(settings, to).await,
            Err(e) => Err(format!("the restart failed: {e}")),
        }
    } else {
        gate(settings, to).await
    };
    let reason = match verdict {
        Ok(()) => {
            clear_pending(layout)?;
            match layout.prune(&[to.as_str(), from.as_str()]) {
                Ok(removed) if !removed.is_empty() => {
                    tracing::info!(?removed, "removed older releases");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not remove older releases"),
            }
            tracing::info!(%from, %to, "update confirmed healthy");
            return Ok(None);
        }
        Err(reason) => format!("failed its health gate after the swap: {reason}"),
    };
    tracing::error!(version = %to, %reason, "rolling back to {from}");
    layout.switch_current(from)?;
    let rollback = match settings.restart.run().await {
        Ok(()) => gate(settings, from).await,
        Err(e) => Err(format!("the restart failed: {e}")),
    };
    let quarantined = layout.quarantine(to, &reason)?;
    clear_pending(layout)?;
    match rollback {
        Ok(()) => Ok(Some(UpdateOutcome::RolledBack {
            from: from.clone(),
            to: to.clone(),
            reason,
            quarantined,
        })),
        Err(rollback) => Err(UpdateError::RollbackFailed {
            from: from.clone(),
            to: to.clone(),
            reason,
            rollback,
        }),
    }
}

/// Probes until the gate decides.
async fn gate(settings: &UpdateSettings, version: &str) -> Result<(), String> {
    let http = probe_client();
    let mut gate = HealthGate::new(settings.gate);
    let started = Instant::now();
    loop {
        let result = probe(&http, &settings.health_url, version)
            .await
            .map(|_| ());
        match gate.observe(started.elapsed(), result) {
            GateVerdict::Healthy => return Ok(()),
            GateVerdict::Failed { reason } => return Err(reason),
            GateVerdict::Waiting => tokio::time::sleep(settings.probe_every).await,
        }
    }
}

fn pending_path(layout: &Layout) -> PathBuf {
    layout.root().join(PENDING_FILE)
}

fn read_pending(layout: &Layout) -> Option<PendingSwap> {
    let bytes = std::fs::read(pending_path(layout)).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(error = %e, "ignoring an unreadable update-pending.json");
            None
        }
    }
}

fn write_pending(layout: &Layout, pending: &PendingSwap) -> Result<(), UpdateError> {
    let path = pending_path(layout);
    let json = serde_json::to_vec_pretty(pending).map_err(|e| UpdateError::Pending {
        path: path.clone(),
        source: e.into(),
    })?;
    tabbify_fsutil::atomic_write(&path, &json, 0o644)
        .map_err(|source| UpdateError::Pending { path, source })
}

fn clear_pending(layout: &Layout) -> Result<(), UpdateError> {
    let path = pending_path(layout);
    match std::fs::remove_file(&path) {
        Ok(()) => crate::layout::sync_dir(layout.root()).map_err(UpdateError::from),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(UpdateError::Pending { path, source }),
    }
}

impl From<crate::manifest::ManifestError> for UpdateError {
    fn from(e: crate::manifest::ManifestError) -> Self {
        UpdateError::Download(DownloadError::Manifest(e))
    }
}
