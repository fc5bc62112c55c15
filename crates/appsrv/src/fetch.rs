//! The node's side: get a blob from an appsrv into a local cache, resuming a partial download
//! with a range request, and verifying the digest before the blob is moved where anything may
//! run it. A blob whose bytes do not match is deleted, never used.

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tabbify_wire::app::ArtifactDigest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot download {url}: {detail}")]
    Transport { url: String, detail: String },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("downloaded bytes hash to {actual}, not {expected}; the download was discarded")]
    Mismatch {
        expected: ArtifactDigest,
        actual: String,
    },
    #[error("cache error at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `err` and its causes, `: `-separated: reqwest's own text hides why a TLS connection failed.
fn with_causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// What a fetch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub path: PathBuf,
    /// Bytes that came over the network in this call (0 when cached).
    pub downloaded: u64,
    /// Bytes of an earlier partial download that were kept.
    pub resumed_from: u64,
}

#[derive(Debug, Clone)]
pub struct BlobFetcher {
    cache: PathBuf,
    http: reqwest::Client,
    /// The mesh CA (PEM), trusted besides the public roots for `https://` appsrvs. Read at each
    /// download, since a node writes it only when it joins.
    ca_file: Option<PathBuf>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl BlobFetcher {
    pub fn new(cache: &Path) -> Self {
        Self {
            cache: cache.to_path_buf(),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            ca_file: None,
        }
    }

    /// Also trusts the CA in `path` (when it exists) for `https://` appsrvs: a node passes its
    /// `mesh-ca.crt`, so an appsrv serving a mesh-CA certificate is checked like the coordinator.
    pub fn trusting_ca_file(mut self, path: &Path) -> Self {
        self.ca_file = Some(path.to_path_buf());
        self
    }

    /// The client for one download: the shared one, or one that also trusts the mesh CA.
    fn client(&self, url: &str) -> Result<reqwest::Client, FetchError> {
        let Some(path) = &self.ca_file else {
            return Ok(self.http.clone());
        };
        let pem = match std::fs::read(path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(self.http.clone()),
            Err(source) => {
                return Err(FetchError::Io {
                    path: path.clone(),
                    source,
                });
            }
        };
        let bad_ca = |detail: String| FetchError::Transport {
            url: url.to_string(),
            detail: format!("the mesh CA in {} is unusable: {detail}", path.display()),
        };
        let ca = reqwest::Certificate::from_pem(&pem).map_err(|e| bad_ca(e.to_string()))?;
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .add_root_certificate(ca)
            .build()
            .map_err(|e| bad_ca(e.to_string()))
    }

    /// Where a verified blob lives in the cache.
    pub fn cached_path(&self, digest: &ArtifactDigest) -> PathBuf {
        self.cache.join("sha256").join(digest.hex())
    }

    fn partial_path(&self, digest: &ArtifactDigest) -> PathBuf {
        self.cache.join("partial").join(digest.hex())
    }

    /// Fetches `digest` from the appsrv at `base` (e.g. `http://host:9000`).
    pub async fn fetch(&self, base: &str, digest: &ArtifactDigest) -> Result<Fetched, FetchError> {
        let dest = self.cached_path(digest);
        if dest.is_file() {
            return Ok(Fetched {
                path: dest,
                downloaded: 0,
                resumed_from: 0,
            });
        }
        for dir in [self.cache.join("sha256"), self.cache.join("partial")] {
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(io_err(&dir))?;
        }
        let partial = self.partial_path(digest);
        let url = format!(
            "{}/v1/blobs/{}",
            base.trim_end_matches('/'),
            digest.as_str()
        );
        let mut hasher = Sha256::new();
        let mut have = hash_existing(&partial, &mut hasher).await?;
        let mut req = self.client(&url)?.get(&url);
        if have > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let resp = req.send().await.map_err(|e| FetchError::Transport {
            url: url.clone(),
            detail: with_causes(&e),
        })?;
        let status = resp.status().as_u16();
        let mut file = match status {
            206 => tokio::fs::OpenOptions::new()
                .append(true)
                .open(&partial)
                .await
                .map_err(io_err(&partial))?,
            200 => {
                // Whole content (the server ignored the range, or there was none): start over.
                have = 0;
                hasher = Sha256::new();
                tokio::fs::File::create(&partial)
                    .await
                    .map_err(io_err(&partial))?
            }
            // The partial already holds everything: fall through to verification.
            416 if have > 0 => tokio::fs::OpenOptions::new()
                .append(true)
                .open(&partial)
                .await
                .map_err(io_err(&partial))?,
            _ => return Err(FetchError::Status { url, status }),
        };
        let resumed_from = have;
        let mut downloaded = 0u64;
        if status != 416 {
            let mut body = resp.bytes_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| FetchError::Transport {
                    url: url.clone(),
                    detail: e.to_string(),
                })?;
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(io_err(&partial))?;
                downloaded += chunk.len() as u64;
            }
        }
        file.sync_all().await.map_err(io_err(&partial))?;
        drop(file);
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != digest.as_str() {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(FetchError::Mismatch {
                expected: digest.clone(),
                actual,
            });
        }
        tokio::fs::rename(&partial, &dest)
            .await
            .map_err(io_err(&dest))?;
        Ok(Fetched {
            path: dest,
            downloaded,
            resumed_from,
        })
    }
}

/// Feeds an existing partial file to the hasher; returns its length (0 when absent).
async fn hash_existing(path: &Path, hasher: &mut Sha256) -> Result<u64, FetchError> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err(path)(e)),
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).await.map_err(io_err(path))?;
        if n == 0 {
            return Ok(total);
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}
