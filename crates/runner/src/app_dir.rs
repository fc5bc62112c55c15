//! The app directory the supervisor prepares for a runner: where the spec, the pid file and the
//! runner's own output live, and the atomic writes that keep them whole after a crash.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use tabbify_wire::runner::{PID_FILE, RUNNER_OUTPUT_FILE, RunnerSpec, SPEC_FILE};

/// Why an app directory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum AppDirError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is not a valid runner spec: {source}")]
    Spec {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// One app's directory on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppDir {
    root: PathBuf,
}

impl AppDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn spec_path(&self) -> PathBuf {
        self.root.join(SPEC_FILE)
    }

    pub fn pid_path(&self) -> PathBuf {
        self.root.join(PID_FILE)
    }

    /// Where a detached runner's stdout and stderr go.
    pub fn output_path(&self) -> PathBuf {
        self.root.join(RUNNER_OUTPUT_FILE)
    }

    pub fn read_spec(&self) -> Result<RunnerSpec, AppDirError> {
        let path = self.spec_path();
        let text = fs::read(&path).map_err(|source| AppDirError::Read {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|source| AppDirError::Spec { path, source })
    }

    /// Writes `spec.json` atomically (the supervisor's side; tests use it too).
    pub fn write_spec(&self, spec: &RunnerSpec) -> Result<(), AppDirError> {
        let path = self.spec_path();
        let json = serde_json::to_vec_pretty(spec).map_err(|e| AppDirError::Write {
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        write_atomic(&path, &json).map_err(|source| AppDirError::Write { path, source })
    }

    pub fn write_pid(&self, pid: u32) -> Result<(), AppDirError> {
        let path = self.pid_path();
        write_atomic(&path, format!("{pid}\n").as_bytes())
            .map_err(|source| AppDirError::Write { path, source })
    }

    /// The pid the runner recorded, if the file is there and well-formed.
    pub fn read_pid(&self) -> Option<u32> {
        fs::read_to_string(self.pid_path())
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

/// Replaces `path` with `bytes` so that a reader sees the old content or the new, never a mix:
/// write a temporary file beside it, fsync it, rename it over, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn pid_file_round_trips_and_tolerates_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let app = AppDir::new(dir.path());
        assert_eq!(app.read_pid(), None);
        app.write_pid(4242).unwrap();
        assert_eq!(app.read_pid(), Some(4242));
        fs::write(app.pid_path(), "not a pid").unwrap();
        assert_eq!(app.read_pid(), None);
    }

    #[test]
    fn bad_spec_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let app = AppDir::new(dir.path());
        let missing = app.read_spec().unwrap_err();
        assert!(missing.to_string().contains("spec.json"), "{missing}");
        fs::write(app.spec_path(), "{\"app_id\": 1}").unwrap();
        let bad = app.read_spec().unwrap_err();
        assert!(matches!(bad, AppDirError::Spec { .. }), "{bad}");
    }
}
