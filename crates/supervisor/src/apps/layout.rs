//! Where an app's files live in the data directory:
//!
//! ```text
//! <data-dir>/apps/<app-id>/record.json     the supervisor's record (atomic writes)
//! <data-dir>/apps/<app-id>/app.log         the app's log, across versions and restarts (+ .1, .2)
//! <data-dir>/apps/<app-id>/v<N>/           one deployed version: the runner's app directory
//!     app.wasm (or image.tar)  spec.json  runner.pid  runner.sock  runner.out
//! <data-dir>/cache/wasm/                   compiled components, shared by every runner
//! ```
//!
//! A version has its own directory so that during a redeploy two runners (old and new) never
//! share a socket or a pid file.

use std::path::{Path, PathBuf};
use tabbify_wire::app::{AppId, RuntimeKind};
use tabbify_wire::runner::{PID_FILE, RUNNER_OUTPUT_FILE, SPEC_FILE};

pub const RECORD_FILE: &str = "record.json";
pub const LOG_FILE: &str = "app.log";
pub const ARTIFACT_FILE: &str = "app.wasm";
/// A docker app's artifact: the `docker save` tarball of its image, when one was deployed.
pub const IMAGE_TARBALL_FILE: &str = "image.tar";
/// A microVM app's artifact: its image tarball or ext4 root filesystem.
pub const VM_ARTIFACT_FILE: &str = "vm-artifact";
pub const SOCKET_FILE: &str = "runner.sock";
/// Longest unix socket path the kernel takes (`sun_path` is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, Clone)]
pub struct Layout {
    apps: PathBuf,
    cache: PathBuf,
}

impl Layout {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            apps: data_dir.join("apps"),
            cache: data_dir.join("cache").join("wasm"),
        }
    }

    pub fn apps_dir(&self) -> &Path {
        &self.apps
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    pub fn app_dir(&self, id: &AppId) -> PathBuf {
        self.apps.join(id.as_str())
    }

    pub fn record(&self, id: &AppId) -> PathBuf {
        self.app_dir(id).join(RECORD_FILE)
    }

    pub fn log_file(&self, id: &AppId) -> PathBuf {
        self.app_dir(id).join(LOG_FILE)
    }

    pub fn version_dir(&self, id: &AppId, version: u32) -> PathBuf {
        self.app_dir(id).join(format!("v{version}"))
    }

    pub fn artifact(&self, id: &AppId, version: u32) -> PathBuf {
        self.version_dir(id, version).join(ARTIFACT_FILE)
    }

    /// Where the artifact of an app of `kind` goes (a docker app's image tarball is `image.tar`, a
    /// microVM app's image tarball or ext4 filesystem `vm-artifact`).
    pub fn artifact_for(&self, id: &AppId, version: u32, kind: RuntimeKind) -> PathBuf {
        match kind {
            RuntimeKind::Docker => self.version_dir(id, version).join(IMAGE_TARBALL_FILE),
            RuntimeKind::Firecracker => self.version_dir(id, version).join(VM_ARTIFACT_FILE),
            _ => self.artifact(id, version),
        }
    }

    pub fn spec(&self, id: &AppId, version: u32) -> PathBuf {
        self.version_dir(id, version).join(SPEC_FILE)
    }

    pub fn socket(&self, id: &AppId, version: u32) -> PathBuf {
        self.version_dir(id, version).join(SOCKET_FILE)
    }

    pub fn pid_file(&self, id: &AppId, version: u32) -> PathBuf {
        self.version_dir(id, version).join(PID_FILE)
    }

    pub fn runner_output(&self, id: &AppId, version: u32) -> PathBuf {
        self.version_dir(id, version).join(RUNNER_OUTPUT_FILE)
    }

    /// Whether the socket of `id` fits a unix socket address; a deep data directory may not.
    pub fn check_socket_path(&self, id: &AppId, version: u32) -> Result<(), String> {
        let path = self.socket(id, version);
        let len = path.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(format!(
                "the runner socket path {} is {len} bytes, longer than the {MAX_SOCKET_PATH} a unix socket takes; use a shorter --data-dir",
                path.display()
            ));
        }
        Ok(())
    }

    /// The version directories present for `id` (`v<N>`), in no particular order.
    pub fn versions_on_disk(&self, id: &AppId) -> Vec<u32> {
        let Ok(dir) = std::fs::read_dir(self.app_dir(id)) else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_prefix('v')?.parse().ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_documented_layout() {
        let l = Layout::new(Path::new("/var/lib/tabbify"));
        let id = AppId::new("hello-0a1b2c3d").unwrap();
        assert_eq!(
            l.record(&id),
            Path::new("/var/lib/tabbify/apps/hello-0a1b2c3d/record.json")
        );
        assert_eq!(
            l.socket(&id, 3),
            Path::new("/var/lib/tabbify/apps/hello-0a1b2c3d/v3/runner.sock")
        );
        assert_eq!(
            l.pid_file(&id, 3),
            Path::new("/var/lib/tabbify/apps/hello-0a1b2c3d/v3/runner.pid")
        );
        assert_eq!(l.cache_dir(), Path::new("/var/lib/tabbify/cache/wasm"));
        assert!(l.check_socket_path(&id, 3).is_ok());
        let deep = Layout::new(&Path::new("/").join("d".repeat(80)));
        let err = deep.check_socket_path(&id, 3).unwrap_err();
        assert!(err.contains("shorter --data-dir"), "{err}");
    }

    #[test]
    fn finds_version_directories() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::new(dir.path());
        let id = AppId::new("a-1").unwrap();
        for v in ["v1", "v12", "vx", "logs"] {
            std::fs::create_dir_all(l.app_dir(&id).join(v)).unwrap();
        }
        let mut versions = l.versions_on_disk(&id);
        versions.sort();
        assert_eq!(versions, vec![1, 12]);
    }
}
