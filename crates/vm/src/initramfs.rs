//! The small initramfs for guest kernels that have their virtio drivers as modules (Debian's
//! cloud kernel): our init as `/init` (it runs as stage 1 there), the modules and their load
//! order, `/dev/console`, and the marker that tells init which stage it is. Written as an
//! uncompressed `newc` cpio archive by hand — the format is a fixed header per entry — with fixed
//! inode numbers and times, so the same inputs give the same bytes; cached by digest.

use crate::error::{IoContext, Result, VmError};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tabbify_vm_init::contract::{
    INITRAMFS_MARKER, INITRAMFS_MODULES_DIR, MODULE_ORDER_FILE, NEW_ROOT,
};

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

/// A `newc` cpio archive being written.
#[derive(Default)]
pub struct Cpio {
    out: Vec<u8>,
    next_ino: u32,
}

impl Cpio {
    fn pad4(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) -> Result<()> {
        let size = u32::try_from(data.len())
            .map_err(|_| VmError::Spec(format!("initramfs file {name} is over 4 GiB")))?;
        let namesize = u32::try_from(name.len() + 1)
            .map_err(|_| VmError::Spec("initramfs name too long".into()))?;
        self.next_ino += 1;
        let nlink = if mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
        let fields = [
            self.next_ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: fixed, so the archive is reproducible
            size,
            0,
            0,
            rdev.0,
            rdev.1,
            namesize,
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad4();
        self.out.extend_from_slice(data);
        self.pad4();
        Ok(())
    }

    pub fn dir(&mut self, name: &str, perm: u32) -> Result<()> {
        self.entry(name, S_IFDIR | perm, (0, 0), &[])
    }

    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> Result<()> {
        self.entry(name, S_IFREG | perm, (0, 0), data)
    }

    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> Result<()> {
        self.entry(name, S_IFCHR | perm, (major, minor), &[])
    }

    /// Ends the archive and returns its bytes.
    pub fn finish(mut self) -> Result<Vec<u8>> {
        self.next_ino = 0;
        self.entry("TRAILER!!!", 0, (0, 0), &[])?;
        // The kernel reads whole 512-byte blocks happily; pad like cpio(1) does.
        while !self.out.len().is_multiple_of(512) {
            self.out.push(0);
        }
        Ok(self.out)
    }
}

/// The module files named in `modules_dir/order`, checked to exist.
pub fn module_list(modules_dir: &Path) -> Result<Vec<String>> {
    let order = modules_dir.join(MODULE_ORDER_FILE);
    let text = std::fs::read_to_string(&order).io_ctx(|| format!("reading {}", order.display()))?;
    let mut list = Vec::new();
    for name in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if name.contains('/') || !name.ends_with(".ko") {
            return Err(VmError::Spec(format!(
                "{}: {name:?} is not a module file name (NAME.ko)",
                order.display()
            )));
        }
        if !modules_dir.join(name).is_file() {
            return Err(VmError::Missing {
                what: "kernel module",
                path: modules_dir.join(name),
            });
        }
        list.push(name.to_string());
    }
    Ok(list)
}

/// The archive for `init` and the modules of `modules_dir`.
pub fn build(init: &Path, modules_dir: &Path) -> Result<Vec<u8>> {
    let modules = module_list(modules_dir)?;
    let rel = |p: &str| p.trim_start_matches('/').to_string();
    let mut c = Cpio::default();
    c.file(&rel(INITRAMFS_MARKER), 0o644, b"")?;
    c.dir("dev", 0o755)?;
    c.char_dev("dev/console", 0o600, 5, 1)?;
    for d in ["proc", "sys", &rel(NEW_ROOT)] {
        c.dir(d, 0o755)?;
    }
    let init_bytes = std::fs::read(init).io_ctx(|| format!("reading {}", init.display()))?;
    c.file("init", 0o755, &init_bytes)?;
    let mdir = rel(INITRAMFS_MODULES_DIR);
    c.dir(&mdir, 0o755)?;
    for m in &modules {
        let p = modules_dir.join(m);
        let bytes = std::fs::read(&p).io_ctx(|| format!("reading {}", p.display()))?;
        c.file(&format!("{mdir}/{m}"), 0o644, &bytes)?;
    }
    c.file(
        &format!("{mdir}/{MODULE_ORDER_FILE}"),
        0o644,
        format!("{}\n", modules.join("\n")).as_bytes(),
    )?;
    c.finish()
}

/// Builds (or finds) the initramfs for `init` + `modules_dir` in `cache_dir`, by digest.
pub fn cached(init: &Path, modules_dir: &Path, cache_dir: &Path) -> Result<PathBuf> {
    let bytes = build(init, modules_dir)?;
    let digest = hex::encode(Sha256::digest(&bytes));
    let path = cache_dir.join(format!("initramfs-{digest}.cpio"));
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(cache_dir).io_ctx(|| format!("creating {}", cache_dir.display()))?;
    let tmp = cache_dir.join(format!(
        ".initramfs-{digest}.tmp-{:08x}",
        rand::random::<u32>()
    ));
    std::fs::write(&tmp, &bytes).io_ctx(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).io_ctx(|| format!("renaming to {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal newc reader, to check what we wrote.
    fn parse(mut b: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let total = b.len();
        loop {
            assert_eq!(&b[..6], b"070701");
            let field = |i: usize| {
                u32::from_str_radix(std::str::from_utf8(&b[6 + i * 8..14 + i * 8]).unwrap(), 16)
                    .unwrap()
            };
            let (mode, size, namesize) = (field(1), field(6) as usize, field(11) as usize);
            let name = String::from_utf8(b[110..110 + namesize - 1].to_vec()).unwrap();
            let data_at = (110 + namesize).div_ceil(4) * 4;
            let data = b[data_at..data_at + size].to_vec();
            let next = (data_at + size).div_ceil(4) * 4;
            if name == "TRAILER!!!" {
                assert_eq!(total % 512, 0);
                return out;
            }
            out.push((name, mode, data));
            b = &b[next..];
        }
    }

    #[test]
    fn the_archive_holds_init_modules_and_console_and_is_reproducible() {
        let dir = tempfile::tempdir().unwrap();
        let init = dir.path().join("init");
        std::fs::write(&init, b"\x7fELF fake init").unwrap();
        let mods = dir.path().join("modules");
        std::fs::create_dir(&mods).unwrap();
        std::fs::write(mods.join("virtio.ko"), b"mod-a").unwrap();
        std::fs::write(mods.join("virtio_blk.ko"), b"mod-bb").unwrap();
        std::fs::write(mods.join("order"), "virtio.ko\nvirtio_blk.ko\n").unwrap();
        let a = build(&init, &mods).unwrap();
        assert_eq!(a, build(&init, &mods).unwrap());
        let entries = parse(&a);
        let find = |n: &str| {
            entries
                .iter()
                .find(|e| e.0 == n)
                .unwrap_or_else(|| panic!("{n} missing"))
        };
        assert_eq!(find("init").2, b"\x7fELF fake init");
        assert_eq!(find("init").1, S_IFREG | 0o755);
        assert_eq!(find("dev/console").1, S_IFCHR | 0o600);
        assert_eq!(find("modules/virtio_blk.ko").2, b"mod-bb");
        assert_eq!(find("modules/order").2, b"virtio.ko\nvirtio_blk.ko\n");
        assert!(entries.iter().any(|e| e.0 == ".tabbify-initramfs"));
        let p1 = cached(&init, &mods, dir.path()).unwrap();
        assert_eq!(p1, cached(&init, &mods, dir.path()).unwrap());
        assert_eq!(std::fs::read(&p1).unwrap(), a);
    }

    #[test]
    fn a_missing_module_or_a_bad_order_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("order"), "virtio.ko\n").unwrap();
        assert!(matches!(
            module_list(dir.path()),
            Err(VmError::Missing { .. })
        ));
        std::fs::write(dir.path().join("order"), "../etc/passwd\n").unwrap();
        assert!(matches!(module_list(dir.path()), Err(VmError::Spec(_))));
    }
}
