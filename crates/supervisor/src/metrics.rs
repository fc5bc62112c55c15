//! `GET /metrics`: the node as Prometheus text, computed at scrape time from the snapshots the
//! API already reads (node status, the app manager's list, the data plane's counters), so the
//! metrics can never disagree with `/health`, `/v1/apps` and `/v1/mesh`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tabbify_mesh::dataplane::DataPlaneStats;
use tabbify_wire::node_apps::AppInfo;

type Labels = Vec<(&'static str, String)>;

/// What one scrape shows.
pub struct Snapshot<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub tags: Vec<String>,
    pub joined: bool,
    pub apps: &'a [AppInfo],
    pub dataplane: Option<DataPlaneStats>,
}

fn counter(value: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(value);
    c
}

/// Renders the OpenMetrics text of one snapshot (pure).
pub fn render(s: &Snapshot<'_>) -> String {
    let mut registry = Registry::with_prefix("tabbify_node");
    let info = Family::<Labels, Gauge>::default();
    info.get_or_create(&vec![
        ("name", s.name.to_string()),
        ("version", s.version.to_string()),
        ("tags", s.tags.join(",")),
    ])
    .set(1);
    registry.register("info", "The node: its name, version and mesh tags", info);
    let joined = Gauge::<i64>::default();
    joined.set(i64::from(s.joined));
    registry.register(
        "mesh_joined",
        "1 while the node is joined to the mesh",
        joined,
    );

    let by_state = Family::<Labels, Gauge>::default();
    let restarts = Family::<Labels, Counter>::default();
    for app in s.apps {
        let state = serde_json::to_value(app.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "other".into());
        by_state.get_or_create(&vec![("state", state)]).inc();
        restarts
            .get_or_create(&vec![
                ("app", app.name.to_string()),
                ("runtime", app.runtime.to_string()),
            ])
            .inc_by(u64::from(app.restart.restarts));
    }
    registry.register("apps", "Apps on this node by state", by_state);
    registry.register(
        "app_restarts",
        "Restarts the restart policy made since the app's version was deployed",
        restarts,
    );

    if let Some(dp) = &s.dataplane {
        let peers = Gauge::<i64>::default();
        peers.set(i64::try_from(dp.peers.len()).unwrap_or(i64::MAX));
        registry.register("mesh_peers", "Peers in the data plane", peers);
        let rx = Family::<Labels, Counter>::default();
        let tx = Family::<Labels, Counter>::default();
        for p in &dp.peers {
            let l = vec![("peer", p.allowed.to_string())];
            rx.get_or_create(&l).inc_by(p.rx_bytes);
            tx.get_or_create(&l).inc_by(p.tx_bytes);
        }
        registry.register("mesh_rx_bytes", "Inner bytes received from a peer", rx);
        registry.register("mesh_tx_bytes", "Inner bytes sent to a peer", tx);
        let dropped = Family::<Labels, Counter>::default();
        for (why, n) in [
            ("no_route", dp.dropped_no_route),
            ("unknown_peer", dp.dropped_unknown_peer),
            ("invalid", dp.dropped_invalid),
            ("source", dp.dropped_source),
        ] {
            dropped
                .get_or_create(&vec![("reason", why.to_string())])
                .inc_by(n);
        }
        registry.register(
            "mesh_dropped_packets",
            "Packets the data plane dropped",
            dropped,
        );
        registry.register(
            "mesh_cookies_sent",
            "Cookie replies sent under handshake load",
            counter(dp.cookies_sent),
        );
    }
    let mut out = String::new();
    if let Err(e) = encode(&mut out, &registry) {
        tracing::warn!(error = %e, "cannot encode metrics");
    }
    out
}
