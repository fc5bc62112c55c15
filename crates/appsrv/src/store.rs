//! Blobs on disk: `<dir>/sha256/<hex>`, written through a temporary file that is hashed as it is
//! written and renamed into place only when the digest matches. A crash mid-upload leaves only a
//! temporary file, which the next start removes.

use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tabbify_wire::app::ArtifactDigest;
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("upload is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("upload hashes to {actual}, not {expected}; nothing was stored")]
    Mismatch {
        expected: ArtifactDigest,
        actual: String,
    },
    #[error("upload was interrupted: {0}")]
    Body(String),
    #[error("storage error at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    /// The blob was already there (uploads are idempotent).
    Existed,
}

#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
    max_bytes: u64,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl BlobStore {
    /// Opens (creating) the store and clears temporary files left by a crash.
    pub fn open(root: &Path, max_bytes: u64) -> Result<Self, StoreError> {
        let store = Self {
            root: root.to_path_buf(),
            max_bytes,
        };
        for dir in [store.blob_dir(), store.tmp_dir()] {
            std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        let tmp = store.tmp_dir();
        for entry in std::fs::read_dir(&tmp).map_err(io_err(&tmp))?.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        Ok(store)
    }

    /// The directory holding one file per blob.
    pub fn blob_dir(&self) -> PathBuf {
        self.root.join("sha256")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Where the blob lives (whether or not it exists).
    pub fn path_of(&self, digest: &ArtifactDigest) -> PathBuf {
        self.blob_dir().join(digest.hex())
    }

    pub fn contains(&self, digest: &ArtifactDigest) -> bool {
        self.path_of(digest).is_file()
    }

    /// Streams an upload into the store, verifying it against `digest`.
    pub async fn put<S, B, E>(
        &self,
        digest: &ArtifactDigest,
        mut body: S,
    ) -> Result<PutOutcome, StoreError>
    where
        S: Stream<Item = Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let tmp = self
            .tmp_dir()
            .join(format!("{}.{:016x}", digest.hex(), rand::random::<u64>()));
        let result = async {
            let mut file = tokio::fs::File::create(&tmp).await.map_err(io_err(&tmp))?;
            let mut hasher = Sha256::new();
            let mut written: u64 = 0;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| StoreError::Body(e.to_string()))?;
                let bytes = chunk.as_ref();
                written += bytes.len() as u64;
                if written > self.max_bytes {
                    return Err(StoreError::TooLarge {
                        limit: self.max_bytes,
                    });
                }
                hasher.update(bytes);
                file.write_all(bytes).await.map_err(io_err(&tmp))?;
            }
            let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
            if actual != digest.as_str() {
                return Err(StoreError::Mismatch {
                    expected: digest.clone(),
                    actual,
                });
            }
            file.sync_all().await.map_err(io_err(&tmp))?;
            let dest = self.path_of(digest);
            if dest.is_file() {
                return Ok(PutOutcome::Existed);
            }
            tokio::fs::rename(&tmp, &dest)
                .await
                .map_err(io_err(&dest))?;
            let dir = self.blob_dir();
            std::fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(&dir))?;
            Ok(PutOutcome::Created)
        }
        .await;
        let _ = tokio::fs::remove_file(&tmp).await;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;

    fn chunks(data: &[u8]) -> impl Stream<Item = Result<Vec<u8>, String>> + Unpin {
        stream::iter(data.chunks(3).map(|c| Ok(c.to_vec())).collect::<Vec<_>>())
    }

    #[tokio::test]
    async fn stores_verified_blobs_idempotently() {
        let d = tempfile::tempdir().unwrap();
        let store = BlobStore::open(d.path(), 1 << 20).unwrap();
        let data = b"hello artifact";
        let digest = crate::digest_of(data);
        assert_eq!(
            store.put(&digest, chunks(data)).await.unwrap(),
            PutOutcome::Created
        );
        assert_eq!(
            store.put(&digest, chunks(data)).await.unwrap(),
            PutOutcome::Existed
        );
        assert_eq!(std::fs::read(store.path_of(&digest)).unwrap(), data);
        assert_eq!(std::fs::read_dir(d.path().join("tmp")).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn refuses_mismatch_and_oversize_leaving_nothing() {
        let d = tempfile::tempdir().unwrap();
        let store = BlobStore::open(d.path(), 8).unwrap();
        let wrong = crate::digest_of(b"other");
        let err = store.put(&wrong, chunks(b"short")).await.unwrap_err();
        assert!(matches!(err, StoreError::Mismatch { .. }), "{err}");
        assert!(!store.contains(&wrong));
        let big = b"more than eight bytes";
        let err = store
            .put(&crate::digest_of(big), chunks(big))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::TooLarge { limit: 8 }));
        assert_eq!(std::fs::read_dir(d.path().join("tmp")).unwrap().count(), 0);
        assert_eq!(
            std::fs::read_dir(d.path().join("sha256")).unwrap().count(),
            0
        );
    }
}
