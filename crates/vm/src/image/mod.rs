//! Where an app's files come from: an exported Docker image (`docker save` tarball), an OCI image
//! layout directory, or a plain directory. Each is opened into the same shape: an identity digest
//! (what the rootfs cache is keyed by), the image's run configuration, and a way to apply its
//! layers, in order, to a [`Staging`] tree.
//!
//! Everything read from an image is checked: layer digests against the manifest and the config's
//! `diff_ids`, entry paths against the root, JSON against the expected shape. A corrupt or
//! truncated image is an [`VmError::Image`] naming the file and what is wrong with it.

mod directory;
mod docker_archive;
mod layer;
mod oci;

use crate::error::{IoContext, Result, VmError};
use crate::staging::Staging;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

pub use layer::apply_layer;

/// An image to turn into a root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// A `docker save` tarball (legacy layout or OCI layout inside; plain or gzip layers).
    DockerArchive(PathBuf),
    /// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/...`).
    OciLayout(PathBuf),
    /// A directory whose content is the root filesystem as is.
    Directory(PathBuf),
}

impl ImageSource {
    /// Guesses the kind from what is at `path`: a file is a Docker archive, a directory with an
    /// `oci-layout` file an OCI layout, any other directory a plain root.
    pub fn detect(path: &Path) -> Result<ImageSource> {
        let md = std::fs::metadata(path).map_err(|e| VmError::image(path, e.to_string()))?;
        Ok(if md.is_file() {
            ImageSource::DockerArchive(path.to_path_buf())
        } else if path.join("oci-layout").is_file() {
            ImageSource::OciLayout(path.to_path_buf())
        } else {
            ImageSource::Directory(path.to_path_buf())
        })
    }

    pub fn path(&self) -> &Path {
        match self {
            ImageSource::DockerArchive(p)
            | ImageSource::OciLayout(p)
            | ImageSource::Directory(p) => p,
        }
    }

    /// Reads the manifest and configuration and checks the structure (not yet the layers).
    pub(crate) fn open(&self) -> Result<OpenedImage> {
        match self {
            ImageSource::DockerArchive(p) => docker_archive::open(p),
            ImageSource::OciLayout(p) => oci::open(p),
            ImageSource::Directory(p) => directory::open(p),
        }
    }
}

/// How the image says to run it (the `config` object of an image configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ImageConfig {
    #[serde(rename = "Entrypoint", default, deserialize_with = "null_as_empty")]
    pub entrypoint: Vec<String>,
    #[serde(rename = "Cmd", default, deserialize_with = "null_as_empty")]
    pub cmd: Vec<String>,
    #[serde(rename = "Env", default, deserialize_with = "null_as_empty")]
    pub env: Vec<String>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
    #[serde(rename = "User", default)]
    pub user: Option<String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// An image configuration file (Docker and OCI share this shape).
#[derive(Debug, Deserialize)]
pub(crate) struct ConfigFile {
    #[serde(default)]
    pub config: Option<ImageConfig>,
    #[serde(default)]
    pub rootfs: Option<RootfsSection>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RootfsSection {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

impl ConfigFile {
    pub fn parse(bytes: &[u8], path: &Path, what: &str) -> Result<ConfigFile> {
        serde_json::from_slice(bytes)
            .map_err(|e| VmError::image(path, format!("{what} is not a valid image config: {e}")))
    }

    /// The expected uncompressed digest of layer `i`, if the config lists them all.
    pub fn diff_id(&self, i: usize, layers: usize) -> Option<&str> {
        let ids = &self.rootfs.as_ref()?.diff_ids;
        (ids.len() == layers).then(|| ids[i].as_str())
    }
}

/// An image whose manifest has been read.
pub(crate) struct OpenedImage {
    /// Identifies the content: equal identities give byte-identical root filesystems.
    pub identity: String,
    pub config: ImageConfig,
    pub layers: Layers,
}

/// How to get at an image's layers.
pub(crate) enum Layers {
    Archive(docker_archive::ArchiveLayers),
    Oci(oci::OciLayers),
    Directory(PathBuf),
}

impl OpenedImage {
    /// Applies every layer, in order, to `staging`.
    pub fn unpack(&self, staging: &mut Staging) -> Result<()> {
        match &self.layers {
            Layers::Archive(a) => a.unpack(staging),
            Layers::Oci(o) => o.unpack(staging),
            Layers::Directory(d) => directory::copy_tree(d, staging),
        }
    }
}

/// `sha256:<64 hex>` → the hex part, or an error naming the bad digest.
pub(crate) fn sha256_hex<'a>(digest: &'a str, path: &Path) -> Result<&'a str> {
    let hex = digest.strip_prefix("sha256:").ok_or_else(|| {
        VmError::image(path, format!("unsupported digest {digest:?} (only sha256)"))
    })?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(VmError::image(path, format!("malformed digest {digest:?}")));
    }
    Ok(hex)
}

/// A reader that hashes what passes through and, at the end of the stream, checks the result
/// against the expected sha256 (when one is given).
pub(crate) struct Verified<R> {
    inner: R,
    hasher: Sha256,
    expected: Option<String>,
    what: String,
}

impl<R: Read> Verified<R> {
    pub fn new(inner: R, expected_hex: Option<String>, what: String) -> Self {
        Verified {
            inner,
            hasher: Sha256::new(),
            expected: expected_hex,
            what,
        }
    }
}

impl<R: Read> Read for Verified<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            if let Some(want) = self.expected.take() {
                let got = hex::encode(self.hasher.clone().finalize());
                if got != want {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "{} has digest sha256:{got}, expected sha256:{want}",
                            self.what
                        ),
                    ));
                }
            }
        } else {
            self.hasher.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// sha256 of a whole file, hex.
pub(crate) fn file_sha256(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).io_ctx(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).io_ctx(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_checked_for_shape() {
        let p = Path::new("img");
        let good = format!("sha256:{}", "a".repeat(64));
        assert!(sha256_hex(&good, p).is_ok());
        for bad in [
            "md5:abc".to_string(),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha256:{}/../x", "a".repeat(58)),
            format!("sha256:{}", "A".repeat(64)),
        ] {
            assert!(sha256_hex(&bad, p).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_wrong_digest_fails_at_the_end_of_the_stream() {
        let right = hex::encode(Sha256::digest(b"hello"));
        let mut ok = Verified::new(&b"hello"[..], Some(right), "blob".into());
        let mut out = Vec::new();
        ok.read_to_end(&mut out).unwrap();
        let mut bad = Verified::new(&b"hellO"[..], Some("00".repeat(32)), "blob".into());
        let e = bad.read_to_end(&mut out).unwrap_err();
        assert!(e.to_string().contains("blob has digest"), "{e}");
    }

    #[test]
    fn null_lists_in_a_config_are_empty() {
        let c: ImageConfig =
            serde_json::from_str(r#"{"Entrypoint":null,"Cmd":["/x"],"Env":null}"#).unwrap();
        assert!(c.entrypoint.is_empty());
        assert_eq!(c.cmd, vec!["/x"]);
    }
}
