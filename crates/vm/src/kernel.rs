//! The guest kernel the node boots apps with (`--vm-kernel`), and the files a boot needs.
//!
//! A kernel with virtio-mmio, virtio-blk, virtio-net and ext4 built in (Firecracker's guest
//! kernels) boots straight into the rootfs. A kernel that has those drivers as modules (Debian's
//! `linux-image-cloud-amd64`) comes with a `modules/` directory beside it (made by
//! `scripts/fetch-vm-kernel.sh`), and each boot then gets our small initramfs that loads them.

use crate::error::{Result, VmError};
use crate::initramfs;
use std::path::{Path, PathBuf};

/// A guest kernel and, when it needs them, the modules to load before the rootfs can be mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestKernel {
    pub kernel: PathBuf,
    /// A directory with `*.ko` files and an `order` file.
    pub modules: Option<PathBuf>,
}

/// What the VMM is handed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFiles {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
}

impl GuestKernel {
    /// The kernel at `path`, with the `modules/` directory beside it if there is one.
    pub fn from_path(path: &Path) -> Result<GuestKernel> {
        if !path.is_file() {
            return Err(VmError::Missing {
                what: "guest kernel",
                path: path.to_path_buf(),
            });
        }
        let modules = path
            .parent()
            .map(|d| d.join("modules"))
            .filter(|m| m.join("order").is_file());
        Ok(GuestKernel {
            kernel: path.to_path_buf(),
            modules,
        })
    }

    /// The kernel, plus the initramfs for its modules (built into `cache_dir` once per content)
    /// when it has any. `init` is the guest init binary that runs as stage 1 in it.
    pub fn boot_files(&self, init: &Path, cache_dir: &Path) -> Result<BootFiles> {
        if !self.kernel.is_file() {
            return Err(VmError::Missing {
                what: "guest kernel",
                path: self.kernel.clone(),
            });
        }
        let initrd = match &self.modules {
            None => None,
            Some(dir) => {
                if !init.is_file() {
                    return Err(VmError::Missing {
                        what: "guest init binary",
                        path: init.to_path_buf(),
                    });
                }
                Some(initramfs::cached(init, dir, cache_dir)?)
            }
        };
        Ok(BootFiles {
            kernel: self.kernel.clone(),
            initrd,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_kernel_is_named() {
        let e = GuestKernel::from_path(Path::new("/nonexistent/vmlinuz")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "guest kernel /nonexistent/vmlinuz is missing or not a regular file"
        );
    }

    #[test]
    fn modules_beside_the_kernel_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("vmlinuz");
        std::fs::write(&k, b"kernel").unwrap();
        assert_eq!(GuestKernel::from_path(&k).unwrap().modules, None);
        std::fs::create_dir(dir.path().join("modules")).unwrap();
        std::fs::write(dir.path().join("modules/order"), "").unwrap();
        assert_eq!(
            GuestKernel::from_path(&k).unwrap().modules,
            Some(dir.path().join("modules"))
        );
        let files = GuestKernel {
            kernel: k.clone(),
            modules: None,
        }
        .boot_files(Path::new("/nonexistent/init"), dir.path())
        .unwrap();
        assert_eq!(
            files,
            BootFiles {
                kernel: k,
                initrd: None
            }
        );
    }
}
