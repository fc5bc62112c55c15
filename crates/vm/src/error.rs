//! The one error type of the microVM runtime. Each variant says which part failed and carries what
//! an operator needs to act on it (the path, the tool's stderr, the guest's last console lines).

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The image could not be read, or is not what it claims to be (corrupt, wrong digest, a
    /// layer entry escaping the root, an unsupported format).
    #[error("image {path}: {reason}")]
    Image { path: PathBuf, reason: String },
    /// The app's command, environment or user cannot be run as given.
    #[error("app: {0}")]
    App(String),
    /// A file the VM needs is missing.
    #[error("{what} {path} is missing or not a regular file")]
    Missing { what: &'static str, path: PathBuf },
    /// The VM spec is not valid.
    #[error("invalid VM spec: {0}")]
    Spec(String),
    /// An external tool (mkfs.ext4, debugfs, e2fsck) failed.
    #[error("{tool} failed ({status}): {stderr}")]
    Tool {
        tool: String,
        status: String,
        stderr: String,
    },
    /// The VMM process could not be started or misbehaved.
    #[error("{vmm}: {detail}")]
    Vmm { vmm: &'static str, detail: String },
    /// Firecracker's API refused a request.
    #[error("firecracker API {method} {path} answered {status}: {message}")]
    FirecrackerApi {
        method: String,
        path: String,
        status: u16,
        message: String,
    },
    /// The guest powered off (or its VMM exited) before the app was ready.
    #[error("the guest stopped before it was ready: {reason}; last console lines:\n{console}")]
    GuestExited { reason: String, console: String },
    /// Something did not happen in time.
    #[error("timed out after {after:?} waiting for {what}; last console lines:\n{console}")]
    Timeout {
        what: String,
        after: Duration,
        console: String,
    },
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = VmError> = std::result::Result<T, E>;

/// Adds what was being done to an `io::Error`.
pub trait IoContext<T> {
    fn io_ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io_ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| VmError::Io {
            context: context(),
            source,
        })
    }
}

impl VmError {
    pub(crate) fn image(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        VmError::Image {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
