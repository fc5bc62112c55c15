//! PEM in and out: certificate chains and private keys, with errors that say which file.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("{what}: no PEM certificate found")]
    NoCertificate { what: String },
    #[error("{what}: not a PEM private key: {detail}")]
    BadKey { what: String, detail: String },
    #[error("{what}: bad PEM certificate: {detail}")]
    BadCertificate { what: String, detail: String },
}

/// Every certificate in `pem`, in order (at least one).
pub fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::BadCertificate {
            what: what.into(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate { what: what.into() });
    }
    Ok(certs)
}

pub fn private_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| PemError::BadKey {
        what: what.into(),
        detail: e.to_string(),
    })
}

/// One certificate as PEM text (RFC 7468: base64, 64 characters a line).
pub fn certificate_pem(der: &[u8]) -> String {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip() {
        let der: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let text = certificate_pem(&der);
        let back = certificates(text.as_bytes(), "test").unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].as_ref(), der.as_slice());
        assert!(matches!(
            certificates(b"nothing here", "x"),
            Err(PemError::NoCertificate { .. })
        ));
        assert!(private_key(b"-----BEGIN CERTIFICATE-----\n", "k").is_err());
    }
}
