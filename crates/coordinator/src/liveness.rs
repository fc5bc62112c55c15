//! Liveness: which peers have gone quiet (offline) and which have been gone long enough to lose
//! their address (purged).
//!
//! A pure decision over plain data with the clock passed in; a background task applies the
//! result every second.

use std::time::Duration;
use tabbify_wire::Timestamp;
use tabbify_wire::mesh::PeerId;

/// The knobs of the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessPolicy {
    pub heartbeat_interval: Duration,
    /// A peer is offline after this many intervals without a heartbeat.
    pub offline_after_missed: u32,
    /// An offline peer keeps its ULA this long after its last heartbeat, then it is purged.
    pub retention: Duration,
}

impl LivenessPolicy {
    /// Silence longer than this marks a peer offline.
    pub fn offline_after(&self) -> Duration {
        self.heartbeat_interval
            .saturating_mul(self.offline_after_missed.max(1))
    }
}

/// What the decision needs to know about one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerLiveness {
    pub peer_id: PeerId,
    pub last_seen: Timestamp,
    pub online: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LivenessChange {
    /// Was online, missed too many heartbeats.
    Offline(PeerId),
    /// Silent for longer than the retention window: remove it and free its address.
    Purge(PeerId),
}

/// Decides the changes due at `now`.
///
/// `serving_since` is when this coordinator process started: silence while the coordinator was
/// down is not the peer's fault, so a peer is never judged on time before that (otherwise a
/// restart after a long outage would mark every node offline, or purge it, before it had a chance
/// to send one heartbeat).
pub fn decide<'a>(
    policy: &LivenessPolicy,
    peers: impl IntoIterator<Item = &'a PeerLiveness>,
    serving_since: Timestamp,
    now: Timestamp,
) -> Vec<LivenessChange> {
    peers
        .into_iter()
        .filter_map(|peer| {
            judge(policy, peer.last_seen, peer.online, serving_since, now).map(|v| match v {
                Verdict::Offline => LivenessChange::Offline(peer.peer_id.clone()),
                Verdict::Purge => LivenessChange::Purge(peer.peer_id.clone()),
            })
        })
        .collect()
}

/// What is due for one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Offline,
    Purge,
}

/// The decision of [`decide`] for one peer, without copying anything (the store runs it over
/// the whole roster every second).
pub fn judge(
    policy: &LivenessPolicy,
    last_seen: Timestamp,
    online: bool,
    serving_since: Timestamp,
    now: Timestamp,
) -> Option<Verdict> {
    let reference = last_seen.max(serving_since);
    let silent_for = now.unix_ms().saturating_sub(reference.unix_ms());
    if silent_for > duration_ms(policy.retention) {
        Some(Verdict::Purge)
    } else if online && silent_for > duration_ms(policy.offline_after()) {
        Some(Verdict::Offline)
    } else {
        None
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1000;

    fn policy() -> LivenessPolicy {
        LivenessPolicy {
            heartbeat_interval: Duration::from_secs(5),
            offline_after_missed: 3,
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }

    fn peer(id: &str, last_seen_s: u64, online: bool) -> PeerLiveness {
        PeerLiveness {
            peer_id: id.into(),
            last_seen: Timestamp(last_seen_s * SEC),
            online,
        }
    }

    fn at(s: u64) -> Timestamp {
        Timestamp(s * SEC)
    }

    #[test]
    fn online_peer_goes_offline_only_after_the_third_missed_interval() {
        let p = [peer("a", 100, true)];
        let p = &p;
        assert!(decide(&policy(), p, at(0), at(100)).is_empty());
        assert!(decide(&policy(), p, at(0), at(114)).is_empty());
        assert!(
            decide(&policy(), p, at(0), Timestamp(115 * SEC)).is_empty(),
            "exactly 3 intervals"
        );
        assert_eq!(
            decide(&policy(), p, at(0), Timestamp(115 * SEC + 1)),
            vec![LivenessChange::Offline("a".into())]
        );
    }

    #[test]
    fn offline_peer_is_not_reported_again() {
        let p = [peer("a", 100, false)];
        assert!(decide(&policy(), &p, at(0), at(200)).is_empty());
    }

    #[test]
    fn purge_after_retention_whether_or_not_marked_offline() {
        let week = 7 * 24 * 3600;
        let p = [peer("off", 100, false), peer("on", 100, true)];
        assert_eq!(
            decide(&policy(), &p, at(0), at(100 + week)),
            vec![LivenessChange::Offline("on".into())]
        );
        assert_eq!(
            decide(&policy(), &p, at(0), at(100 + week + 1)),
            vec![
                LivenessChange::Purge("off".into()),
                LivenessChange::Purge("on".into())
            ]
        );
    }

    #[test]
    fn coordinator_downtime_does_not_count_against_peers() {
        let p = [peer("a", 100, true)];
        // The coordinator came back at t=10_000 after a long outage.
        assert!(decide(&policy(), &p, at(10_000), at(10_001)).is_empty());
        assert!(decide(&policy(), &p, at(10_000), at(10_015)).is_empty());
        assert_eq!(
            decide(&policy(), &p, at(10_000), at(10_016)),
            vec![LivenessChange::Offline("a".into())]
        );
        // Even past the retention window measured from the last heartbeat.
        let week = 7 * 24 * 3600;
        assert_eq!(
            decide(&policy(), &p, at(100 + 2 * week), at(100 + 2 * week + 16)),
            vec![LivenessChange::Offline("a".into())]
        );
    }

    #[test]
    fn clock_going_backwards_changes_nothing() {
        let p = [peer("a", 100, true)];
        assert!(decide(&policy(), &p, at(0), at(50)).is_empty());
    }

    #[test]
    fn short_intervals_and_zero_missed() {
        let pol = LivenessPolicy {
            heartbeat_interval: Duration::from_millis(200),
            offline_after_missed: 0,
            retention: Duration::from_secs(2),
        };
        assert_eq!(
            pol.offline_after(),
            Duration::from_millis(200),
            "0 acts as 1"
        );
        let p = [PeerLiveness {
            peer_id: "a".into(),
            last_seen: Timestamp(1_000),
            online: true,
        }];
        assert!(decide(&pol, &p, Timestamp(0), Timestamp(1_200)).is_empty());
        assert_eq!(
            decide(&pol, &p, Timestamp(0), Timestamp(1_201)),
            vec![LivenessChange::Offline("a".into())]
        );
        assert_eq!(
            decide(&pol, &p, Timestamp(0), Timestamp(3_001)),
            vec![LivenessChange::Purge("a".into())]
        );
    }
}
