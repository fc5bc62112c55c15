//! Which underlay addresses this node tells peers to send WireGuard packets to. The operator's
//! `--advertise-endpoint` wins; otherwise the address the coordinator saw us come from, then every
//! usable interface address, all on the WireGuard listen port. Addresses inside the mesh prefix
//! (the node's own ULA and its apps' addresses, which sit on `lo`) are never underlay endpoints,
//! and the list is capped at what the coordinator accepts.

use std::net::{IpAddr, SocketAddr};
use tabbify_wire::{Endpoint, Ipv6Prefix, MAX_ENDPOINTS};

/// Where the node sits on the mesh, so that its own mesh addresses are not advertised as
/// underlay endpoints.
#[derive(Debug, Clone)]
pub struct MeshSide {
    pub tun_name: String,
    pub prefix: Ipv6Prefix,
}

/// Pure: the endpoints to advertise, first preferred, without duplicates, at most
/// [`MAX_ENDPOINTS`].
pub fn advertised_endpoints(
    explicit: &[Endpoint],
    observed: Option<IpAddr>,
    interfaces: &[(String, IpAddr)],
    listen_port: u16,
    mesh: &MeshSide,
) -> Vec<Endpoint> {
    if !explicit.is_empty() {
        return dedup(explicit.to_vec());
    }
    if listen_port == 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    if let Some(ip) = observed.filter(|ip| usable(*ip, mesh)) {
        out.push(Endpoint::Udp(SocketAddr::new(ip, listen_port)));
    }
    for (name, ip) in interfaces {
        if *name != mesh.tun_name && usable(*ip, mesh) {
            out.push(Endpoint::Udp(SocketAddr::new(*ip, listen_port)));
        }
    }
    dedup(out)
}

fn usable(ip: IpAddr, mesh: &MeshSide) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_unspecified() && !v4.is_link_local(),
        IpAddr::V6(v6) => {
            !v6.is_loopback()
                && !v6.is_unspecified()
                && !v6.is_unicast_link_local()
                && !mesh.prefix.contains(v6)
        }
    }
}

fn dedup(v: Vec<Endpoint>) -> Vec<Endpoint> {
    let mut seen = std::collections::HashSet::new();
    v.into_iter()
        .filter(|e| seen.insert(*e))
        .take(MAX_ENDPOINTS)
        .collect()
}

/// The machine's interface addresses (name, ip).
pub fn interface_addrs() -> Vec<(String, IpAddr)> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|a| {
            let sa = a.address?;
            let ip = if let Some(v4) = sa.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else {
                IpAddr::V6(sa.as_sockaddr_in6()?.ip())
            };
            Some((a.interface_name, ip))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ifs() -> Vec<(String, IpAddr)> {
        vec![
            ("lo".into(), "127.0.0.1".parse().unwrap()),
            ("eth0".into(), "10.200.0.5".parse().unwrap()),
            ("eth0".into(), "fe80::1".parse().unwrap()),
            ("tbf0".into(), "fd00:1:2:3::1".parse().unwrap()),
            ("eth1".into(), "2001:db8::5".parse().unwrap()),
        ]
    }

    fn mesh() -> MeshSide {
        MeshSide {
            tun_name: "tbf0".into(),
            prefix: "fd00:1:2::/48".parse().unwrap(),
        }
    }

    fn strs(v: &[Endpoint]) -> Vec<String> {
        v.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn observed_first_then_usable_interfaces() {
        let got = advertised_endpoints(
            &[],
            Some("10.200.0.5".parse().unwrap()),
            &ifs(),
            51820,
            &mesh(),
        );
        assert_eq!(strs(&got), ["10.200.0.5:51820", "[2001:db8::5]:51820"]);
        let got = advertised_endpoints(
            &[],
            Some("203.0.113.9".parse().unwrap()),
            &ifs(),
            51820,
            &mesh(),
        );
        assert_eq!(
            strs(&got),
            [
                "203.0.113.9:51820",
                "10.200.0.5:51820",
                "[2001:db8::5]:51820"
            ]
        );
    }

    #[test]
    fn explicit_endpoints_win_and_port_zero_advertises_nothing() {
        let explicit: Vec<Endpoint> = vec!["192.0.2.1:4000".parse().unwrap()];
        assert_eq!(
            strs(&advertised_endpoints(
                &explicit,
                None,
                &ifs(),
                51820,
                &mesh()
            )),
            ["192.0.2.1:4000"]
        );
        assert!(advertised_endpoints(&[], None, &ifs(), 0, &mesh()).is_empty());
    }

    #[test]
    fn app_addresses_on_lo_are_not_endpoints_and_the_list_is_capped() {
        let mut interfaces = ifs();
        // Apps' addresses live on `lo` inside the node's /64: never underlay endpoints.
        for i in 2..40u16 {
            interfaces.push(("lo".into(), format!("fd00:1:2:3::{i:x}").parse().unwrap()));
        }
        let got = advertised_endpoints(&[], None, &interfaces, 51820, &mesh());
        assert_eq!(strs(&got), ["10.200.0.5:51820", "[2001:db8::5]:51820"]);
        // A machine with very many underlay addresses still sends what the coordinator takes.
        let many: Vec<(String, IpAddr)> = (1..=40u8)
            .map(|i| ("eth0".to_string(), IpAddr::from([10, 9, 0, i])))
            .collect();
        let got = advertised_endpoints(&[], None, &many, 51820, &mesh());
        assert_eq!(got.len(), MAX_ENDPOINTS);
        assert_eq!(got[0].to_string(), "10.9.0.1:51820");
    }
}
