//! The lifecycle of a deployed app in the manager: the operator's stop, start, restart, reset and
//! delete; runners that serve, hang or exit; and the restart policy applied to exits nobody
//! asked for.

use super::containers;
use super::deploy::remove_version_dir;
use super::error::AppError;
use super::lo_addr;
use super::manager::{Ending, Manager, Reply, Waiter, send_stop};
use super::policy::{Decision, ExitKind};
use super::record::Desired;
use super::runner_proc::{self, ExitSource, SeenExit};
use std::net::{IpAddr, SocketAddr};
use tabbify_wire::Timestamp;
use tabbify_wire::app::{AppId, RuntimeKind};
use tabbify_wire::node_apps::{AppInfo, LastExit};

impl Manager {
    /// Whether `id` exists and may take a lifecycle command now.
    fn ready_for_command(&self, id: &AppId) -> Result<(), AppError> {
        let e = self.entry(id)?;
        if e.deleting.is_some() {
            return Err(AppError::Conflict(format!("app {id} is being deleted")));
        }
        if e.record.current.is_none() {
            return Err(AppError::Conflict(format!(
                "app {id} is still being deployed; wait for the deploy's answer"
            )));
        }
        Ok(())
    }

    fn refuse_parked(&self, id: &AppId) -> Result<(), AppError> {
        let e = self.entry(id)?;
        if e.record.restart.is_parked() {
            return Err(AppError::Conflict(format!(
                "app {id} is parked after {} failures in a row; POST /v1/apps/{id}/reset to run it again",
                e.record.restart.consecutive_failures
            )));
        }
        Ok(())
    }

    pub fn stop(&mut self, id: &AppId, reply: Reply<AppInfo>) {
        if let Err(e) = self.ready_for_command(id) {
            let _ = reply.send(Err(e));
            return;
        }
        let (layout, grace) = (self.layout.clone(), self.cfg.stop_grace);
        let Some(e) = self.apps.get_mut(id) else {
            return;
        };
        e.record.desired = Desired::Stopped;
        e.restart_at = None;
        match e.current.as_mut() {
            Some(i) => {
                if i.ending != Some(Ending::Stop) {
                    send_stop(&layout, grace, id, i, Ending::Stop);
                }
                e.waiters.push(Waiter::Down(reply));
                self.save(id);
            }
            None => {
                self.save(id);
                let _ = reply.send(self.info(id));
            }
        }
    }

    pub fn start(&mut self, id: &AppId, reply: Reply<AppInfo>) {
        if let Err(e) = self
            .ready_for_command(id)
            .and_then(|()| self.refuse_parked(id))
        {
            let _ = reply.send(Err(e));
            return;
        }
        let Some(e) = self.apps.get_mut(id) else {
            return;
        };
        e.record.desired = Desired::Running;
        e.record.restart = e.record.restart.started_by_operator();
        e.restart_at = None;
        let launch = match e.current.as_mut() {
            Some(i) if i.serving && i.ending.is_none() => {
                self.save(id);
                let _ = reply.send(self.info(id));
                return;
            }
            // A stop is draining it: start again once it is gone.
            Some(i) => {
                if i.ending == Some(Ending::Stop) {
                    i.ending = Some(Ending::Restart);
                }
                false
            }
            None => true,
        };
        e.waiters.push(Waiter::Up(reply));
        self.save(id);
        if launch {
            self.launch_current(id);
        }
    }

    pub fn restart(&mut self, id: &AppId, reply: Reply<AppInfo>) {
        if let Err(e) = self
            .ready_for_command(id)
            .and_then(|()| self.refuse_parked(id))
        {
            let _ = reply.send(Err(e));
            return;
        }
        let (layout, grace) = (self.layout.clone(), self.cfg.stop_grace);
        let Some(e) = self.apps.get_mut(id) else {
            return;
        };
        e.record.desired = Desired::Running;
        e.record.restart = e.record.restart.started_by_operator();
        e.restart_at = None;
        e.waiters.push(Waiter::Up(reply));
        let launch = match e.current.as_mut() {
            Some(i) => {
                match i.ending {
                    None | Some(Ending::Stop) => send_stop(&layout, grace, id, i, Ending::Restart),
                    // Already being killed or restarted: start again when it is gone.
                    Some(_) => i.ending = Some(Ending::Restart),
                }
                false
            }
            None => true,
        };
        self.save(id);
        if launch {
            self.launch_current(id);
        }
    }

    /// Forgets the failures and un-parks; starts the app if no runner is there.
    pub fn reset(&mut self, id: &AppId, reply: Reply<AppInfo>) {
        if let Err(e) = self.ready_for_command(id) {
            let _ = reply.send(Err(e));
            return;
        }
        let Some(e) = self.apps.get_mut(id) else {
            return;
        };
        e.record.restart = e.record.restart.reset();
        e.record.desired = Desired::Running;
        e.restart_at = None;
        tracing::info!(app = %id, "restart policy reset");
        if e.current.is_some() {
            self.save(id);
            let _ = reply.send(self.info(id));
            return;
        }
        e.waiters.push(Waiter::Up(reply));
        self.save(id);
        self.launch_current(id);
    }

    pub fn delete(&mut self, id: &AppId, reply: Reply<()>) {
        let (layout, grace) = (self.layout.clone(), self.cfg.stop_grace);
        let Some(e) = self.apps.get_mut(id) else {
            let _ = reply.send(Err(AppError::unknown_app(id.as_str())));
            return;
        };
        if let Some(waiting) = e.deleting.as_mut() {
            waiting.push(reply);
            return;
        }
        tracing::info!(app = %id, "deleting");
        e.deleting = Some(vec![reply]);
        e.restart_at = None;
        for i in e.instances_mut() {
            if !matches!(i.ending, Some(Ending::Retire | Ending::Delete)) {
                send_stop(&layout, grace, id, i, Ending::Delete);
            }
        }
        if let Some(deploy) = e.pending.as_mut().and_then(|p| p.reply.take()) {
            let _ = deploy.send(Err(AppError::Conflict(format!(
                "app {id} was deleted while it deployed"
            ))));
        }
        for w in std::mem::take(&mut e.waiters) {
            let (Waiter::Up(r) | Waiter::Down(r)) = w;
            let _ = r.send(Err(AppError::Conflict(format!(
                "app {id} is being deleted"
            ))));
        }
        self.finish_delete(id);
    }

    /// Completes a delete once no runner of the app is left.
    pub fn finish_delete(&mut self, id: &AppId) {
        let Some(e) = self.apps.get_mut(id) else {
            return;
        };
        let launching = e.pending.as_ref().is_some_and(|p| p.instance.is_none());
        if e.deleting.is_none() || e.instances().next().is_some() || launching {
            return;
        }
        let replies = e.deleting.take().unwrap_or_default();
        let listen = e
            .record
            .current
            .as_ref()
            .or(e.record.pending.as_ref())
            .map(|v| v.listen);
        let app = id.clone();
        self.remove_app(id, listen, move |result| {
            if result.is_ok() {
                tracing::info!(app = %app, "deleted");
            }
            for r in replies {
                let _ = r.send(result.clone());
            }
        });
    }

    /// Forgets the app and removes what it left: its directory, its address on `lo`, and for a
    /// docker app every container labelled with it (the runners removed theirs as they stopped;
    /// this catches a runner that was killed before it could). The containers go off the manager
    /// task; `done` gets the outcome once they are gone, so a delete is answered only then.
    pub fn remove_app(
        &mut self,
        id: &AppId,
        listen: Option<SocketAddr>,
        done: impl FnOnce(Result<(), AppError>) + Send + 'static,
    ) {
        let docker = self.apps.remove(id).is_some_and(|e| {
            [e.record.current.as_ref(), e.record.pending.as_ref()]
                .into_iter()
                .flatten()
                .any(|v| v.manifest.runtime.kind() == RuntimeKind::Docker)
        });
        let mut problems = Vec::new();
        if let Some(SocketAddr::V6(a)) = listen
            && !self
                .listen_addrs()
                .any(|other| other.ip() == IpAddr::V6(*a.ip()))
            && let Err(e) = lo_addr::remove(*a.ip())
        {
            problems.push(e.to_string());
        }
        let dir = self.layout.app_dir(id);
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            problems.push(format!("cannot remove {}: {e}", dir.display()));
        }
        if !docker {
            return done(outcome(problems));
        }
        let apps_dir = self.layout.apps_dir().to_path_buf();
        let scope = containers::Scope::App(id.clone());
        let app = id.clone();
        tokio::spawn(async move {
            match containers::remove(&apps_dir, &scope).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(app = %app, removed = n, "removed containers left behind"),
                Err(e) => {
                    tracing::warn!(app = %app, error = %e, "cannot remove the app's containers");
                    problems.push(format!(
                        "the app is gone but its containers could not be removed ({e}); the node removes them when it next starts"
                    ));
                }
            }
            done(outcome(problems));
        });
    }

    /// The Docker daemon answers again: docker apps waiting out a restart backoff (their
    /// restarts failed while it was gone) are started now rather than at the end of the delay.
    pub fn docker_returned(&mut self, now: Timestamp) {
        let mut woken = 0;
        for e in self.apps.values_mut() {
            let docker = e
                .current_version()
                .is_some_and(|v| v.manifest.runtime.kind() == RuntimeKind::Docker);
            if docker && e.current.is_none() && e.deleting.is_none() && e.restart_at.is_some() {
                e.restart_at = Some(now);
                woken += 1;
            }
        }
        tracing::info!(restarting = woken, "the Docker daemon answers again");
    }

    /// Starts a runner for the app's current version.
    pub fn launch_current(&mut self, id: &AppId) {
        let Some(version) = self
            .apps
            .get(id)
            .and_then(|e| e.record.current.as_ref())
            .map(|v| v.version)
        else {
            return;
        };
        let now = Timestamp::now();
        match runner_proc::spawn(&self.cfg.runner_bin, &self.layout.version_dir(id, version)) {
            Ok(spawned) => {
                let instance = self.new_instance(
                    id,
                    version,
                    spawned.identity,
                    now,
                    ExitSource::Child(spawned.exit),
                    spawned.output_offset,
                );
                tracing::info!(app = %id, version, pid = spawned.identity.pid, "runner started");
                let Some(e) = self.apps.get_mut(id) else {
                    return;
                };
                if let Some(v) = e.record.current.as_mut() {
                    v.runner = Some(instance.record());
                }
                e.current = Some(instance);
                self.save(id);
            }
            Err(err) => {
                tracing::error!(app = %id, error = %err, "cannot start the runner");
                let offset = self.output_len(id, version);
                self.apply_failure(
                    id,
                    SeenExit::default(),
                    now,
                    version,
                    offset,
                    Some(format!("the runner could not be started: {err}")),
                );
            }
        }
    }

    pub fn output_len(&self, id: &AppId, version: u32) -> u64 {
        std::fs::metadata(self.layout.runner_output(id, version)).map_or(0, |m| m.len())
    }

    pub fn on_serving(&mut self, id: &AppId, pid: u32) {
        let Some(e) = self.apps.get_mut(id) else {
            return;
        };
        if let Some(i) = e.pending.as_mut().and_then(|p| p.instance.as_mut())
            && i.identity.pid == pid
        {
            i.serving = true;
            self.promote(id);
            return;
        }
        let Some(i) = e.current.as_mut().filter(|i| i.identity.pid == pid) else {
            return;
        };
        i.serving = true;
        tracing::info!(app = %id, pid, "serving");
        let waiting: Vec<_> = std::mem::take(&mut e.waiters);
        let (up, down): (Vec<_>, Vec<_>) = waiting
            .into_iter()
            .partition(|w| matches!(w, Waiter::Up(_)));
        e.waiters = down;
        let info = self.info(id);
        for w in up {
            let (Waiter::Up(r) | Waiter::Down(r)) = w;
            let _ = r.send(info.clone());
        }
    }

    pub fn on_unresponsive(&mut self, id: &AppId, pid: u32, why: String) {
        let Some(e) = self.apps.get_mut(id) else {
            return;
        };
        if let Some(i) = e.instances_mut().find(|i| i.identity.pid == pid) {
            tracing::warn!(app = %id, pid, %why, "runner unresponsive; killing it");
            if i.ending.is_none() {
                i.ending = Some(Ending::Kill(why));
            }
            runner_proc::kill(&i.identity);
        }
    }

    pub fn on_exited(&mut self, id: &AppId, pid: u32, seen: SeenExit) {
        let Some(e) = self.apps.get_mut(id) else {
            return;
        };
        let is = |i: Option<&super::manager::Instance>| i.is_some_and(|i| i.identity.pid == pid);
        if is(e.pending.as_ref().and_then(|p| p.instance.as_ref())) {
            self.pending_exited(id, seen);
        } else if is(e.current.as_ref()) {
            self.current_exited(id, seen);
        } else if let Some(pos) = e.retiring.iter().position(|i| i.identity.pid == pid) {
            let old = e.retiring.remove(pos);
            let in_use = [e.record.current.as_ref(), e.record.pending.as_ref()]
                .into_iter()
                .flatten()
                .any(|v| v.version == old.version);
            tracing::info!(app = %id, version = old.version, "old version stopped");
            if !in_use {
                remove_version_dir(&self.layout, id, old.version);
            }
        }
        self.finish_delete(id);
    }

    fn current_exited(&mut self, id: &AppId, seen: SeenExit) {
        let Some(e) = self.apps.get_mut(id) else {
            return;
        };
        let Some(instance) = e.current.take() else {
            return;
        };
        if let Some(v) = e.record.current.as_mut() {
            v.runner = None;
        }
        match instance.ending.clone() {
            Some(Ending::Stop) => {
                tracing::info!(app = %id, pid = instance.identity.pid, "stopped");
                let waiting = std::mem::take(&mut e.waiters);
                self.save(id);
                let info = self.info(id);
                for w in waiting {
                    match w {
                        Waiter::Down(r) => {
                            let _ = r.send(info.clone());
                        }
                        Waiter::Up(r) => {
                            let _ = r.send(Err(AppError::Conflict(format!(
                                "app {id} was stopped before it served"
                            ))));
                        }
                    }
                }
            }
            Some(Ending::Restart) => {
                self.save(id);
                self.launch_current(id);
            }
            Some(Ending::Delete | Ending::Retire) => self.save(id),
            Some(Ending::Kill(reason)) => self.apply_failure(
                id,
                seen,
                instance.started_at,
                instance.version,
                instance.output_offset,
                Some(reason),
            ),
            None => self.apply_failure(
                id,
                seen,
                instance.started_at,
                instance.version,
                instance.output_offset,
                None,
            ),
        }
    }

    /// A runner of the current version ended without being asked to: record how, and let the
    /// restart policy decide what comes next.
    pub fn apply_failure(
        &mut self,
        id: &AppId,
        seen: SeenExit,
        started_at: Timestamp,
        version: u32,
        output_offset: u64,
        reason: Option<String>,
    ) {
        let now = Timestamp::now();
        let error =
            runner_proc::runner_error(&self.layout.runner_output(id, version), output_offset);
        let Some(e) = self.apps.get_mut(id) else {
            return;
        };
        let Some(spec) = e.record.current.as_ref().map(|v| v.manifest.restart) else {
            return;
        };
        let description = match &reason {
            Some(r) => format!("{} ({r})", seen.describe()),
            None => seen.describe(),
        };
        let exit = LastExit {
            at: now,
            code: seen.code,
            signal: seen.signal,
            description: description.clone(),
            error: error.clone(),
            uptime_ms: now.unix_ms().saturating_sub(started_at.unix_ms()),
        };
        let kind = if seen.is_clean() && reason.is_none() {
            ExitKind::Clean
        } else {
            ExitKind::Failure
        };
        let (tracker, decision) = e.record.restart.on_exit(&spec, started_at, now, kind);
        e.record.restart = tracker;
        e.record.last_exit = Some(exit);
        match decision {
            Decision::Restart { at, delay } if e.record.desired == Desired::Running => {
                tracing::warn!(app = %id, exit = %description, ?error, restart_in = ?delay, failures = tracker.consecutive_failures, "runner ended; restarting");
                e.restart_at = Some(at);
            }
            Decision::Restart { .. } => {}
            Decision::Park => {
                tracing::error!(app = %id, exit = %description, ?error, failures = tracker.consecutive_failures, "runner keeps failing; parked until reset");
            }
            Decision::Leave => {
                tracing::info!(app = %id, exit = %description, "runner ended; the restart policy leaves it");
            }
        }
        let waiting = std::mem::take(&mut e.waiters);
        self.save(id);
        let failed = match &error {
            Some(err) => format!("the runner ended before it served ({description}): {err}"),
            None => format!("the runner ended before it served ({description})"),
        };
        for w in waiting {
            let (Waiter::Up(r) | Waiter::Down(r)) = w;
            let _ = r.send(Err(AppError::AppFailed(failed.clone())));
        }
    }
}

fn outcome(problems: Vec<String>) -> Result<(), AppError> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(AppError::Internal(problems.join("; ")))
    }
}
