//! The node's TLS material, kept in its data dir beside `mesh-identity.json`:
//! `mesh-tls.key` (its client key, 0600, made once), `mesh-tls.crt` (the certificate the
//! coordinator issued for it, then the mesh CA) and `mesh-ca.crt` (the mesh CA, saved at the
//! first join). How the node trusts the coordinator follows from them: the saved CA, or before
//! the first join the CA fingerprint in the join token, or the system roots for a coordinator
//! with a public certificate. The certificate is renewed at half its lifetime.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tabbify_client::{CaFingerprint, ClientCertSlot, CoordinatorClient, ServerTrust};
use tabbify_pki::{NodeCertInfo, NodeKey};
use tabbify_wire::mesh::RenewCertificateRequest;

pub const KEY_FILE: &str = "mesh-tls.key";
pub const CERT_FILE: &str = "mesh-tls.crt";
pub const CA_FILE: &str = "mesh-ca.crt";

pub struct NodeTls {
    dir: PathBuf,
    key: NodeKey,
    /// What the HTTP client presents; swapped on renewal.
    pub slot: Arc<ClientCertSlot>,
    state: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    ca_pem: Option<String>,
    cert: Option<NodeCertInfo>,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

impl NodeTls {
    /// Loads what is in `dir`, making the key (0600, atomically) when there is none.
    pub fn load_or_create(dir: &Path) -> Result<Arc<Self>> {
        let key_path = dir.join(KEY_FILE);
        let key = match read_optional(&key_path)? {
            Some(text) => NodeKey::from_pem(&text).with_context(|| {
                format!(
                    "{} is not a valid key; move it (and {CERT_FILE}) away to get a new one",
                    key_path.display()
                )
            })?,
            None => {
                let key = NodeKey::generate()?;
                tabbify_fsutil::atomic_write(&key_path, key.to_pem().as_bytes(), 0o600)
                    .with_context(|| format!("writing {}", key_path.display()))?;
                key
            }
        };
        let tls = Arc::new(Self {
            dir: dir.to_path_buf(),
            key,
            slot: ClientCertSlot::new(),
            state: Mutex::new(Held::default()),
        });
        let ca_pem = read_optional(&dir.join(CA_FILE))?;
        if let Some(ca) = &ca_pem {
            tabbify_pki::pem::certificates(ca.as_bytes(), CA_FILE)
                .with_context(|| format!("{} holds no usable CA", dir.join(CA_FILE).display()))?;
        }
        tls.held().ca_pem = ca_pem;
        if let Some(chain) = read_optional(&dir.join(CERT_FILE))? {
            // A certificate that no longer fits the key is dropped: the next join gets another.
            if let Err(e) = tls.install(&chain) {
                tracing::warn!(error = %e, "ignoring the saved node certificate");
            }
        }
        Ok(tls)
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub fn csr(&self) -> Result<String> {
        Ok(self.key.csr_pem()?)
    }

    /// The mesh CA saved at the first join, if any.
    pub fn saved_ca(&self) -> Option<String> {
        self.held().ca_pem.clone()
    }

    /// How to trust the coordinator: the token's pin when it names another CA than the saved one
    /// (the coordinator was rebuilt and handed out a new token), else the saved CA, else the pin,
    /// else the system roots.
    pub fn trust(&self, pin: Option<CaFingerprint>) -> Result<ServerTrust> {
        let saved = match self.saved_ca() {
            Some(pem) => Some(tabbify_pki::pem::certificates(pem.as_bytes(), CA_FILE)?),
            None => None,
        };
        Ok(match (saved, pin) {
            (Some(certs), Some(pin)) if !certs.iter().any(|c| pin.matches(c)) => {
                tracing::warn!(%pin, "the join token pins another mesh CA than the saved one; trusting the token's");
                ServerTrust::Pinned(pin)
            }
            (Some(certs), _) => ServerTrust::Roots(certs),
            (None, Some(pin)) => ServerTrust::Pinned(pin),
            (None, None) => ServerTrust::System,
        })
    }

    /// Checks `chain_pem` against the key and starts presenting it.
    fn install(&self, chain_pem: &str) -> Result<NodeCertInfo> {
        let certified = self.key.certified(chain_pem)?;
        let info = NodeCertInfo::parse_pem(chain_pem)?;
        self.slot.set(certified);
        self.held().cert = Some(info.clone());
        Ok(info)
    }

    /// Takes what a registration or renewal returned: presents the certificate from now on and
    /// saves it (and the CA) atomically.
    pub fn accept(&self, chain_pem: &str, ca_pem: Option<&str>) -> Result<NodeCertInfo> {
        let info = self.install(chain_pem)?;
        let cert_path = self.dir.join(CERT_FILE);
        tabbify_fsutil::atomic_write(&cert_path, chain_pem.as_bytes(), 0o644)
            .with_context(|| format!("writing {}", cert_path.display()))?;
        if let Some(ca) = ca_pem {
            tabbify_pki::pem::certificates(ca.as_bytes(), "the mesh CA from the coordinator")?;
            let ca_path = self.dir.join(CA_FILE);
            tabbify_fsutil::atomic_write(&ca_path, ca.as_bytes(), 0o644)
                .with_context(|| format!("writing {}", ca_path.display()))?;
            self.held().ca_pem = Some(ca.to_string());
        }
        Ok(info)
    }

    pub fn certificate(&self) -> Option<NodeCertInfo> {
        self.held().cert.clone()
    }
}

/// When to renew a certificate valid from `not_before` to `not_after`: half way.
pub fn renew_at(not_before: u64, not_after: u64) -> u64 {
    not_before + not_after.saturating_sub(not_before) / 2
}

fn unix_now() -> u64 {
    tabbify_wire::Timestamp::now().0 / 1000
}

/// Renews the node certificate at half its lifetime for as long as the node runs. A failed
/// renewal is retried (every 10% of the lifetime, at least 2 s); an expired certificate still
/// renews, and a revoked one makes the heartbeat fail, which registers again.
pub async fn renew_loop(tls: Arc<NodeTls>, client: CoordinatorClient) {
    loop {
        let Some(cert) = tls.certificate() else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let due = renew_at(cert.not_before, cert.not_after);
        let now = unix_now();
        if due > now {
            tokio::time::sleep(Duration::from_secs(due - now)).await;
            if tls.certificate().is_some_and(|c| c.serial != cert.serial) {
                // A registration in the meantime brought a new one.
                continue;
            }
        }
        let result = async {
            let csr = tls.csr()?;
            let resp = client
                .renew_certificate(&RenewCertificateRequest { csr })
                .await?;
            let info = tls.accept(&resp.client_certificate, None)?;
            client.reset_connections()?;
            anyhow::Ok(info)
        }
        .await;
        match result {
            Ok(info) => {
                tracing::info!(serial = %info.serial, not_after = info.not_after, "node certificate renewed")
            }
            Err(e) => {
                let retry = Duration::from_secs(
                    (cert.not_after.saturating_sub(cert.not_before) / 10).max(2),
                );
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?retry, "renewing the node certificate failed");
                tokio::time::sleep(retry).await;
            }
        }
    }
}

/// With a pinned or saved CA the coordinator speaks TLS: an `http://` URL (the spec's example)
/// is taken as `https://` on the same host and port.
pub fn coordinator_url(url: &str, tls_expected: bool) -> String {
    let trimmed = url.trim().trim_end_matches('/');
    match trimmed.strip_prefix("http://") {
        Some(rest) if tls_expected => {
            tracing::info!(
                "the join token pins the mesh CA: talking TLS to https://{rest} (the URL said http://)"
            );
            format!("https://{rest}")
        }
        _ => trimmed.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_is_made_once_and_private() {
        let d = tempfile::tempdir().unwrap();
        let a = NodeTls::load_or_create(d.path()).unwrap();
        let mode = std::fs::metadata(d.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = NodeTls::load_or_create(d.path()).unwrap();
        assert_eq!(a.key.to_pem(), b.key.to_pem());
        assert!(a.certificate().is_none());
        assert_eq!(a.trust(None).unwrap(), ServerTrust::System);
    }

    #[test]
    fn accepted_certificates_are_presented_saved_and_trusted_by_their_ca() {
        let d = tempfile::tempdir().unwrap();
        let tls = NodeTls::load_or_create(d.path()).unwrap();
        let ca = tabbify_pki::MeshCa::generate("t").unwrap();
        let issued = ca
            .issue_node(
                &tls.csr().unwrap(),
                "p1",
                "fd00::1".parse().unwrap(),
                "fd00::/64",
                Duration::from_secs(100),
                unix_now(),
            )
            .unwrap();
        let info = tls.accept(&issued.chain_pem, Some(ca.cert_pem())).unwrap();
        assert_eq!(info.peer_id, "p1");
        assert!(tls.slot.get().is_some());
        let again = NodeTls::load_or_create(d.path()).unwrap();
        assert_eq!(again.certificate().unwrap().serial, issued.serial);
        assert!(matches!(again.trust(None).unwrap(), ServerTrust::Roots(_)));
        assert!(matches!(
            again.trust(Some(ca.fingerprint())).unwrap(),
            ServerTrust::Roots(_)
        ));
        let other = tabbify_pki::MeshCa::generate("other").unwrap();
        assert_eq!(
            again.trust(Some(other.fingerprint())).unwrap(),
            ServerTrust::Pinned(other.fingerprint())
        );
        // A certificate for another key is refused.
        let stranger = NodeKey::generate().unwrap();
        let foreign = ca
            .issue_node(
                &stranger.csr_pem().unwrap(),
                "p2",
                "fd00::1".parse().unwrap(),
                "fd00::/64",
                Duration::from_secs(100),
                unix_now(),
            )
            .unwrap();
        assert!(tls.accept(&foreign.chain_pem, None).is_err());
        assert_eq!(tls.certificate().unwrap().peer_id, "p1");
    }

    #[test]
    fn renewal_is_half_way_and_urls_upgrade_only_when_tls_is_expected() {
        assert_eq!(renew_at(100, 300), 200);
        assert_eq!(renew_at(100, 100), 100);
        assert_eq!(coordinator_url("http://c:8888/", true), "https://c:8888");
        assert_eq!(coordinator_url("http://c:8888", false), "http://c:8888");
        assert_eq!(coordinator_url("https://c:8888", false), "https://c:8888");
    }
}
