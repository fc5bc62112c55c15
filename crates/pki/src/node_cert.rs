//! A node's side of its client certificate: the key it generates (never leaves the node), the
//! CSR it sends, and reading back what a certificate says (peer id, serial, expiry), which the
//! coordinator also uses on every mTLS request.

use crate::ca::PEER_URI_PREFIX;
use crate::pem;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls::sign::CertifiedKey;
use std::sync::Arc;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

#[derive(Debug, thiserror::Error)]
pub enum NodeCertError {
    #[error("cannot generate a key: {0}")]
    Generate(String),
    #[error("not a valid private key: {0}")]
    BadKey(String),
    #[error("not a valid certificate: {0}")]
    BadCertificate(String),
    #[error(
        "the certificate names no Tabbify peer (no `{PEER_URI_PREFIX}` URI and no common name)"
    )]
    NoPeer,
}

/// The node's TLS key (ECDSA P-256).
pub struct NodeKey {
    key: KeyPair,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeKey(..)")
    }
}

impl NodeKey {
    pub fn generate() -> Result<Self, NodeCertError> {
        KeyPair::generate()
            .map(|key| Self { key })
            .map_err(|e| NodeCertError::Generate(e.to_string()))
    }

    pub fn from_pem(text: &str) -> Result<Self, NodeCertError> {
        KeyPair::from_pem(text)
            .map(|key| Self { key })
            .map_err(|e| NodeCertError::BadKey(e.to_string()))
    }

    /// PKCS#8 PEM; store it 0600.
    pub fn to_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A CSR for this key. The coordinator ignores everything in it but the key.
    pub fn csr_pem(&self) -> Result<String, NodeCertError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "tabbify node");
        params.distinguished_name = dn;
        params
            .serialize_request(&self.key)
            .and_then(|csr| csr.pem())
            .map_err(|e| NodeCertError::Generate(e.to_string()))
    }

    /// This key with `chain_pem` (the node certificate, then the CA), ready for rustls.
    pub fn certified(&self, chain_pem: &str) -> Result<Arc<CertifiedKey>, NodeCertError> {
        let chain = pem::certificates(chain_pem.as_bytes(), "node certificate")
            .map_err(|e| NodeCertError::BadCertificate(e.to_string()))?;
        let key_der = rustls_pki_types::PrivateKeyDer::try_from(self.key.serialize_der())
            .map_err(|e| NodeCertError::BadKey(e.to_string()))?;
        let signing = rustls::crypto::ring::sign::any_supported_type(&key_der)
            .map_err(|e| NodeCertError::BadKey(e.to_string()))?;
        let certified = CertifiedKey::new(chain, signing);
        certified
            .keys_match()
            .map_err(|e| NodeCertError::BadCertificate(format!("does not match the key: {e}")))?;
        Ok(Arc::new(certified))
    }
}

/// What a node certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCertInfo {
    pub peer_id: String,
    /// Lowercase hex.
    pub serial: String,
    /// Seconds since the Unix epoch.
    pub not_before: u64,
    pub not_after: u64,
}

impl NodeCertInfo {
    pub fn parse(der: &[u8]) -> Result<Self, NodeCertError> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| NodeCertError::BadCertificate(e.to_string()))?;
        let from_uri = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|san| {
                san.value.general_names.iter().find_map(|name| match name {
                    GeneralName::URI(uri) => uri.strip_prefix(PEER_URI_PREFIX).map(str::to_string),
                    _ => None,
                })
            });
        let peer_id = match from_uri {
            Some(id) => id,
            None => cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_string)
                .ok_or(NodeCertError::NoPeer)?,
        };
        let secs = |t: i64| u64::try_from(t).unwrap_or(0);
        Ok(Self {
            peer_id,
            serial: hex::encode(cert.raw_serial()),
            not_before: secs(cert.validity().not_before.timestamp()),
            not_after: secs(cert.validity().not_after.timestamp()),
        })
    }

    /// Parses the first certificate of a PEM chain.
    pub fn parse_pem(chain_pem: &str) -> Result<Self, NodeCertError> {
        let chain = pem::certificates(chain_pem.as_bytes(), "node certificate")
            .map_err(|e| NodeCertError::BadCertificate(e.to_string()))?;
        Self::parse(&chain[0])
    }
}
