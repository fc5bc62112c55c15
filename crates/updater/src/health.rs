//! Asking a supervisor how it is: one `GET /health` with a short timeout, judged by
//! [`crate::gate::judge_health`], and where to ask by default (the node's ULA from its identity
//! file, or loopback when it has none).

use crate::gate::judge_health;
use serde::Deserialize;
use std::net::Ipv6Addr;
use std::path::Path;
use std::time::Duration;
use tabbify_wire::SUPERVISOR_PORT;
use tabbify_wire::health::SupervisorHealth;

/// A client for health probes: short timeouts, no proxies (the URL is a local or mesh address).
pub fn probe_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// One probe: `Ok` when `url` answers a healthy `/health` of `release_version`.
pub async fn probe(
    http: &reqwest::Client,
    url: &str,
    release_version: &str,
) -> Result<SupervisorHealth, String> {
    let resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {}", error_chain(&e)))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("GET {url} answered {status}"));
    }
    let health: SupervisorHealth = resp
        .json()
        .await
        .map_err(|e| format!("GET {url}: the body is not a supervisor health document: {e}"))?;
    judge_health(&health, release_version)?;
    Ok(health)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The part of `mesh-identity.json` we need; everything else is ignored.
#[derive(Deserialize)]
struct IdentityUla {
    #[serde(default)]
    ula: Option<Ipv6Addr>,
}

/// Where the supervisor's API answers: `http://[ula]:8730/health` once the node has joined,
/// `http://127.0.0.1:8730/health` otherwise.
pub fn default_health_url(data_dir: &Path) -> String {
    let ula = std::fs::read(data_dir.join("mesh-identity.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<IdentityUla>(&b).ok())
        .and_then(|id| id.ula);
    match ula {
        Some(ula) => format!("http://[{ula}]:{SUPERVISOR_PORT}/health"),
        None => format!("http://127.0.0.1:{SUPERVISOR_PORT}/health"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_url_follows_the_identity() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(default_health_url(d.path()), "http://127.0.0.1:8730/health");
        std::fs::write(
            d.path().join("mesh-identity.json"),
            r#"{"version":1,"private_key":"x","public_key":"y","ula":"fd12:3456:789a:1::1"}"#,
        )
        .unwrap();
        assert_eq!(
            default_health_url(d.path()),
            "http://[fd12:3456:789a:1::1]:8730/health"
        );
    }
}
