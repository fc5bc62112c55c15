//! The mesh's X.509 layer: the coordinator's certificate authority, the certificates it issues
//! (its own server certificate; each node's short-lived client certificate, made from the node's
//! CSR and bound to its peer id and /64), the CA fingerprint a join token carries so a node trusts
//! the right coordinator with nothing else, and the rustls configurations both ends use.
//!
//! Nothing here does network I/O; `ca` reads and writes its files in a data dir.

pub mod ca;
pub mod fingerprint;
pub mod node_cert;
pub mod pem;
pub mod tls;
mod verify;

pub use ca::{CaError, IssuedCert, MeshCa};
pub use fingerprint::CaFingerprint;
pub use node_cert::{NodeCertInfo, NodeKey};
pub use tls::{ClientCertSlot, ServerTrust, TlsError};

/// The crypto provider every config here uses (ring, as reqwest's rustls does).
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// Seconds since the Unix epoch, now.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
