//! What the manager does when the supervisor starts: read every app record, adopt each runner
//! that still lives (same pid, same start time, its socket answers for the app), respawn through
//! the restart policy those that died, roll back deploys that were never confirmed, and clear
//! what no record owns (stray runners, old version directories, addresses on `lo`). One runner
//! per app, never two: a runner is only started once the recorded one is known to be gone.

use super::addressing::{AddressMode, stray_addrs};
use super::deploy::remove_version_dir;
use super::lo_addr;
use super::manager::{AppEntry, Ending, Manager, send_stop};
use super::record::{self, AppRecord, Desired, RecordError};
use super::runner_proc::{self, ExitSource, SeenExit};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tabbify_runner::Liveness;
use tabbify_wire::Timestamp;

/// How long a recorded runner that lives but does not answer gets (it may still be loading).
const UNRESPONSIVE_GRACE: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_secs(1);
const KILL_WAIT: Duration = Duration::from_secs(3);

impl Manager {
    pub async fn adopt_all(&mut self) {
        for (id, found) in record::scan(&self.layout) {
            match found {
                Ok(r) => self.adopt(r).await,
                Err(RecordError::Read { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    // A deploy that died before its first record write. The record is written
                    // before a runner starts, so none should run; make sure.
                    for v in self.layout.versions_on_disk(&id) {
                        runner_proc::kill_unrecorded(&self.layout.version_dir(&id, v)).await;
                    }
                    tracing::warn!(app = %id, "removing an app directory without a record");
                    let _ = std::fs::remove_dir_all(self.layout.app_dir(&id));
                }
                Err(e) => {
                    tracing::error!(app = %id, error = %e, "leaving an app with an unreadable record alone")
                }
            }
        }
        self.reconcile_addresses();
        self.sweep_containers();
        tracing::info!(apps = self.apps.len(), "app records loaded");
    }

    async fn adopt(&mut self, mut r: AppRecord) {
        let id = r.app_id.clone();
        if let Some(p) = r.pending.take() {
            tracing::warn!(app = %id, version = p.version, "rolling back a deploy that was never confirmed");
            if let Some(run) = p.runner {
                runner_proc::kill_and_wait(&run.identity, KILL_WAIT).await;
            }
            runner_proc::kill_unrecorded(&self.layout.version_dir(&id, p.version)).await;
            if r.current.as_ref().map(|c| c.version) != Some(p.version) {
                remove_version_dir(&self.layout, &id, p.version);
            }
            if r.current.is_none() {
                self.remove_app(&id, Some(p.listen), |_| {});
                return;
            }
        }
        let Some(cur) = r.current.clone() else {
            self.remove_app(&id, None, |_| {});
            return;
        };
        // Other versions: a redeploy's old runner may have been draining when we died.
        for v in self.layout.versions_on_disk(&id) {
            if v != cur.version {
                runner_proc::kill_unrecorded(&self.layout.version_dir(&id, v)).await;
                remove_version_dir(&self.layout, &id, v);
            }
        }
        if let IpAddr::V6(addr) = cur.listen.ip()
            && let Err(e) = lo_addr::add(addr)
        {
            tracing::error!(app = %id, %addr, error = %e, "cannot restore the app's address");
        }
        self.apps.insert(id.clone(), AppEntry::new(r));
        let Some(run) = cur.runner else {
            // Stopped, parked, exited, or waiting for a restart when the supervisor went down.
            if let Some(e) = self.apps.get_mut(&id)
                && e.record.desired == Desired::Running
                && e.record.restart.gave_up.is_none()
            {
                e.restart_at = Some(Timestamp::now());
            }
            self.save(&id);
            return;
        };
        let socket = self.layout.socket(&id, cur.version);
        let began = Instant::now();
        let mut liveness =
            tabbify_runner::check_runner(&run.identity, &id, &socket, PING_TIMEOUT).await;
        while matches!(liveness, Liveness::Unresponsive(_)) && began.elapsed() < UNRESPONSIVE_GRACE
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
            liveness =
                tabbify_runner::check_runner(&run.identity, &id, &socket, PING_TIMEOUT).await;
        }
        let offset = self.output_len(&id, cur.version);
        if liveness == Liveness::Alive {
            let mut instance = self.new_instance(
                &id,
                cur.version,
                run.identity,
                run.started_at,
                ExitSource::Adopted,
                offset,
            );
            tracing::info!(app = %id, pid = run.identity.pid, version = cur.version, "adopted a running runner");
            let (layout, grace) = (self.layout.clone(), self.cfg.stop_grace);
            if let Some(e) = self.apps.get_mut(&id) {
                if e.record.desired == Desired::Stopped {
                    send_stop(&layout, grace, &id, &mut instance, Ending::Stop);
                }
                e.current = Some(instance);
            }
            self.save(&id);
            return;
        }
        let reason = match liveness {
            Liveness::Gone | Liveness::PidReused => {
                "it ended while the supervisor was down".to_string()
            }
            Liveness::Unresponsive(why) => {
                format!("it did not answer after the supervisor restarted: {why}")
            }
            Liveness::Impostor(why) => format!("its socket answered for someone else: {why}"),
            Liveness::Alive => String::new(),
        };
        runner_proc::kill_and_wait(&run.identity, KILL_WAIT).await;
        tracing::warn!(app = %id, pid = run.identity.pid, %reason, "recorded runner is not serving");
        let Some(e) = self.apps.get_mut(&id) else {
            return;
        };
        if let Some(v) = e.record.current.as_mut() {
            v.runner = None;
        }
        if e.record.desired == Desired::Running {
            self.apply_failure(
                &id,
                SeenExit::default(),
                run.started_at,
                cur.version,
                offset,
                Some(reason),
            );
        } else {
            self.save(&id);
        }
    }

    /// Removes, in the background, this node's containers of apps it has no directory of
    /// (deleted while the daemon was away). Only when the daemon answers: a node without one has none.
    fn sweep_containers(&self) {
        if !self.cfg.status.snapshot().caps.docker {
            return;
        }
        // Every app with a directory, including any whose record could not be read.
        let known: BTreeSet<_> = record::scan(&self.layout)
            .into_iter()
            .map(|(id, _)| id)
            .chain(self.apps.keys().cloned())
            .collect();
        let apps_dir = self.layout.apps_dir().to_path_buf();
        tokio::spawn(async move {
            match super::containers::remove_orphans(&apps_dir, &known).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "removed containers of apps that are gone"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot sweep containers of apps that are gone")
                }
            }
        });
    }

    /// With the mesh: removes the /128s of the node's /64 on `lo` that no app owns.
    pub fn reconcile_addresses(&self) {
        if self.cfg.mode != AddressMode::Mesh {
            return;
        }
        let status = self.cfg.status.snapshot();
        let Some(subnet) = status.subnet else {
            return;
        };
        let owned: BTreeSet<_> = self
            .listen_addrs()
            .filter_map(|a| match a.ip() {
                IpAddr::V6(v6) => Some(v6),
                IpAddr::V4(_) => None,
            })
            .collect();
        match lo_addr::list() {
            Ok(on_lo) => {
                for addr in stray_addrs(&on_lo, subnet, status.ula, &owned) {
                    tracing::info!(%addr, "removing an app address no app owns");
                    if let Err(e) = lo_addr::remove(addr) {
                        tracing::warn!(%addr, error = %e, "cannot remove a stray app address");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list the addresses on lo"),
        }
    }
}
