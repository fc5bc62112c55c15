//! Where apps listen. Without the mesh (or with `--dataplane off`) an app gets a free port on
//! `127.0.0.1`; with the mesh it gets its own address in the node's /64 (the node's ULA is `::1`,
//! apps take `::2`, `::3`, ... lowest free first) and the manifest's `[http] port`. The mesh
//! address lives as a /128 on `lo`, which outlives a supervisor crash; packets for it arriving
//! over the TUN device are delivered locally. The choices here are pure; `lo_addr` applies them.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use tabbify_wire::Ipv6Prefix;

/// The first host number in the /64 handed to an app (`::1` is the node).
pub const FIRST_APP_HOST: u128 = 2;
/// How far into the /64 the search for a free address goes.
const SEARCH_LIMIT: u128 = 1 << 20;

/// How this node gives apps addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressMode {
    /// `127.0.0.1:<free port>` (`--no-mesh`, `--dataplane off`).
    Loopback,
    /// `[<address in the node's /64>]:<[http] port>`, the address on `lo`.
    Mesh,
}

/// The lowest free app address in `subnet`, skipping the node's own ULA and `taken`.
pub fn pick_mesh_addr(
    subnet: Ipv6Prefix,
    node_ula: Option<Ipv6Addr>,
    taken: &BTreeSet<Ipv6Addr>,
) -> Option<Ipv6Addr> {
    let base = u128::from(subnet.addr());
    let host_bits = 128 - u32::from(subnet.len());
    let hosts = if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    (FIRST_APP_HOST..=hosts.min(SEARCH_LIMIT))
        .map(|n| Ipv6Addr::from(base | n))
        .find(|a| Some(*a) != node_ula && !taken.contains(a))
}

/// The /128s on `lo` inside `subnet` that no app owns: left by an app deleted while the
/// supervisor was down, or by a crash between adding an address and recording it.
pub fn stray_addrs(
    on_lo: &[Ipv6Addr],
    subnet: Ipv6Prefix,
    node_ula: Option<Ipv6Addr>,
    owned: &BTreeSet<Ipv6Addr>,
) -> Vec<Ipv6Addr> {
    on_lo
        .iter()
        .copied()
        .filter(|a| subnet.contains(*a) && Some(*a) != node_ula && !owned.contains(a))
        .collect()
}

/// A loopback address for an app; `port` 0 means "pick a free one".
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)
}

/// A port on 127.0.0.1 that is free now and not in `taken` (ports of other apps, which may be
/// down at the moment). The runner binds it moments later; losing that race shows up as a
/// runner that cannot listen, which the deploy reports.
pub fn free_loopback_port(taken: &BTreeSet<u16>) -> std::io::Result<u16> {
    for _ in 0..32 {
        let port = std::net::TcpListener::bind(loopback(0))?
            .local_addr()?
            .port();
        if !taken.contains(&port) {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no free loopback port found",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet() -> Ipv6Prefix {
        "fd12:3456:789a:1::/64".parse().unwrap()
    }

    fn addr(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn apps_take_the_lowest_free_address_after_the_node() {
        let ula = Some(addr("fd12:3456:789a:1::1"));
        let mut taken = BTreeSet::new();
        assert_eq!(
            pick_mesh_addr(subnet(), ula, &taken),
            Some(addr("fd12:3456:789a:1::2"))
        );
        taken.insert(addr("fd12:3456:789a:1::2"));
        taken.insert(addr("fd12:3456:789a:1::3"));
        taken.insert(addr("fd12:3456:789a:1::5"));
        assert_eq!(
            pick_mesh_addr(subnet(), ula, &taken),
            Some(addr("fd12:3456:789a:1::4"))
        );
        // A node whose ULA is not ::1 keeps it anyway.
        let odd_ula = Some(addr("fd12:3456:789a:1::4"));
        assert_eq!(
            pick_mesh_addr(subnet(), odd_ula, &taken),
            Some(addr("fd12:3456:789a:1::6"))
        );
    }

    #[test]
    fn a_full_small_prefix_has_no_address() {
        let tiny: Ipv6Prefix = "fd00::/126".parse().unwrap();
        let taken: BTreeSet<_> = [addr("fd00::2")].into();
        assert_eq!(
            pick_mesh_addr(tiny, Some(addr("fd00::1")), &taken),
            Some(addr("fd00::3"))
        );
        let taken: BTreeSet<_> = [addr("fd00::2"), addr("fd00::3")].into();
        assert_eq!(pick_mesh_addr(tiny, Some(addr("fd00::1")), &taken), None);
        let host: Ipv6Prefix = "fd00::1/128".parse().unwrap();
        assert_eq!(pick_mesh_addr(host, None, &BTreeSet::new()), None);
    }

    #[test]
    fn strays_are_ours_and_unowned_only() {
        let on_lo = [
            addr("::1"),
            addr("fd12:3456:789a:1::1"),
            addr("fd12:3456:789a:1::2"),
            addr("fd12:3456:789a:1::7"),
            addr("fd12:3456:789a:2::2"),
        ];
        let owned: BTreeSet<_> = [addr("fd12:3456:789a:1::2")].into();
        assert_eq!(
            stray_addrs(&on_lo, subnet(), Some(addr("fd12:3456:789a:1::1")), &owned),
            vec![addr("fd12:3456:789a:1::7")]
        );
    }

    #[test]
    fn free_ports_avoid_the_taken_ones() {
        let first = free_loopback_port(&BTreeSet::new()).unwrap();
        assert_ne!(first, 0);
        let taken: BTreeSet<_> = [first].into();
        assert_ne!(free_loopback_port(&taken).unwrap(), first);
    }
}
