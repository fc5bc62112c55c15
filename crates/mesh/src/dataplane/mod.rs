//! The mesh data plane: userspace WireGuard (boringtun's noise protocol) between a TUN device that
//! carries the node's ULA and one UDP socket shared by every peer.
//!
//! Layout: pure decisions ([`peer_plan`], [`prefix_table`], [`packet`], [`roster`], [`config`])
//! are kept apart from the effects ([`tun_device`], [`transport`], the threads in [`loops`]).
//! The peer set has one writer (`set_peers` through `PeerControl`) publishing immutable
//! snapshots that the packet threads read; each peer's tunnel sits behind its own lock.

mod batch;
pub mod config;
pub mod config_file;
pub mod error;
mod gso;
pub mod keys;
mod link;
mod loops;
pub mod offload;
pub mod packet;
pub mod peer_plan;
mod peer_table;
pub mod prefix_table;
pub mod roster;
pub mod stats;
mod stop;
mod transport;
pub mod tun_device;

pub use config::{DEFAULT_MTU, DEFAULT_TUN_NAME, DataPlaneConfig, PeerConfig};
pub use error::DataPlaneError;
pub use offload::{OffloadPolicy, Offloads};
pub use peer_table::ApplySummary;
pub use roster::peers_from_roster;
pub use stats::{DataPlaneStats, PeerStats};

use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::x25519::{PublicKey, StaticSecret};
use loops::Shared;
use peer_plan::PlanContext;
use peer_table::{PeerControl, TableSlot};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tabbify_wire::PublicKeyB64;

/// Handshake messages per second (all peers together) accepted before senders must prove their
/// address with a cookie. Each initiation is counted twice (our peer lookup, then boringtun), so
/// the limiter is given twice this.
pub const HANDSHAKES_PER_SECOND: u64 = 100;

/// What a data plane thread runs.
type ThreadBody = fn(Arc<Shared>);

/// How long `shutdown` waits for the kernel to unregister the TUN device.
const TUN_REMOVAL_WAIT: Duration = Duration::from_secs(2);

/// A running data plane. Dropping it stops the threads too; `shutdown` also waits for them and
/// confirms the TUN device is gone.
pub struct DataPlane {
    shared: Arc<Shared>,
    control: Mutex<PeerControl>,
    threads: Vec<JoinHandle<()>>,
    tun_name: String,
    local_port: u16,
}

impl DataPlane {
    /// Binds the UDP port, creates the TUN device (replacing a stale one) and starts the packet
    /// threads, with no peers yet. Offload follows [`OffloadPolicy::from_env`].
    pub async fn start(cfg: DataPlaneConfig) -> Result<DataPlane, DataPlaneError> {
        Self::start_with(cfg, OffloadPolicy::from_env()).await
    }

    /// [`start`](Self::start) with an explicit offload policy.
    pub async fn start_with(
        cfg: DataPlaneConfig,
        offload: OffloadPolicy,
    ) -> Result<DataPlane, DataPlaneError> {
        cfg.validate()?;
        // Socket, ioctls and key setup are blocking system calls: keep them off async workers.
        tokio::task::spawn_blocking(move || Self::start_blocking(cfg, offload))
            .await
            .map_err(|_| DataPlaneError::ThreadPanicked)?
    }

    /// [`start_with`](Self::start_with) for callers without an async runtime.
    pub fn start_blocking(
        cfg: DataPlaneConfig,
        offload: OffloadPolicy,
    ) -> Result<DataPlane, DataPlaneError> {
        cfg.validate()?;
        let udp =
            transport::UdpTransport::bind_with(cfg.listen_port, offload).map_err(|source| {
                DataPlaneError::BindUdp {
                    port: cfg.listen_port,
                    source,
                }
            })?;
        let local_port = udp.local_port().map_err(|source| DataPlaneError::BindUdp {
            port: cfg.listen_port,
            source,
        })?;
        let tun = tun_device::create(&cfg, offload)?;
        let tun_offload = tun.tcp_gso();
        let secret = StaticSecret::from(cfg.private_key);
        let public = PublicKey::from(&secret);
        let rate_limiter = Arc::new(RateLimiter::new(&public, 2 * HANDSHAKES_PER_SECOND));
        let control = PeerControl::new(
            PlanContext {
                self_key: public.to_bytes(),
                own_subnet: cfg.subnet,
                mesh_prefix: cfg.mesh_prefix,
            },
            secret.clone(),
            rate_limiter.clone(),
        );
        let shared = Arc::new(Shared {
            stop: stop::StopSignal::new().map_err(DataPlaneError::Thread)?,
            slot: TableSlot::new(),
            tun,
            udp,
            secret,
            public,
            rate_limiter,
            counters: Default::default(),
            tun_offload,
        });
        let mut plane = DataPlane {
            shared: shared.clone(),
            control: Mutex::new(control),
            threads: Vec::new(),
            tun_name: cfg.tun_name.clone(),
            local_port,
        };
        let bodies: [(&str, ThreadBody); 3] = [
            ("tbf-tun-rx", loops::tun_to_udp),
            ("tbf-udp-rx", loops::udp_to_tun),
            ("tbf-timers", loops::timers),
        ];
        for (name, body) in bodies {
            let s = shared.clone();
            let handle = std::thread::Builder::new()
                .name(name.into())
                .spawn(move || body(s))
                .map_err(DataPlaneError::Thread)?; // Drop stops the threads started so far.
            plane.threads.push(handle);
        }
        tracing::info!(
            tun = %cfg.tun_name,
            port = local_port,
            public_key = %keys::encode_key(&public.to_bytes()),
            ?offload,
            offloads = ?shared.offloads(),
            "data plane started"
        );
        Ok(plane)
    }

    /// Replaces the peer set (declarative): new peers are added, missing ones removed, changed
    /// endpoints and prefixes applied in place without dropping sessions.
    pub fn set_peers(&self, peers: Vec<PeerConfig>) -> ApplySummary {
        let started = Instant::now();
        let mut control = self.control.lock().unwrap_or_else(|p| p.into_inner());
        let summary = control.apply(peers, &self.shared.slot);
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        tracing::info!(?summary, elapsed_us = micros, "peer set applied");
        summary
    }

    pub fn stats(&self) -> DataPlaneStats {
        let table = self.shared.slot.load();
        let mut stats = DataPlaneStats {
            listen_port: self.local_port,
            dropped_no_route: self
                .shared
                .counters
                .dropped_no_route
                .load(Ordering::Relaxed),
            dropped_unknown_peer: self
                .shared
                .counters
                .dropped_unknown_peer
                .load(Ordering::Relaxed),
            dropped_invalid: self.shared.counters.dropped_invalid.load(Ordering::Relaxed),
            cookies_sent: self.shared.counters.cookies_sent.load(Ordering::Relaxed),
            offload: self.shared.offloads(),
            gso_messages: self.shared.counters.gso_messages.load(Ordering::Relaxed),
            gro_messages: self.shared.counters.gro_messages.load(Ordering::Relaxed),
            ..Default::default()
        };
        for entry in table.entries() {
            let c = &entry.link.counters;
            let snap = entry.link.snapshot();
            let peer = PeerStats {
                public_key: PublicKeyB64::from_bytes(entry.link.public_key),
                allowed: entry.config.allowed,
                endpoint: snap.endpoint,
                rx_bytes: c.rx_bytes.load(Ordering::Relaxed),
                rx_packets: c.rx_packets.load(Ordering::Relaxed),
                tx_bytes: c.tx_bytes.load(Ordering::Relaxed),
                tx_packets: c.tx_packets.load(Ordering::Relaxed),
                last_handshake_secs_ago: snap.last_handshake.map(|d| d.as_secs_f64()),
                dropped_source: c.dropped_source.load(Ordering::Relaxed),
                dropped_no_endpoint: c.dropped_no_endpoint.load(Ordering::Relaxed),
                roams: c.roams.load(Ordering::Relaxed),
            };
            stats.dropped_source += peer.dropped_source;
            stats.peers.push(peer);
        }
        stats
    }

    /// The UDP port actually bound (useful with `listen_port: 0`).
    pub fn local_port(&self) -> u16 {
        self.local_port
    }

    pub fn tun_name(&self) -> &str {
        &self.tun_name
    }

    /// Stops the threads, closes the TUN device and waits until the kernel has removed it.
    pub async fn shutdown(mut self) -> Result<(), DataPlaneError> {
        self.shared.stop.stop();
        let threads = std::mem::take(&mut self.threads);
        let name = self.tun_name.clone();
        // Our Arc goes with `self`; the threads' copies go as they are joined.
        drop(self);
        tokio::task::spawn_blocking(move || {
            let mut panicked = false;
            for t in threads {
                panicked |= t.join().is_err();
            }
            let deadline = Instant::now() + TUN_REMOVAL_WAIT;
            while tun_device::interface_exists(&name) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if panicked {
                return Err(DataPlaneError::ThreadPanicked);
            }
            if tun_device::interface_exists(&name) {
                return Err(DataPlaneError::ConfigureTun {
                    name,
                    what: "removal on shutdown",
                    source: std::io::Error::other("device still present"),
                });
            }
            tracing::info!(tun = %name, "data plane stopped, TUN device removed");
            Ok(())
        })
        .await
        .map_err(|_| DataPlaneError::ThreadPanicked)?
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        // Threads see the flag, exit and release their references; the last one closes the TUN.
        self.shared.stop.stop();
    }
}
