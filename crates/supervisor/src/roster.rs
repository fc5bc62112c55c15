//! The node's copy of the coordinator's roster, rebuilt from the watch stream. Pure: it takes
//! watch messages and says whether the peer set changed and whether the stream skipped a
//! revision (the caller then resumes from the last revision it applied).

use std::collections::BTreeMap;
use tabbify_client::WatchMessage;
use tabbify_wire::mesh::{Peer, RosterEventKind};

#[derive(Debug, Default, Clone)]
pub struct Roster {
    peers: BTreeMap<String, Peer>,
    revision: Option<u64>,
}

/// What applying one message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The peer set changed.
    Changed,
    /// Already seen (revision not newer) or no effect.
    Unchanged,
    /// The message skipped revisions we never saw: resume the stream from [`Roster::revision`].
    Gap { expected: u64, got: u64 },
}

impl Roster {
    /// The last revision applied, to resume the watch from.
    pub fn revision(&self) -> Option<u64> {
        self.revision
    }

    pub fn peers(&self) -> Vec<Peer> {
        self.peers.values().cloned().collect()
    }

    pub fn apply(&mut self, msg: WatchMessage) -> Applied {
        match msg {
            WatchMessage::Snapshot(s) => {
                self.peers = s
                    .peers
                    .into_iter()
                    .map(|p| (p.peer_id.clone(), p))
                    .collect();
                self.revision = Some(s.revision);
                Applied::Changed
            }
            WatchMessage::Event(e) => {
                if let Some(rev) = self.revision {
                    if e.revision <= rev {
                        return Applied::Unchanged;
                    }
                    if e.revision != rev + 1 {
                        return Applied::Gap {
                            expected: rev + 1,
                            got: e.revision,
                        };
                    }
                }
                self.revision = Some(e.revision);
                match e.kind {
                    RosterEventKind::Removed => {
                        self.peers.remove(&e.peer.peer_id);
                    }
                    RosterEventKind::Joined
                    | RosterEventKind::Updated
                    | RosterEventKind::Offline => {
                        let peer = e.peer;
                        self.peers.insert(peer.peer_id.clone(), peer);
                    }
                }
                Applied::Changed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tabbify_wire::mesh::{RosterEvent, RosterSnapshot};
    use tabbify_wire::{PublicKeyB64, Timestamp};

    fn peer(id: &str, online: bool) -> Peer {
        Peer {
            peer_id: id.into(),
            ula: "fd00:1:2:1::1".parse().unwrap(),
            subnet: "fd00:1:2:1::/64".parse().unwrap(),
            display_name: id.into(),
            tags: vec![],
            public_key: PublicKeyB64::from_bytes([1; 32]),
            endpoints: vec![],
            last_seen: Timestamp(0),
            online,
            version: "0".into(),
            joined_at: None,
            resources: None,
        }
    }

    fn ev(rev: u64, kind: RosterEventKind, p: Peer) -> WatchMessage {
        WatchMessage::Event(Box::new(RosterEvent {
            revision: rev,
            kind,
            peer: p,
            at: Timestamp(0),
        }))
    }

    #[test]
    fn snapshot_then_events_in_order() {
        let mut r = Roster::default();
        let snap = WatchMessage::Snapshot(RosterSnapshot {
            revision: 5,
            peers: vec![peer("a", true)],
        });
        assert_eq!(r.apply(snap), Applied::Changed);
        assert_eq!(
            r.apply(ev(6, RosterEventKind::Joined, peer("b", true))),
            Applied::Changed
        );
        assert_eq!(
            r.apply(ev(7, RosterEventKind::Offline, peer("a", false))),
            Applied::Changed
        );
        let peers = r.peers();
        assert_eq!(peers.len(), 2);
        assert!(!peers[0].online && peers[1].online);
        assert_eq!(
            r.apply(ev(8, RosterEventKind::Removed, peer("b", true))),
            Applied::Changed
        );
        assert_eq!(r.peers().len(), 1);
        assert_eq!(r.revision(), Some(8));
    }

    #[test]
    fn duplicates_are_ignored_and_gaps_reported() {
        let mut r = Roster::default();
        assert_eq!(
            r.apply(ev(1, RosterEventKind::Joined, peer("a", true))),
            Applied::Changed
        );
        assert_eq!(
            r.apply(ev(1, RosterEventKind::Removed, peer("a", true))),
            Applied::Unchanged
        );
        assert_eq!(r.peers().len(), 1, "the duplicate did not remove anything");
        assert_eq!(
            r.apply(ev(3, RosterEventKind::Joined, peer("c", true))),
            Applied::Gap {
                expected: 2,
                got: 3
            }
        );
        assert_eq!(r.revision(), Some(1), "nothing applied past the gap");
    }
}
