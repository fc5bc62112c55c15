//! `docker save` tarballs. The archive is indexed once (name → offset and size of each member,
//! following the symlinks Docker uses for repeated layers) and every layer is then read straight
//! out of it, so nothing is unpacked twice. Both the legacy layout (`<id>/layer.tar`) and the OCI
//! layout that newer Docker versions write (`blobs/sha256/<hex>`) are described by the same
//! top-level `manifest.json`, which is what is read here.

use super::{ConfigFile, Layers, OpenedImage, file_sha256};
use crate::error::{IoContext, Result, VmError};
use crate::staging::Staging;
use serde::Deserialize;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Longest `manifest.json` / config file read into memory.
const MAX_JSON: u64 = 16 * 1024 * 1024;
/// Symlink hops followed inside the archive.
const MAX_HOPS: usize = 8;

#[derive(Debug, Deserialize)]
struct ManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

#[derive(Debug, Clone)]
enum Member {
    File { offset: u64, size: u64 },
    Symlink(PathBuf),
}

/// Where each layer of the archive lives.
pub(crate) struct ArchiveLayers {
    archive: PathBuf,
    /// (name in the archive, offset, size), in order.
    layers: Vec<(String, u64, u64)>,
    diff_ids: Vec<Option<String>>,
}

fn normalize(name: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in name.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

fn index(path: &Path) -> Result<HashMap<PathBuf, Member>> {
    let f = std::fs::File::open(path).io_ctx(|| format!("opening {}", path.display()))?;
    let mut archive = tar::Archive::new(f);
    let mut members = HashMap::new();
    let entries = archive
        .entries()
        .map_err(|e| VmError::image(path, format!("not a tar archive: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| VmError::image(path, format!("corrupt archive: {e}")))?;
        let name = normalize(
            &entry
                .path()
                .map_err(|e| VmError::image(path, format!("bad member name: {e}")))?,
        );
        let member = match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => Member::File {
                offset: entry.raw_file_position(),
                size: entry.size(),
            },
            tar::EntryType::Symlink => {
                let target = entry.link_name().ok().flatten().ok_or_else(|| {
                    VmError::image(path, format!("{}: symlink without target", name.display()))
                })?;
                let base = name.parent().unwrap_or(Path::new(""));
                Member::Symlink(normalize(&base.join(target)))
            }
            _ => continue,
        };
        members.insert(name, member);
    }
    Ok(members)
}

fn locate(members: &HashMap<PathBuf, Member>, name: &str, path: &Path) -> Result<(u64, u64)> {
    let mut at = normalize(Path::new(name));
    for _ in 0..MAX_HOPS {
        match members.get(&at) {
            Some(Member::File { offset, size }) => return Ok((*offset, *size)),
            Some(Member::Symlink(next)) => at = next.clone(),
            None => {
                return Err(VmError::image(
                    path,
                    format!("manifest names {name:?}, which is not in the archive"),
                ));
            }
        }
    }
    Err(VmError::image(path, format!("{name:?}: too many symlinks")))
}

fn read_member(path: &Path, offset: u64, size: u64, what: &str) -> Result<Vec<u8>> {
    if size > MAX_JSON {
        return Err(VmError::image(
            path,
            format!("{what} is implausibly large ({size} bytes)"),
        ));
    }
    let mut f = std::fs::File::open(path).io_ctx(|| format!("opening {}", path.display()))?;
    f.seek(SeekFrom::Start(offset))
        .io_ctx(|| format!("seeking in {}", path.display()))?;
    let mut buf = Vec::new();
    f.take(size)
        .read_to_end(&mut buf)
        .io_ctx(|| format!("reading {what} from {}", path.display()))?;
    Ok(buf)
}

pub(crate) fn open(path: &Path) -> Result<OpenedImage> {
    let members = index(path)?;
    let (off, size) = locate(&members, "manifest.json", path)
        .map_err(|_| VmError::image(path, "no manifest.json: not a `docker save` archive"))?;
    let manifest: Vec<ManifestEntry> =
        serde_json::from_slice(&read_member(path, off, size, "manifest.json")?)
            .map_err(|e| VmError::image(path, format!("manifest.json: {e}")))?;
    let entry = match manifest.as_slice() {
        [one] => one,
        [] => return Err(VmError::image(path, "manifest.json lists no image")),
        many => {
            return Err(VmError::image(
                path,
                format!("the archive holds {} images; save exactly one", many.len()),
            ));
        }
    };
    let (off, size) = locate(&members, &entry.config, path)?;
    let config = ConfigFile::parse(
        &read_member(path, off, size, "the image config")?,
        path,
        &entry.config,
    )?;
    let n = entry.layers.len();
    let mut layers = Vec::with_capacity(n);
    let mut diff_ids = Vec::with_capacity(n);
    for (i, name) in entry.layers.iter().enumerate() {
        let (offset, size) = locate(&members, name, path)?;
        layers.push((name.clone(), offset, size));
        diff_ids.push(match config.diff_id(i, n) {
            Some(d) => Some(super::sha256_hex(d, path)?.to_string()),
            None => None,
        });
    }
    Ok(OpenedImage {
        // The archive is content: the same bytes give the same rootfs.
        identity: format!("docker-archive:{}", file_sha256(path)?),
        config: config.config.unwrap_or_default(),
        layers: Layers::Archive(ArchiveLayers {
            archive: path.to_path_buf(),
            layers,
            diff_ids,
        }),
    })
}

impl ArchiveLayers {
    pub fn unpack(&self, staging: &mut Staging) -> Result<()> {
        for (i, (name, offset, size)) in self.layers.iter().enumerate() {
            let mut f = std::fs::File::open(&self.archive)
                .io_ctx(|| format!("opening {}", self.archive.display()))?;
            f.seek(SeekFrom::Start(*offset))
                .io_ctx(|| format!("seeking in {}", self.archive.display()))?;
            let label = format!("layer {} ({name})", i + 1);
            super::apply_layer(
                f.take(*size),
                staging,
                &self.archive,
                &label,
                self.diff_ids[i].clone(),
            )?;
        }
        Ok(())
    }
}
