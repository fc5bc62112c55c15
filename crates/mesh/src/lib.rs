//! The node's side of the mesh: its durable identity (`mesh-identity.json`: WireGuard key, peer id,
//! ULA) and the userspace WireGuard data plane that carries traffic between nodes.
//!
//! Talking to the coordinator is `tabbify-client`'s job; this crate holds what a node *is* on the
//! mesh and moves its packets.

pub mod dataplane;
pub mod identity;
