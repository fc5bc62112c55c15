//! Downloading from the release server: the manifest, and files streamed to disk while their
//! sha256 is computed. A file that is longer than the manifest says, shorter, or hashes
//! differently is refused and removed; nothing is ever installed from an unverified download.

use crate::manifest::{FileEntry, MANIFEST_FILE, MANIFEST_MAX_BYTES, ReleaseManifest};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("release URL {0:?} is not an http:// or https:// URL")]
    BadUrl(String),
    #[error("cannot fetch {url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url} sent more than {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("{url} sent {got} bytes; the manifest says {expected}")]
    ShortRead {
        url: String,
        got: u64,
        expected: u64,
    },
    #[error(
        "sha256 mismatch for {name} from {url}: the manifest says {expected}, the download is {actual}"
    )]
    Sha256Mismatch {
        name: String,
        url: String,
        expected: String,
        actual: String,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
}

/// An HTTP client bound to one release URL.
#[derive(Debug, Clone)]
pub struct ReleaseServer {
    base: reqwest::Url,
    http: reqwest::Client,
}

impl ReleaseServer {
    /// `base` is the release URL; `manifest.json` and every file path are resolved under it.
    pub fn new(base: &str) -> Result<Self, DownloadError> {
        let mut url =
            reqwest::Url::parse(base).map_err(|_| DownloadError::BadUrl(base.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(DownloadError::BadUrl(base.to_string()));
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("tabbify-updater/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| DownloadError::Transport {
                url: base.to_string(),
                source,
            })?;
        Ok(Self { base: url, http })
    }

    pub fn base(&self) -> &str {
        self.base.as_str()
    }

    fn url_of(&self, path: &str) -> Result<reqwest::Url, DownloadError> {
        // Paths are validated plain segments, so joining cannot leave the base.
        self.base
            .join(path)
            .map_err(|_| DownloadError::BadUrl(format!("{}{path}", self.base)))
    }

    /// Fetches and checks the manifest.
    pub async fn manifest(&self) -> Result<ReleaseManifest, DownloadError> {
        let url = self.url_of(MANIFEST_FILE)?;
        let mut resp = self.get(&url).await?;
        let mut body = Vec::new();
        while let Some(chunk) = next_chunk(&mut resp, &url).await? {
            body.extend_from_slice(&chunk);
            if body.len() as u64 > MANIFEST_MAX_BYTES {
                return Err(DownloadError::TooLarge {
                    url: url.to_string(),
                    limit: MANIFEST_MAX_BYTES,
                });
            }
        }
        Ok(ReleaseManifest::parse(&body)?)
    }

    /// Downloads `entry` to `dest` (created with `mode`), verifying size and sha256 on the way.
    /// On any failure `dest` is removed.
    pub async fn download(
        &self,
        entry: &FileEntry,
        dest: &Path,
        mode: u32,
    ) -> Result<(), DownloadError> {
        let result = self.download_inner(entry, dest, mode).await;
        if result.is_err() {
            let _ = std::fs::remove_file(dest);
        }
        result
    }

    async fn download_inner(
        &self,
        entry: &FileEntry,
        dest: &Path,
        mode: u32,
    ) -> Result<(), DownloadError> {
        use std::os::unix::fs::OpenOptionsExt;
        let url = self.url_of(&entry.path)?;
        let write_err = |source| DownloadError::Write {
            path: dest.to_path_buf(),
            source,
        };
        let mut resp = self.get(&url).await?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(dest)
            .map_err(write_err)?;
        let mut hasher = Sha256::new();
        let mut got: u64 = 0;
        while let Some(chunk) = next_chunk(&mut resp, &url).await? {
            got += chunk.len() as u64;
            if got > entry.size {
                return Err(DownloadError::TooLarge {
                    url: url.to_string(),
                    limit: entry.size,
                });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).map_err(write_err)?;
        }
        if got != entry.size {
            return Err(DownloadError::ShortRead {
                url: url.to_string(),
                got,
                expected: entry.size,
            });
        }
        let actual = hex::encode(hasher.finalize());
        if actual != entry.sha256 {
            return Err(DownloadError::Sha256Mismatch {
                name: entry.name.clone(),
                url: url.to_string(),
                expected: entry.sha256.clone(),
                actual,
            });
        }
        file.sync_all().map_err(write_err)?;
        Ok(())
    }

    async fn get(&self, url: &reqwest::Url) -> Result<reqwest::Response, DownloadError> {
        let resp =
            self.http
                .get(url.clone())
                .send()
                .await
                .map_err(|source| DownloadError::Transport {
                    url: url.to_string(),
                    source,
                })?;
        if !resp.status().is_success() {
            return Err(DownloadError::Status {
                url: url.to_string(),
                status: resp.status().as_u16(),
            });
        }
        Ok(resp)
    }
}

async fn next_chunk(
    resp: &mut reqwest::Response,
    url: &reqwest::Url,
) -> Result<Option<bytes::Bytes>, DownloadError> {
    resp.chunk()
        .await
        .map_err(|source| DownloadError::Transport {
            url: url.to_string(),
            source,
        })
}

/// sha256 of a file on disk, hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut f, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_urls_get_a_trailing_slash_and_must_be_http() {
        let s = ReleaseServer::new("https://releases.example/tabbify").unwrap();
        assert_eq!(s.base(), "https://releases.example/tabbify/");
        assert_eq!(
            s.url_of("0.2.0/tabbify-supervisor").unwrap().as_str(),
            "https://releases.example/tabbify/0.2.0/tabbify-supervisor"
        );
        for bad in ["ftp://x/", "not a url", "file:///etc/"] {
            assert!(
                matches!(ReleaseServer::new(bad), Err(DownloadError::BadUrl(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn sha256_of_a_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"test").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }
}
