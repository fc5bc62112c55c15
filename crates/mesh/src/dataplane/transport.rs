//! The underlay: one UDP socket for every peer, and sending to a [`tabbify_wire::Endpoint`].
//!
//! The socket is dual-stack (`[::]:port`, IPv4 peers as v4-mapped addresses) when the host has
//! IPv6, IPv4-only otherwise. Addresses leave this module in canonical form (plain IPv4), so
//! roaming compares like with like. How an endpoint is reached is decided only in
//! [`UdpTransport::send_to_endpoint`]: a relay endpoint would be one more match arm there.

use super::batch::{DatagramBatch, for_socket};
use super::gso;
use super::offload::OffloadPolicy;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use tabbify_wire::Endpoint;

/// Socket buffer size asked for; bulk transfers stall on the kernel's small default.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

pub struct UdpTransport {
    socket: std::net::UdpSocket,
    dual_stack: bool,
    /// `UDP_SEGMENT` in use; cleared (once, logged) if the kernel refuses to segment.
    gso: AtomicBool,
    /// `UDP_GRO` is on: received messages may hold several datagrams.
    gro: bool,
}

impl UdpTransport {
    /// Binds `port` (0: any free port) on every address and, when `policy` allows, turns on UDP GSO and GRO where the kernel has
    /// them; a missing one is logged once and its plain fallback used.
    pub fn bind_with(port: u16, policy: OffloadPolicy) -> io::Result<Self> {
        let (socket, dual_stack) = match Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))
        {
            Ok(s) => {
                s.set_only_v6(false)?;
                s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
                (s, true)
            }
            // No IPv6 in this kernel or namespace: IPv4 only.
            Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
                s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())?;
                (s, false)
            }
            Err(e) => return Err(e),
        };
        grow_buffers(&socket);
        socket.set_cloexec(true)?;
        let fd = socket.as_raw_fd();
        let (gso, gro) = if policy.allows() {
            let gso = gso::probe_gso(fd)
                .inspect_err(|e| {
                    tracing::warn!(error = %e, "UDP GSO (UDP_SEGMENT) unavailable; sending one datagram per message")
                })
                .is_ok();
            let gro = gso::enable_gro(fd)
                .inspect_err(|e| {
                    tracing::warn!(error = %e, "UDP GRO (UDP_GRO) unavailable; receiving one datagram per message")
                })
                .is_ok();
            (gso, gro)
        } else {
            (false, false)
        };
        Ok(Self {
            socket: socket.into(),
            dual_stack,
            gso: AtomicBool::new(gso),
            gro,
        })
    }

    /// Whether sends use `UDP_SEGMENT` now.
    pub fn gso(&self) -> bool {
        self.gso.load(Ordering::Relaxed)
    }

    /// Whether received messages may carry several datagrams (`UDP_GRO`).
    pub fn gro(&self) -> bool {
        self.gro
    }

    pub fn local_port(&self) -> io::Result<u16> {
        Ok(self.socket.local_addr()?.port())
    }

    pub fn raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Sends one datagram to `to` (blocking while the socket buffer is full, which is the
    /// back-pressure a bulk sender needs).
    pub fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<()> {
        self.socket
            .send_to(buf, for_socket(to, self.dual_stack))
            .map(|_| ())
    }

    /// Sends one datagram to wherever `endpoint` says the peer is.
    pub fn send_to_endpoint(&self, buf: &[u8], endpoint: &Endpoint) -> io::Result<()> {
        match endpoint {
            Endpoint::Udp(addr) => self.send_to(buf, *addr),
        }
    }

    /// Commits the datagram just written into `batch`'s next slot (`len` bytes) for `endpoint`.
    pub fn queue(&self, batch: &mut DatagramBatch, len: usize, endpoint: &Endpoint) {
        match endpoint {
            Endpoint::Udp(addr) => batch.commit(len, for_socket(*addr, self.dual_stack)),
        }
    }

    /// Sends everything queued in `batch`; returns how many GSO messages carried it. A kernel
    /// that refuses to segment (`EIO`: no checksum offload on the way out) turns GSO off for
    /// good, logged once; the refused datagrams were already sent one by one.
    pub fn flush(&self, batch: &mut DatagramBatch) -> usize {
        if batch.is_empty() {
            return 0;
        }
        let report = batch.send(self.socket.as_raw_fd(), self.gso());
        if let Some(e) = report.gso_unsupported
            && self.gso.swap(false, Ordering::Relaxed)
        {
            tracing::warn!(error = %e, "the kernel refused UDP GSO; sending one datagram per message from now on");
        }
        report.gso_messages
    }
}

/// The endpoint a datagram from `from` came from (for roaming).
pub fn endpoint_of_source(from: SocketAddr) -> Endpoint {
    Endpoint::Udp(from)
}

fn grow_buffers(socket: &Socket) {
    // As root, SO_*BUFFORCE goes past net.core.{r,w}mem_max; otherwise take what is allowed.
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        let size = SOCKET_BUFFER_BYTES as libc::c_int;
        let set = |opt| {
            // SAFETY: passes a live c_int and its size.
            unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&raw const size).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            }
        };
        if set(force) != 0 && set(plain) != 0 {
            tracing::debug!(error = %io::Error::last_os_error(), "could not grow UDP socket buffer");
        }
    }
}

pub fn sockaddr_to_std(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: &libc::sockaddr_in = unsafe { &*(std::ptr::from_ref(storage).cast()) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 = unsafe { &*(std::ptr::from_ref(storage).cast()) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                None => SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    port,
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_round_trip_reports_canonical_v4_sources() {
        let a = UdpTransport::bind_with(0, OffloadPolicy::Off).unwrap();
        let b = UdpTransport::bind_with(0, OffloadPolicy::Off).unwrap();
        let b_addr: SocketAddr = (Ipv4Addr::LOCALHOST, b.local_port().unwrap()).into();
        a.send_to_endpoint(b"hello", &Endpoint::Udp(b_addr))
            .unwrap();
        let mut batch = DatagramBatch::with_slots(64, 4);
        let mut got = None;
        for _ in 0..100 {
            match batch.recv(b.raw_fd(), false) {
                Ok(_) => {
                    let (d, from, _) = batch.received(0);
                    got = Some((d.to_vec(), from));
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Err(e) => panic!("{e}"),
            }
        }
        let (data, from) = got.expect("datagram arrives");
        assert_eq!(data, b"hello");
        // The dual-stack socket saw ::ffff:127.0.0.1; it is reported as plain IPv4.
        assert_eq!(
            from,
            Some(SocketAddr::from((
                Ipv4Addr::LOCALHOST,
                a.local_port().unwrap()
            )))
        );
    }

    #[test]
    fn binding_a_taken_port_fails() {
        let a = UdpTransport::bind_with(0, OffloadPolicy::Off).unwrap();
        assert!(UdpTransport::bind_with(a.local_port().unwrap(), OffloadPolicy::Auto).is_err());
    }
}
