//! The TUN device: clearing a stale one left by a crash, creating ours with the node's ULA, MTU and
//! a route for the mesh /48, all through ioctls (no `ip` binary needed). The device is never made
//! persistent, so the kernel removes it, with its address and route, when the last descriptor
//! closes: on shutdown, and also when the process dies.

use super::config::DataPlaneConfig;
use super::error::DataPlaneError;
use super::offload::OffloadPolicy;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use tabbify_wire::Ipv6Prefix;
use tun_rs::{DeviceBuilder, SyncDevice};

/// Flag bits of `/sys/class/net/<name>/tun_flags` that TUNSETIFF takes back.
const REATTACH_FLAGS: libc::c_int =
    libc::IFF_TUN | libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE | libc::IFF_VNET_HDR;

/// Creates and configures the node's TUN device (non-blocking descriptor), with offload when
/// `offload` allows and the kernel has it.
pub fn create(cfg: &DataPlaneConfig, offload: OffloadPolicy) -> Result<SyncDevice, DataPlaneError> {
    let name = cfg.tun_name.as_str();
    clear_stale(name)?;
    let plain = || {
        build(cfg, false).map_err(|source| DataPlaneError::CreateTun {
            name: name.into(),
            source,
        })
    };
    // With offload (virtio-net headers) the kernel hands us TCP segments of up to 64 KiB and
    // takes coalesced ones back, instead of one system call per 1420-byte packet. Kernels or
    // sandboxes without it get the plain device.
    let dev = if offload.allows() {
        match build(cfg, true) {
            Ok(dev) => dev,
            Err(e) => {
                tracing::warn!(tun = name, error = %e, "TUN offload unavailable; using plain TUN");
                plain()?
            }
        }
    } else {
        tracing::info!(tun = name, "offload forced off; using plain TUN");
        plain()?
    };
    let configure = |what: &'static str, source: io::Error| DataPlaneError::ConfigureTun {
        name: name.into(),
        what,
        source,
    };
    let if_index = dev
        .if_index()
        .map_err(|e| configure("interface index", e))?;
    add_route(if_index, cfg.mesh_prefix).map_err(|e| configure("route for the mesh prefix", e))?;
    dev.set_nonblocking(true)
        .map_err(|e| configure("non-blocking mode", e))?;
    tracing::info!(
        tun = name,
        ula = %cfg.ula,
        subnet = %cfg.subnet,
        mesh = %cfg.mesh_prefix,
        mtu = cfg.mtu,
        offload = dev.tcp_gso(),
        "TUN device up"
    );
    Ok(dev)
}

fn build(cfg: &DataPlaneConfig, offload: bool) -> io::Result<SyncDevice> {
    DeviceBuilder::new()
        .name(&cfg.tun_name)
        .mtu(cfg.mtu)
        .ipv6(cfg.ula, cfg.subnet.len())
        .with(|b| {
            b.offload(offload);
        })
        .enable(true)
        .build_sync()
}

/// True when an interface called `name` exists in this network namespace.
pub fn interface_exists(name: &str) -> bool {
    let Ok(c) = CString::new(name) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

/// Makes room for our device. A persistent TUN of that name is a leftover (ours never persist):
/// it is deleted. A non-persistent one belongs to a live process: refused. Anything else with
/// the name: refused.
fn clear_stale(name: &str) -> Result<(), DataPlaneError> {
    if !interface_exists(name) {
        return Ok(());
    }
    let flags_path = Path::new("/sys/class/net").join(name).join("tun_flags");
    let Ok(text) = std::fs::read_to_string(&flags_path) else {
        return Err(DataPlaneError::NameTaken { name: name.into() });
    };
    let flags = parse_tun_flags(&text).ok_or_else(|| DataPlaneError::StaleTun {
        name: name.into(),
        source: io::Error::other(format!("unreadable tun_flags {text:?}")),
    })?;
    if flags & libc::IFF_PERSIST == 0 {
        return Err(DataPlaneError::TunBusy { name: name.into() });
    }
    tracing::warn!(tun = name, "removing a stale persistent TUN device");
    delete_persistent_tun(name, flags & REATTACH_FLAGS).map_err(|source| DataPlaneError::StaleTun {
        name: name.into(),
        source,
    })
}

/// `tun_flags` in sysfs is hex such as `0x1001`.
pub fn parse_tun_flags(text: &str) -> Option<libc::c_int> {
    let t = text.trim();
    let hex = t.strip_prefix("0x").unwrap_or(t);
    libc::c_int::from_str_radix(hex, 16).ok()
}

/// Attaches to a persistent TUN device and clears its persist flag; closing the descriptor then
/// deletes it.
fn delete_persistent_tun(name: &str, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: opening a path with a NUL-terminated literal; the result is checked.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = flags as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes the ifreq we pass.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &raw mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: TUNSETPERSIST takes an integer argument.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETPERSIST, 0 as libc::c_ulong) } < 0 {
        return Err(io::Error::last_os_error());
    }
    drop(fd);
    if interface_exists(name) {
        return Err(io::Error::other(
            "device still present after clearing persist",
        ));
    }
    Ok(())
}

/// The kernel's `struct in6_rtmsg` (linux/ipv6_route.h), argument of SIOCADDRT on an AF_INET6
/// socket. (libc declares it with private fields.)
#[repr(C)]
struct In6RtMsg {
    dst: [u8; 16],
    src: [u8; 16],
    gateway: [u8; 16],
    kind: u32,
    dst_len: u16,
    src_len: u16,
    metric: u32,
    info: libc::c_ulong,
    flags: u32,
    ifindex: libc::c_int,
}

/// Adds `prefix` via the interface (main table, metric 1). An existing identical route is fine.
fn add_route(if_index: u32, prefix: Ipv6Prefix) -> io::Result<()> {
    // SAFETY: socket() with constant arguments; the result is checked.
    let sock = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `sock` is a fresh descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    let rt = In6RtMsg {
        dst: prefix.addr().octets(),
        src: [0; 16],
        gateway: [0; 16],
        kind: 0,
        dst_len: u16::from(prefix.len()),
        src_len: 0,
        metric: 1,
        info: 0,
        flags: u32::from(libc::RTF_UP),
        ifindex: if_index as libc::c_int,
    };
    // SAFETY: SIOCADDRT reads the in6_rtmsg we pass.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCADDRT as _, &raw const rt) } < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EEXIST) {
            return Err(err);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sysfs_tun_flags() {
        assert_eq!(parse_tun_flags("0x1001\n"), Some(0x1001));
        assert_eq!(parse_tun_flags("0x0801"), Some(0x0801));
        assert_eq!(parse_tun_flags("zz"), None);
        assert_eq!(
            parse_tun_flags("0x1801").map(|f| f & libc::IFF_PERSIST != 0),
            Some(true)
        );
    }

    #[test]
    fn loopback_exists_and_nonsense_does_not() {
        assert!(interface_exists("lo"));
        assert!(!interface_exists("tbf-no-such"));
    }
}
