//! Prometheus metrics (`GET /metrics`): registrations, heartbeats, peers and watch subscribers.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

pub struct Metrics {
    registry: Registry,
    registrations: Family<Labels, Counter>,
    heartbeats: Family<Labels, Counter>,
    peers_total: Gauge,
    peers_online: Gauge,
    revision: Gauge,
    watch_subscribers: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tabbify_coordinator");
        let registrations = Family::<Labels, Counter>::default();
        registry.register(
            "registrations",
            "Register requests by outcome (joined, rejoined, refused)",
            registrations.clone(),
        );
        let heartbeats = Family::<Labels, Counter>::default();
        registry.register(
            "heartbeats",
            "Heartbeats by outcome (ok, unknown_peer, refused)",
            heartbeats.clone(),
        );
        let peers_total = Gauge::default();
        registry.register("peers", "Peers in the roster", peers_total.clone());
        let peers_online = Gauge::default();
        registry.register(
            "peers_online",
            "Peers currently online",
            peers_online.clone(),
        );
        let revision = Gauge::default();
        registry.register(
            "roster_revision",
            "Current roster revision",
            revision.clone(),
        );
        let watch_subscribers = Gauge::default();
        registry.register(
            "watch_subscribers",
            "Open /v1/mesh/watch streams",
            watch_subscribers.clone(),
        );
        Self {
            registry,
            registrations,
            heartbeats,
            peers_total,
            peers_online,
            revision,
            watch_subscribers,
        }
    }

    pub fn registration(&self, outcome: &'static str) {
        self.registrations
            .get_or_create(&vec![("outcome", outcome)])
            .inc();
    }

    pub fn heartbeat(&self, outcome: &'static str) {
        self.heartbeats
            .get_or_create(&vec![("outcome", outcome)])
            .inc();
    }

    /// Counts one open watch stream until the returned guard drops.
    pub fn watch_opened(&self) -> WatchGuard {
        self.watch_subscribers.inc();
        WatchGuard(self.watch_subscribers.clone())
    }

    /// Renders the text exposition, with the roster gauges set from `(total, online, revision)`.
    pub fn render(&self, total: u64, online: u64, revision: u64) -> String {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.peers_total.set(clamp(total));
        self.peers_online.set(clamp(online));
        self.revision.set(clamp(revision));
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

pub struct WatchGuard(Gauge);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges() {
        let m = Metrics::new();
        m.registration("joined");
        m.registration("joined");
        m.heartbeat("ok");
        let guard = m.watch_opened();
        let text = m.render(3, 2, 9);
        assert!(
            text.contains("tabbify_coordinator_registrations_total{outcome=\"joined\"} 2"),
            "{text}"
        );
        assert!(text.contains("tabbify_coordinator_heartbeats_total{outcome=\"ok\"} 1"));
        assert!(text.contains("tabbify_coordinator_peers_online 2"));
        assert!(text.contains("tabbify_coordinator_roster_revision 9"));
        assert!(text.contains("tabbify_coordinator_watch_subscribers 1"));
        drop(guard);
        assert!(
            m.render(3, 2, 9)
                .contains("tabbify_coordinator_watch_subscribers 0")
        );
    }
}
