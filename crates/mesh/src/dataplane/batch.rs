//! Many datagrams per system call. The UDP receive thread takes a batch of messages with one
//! `recvmmsg(2)` (each message one datagram, or with `UDP_GRO` several glued together), and the
//! TUN thread encrypts packets straight into a [`DatagramBatch`]'s slots and sends them with one
//! `sendmmsg(2)`: one datagram per message, or with `UDP_SEGMENT` a run of equal-sized datagrams
//! per message whose iovecs are the slots themselves (no copy). The batch owns all its memory,
//! allocated once; the kernel headers are pointed at it before every call.

use super::gso::{self, CONTROL_LEN, Run};
use std::io;
use std::net::{SocketAddr, SocketAddrV6};
use std::ops::Range;
use std::os::fd::RawFd;

/// `u64`s of control-message room per message (8-byte aligned for `cmsghdr`).
const CONTROL_WORDS: usize = CONTROL_LEN / 8;

pub struct DatagramBatch {
    slot_len: usize,
    slots: usize,
    data: Vec<u8>,
    lens: Vec<usize>,
    addrs: Vec<libc::sockaddr_storage>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    control: Vec<u64>,
    /// Per received message: the `UDP_GRO` segment size, 0 for a single datagram.
    segment_sizes: Vec<usize>,
    runs: Vec<Run>,
    /// Slots filled (send) or received (recv).
    count: usize,
}

/// What one [`DatagramBatch::send`] did.
#[derive(Debug, Default)]
pub struct SendReport {
    /// Datagrams the kernel refused.
    pub refused: usize,
    /// GSO messages sent (each more than one datagram).
    pub gso_messages: usize,
    /// Set when the kernel refused segmentation itself (`EIO`: the device cannot checksum it);
    /// those datagrams went out one by one and GSO should be turned off.
    pub gso_unsupported: Option<io::Error>,
}

// SAFETY: the raw pointers in `iovecs`/`headers` only ever point into this struct's own heap
// buffers, and are rewritten before every system call; moving the struct between threads moves
// the buffers with it.
unsafe impl Send for DatagramBatch {}

impl DatagramBatch {
    /// A batch of `slots` slots of `slot_len` bytes.
    pub fn with_slots(slot_len: usize, slots: usize) -> Self {
        Self {
            slot_len,
            slots,
            data: vec![0u8; slot_len * slots],
            lens: vec![0; slots],
            // SAFETY: plain C structs; all-zero is a valid value for each.
            addrs: vec![unsafe { std::mem::zeroed() }; slots],
            iovecs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                slots
            ],
            headers: vec![unsafe { std::mem::zeroed() }; slots],
            control: vec![0u64; CONTROL_WORDS * slots],
            segment_sizes: vec![0; slots],
            runs: Vec::with_capacity(slots),
            count: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn is_full(&self) -> bool {
        self.count == self.slots
    }

    /// Points iovec `slot` at slot `slot`'s first `len` bytes.
    fn aim_iovec(&mut self, slot: usize, len: usize) {
        let base = self.data.as_mut_ptr();
        // SAFETY: slot < slots, so the offset stays inside `data`.
        self.iovecs[slot].iov_base = unsafe { base.add(slot * self.slot_len) }.cast();
        self.iovecs[slot].iov_len = len;
    }

    /// Points header `h` at `count` iovecs from `slot` on, slot `slot`'s address, and (with
    /// `control_len` > 0) header `h`'s control room.
    fn aim_header(&mut self, h: usize, slot: usize, count: usize, control_len: usize) {
        let name_len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let control = if control_len > 0 {
            (&raw mut self.control[h * CONTROL_WORDS]).cast()
        } else {
            std::ptr::null_mut()
        };
        let m = &mut self.headers[h].msg_hdr;
        m.msg_name = (&raw mut self.addrs[slot]).cast();
        m.msg_namelen = name_len;
        m.msg_iov = &raw mut self.iovecs[slot];
        m.msg_iovlen = count as _;
        m.msg_control = control;
        m.msg_controllen = control_len as _;
        m.msg_flags = 0;
        self.headers[h].msg_len = 0;
    }

    // ---- receiving ----

    /// Receives a batch of messages without blocking (`WouldBlock` when none is queued). With
    /// `gro` the socket has `UDP_GRO` on and each message may hold several datagrams.
    pub fn recv(&mut self, fd: RawFd, gro: bool) -> io::Result<usize> {
        for i in 0..self.slots {
            self.aim_iovec(i, self.slot_len);
            self.aim_header(i, i, 1, if gro { CONTROL_LEN } else { 0 });
        }
        // SAFETY: every header points at live, writable memory owned by `self`.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                self.slots as libc::c_uint,
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
            self.segment_sizes[i] = if gro {
                // SAFETY: header i was just filled by recvmmsg and points at our control room.
                unsafe { gso::gro_segment_size(&self.headers[i].msg_hdr) }
            } else {
                0
            };
        }
        Ok(self.count)
    }

    /// Message `i` of the last `recv`, where it came from (`None` for an unknown family), and its
    /// GRO segment size (0: one datagram; see [`gso::segments`]).
    pub fn received(&self, i: usize) -> (&[u8], Option<SocketAddr>, usize) {
        let start = i * self.slot_len;
        (
            &self.data[start..start + self.lens[i]],
            super::transport::sockaddr_to_std(&self.addrs[i]),
            self.segment_sizes[i],
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
    /// batch. With `gso`, runs of equal-sized datagrams to one endpoint go out as single
    /// `UDP_SEGMENT` messages; a run the kernel refuses is sent again datagram by datagram.
    pub fn send(&mut self, fd: RawFd, gso: bool) -> SendReport {
        let mut report = SendReport::default();
        let total = self.count;
        if gso && total > 1 {
            self.send_segmented(fd, &mut report);
        } else {
            report.refused = self.send_plain(fd, 0..total);
        }
        self.count = 0;
        report
    }

    fn send_segmented(&mut self, fd: RawFd, report: &mut SendReport) {
        let total = self.count;
        let mut runs = std::mem::take(&mut self.runs);
        let (lens, addrs) = (&self.lens[..total], &self.addrs[..total]);
        gso::plan_runs(lens, |a, b| same_sockaddr(&addrs[a], &addrs[b]), &mut runs);
        for i in 0..total {
            self.aim_iovec(i, self.lens[i]);
        }
        for (h, run) in runs.iter().enumerate() {
            let control_len = if run.count > 1 {
                let words = &mut self.control[h * CONTROL_WORDS..(h + 1) * CONTROL_WORDS];
                // The planner keeps segment sizes under MAX_GSO_BYTES, so they fit a u16.
                gso::write_segment_cmsg(words, run.segment_size as u16)
            } else {
                0
            };
            self.aim_header(h, run.start, run.count, control_len);
            self.headers[h].msg_hdr.msg_namelen = sockaddr_len(&self.addrs[run.start]);
        }
        let mut failed: Vec<Range<usize>> = Vec::new();
        let mut sent = 0;
        while sent < runs.len() {
            // SAFETY: headers sent..runs.len() point at live memory owned by `self`.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.headers[sent..].as_mut_ptr(),
                    (runs.len() - sent) as libc::c_uint,
                    0,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                let run = runs[sent];
                if run.count > 1 {
                    tracing::debug!(error = %err, segments = run.count, "GSO send refused; sending its datagrams one by one");
                    if err.raw_os_error() == Some(libc::EIO) && report.gso_unsupported.is_none() {
                        report.gso_unsupported = Some(err);
                    }
                    failed.push(run.start..run.start + run.count);
                } else {
                    tracing::debug!(error = %err, "sendmmsg refused a datagram");
                    report.refused += 1;
                }
                sent += 1;
            } else {
                let n = n as usize;
                report.gso_messages += runs[sent..sent + n].iter().filter(|r| r.count > 1).count();
                sent += n;
            }
        }
        self.runs = runs;
        for range in failed {
            report.refused += self.send_plain(fd, range);
        }
    }

    /// Sends slots `range` one datagram per message; returns how many the kernel refused.
    fn send_plain(&mut self, fd: RawFd, range: Range<usize>) -> usize {
        let total = range.len();
        for (h, slot) in range.enumerate() {
            self.aim_iovec(slot, self.lens[slot]);
            self.aim_header(h, slot, 1, 0);
            self.headers[h].msg_hdr.msg_namelen = sockaddr_len(&self.addrs[slot]);
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
        refused
    }
}

/// Whether two stored addresses are the same destination.
fn same_sockaddr(a: &libc::sockaddr_storage, b: &libc::sockaddr_storage) -> bool {
    if a.ss_family != b.ss_family {
        return false;
    }
    let len = sockaddr_len(a) as usize;
    // SAFETY: both are live sockaddr_storage values, at least `len` bytes long, fully written
    // (zeroed at creation, then whole sockaddr_in/sockaddr_in6 values).
    let (a, b) = unsafe {
        (
            std::slice::from_raw_parts(std::ptr::from_ref(a).cast::<u8>(), len),
            std::slice::from_raw_parts(std::ptr::from_ref(b).cast::<u8>(), len),
        )
    };
    a == b
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

    /// Sends five 3-byte datagrams and a 2-byte one from `tx` to `rx` (with or without GSO) and
    /// collects what arrives (with or without GRO), cut back into datagrams.
    fn round_trip(gso: bool, gro: bool) -> (Vec<Vec<u8>>, SendReport, usize) {
        let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        if gro {
            gso::enable_gro(rx.as_raw_fd()).unwrap();
        }
        let to = rx.local_addr().unwrap();
        let mut out = DatagramBatch::with_slots(64, 8);
        for i in 0..6u8 {
            let len = if i == 5 { 2 } else { 3 };
            let slot = out.next_slot();
            slot[..len].fill(i);
            out.commit(len, to);
        }
        let report = out.send(tx.as_raw_fd(), gso);
        assert!(out.is_empty());

        let mut inb = DatagramBatch::with_slots(if gro { gso::GRO_BUFFER_LEN } else { 64 }, 8);
        let mut got = Vec::new();
        let mut messages = 0;
        for _ in 0..100 {
            match inb.recv(rx.as_raw_fd(), gro) {
                Ok(n) => {
                    messages += n;
                    for i in 0..n {
                        let (d, from, seg) = inb.received(i);
                        assert_eq!(from, Some(tx.local_addr().unwrap()));
                        got.extend(gso::segments(d, seg).map(<[u8]>::to_vec));
                    }
                    if got.len() == 6 {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(matches!(
            inb.recv(rx.as_raw_fd(), gro),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock
        ));
        (got, report, messages)
    }

    fn expected() -> Vec<Vec<u8>> {
        (0..6u8)
            .map(|i| vec![i; if i == 5 { 2 } else { 3 }])
            .collect()
    }

    #[test]
    fn a_batch_goes_out_in_order_and_comes_back_in_one_call() {
        let (got, report, _) = round_trip(false, false);
        assert_eq!(got, expected());
        assert_eq!((report.refused, report.gso_messages), (0, 0));
    }

    #[test]
    fn a_gso_batch_is_one_message_that_gro_hands_back_whole() {
        // Loopback keeps a GSO send whole up to a GRO socket: one message, six datagrams.
        let (got, report, messages) = round_trip(true, true);
        assert_eq!(got, expected());
        assert_eq!((report.refused, report.gso_messages), (0, 1));
        assert!(report.gso_unsupported.is_none());
        assert_eq!(messages, 1, "GRO handed back the run as one message");
        // A socket without GRO gets the kernel-split datagrams one by one.
        let (got, report, messages) = round_trip(true, false);
        assert_eq!(got, expected());
        assert_eq!(report.gso_messages, 1);
        assert_eq!(messages, 6);
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
