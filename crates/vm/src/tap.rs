//! Tap devices for VMs: created through `/dev/net/tun`, given the host side's address, removed
//! when the [`Tap`] is dropped.
//!
//! Two lifetimes, for the two ways a VMM takes a tap: QEMU inherits our descriptor, so the tap
//! is non-persistent and disappears with the last descriptor (ours and QEMU's); Firecracker opens
//! the tap by name itself, so the tap is made persistent and deleted explicitly on drop. Either
//! way nothing outlives the VM.
//!
//! Unless its config asks for egress ([`crate::egress`]), the guest reaches only the host side's
//! address: no NAT is set up, and forwarding of packets
//! that arrive from the tap is switched off on the tap itself (`net.ipv4.conf.<tap>.forwarding
//! = 0`, which holds even when the host forwards in general, as it does with Docker), and IPv6 is
//! off on the tap.
//!
//! Like every interface call here, creation acts in the calling thread's network namespace.

use crate::error::{IoContext, Result};
use crate::spec::TapConfig;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use tabbify_vm_init::netif;

const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;

/// A tap device that is removed when dropped.
#[derive(Debug)]
pub struct Tap {
    name: String,
    /// Held for a non-persistent tap (QEMU gets a copy).
    fd: Option<OwnedFd>,
    persistent: bool,
    /// The guest's way out, when its config asks for one; removed before the tap.
    egress: Option<crate::egress::Egress>,
}

/// How the VMM will attach to the tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapMode {
    /// We keep a descriptor and hand it to the VMM (QEMU `-netdev tap,fd=N`).
    Descriptor,
    /// The VMM opens it by name (Firecracker `host_dev_name`).
    ByName,
}

fn open_tun(name: &str) -> Result<OwnedFd> {
    // SAFETY: open(2) of a fixed path; the descriptor is owned right away.
    let fd = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).io_ctx(|| "opening /dev/net/tun".into());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = netif::ifreq_for(name).io_ctx(|| format!("tap {name}"))?;
    req.ifr_ifru.ifru_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    // SAFETY: TUNSETIFF reads/writes the ifreq we pass.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF as _, &raw mut req) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error())
            .io_ctx(|| format!("creating tap {name} (TUNSETIFF; needs CAP_NET_ADMIN)"));
    }
    Ok(fd)
}

fn set_persist(fd: &OwnedFd, on: bool, name: &str) -> Result<()> {
    // SAFETY: TUNSETPERSIST takes an integer argument.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETPERSIST as _,
            libc::c_ulong::from(on),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error())
            .io_ctx(|| format!("TUNSETPERSIST {on} on tap {name}"));
    }
    Ok(())
}

impl Tap {
    /// Creates the tap of `cfg`, gives the host side its address and brings it up. A leftover
    /// tap of the same name (from a VM that crashed) is taken over.
    pub fn create(cfg: &TapConfig, mode: TapMode) -> Result<Tap> {
        cfg.validate()?;
        let fd = open_tun(&cfg.name)?;
        // Adopt a leftover persistent tap; it then lives as long as our descriptor.
        set_persist(&fd, mode == TapMode::ByName, &cfg.name)?;
        // From here on, dropping `tap` removes the device.
        let mut tap = Tap {
            name: cfg.name.clone(),
            fd: Some(fd),
            persistent: mode == TapMode::ByName,
            egress: None,
        };
        isolate(&cfg.name)?;
        netif::set_ipv4(&cfg.name, cfg.host_addr, cfg.prefix_len)
            .io_ctx(|| format!("tap {}", cfg.name))?;
        netif::set_up(&cfg.name, None).io_ctx(|| format!("tap {}", cfg.name))?;
        if cfg.egress {
            tap.egress = Some(crate::egress::Egress::open(cfg)?);
        }
        if mode == TapMode::ByName {
            // The VMM attaches itself; ours would make it EBUSY.
            tap.fd = None;
        }
        tracing::debug!(tap = %cfg.name, host = %cfg.host_addr, "tap created");
        Ok(tap)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The descriptor to hand to the VMM ([`TapMode::Descriptor`] only).
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|f| f.as_fd())
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        drop(self.egress.take());
        // Non-persistent: gone once this and the VMM's copy are closed.
        drop(self.fd.take());
        if !self.persistent {
            return;
        }
        // Persistent: attach once more and clear the flag; closing then removes it.
        match open_tun(&self.name) {
            Ok(fd) => {
                if let Err(e) = set_persist(&fd, false, &self.name) {
                    tracing::warn!(tap = %self.name, error = %e, "could not remove tap");
                }
            }
            Err(e) => tracing::warn!(tap = %self.name, error = %e, "could not remove tap"),
        }
    }
}

/// No forwarding of what the guest sends, no IPv6 on the tap.
fn isolate(name: &str) -> Result<()> {
    for (path, value) in [
        (format!("/proc/sys/net/ipv4/conf/{name}/forwarding"), "0"),
        (format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1"),
    ] {
        // IPv6 may be off in the kernel altogether: then there is nothing to turn off.
        if path.contains("ipv6") && !std::path::Path::new(&path).exists() {
            continue;
        }
        std::fs::write(&path, value).io_ctx(|| format!("writing {value} to {path}"))?;
    }
    Ok(())
}

/// `net.ipv4.conf.<name>.forwarding` as the calling thread's namespace has it.
pub fn forwarding_enabled(name: &str) -> Option<bool> {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{name}/forwarding"))
        .ok()
        .map(|v| v.trim() != "0")
}

/// True when an interface called `name` exists in the calling thread's network namespace.
pub fn interface_exists(name: &str) -> bool {
    let Ok(mut req) = netif::ifreq_for(name) else {
        return false;
    };
    // SAFETY: a plain datagram socket used for one query, closed right after.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return false;
    }
    // SAFETY: SIOCGIFINDEX fills the ifreq we pass.
    let rc = unsafe { libc::ioctl(sock, libc::SIOCGIFINDEX as _, &raw mut req) };
    // SAFETY: closing the socket made above.
    unsafe { libc::close(sock) };
    rc == 0
}
