//! Roster listings. The store keeps every peer's wire JSON next to the peer, refreshed when the
//! peer changes, so listing 10,000 peers is a copy of pointers under the store's lock and a
//! concatenation of ready-made JSON outside it, instead of re-serialising the roster each time.

use super::Store;
use serde::ser::{Serialize, SerializeStruct, Serializer};
use std::sync::Arc;
use tabbify_wire::Tag;
use tabbify_wire::mesh::{Peer, PeerList};

/// A roster listing that shares the store's peers; serialises exactly as [`PeerList`].
#[derive(Debug, Clone, PartialEq)]
pub struct PeerListView {
    pub peers: Vec<Arc<Peer>>,
    pub revision: u64,
    /// The wire JSON of each peer, in the same order; `None` if any was missing.
    fragments: Option<Vec<Arc<str>>>,
}

/// A peer with the JSON it has on the wire.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ListedPeer {
    peer: Arc<Peer>,
    /// `None` only if serialising failed, which these types cannot.
    json: Option<Arc<str>>,
}

impl ListedPeer {
    pub(super) fn new(peer: Arc<Peer>) -> Self {
        let json = serde_json::to_string(&*peer).ok().map(Arc::from);
        Self { peer, json }
    }

    /// Bytes of JSON this entry holds.
    pub(super) fn json_len(&self) -> usize {
        self.json.as_ref().map_or(0, |j| j.len())
    }
}

impl Store {
    /// The roster, ordered by address, optionally only peers carrying `tag`. Cheap: it shares
    /// the peers and their JSON; serialise it after the store is released.
    pub fn peer_list(&self, tag: Option<&Tag>) -> PeerListView {
        self.visited(self.listing.len());
        let listed: Vec<&ListedPeer> = self
            .listing
            .values()
            .filter(|l| tag.is_none_or(|t| l.peer.tags.contains(t)))
            .collect();
        PeerListView {
            peers: listed.iter().map(|l| Arc::clone(&l.peer)).collect(),
            revision: self.revision,
            fragments: listed.iter().map(|l| l.json.clone()).collect(),
        }
    }
}

impl PeerListView {
    pub fn to_owned_list(&self) -> PeerList {
        PeerList {
            peers: self.peers.iter().map(|p| Peer::clone(p)).collect(),
            revision: self.revision,
        }
    }

    /// The `GET /v1/mesh/peers` body.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let Some(fragments) = &self.fragments else {
            return serde_json::to_vec(self);
        };
        let size = fragments.iter().map(|f| f.len() + 1).sum::<usize>() + 48;
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(b"{\"peers\":[");
        for (i, f) in fragments.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(f.as_bytes());
        }
        out.extend_from_slice(format!("],\"revision\":{}}}", self.revision).as_bytes());
        Ok(out)
    }
}

impl Serialize for PeerListView {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Peers<'a>(&'a [Arc<Peer>]);
        impl Serialize for Peers<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(self.0.iter().map(|p| &**p))
            }
        }
        let mut s = serializer.serialize_struct("PeerList", 2)?;
        s.serialize_field("peers", &Peers(&self.peers))?;
        s.serialize_field("revision", &self.revision)?;
        s.end()
    }
}
