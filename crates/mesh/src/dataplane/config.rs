//! What the data plane is told: its own interface and key ([`DataPlaneConfig`]) and the peers it
//! should talk to ([`PeerConfig`]). Plain data; `validate` says precisely what is wrong with a
//! configuration before anything touches the kernel.

use std::net::Ipv6Addr;
use tabbify_wire::{Endpoint, Ipv6Prefix};

/// Default TUN device name.
pub const DEFAULT_TUN_NAME: &str = "tbf0";
/// MTU of the TUN device: 1500 minus the worst-case WireGuard-over-IPv6 overhead
/// (40 IPv6 + 8 UDP + 32 WireGuard = 80). The same value works over an IPv4 underlay.
pub const DEFAULT_MTU: u16 = 1420;
/// Keepalive the supervisor gives every peer, so NAT mappings and roaming stay fresh.
pub const DEFAULT_PERSISTENT_KEEPALIVE: u16 = 25;
/// IPv6 requires links of at least 1280 bytes; the kernel disables IPv6 on a smaller TUN.
pub const MIN_MTU: u16 = 1280;
/// Largest MTU we accept: the packet buffers are sized from it.
pub const MAX_MTU: u16 = 9000;

/// The node's own side of the data plane.
#[derive(Clone, PartialEq, Eq)]
pub struct DataPlaneConfig {
    /// X25519 private key (WireGuard static key).
    pub private_key: [u8; 32],
    pub tun_name: String,
    /// UDP port for WireGuard traffic; 0 picks a free port (see `DataPlane::local_port`).
    pub listen_port: u16,
    /// The node's ULA, placed on the TUN device with the /64's length.
    pub ula: Ipv6Addr,
    /// The node's /64.
    pub subnet: Ipv6Prefix,
    /// The mesh /48, routed through the TUN device.
    pub mesh_prefix: Ipv6Prefix,
    pub mtu: u16,
}

impl std::fmt::Debug for DataPlaneConfig {
    // Never print the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPlaneConfig")
            .field("private_key", &"<redacted>")
            .field("tun_name", &self.tun_name)
            .field("listen_port", &self.listen_port)
            .field("ula", &self.ula)
            .field("subnet", &self.subnet)
            .field("mesh_prefix", &self.mesh_prefix)
            .field("mtu", &self.mtu)
            .finish()
    }
}

/// One peer as the data plane should know it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerConfig {
    pub public_key: [u8; 32],
    /// The peer's /64: where packets to it are routed, and the only inner source accepted from it.
    pub allowed: Ipv6Prefix,
    /// Where to send until the peer is heard from somewhere else.
    pub endpoint: Option<Endpoint>,
    /// Seconds between keepalives when idle; `None` for none.
    pub persistent_keepalive: Option<u16>,
}

/// Why a [`DataPlaneConfig`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("tun name {0:?} must be 1 to 15 characters of [A-Za-z0-9_.-]")]
    TunName(String),
    #[error("mtu {0} is outside {MIN_MTU}..={MAX_MTU}")]
    Mtu(u16),
    #[error("ula {ula} is not inside the node subnet {subnet}")]
    UlaOutsideSubnet { ula: Ipv6Addr, subnet: Ipv6Prefix },
    #[error("node subnet {subnet} is not inside the mesh prefix {mesh}")]
    SubnetOutsideMesh {
        subnet: Ipv6Prefix,
        mesh: Ipv6Prefix,
    },
    #[error("ula {0} is the subnet's network address; pick a host address")]
    UlaIsNetworkAddress(Ipv6Addr),
}

impl DataPlaneConfig {
    /// Checks everything that can be checked without the kernel.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let name_ok = !self.tun_name.is_empty()
            && self.tun_name.len() <= 15
            && self
                .tun_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !name_ok {
            return Err(ConfigError::TunName(self.tun_name.clone()));
        }
        if !(MIN_MTU..=MAX_MTU).contains(&self.mtu) {
            return Err(ConfigError::Mtu(self.mtu));
        }
        if !self.subnet.contains(self.ula) {
            return Err(ConfigError::UlaOutsideSubnet {
                ula: self.ula,
                subnet: self.subnet,
            });
        }
        if self.ula == self.subnet.addr() {
            return Err(ConfigError::UlaIsNetworkAddress(self.ula));
        }
        if !self.mesh_prefix.covers(&self.subnet) {
            return Err(ConfigError::SubnetOutsideMesh {
                subnet: self.subnet,
                mesh: self.mesh_prefix,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> DataPlaneConfig {
        DataPlaneConfig {
            private_key: [1; 32],
            tun_name: DEFAULT_TUN_NAME.into(),
            listen_port: 51820,
            ula: "fd00:1:2:3::1".parse().unwrap(),
            subnet: "fd00:1:2:3::/64".parse().unwrap(),
            mesh_prefix: "fd00:1:2::/48".parse().unwrap(),
            mtu: DEFAULT_MTU,
        }
    }

    #[test]
    fn accepts_a_consistent_config() {
        assert_eq!(good().validate(), Ok(()));
    }

    #[test]
    fn rejects_each_inconsistency_precisely() {
        let mut c = good();
        c.tun_name = "a-name-that-is-too-long".into();
        assert!(matches!(c.validate(), Err(ConfigError::TunName(_))));
        let mut c = good();
        c.tun_name = "tbf/0".into();
        assert!(matches!(c.validate(), Err(ConfigError::TunName(_))));
        let mut c = good();
        c.mtu = 1000;
        assert_eq!(c.validate(), Err(ConfigError::Mtu(1000)));
        let mut c = good();
        c.ula = "fd00:1:2:4::1".parse().unwrap();
        assert!(matches!(
            c.validate(),
            Err(ConfigError::UlaOutsideSubnet { .. })
        ));
        let mut c = good();
        c.ula = "fd00:1:2:3::".parse().unwrap();
        assert!(matches!(
            c.validate(),
            Err(ConfigError::UlaIsNetworkAddress(_))
        ));
        let mut c = good();
        c.mesh_prefix = "fd00:9::/48".parse().unwrap();
        assert!(matches!(
            c.validate(),
            Err(ConfigError::SubnetOutsideMesh { .. })
        ));
    }

    #[test]
    fn debug_hides_the_private_key() {
        let text = format!("{:?}", good());
        assert!(text.contains("redacted"));
        assert!(!text.contains("[1, 1"));
    }
}
