//! One peer's live state: its boringtun tunnel, where to send to it (learned by roaming), and its
//! counters. The tunnel and endpoint share one lock, taken once per packet; counters are atomics
//! so `stats()` never waits for a packet thread.
//!
//! An idle peer costs little: the tunnel (boringtun's `Tunn`, about 11 KiB with its precomputed
//! Diffie-Hellman) is made only when a packet is sent to the peer or a handshake initiation from
//! it arrives, and it is dropped again after [`IDLE_AFTER`] without a data packet either way (the
//! persistent keepalive keeps NAT mappings open while the tunnel exists, not for ever). So a
//! roster of 100,000 peers is cheap to apply and to hold.

use super::batch::DatagramBatch;
use super::packet::{DATA_OVERHEAD, MSG_COOKIE_REPLY, MSG_DATA, MSG_HANDSHAKE_INIT};
use super::transport::{UdpTransport, endpoint_of_source};
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tabbify_wire::Endpoint;

/// Per-peer counters, readable at any time.
#[derive(Debug, Default)]
pub struct LinkCounters {
    pub rx_bytes: AtomicU64,
    pub rx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    /// Decrypted packets whose inner source lies outside the peer's AllowedIPs.
    pub dropped_source: AtomicU64,
    /// Outbound packets dropped because the peer has no endpoint yet.
    pub dropped_no_endpoint: AtomicU64,
    /// Authenticated packets that arrived from a new address and moved the endpoint.
    pub roams: AtomicU64,
}

fn bump(c: &AtomicU64, by: u64) {
    c.fetch_add(by, Ordering::Relaxed);
}

struct LinkState {
    /// `None` while the peer is idle (see the module doc).
    tunn: Option<Box<Tunn>>,
    endpoint: Option<Endpoint>,
}

/// A tunnel with no data packet either way for this long is dropped (the peer is idle again).
pub const IDLE_AFTER: Duration = Duration::from_secs(300);

/// What it takes to make a peer's tunnel when it is first needed, shared by every peer.
pub struct TunnelFactory {
    pub own_secret: StaticSecret,
    pub rate_limiter: Arc<RateLimiter>,
}

/// One peer's tunnel.
pub struct Link {
    pub public_key: [u8; 32],
    /// The 24-bit index boringtun embeds in this tunnel's session indices.
    pub index: u32,
    persistent_keepalive: Option<u16>,
    factory: Arc<TunnelFactory>,
    state: Mutex<LinkState>,
    /// True while `state.tunn` is `Some` (read by the timer thread without the lock).
    active: AtomicBool,
    /// Data packets either way when the timer last looked, and when that count last moved.
    activity: Mutex<(u64, std::time::Instant)>,
    pub counters: LinkCounters,
}

/// What happened to a decrypted inbound packet; the caller writes it to the TUN device.
pub enum Inbound<'a> {
    /// An IPv6 packet with its inner source, to be checked against AllowedIPs.
    Deliver(&'a [u8], std::net::Ipv6Addr),
    /// Nothing for the TUN device (handshake, keepalive, cookie, error, IPv4).
    Nothing,
}

/// boringtun's decapsulation result without the borrow. Decrypted packets start at offset 0 of
/// the output buffer (boringtun writes them there), so a length is enough.
enum Step {
    Reply(usize),
    Deliver(usize, std::net::Ipv6Addr),
    Ipv4(std::net::Ipv4Addr),
    Nothing,
}

/// A point-in-time copy of a link for `stats()`.
pub struct LinkSnapshot {
    pub endpoint: Option<Endpoint>,
    pub last_handshake: Option<Duration>,
}

impl Link {
    /// A peer with no tunnel yet.
    pub fn new(
        factory: Arc<TunnelFactory>,
        public_key: [u8; 32],
        index: u32,
        endpoint: Option<Endpoint>,
        persistent_keepalive: Option<u16>,
    ) -> Self {
        Self {
            public_key,
            index,
            persistent_keepalive,
            factory,
            state: Mutex::new(LinkState {
                tunn: None,
                endpoint,
            }),
            active: AtomicBool::new(false),
            activity: Mutex::new((0, std::time::Instant::now())),
            counters: LinkCounters::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LinkState> {
        // A panic in another packet thread must not wedge the peer: the state is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The peer's tunnel, made now if it has none.
    fn tunnel<'s>(&self, st: &'s mut LinkState) -> &'s mut Tunn {
        if st.tunn.is_none() {
            self.active.store(true, Ordering::Release);
            *self.activity.lock().unwrap_or_else(|p| p.into_inner()) =
                (self.data_packets(), std::time::Instant::now());
        }
        st.tunn.get_or_insert_with(|| {
            Box::new(Tunn::new(
                self.factory.own_secret.clone(),
                PublicKey::from(self.public_key),
                None,
                self.persistent_keepalive,
                self.index,
                Some(self.factory.rate_limiter.clone()),
            ))
        })
    }

    /// True while the peer holds a tunnel (it is not idle).
    pub fn has_tunnel(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    pub fn set_endpoint(&self, endpoint: Option<Endpoint>) {
        self.lock().endpoint = endpoint;
    }

    pub fn snapshot(&self) -> LinkSnapshot {
        let st = self.lock();
        LinkSnapshot {
            endpoint: st.endpoint,
            last_handshake: st.tunn.as_ref().and_then(|t| t.time_since_last_handshake()),
        }
    }

    /// Encrypts packets `packet(0)`, `packet(1)`, ... `packet(count - 1)` from the TUN device for
    /// this peer, under one lock, into `batch`'s next slots, queued for the peer's endpoint.
    /// Stops early when the batch fills; returns how many packets it consumed (the caller
    /// flushes and calls again with the rest).
    pub fn queue_packets<'p>(
        &self,
        count: usize,
        packet: impl Fn(usize) -> &'p [u8],
        batch: &mut DatagramBatch,
        udp: &UdpTransport,
    ) -> usize {
        let mut st = self.lock();
        let Some(endpoint) = st.endpoint else {
            drop(st);
            bump(&self.counters.dropped_no_endpoint, count as u64);
            return count;
        };
        let (mut packets, mut bytes) = (0u64, 0u64);
        let mut done = 0;
        while done < count && !batch.is_full() {
            let packet = packet(done);
            done += 1;
            let slot = batch.next_slot();
            let slot_start = slot.as_ptr();
            let (len, is_data) = match self.tunnel(&mut st).encapsulate(packet, slot) {
                TunnResult::WriteToNetwork(datagram) => {
                    debug_assert_eq!(datagram.as_ptr(), slot_start);
                    // Without a session boringtun queues the packet and hands back a handshake.
                    (datagram.len(), datagram.first() == Some(&MSG_DATA))
                }
                TunnResult::Err(e) => {
                    tracing::debug!(error = ?e, "encapsulate failed");
                    continue;
                }
                // Queued until the handshake completes.
                _ => continue,
            };
            udp.queue(batch, len, &endpoint);
            if is_data {
                packets += 1;
                bytes += packet.len() as u64;
            }
        }
        drop(st);
        bump(&self.counters.tx_packets, packets);
        bump(&self.counters.tx_bytes, bytes);
        done
    }

    /// Decrypts one datagram from `from`, answers handshakes, flushes packets queued during a
    /// handshake, and follows the peer to `from` when the datagram was authenticated.
    pub fn receive<'o>(
        &self,
        kind: u8,
        datagram: &[u8],
        from: SocketAddr,
        out: &'o mut [u8],
        udp: &UdpTransport,
    ) -> Result<Inbound<'o>, WireGuardError> {
        let mut st = self.lock();
        if st.tunn.is_none() && kind != MSG_HANDSHAKE_INIT {
            // No tunnel means no session: nothing but a new handshake can be for us.
            return Err(WireGuardError::WrongIndex);
        }
        // Reduce boringtun's result (which borrows `out`) to positions first, so that `out` can
        // be reused for queued packets and returned without fighting the borrow checker.
        let out_start = out.as_ptr();
        let step = match self
            .tunnel(&mut st)
            .decapsulate(Some(from.ip()), datagram, out)
        {
            TunnResult::WriteToNetwork(reply) => {
                debug_assert_eq!(reply.as_ptr(), out_start);
                Step::Reply(reply.len())
            }
            TunnResult::WriteToTunnelV6(packet, source) => {
                debug_assert_eq!(packet.as_ptr(), out_start);
                Step::Deliver(packet.len(), source)
            }
            TunnResult::WriteToTunnelV4(_, source) => Step::Ipv4(source),
            TunnResult::Done => Step::Nothing,
            TunnResult::Err(e) => return Err(e),
        };
        match step {
            Step::Reply(len) => {
                let reply = &out[..len];
                let authenticated = reply.first() != Some(&MSG_COOKIE_REPLY);
                if let Err(e) = udp.send_to(reply, from) {
                    tracing::debug!(%from, error = %e, "UDP send of handshake reply failed");
                }
                if !authenticated {
                    return Ok(Inbound::Nothing);
                }
                self.roam(&mut st, from);
                let to = st.endpoint;
                // Packets queued while the handshake ran go out now.
                while let TunnResult::WriteToNetwork(queued) =
                    self.tunnel(&mut st).decapsulate(None, &[], out)
                {
                    if let Some(to) = &to {
                        let n = queued.len();
                        if udp.send_to_endpoint(queued, to).is_ok() {
                            bump(&self.counters.tx_packets, 1);
                            bump(
                                &self.counters.tx_bytes,
                                n.saturating_sub(DATA_OVERHEAD) as u64,
                            );
                        }
                    }
                }
                Ok(Inbound::Nothing)
            }
            Step::Deliver(len, source) => {
                self.roam(&mut st, from);
                Ok(Inbound::Deliver(&out[..len], source))
            }
            Step::Ipv4(source) => {
                self.roam(&mut st, from);
                drop(st);
                tracing::debug!(%source, "dropping IPv4 packet from peer (mesh is IPv6 only)");
                bump(&self.counters.dropped_source, 1);
                Ok(Inbound::Nothing)
            }
            Step::Nothing => {
                // A keepalive decrypted fine: authenticated, so it counts for roaming.
                if kind == MSG_DATA {
                    self.roam(&mut st, from);
                }
                Ok(Inbound::Nothing)
            }
        }
    }

    /// Counts a packet that passed the source check and went to the TUN device.
    pub fn count_delivered(&self, len: usize) {
        bump(&self.counters.rx_packets, 1);
        bump(&self.counters.rx_bytes, len as u64);
    }

    /// Counts a packet dropped for a source outside the peer's prefix.
    pub fn count_forged(&self) {
        bump(&self.counters.dropped_source, 1);
    }

    fn roam(&self, st: &mut LinkState, from: SocketAddr) {
        let new = endpoint_of_source(from);
        if st.endpoint != Some(new) {
            tracing::info!(
                peer = %super::keys::encode_key(&self.public_key),
                old = ?st.endpoint.map(|e| e.to_string()),
                new = %new,
                "peer endpoint moved"
            );
            st.endpoint = Some(new);
            bump(&self.counters.roams, 1);
        }
    }

    /// Runs boringtun's timers (handshake retries, rekeys, keepalives) and sends what they ask.
    fn data_packets(&self) -> u64 {
        self.counters.rx_packets.load(Ordering::Relaxed)
            + self.counters.tx_packets.load(Ordering::Relaxed)
    }

    /// True when no data packet went either way for [`IDLE_AFTER`].
    fn idle_for_long(&self) -> bool {
        let now_count = self.data_packets();
        let mut seen = self.activity.lock().unwrap_or_else(|p| p.into_inner());
        if seen.0 != now_count {
            *seen = (now_count, std::time::Instant::now());
            return false;
        }
        seen.1.elapsed() >= IDLE_AFTER
    }

    /// An idle peer (no tunnel) costs one atomic load here. A tunnel without data for
    /// [`IDLE_AFTER`], or whose session expired, is dropped and the peer is idle again.
    pub fn tick(&self, out: &mut [u8], udp: &UdpTransport) {
        if !self.has_tunnel() {
            return;
        }
        let mut st = self.lock();
        if self.idle_for_long() {
            st.tunn = None;
            self.active.store(false, Ordering::Release);
            tracing::debug!(peer = %super::keys::encode_key(&self.public_key), "no traffic; the peer is idle again");
            return;
        }
        let endpoint = st.endpoint;
        let Some(tunn) = st.tunn.as_mut() else {
            return;
        };
        match tunn.update_timers(out) {
            TunnResult::WriteToNetwork(datagram) => {
                if let Some(to) = endpoint {
                    drop(st);
                    if let Err(e) = udp.send_to_endpoint(datagram, &to) {
                        tracing::debug!(endpoint = %to, error = %e, "UDP send of timer packet failed");
                    }
                }
            }
            TunnResult::Err(WireGuardError::ConnectionExpired) => {
                st.tunn = None;
                self.active.store(false, Ordering::Release);
                tracing::debug!(peer = %super::keys::encode_key(&self.public_key), "session expired; the peer is idle again");
            }
            TunnResult::Done => {}
            TunnResult::Err(e) => tracing::debug!(error = ?e, "timer update failed"),
            _ => {}
        }
    }
}
