//! App runtimes behind one interface: load the artifact named by the spec, then serve until told
//! to stop. Only wasm exists today; a container or microVM runtime is another variant of
//! [`LoadedApp`] with its own module, reached through the same spec and control protocol.

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
    #[error("runtime kind \"{0}\" is not supported by this runner yet")]
    Unsupported(RuntimeKind),
}

/// An app ready to serve.
pub enum LoadedApp {
    Wasm(wasm::WasmApp),
}

impl LoadedApp {
    /// Whether compiled code came from the cache (for runtimes that compile).
    pub fn compile_cache(&self) -> Option<CompileCache> {
        match self {
            LoadedApp::Wasm(app) => Some(app.compile_cache()),
        }
    }

    /// Serves on `listener` until a stop is requested through `control`, then drains in-flight
    /// requests for up to the requested grace period.
    pub async fn serve(self, listener: TcpListener, control: Arc<ControlState>) {
        match self {
            LoadedApp::Wasm(app) => Arc::new(app).serve(listener, control).await,
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
        other => Err(LoadError::Unsupported(other)),
    }
}

/// The per-request deadline of a spec, never zero.
pub fn request_deadline(spec: &RunnerSpec) -> Duration {
    Duration::from_millis(spec.request_deadline_ms.max(1))
}
