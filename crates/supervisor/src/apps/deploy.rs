//! Deploying: a new app, or a new version of an app with the same name. The new version gets its
//! own directory and runner, started beside the old one on the same address (the runner binds
//! with SO_REUSEPORT); only once it serves does it become current and the old runner is asked to
//! drain and stop. A version that does not load is rolled back and the old one never stops
//! serving. The slow part (writing the artifact, starting the runner) runs off the manager task.

use super::addressing::{self, AddressMode};
use super::error::AppError;
use super::layout::Layout;
use super::lo_addr;
use super::manager::{
    AppEntry, Deployed, Ending, Event, Manager, Pending, Reply, Waiter, send_stop,
};
use super::offer;
use super::policy::RestartTracker;
use super::record::{AppRecord, Desired, RunnerRecord, VersionRecord};
use super::runner_proc::{self, ExitSource, SeenExit, Spawned};
use super::upload::Upload;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use tabbify_runner::AppDir;
use tabbify_wire::Timestamp;
use tabbify_wire::app::{AppId, AppName, Manifest};
use tabbify_wire::runner::RunnerSpec;

/// Everything the preparation task needs; it runs on a blocking thread.
struct Prepare {
    layout: Layout,
    runner_bin: PathBuf,
    id: AppId,
    version: u32,
    upload: Upload,
    listen: SocketAddr,
    request_deadline: Duration,
    vm_kernel: PathBuf,
}

impl Prepare {
    fn run(self) -> Result<Spawned, AppError> {
        let internal = |what: &str, e: &dyn std::fmt::Display| {
            AppError::Internal(format!("deploying {}: {what}: {e}", self.id))
        };
        let dir = self.layout.version_dir(&self.id, self.version);
        tabbify_fsutil::ensure_dir(&dir, 0o700)
            .map_err(|e| internal("creating the version directory", &e))?;
        tabbify_fsutil::ensure_dir(self.layout.cache_dir(), 0o700)
            .map_err(|e| internal("creating the compile cache", &e))?;
        let kind = self.upload.manifest.runtime.kind();
        let artifact = self.layout.artifact_for(&self.id, self.version, kind);
        // A docker app may come without an artifact: its image is on the node.
        if !self.upload.artifact.is_empty() {
            tabbify_fsutil::atomic_write(&artifact, &self.upload.artifact, 0o600)
                .map_err(|e| internal("writing the artifact", &e))?;
        }
        let spec = RunnerSpec {
            app_id: self.id.clone(),
            manifest: self.upload.manifest.clone(),
            artifact,
            listen: self.listen,
            log_file: self.layout.log_file(&self.id),
            log_max_bytes: 10 * 1024 * 1024,
            log_keep: 2,
            socket: self.layout.socket(&self.id, self.version),
            cache_dir: self.layout.cache_dir().to_path_buf(),
            request_deadline_ms: u64::try_from(self.request_deadline.as_millis())
                .unwrap_or(u64::MAX),
            max_concurrent_requests: 64,
            vm_kernel: Some(self.vm_kernel.clone()),
        };
        AppDir::new(&dir)
            .write_spec(&spec)
            .map_err(|e| internal("writing the runner spec", &e))?;
        if let IpAddr::V6(addr) = self.listen.ip() {
            lo_addr::add(addr).map_err(|e| {
                AppError::Internal(format!("cannot give the app its address {addr}: {e}"))
            })?;
        }
        runner_proc::spawn(&self.runner_bin, &dir)
            .map_err(|e| AppError::Internal(format!("cannot start the runner: {e}")))
    }
}

fn new_app_id(name: &AppName) -> AppId {
    let suffix: u32 = rand::random();
    // An app name is a subset of the id syntax and at most 63 characters: always valid.
    #[allow(clippy::expect_used)]
    AppId::new(format!("{name}-{suffix:08x}"))
        .expect("an app name plus hex digits is a valid app id")
}

impl Manager {
    pub fn deploy(&mut self, upload: Upload, reply: Reply<Deployed>) {
        let caps = self.cfg.status.snapshot().caps;
        if let Err(e) = offer::check(upload.manifest.runtime.kind(), &caps) {
            let _ = reply.send(Err(e));
            return;
        }
        let name = upload.manifest.app.name.clone();
        let existing = self
            .apps
            .iter()
            .find(|(_, e)| e.record.name == name)
            .map(|(id, _)| id.clone());
        if let Some(id) = &existing
            && let Some(e) = self.apps.get(id)
        {
            let busy = if e.deleting.is_some() {
                Some(format!("app {name} ({id}) is being deleted"))
            } else {
                e.pending.as_ref().map(|p| {
                    format!(
                        "a deploy of {name} (version {}) is in progress; wait for its answer",
                        p.version
                    )
                })
            };
            if let Some(msg) = busy {
                let _ = reply.send(Err(AppError::Conflict(msg)));
                return;
            }
        }
        let listen = match self.plan_listen(existing.as_ref(), &upload.manifest) {
            Ok(l) => l,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let created = existing.is_none();
        let id = existing.unwrap_or_else(|| new_app_id(&name));
        let now = Timestamp::now();
        let version = self.apps.get(&id).map_or(1, |e| e.record.last_version + 1);
        if let Err(msg) = self.layout.check_socket_path(&id, version) {
            let _ = reply.send(Err(AppError::Internal(msg)));
            return;
        }
        let pending_record = VersionRecord {
            version,
            manifest: upload.manifest.clone(),
            artifact_digest: upload.digest.clone(),
            listen,
            deployed_at: now,
            runner: None,
        };
        let entry = self.apps.entry(id.clone()).or_insert_with(|| {
            AppEntry::new(AppRecord {
                app_id: id.clone(),
                name: name.clone(),
                created_at: now,
                desired: Desired::Running,
                current: None,
                pending: None,
                restart: RestartTracker::default(),
                last_exit: None,
                last_version: 0,
            })
        });
        entry.record.pending = Some(pending_record);
        entry.record.last_version = version;
        entry.pending = Some(Pending {
            version,
            created,
            instance: None,
            reply: Some(reply),
        });
        let written = tabbify_fsutil::ensure_dir(&self.layout.app_dir(&id), 0o700)
            .map_err(|e| e.to_string())
            .and_then(|()| entry.record.save(&self.layout).map_err(|e| e.to_string()));
        if let Err(e) = written {
            self.fail_deploy(
                &id,
                AppError::Internal(format!("cannot record the deploy: {e}")),
            );
            return;
        }
        tracing::info!(app = %id, %name, version, %listen, digest = %upload.digest, "deploying");
        let job = Prepare {
            layout: self.layout.clone(),
            runner_bin: self.cfg.runner_bin.clone(),
            id: id.clone(),
            version,
            upload,
            listen,
            request_deadline: self.cfg.request_deadline,
            vm_kernel: self.cfg.vm_kernel.clone(),
        };
        let events = self.events.clone();
        tokio::task::spawn_blocking(move || {
            let result = job.run();
            let _ = events.send(Event::Launched {
                id,
                version,
                result,
            });
        });
    }

    /// Where the new version listens: the app's address if it has one (with the new manifest's
    /// port in the mesh), otherwise a new one.
    fn plan_listen(
        &self,
        existing: Option<&AppId>,
        manifest: &Manifest,
    ) -> Result<SocketAddr, AppError> {
        let current = existing
            .and_then(|id| self.apps.get(id))
            .and_then(|e| e.record.current.as_ref().or(e.record.pending.as_ref()))
            .map(|v| v.listen);
        let port = manifest.http.port;
        match (current, self.cfg.mode) {
            (Some(SocketAddr::V6(a)), _) => Ok(SocketAddr::new((*a.ip()).into(), port)),
            (Some(other), _) => Ok(other),
            (None, AddressMode::Loopback) => {
                let taken: BTreeSet<u16> = self.listen_addrs().map(|a| a.port()).collect();
                addressing::free_loopback_port(&taken)
                    .map(addressing::loopback)
                    .map_err(|e| {
                        AppError::Internal(format!("cannot find a free loopback port: {e}"))
                    })
            }
            (None, AddressMode::Mesh) => {
                let status = self.cfg.status.snapshot();
                let Some(subnet) = status.subnet else {
                    return Err(AppError::Unavailable(
                        "the node has not joined the mesh yet, and app addresses come from its /64; retry once /health shows \"mesh\":\"joined\" (or run the supervisor with --no-mesh or --dataplane off for loopback addresses)".into(),
                    ));
                };
                let taken: BTreeSet<_> = self
                    .listen_addrs()
                    .filter_map(|a| match a.ip() {
                        IpAddr::V6(v6) => Some(v6),
                        IpAddr::V4(_) => None,
                    })
                    .collect();
                addressing::pick_mesh_addr(subnet, status.ula, &taken)
                    .map(|a| SocketAddr::new(a.into(), port))
                    .ok_or_else(|| {
                        AppError::Unavailable(format!("no free address left in {subnet}"))
                    })
            }
        }
    }

    /// Every address an app of this node has (current or being deployed).
    pub fn listen_addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.apps.values().flat_map(|e| {
            [e.record.current.as_ref(), e.record.pending.as_ref()]
                .into_iter()
                .flatten()
                .map(|v| v.listen)
        })
    }

    pub fn on_launched(&mut self, id: &AppId, version: u32, result: Result<Spawned, AppError>) {
        let wanted = self
            .apps
            .get(id)
            .and_then(|e| e.pending.as_ref())
            .is_some_and(|p| p.version == version && p.instance.is_none());
        if !wanted {
            if let Ok(spawned) = result {
                runner_proc::kill(&spawned.identity);
            }
            return;
        }
        let spawned = match result {
            Ok(s) => s,
            Err(e) => return self.fail_deploy(id, e),
        };
        let started_at = Timestamp::now();
        let mut instance = self.new_instance(
            id,
            version,
            spawned.identity,
            started_at,
            ExitSource::Child(spawned.exit),
            spawned.output_offset,
        );
        let Some(e) = self.apps.get_mut(id) else {
            return;
        };
        if e.deleting.is_some() {
            instance.ending = Some(Ending::Delete);
            runner_proc::kill(&instance.identity);
        }
        if let Some(v) = e.record.pending.as_mut() {
            v.runner = Some(RunnerRecord {
                identity: instance.identity,
                started_at,
            });
        }
        if let Some(p) = e.pending.as_mut() {
            p.instance = Some(instance);
        }
        self.save(id);
    }

    /// The pending version serves: it becomes current and the old runner drains.
    pub fn promote(&mut self, id: &AppId) {
        let (layout, grace) = (self.layout.clone(), self.cfg.stop_grace);
        let Some(e) = self.apps.get_mut(id) else {
            return;
        };
        let Some(mut pending) = e.pending.take() else {
            return;
        };
        let Some(new) = pending.instance.take() else {
            return;
        };
        let old_version = e.record.current.as_ref().map(|v| v.version);
        e.record.current = e.record.pending.take();
        e.record.restart = RestartTracker::default();
        e.record.last_exit = None;
        e.record.desired = Desired::Running;
        e.restart_at = None;
        match e.current.replace(new) {
            Some(mut old) => {
                send_stop(&layout, grace, id, &mut old, Ending::Retire);
                e.retiring.push(old);
            }
            None => {
                if let Some(v) = old_version {
                    remove_version_dir(&layout, id, v);
                }
            }
        }
        // A start or restart that was waiting is answered by the new version serving.
        let waiters = std::mem::take(&mut e.waiters);
        self.save(id);
        let info = self.info(id);
        tracing::info!(app = %id, version = pending.version, "deployed; now serving");
        for w in waiters {
            match w {
                Waiter::Up(r) | Waiter::Down(r) => {
                    let _ = r.send(info.clone());
                }
            }
        }
        if let Some(reply) = pending.reply.take() {
            let _ = reply.send(info.map(|info| Deployed {
                info,
                created: pending.created,
            }));
        }
    }

    /// The pending version's runner ended before serving: roll the deploy back.
    pub fn pending_exited(&mut self, id: &AppId, seen: SeenExit) {
        let Some(p) = self.apps.get_mut(id).and_then(|e| e.pending.as_mut()) else {
            return;
        };
        let Some(instance) = p.instance.take() else {
            return;
        };
        let output = self.layout.runner_output(id, instance.version);
        let error = runner_proc::runner_error(&output, instance.output_offset);
        let err = match (&instance.ending, &error) {
            (Some(Ending::Kill(why)), _) => {
                AppError::AppFailed(format!("the app did not become healthy: {why}"))
            }
            (Some(Ending::Delete), _) => {
                AppError::Conflict("the app was deleted while it deployed".into())
            }
            (_, Some(msg)) => classify_runner_error(msg, &seen.describe()),
            (_, None) => AppError::AppFailed(format!(
                "the runner ended before it served ({}) without saying why",
                seen.describe()
            )),
        };
        self.fail_deploy(id, err);
    }

    /// Rolls a deploy back: its version directory goes; a deploy that created the app removes
    /// the app (and its address) entirely.
    pub fn fail_deploy(&mut self, id: &AppId, err: AppError) {
        let Some(e) = self.apps.get_mut(id) else {
            return;
        };
        let Some(mut pending) = e.pending.take() else {
            return;
        };
        if let Some(i) = pending.instance.take() {
            runner_proc::kill(&i.identity);
        }
        tracing::warn!(app = %id, version = pending.version, error = %err, "deploy failed");
        let reply = pending.reply.take();
        if pending.created {
            // Answered once the app's files, address and containers are gone (the pending
            // version stays in the record until then: it says whether there are containers).
            let deleting = e.deleting.take();
            let listen = e.record.pending.as_ref().map(|v| v.listen);
            self.remove_app(id, listen, move |removed| {
                for r in deleting.into_iter().flatten() {
                    let _ = r.send(removed.clone());
                }
                if let Some(reply) = reply {
                    let _ = reply.send(Err(err));
                }
            });
        } else {
            e.record.pending = None;
            remove_version_dir(&self.layout, id, pending.version);
            self.save(id);
            if let Some(reply) = reply {
                let _ = reply.send(Err(err));
            }
        }
        self.finish_delete(id);
    }
}

/// What a runner's last error `msg` says about a deploy (`exit`: how the runner ended). Pure.
///
/// * The node's Docker daemon does not answer, or the node cannot boot microVMs (no guest kernel,
///   no guest init, no VMM): the node cannot do it now (503), whatever the app.
/// * A docker app whose container could not start (its image is not on the node, the container
///   exited before it listened, the daemon refused to create it), or a microVM whose guest ended
///   or hung before its app listened: the app failed (502); the
///   artifact is fine, and a deployed app in that state goes through the restart policy.
/// * The runner refused the artifact (random bytes, not a component, a broken image tarball):
///   invalid artifact (422).
/// * Anything else: the runner failed before it served (502).
pub fn classify_runner_error(msg: &str, exit: &str) -> AppError {
    use tabbify_runner::runtime::{docker, vm};
    if msg.contains(docker::UNREACHABLE) || msg.contains(vm::NODE_UNABLE) {
        AppError::Unavailable(msg.to_string())
    } else if msg.starts_with(tabbify_runner::START_FAILED) || msg.contains(docker::EXITED_EARLY) {
        AppError::AppFailed(msg.to_string())
    } else if msg.starts_with("cannot load the app") {
        AppError::InvalidArtifact(msg.to_string())
    } else {
        AppError::AppFailed(format!("the runner ended before it served ({exit}): {msg}"))
    }
}

pub fn remove_version_dir(layout: &Layout, id: &AppId, version: u32) {
    let dir = layout.version_dir(id, version);
    super::containers::forget_version(layout.apps_dir(), &dir);
    if let Err(e) = std::fs::remove_dir_all(&dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove an old version");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_errors_map_to_what_went_wrong() {
        let e = classify_runner_error(
            "cannot start the app: cannot reach the Docker daemon at unix:///var/run/docker.sock: connection refused",
            "exit code 1",
        );
        assert!(matches!(e, AppError::Unavailable(_)), "{e:?}");
        let e = classify_runner_error(
            "cannot start the app: image nope:1 is not on this node's Docker daemon and no image tarball was deployed with the app",
            "exit code 1",
        );
        assert!(matches!(e, AppError::AppFailed(_)), "{e:?}");
        assert!(e.to_string().contains("nope:1"), "{e}");
        let e = classify_runner_error(
            "cannot start the app: the container exited before it listened on port 8080 (exit code 3)",
            "exit code 1",
        );
        assert!(matches!(e, AppError::AppFailed(_)), "{e:?}");
        let e = classify_runner_error(
            "cannot load the app: /d/v1/image.tar is not a usable `docker save` tarball: no manifest.json",
            "exit code 1",
        );
        assert!(matches!(e, AppError::InvalidArtifact(_)), "{e:?}");
        let e = classify_runner_error(
            "cannot start the app: this node cannot boot microVMs: guest kernel /k/vmlinuz is missing or not a regular file",
            "exit code 1",
        );
        assert!(matches!(e, AppError::Unavailable(_)), "{e:?}");
        let e = classify_runner_error(
            "cannot start the app: the microVM did not start the app: the app exited with code 2",
            "exit code 1",
        );
        assert!(matches!(e, AppError::AppFailed(_)), "{e:?}");
        let e = classify_runner_error(
            "cannot load the app: the deployed image /d/v1/image.tar cannot be used: image /d/v1/image.tar: no manifest.json",
            "exit code 1",
        );
        assert!(matches!(e, AppError::InvalidArtifact(_)), "{e:?}");
        let e = classify_runner_error("cannot load the app: not a component", "exit code 1");
        assert!(matches!(e, AppError::InvalidArtifact(_)), "{e:?}");
        let e = classify_runner_error(
            "cannot listen on 127.0.0.1:4000: address in use",
            "exit code 1",
        );
        assert!(
            matches!(&e, AppError::AppFailed(m) if m.contains("before it served")),
            "{e:?}"
        );
    }
}
