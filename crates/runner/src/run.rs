//! The life of one runner process: read the spec, record the pid, open the app log and the
//! control socket, load the app, serve until `stop` or SIGTERM, drain, and leave nothing behind
//! (socket and pid file removed). A load failure goes to the app log and to stderr, and the
//! process exits non-zero.

use crate::app_dir::{AppDir, AppDirError};
use crate::control::{ControlSocket, ControlState};
use crate::log_file::AppLog;
use crate::runtime::{self, LoadError};
use crate::stats::RequestStats;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tabbify_wire::runner::{CompileCache, DEFAULT_STOP_GRACE_MS, RunnerSpec, RunnerState};
use tokio::net::TcpSocket;
use tokio::signal::unix::{SignalKind, signal};

/// Printed on stdout, followed by the address, once the runner accepts requests.
pub const READY_MARKER: &str = "tabbify-runner serving on ";

/// Why a runner stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    AppDir(#[from] AppDirError),
    #[error("cannot open the app log {path}: {source}")]
    Log { path: PathBuf, source: io::Error },
    #[error("cannot open the control socket {path}: {source}")]
    Socket { path: PathBuf, source: io::Error },
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("cannot load the app: {0}")]
    Load(#[from] LoadError),
    /// The app's container or microVM could not be started for a reason other than its artifact
    /// (the image is missing, the daemon does not answer, the container or guest exited at once,
    /// the node has no guest kernel). Its message starts with [`START_FAILED`].
    #[error("cannot start the app: {0}")]
    Start(LoadError),
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
    #[error("the app ended: {0}")]
    Ended(#[from] runtime::AppEnded),
}

/// The start of a [`RunError::Start`] message, by which the supervisor tells an app that could not
/// start from an artifact it could not load.
pub const START_FAILED: &str = "cannot start the app: ";

impl RunError {
    /// A load error as the runner reports it: a docker or microVM app that could not start is
    /// not a bad artifact.
    fn from_load(e: LoadError) -> Self {
        if e.is_artifact_problem() {
            RunError::Load(e)
        } else {
            RunError::Start(e)
        }
    }

    /// 2 when the runner was started wrongly (no or bad spec), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::AppDir(_) => 2,
            _ => 1,
        }
    }
}

/// Runs the app in `app_dir` until it is told to stop.
pub async fn run(app_dir: &Path) -> Result<(), RunError> {
    let dir = AppDir::new(app_dir);
    let spec = dir.read_spec()?;
    let log =
        AppLog::open(&spec.log_file, spec.log_max_bytes, spec.log_keep).map_err(|source| {
            RunError::Log {
                path: spec.log_file.clone(),
                source,
            }
        })?;
    let result = serve_app(&dir, &spec, &log).await;
    match &result {
        Ok(()) => log.runner_line("stopped"),
        Err(e) => log.runner_line(&format!("fatal: {e}")),
    }
    result
}

async fn serve_app(dir: &AppDir, spec: &RunnerSpec, log: &AppLog) -> Result<(), RunError> {
    let stats = Arc::new(RequestStats::default());
    let control = Arc::new(ControlState::new(
        spec.app_id.clone(),
        spec.name().clone(),
        spec.runtime_kind(),
        spec.listen,
        stats.clone(),
    ));
    let socket = ControlSocket::bind(&spec.socket)
        .await
        .map_err(|source| RunError::Socket {
            path: spec.socket.clone(),
            source,
        })?;
    // Only after the socket is ours: a runner refused for a live twin must not touch its pid file.
    let _pid_file = PidFile::write(dir)?;
    let socket_task = AbortOnDrop::new(tokio::spawn(socket.serve(control.clone())));
    let _signals = AbortOnDrop::new(watch_signals(control.clone())?);

    // Bind before loading (a taken address fails fast), listen only once the app is loaded: the
    // address may be shared with the previous version during a redeploy (SO_REUSEPORT), and a
    // listening socket would take its share of new connections while this one cannot answer
    // them yet, or drop them if the load fails.
    let listen_error = |source| RunError::Listen {
        addr: spec.listen,
        source,
    };
    let socket = bind_app_socket(spec.listen).map_err(listen_error)?;
    let addr = socket.local_addr().unwrap_or(spec.listen);
    control.set_listen(addr);

    log.runner_line(&format!("loading {}", spec.artifact.display()));
    let load_spec = spec.clone();
    let load_log = log.clone();
    let app = tokio::task::spawn_blocking(move || runtime::load(&load_spec, load_log, stats))
        .await
        .map_err(|e| LoadError::Engine(format!("loader task failed: {e}")))?
        .map_err(RunError::from_load)?;
    let listener = socket.listen(1024).map_err(listen_error)?;
    let cache = app.compile_cache();
    if let Some(cache) = cache {
        control.set_compile_cache(cache);
    }
    let cache_note = match cache {
        Some(CompileCache::Hit) => " (compile cache hit)",
        Some(CompileCache::Miss) => " (compiled; cache stored)",
        None => "",
    };
    // The listener is bound and the app loaded: from here on requests are answered (the accept
    // loop starts below), so health is reported before the ready line goes out.
    control.set_state(RunnerState::Serving);
    log.runner_line(&format!("serving on {addr}{cache_note}"));
    println!("{READY_MARKER}{addr}");
    tracing::info!(%addr, app_id = %spec.app_id, ?cache, "serving");

    let served = app.serve(listener, control).await;
    socket_task.shutdown().await;
    served?;
    Ok(())
}

/// Binds the app's address with SO_REUSEPORT: during a redeploy the supervisor starts the next
/// version on the same address while this one still serves, and stops this one only once the
/// next is healthy, so the address never stops answering.
fn bind_app_socket(addr: SocketAddr) -> io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

/// SIGTERM and SIGINT ask for a stop with the default grace period.
fn watch_signals(control: Arc<ControlState>) -> Result<tokio::task::JoinHandle<()>, RunError> {
    let mut term = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
    Ok(tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "stop requested by signal");
        control.request_stop(Duration::from_millis(DEFAULT_STOP_GRACE_MS));
    }))
}

/// The pid file, removed again when the runner ends (if it still names this process).
struct PidFile {
    dir: AppDir,
    pid: u32,
}

impl PidFile {
    fn write(dir: &AppDir) -> Result<Self, RunError> {
        let pid = std::process::id();
        dir.write_pid(pid)?;
        Ok(Self {
            dir: dir.clone(),
            pid,
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if self.dir.read_pid() == Some(self.pid) {
            let _ = std::fs::remove_file(self.dir.pid_path());
        }
    }
}

/// Aborts the task when dropped; `shutdown` also waits until its future (and what it owns, such
/// as the control socket file) is gone.
struct AbortOnDrop<T>(Option<tokio::task::JoinHandle<T>>);

impl<T> AbortOnDrop<T> {
    fn new(handle: tokio::task::JoinHandle<T>) -> Self {
        Self(Some(handle))
    }

    async fn shutdown(mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
            let _ = handle.await;
        }
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        if let Some(handle) = &self.0 {
            handle.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::docker::DockerError;

    #[test]
    fn a_container_that_cannot_start_is_not_a_bad_artifact() {
        let missing = RunError::from_load(LoadError::Docker(DockerError::ImageMissing {
            image: "hello:1".into(),
        }));
        assert!(matches!(missing, RunError::Start(_)), "{missing}");
        assert!(missing.to_string().starts_with(START_FAILED), "{missing}");
        let corrupt = RunError::from_load(LoadError::Docker(DockerError::Tarball {
            path: "/a/image.tar".into(),
            message: "no manifest.json".into(),
        }));
        assert!(
            corrupt.to_string().starts_with("cannot load the app: "),
            "{corrupt}"
        );
    }
}
