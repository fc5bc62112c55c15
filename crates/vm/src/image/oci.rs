//! OCI image layout directories: `index.json` → (nested indexes →) the linux/amd64 manifest →
//! config and layer blobs under `blobs/sha256/`. Every blob is checked against its descriptor's
//! digest as it is read, and layers against the config's `diff_ids`.

use super::{ConfigFile, Layers, OpenedImage, Verified, sha256_hex};
use crate::error::{IoContext, Result, VmError};
use crate::staging::Staging;
use serde::Deserialize;
use std::io::Read;
use std::path::{Path, PathBuf};

const MAX_JSON: u64 = 16 * 1024 * 1024;
/// Nested indexes followed.
const MAX_DEPTH: usize = 4;

const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

#[derive(Debug, Clone, Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Debug, Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

pub(crate) struct OciLayers {
    dir: PathBuf,
    /// (blob digest hex, diff id hex)
    layers: Vec<(String, Option<String>)>,
}

fn blob_path(dir: &Path, digest: &str) -> Result<PathBuf> {
    Ok(dir.join("blobs/sha256").join(sha256_hex(digest, dir)?))
}

/// Reads a small JSON blob, checking its digest.
fn read_json_blob(dir: &Path, digest: &str, what: &str) -> Result<Vec<u8>> {
    let path = blob_path(dir, digest)?;
    let f = std::fs::File::open(&path)
        .map_err(|e| VmError::image(dir, format!("{what} blob {digest}: {e}")))?;
    let mut buf = Vec::new();
    Verified::new(
        f.take(MAX_JSON),
        Some(sha256_hex(digest, dir)?.to_string()),
        format!("{what} blob"),
    )
    .read_to_end(&mut buf)
    .map_err(|e| VmError::image(dir, e.to_string()))?;
    Ok(buf)
}

fn is_linux_amd64(d: &Descriptor) -> bool {
    d.platform
        .as_ref()
        .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
}

/// Picks the one manifest to run from an index's list.
fn choose<'a>(dir: &Path, list: &'a [Descriptor]) -> Result<&'a Descriptor> {
    if let [one] = list {
        return Ok(one);
    }
    let amd64: Vec<&Descriptor> = list.iter().filter(|d| is_linux_amd64(d)).collect();
    match amd64.as_slice() {
        [one] => Ok(one),
        [] => Err(VmError::image(
            dir,
            format!(
                "the index lists {} manifests and none for linux/amd64",
                list.len()
            ),
        )),
        _ => Err(VmError::image(
            dir,
            "the index lists several linux/amd64 manifests; keep one",
        )),
    }
}

pub(crate) fn open(dir: &Path) -> Result<OpenedImage> {
    let index_path = dir.join("index.json");
    let text =
        std::fs::read(&index_path).map_err(|e| VmError::image(dir, format!("index.json: {e}")))?;
    let mut index: Index = serde_json::from_slice(&text)
        .map_err(|e| VmError::image(dir, format!("index.json: {e}")))?;
    let mut depth = 0;
    let manifest_desc = loop {
        let chosen = choose(dir, &index.manifests)?.clone();
        if !INDEX_TYPES.contains(&chosen.media_type.as_str()) {
            break chosen;
        }
        depth += 1;
        if depth > MAX_DEPTH {
            return Err(VmError::image(dir, "indexes nested too deeply"));
        }
        index = serde_json::from_slice(&read_json_blob(dir, &chosen.digest, "index")?)
            .map_err(|e| VmError::image(dir, format!("index {}: {e}", chosen.digest)))?;
    };
    let manifest: Manifest =
        serde_json::from_slice(&read_json_blob(dir, &manifest_desc.digest, "manifest")?)
            .map_err(|e| VmError::image(dir, format!("manifest {}: {e}", manifest_desc.digest)))?;
    let config = ConfigFile::parse(
        &read_json_blob(dir, &manifest.config.digest, "config")?,
        dir,
        &manifest.config.digest,
    )?;
    let n = manifest.layers.len();
    let mut layers = Vec::with_capacity(n);
    for (i, l) in manifest.layers.iter().enumerate() {
        let hex = sha256_hex(&l.digest, dir)?.to_string();
        let diff = match config.diff_id(i, n) {
            Some(d) => Some(sha256_hex(d, dir)?.to_string()),
            None => None,
        };
        if !blob_path(dir, &l.digest)?.is_file() {
            return Err(VmError::image(
                dir,
                format!("layer blob {} is missing", l.digest),
            ));
        }
        layers.push((hex, diff));
    }
    Ok(OpenedImage {
        // Content addressed: the manifest digest pins config and layers (all verified on read).
        identity: format!("oci:{}", manifest_desc.digest),
        config: config.config.unwrap_or_default(),
        layers: Layers::Oci(OciLayers {
            dir: dir.to_path_buf(),
            layers,
        }),
    })
}

impl OciLayers {
    pub fn unpack(&self, staging: &mut Staging) -> Result<()> {
        for (i, (hex, diff)) in self.layers.iter().enumerate() {
            let path = self.dir.join("blobs/sha256").join(hex);
            let f = std::fs::File::open(&path).io_ctx(|| format!("opening {}", path.display()))?;
            let label = format!("layer {} (sha256:{hex})", i + 1);
            let blob = Verified::new(f, Some(hex.clone()), format!("layer blob sha256:{hex}"));
            super::apply_layer(blob, staging, &self.dir, &label, diff.clone())?;
        }
        Ok(())
    }
}
