//! Many datagrams per system call. Under load the UDP receive thread takes up to [`BATCH`]
//! datagrams with one `recvmmsg(2)`, and the TUN thread encrypts up to [`BATCH`] packets straight
//! into a [`DatagramBatch`] and sends them with one `sendmmsg(2)`. The batch owns all its memory,
//! allocated once; the kernel headers are pointed at it before every call.

use std::io;
use std::net::{SocketAddr, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams per system call.
pub const BATCH: usize = 32;

pub struct DatagramBatch {
    slot_len: usize,
    data: Vec<u8>,
    lens: Vec<usize>,
    addrs: Vec<libc::sockaddr_storage>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    /// Slots filled (send) or received (recv).
    count: usize,
}

// SAFETY: the raw pointers in `iovecs`/`headers` only ever point into this struct's own heap
// buffers, and are rewritten before every system call; moving the struct between threads moves
// the buffers with it.
unsafe impl Send for DatagramBatch {}

impl DatagramBatch {
    /// A batch of [`BATCH`] slots of `slot_len` bytes.
    pub fn new(slot_len: usize) -> Self {
        Self {
            slot_len,
            data: vec![0u8; slot_len * BATCH],
            lens: vec![0; BATCH],
            // SAFETY: plain C structs; all-zero is a valid value for each.
            addrs: vec![unsafe { std::mem::zeroed() }; BATCH],
            iovecs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                BATCH
            ],
            headers: vec![unsafe { std::mem::zeroed() }; BATCH],
            count: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn is_full(&self) -> bool {
        self.count == BATCH
    }

    /// Points header `i` at slot `i` with `len` bytes and its address storage.
    fn aim(&mut self, i: usize, len: usize) {
        let base = self.data.as_mut_ptr();
        // SAFETY: i < BATCH, so the offset stays inside `data`.
        self.iovecs[i].iov_base = unsafe { base.add(i * self.slot_len) }.cast();
        self.iovecs[i].iov_len = len;
        let h = &mut self.headers[i].msg_hdr;
        h.msg_name = (&raw mut self.addrs[i]).cast();
        h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        h.msg_iov = &raw mut self.iovecs[i];
        h.msg_iovlen = 1;
        h.msg_control = std::ptr::null_mut();
        h.msg_controllen = 0;
        h.msg_flags = 0;
        self.headers[i].msg_len = 0;
    }

    // ---- receiving ----

    /// Receives up to [`BATCH`] datagrams without blocking (`WouldBlock` when none is queued).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for i in 0..BATCH {
            self.aim(i, self.slot_len);
        }
        // SAFETY: every header points at live, writable memory owned by `self`.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT as _,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            self.count = 0;
            return Err(io::Error::last_os_error());
        }
        self.count = n as usize;
        for i in 0..self.count {
            self.lens[i] = self.headers[i].msg_len as usize;
        }
        Ok(self.count)
    }

    /// Datagram `i` of the last `recv` and where it came from (`None` for an unknown family).
    pub fn received(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        let start = i * self.slot_len;
        (
            &self.data[start..start + self.lens[i]],
            super::transport::sockaddr_to_std(&self.addrs[i]),
        )
    }

    // ---- sending ----

    /// The next free slot, to encrypt into.
    pub fn next_slot(&mut self) -> &mut [u8] {
        let start = self.count * self.slot_len;
        &mut self.data[start..start + self.slot_len]
    }

    /// Commits the next slot: `len` bytes for `to` (already in the socket's address family).
    pub fn commit(&mut self, len: usize, to: SocketAddr) {
        let i = self.count;
        write_sockaddr(&mut self.addrs[i], to);
        self.lens[i] = len;
        self.count += 1;
    }

    /// Sends every committed datagram (blocking while the socket buffer is full) and empties the
    /// batch. Returns how many the kernel refused.
    pub fn send(&mut self, fd: RawFd) -> usize {
        let total = self.count;
        for i in 0..total {
            let len = self.lens[i];
            let name_len = sockaddr_len(&self.addrs[i]);
            self.aim(i, len);
            self.headers[i].msg_hdr.msg_namelen = name_len;
        }
        let mut sent = 0;
        let mut refused = 0;
        while sent < total {
            // SAFETY: headers sent..total point at live memory owned by `self`.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.headers[sent..].as_mut_ptr(),
                    (total - sent) as libc::c_uint,
                    0,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::debug!(error = %err, "sendmmsg refused a datagram");
                // Skip the datagram the kernel refused and carry on with the rest.
                refused += 1;
                sent += 1;
            } else {
                sent += n as usize;
            }
        }
        self.count = 0;
        refused
    }
}

fn sockaddr_len(s: &libc::sockaddr_storage) -> libc::socklen_t {
    let len = if i32::from(s.ss_family) == libc::AF_INET {
        std::mem::size_of::<libc::sockaddr_in>()
    } else {
        std::mem::size_of::<libc::sockaddr_in6>()
    };
    len as libc::socklen_t
}

fn write_sockaddr(dst: &mut libc::sockaddr_storage, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin: &mut libc::sockaddr_in = unsafe { &mut *(std::ptr::from_mut(dst).cast()) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            };
            sin.sin_zero = [0; 8];
        }
        SocketAddr::V6(v6) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6: &mut libc::sockaddr_in6 = unsafe { &mut *(std::ptr::from_mut(dst).cast()) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_flowinfo = v6.flowinfo();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: v6.ip().octets(),
            };
            sin6.sin6_scope_id = v6.scope_id();
        }
    }
}

/// `to` as the socket wants it: IPv4 becomes v4-mapped IPv6 on a dual-stack socket.
pub fn for_socket(to: SocketAddr, dual_stack: bool) -> SocketAddr {
    match to {
        SocketAddr::V4(v4) if dual_stack => {
            SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, UdpSocket};
    use std::os::fd::AsRawFd;

    #[test]
    fn a_batch_goes_out_in_order_and_comes_back_in_one_call() {
        let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let to = rx.local_addr().unwrap();
        let mut out = DatagramBatch::new(64);
        for i in 0..5u8 {
            let slot = out.next_slot();
            slot[..3].copy_from_slice(&[i, i, i]);
            out.commit(3, to);
        }
        assert_eq!(out.send(tx.as_raw_fd()), 0);
        assert!(out.is_empty());

        let mut inb = DatagramBatch::new(64);
        let mut got = Vec::new();
        for _ in 0..100 {
            match inb.recv(rx.as_raw_fd()) {
                Ok(n) => {
                    for i in 0..n {
                        let (d, from) = inb.received(i);
                        assert_eq!(from, Some(tx.local_addr().unwrap()));
                        got.push(d.to_vec());
                    }
                    if got.len() == 5 {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        }
        let expect: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i, i, i]).collect();
        assert_eq!(got, expect);
        assert!(
            matches!(inb.recv(rx.as_raw_fd()), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        );
    }

    #[test]
    fn v4_targets_are_mapped_for_dual_stack_sockets() {
        let v4: SocketAddr = "10.0.0.1:5".parse().unwrap();
        assert_eq!(for_socket(v4, false), v4);
        assert_eq!(
            for_socket(v4, true),
            "[::ffff:10.0.0.1]:5".parse::<SocketAddr>().unwrap()
        );
    }
}
