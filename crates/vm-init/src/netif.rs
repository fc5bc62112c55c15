//! IPv4 configuration of a network interface through the classic `SIOC*` ioctls: the guest's
//! init configures its interface with it, and the host configures its side of a tap. No netlink
//! library and no `ip` binary, so the static guest init stays small and the host needs no
//! iproute2.
//!
//! Each call acts in the network namespace of the calling thread.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Longest interface name the kernel takes (without the NUL).
pub const MAX_IFNAME: usize = libc::IFNAMSIZ - 1;

fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A zeroed `ifreq` naming `name`; fails for names the kernel would reject.
pub fn ifreq_for(name: &str) -> io::Result<libc::ifreq> {
    if name.is_empty() || name.len() > MAX_IFNAME || name.bytes().any(|b| b == 0 || b == b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?} (1..={MAX_IFNAME} bytes, no '/')"),
        ));
    }
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size on Linux; this is how the C API is
    // meant to be used.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ioctl(
    fd: &OwnedFd,
    request: libc::c_ulong,
    arg: *mut libc::c_void,
    what: &str,
) -> io::Result<()> {
    // SAFETY: `arg` points at a live, correctly typed struct for `request` (callers pass an
    // ifreq or an rtentry); the kernel reads/writes only within it.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

/// Gives `name` the address `addr/prefix_len` (replacing its primary IPv4 address).
pub fn set_ipv4(name: &str, addr: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
    let sock = control_socket()?;
    let mut req = ifreq_for(name)?;
    req.ifr_ifru.ifru_addr = sockaddr_in(addr);
    ioctl(
        &sock,
        libc::SIOCSIFADDR as _,
        (&raw mut req).cast(),
        &format!("setting address {addr} on {name}"),
    )?;
    let mut req = ifreq_for(name)?;
    req.ifr_ifru.ifru_netmask = sockaddr_in(crate::contract::prefix_to_netmask(prefix_len));
    ioctl(
        &sock,
        libc::SIOCSIFNETMASK as _,
        (&raw mut req).cast(),
        &format!("setting netmask /{prefix_len} on {name}"),
    )
}

/// Brings `name` up (and sets its MTU first when `mtu` is given).
pub fn set_up(name: &str, mtu: Option<u32>) -> io::Result<()> {
    let sock = control_socket()?;
    if let Some(mtu) = mtu {
        let mut req = ifreq_for(name)?;
        req.ifr_ifru.ifru_mtu = i32::try_from(mtu)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "MTU out of range"))?;
        ioctl(
            &sock,
            libc::SIOCSIFMTU as _,
            (&raw mut req).cast(),
            &format!("setting MTU {mtu} on {name}"),
        )?;
    }
    let mut req = ifreq_for(name)?;
    ioctl(
        &sock,
        libc::SIOCGIFFLAGS as _,
        (&raw mut req).cast(),
        &format!("reading flags of {name}"),
    )?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    ioctl(
        &sock,
        libc::SIOCSIFFLAGS as _,
        (&raw mut req).cast(),
        &format!("bringing {name} up"),
    )
}

/// Adds a default route through `gateway`.
pub fn add_default_route(gateway: Ipv4Addr) -> io::Result<()> {
    let sock = control_socket()?;
    // SAFETY: rtentry is plain old data; all zeroes is a valid value.
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    rt.rt_dst = sockaddr_in(Ipv4Addr::UNSPECIFIED);
    rt.rt_genmask = sockaddr_in(Ipv4Addr::UNSPECIFIED);
    rt.rt_gateway = sockaddr_in(gateway);
    rt.rt_flags = (libc::RTF_UP | libc::RTF_GATEWAY) as _;
    ioctl(
        &sock,
        libc::SIOCADDRT as _,
        (&raw mut rt).cast(),
        &format!("adding default route via {gateway}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_checked() {
        assert!(ifreq_for("eth0").is_ok());
        assert!(ifreq_for("").is_err());
        assert!(ifreq_for("a-name-too-long-x").is_err());
        assert!(ifreq_for("a/b").is_err());
    }

    #[test]
    fn a_missing_interface_is_a_named_error() {
        let e = set_up("tbf-no-such0", None).unwrap_err();
        assert!(e.to_string().contains("tbf-no-such0"), "{e}");
    }
}
