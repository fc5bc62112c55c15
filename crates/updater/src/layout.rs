//! Where releases live under the node's state directory, and the few moves that change which one
//! runs. Every move is a rename inside one file system followed by an fsync of the directory, so
//! a crash leaves either the old arrangement or the new one:
//!
//! ```text
//! <root>/releases/<version>/      complete, verified releases (never edited in place)
//! <root>/current -> releases/<v>  what the units start; swapped by renaming a new symlink over it
//! <root>/quarantine/<version>/    releases that failed their check or their health gate
//! <root>/kernels/<name>           the microVM guest kernel
//! <root>/.staging/                downloads in progress (removed when done or failed)
//! <root>/.release.lock            held while tabbify-fetch or tabbify-update works
//! ```

use crate::manifest::check_version;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "another tabbify-fetch or tabbify-update holds {0}; wait for it to finish (or remove the \
         file if no such process runs)"
    )]
    Busy(PathBuf),
    #[error("{path} points at {target:?}, which is not releases/<version>")]
    StrangeCurrent { path: PathBuf, target: PathBuf },
    #[error("release {0} is not installed")]
    NotInstalled(String),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LayoutError + 'a {
    move |source| LayoutError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The install root (normally `/var/lib/tabbify`, the supervisor's state directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

/// Held while a fetch or update works on the layout; released on drop.
#[derive(Debug)]
pub struct LayoutLock {
    _lock: Flock<File>,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn releases_dir(&self) -> PathBuf {
        self.root.join("releases")
    }

    pub fn release_dir(&self, version: &str) -> PathBuf {
        self.releases_dir().join(version)
    }

    pub fn current_link(&self) -> PathBuf {
        self.root.join("current")
    }

    pub fn quarantine_dir(&self, version: &str) -> PathBuf {
        self.root.join("quarantine").join(version)
    }

    pub fn kernels_dir(&self) -> PathBuf {
        self.root.join("kernels")
    }

    pub fn staging_dir(&self) -> PathBuf {
        self.root.join(".staging")
    }

    /// Creates the directories (0700 root: the state directory also holds the mesh key).
    pub fn ensure(&self) -> Result<(), LayoutError> {
        tabbify_fsutil::ensure_dir(&self.root, 0o700).map_err(io_err("creating", &self.root))?;
        for dir in [self.releases_dir(), self.kernels_dir(), self.staging_dir()] {
            tabbify_fsutil::ensure_dir(&dir, 0o755).map_err(io_err("creating", &dir))?;
        }
        Ok(())
    }

    /// Takes the exclusive lock without waiting.
    pub fn lock(&self) -> Result<LayoutLock, LayoutError> {
        let path = self.root.join(".release.lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("opening", &path))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(LayoutLock { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(LayoutError::Busy(path)),
            Err((_, e)) => Err(LayoutError::Io {
                what: "locking",
                path,
                source: e.into(),
            }),
        }
    }

    /// The version `current` points at, if any.
    pub fn current_version(&self) -> Result<Option<String>, LayoutError> {
        let link = self.current_link();
        let target = match std::fs::read_link(&link) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("reading the link", &link)(e)),
        };
        let version = target
            .strip_prefix("releases")
            .ok()
            .and_then(|rest| rest.to_str())
            .filter(|v| check_version(v).is_ok())
            .map(str::to_string);
        match version {
            Some(v) => Ok(Some(v)),
            None => Err(LayoutError::StrangeCurrent { path: link, target }),
        }
    }

    pub fn is_installed(&self, version: &str) -> bool {
        self.release_dir(version).is_dir()
    }

    pub fn is_quarantined(&self, version: &str) -> bool {
        self.quarantine_dir(version).exists()
    }

    /// Points `current` at `releases/<version>` atomically: a new relative symlink is renamed
    /// over the old one, then the directory is synced.
    pub fn switch_current(&self, version: &str) -> Result<(), LayoutError> {
        if !self.is_installed(version) {
            return Err(LayoutError::NotInstalled(version.to_string()));
        }
        let link = self.current_link();
        let tmp = self
            .root
            .join(format!(".current.tmp-{:016x}", rand::random::<u64>()));
        let target = Path::new("releases").join(version);
        symlink(&target, &tmp).map_err(io_err("creating the link", &tmp))?;
        if let Err(e) = std::fs::rename(&tmp, &link) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err("replacing", &link)(e));
        }
        sync_dir(&self.root)
    }

    /// Moves a release out of `releases/` into `quarantine/`, with the reason beside it. A
    /// quarantined version is never installed again unless the operator removes it.
    pub fn quarantine(&self, version: &str, reason: &str) -> Result<PathBuf, LayoutError> {
        let from = self.release_dir(version);
        let to = self.quarantine_dir(version);
        let parent = self.root.join("quarantine");
        tabbify_fsutil::ensure_dir(&parent, 0o755).map_err(io_err("creating", &parent))?;
        if to.exists() {
            // An older quarantine of the same version: keep the newest evidence.
            std::fs::remove_dir_all(&to).map_err(io_err("removing", &to))?;
        }
        if from.is_dir() {
            std::fs::rename(&from, &to).map_err(io_err("moving to quarantine", &from))?;
        } else {
            std::fs::create_dir(&to).map_err(io_err("creating", &to))?;
        }
        let reason_file = to.join("QUARANTINED");
        tabbify_fsutil::atomic_write(&reason_file, format!("{reason}\n").as_bytes(), 0o644)
            .map_err(io_err("writing", &reason_file))?;
        sync_dir(&self.releases_dir())?;
        sync_dir(&parent)?;
        Ok(to)
    }

    /// Installed versions, sorted by name.
    pub fn installed(&self) -> Result<Vec<String>, LayoutError> {
        let dir = self.releases_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("listing", &dir)(e)),
        };
        let mut out: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|v| check_version(v).is_ok())
            .collect();
        out.sort();
        Ok(out)
    }

    /// Removes installed releases other than `keep` (the current and the previous one).
    pub fn prune(&self, keep: &[&str]) -> Result<Vec<String>, LayoutError> {
        let mut removed = Vec::new();
        for v in self.installed()? {
            if keep.contains(&v.as_str()) {
                continue;
            }
            let dir = self.release_dir(&v);
            std::fs::remove_dir_all(&dir).map_err(io_err("removing", &dir))?;
            removed.push(v);
        }
        Ok(removed)
    }
}

/// fsync a directory so a rename in it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), LayoutError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_err("syncing", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout_with(versions: &[&str]) -> (tempfile::TempDir, Layout) {
        let d = tempfile::tempdir().unwrap();
        let l = Layout::new(d.path());
        l.ensure().unwrap();
        for v in versions {
            std::fs::create_dir(l.release_dir(v)).unwrap();
            std::fs::write(l.release_dir(v).join("tabbify-supervisor"), v).unwrap();
        }
        (d, l)
    }

    #[test]
    fn switching_current_replaces_the_link_and_leaves_no_temporaries() {
        let (_d, l) = layout_with(&["0.1.0", "0.2.0"]);
        assert_eq!(l.current_version().unwrap(), None);
        l.switch_current("0.1.0").unwrap();
        assert_eq!(l.current_version().unwrap().as_deref(), Some("0.1.0"));
        l.switch_current("0.2.0").unwrap();
        assert_eq!(l.current_version().unwrap().as_deref(), Some("0.2.0"));
        let through_link =
            std::fs::read_to_string(l.current_link().join("tabbify-supervisor")).unwrap();
        assert_eq!(through_link, "0.2.0");
        let strays: Vec<_> = std::fs::read_dir(l.root())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(strays.is_empty(), "{strays:?}");
    }

    #[test]
    fn switching_to_a_missing_release_changes_nothing() {
        let (_d, l) = layout_with(&["0.1.0"]);
        l.switch_current("0.1.0").unwrap();
        assert!(matches!(
            l.switch_current("0.3.0"),
            Err(LayoutError::NotInstalled(_))
        ));
        assert_eq!(l.current_version().unwrap().as_deref(), Some("0.1.0"));
    }

    #[test]
    fn a_current_link_pointing_elsewhere_is_reported() {
        let (_d, l) = layout_with(&[]);
        symlink("/usr/bin", l.current_link()).unwrap();
        assert!(matches!(
            l.current_version(),
            Err(LayoutError::StrangeCurrent { .. })
        ));
    }

    #[test]
    fn quarantine_moves_the_release_and_records_why() {
        let (_d, l) = layout_with(&["0.1.0", "0.2.0"]);
        let q = l.quarantine("0.2.0", "health check failed").unwrap();
        assert!(!l.is_installed("0.2.0"));
        assert!(l.is_quarantined("0.2.0"));
        assert_eq!(
            std::fs::read_to_string(q.join("QUARANTINED")).unwrap(),
            "health check failed\n"
        );
        assert_eq!(
            std::fs::read_to_string(q.join("tabbify-supervisor")).unwrap(),
            "0.2.0"
        );
        assert_eq!(l.installed().unwrap(), ["0.1.0"]);
    }

    #[test]
    fn prune_keeps_what_it_is_told_to() {
        let (_d, l) = layout_with(&["0.1.0", "0.2.0", "0.3.0"]);
        let removed = l.prune(&["0.3.0", "0.2.0"]).unwrap();
        assert_eq!(removed, ["0.1.0"]);
        assert_eq!(l.installed().unwrap(), ["0.2.0", "0.3.0"]);
    }

    #[test]
    fn the_lock_is_exclusive() {
        let (_d, l) = layout_with(&[]);
        let held = l.lock().unwrap();
        assert!(matches!(l.lock(), Err(LayoutError::Busy(_))));
        drop(held);
        l.lock().unwrap();
    }
}
