//! What a node may say about where its replicas are. A state report names the address of each
//! replica, and the ingresses proxy there, so an address taken on a node's word would let any
//! node point the coordinator's (and every `--ingress` node's) proxy at anything it reaches:
//! the cloud metadata service, another node's control API, the coordinator's own loopback.
//!
//! The rule: a replica address is an app address inside the reporting node's own /64 (not the
//! node's ULA, where its control API listens, and not the subnet's `::` anycast address) on the
//! app's `[http] port` (the port the supervisor gives every app on the mesh, so the port an
//! assignment implies). A lab flag (`--allow-loopback-replicas`) also accepts loopback
//! addresses from nodes that connect over loopback, which is how a node without a data plane
//! (`--dataplane off`, `tcli dev` without TUN) on the coordinator's own machine serves.
//!
//! Pure: the store applies [`check_report_address`] before it keeps a report, and the
//! coordinator's ingress applies [`proxyable`] to every endpoint it is about to use, so a bad
//! address stored by an older coordinator is never proxied to either.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use tabbify_wire::Ipv6Prefix;
use tabbify_wire::app::AppName;

/// The lowest host number an app address may have in a node's /64: `::` is the subnet-router
/// anycast address and `::1` is the node itself.
const FIRST_APP_HOST: u64 = 2;

/// What the coordinator knows about the reporting node and the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportContext {
    /// The node's /64.
    pub subnet: Ipv6Prefix,
    /// The node's own address (its control API).
    pub node_ula: Ipv6Addr,
    /// The app's `[http] port`; `None` when the app is unknown (the report is then ignored, but
    /// the address must still be the node's).
    pub port: Option<u16>,
    /// `--allow-loopback-replicas` and the node's request came over loopback.
    pub loopback_ok: bool,
}

/// Why a reported address is refused. The text is the whole explanation a node operator reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressRefusal {
    #[error(
        "app {app}: replica address {addr} is not in this node's /64 {subnet}; a node may only report addresses of its own apps (::2 and up in its /64, on the app's [http] port)"
    )]
    OutsideSubnet {
        app: AppName,
        addr: SocketAddr,
        subnet: Ipv6Prefix,
    },
    #[error(
        "app {app}: replica address {addr} is the node's own address or its subnet's anycast address; apps get ::2 and up in the node's /64"
    )]
    NodeAddress { app: AppName, addr: SocketAddr },
    #[error("app {app}: replica address {addr} does not use the app's [http] port {port}")]
    WrongPort {
        app: AppName,
        addr: SocketAddr,
        port: u16,
    },
}

/// Checks one reported replica address of `app` against the rule above.
pub fn check_report_address(
    app: &AppName,
    addr: SocketAddr,
    ctx: &ReportContext,
) -> Result<(), AddressRefusal> {
    let ip = addr.ip().to_canonical();
    if ctx.loopback_ok && ip.is_loopback() {
        return Ok(());
    }
    let v6 = match ip {
        IpAddr::V6(v6) if ctx.subnet.contains(v6) => v6,
        _ => {
            return Err(AddressRefusal::OutsideSubnet {
                app: app.clone(),
                addr,
                subnet: ctx.subnet,
            });
        }
    };
    if v6 == ctx.node_ula || host_number(v6) < FIRST_APP_HOST {
        return Err(AddressRefusal::NodeAddress {
            app: app.clone(),
            addr,
        });
    }
    match ctx.port {
        Some(port) if port != addr.port() => Err(AddressRefusal::WrongPort {
            app: app.clone(),
            addr,
            port,
        }),
        _ => Ok(()),
    }
}

/// Whether an ingress may send a request to `addr`: an app address in the mesh (never a node's
/// `::`/`::1`), or loopback when the lab flag allows loopback replicas.
pub fn proxyable(addr: SocketAddr, mesh: Ipv6Prefix, loopback_ok: bool) -> bool {
    match addr.ip().to_canonical() {
        IpAddr::V6(v6) if mesh.contains(v6) => host_number(v6) >= FIRST_APP_HOST,
        ip => loopback_ok && ip.is_loopback(),
    }
}

/// The low 64 bits: the host's number within its /64.
fn host_number(a: Ipv6Addr) -> u64 {
    // Truncation keeps exactly the low 64 bits.
    u128::from(a) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(loopback_ok: bool) -> ReportContext {
        ReportContext {
            subnet: "fd12:3456:789a:7::/64".parse().unwrap(),
            node_ula: "fd12:3456:789a:7::1".parse().unwrap(),
            port: Some(8080),
            loopback_ok,
        }
    }

    fn app() -> AppName {
        AppName::new("web").unwrap()
    }

    fn check(addr: &str, c: &ReportContext) -> Result<(), AddressRefusal> {
        check_report_address(&app(), addr.parse().unwrap(), c)
    }

    #[test]
    fn an_app_address_in_the_nodes_subnet_on_the_apps_port_is_accepted() {
        check("[fd12:3456:789a:7::2]:8080", &ctx(false)).unwrap();
        check("[fd12:3456:789a:7::ffff:1]:8080", &ctx(false)).unwrap();
        let any_port = ReportContext {
            port: None,
            ..ctx(false)
        };
        check("[fd12:3456:789a:7::9]:1234", &any_port).unwrap();
    }

    #[test]
    fn addresses_outside_the_subnet_are_refused_with_the_subnet_named() {
        for bad in [
            "169.254.169.254:80",
            "[::ffff:169.254.169.254]:80",
            "127.0.0.1:8080",
            "[::1]:8080",
            "10.0.0.5:8080",
            // Another node's /64 in the same mesh.
            "[fd12:3456:789a:8::2]:8080",
            "[fd00::2]:8080",
        ] {
            let err = check(bad, &ctx(false)).unwrap_err();
            assert!(
                matches!(err, AddressRefusal::OutsideSubnet { .. }),
                "{bad}: {err:?}"
            );
            let text = err.to_string();
            assert!(text.contains("fd12:3456:789a:7::/64"), "{text}");
            assert!(text.contains("app web"), "{text}");
        }
    }

    #[test]
    fn the_node_itself_and_the_anycast_address_are_refused() {
        for bad in ["[fd12:3456:789a:7::1]:8730", "[fd12:3456:789a:7::]:8080"] {
            assert!(matches!(
                check(bad, &ctx(false)).unwrap_err(),
                AddressRefusal::NodeAddress { .. }
            ));
        }
    }

    #[test]
    fn another_port_is_refused() {
        let err = check("[fd12:3456:789a:7::2]:22", &ctx(false)).unwrap_err();
        assert!(matches!(err, AddressRefusal::WrongPort { port: 8080, .. }));
        assert!(err.to_string().contains("[http] port 8080"), "{err}");
    }

    #[test]
    fn loopback_only_with_the_lab_allowance() {
        check("127.0.0.1:41234", &ctx(true)).unwrap();
        check("[::1]:41234", &ctx(true)).unwrap();
        assert!(check("169.254.169.254:80", &ctx(true)).is_err());
        assert!(check("127.0.0.1:41234", &ctx(false)).is_err());
    }

    #[test]
    fn the_ingress_proxies_to_mesh_app_addresses_only() {
        let mesh: Ipv6Prefix = "fd12:3456:789a::/48".parse().unwrap();
        let ok = |s: &str, lo: bool| proxyable(s.parse().unwrap(), mesh, lo);
        assert!(ok("[fd12:3456:789a:7::2]:8080", false));
        assert!(ok("[fd12:3456:789a:99::5]:1", false));
        assert!(!ok("[fd12:3456:789a:7::1]:8730", false), "a node's API");
        assert!(!ok("[fd12:3456:789a:7::]:80", false));
        assert!(!ok("[fd12:3456:789b:7::2]:8080", false), "another mesh");
        assert!(!ok("169.254.169.254:80", false));
        assert!(!ok("169.254.169.254:80", true));
        assert!(!ok("127.0.0.1:9000", false));
        assert!(ok("127.0.0.1:9000", true));
    }
}
