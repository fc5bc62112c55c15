//! Getting an assigned app's artifact onto this node: download it from the appsrv the assignment
//! names into `<data-dir>/cache/artifacts` (resuming a cut download, see
//! [`tabbify_appsrv::fetch`]), verify its digest, and turn it with the manifest into the same
//! [`Upload`] a deploy through the control API makes. Bytes whose digest does not match are never
//! handed on: the fetcher discards them, and a cached file that no longer matches (changed on
//! disk) is removed and refused.

use crate::apps::AppError;
use crate::apps::upload::{self, Upload};
use axum::body::Bytes;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tabbify_appsrv::{BlobFetcher, FetchError};
use tabbify_wire::app::ArtifactDigest;

/// The digest of zero bytes: a docker app deployed without an image tarball.
pub const EMPTY_DIGEST: &str =
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The node's artifact cache. Cheap to clone; downloads of one digest are serialised (they
/// share one partial file).
#[derive(Clone)]
pub struct ArtifactCache {
    fetcher: BlobFetcher,
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl ArtifactCache {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            fetcher: BlobFetcher::new(&data_dir.join("cache").join("artifacts"))
                .trusting_ca_file(&data_dir.join(crate::node_tls::CA_FILE)),
            locks: Arc::default(),
        }
    }

    fn lock_for(&self, digest: &ArtifactDigest) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(digest.hex().to_string()).or_default().clone()
    }

    /// Fetches (or finds in the cache) the artifact `digest` from the appsrv at `appsrv`,
    /// verifies it, and checks `manifest_text` against it.
    pub async fn prepare(
        &self,
        manifest_text: &str,
        digest: &ArtifactDigest,
        appsrv: &str,
    ) -> Result<Upload, AppError> {
        if digest.as_str() == EMPTY_DIGEST {
            return upload::check(manifest_text, None);
        }
        let lock = self.lock_for(digest);
        let _held = lock.lock().await;
        let fetched = self
            .fetcher
            .fetch(appsrv, digest)
            .await
            .map_err(|e| fetch_error(e, digest))?;
        if fetched.downloaded > 0 {
            tracing::info!(%digest, bytes = fetched.downloaded, resumed_from = fetched.resumed_from, "fetched the artifact");
        }
        let bytes = tokio::fs::read(&fetched.path).await.map_err(|e| {
            AppError::Internal(format!(
                "cannot read the cached artifact {}: {e}",
                fetched.path.display()
            ))
        })?;
        let up = upload::check(manifest_text, Some(Bytes::from(bytes)))?;
        if up.digest != *digest {
            // The file changed after it was verified: never run it, fetch again next time.
            let _ = tokio::fs::remove_file(&fetched.path).await;
            return Err(AppError::InvalidArtifact(format!(
                "the cached artifact for {digest} now hashes to {}; it was removed and will be fetched again",
                up.digest
            )));
        }
        Ok(up)
    }
}

fn fetch_error(e: FetchError, digest: &ArtifactDigest) -> AppError {
    match e {
        FetchError::Mismatch { .. } => AppError::InvalidArtifact(format!(
            "artifact {digest}: {e}; the app does not run from bytes that do not match"
        )),
        FetchError::Status { status: 404, .. } => AppError::NotFound(format!(
            "artifact {digest} is not on the appsrv: {e} (upload it with `tcli deploy`)"
        )),
        FetchError::Io { .. } => AppError::Internal(format!("artifact {digest}: {e}")),
        FetchError::Transport { .. } | FetchError::Status { .. } => {
            AppError::Unavailable(format!("artifact {digest}: {e}"))
        }
    }
}
