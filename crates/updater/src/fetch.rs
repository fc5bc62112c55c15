//! Installing a release into the layout: every file is downloaded into a fresh staging directory
//! and verified, and only a complete, verified directory is renamed to `releases/<version>`. A
//! sha256 mismatch or a broken connection leaves `releases/` and `current` exactly as they were.
//! The guest kernel goes the same way, one file, into `kernels/`.

use crate::download::{DownloadError, ReleaseServer, sha256_file};
use crate::layout::{Layout, LayoutError, sync_dir};
use crate::manifest::{FileEntry, Release};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Download(#[from] DownloadError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "release {version} is quarantined ({reason}); remove {path} to allow installing it again"
    )]
    Quarantined {
        version: String,
        reason: String,
        path: PathBuf,
    },
    #[error(
        "{path} exists but does not match the manifest ({detail}); it was left untouched — \
         remove it to reinstall"
    )]
    InstalledDiffers { path: PathBuf, detail: String },
}

/// What [`install_release`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// Downloaded, verified and moved into `releases/`.
    Fresh,
    /// Already there with the manifest's hashes: nothing downloaded.
    AlreadyPresent,
}

/// Downloads and verifies `release` into `releases/<version>` (does not touch `current`).
pub async fn install_release(
    server: &ReleaseServer,
    layout: &Layout,
    release: &Release,
) -> Result<Installed, FetchError> {
    let version = &release.version;
    if layout.is_quarantined(version) {
        let path = layout.quarantine_dir(version);
        let reason = std::fs::read_to_string(path.join("QUARANTINED"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "no reason recorded".into());
        return Err(FetchError::Quarantined {
            version: version.clone(),
            reason,
            path,
        });
    }
    let dest = layout.release_dir(version);
    if dest.exists() {
        verify_installed(&dest, &release.files)?;
        return Ok(Installed::AlreadyPresent);
    }
    let staging = tempfile::Builder::new()
        .prefix(&format!("{version}-"))
        .tempdir_in(layout.staging_dir())
        .map_err(|source| FetchError::Io {
            what: "creating a staging directory in",
            path: layout.staging_dir(),
            source,
        })?;
    for entry in &release.files {
        let path = staging.path().join(&entry.name);
        tracing::info!(file = %entry.name, size = entry.size, "downloading");
        server.download(entry, &path, 0o755).await?;
    }
    sync_dir(staging.path())?;
    // The rename is the commit point: before it nothing is installed, after it all is.
    let staged = staging.keep();
    if let Err(source) = std::fs::rename(&staged, &dest) {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(FetchError::Io {
            what: "moving the verified release to",
            path: dest,
            source,
        });
    }
    sync_dir(&layout.releases_dir())?;
    tracing::info!(%version, path = %dest.display(), "release installed");
    Ok(Installed::Fresh)
}

/// Downloads the guest kernel to `kernels/<name>` unless a file with its hash is already there.
/// Returns the kernel's path.
pub async fn install_kernel(
    server: &ReleaseServer,
    layout: &Layout,
    kernel: &FileEntry,
) -> Result<(PathBuf, Installed), FetchError> {
    let dest = layout.kernels_dir().join(&kernel.name);
    if dest.is_file() && sha256_of(&dest)? == kernel.sha256 {
        return Ok((dest, Installed::AlreadyPresent));
    }
    let tmp = layout
        .staging_dir()
        .join(format!("{}.{:016x}", kernel.name, rand::random::<u64>()));
    server.download(kernel, &tmp, 0o644).await?;
    if let Err(source) = std::fs::rename(&tmp, &dest) {
        let _ = std::fs::remove_file(&tmp);
        return Err(FetchError::Io {
            what: "moving the verified kernel to",
            path: dest,
            source,
        });
    }
    sync_dir(&layout.kernels_dir())?;
    tracing::info!(path = %dest.display(), "guest kernel installed");
    Ok((dest, Installed::Fresh))
}

fn verify_installed(dir: &Path, files: &[FileEntry]) -> Result<(), FetchError> {
    for entry in files {
        let path = dir.join(&entry.name);
        if !path.is_file() {
            return Err(FetchError::InstalledDiffers {
                path: dir.to_path_buf(),
                detail: format!("{} is missing", entry.name),
            });
        }
        let actual = sha256_of(&path)?;
        if actual != entry.sha256 {
            return Err(FetchError::InstalledDiffers {
                path: dir.to_path_buf(),
                detail: format!(
                    "{} has sha256 {actual}, the manifest says {}",
                    entry.name, entry.sha256
                ),
            });
        }
    }
    Ok(())
}

fn sha256_of(path: &Path) -> Result<String, FetchError> {
    sha256_file(path).map_err(|source| FetchError::Io {
        what: "hashing",
        path: path.to_path_buf(),
        source,
    })
}
