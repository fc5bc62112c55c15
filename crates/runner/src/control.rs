//! The runner's control socket: newline-delimited JSON requests from the supervisor (`ping`,
//! `health`, `status`, `stop`), one task per connection, answers built from a snapshot of the
//! runner's state. `stop` is the only request with an effect, and it only signals the owner of the
//! shutdown.

use crate::stats::RequestStats;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tabbify_wire::Timestamp;
use tabbify_wire::app::{AppId, AppName, RuntimeKind};
use tabbify_wire::runner::{
    CompileCache, MAX_REQUEST_LINE, RunnerErrorCode, RunnerOp, RunnerReply, RunnerResponse,
    RunnerState, RunnerStatus, decode_request,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

/// What the control socket reports, and the one way to ask the runner to stop.
#[derive(Debug)]
pub struct ControlState {
    pub app_id: AppId,
    pub name: AppName,
    pub runtime: RuntimeKind,
    pub pid: u32,
    pub started_at: Timestamp,
    pub stats: Arc<RequestStats>,
    listen: Mutex<SocketAddr>,
    state: Mutex<RunnerState>,
    compile_cache: OnceLock<CompileCache>,
    stop: watch::Sender<Option<Duration>>,
}

impl ControlState {
    pub fn new(
        app_id: AppId,
        name: AppName,
        runtime: RuntimeKind,
        listen: SocketAddr,
        stats: Arc<RequestStats>,
    ) -> Self {
        Self {
            app_id,
            name,
            runtime,
            pid: std::process::id(),
            started_at: Timestamp::now(),
            stats,
            listen: Mutex::new(listen),
            state: Mutex::new(RunnerState::Starting),
            compile_cache: OnceLock::new(),
            stop: watch::channel(None).0,
        }
    }

    pub fn set_listen(&self, addr: SocketAddr) {
        *self.listen.lock().unwrap_or_else(|p| p.into_inner()) = addr;
    }

    pub fn set_state(&self, state: RunnerState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    pub fn state(&self) -> RunnerState {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_compile_cache(&self, outcome: CompileCache) {
        let _ = self.compile_cache.set(outcome);
    }

    /// Asks the runner to stop, letting in-flight requests run for up to `grace`. The first
    /// request wins; later ones change nothing.
    pub fn request_stop(&self, grace: Duration) {
        self.stop.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(grace);
                true
            } else {
                false
            }
        });
    }

    /// Resolves with the grace period once a stop was requested.
    pub fn stop_requested(&self) -> impl Future<Output = Duration> + use<> {
        let mut rx = self.stop.subscribe();
        async move {
            loop {
                if let Some(grace) = *rx.borrow_and_update() {
                    return grace;
                }
                if rx.changed().await.is_err() {
                    return Duration::ZERO;
                }
            }
        }
    }

    pub fn status(&self) -> RunnerStatus {
        let stats = self.stats.snapshot();
        RunnerStatus {
            app_id: self.app_id.clone(),
            name: self.name.clone(),
            pid: self.pid,
            runtime: self.runtime,
            state: self.state(),
            listen: *self.listen.lock().unwrap_or_else(|p| p.into_inner()),
            started_at: self.started_at,
            requests_served: stats.served,
            requests_failed: stats.failed,
            requests_in_flight: stats.in_flight,
            last_error: stats.last_error,
            compile_cache: self.compile_cache.get().copied(),
            software_version: tabbify_wire::SOFTWARE_VERSION.to_string(),
        }
    }
}

/// The reply to `op` given the runner's `status`, and the grace period if `op` asks to stop.
pub fn reply_to(op: &RunnerOp, status: RunnerStatus) -> (RunnerReply, Option<Duration>) {
    match op {
        RunnerOp::Ping => (
            RunnerReply::Pong {
                app_id: status.app_id,
                pid: status.pid,
            },
            None,
        ),
        RunnerOp::Health => {
            let healthy = status.state == RunnerState::Serving;
            let detail = match status.state {
                RunnerState::Serving => None,
                RunnerState::Starting => Some("loading the app".to_string()),
                RunnerState::Stopping => Some("stopping".to_string()),
            };
            (
                RunnerReply::Health {
                    healthy,
                    state: status.state,
                    detail,
                },
                None,
            )
        }
        RunnerOp::Status => (RunnerReply::Status(status), None),
        RunnerOp::Stop { grace_ms } => (
            RunnerReply::Stopping {
                grace_ms: *grace_ms,
            },
            Some(Duration::from_millis(*grace_ms)),
        ),
    }
}

/// The bound control socket; the file is removed when this drops.
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlSocket {
    /// Binds `path`, replacing a stale socket file but refusing one that a live process answers
    /// on (two runners for one app must not happen).
    pub async fn bind(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        if path.exists() {
            if UnixStream::connect(path).await.is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by a live process", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Accepts connections until the task is dropped.
    pub async fn serve(self, state: Arc<ControlState>) {
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    let state = state.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve_connection(stream, &state).await {
                            tracing::debug!(error = %e, "control connection ended");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve_connection(stream: UnixStream, state: &ControlState) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let limit = (MAX_REQUEST_LINE + 1) as u64;
        let n = (&mut reader)
            .take(limit)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        let too_long = line.len() > MAX_REQUEST_LINE;
        let (reply, stop) = if too_long {
            let reply = RunnerReply::Error {
                code: RunnerErrorCode::BadRequest,
                message: format!("request line longer than {MAX_REQUEST_LINE} bytes"),
            };
            (reply, None)
        } else {
            let text = String::from_utf8_lossy(&line);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            match decode_request(text) {
                Ok(op) => reply_to(&op, state.status()),
                Err(refused) => (refused.into_reply(), None),
            }
        };
        let mut out = serde_json::to_vec(&RunnerResponse::new(reply)).map_err(io::Error::other)?;
        out.push(b'\n');
        write.write_all(&out).await?;
        write.flush().await?;
        if let Some(grace) = stop {
            tracing::info!(
                grace_ms = grace.as_millis(),
                "stop requested over the control socket"
            );
            state.request_stop(grace);
        }
        if too_long {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> ControlState {
        ControlState::new(
            AppId::new("app-1").unwrap(),
            AppName::new("hello").unwrap(),
            RuntimeKind::Wasm,
            "127.0.0.1:1".parse().unwrap(),
            Arc::default(),
        )
    }

    #[test]
    fn health_follows_the_state() {
        let s = state();
        let (reply, stop) = reply_to(&RunnerOp::Health, s.status());
        assert!(stop.is_none());
        assert!(matches!(
            reply,
            RunnerReply::Health {
                healthy: false,
                state: RunnerState::Starting,
                ..
            }
        ));
        s.set_state(RunnerState::Serving);
        let (reply, _) = reply_to(&RunnerOp::Health, s.status());
        assert!(matches!(
            reply,
            RunnerReply::Health {
                healthy: true,
                detail: None,
                ..
            }
        ));
    }

    #[test]
    fn ping_names_the_app_and_stop_carries_the_grace() {
        let s = state();
        let (reply, _) = reply_to(&RunnerOp::Ping, s.status());
        assert_eq!(
            reply,
            RunnerReply::Pong {
                app_id: AppId::new("app-1").unwrap(),
                pid: std::process::id()
            }
        );
        let (reply, stop) = reply_to(&RunnerOp::Stop { grace_ms: 1500 }, s.status());
        assert_eq!(reply, RunnerReply::Stopping { grace_ms: 1500 });
        assert_eq!(stop, Some(Duration::from_millis(1500)));
    }

    #[tokio::test]
    async fn first_stop_request_wins() {
        let s = state();
        let waiter = s.stop_requested();
        s.request_stop(Duration::from_millis(7));
        s.request_stop(Duration::from_millis(9));
        assert_eq!(waiter.await, Duration::from_millis(7));
        assert_eq!(s.stop_requested().await, Duration::from_millis(7));
    }

    #[test]
    fn status_reports_counters_and_cache() {
        let s = state();
        s.stats.served();
        s.stats.failed("boom");
        s.set_compile_cache(CompileCache::Hit);
        s.set_listen("127.0.0.1:9".parse().unwrap());
        let st = s.status();
        assert_eq!((st.requests_served, st.requests_failed), (1, 1));
        assert_eq!(st.last_error.as_deref(), Some("boom"));
        assert_eq!(st.compile_cache, Some(CompileCache::Hit));
        assert_eq!(st.listen.port(), 9);
    }
}
