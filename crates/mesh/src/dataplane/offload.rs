//! Which segmentation offloads the data plane uses, and how they are switched off.
//!
//! Three offloads carry 64 KiB "super-packets" instead of one system call per packet:
//! - TUN (`IFF_VNET_HDR` + `TUNSETOFFLOAD`): the kernel hands over TCP segments of up to 64 KiB
//!   (split in userspace) and takes coalesced ones back;
//! - UDP GSO (`UDP_SEGMENT`): one `sendmsg` carries up to [`super::gso::MAX_SEGMENTS`] encrypted
//!   datagrams of equal size that the kernel (or the NIC) splits;
//! - UDP GRO (`UDP_GRO`): the kernel hands back coalesced datagrams with their segment size.
//!
//! Each is probed when the data plane starts; one the kernel lacks falls back (plain TUN,
//! `sendmmsg`, `recvmmsg`) and the fallback is logged once. [`OffloadPolicy::Off`] (config field
//! `"offload": false`, or `TABBIFY_MESH_OFFLOAD=off` in the environment) forces every fallback,
//! so both paths stay tested.

use serde::{Deserialize, Serialize};

/// Environment variable that forces offload off (`off`, `0`, `false`, `no`) or leaves it to the
/// kernel (`auto`, `on`, `1`, `true`, `yes`, unset).
pub const OFFLOAD_ENV: &str = "TABBIFY_MESH_OFFLOAD";

/// Whether the data plane may use segmentation offloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffloadPolicy {
    /// Use every offload the kernel supports.
    #[default]
    Auto,
    /// Use none: plain TUN, one datagram per message.
    Off,
}

impl OffloadPolicy {
    /// The policy [`OFFLOAD_ENV`] asks for; `Auto` when unset. An unreadable value is logged and
    /// treated as `Auto`.
    pub fn from_env() -> Self {
        match std::env::var(OFFLOAD_ENV) {
            Ok(v) => Self::parse(&v).unwrap_or_else(|| {
                tracing::warn!(value = %v, "{OFFLOAD_ENV} is not one of auto/on/off; using auto");
                Self::Auto
            }),
            Err(_) => Self::Auto,
        }
    }

    /// `Some(policy)` for the values [`OFFLOAD_ENV`] accepts, `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "" | "auto" | "on" | "1" | "true" | "yes" => Some(Self::Auto),
            "off" | "0" | "false" | "no" => Some(Self::Off),
            _ => None,
        }
    }

    /// From an optional config switch: `Some(false)` forces off, `Some(true)` allows, `None`
    /// defers to the environment.
    pub fn from_switch(switch: Option<bool>) -> Self {
        match switch {
            Some(true) => Self::Auto,
            Some(false) => Self::Off,
            None => Self::from_env(),
        }
    }

    pub fn allows(self) -> bool {
        self == Self::Auto
    }
}

/// The offloads actually in use (reported in the stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Offloads {
    /// TUN virtio-net headers with TCP segmentation offload.
    pub tun: bool,
    /// `UDP_SEGMENT` on the WireGuard socket.
    pub udp_gso: bool,
    /// `UDP_GRO` on the WireGuard socket.
    pub udp_gro: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_switch_values() {
        for on in ["", "auto", "ON", "1", "true", "yes"] {
            assert_eq!(OffloadPolicy::parse(on), Some(OffloadPolicy::Auto), "{on}");
        }
        for off in ["off", "0", "False", "no", " off\n"] {
            assert_eq!(OffloadPolicy::parse(off), Some(OffloadPolicy::Off), "{off}");
        }
        assert_eq!(OffloadPolicy::parse("maybe"), None);
        assert_eq!(OffloadPolicy::from_switch(Some(false)), OffloadPolicy::Off);
        assert_eq!(OffloadPolicy::from_switch(Some(true)), OffloadPolicy::Auto);
        assert!(OffloadPolicy::Auto.allows());
        assert!(!OffloadPolicy::Off.allows());
    }
}
