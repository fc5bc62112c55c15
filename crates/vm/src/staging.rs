//! The staging tree: a plain directory where image layers are merged before it becomes an ext4
//! filesystem, plus the metadata the directory cannot hold without root (owners, device nodes).
//!
//! Every path from an image is resolved inside the staging root the way the guest kernel will
//! resolve it: symlinks in parent directories are followed *within* the root (an absolute target
//! starts again at the root, `..` stops at the root), so a layer can never write outside the tree.
//! Files are created as the building user; the owner each entry should have in the guest, device
//! nodes (which need root to create) and times are recorded here and applied to the filesystem
//! image afterwards (see `ext4`), which is also what makes the result independent of who built it.

use crate::error::{IoContext, Result, VmError};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Symlinks followed while resolving one path, as the kernel's limit.
const MAX_SYMLINKS: u32 = 40;

/// Owner and modification time an entry has in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryMeta {
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
}

/// A character or block device, or a FIFO, to create in the filesystem image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialNode {
    pub kind: SpecialKind,
    /// Permission bits (without the file type).
    pub mode: u32,
    pub major: u32,
    pub minor: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialKind {
    Char,
    Block,
}

/// A directory being filled, with the guest metadata of everything in it.
pub struct Staging {
    root: PathBuf,
    /// Keyed by the resolved path relative to the root, `/`-separated, no leading slash.
    meta: BTreeMap<String, EntryMeta>,
    /// Permission bits each directory, file and FIFO should have (`""` is the root). On disk
    /// they are staged with owner access added, so that a builder without root can still fill a
    /// read-only directory and `mke2fs` can read a mode-000 file; the real bits are applied to
    /// the image afterwards.
    modes: BTreeMap<String, u32>,
    special: BTreeMap<String, SpecialNode>,
    /// The image's label for error messages.
    source: PathBuf,
}

fn rel_key(parts: &[OsString]) -> String {
    parts
        .iter()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

impl Staging {
    /// Uses `root` (an empty directory) for `source`'s content.
    pub fn new(root: PathBuf, source: PathBuf) -> Staging {
        Staging {
            root,
            meta: BTreeMap::new(),
            modes: BTreeMap::new(),
            special: BTreeMap::new(),
            source,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Guest metadata of every entry, by relative path, sorted.
    pub fn entries(&self) -> &BTreeMap<String, EntryMeta> {
        &self.meta
    }

    /// The permission bits entries should have in the guest, by relative path (`""`: the root).
    pub fn modes(&self) -> &BTreeMap<String, u32> {
        &self.modes
    }

    /// Device nodes to create, by relative path, sorted.
    pub fn special_nodes(&self) -> &BTreeMap<String, SpecialNode> {
        &self.special
    }

    fn bad(&self, reason: String) -> VmError {
        VmError::image(&self.source, reason)
    }

    /// Splits an image path into normal components; `..` that would climb out of the root and
    /// empty paths are errors (a well-formed image never has them).
    fn components(&self, path: &Path) -> Result<Vec<OsString>> {
        let mut out: Vec<OsString> = Vec::new();
        for c in path.components() {
            match c {
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    if out.pop().is_none() {
                        return Err(
                            self.bad(format!("entry {} climbs out of the root", path.display()))
                        );
                    }
                }
                Component::Normal(n) => out.push(n.to_os_string()),
            }
        }
        Ok(out)
    }

    /// Resolves the directory `parts` inside the root, following symlinks within the root and
    /// creating missing directories (owned by root, 0755, as an image's implicit parents are).
    fn resolve_dir(&mut self, parts: &[OsString], mtime: i64) -> Result<Vec<OsString>> {
        self.walk_dir(parts, Some(mtime))?
            .ok_or_else(|| self.bad(format!("cannot resolve {}", rel_key(parts))))
    }

    /// The walk behind [`resolve_dir`]; with `create: None` nothing is made and a missing
    /// directory gives `Ok(None)`.
    fn walk_dir(
        &mut self,
        parts: &[OsString],
        create: Option<i64>,
    ) -> Result<Option<Vec<OsString>>> {
        let mut resolved: Vec<OsString> = Vec::new();
        let mut pending: std::collections::VecDeque<OsString> = parts.iter().cloned().collect();
        let mut links = 0;
        while let Some(name) = pending.pop_front() {
            if name == ".." {
                resolved.pop();
                continue;
            }
            if name == "." || name.is_empty() {
                continue;
            }
            let mut here = self.root.clone();
            here.extend(&resolved);
            here.push(&name);
            match std::fs::symlink_metadata(&here) {
                Ok(md) if md.file_type().is_symlink() => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(
                            self.bad(format!("too many symlinks resolving {}", rel_key(parts)))
                        );
                    }
                    let target = std::fs::read_link(&here)
                        .io_ctx(|| format!("reading symlink {}", here.display()))?;
                    if target.is_absolute() {
                        resolved.clear();
                    }
                    let mut next: Vec<OsString> = target
                        .components()
                        .filter_map(|c| match c {
                            Component::Normal(n) => Some(n.to_os_string()),
                            Component::ParentDir => Some(OsString::from("..")),
                            _ => None,
                        })
                        .collect();
                    next.extend(pending.drain(..));
                    pending = next.into();
                }
                Ok(md) if md.is_dir() => resolved.push(name),
                Ok(_) => {
                    return Err(self.bad(format!(
                        "{} is used as a directory but is a file",
                        rel_key(&[resolved.clone(), vec![name]].concat())
                    )));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let Some(mtime) = create else {
                        return Ok(None);
                    };
                    std::fs::create_dir(&here).io_ctx(|| format!("creating {}", here.display()))?;
                    std::fs::set_permissions(&here, std::fs::Permissions::from_mode(0o755))
                        .io_ctx(|| format!("chmod {}", here.display()))?;
                    resolved.push(name);
                    self.meta.insert(
                        rel_key(&resolved),
                        EntryMeta {
                            uid: 0,
                            gid: 0,
                            mtime,
                        },
                    );
                }
                Err(e) => return Err(e).io_ctx(|| format!("inspecting {}", here.display())),
            }
        }
        Ok(Some(resolved))
    }

    /// Resolves `path` to (host path, key): its parent through [`resolve_dir`], its last
    /// component as is (never followed). `None` for the root itself.
    fn place(&mut self, path: &Path, mtime: i64) -> Result<Option<(PathBuf, String)>> {
        let mut parts = self.components(path)?;
        let Some(name) = parts.pop() else {
            return Ok(None);
        };
        let mut at = self.resolve_dir(&parts, mtime)?;
        at.push(name);
        let mut host = self.root.clone();
        host.extend(&at);
        Ok(Some((host, rel_key(&at))))
    }

    /// Removes whatever is at `key` (and below it) from disk and from the records.
    fn forget(&mut self, host: &Path, key: &str) -> Result<()> {
        match std::fs::symlink_metadata(host) {
            Ok(md) if md.is_dir() => std::fs::remove_dir_all(host),
            Ok(_) => std::fs::remove_file(host),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
        .io_ctx(|| format!("removing {}", host.display()))?;
        let below = format!("{key}/");
        self.meta.retain(|k, _| k != key && !k.starts_with(&below));
        self.modes.retain(|k, _| k != key && !k.starts_with(&below));
        self.special
            .retain(|k, _| k != key && !k.starts_with(&below));
        Ok(())
    }

    /// A whiteout: `path` is deleted from the lower layers.
    pub fn whiteout(&mut self, path: &Path) -> Result<()> {
        if let Some((host, key)) = self.place(path, 0)? {
            self.forget(&host, &key)?;
        }
        Ok(())
    }

    /// An opaque whiteout: everything in directory `dir` from the lower layers goes, except the
    /// entries in `keep` (relative keys this layer has already written).
    pub fn opaque(&mut self, dir: &Path, keep: &std::collections::HashSet<String>) -> Result<()> {
        let parts = self.components(dir)?;
        let at = self.resolve_dir(&parts, 0)?;
        let mut host = self.root.clone();
        host.extend(&at);
        let prefix = rel_key(&at);
        let entries = std::fs::read_dir(&host).io_ctx(|| format!("listing {}", host.display()))?;
        for e in entries {
            let e = e.io_ctx(|| format!("listing {}", host.display()))?;
            let key = if prefix.is_empty() {
                e.file_name().to_string_lossy().into_owned()
            } else {
                format!("{prefix}/{}", e.file_name().to_string_lossy())
            };
            if !keep.contains(&key) {
                self.forget(&e.path(), &key)?;
            }
        }
        // Device nodes live only in the records.
        let below = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        self.special
            .retain(|k, _| !k.starts_with(&below) || keep.contains(k));
        Ok(())
    }

    /// Prepares `path` for a new entry: removes a different entry there (a directory over a
    /// directory is kept, so layers merge). Returns the host path and key, or `None` for the root.
    fn prepare(
        &mut self,
        path: &Path,
        is_dir: bool,
        mtime: i64,
    ) -> Result<Option<(PathBuf, String)>> {
        let Some((host, key)) = self.place(path, mtime)? else {
            return Ok(None);
        };
        if let Ok(md) = std::fs::symlink_metadata(&host)
            && !(is_dir && md.is_dir())
        {
            self.forget(&host, &key)?;
        }
        self.special.remove(&key);
        Ok(Some((host, key)))
    }

    /// Adds (or updates) a directory. Returns its key (`""` for the root).
    pub fn add_dir(&mut self, path: &Path, mode: u32, meta: EntryMeta) -> Result<String> {
        let Some((host, key)) = self.prepare(path, true, meta.mtime)? else {
            let root = self.root.clone();
            self.stage_mode(&root, String::new(), mode, true)?;
            return Ok(String::new());
        };
        if !host.is_dir() {
            std::fs::create_dir(&host).io_ctx(|| format!("creating {}", host.display()))?;
        }
        self.stage_mode(&host, key.clone(), mode, true)?;
        self.meta.insert(key.clone(), meta);
        Ok(key)
    }

    /// Adds a regular file with the content read from `data`.
    pub fn add_file(
        &mut self,
        path: &Path,
        mode: u32,
        meta: EntryMeta,
        data: &mut dyn Read,
    ) -> Result<String> {
        let Some((host, key)) = self.prepare(path, false, meta.mtime)? else {
            return Err(self.bad("a file entry names the root directory".into()));
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&host)
            .io_ctx(|| format!("creating {}", host.display()))?;
        std::io::copy(data, &mut f)
            .map_err(|e| self.bad(format!("reading the content of {}: {e}", path.display())))?;
        drop(f);
        self.stage_mode(&host, key.clone(), mode, false)?;
        self.meta.insert(key.clone(), meta);
        Ok(key)
    }

    /// Adds a symlink (its target is stored as is; it is resolved by the guest).
    pub fn add_symlink(&mut self, path: &Path, target: &Path, meta: EntryMeta) -> Result<String> {
        let Some((host, key)) = self.prepare(path, false, meta.mtime)? else {
            return Err(self.bad("a symlink entry names the root directory".into()));
        };
        std::os::unix::fs::symlink(target, &host)
            .io_ctx(|| format!("creating symlink {}", host.display()))?;
        self.meta.insert(key.clone(), meta);
        Ok(key)
    }

    /// Adds a hard link to an entry already in the tree.
    pub fn add_hardlink(&mut self, path: &Path, target: &Path) -> Result<String> {
        let Some((target_host, target_key)) = self.place(target, 0)? else {
            return Err(self.bad("a hard link points at the root directory".into()));
        };
        let md = std::fs::symlink_metadata(&target_host).map_err(|_| {
            self.bad(format!(
                "hard link {} points at missing {}",
                path.display(),
                target.display()
            ))
        })?;
        if md.is_dir() {
            return Err(self.bad(format!(
                "hard link {} points at a directory",
                path.display()
            )));
        }
        let target_meta = self.meta.get(&target_key).copied();
        let Some((host, key)) = self.prepare(path, false, 0)? else {
            return Err(self.bad("a hard link entry names the root directory".into()));
        };
        if host == target_host {
            return Ok(key);
        }
        std::fs::hard_link(&target_host, &host).io_ctx(|| format!("linking {}", host.display()))?;
        if let Some(m) = target_meta {
            self.meta.insert(key.clone(), m);
        }
        if let Some(m) = self.modes.get(&target_key).copied() {
            self.modes.insert(key.clone(), m);
        }
        Ok(key)
    }

    /// Records a device node (created in the filesystem image later; nothing on disk).
    pub fn add_special(
        &mut self,
        path: &Path,
        node: SpecialNode,
        meta: EntryMeta,
    ) -> Result<String> {
        let Some((_, key)) = self.prepare(path, false, meta.mtime)? else {
            return Err(self.bad("a device entry names the root directory".into()));
        };
        self.special.insert(key.clone(), node);
        self.meta.insert(key.clone(), meta);
        Ok(key)
    }

    /// Adds a FIFO (unprivileged users may make those).
    pub fn add_fifo(&mut self, path: &Path, mode: u32, meta: EntryMeta) -> Result<String> {
        let Some((host, key)) = self.prepare(path, false, meta.mtime)? else {
            return Err(self.bad("a FIFO entry names the root directory".into()));
        };
        nix::unistd::mkfifo(&host, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(std::io::Error::from)
            .io_ctx(|| format!("creating FIFO {}", host.display()))?;
        self.stage_mode(&host, key.clone(), mode, false)?;
        self.meta.insert(key.clone(), meta);
        Ok(key)
    }

    /// The content of the regular file at `path` as the guest would see it (parents resolved in
    /// the root, the file itself not followed), if there is one.
    pub fn read_regular(&mut self, path: &Path) -> Option<Vec<u8>> {
        let mut parts = self.components(path).ok()?;
        let name = parts.pop()?;
        let mut at = self.walk_dir(&parts, None).ok()??;
        at.push(name);
        let mut host = self.root.clone();
        host.extend(&at);
        let md = std::fs::symlink_metadata(&host).ok()?;
        if !md.is_file() {
            return None;
        }
        std::fs::read(&host).ok()
    }

    /// Sets each entry's modification and access time on disk to its recorded mtime, after every
    /// write (adding a child changes a directory's mtime). The root gets `root_mtime`.
    pub fn settle_times(&self, root_mtime: i64) -> Result<()> {
        use nix::sys::stat::{UtimensatFlags, utimensat};
        use nix::sys::time::TimeSpec;
        let set = |p: &Path, t: i64| -> Result<()> {
            let ts = TimeSpec::new(t, 0);
            utimensat(
                nix::fcntl::AT_FDCWD,
                p,
                &ts,
                &ts,
                UtimensatFlags::NoFollowSymlink,
            )
            .map_err(std::io::Error::from)
            .io_ctx(|| format!("setting times of {}", p.display()))
        };
        for (key, m) in &self.meta {
            if self.special.contains_key(key) {
                continue;
            }
            set(&self.root.join(key), m.mtime)?;
        }
        set(&self.root, root_mtime)
    }
}

impl Staging {
    /// Records `mode` for `key` and gives the staged copy that plus owner access.
    fn stage_mode(&mut self, host: &Path, key: String, mode: u32, is_dir: bool) -> Result<()> {
        let mode = mode & 0o7777;
        let owner = if is_dir { 0o700 } else { 0o600 };
        std::fs::set_permissions(host, std::fs::Permissions::from_mode(mode | owner))
            .io_ctx(|| format!("chmod {}", host.display()))?;
        self.modes.insert(key, mode);
        Ok(())
    }
}

#[cfg(test)]
#[path = "staging_tests.rs"]
mod tests;
