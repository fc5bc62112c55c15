//! Mesh addressing: the random RFC 4193 /48 of a mesh and the /64 each node gets inside it.
//!
//! Everything here is pure so allocation can be tested exhaustively: the store supplies the set of
//! subnets in use and a random starting point, and gets back a subnet id or the precise reason
//! there is none.

use std::collections::BTreeSet;
use std::net::Ipv6Addr;
use tabbify_wire::Ipv6Prefix;

/// Index of a node's /64 inside the mesh /48 (the 16 bits after the global id).
pub type SubnetId = u16;

/// Subnet 0 belongs to the coordinator itself and is never handed to a node.
pub const COORDINATOR_SUBNET: SubnetId = 0;

/// Length of the mesh prefix.
pub const MESH_PREFIX_LEN: u8 = 48;
/// Length of a node's subnet.
pub const NODE_SUBNET_LEN: u8 = 64;

/// Why no subnet could be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("requested address {requested} is outside the mesh prefix {mesh}")]
    OutsidePrefix {
        requested: Ipv6Addr,
        mesh: Ipv6Prefix,
    },
    #[error(
        "requested address {requested} is in subnet {subnet}, which is reserved for the coordinator"
    )]
    Reserved {
        requested: Ipv6Addr,
        subnet: Ipv6Prefix,
    },
    #[error("requested address {requested}: its subnet {subnet} is held by another peer")]
    Taken {
        requested: Ipv6Addr,
        subnet: Ipv6Prefix,
    },
    #[error(
        "this peer already holds {held}; a re-registration keeps its address and cannot move to {requested}"
    )]
    AlreadyHolds { held: Ipv6Addr, requested: Ipv6Addr },
    #[error("the mesh {mesh} is full: all {capacity} node subnets are in use")]
    Full { mesh: Ipv6Prefix, capacity: u32 },
}

/// Builds a mesh prefix `fdXX:XXXX:XXXX::/48` from 40 random bits (RFC 4193 global id).
pub fn mesh_prefix_from_global_id(global_id: [u8; 5]) -> Ipv6Prefix {
    let mut octets = [0u8; 16];
    octets[0] = 0xfd;
    octets[1..6].copy_from_slice(&global_id);
    Ipv6Prefix::new(Ipv6Addr::from(octets), MESH_PREFIX_LEN)
}

/// True when `prefix` is a usable mesh prefix: a /48 inside `fd00::/8`.
pub fn is_valid_mesh_prefix(prefix: &Ipv6Prefix) -> bool {
    prefix.len() == MESH_PREFIX_LEN && prefix.addr().octets()[0] == 0xfd
}

/// The /64 of `subnet` inside `mesh`.
pub fn subnet_prefix(mesh: Ipv6Prefix, subnet: SubnetId) -> Ipv6Prefix {
    let bits = u128::from(mesh.addr()) | (u128::from(subnet) << 64);
    Ipv6Prefix::new(Ipv6Addr::from(bits), NODE_SUBNET_LEN)
}

/// The node address in `subnet`: always `<subnet>::1`.
pub fn node_ula(mesh: Ipv6Prefix, subnet: SubnetId) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(subnet_prefix(mesh, subnet).addr()) | 1)
}

/// The subnet an address names, or `None` when it is outside the mesh.
pub fn subnet_of(mesh: Ipv6Prefix, addr: Ipv6Addr) -> Option<SubnetId> {
    if !mesh.contains(addr) {
        return None;
    }
    // Bits 48..64 of the address; the mask makes the narrowing exact.
    Some(((u128::from(addr) >> 64) & 0xffff) as SubnetId)
}

/// Chooses the subnet for a registration.
///
/// * `held`: the subnet this key already holds (a re-registration); it is kept, and a request
///   naming another subnet is refused.
/// * `requested`: an address the node asks for; any address in a /64 names that /64.
/// * `start`: where the search for a free subnet begins (random in production, so addresses are
///   not predictable); the search wraps and never returns subnet 0.
pub fn allocate_subnet(
    mesh: Ipv6Prefix,
    used: &BTreeSet<SubnetId>,
    held: Option<SubnetId>,
    requested: Option<Ipv6Addr>,
    start: SubnetId,
) -> Result<SubnetId, AllocError> {
    let requested_subnet = match requested {
        None => None,
        Some(addr) => Some(check_requested(mesh, addr)?),
    };
    if let Some(held) = held {
        return match (requested, requested_subnet) {
            (Some(addr), Some(want)) if want != held => Err(AllocError::AlreadyHolds {
                held: node_ula(mesh, held),
                requested: addr,
            }),
            _ => Ok(held),
        };
    }
    if let (Some(addr), Some(want)) = (requested, requested_subnet) {
        if used.contains(&want) {
            return Err(AllocError::Taken {
                requested: addr,
                subnet: subnet_prefix(mesh, want),
            });
        }
        return Ok(want);
    }
    first_free_from(used, start).ok_or(AllocError::Full {
        mesh,
        capacity: u32::from(SubnetId::MAX),
    })
}

fn check_requested(mesh: Ipv6Prefix, addr: Ipv6Addr) -> Result<SubnetId, AllocError> {
    let subnet = subnet_of(mesh, addr).ok_or(AllocError::OutsidePrefix {
        requested: addr,
        mesh,
    })?;
    if subnet == COORDINATOR_SUBNET {
        return Err(AllocError::Reserved {
            requested: addr,
            subnet: subnet_prefix(mesh, subnet),
        });
    }
    Ok(subnet)
}

/// The first subnet at or after `start` (wrapping, skipping 0) that is not in `used`.
fn first_free_from(used: &BTreeSet<SubnetId>, start: SubnetId) -> Option<SubnetId> {
    let start = start.max(1);
    // Free ids are the gaps in the sorted set: walk it from `start` to the end, then from 1.
    gap_in(used, start, SubnetId::MAX).or_else(|| gap_in(used, 1, start - 1))
}

/// The lowest id in `lo..=hi` not in `used`.
fn gap_in(used: &BTreeSet<SubnetId>, lo: SubnetId, hi: SubnetId) -> Option<SubnetId> {
    if lo > hi {
        return None;
    }
    let mut candidate = lo;
    for &taken in used.range(lo..=hi) {
        if taken != candidate {
            return Some(candidate);
        }
        if taken == hi {
            return None;
        }
        candidate = taken + 1;
    }
    Some(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh() -> Ipv6Prefix {
        mesh_prefix_from_global_id([0x12, 0x34, 0x56, 0x78, 0x9a])
    }

    fn addr(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn mesh_prefix_is_an_fd_slash_48() {
        let m = mesh();
        assert_eq!(m.to_string(), "fd12:3456:789a::/48");
        assert!(is_valid_mesh_prefix(&m));
        assert!(!is_valid_mesh_prefix(&"fc00::/48".parse().unwrap()));
        assert!(!is_valid_mesh_prefix(&"fd00::/64".parse().unwrap()));
    }

    #[test]
    fn subnet_and_ula_layout() {
        let m = mesh();
        assert_eq!(subnet_prefix(m, 7).to_string(), "fd12:3456:789a:7::/64");
        assert_eq!(node_ula(m, 7), addr("fd12:3456:789a:7::1"));
        assert_eq!(node_ula(m, 0xffff), addr("fd12:3456:789a:ffff::1"));
        assert_eq!(subnet_of(m, addr("fd12:3456:789a:abcd::42")), Some(0xabcd));
        assert_eq!(subnet_of(m, addr("fd12:3456:789b:1::1")), None);
        for id in [1, 2, 0x100, 0xfffe, 0xffff] {
            assert_eq!(subnet_of(m, node_ula(m, id)), Some(id));
        }
    }

    #[test]
    fn fresh_allocation_starts_at_hint_and_skips_zero() {
        let used = BTreeSet::new();
        assert_eq!(allocate_subnet(mesh(), &used, None, None, 0), Ok(1));
        assert_eq!(allocate_subnet(mesh(), &used, None, None, 1), Ok(1));
        assert_eq!(allocate_subnet(mesh(), &used, None, None, 500), Ok(500));
        assert_eq!(
            allocate_subnet(mesh(), &used, None, None, 0xffff),
            Ok(0xffff)
        );
    }

    #[test]
    fn fresh_allocation_skips_used_and_wraps() {
        let used: BTreeSet<SubnetId> = [5, 6, 7, 0xfffe, 0xffff, 1].into_iter().collect();
        assert_eq!(allocate_subnet(mesh(), &used, None, None, 5), Ok(8));
        assert_eq!(allocate_subnet(mesh(), &used, None, None, 0xfffe), Ok(2));
        assert_eq!(
            allocate_subnet(mesh(), &used, None, None, 0xfffd),
            Ok(0xfffd)
        );
    }

    #[test]
    fn only_one_free_subnet_is_found_from_every_start() {
        let free = 0x7777;
        let used: BTreeSet<SubnetId> = (1..=SubnetId::MAX).filter(|&s| s != free).collect();
        for start in [0, 1, 2, free - 1, free, free + 1, 0xffff] {
            assert_eq!(
                allocate_subnet(mesh(), &used, None, None, start),
                Ok(free),
                "start {start}"
            );
        }
    }

    #[test]
    fn full_mesh_is_reported() {
        let used: BTreeSet<SubnetId> = (1..=SubnetId::MAX).collect();
        for start in [0, 1, 0x8000, 0xffff] {
            assert_eq!(
                allocate_subnet(mesh(), &used, None, None, start),
                Err(AllocError::Full {
                    mesh: mesh(),
                    capacity: 65535
                })
            );
        }
    }

    #[test]
    fn requested_free_address_is_honoured_and_normalised() {
        let used: BTreeSet<SubnetId> = [1, 2].into_iter().collect();
        let got = allocate_subnet(mesh(), &used, None, Some(addr("fd12:3456:789a:42::abc")), 1);
        assert_eq!(got, Ok(0x42));
        assert_eq!(node_ula(mesh(), 0x42), addr("fd12:3456:789a:42::1"));
    }

    #[test]
    fn requested_taken_address_is_refused() {
        let used: BTreeSet<SubnetId> = [0x42].into_iter().collect();
        let requested = addr("fd12:3456:789a:42::1");
        assert_eq!(
            allocate_subnet(mesh(), &used, None, Some(requested), 1),
            Err(AllocError::Taken {
                requested,
                subnet: subnet_prefix(mesh(), 0x42)
            })
        );
    }

    #[test]
    fn requested_outside_prefix_is_refused_even_when_holding() {
        let used = BTreeSet::new();
        for requested in ["fd12:3456:789b:42::1", "2001:db8::1", "::1", "fe80::1"] {
            let requested = addr(requested);
            let want = Err(AllocError::OutsidePrefix {
                requested,
                mesh: mesh(),
            });
            assert_eq!(
                allocate_subnet(mesh(), &used, None, Some(requested), 1),
                want
            );
            assert_eq!(
                allocate_subnet(mesh(), &used, Some(3), Some(requested), 1),
                want
            );
        }
    }

    #[test]
    fn coordinator_subnet_is_never_given() {
        let used = BTreeSet::new();
        let requested = addr("fd12:3456:789a::1");
        let err = allocate_subnet(mesh(), &used, None, Some(requested), 1).unwrap_err();
        assert!(matches!(err, AllocError::Reserved { .. }), "{err:?}");
        assert!(err.to_string().contains("reserved for the coordinator"));
    }

    #[test]
    fn same_key_keeps_its_subnet() {
        let used: BTreeSet<SubnetId> = [9].into_iter().collect();
        // No request, or a request inside its own /64 (even though "used" by itself): kept.
        assert_eq!(allocate_subnet(mesh(), &used, Some(9), None, 1), Ok(9));
        assert_eq!(
            allocate_subnet(mesh(), &used, Some(9), Some(addr("fd12:3456:789a:9::1")), 1),
            Ok(9)
        );
        assert_eq!(
            allocate_subnet(
                mesh(),
                &used,
                Some(9),
                Some(addr("fd12:3456:789a:9::77")),
                1
            ),
            Ok(9)
        );
        // Asking for another subnet is refused, free or not.
        let requested = addr("fd12:3456:789a:10::1");
        assert_eq!(
            allocate_subnet(mesh(), &used, Some(9), Some(requested), 1),
            Err(AllocError::AlreadyHolds {
                held: addr("fd12:3456:789a:9::1"),
                requested
            })
        );
    }

    #[test]
    fn gap_search_matches_a_linear_scan() {
        // Cross-check the set walk against the obvious loop on many irregular sets.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..200 {
            let mut used = BTreeSet::new();
            for _ in 0..(seed % 300) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                used.insert((seed % 400) as SubnetId + 1);
            }
            seed ^= seed << 13;
            let start = (seed % 420) as SubnetId;
            let expected = (0..=u32::from(SubnetId::MAX))
                .map(|i| ((u32::from(start.max(1)) - 1 + i) % 65535 + 1) as SubnetId)
                .find(|s| !used.contains(s));
            assert_eq!(first_free_from(&used, start), expected, "start {start}");
        }
    }
}
