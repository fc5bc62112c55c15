//! The few system operations both init stages need: mounting, the console, the kernel command
//! line, waiting for a device to appear, and powering the VM off.

use anyhow::{Context, Result};
use nix::mount::{MsFlags, mount};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};
use tabbify_vm_init::contract::GuestEvent;

/// Prints an event line for the host on the console.
pub fn report(event: &GuestEvent) {
    eprintln!("{}", event.render());
}

/// True when `path` is the root of a mount (its device differs from its parent's).
pub fn is_mountpoint(path: &Path) -> bool {
    let (Ok(me), Some(Ok(parent))) = (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) else {
        return false;
    };
    me.dev() != parent.dev()
}

/// Mounts `fstype` on `target` (created when missing) unless something is mounted there already.
pub fn mount_fs(fstype: &str, target: &str, flags: MsFlags, data: Option<&str>) -> Result<()> {
    let t = Path::new(target);
    if !t.is_dir() {
        std::fs::create_dir_all(t).with_context(|| format!("creating mount point {target}"))?;
    }
    if is_mountpoint(t) {
        return Ok(());
    }
    mount(Some(fstype), t, Some(fstype), flags, data)
        .with_context(|| format!("mounting {fstype} on {target}"))
}

/// Makes sure descriptors 0, 1 and 2 are open, on `/dev/console` when they were not.
pub fn ensure_console() {
    // SAFETY: F_GETFD only queries the descriptor.
    let open = unsafe { libc::fcntl(1, libc::F_GETFD) } >= 0;
    if open {
        return;
    }
    let Ok(console) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    else {
        return;
    };
    let fd = std::os::fd::IntoRawFd::into_raw_fd(console);
    for target in 0..3 {
        // SAFETY: dup2 onto the standard descriptors, which nothing else owns yet.
        unsafe { libc::dup2(fd, target) };
    }
    if fd > 2 {
        // SAFETY: fd is ours and no longer needed.
        unsafe { libc::close(fd) };
    }
}

pub fn read_cmdline() -> Result<String> {
    std::fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")
}

/// Polls until `path` exists, for at most `timeout`.
pub fn wait_for(path: &Path, timeout: Duration, what: &str) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        if Instant::now() >= deadline {
            anyhow::bail!(
                "{what} {} did not appear within {timeout:?}",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Flushes the filesystems and ends the VM (reboot, which both VMMs turn into an exit). Outside
/// a VM (not PID 1) it just exits with `code`.
pub fn power_off(code: i32) -> ! {
    nix::unistd::sync();
    if std::process::id() == 1 {
        let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
        // reboot(2) does not return for PID 1 with privileges; if it did, PID 1 exiting makes the
        // kernel panic, and `panic=-1` turns that into a reboot too.
    }
    std::process::exit(code)
}

/// `MsFlags` for a plain, unprivileged pseudo filesystem.
pub fn nosuid_nodev_noexec() -> MsFlags {
    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC
}

/// Time since init started, for the boot report.
pub fn uptime_ms() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map(|s| (s * 1000.0) as u64)
        .unwrap_or(0)
}
