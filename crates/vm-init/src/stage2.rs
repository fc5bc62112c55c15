//! Stage 2, init in the app's root filesystem: mount the pseudo filesystems, configure the network
//! from the kernel command line, read the app description and hand over to [`supervise`].

use crate::{supervise, sys};
use anyhow::{Context, Result, bail};
use nix::mount::MsFlags;
use std::time::{Duration, Instant};
use tabbify_vm_init::contract::{
    APP_CONFIG_PATH, CMDLINE_HOSTNAME, GuestApp, GuestEvent, GuestNet, cmdline_param,
};
use tabbify_vm_init::netif;

/// How long the network interface may take to appear.
const NIC_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the app to its end; returns the code init exits with (the app's, or 128+signal).
pub fn run() -> Result<i32> {
    mount_pseudo_filesystems()?;
    sys::ensure_console();
    let cmdline = sys::read_cmdline()?;
    configure_network(&cmdline)?;
    if let Some(name) = cmdline_param(&cmdline, CMDLINE_HOSTNAME) {
        nix::unistd::sethostname(name).with_context(|| format!("setting hostname {name:?}"))?;
    }
    let text = std::fs::read_to_string(APP_CONFIG_PATH)
        .with_context(|| format!("reading {APP_CONFIG_PATH}"))?;
    let app: GuestApp =
        serde_json::from_str(&text).with_context(|| format!("parsing {APP_CONFIG_PATH}"))?;
    app.validate()?;
    eprintln!(
        "{}info: kernel and init up after {} ms",
        tabbify_vm_init::contract::EVENT_PREFIX,
        sys::uptime_ms()
    );
    sys::report(&GuestEvent::Booted);
    supervise::run(&app)
}

fn mount_pseudo_filesystems() -> Result<()> {
    let plain = sys::nosuid_nodev_noexec();
    sys::mount_fs("proc", "/proc", plain, None)?;
    sys::mount_fs("sysfs", "/sys", plain, None)?;
    sys::mount_fs("devtmpfs", "/dev", MsFlags::MS_NOSUID, Some("mode=0755"))?;
    sys::mount_fs(
        "devpts",
        "/dev/pts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0620,ptmxmode=0666"),
    )?;
    sys::mount_fs(
        "tmpfs",
        "/dev/shm",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    sys::mount_fs(
        "tmpfs",
        "/tmp",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    sys::mount_fs(
        "tmpfs",
        "/run",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )?;
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        if std::fs::symlink_metadata(link).is_err() {
            let _ = std::os::unix::fs::symlink(target, link);
        }
    }
    Ok(())
}

fn configure_network(cmdline: &str) -> Result<()> {
    netif::set_up("lo", None).context("loopback")?;
    let Some(net) = GuestNet::from_cmdline(cmdline)? else {
        return Ok(());
    };
    let nic = wait_for_nic()?;
    netif::set_ipv4(&nic, net.addr, net.prefix_len)?;
    netif::set_up(&nic, None)?;
    if let Some(gw) = net.gateway {
        netif::add_default_route(gw)?;
    }
    Ok(())
}

/// The first interface other than loopback, once the kernel has made it.
fn wait_for_nic() -> Result<String> {
    let deadline = Instant::now() + NIC_TIMEOUT;
    loop {
        let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
            .context("listing /sys/class/net")?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "lo")
            .collect();
        names.sort();
        if let Some(first) = names.into_iter().next() {
            return Ok(first);
        }
        if Instant::now() >= deadline {
            bail!(
                "no network interface appeared within {NIC_TIMEOUT:?} (is virtio-net in the kernel?)"
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
