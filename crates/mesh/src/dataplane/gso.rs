//! UDP segmentation offload on the WireGuard socket.
//!
//! Sending (`UDP_SEGMENT`): consecutive encrypted datagrams for the same endpoint and of the same
//! size (the last may be shorter) go out as one message whose iovecs are their slots, with a
//! control message naming the segment size; the kernel, or the NIC, cuts it back into datagrams.
//! [`plan_runs`] decides the grouping (pure).
//!
//! Receiving (`UDP_GRO`): the kernel may hand back several datagrams from one sender glued
//! together, with a control message giving the segment size; [`gro_segment_size`] reads it and
//! the caller cuts the buffer with [`segments`].

use std::io;
use std::os::fd::RawFd;

/// Most segments one GSO message may carry (the kernel's `UDP_MAX_SEGMENTS` on older kernels;
/// newer ones allow more).
pub const MAX_SEGMENTS: usize = 64;
/// Most payload bytes one GSO message may carry: a 64 KiB IP packet less the IPv6 and UDP headers.
pub const MAX_GSO_BYTES: usize = 65535 - 40 - 8;
/// Room for the largest coalesced datagram the kernel hands back with `UDP_GRO`.
pub const GRO_BUFFER_LEN: usize = 65536;
/// Control-message room per message: one `cmsghdr` with an `int` (or `u16`), generously aligned.
pub const CONTROL_LEN: usize = 64;

/// Datagrams `start..start + count` go out as one message; with `count > 1` the kernel splits it
/// every `segment_size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub start: usize,
    pub count: usize,
    pub segment_size: usize,
}

/// Groups `lens.len()` queued datagrams into GSO runs, in order. A run holds consecutive datagrams
/// that `same_destination(first, other)` says go to the same place, all of the first one's size
/// except possibly a shorter last one, at most [`MAX_SEGMENTS`] and [`MAX_GSO_BYTES`] in all.
pub fn plan_runs(
    lens: &[usize],
    same_destination: impl Fn(usize, usize) -> bool,
    runs: &mut Vec<Run>,
) {
    runs.clear();
    let mut i = 0;
    while i < lens.len() {
        let size = lens[i];
        let mut count = 1;
        let mut total = size;
        while i + count < lens.len() && count < MAX_SEGMENTS {
            let j = i + count;
            let len = lens[j];
            if len > size || total + len > MAX_GSO_BYTES || !same_destination(i, j) {
                break;
            }
            count += 1;
            total += len;
            if len < size {
                break; // a shorter datagram can only end a run
            }
        }
        runs.push(Run {
            start: i,
            count,
            segment_size: size,
        });
        i += count;
    }
}

/// The datagrams glued together in a GRO buffer (`segment_size` 0: one datagram).
pub fn segments(buf: &[u8], segment_size: usize) -> std::slice::Chunks<'_, u8> {
    let size = if segment_size == 0 {
        buf.len().max(1)
    } else {
        segment_size
    };
    buf.chunks(size)
}

fn set_int_option(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: passes a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether the kernel knows `UDP_SEGMENT` (Linux 4.18+): setting a socket-wide segment size of 0
/// (no segmentation) is harmless and fails on kernels without it.
pub fn probe_gso(fd: RawFd) -> io::Result<()> {
    set_int_option(fd, libc::SOL_UDP, libc::UDP_SEGMENT, 0)
}

/// Asks the kernel to coalesce received datagrams (`UDP_GRO`, Linux 5.0+).
pub fn enable_gro(fd: RawFd) -> io::Result<()> {
    set_int_option(fd, libc::SOL_UDP, libc::UDP_GRO, 1)
}

/// Writes a `UDP_SEGMENT` control message for `segment_size` into `control`; returns its length
/// for `msg_controllen`.
pub fn write_segment_cmsg(control: &mut [u64], segment_size: u16) -> usize {
    // SAFETY: CMSG_SPACE/CMSG_LEN are arithmetic on a constant size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as usize;
    assert!(space <= std::mem::size_of_val(control));
    control.fill(0);
    let cmsg = control.as_mut_ptr().cast::<libc::cmsghdr>();
    // SAFETY: `control` is 8-byte aligned, zeroed and at least `space` bytes long, which holds
    // one cmsghdr followed by its u16 payload.
    unsafe {
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = libc::UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment_size);
    }
    space
}

/// The segment size of a received message's `UDP_GRO` control message, 0 when it has none (the
/// buffer is one datagram).
///
/// # Safety
/// `hdr` must be a header just filled by `recvmsg`/`recvmmsg`, its control pointer and length
/// describing live memory.
pub unsafe fn gro_segment_size(hdr: &libc::msghdr) -> usize {
    // SAFETY: the caller guarantees the header describes live control data; the CMSG macros
    // stay within msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == libc::UDP_GRO {
                let size = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                return usize::try_from(size).unwrap_or(0);
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(lens: &[usize], dest: &[u8]) -> Vec<(usize, usize, usize)> {
        let mut runs = Vec::new();
        plan_runs(lens, |a, b| dest[a] == dest[b], &mut runs);
        runs.iter()
            .map(|r| (r.start, r.count, r.segment_size))
            .collect()
    }

    #[test]
    fn equal_datagrams_to_one_place_form_one_run_ended_by_a_shorter_one() {
        let lens = [1452, 1452, 1452, 700, 1452, 1452];
        assert_eq!(
            plan(&lens, &[0; 6]),
            vec![(0, 4, 1452), (4, 2, 1452)],
            "the 700-byte datagram ends the first run"
        );
    }

    #[test]
    fn runs_break_on_destination_growth_and_limits() {
        // A different destination, or a longer datagram, starts a new run.
        assert_eq!(
            plan(&[100, 100, 100, 100], &[0, 0, 1, 1]),
            vec![(0, 2, 100), (2, 2, 100)]
        );
        assert_eq!(
            plan(&[100, 200, 200], &[0; 3]),
            vec![(0, 1, 100), (1, 2, 200)]
        );
        // At most MAX_SEGMENTS per run.
        let lens = vec![32; MAX_SEGMENTS + 3];
        assert_eq!(
            plan(&lens, &vec![0; lens.len()]),
            vec![(0, MAX_SEGMENTS, 32), (MAX_SEGMENTS, 3, 32)]
        );
        // At most MAX_GSO_BYTES per run.
        let lens = vec![1452; 50];
        let runs = plan(&lens, &[0; 50]);
        let per_run = MAX_GSO_BYTES / 1452;
        assert_eq!(runs[0], (0, per_run, 1452));
        assert_eq!(runs.iter().map(|r| r.1).sum::<usize>(), 50);
        assert!(runs.iter().all(|r| r.1 * r.2 <= MAX_GSO_BYTES));
        assert!(plan(&[], &[]).is_empty());
    }

    #[test]
    fn gro_buffers_split_at_the_segment_size() {
        let buf: Vec<u8> = (0..10).collect();
        let parts: Vec<&[u8]> = segments(&buf, 4).collect();
        assert_eq!(parts, vec![&[0, 1, 2, 3][..], &[4, 5, 6, 7], &[8, 9]]);
        assert_eq!(segments(&buf, 0).count(), 1);
        assert_eq!(segments(&[], 0).count(), 0);
    }

    #[test]
    fn segment_cmsg_round_trips_through_the_parser_layout() {
        let mut control = [0u64; CONTROL_LEN / 8];
        let len = write_segment_cmsg(&mut control, 1452);
        // SAFETY: plain C struct; all-zero is valid.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_control = control.as_mut_ptr().cast();
        hdr.msg_controllen = len as _;
        // SAFETY: the header points at `control`, which holds one well-formed cmsg.
        let cmsg = unsafe { &*libc::CMSG_FIRSTHDR(&hdr) };
        assert_eq!(
            (cmsg.cmsg_level, cmsg.cmsg_type),
            (libc::SOL_UDP, libc::UDP_SEGMENT)
        );
        // A GRO message carries an int; none at all reads as 0.
        hdr.msg_controllen = 0;
        // SAFETY: as above.
        assert_eq!(unsafe { gro_segment_size(&hdr) }, 0);
    }
}
