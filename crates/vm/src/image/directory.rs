//! A plain directory as the image: its content becomes the root filesystem as is (owners, modes,
//! times, symlinks, hard links, device nodes). It carries no run configuration, so the app's
//! command must be given. Its identity hashes everything that ends up in the filesystem, so a
//! changed file, mode or time is a different rootfs.

use super::{ImageConfig, Layers, OpenedImage};
use crate::error::{IoContext, Result, VmError};
use crate::staging::{EntryMeta, SpecialKind, SpecialNode, Staging};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Every entry below `root` (not `root` itself), parents before children, names sorted.
fn walk(root: &Path) -> Result<Vec<(PathBuf, std::fs::Metadata)>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .io_ctx(|| format!("listing {}", dir.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .io_ctx(|| format!("listing {}", dir.display()))?;
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            let rel_child = rel.join(&name);
            let md = std::fs::symlink_metadata(root.join(&rel_child))
                .io_ctx(|| format!("inspecting {}", root.join(&rel_child).display()))?;
            if md.is_dir() {
                subdirs.push(rel_child.clone());
            }
            out.push((rel_child, md));
        }
        // Depth first, in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(out)
}

pub(crate) fn open(root: &Path) -> Result<OpenedImage> {
    if !root.is_dir() {
        return Err(VmError::image(root, "not a directory"));
    }
    let mut h = Sha256::new();
    let root_md = std::fs::metadata(root).io_ctx(|| format!("inspecting {}", root.display()))?;
    h.update(format!("root {:o}\n", root_md.mode()).as_bytes());
    for (rel, md) in walk(root)? {
        let line = format!(
            "{:?} {:o} {} {} {} {}\n",
            rel,
            md.mode(),
            md.uid(),
            md.gid(),
            md.mtime(),
            md.rdev()
        );
        h.update(line.as_bytes());
        let full = root.join(&rel);
        if md.file_type().is_symlink() {
            let t = std::fs::read_link(&full).io_ctx(|| format!("reading {}", full.display()))?;
            h.update(t.as_os_str().as_encoded_bytes());
        } else if md.is_file() {
            let mut f =
                std::fs::File::open(&full).io_ctx(|| format!("opening {}", full.display()))?;
            std::io::copy(&mut f, &mut h).io_ctx(|| format!("reading {}", full.display()))?;
        }
        h.update(b"\n");
    }
    Ok(OpenedImage {
        identity: format!("directory:{}", hex::encode(h.finalize())),
        config: ImageConfig::default(),
        layers: Layers::Directory(root.to_path_buf()),
    })
}

/// Copies the tree into `staging`, keeping hard links as links.
pub(crate) fn copy_tree(root: &Path, staging: &mut Staging) -> Result<()> {
    let mut inodes: HashMap<(u64, u64), PathBuf> = HashMap::new();
    for (rel, md) in walk(root)? {
        let full = root.join(&rel);
        let meta = EntryMeta {
            uid: md.uid(),
            gid: md.gid(),
            mtime: md.mtime(),
        };
        let mode = md.mode() & 0o7777;
        let ft = md.file_type();
        if ft.is_dir() {
            staging.add_dir(&rel, mode, meta)?;
        } else if ft.is_symlink() {
            let t = std::fs::read_link(&full).io_ctx(|| format!("reading {}", full.display()))?;
            staging.add_symlink(&rel, &t, meta)?;
        } else if ft.is_file() {
            if md.nlink() > 1 {
                if let Some(first) = inodes.get(&(md.dev(), md.ino())) {
                    staging.add_hardlink(&rel, first)?;
                    continue;
                }
                inodes.insert((md.dev(), md.ino()), rel.clone());
            }
            let mut f =
                std::fs::File::open(&full).io_ctx(|| format!("opening {}", full.display()))?;
            staging.add_file(&rel, mode, meta, &mut f)?;
        } else if ft.is_char_device() || ft.is_block_device() {
            let rdev = md.rdev();
            let node = SpecialNode {
                kind: if ft.is_char_device() {
                    SpecialKind::Char
                } else {
                    SpecialKind::Block
                },
                mode,
                major: libc::major(rdev),
                minor: libc::minor(rdev),
            };
            staging.add_special(&rel, node, meta)?;
        } else if ft.is_fifo() {
            staging.add_fifo(&rel, mode, meta)?;
        }
        // Sockets are runtime objects, not content: skipped.
    }
    let root_md = std::fs::metadata(root).io_ctx(|| format!("inspecting {}", root.display()))?;
    staging.add_dir(
        Path::new(""),
        root_md.mode() & 0o7777,
        EntryMeta {
            uid: 0,
            gid: 0,
            mtime: root_md.mtime(),
        },
    )?;
    Ok(())
}
