//! rustls configurations: the coordinator's server side (its certificate, node certificates
//! offered and checked against the mesh CA) and the client side used by nodes, `tcli` and
//! anything else that talks to the coordinator or an appsrv (how to trust the server, and the
//! node's current client certificate, swappable on renewal without a new client).

use crate::fingerprint::CaFingerprint;
use crate::verify::{MeshClientVerifier, PinnedCaVerifier};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};
use std::sync::{Arc, RwLock};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn config_err(e: impl std::fmt::Display) -> TlsError {
    TlsError::Config(e.to_string())
}

/// How a client decides that the server is the right one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerTrust {
    /// The CA whose certificate has this SHA-256 (from a join token, or given to tcli).
    Pinned(CaFingerprint),
    /// These CA certificates (the mesh CA saved after joining, or an operator's CA file).
    Roots(Vec<CertificateDer<'static>>),
    /// The bundled public web PKI roots (Mozilla's), for an operator's public certificate.
    System,
    /// These CA certificates and the public roots (an operator tool that may meet either).
    RootsAndSystem(Vec<CertificateDer<'static>>),
}

/// The node's current client certificate. Renewal swaps it in place; connections opened after
/// that present the new one.
#[derive(Debug, Default)]
pub struct ClientCertSlot {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl ClientCertSlot {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn set(&self, key: Arc<CertifiedKey>) {
        if let Ok(mut slot) = self.current.write() {
            *slot = Some(key);
        }
    }

    pub fn clear(&self) {
        if let Ok(mut slot) = self.current.write() {
            *slot = None;
        }
    }

    pub fn get(&self) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().and_then(|s| s.clone())
    }
}

impl ResolvesClientCert for ClientCertSlot {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.get()
    }

    fn has_certs(&self) -> bool {
        self.get().is_some()
    }
}

/// A client config trusting the server as `trust` says, presenting `identity`'s certificate
/// when it holds one.
pub fn client_config(
    trust: &ServerTrust,
    identity: Option<Arc<ClientCertSlot>>,
) -> Result<ClientConfig, TlsError> {
    let provider = crate::provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(config_err)?;
    let builder = match trust {
        ServerTrust::Pinned(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCaVerifier::new(*pin, provider))),
        ServerTrust::Roots(certs) => {
            let mut roots = RootCertStore::empty();
            for c in certs {
                roots.add(c.clone()).map_err(config_err)?;
            }
            builder.with_root_certificates(roots)
        }
        ServerTrust::System => {
            let roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            builder.with_root_certificates(roots)
        }
        ServerTrust::RootsAndSystem(certs) => {
            let mut roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            for c in certs {
                roots.add(c.clone()).map_err(config_err)?;
            }
            builder.with_root_certificates(roots)
        }
    };
    Ok(match identity {
        Some(slot) => builder.with_client_cert_resolver(slot),
        None => builder.with_no_client_auth(),
    })
}

/// The coordinator's server config: `chain`/`key` as its certificate, node certificates
/// checked against `mesh_ca` when a client offers one.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    mesh_ca: &CertificateDer<'static>,
) -> Result<ServerConfig, TlsError> {
    let provider = crate::provider();
    let mut roots = RootCertStore::empty();
    roots.add(mesh_ca.clone()).map_err(config_err)?;
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(config_err)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(config_err)?
        .with_client_cert_verifier(Arc::new(MeshClientVerifier::new(inner)))
        .with_single_cert(chain, key)
        .map_err(config_err)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A server config without client certificates (the appsrv).
pub fn plain_server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(crate::provider())
        .with_safe_default_protocol_versions()
        .map_err(config_err)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(config_err)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
