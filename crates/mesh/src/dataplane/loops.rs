//! The data plane's threads. Each owns its buffers (allocated once) and a cached peer table:
//! - `tun_to_udp`: packets from the TUN device → route by destination → encrypt (each run of
//!   packets for one peer under one lock) → UDP, a batch per `sendmmsg`, equal-sized datagrams
//!   to one endpoint glued into `UDP_SEGMENT` messages when GSO is on;
//! - `udp_to_tun`: messages (a batch per `recvmmsg`, each cut into datagrams when GRO glued
//!   several) → find the peer (static key for handshakes, session index otherwise) → decrypt →
//!   check the inner source against the peer's prefix → TUN device;
//! - `timers`: every 250 ms, boringtun's timers for every peer, and the rate limiter's reset.
//!
//! With TUN offload the kernel hands over TCP segments of up to 64 KiB, which tun-rs splits into
//! packets, and packets written back are coalesced per batch (GRO). Packets keep their order
//! end to end: one thread per direction, batches sent and written in the order they were read.
//!
//! Descriptors are non-blocking; a thread with nothing to read sleeps in `poll` next to the stop
//! eventfd, so `shutdown` wakes and joins them promptly.

use super::batch::DatagramBatch;
use super::config::MAX_MTU;
use super::gso;
use super::link::Inbound;
use super::offload::Offloads;
use super::packet::{
    DATA_OVERHEAD, HANDSHAKE_INIT_LEN, MSG_DATA, MSG_HANDSHAKE_INIT, WireMessage, classify,
    ipv6_destination, peer_index_of,
};
use super::peer_table::{PeerTable, TableReader, TableSlot};
use super::stats::PlaneCounters;
use super::stop::{StopSignal, Wake};
use super::transport::UdpTransport;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;
use tun_rs::{GROTable, IDEAL_BATCH_SIZE, SyncDevice, VIRTIO_NET_HDR_LEN};

/// How often boringtun's timers run (its own recommendation).
pub const TIMER_TICK: Duration = Duration::from_millis(250);
/// Pause after an unexpected I/O error so a broken descriptor cannot spin a core.
const ERROR_PAUSE: Duration = Duration::from_millis(50);
/// Room left before each packet written to the TUN device, for the virtio-net header.
const HEADROOM: usize = VIRTIO_NET_HDR_LEN;
/// Largest packet a thread buffers: the MTU cap plus WireGuard's overhead and slack.
const BUFFER_LEN: usize = MAX_MTU as usize + DATA_OVERHEAD + HANDSHAKE_INIT_LEN;
/// Encrypted datagrams the TUN thread collects before sending: room for two 64 KiB
/// super-packets' segments, so GSO messages come out full.
const SEND_SLOTS: usize = IDEAL_BATCH_SIZE;
/// Messages per `recvmmsg` when GRO may glue up to 64 KiB into each.
const GRO_SLOTS: usize = 8;
/// Messages per `recvmmsg` without GRO.
const PLAIN_SLOTS: usize = 32;
/// Decrypted packets written to the TUN device together (coalesced by tun-rs when offload is on).
const TUN_WRITE_BATCH: usize = IDEAL_BATCH_SIZE;

/// Everything the threads share. Read-only apart from atomics and the published table.
pub struct Shared {
    pub stop: StopSignal,
    pub slot: TableSlot,
    pub tun: SyncDevice,
    pub udp: UdpTransport,
    pub secret: StaticSecret,
    pub public: PublicKey,
    pub rate_limiter: Arc<RateLimiter>,
    pub counters: PlaneCounters,
    /// Whether the TUN device has offload (virtio-net headers).
    pub tun_offload: bool,
}

impl Shared {
    /// The offloads in use now (UDP GSO can be turned off by the kernel's refusal).
    pub fn offloads(&self) -> Offloads {
        Offloads {
            tun: self.tun_offload,
            udp_gso: self.udp.gso(),
            udp_gro: self.udp.gro(),
        }
    }

    fn flush(&self, batch: &mut DatagramBatch) {
        let gso_messages = self.udp.flush(batch);
        if gso_messages > 0 {
            self.counters
                .gso_messages
                .fetch_add(gso_messages as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

enum Next {
    Again,
    Stop,
}

/// Handles a non-blocking read result that carried no data.
fn on_read_error(shared: &Shared, fd: RawFd, err: &io::Error, what: &str) -> Next {
    let wake = match err.kind() {
        io::ErrorKind::WouldBlock => shared.stop.wait(fd, libc::POLLIN, None),
        io::ErrorKind::Interrupted => Ok(Wake::Ready),
        _ => {
            tracing::warn!(error = %err, "{what} read failed");
            shared.stop.wait(-1, 0, Some(ERROR_PAUSE))
        }
    };
    match wake {
        Ok(Wake::Stopped) => Next::Stop,
        Ok(_) => Next::Again,
        Err(e) => {
            tracing::error!(error = %e, "poll failed; stopping {what} thread");
            Next::Stop
        }
    }
}

pub fn tun_to_udp(shared: Arc<Shared>) {
    let mut reader = TableReader::new(&shared.slot);
    // One read may return a 64 KiB TCP segment (offload); tun-rs splits it into `packets`.
    let mut raw = vec![0u8; VIRTIO_NET_HDR_LEN + 65535];
    let mut packets = vec![vec![0u8; BUFFER_LEN]; IDEAL_BATCH_SIZE];
    let mut sizes = vec![0usize; IDEAL_BATCH_SIZE];
    let mut batch = DatagramBatch::with_slots(BUFFER_LEN, SEND_SLOTS);
    let fd = shared.tun.as_raw_fd();
    loop {
        // Keep reading while packets are queued, encrypting into the batch and sending it
        // whenever it fills; send the rest and sleep once the device is drained.
        let n = match shared
            .tun
            .recv_multiple(&mut raw, &mut packets, &mut sizes, 0)
        {
            Ok(n) => n,
            Err(e) if e.raw_os_error().is_none() => {
                tracing::debug!(error = %e, "malformed packet from the TUN device");
                continue;
            }
            Err(e) => {
                shared.flush(&mut batch);
                match on_read_error(&shared, fd, &e, "TUN") {
                    Next::Again => continue,
                    Next::Stop => return,
                }
            }
        };
        let table = reader.current(&shared.slot);
        let packet = |i: usize| &packets[i][..sizes[i]];
        let route = |i: usize| ipv6_destination(packet(i)).and_then(|dst| table.route(dst));
        let mut i = 0;
        while i < n {
            let Some(entry) = route(i) else {
                PlaneCounters::bump(&shared.counters.dropped_no_route);
                i += 1;
                continue;
            };
            // The run of packets for the same peer is encrypted under one lock.
            let mut end = i + 1;
            while end < n && route(end).is_some_and(|e| Arc::ptr_eq(&e.link, &entry.link)) {
                end += 1;
            }
            while i < end {
                if batch.is_full() {
                    shared.flush(&mut batch);
                }
                let start = i;
                i += entry.link.queue_packets(
                    end - start,
                    |k| packet(start + k),
                    &mut batch,
                    &shared.udp,
                );
            }
        }
    }
}

pub fn udp_to_tun(shared: Arc<Shared>) {
    let mut reader = TableReader::new(&shared.slot);
    let gro = shared.udp.gro();
    let mut batch = if gro {
        DatagramBatch::with_slots(gso::GRO_BUFFER_LEN, GRO_SLOTS)
    } else {
        DatagramBatch::with_slots(BUFFER_LEN, PLAIN_SLOTS)
    };
    // Decrypted packets, each after room for the virtio header, written together so that
    // consecutive TCP segments are coalesced (GRO) into one write.
    let mut packets: Vec<Vec<u8>> = vec![vec![0u8; HEADROOM + BUFFER_LEN]; TUN_WRITE_BATCH];
    let mut tun_gro = GROTable::new();
    let write = |packets: &mut [Vec<u8>], tun_gro: &mut GROTable| {
        if let Err(e) = shared.tun.send_multiple(tun_gro, packets, HEADROOM) {
            tracing::debug!(error = %e, "TUN write failed");
        }
    };
    let fd = shared.udp.raw_fd();
    loop {
        let n = match batch.recv(fd, gro) {
            Ok(n) => n,
            Err(e) => match on_read_error(&shared, fd, &e, "UDP") {
                Next::Again => continue,
                Next::Stop => return,
            },
        };
        let table = reader.current(&shared.slot);
        let mut ready = 0;
        for i in 0..n {
            let (message, from, segment_size) = batch.received(i);
            let Some(from) = from else {
                PlaneCounters::bump(&shared.counters.dropped_invalid);
                continue;
            };
            if segment_size > 0 && message.len() > segment_size {
                PlaneCounters::bump(&shared.counters.gro_messages);
            }
            for datagram in gso::segments(message, segment_size) {
                if ready == packets.len() {
                    write(&mut packets[..ready], &mut tun_gro);
                    ready = 0;
                }
                let buf = &mut packets[ready];
                // A data message decrypts into less than its own length; anything else may
                // answer a handshake and flush queued packets through the same buffer. Growing
                // only as far as needed saves zeroing most of the buffer for every packet.
                let need = if datagram.first() == Some(&MSG_DATA) {
                    datagram.len()
                } else {
                    BUFFER_LEN
                };
                buf.resize(HEADROOM + need, 0);
                if let Some(len) = receive_one(&shared, table, datagram, from, &mut buf[HEADROOM..])
                {
                    buf.truncate(HEADROOM + len);
                    ready += 1;
                }
            }
        }
        if ready > 0 {
            write(&mut packets[..ready], &mut tun_gro);
        }
    }
}

/// Finds the peer a datagram belongs to, decrypts it into `out` and checks the inner source.
/// Returns the length of a packet (at the start of `out`) that should go to the TUN device.
fn receive_one(
    shared: &Shared,
    table: &PeerTable,
    datagram: &[u8],
    from: SocketAddr,
    out: &mut [u8],
) -> Option<usize> {
    let (kind, entry) = match classify(datagram) {
        None => {
            PlaneCounters::bump(&shared.counters.dropped_invalid);
            return None;
        }
        Some(WireMessage::ToIndex {
            kind,
            receiver_index,
        }) => (kind, table.by_index(peer_index_of(receiver_index))),
        Some(WireMessage::HandshakeInit) => {
            // MACs and the load check come before the Diffie-Hellman that reveals the sender.
            match shared
                .rate_limiter
                .verify_packet(Some(from.ip()), datagram, out)
            {
                Ok(Packet::HandshakeInit(init)) => {
                    match parse_handshake_anon(&shared.secret, &shared.public, &init) {
                        Ok(half) => (MSG_HANDSHAKE_INIT, table.by_key(&half.peer_static_public)),
                        Err(_) => {
                            PlaneCounters::bump(&shared.counters.dropped_invalid);
                            return None;
                        }
                    }
                }
                Err(TunnResult::WriteToNetwork(cookie)) => {
                    PlaneCounters::bump(&shared.counters.cookies_sent);
                    let _ = shared.udp.send_to(cookie, from);
                    return None;
                }
                _ => {
                    PlaneCounters::bump(&shared.counters.dropped_invalid);
                    return None;
                }
            }
        }
    };
    let Some(entry) = entry else {
        PlaneCounters::bump(&shared.counters.dropped_unknown_peer);
        return None;
    };
    match entry.link.receive(kind, datagram, from, out, &shared.udp) {
        Ok(Inbound::Deliver(packet, source)) => {
            if !entry.config.allowed.contains(source) {
                entry.link.count_forged();
                tracing::debug!(%source, allowed = %entry.config.allowed, "dropping packet with a forged inner source");
                return None;
            }
            entry.link.count_delivered(packet.len());
            Some(packet.len())
        }
        Ok(Inbound::Nothing) => None,
        Err(e) => {
            PlaneCounters::bump(&shared.counters.dropped_invalid);
            tracing::trace!(error = ?e, %from, "datagram rejected");
            None
        }
    }
}

pub fn timers(shared: Arc<Shared>) {
    let mut reader = TableReader::new(&shared.slot);
    let mut out = vec![0u8; BUFFER_LEN];
    loop {
        match shared.stop.wait(-1, 0, Some(TIMER_TICK)) {
            Ok(Wake::Stopped) | Err(_) => return,
            Ok(_) => {}
        }
        shared.rate_limiter.reset_count();
        for entry in reader.current(&shared.slot).entries() {
            entry.link.tick(&mut out, &shared.udp);
        }
    }
}
