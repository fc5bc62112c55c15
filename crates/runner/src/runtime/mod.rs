//! App runtimes behind one interface: load the artifact named by the spec, then serve until told
//! to stop. `wasm` runs a component in-process; `docker` runs a container on the node's daemon
//! and forwards the app's address to it; `vm` boots a microVM (`kind = "firecracker"`) and
//! forwards the app's address to the guest. Each is a variant of [`LoadedApp`] with its own
//! module, reached through the same spec and control protocol.

pub mod docker;
pub mod vm;
pub mod wasm;

use crate::control::ControlState;
use crate::log_file::AppLog;
use crate::stats::RequestStats;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tabbify_wire::app::RuntimeKind;
use tabbify_wire::runner::{CompileCache, RunnerSpec};
use tokio::net::TcpListener;

/// Why an app could not be loaded. The runner exits non-zero with this message in the app log
/// and on stderr.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read artifact {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a WebAssembly binary (it does not start with the \\0asm magic)")]
    NotWasm { path: PathBuf },
    #[error(
        "{path} is a core WebAssembly module, not a component: tabbify runs WASI components that export wasi:http/incoming-handler (build for wasm32-wasip2, or wrap the module with `wasm-tools component new`)"
    )]
    CoreModule { path: PathBuf },
    #[error("{path} has an unknown WebAssembly version/layer {found:02x?}")]
    UnknownVersion { path: PathBuf, found: [u8; 4] },
    #[error("{path} does not compile: {message}")]
    Compile { path: PathBuf, message: String },
    #[error("{path} is not a wasi:http/proxy component: {message}")]
    NotProxy { path: PathBuf, message: String },
    #[error("cannot set up the wasm engine: {0}")]
    Engine(String),
    #[error(transparent)]
    Docker(#[from] docker::DockerError),
    #[error(transparent)]
    Vm(#[from] vm::VmAppError),
}

impl LoadError {
    /// Whether the deployed artifact is at fault; otherwise the app could not start (a missing
    /// image on the daemon, a guest that exited, a node without a kernel) and the runner says so.
    pub fn is_artifact_problem(&self) -> bool {
        match self {
            LoadError::Docker(d) => d.is_artifact_problem(),
            LoadError::Vm(v) => v.is_artifact_problem(),
            _ => true,
        }
    }
}

/// The app ended by itself while it served (a container that exited): the runner exits non-zero
/// with this, and the supervisor's restart policy takes over.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AppEnded(pub String);

/// An app ready to serve.
pub enum LoadedApp {
    Wasm(wasm::WasmApp),
    Docker(docker::DockerApp),
    Vm(Box<vm::VmApp>),
}

impl LoadedApp {
    /// Whether compiled code came from the cache (for runtimes that compile).
    pub fn compile_cache(&self) -> Option<CompileCache> {
        match self {
            LoadedApp::Wasm(app) => Some(app.compile_cache()),
            LoadedApp::Docker(_) | LoadedApp::Vm(_) => None,
        }
    }

    /// Serves on `listener` until a stop is requested through `control`, then drains in-flight
    /// requests for up to the requested grace period. An app that ends by itself is an error.
    pub async fn serve(
        self,
        listener: TcpListener,
        control: Arc<ControlState>,
    ) -> Result<(), AppEnded> {
        match self {
            LoadedApp::Wasm(app) => {
                Arc::new(app).serve(listener, control).await;
                Ok(())
            }
            LoadedApp::Docker(app) => app.serve(listener, control).await,
            LoadedApp::Vm(app) => app.serve(listener, control).await,
        }
    }
}

/// Loads the app of `spec`.
/// `stats` are the counters the app's request path writes and the control socket reads.
pub fn load(
    spec: &RunnerSpec,
    log: AppLog,
    stats: Arc<RequestStats>,
) -> Result<LoadedApp, LoadError> {
    match spec.runtime_kind() {
        RuntimeKind::Wasm => wasm::WasmApp::load(spec, log, stats).map(LoadedApp::Wasm),
        RuntimeKind::Docker => Ok(LoadedApp::Docker(docker::DockerApp::load(
            spec, log, stats,
        )?)),
        RuntimeKind::Firecracker => Ok(LoadedApp::Vm(Box::new(vm::VmApp::load(spec, log, stats)?))),
    }
}

/// The per-request deadline of a spec, never zero.
pub fn request_deadline(spec: &RunnerSpec) -> Duration {
    Duration::from_millis(spec.request_deadline_ms.max(1))
}
