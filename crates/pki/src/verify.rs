//! The two certificate checks rustls cannot do out of the box:
//! - a node trusting the coordinator by the CA fingerprint in its join token, before it has the
//!   CA certificate itself (the server sends the CA in its chain; its hash must match);
//! - the coordinator accepting a node certificate that chains to the mesh CA even when it has
//!   expired, so the API above can allow exactly one thing with it (renewing), and refuse the
//!   rest with a reason instead of a failed handshake.

use crate::fingerprint::CaFingerprint;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error, RootCertStore, SignatureScheme};
use std::sync::Arc;

/// Trusts exactly the CA whose certificate hashes to the pin; the chain, the names and the
/// validity are then checked as usual against that CA.
#[derive(Debug)]
pub struct PinnedCaVerifier {
    pin: CaFingerprint,
    provider: Arc<CryptoProvider>,
}

impl PinnedCaVerifier {
    pub fn new(pin: CaFingerprint, provider: Arc<CryptoProvider>) -> Self {
        Self { pin, provider }
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(ca) = intermediates.iter().find(|c| self.pin.matches(c)) else {
            return Err(Error::General(format!(
                "the server's certificate is not from the mesh CA {} that the join token names: \
                 this is not the coordinator the token was made for (or someone is in between)",
                self.pin
            )));
        };
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|e| Error::General(format!("the pinned CA certificate is unusable: {e}")))?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The coordinator's check of node certificates: offered, not required (joining nodes and
/// operators have none); a certificate that is sent must chain to the mesh CA and be meant for
/// client authentication. Expiry is judged by the API, not here (see the module comment).
#[derive(Debug)]
pub struct MeshClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl MeshClientVerifier {
    pub fn new(inner: Arc<dyn ClientCertVerifier>) -> Self {
        Self { inner }
    }
}

impl ClientCertVerifier for MeshClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        // An expired certificate is checked as of one second before it expired: everything
        // but the expiry must still hold.
        let when = match crate::node_cert::NodeCertInfo::parse(end_entity) {
            Ok(info) if info.not_after <= now.as_secs() => UnixTime::since_unix_epoch(
                std::time::Duration::from_secs(info.not_after.saturating_sub(1)),
            ),
            _ => now,
        };
        self.inner
            .verify_client_cert(end_entity, intermediates, when)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
