//! Stage 1, run from our initramfs when the guest kernel has the virtio drivers as modules (as
//! Debian's cloud kernel does): load the modules listed in the initramfs, wait for the root
//! device, mount it, move `/dev` over, switch the root to it and exec the init found there.

use crate::sys;
use anyhow::{Context, Result, bail};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use std::ffi::CString;
use std::path::Path;
use std::time::Duration;
use tabbify_vm_init::contract::{
    INIT_PATH, INITRAMFS_MODULES_DIR, MODULE_ORDER_FILE, NEW_ROOT, cmdline_flag, cmdline_param,
    module_name, module_params,
};

/// How long the root device may take to show up after its driver loaded.
const ROOT_DEVICE_TIMEOUT: Duration = Duration::from_secs(20);

/// Returns only on error; on success it has exec'd stage 2.
pub fn run() -> Result<i32> {
    sys::mount_fs("devtmpfs", "/dev", MsFlags::MS_NOSUID, Some("mode=0755"))?;
    sys::ensure_console();
    sys::mount_fs("proc", "/proc", sys::nosuid_nodev_noexec(), None)?;
    sys::mount_fs("sysfs", "/sys", sys::nosuid_nodev_noexec(), None)?;
    let cmdline = sys::read_cmdline()?;
    load_modules(&cmdline)?;

    let root = cmdline_param(&cmdline, "root").unwrap_or("/dev/vda");
    let fstype = cmdline_param(&cmdline, "rootfstype").unwrap_or("ext4");
    let mut flags = MsFlags::empty();
    if cmdline_flag(&cmdline, "ro") {
        flags |= MsFlags::MS_RDONLY;
    }
    sys::wait_for(Path::new(root), ROOT_DEVICE_TIMEOUT, "root device")?;
    std::fs::create_dir_all(NEW_ROOT).context("creating /newroot")?;
    mount(Some(root), NEW_ROOT, Some(fstype), flags, None::<&str>)
        .with_context(|| format!("mounting the root filesystem {root} ({fstype})"))?;
    // Ours unless the command line names another (a root filesystem that brings its own init).
    let init = cmdline_param(&cmdline, "init").unwrap_or(INIT_PATH);
    let next = format!("{NEW_ROOT}{init}");
    if !Path::new(&next).is_file() {
        bail!("the root filesystem on {root} has no {init}");
    }

    let new_dev = format!("{NEW_ROOT}/dev");
    if std::fs::create_dir_all(&new_dev).is_ok() {
        mount(
            Some("/dev"),
            new_dev.as_str(),
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .context("moving /dev into the root filesystem")?;
    }
    let _ = umount2("/proc", MntFlags::MNT_DETACH);
    let _ = umount2("/sys", MntFlags::MNT_DETACH);
    // The initramfs stays in memory as long as files are in it: drop the big ones.
    let _ = std::fs::remove_dir_all(INITRAMFS_MODULES_DIR);
    let _ = std::fs::remove_file("/init");

    std::env::set_current_dir(NEW_ROOT).context("chdir /newroot")?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .context("moving the root filesystem to /")?;
    nix::unistd::chroot(".").context("chroot")?;
    std::env::set_current_dir("/").context("chdir /")?;

    let path = CString::new(init).context("init path")?;
    let argv = [path.clone()];
    let err = nix::unistd::execv(&path, &argv);
    bail!("exec {init}: {err:?}")
}

/// Loads each module named in the order file, with its parameters from the command line.
fn load_modules(cmdline: &str) -> Result<()> {
    let dir = Path::new(INITRAMFS_MODULES_DIR);
    let order = dir.join(MODULE_ORDER_FILE);
    let Ok(list) = std::fs::read_to_string(&order) else {
        return Ok(());
    };
    for file in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = dir.join(file);
        let f = std::fs::File::open(&path)
            .with_context(|| format!("opening module {}", path.display()))?;
        let params =
            CString::new(module_params(cmdline, module_name(file))).context("module parameters")?;
        match nix::kmod::finit_module(&f, &params, nix::kmod::ModuleInitFlags::empty()) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => bail!("loading kernel module {file}: {e}"),
        }
    }
    Ok(())
}
