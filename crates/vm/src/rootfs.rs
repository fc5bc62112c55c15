//! Image + app → a bootable ext4 root filesystem, cached by content digest.
//!
//! The digest covers everything that ends up in the filesystem: the image's identity, our init
//! binary, the app description, the size allowance and the e2fsprogs version. A cache hit is a
//! file rename away from the last build; a miss unpacks the layers into a staging tree, adds
//! init (`/.tabbify/init`), the app description (`/.tabbify/app.json`), the mount points and
//! `/dev/console`, and makes the image (see `ext4`). The same input gives a byte-identical file.
//!
//! The cached image is shared and never booted directly: each VM gets its own writable copy
//! ([`RootfsArtifact::instance_copy`]).

use crate::app::{self, AppCommand};
use crate::error::{IoContext, Result, VmError};
use crate::ext4::{self, Ext4Params};
use crate::image::ImageSource;
use crate::staging::{EntryMeta, SpecialKind, SpecialNode, Staging};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use tabbify_vm_init::contract::{APP_CONFIG_PATH, GuestApp, INIT_PATH, TABBIFY_DIR};

/// Time of everything we add to a rootfs, and of the filesystem itself (2024-01-01T00:00:00Z).
pub const ROOTFS_EPOCH: i64 = 1_704_067_200;
/// Bumped whenever the layout of what we build changes, so old cache entries are not reused.
const FORMAT: &str = "tabbify-rootfs v1";
const MIB: u64 = 1024 * 1024;

/// Where root filesystems are built and kept, and what goes into each.
#[derive(Debug, Clone)]
pub struct RootfsCache {
    pub dir: PathBuf,
    /// The static guest init (`tabbify-vm-init` built for `x86_64-unknown-linux-musl`).
    pub init_binary: PathBuf,
    /// Free space the app gets in its filesystem, beyond what the image needs.
    pub free_mb: u64,
}

impl RootfsCache {
    pub fn new(dir: impl Into<PathBuf>, init_binary: impl Into<PathBuf>) -> Self {
        RootfsCache {
            dir: dir.into(),
            init_binary: init_binary.into(),
            free_mb: 64,
        }
    }
}

/// A built root filesystem in the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootfsArtifact {
    /// The cached image (shared; do not boot it, see [`instance_copy`](Self::instance_copy)).
    pub path: PathBuf,
    /// Hex sha256 of the build inputs; also the file's name.
    pub digest: String,
    /// What init will run.
    pub app: GuestApp,
    pub size_bytes: u64,
    /// True when the image came from the cache.
    #[serde(skip)]
    pub from_cache: bool,
}

impl RootfsArtifact {
    /// Copies the image to `dest` for one VM to write to, keeping holes (fast, and the copy takes
    /// only the space actually used).
    pub fn instance_copy(&self, dest: &Path) -> Result<()> {
        copy_sparse(&self.path, dest)
    }
}

/// Builds (or finds in the cache) the root filesystem for `app` from `image`.
pub fn build_rootfs(
    image: &ImageSource,
    app: &AppCommand,
    cache: &RootfsCache,
) -> Result<RootfsArtifact> {
    let init = &cache.init_binary;
    if !init.is_file() {
        return Err(VmError::Missing {
            what: "guest init binary",
            path: init.clone(),
        });
    }
    std::fs::create_dir_all(&cache.dir).io_ctx(|| format!("creating {}", cache.dir.display()))?;
    let opened = image.open()?;
    let merged = app::merge(&opened.config, app)?;
    let digest = {
        let mut h = Sha256::new();
        for part in [
            FORMAT.to_string(),
            opened.identity.clone(),
            crate::image::file_sha256(init)?,
            serde_json::to_string(app).unwrap_or_default(),
            cache.free_mb.to_string(),
            e2fsprogs_version(),
        ] {
            h.update(part.as_bytes());
            h.update(b"\n");
        }
        hex::encode(h.finalize())
    };
    let image_path = cache.dir.join(format!("{digest}.ext4"));
    let meta_path = cache.dir.join(format!("{digest}.json"));
    if image_path.is_file()
        && let Ok(text) = std::fs::read(&meta_path)
        && let Ok(mut art) = serde_json::from_slice::<RootfsArtifact>(&text)
    {
        tracing::debug!(%digest, "rootfs cache hit");
        art.path = image_path;
        art.from_cache = true;
        return Ok(art);
    }

    tracing::info!(%digest, image = %image.path().display(), "building rootfs");
    let work = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(&cache.dir)
        .io_ctx(|| format!("creating a build directory in {}", cache.dir.display()))?;
    let root = work.path().join("root");
    std::fs::create_dir(&root).io_ctx(|| format!("creating {}", root.display()))?;
    let mut staging = Staging::new(root, image.path().to_path_buf());
    opened.unpack(&mut staging)?;

    let passwd = staging
        .read_regular(Path::new("etc/passwd"))
        .unwrap_or_default();
    let group = staging
        .read_regular(Path::new("etc/group"))
        .unwrap_or_default();
    let (uid, gid) = app::resolve_user(
        &merged.user,
        &String::from_utf8_lossy(&passwd),
        &String::from_utf8_lossy(&group),
    )?;
    let guest_app = app::guest_app(merged, uid, gid)?;
    add_our_files(&mut staging, init, &guest_app)?;
    staging.settle_times(ROOTFS_EPOCH)?;

    let (used, inodes) = tree_usage(staging.root())?;
    let size_bytes = image_size(
        used,
        inodes + staging.special_nodes().len() as u64,
        cache.free_mb,
    );
    let tmp = work.path().join("rootfs.ext4");
    ext4::make_ext4(
        &staging,
        &tmp,
        &Ext4Params {
            size_bytes,
            uuid: uuid_from(&digest),
            epoch: ROOTFS_EPOCH,
            label: "tabbify-root".into(),
        },
    )?;
    let art = RootfsArtifact {
        path: image_path.clone(),
        digest: digest.clone(),
        app: guest_app,
        size_bytes,
        from_cache: false,
    };
    let meta_tmp = work.path().join("meta.json");
    std::fs::write(
        &meta_tmp,
        serde_json::to_vec_pretty(&art).unwrap_or_default(),
    )
    .io_ctx(|| format!("writing {}", meta_tmp.display()))?;
    publish(&meta_tmp, &meta_path)?;
    publish(&tmp, &image_path)?;
    Ok(art)
}

/// Init, the app description, the mount points and the console node.
fn add_our_files(staging: &mut Staging, init: &Path, app: &GuestApp) -> Result<()> {
    let meta = EntryMeta {
        uid: 0,
        gid: 0,
        mtime: ROOTFS_EPOCH,
    };
    let rel = |p: &str| PathBuf::from(p.trim_start_matches('/'));
    staging.add_dir(&rel(TABBIFY_DIR), 0o755, meta)?;
    let mut f = std::fs::File::open(init).io_ctx(|| format!("opening {}", init.display()))?;
    staging.add_file(&rel(INIT_PATH), 0o755, meta, &mut f)?;
    let json = serde_json::to_vec_pretty(app).map_err(|e| VmError::App(e.to_string()))?;
    staging.add_file(&rel(APP_CONFIG_PATH), 0o644, meta, &mut json.as_slice())?;
    for (dir, mode) in [
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
        ("tmp", 0o1777),
        ("run", 0o755),
    ] {
        // Keep the image's own directory (and its mode) when it has one.
        let exists = std::fs::symlink_metadata(staging.root().join(dir)).is_ok_and(|m| m.is_dir());
        if !exists {
            staging.add_dir(Path::new(dir), mode, meta)?;
        }
    }
    if !staging.special_nodes().contains_key("dev/console") {
        staging.add_special(
            Path::new("dev/console"),
            SpecialNode {
                kind: SpecialKind::Char,
                mode: 0o600,
                major: 5,
                minor: 1,
            },
            meta,
        )?;
    }
    Ok(())
}

/// Bytes the tree needs in 4 KiB blocks, and its number of entries.
fn tree_usage(root: &Path) -> Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut bytes = 0u64;
    let mut entries = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).io_ctx(|| format!("listing {}", dir.display()))? {
            let e = e.io_ctx(|| format!("listing {}", dir.display()))?;
            let md = e
                .metadata()
                .io_ctx(|| format!("inspecting {}", e.path().display()))?;
            entries += 1;
            bytes += md.size().div_ceil(ext4::BLOCK_SIZE) * ext4::BLOCK_SIZE;
            if md.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok((bytes, entries))
}

/// The filesystem size for `used` bytes of content in `entries` inodes plus `free_mb`: room for
/// metadata and the journal, one inode per 8 KiB (mkfs `-i 8192`) with a margin, rounded up to
/// 4 MiB.
pub fn image_size(used: u64, entries: u64, free_mb: u64) -> u64 {
    let by_data = used + used / 5 + 24 * MIB + free_mb * MIB;
    let by_inodes = (entries + 64) * 2 * 8192;
    let size = by_data.max(by_inodes).max(32 * MIB);
    size.div_ceil(4 * MIB) * 4 * MIB
}

/// A UUID-shaped string from the digest (stable per content).
fn uuid_from(digest: &str) -> String {
    let h = &digest[..32.min(digest.len())];
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn e2fsprogs_version() -> String {
    std::process::Command::new("mkfs.ext4")
        .arg("-V")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default()
}

/// fsync `tmp`, rename it to `dest`, fsync the directory.
fn publish(tmp: &Path, dest: &Path) -> Result<()> {
    std::fs::File::open(tmp)
        .and_then(|f| f.sync_all())
        .io_ctx(|| format!("syncing {}", tmp.display()))?;
    std::fs::rename(tmp, dest).io_ctx(|| format!("renaming to {}", dest.display()))?;
    if let Some(dir) = dest.parent() {
        std::fs::File::open(dir)
            .and_then(|f| f.sync_all())
            .io_ctx(|| format!("syncing {}", dir.display()))?;
    }
    Ok(())
}

/// Copies `src` to `dest`, leaving all-zero blocks as holes.
pub fn copy_sparse(src: &Path, dest: &Path) -> Result<()> {
    const BLOCK: usize = 64 * 1024;
    let mut from = std::fs::File::open(src).io_ctx(|| format!("opening {}", src.display()))?;
    let len = from
        .metadata()
        .io_ctx(|| format!("inspecting {}", src.display()))?
        .len();
    let mut to = std::fs::File::create(dest).io_ctx(|| format!("creating {}", dest.display()))?;
    let mut buf = vec![0u8; BLOCK];
    let mut pos = 0u64;
    while pos < len {
        let want = usize::try_from((len - pos).min(BLOCK as u64)).unwrap_or(BLOCK);
        from.read_exact(&mut buf[..want])
            .io_ctx(|| format!("reading {}", src.display()))?;
        if buf[..want].iter().any(|&b| b != 0) {
            to.seek(SeekFrom::Start(pos))
                .and_then(|_| to.write_all(&buf[..want]))
                .io_ctx(|| format!("writing {}", dest.display()))?;
        }
        pos += want as u64;
    }
    to.set_len(len)
        .io_ctx(|| format!("sizing {}", dest.display()))?;
    to.sync_all()
        .io_ctx(|| format!("syncing {}", dest.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_leave_room_and_round_up() {
        assert_eq!(image_size(0, 0, 0), 32 * MIB);
        let s = image_size(100 * MIB, 1000, 64);
        assert!(s >= 100 * MIB + 20 * MIB + 64 * MIB, "{s}");
        assert_eq!(s % (4 * MIB), 0);
        // Many tiny files need inodes more than bytes.
        let s = image_size(MIB, 100_000, 0);
        assert!(s / 8192 > 100_000, "{s}");
    }

    #[test]
    fn uuids_have_the_usual_shape() {
        let u = uuid_from(&"0123456789abcdef".repeat(4));
        assert_eq!(u, "01234567-89ab-cdef-0123-456789abcdef");
    }

    #[test]
    fn sparse_copies_are_equal_and_keep_holes() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let f = std::fs::File::create(&src).unwrap();
        f.set_len(8 * MIB).unwrap();
        drop(f);
        let mut f = std::fs::OpenOptions::new().write(true).open(&src).unwrap();
        f.seek(SeekFrom::Start(3 * MIB + 5)).unwrap();
        f.write_all(b"data in the middle").unwrap();
        drop(f);
        let dest = dir.path().join("dest");
        copy_sparse(&src, &dest).unwrap();
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dest).unwrap());
        assert!(std::fs::metadata(&dest).unwrap().blocks() * 512 < MIB);
    }
}
