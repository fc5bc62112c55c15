//! `GET /metrics`: uploads and downloads by outcome, and what the store holds (counted from the
//! directory at scrape time, so it is right after a restart too).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::path::Path;

type Labels = Vec<(&'static str, &'static str)>;

/// Counters the request handlers bump.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub uploads: Family<Labels, Counter>,
    pub downloads: Family<Labels, Counter>,
}

impl Metrics {
    pub fn upload(&self, outcome: &'static str) {
        self.uploads
            .get_or_create(&vec![("outcome", outcome)])
            .inc();
    }

    pub fn download(&self, outcome: &'static str) {
        self.downloads
            .get_or_create(&vec![("outcome", outcome)])
            .inc();
    }

    /// The OpenMetrics text, with the blobs in `blob_dir` counted now.
    pub fn render(&self, blob_dir: &Path) -> String {
        let mut registry = Registry::with_prefix("tabbify_appsrv");
        registry.register(
            "uploads",
            "Uploads by outcome (created, existed, mismatch, too_large, refused, failed)",
            self.uploads.clone(),
        );
        registry.register(
            "downloads",
            "Downloads and HEADs by outcome (served, not_found)",
            self.downloads.clone(),
        );
        let (count, bytes) = std::fs::read_dir(blob_dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.metadata().ok().filter(|m| m.is_file()))
                    .fold((0i64, 0i64), |(n, b), m| {
                        (
                            n + 1,
                            b.saturating_add(i64::try_from(m.len()).unwrap_or(i64::MAX)),
                        )
                    })
            })
            .unwrap_or((0, 0));
        let blobs = Gauge::<i64>::default();
        blobs.set(count);
        registry.register("blobs", "Blobs in the store", blobs);
        let stored = Gauge::<i64>::default();
        stored.set(bytes);
        registry.register("stored_bytes", "Bytes of all blobs in the store", stored);
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &registry) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}
