//! The mesh CA: created once in the coordinator's data dir (`ca.crt`, and `ca.key` mode 0600),
//! then used to issue the coordinator's own server certificate at every start and each node's
//! client certificate from its CSR.

use crate::fingerprint::CaFingerprint;
use crate::pem::{self, PemError};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use time::OffsetDateTime;

pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";

/// How long the CA is valid: rotating it means re-issuing join tokens (see the security docs).
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates start this long before "now", so a node whose clock is a little behind still
/// accepts them.
const CLOCK_SKEW: Duration = Duration::from_secs(300);
/// Prefix of the URI SAN that names the peer a node certificate belongs to.
pub const PEER_URI_PREFIX: &str = "tabbify:peer:";
/// Prefix of the URI SAN that names the /64 a node certificate is bound to.
pub const SUBNET_URI_PREFIX: &str = "tabbify:subnet:";

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} exists but {missing} does not: restore it, or move both away to create a new CA (every join token and node certificate then has to be re-issued)"
    )]
    HalfPresent { path: PathBuf, missing: PathBuf },
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("{what}: {detail}")]
    Invalid { what: String, detail: String },
    #[error("the certificate signing request is not valid: {0}")]
    BadCsr(String),
    #[error("cannot issue a certificate: {0}")]
    Issue(String),
}

/// A certificate the CA issued to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// The node's certificate followed by the CA's, PEM.
    pub chain_pem: String,
    /// Lowercase hex of the serial number: what the coordinator records and checks.
    pub serial: String,
    /// Seconds since the Unix epoch.
    pub not_after: u64,
}

pub struct MeshCa {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    fingerprint: CaFingerprint,
}

impl std::fmt::Debug for MeshCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshCa")
            .field("fingerprint", &self.fingerprint.to_string())
            .finish_non_exhaustive()
    }
}

fn offset(unix: u64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(i64::try_from(unix).unwrap_or(i64::MAX))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive and without a leading zero byte, so the DER integer is exactly these 16 bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn issue_err(e: rcgen::Error) -> CaError {
    CaError::Issue(e.to_string())
}

/// What every server certificate of the mesh carries: `names` as DNS or IP SANs (rcgen tells
/// them apart), server authentication only, valid from a little before `now` for `validity`.
fn server_params(
    names: &[String],
    common_name: &str,
    validity: Duration,
    now: u64,
) -> Result<CertificateParams, CaError> {
    if names.is_empty() {
        return Err(CaError::Invalid {
            what: "server certificate names".into(),
            detail: "give at least one DNS name or IP address".into(),
        });
    }
    let mut params = CertificateParams::new(names.to_vec()).map_err(|e| CaError::Invalid {
        what: "server certificate names".into(),
        detail: e.to_string(),
    })?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = offset(now.saturating_sub(CLOCK_SKEW.as_secs()));
    params.not_after = offset(now + validity.as_secs());
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

impl MeshCa {
    /// A new CA in memory (its key never touches disk unless [`MeshCa::save`] is called).
    pub fn generate(common_name: &str) -> Result<Self, CaError> {
        let key = KeyPair::generate().map_err(issue_err)?;
        let now = crate::unix_now();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "Tabbify mesh");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = offset(now.saturating_sub(CLOCK_SKEW.as_secs()));
        params.not_after = offset(now + CA_VALIDITY.as_secs());
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key).map_err(issue_err)?;
        let cert_der = cert.der().clone();
        let cert_pem = cert.pem();
        Ok(Self {
            fingerprint: CaFingerprint::of_der(&cert_der),
            cert_der,
            cert_pem,
            issuer: Issuer::new(params, key),
        })
    }

    fn from_pem(cert_pem: &str, key_pem: &str, what: &str) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| CaError::Invalid {
            what: format!("{what} key"),
            detail: e.to_string(),
        })?;
        let cert_der = pem::certificates(cert_pem.as_bytes(), what)?
            .into_iter()
            .next()
            .ok_or_else(|| CaError::Invalid {
                what: what.into(),
                detail: "empty".into(),
            })?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| CaError::Invalid {
            what: what.into(),
            detail: e.to_string(),
        })?;
        Ok(Self {
            fingerprint: CaFingerprint::of_der(&cert_der),
            cert_der,
            cert_pem: cert_pem.to_string(),
            issuer,
        })
    }

    /// Loads the CA from `dir`, creating it (key 0600, written atomically) when neither file
    /// exists. One file without the other is an error: a silently new CA would orphan every node.
    pub fn load_or_create(dir: &Path) -> Result<Self, CaError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => {
                let read = |p: &Path| {
                    std::fs::read_to_string(p).map_err(|source| CaError::Read {
                        path: p.to_path_buf(),
                        source,
                    })
                };
                Self::from_pem(&read(&cert_path)?, &read(&key_path)?, "mesh CA")
            }
            (false, false) => {
                let ca = Self::generate("Tabbify mesh CA")?;
                ca.save(dir)?;
                tracing::info!(fingerprint = %ca.fingerprint, path = %cert_path.display(), "created the mesh CA");
                Ok(ca)
            }
            (true, false) => Err(CaError::HalfPresent {
                path: cert_path,
                missing: key_path,
            }),
            (false, true) => Err(CaError::HalfPresent {
                path: key_path,
                missing: cert_path,
            }),
        }
    }

    /// Writes `ca.key` (0600) then `ca.crt` (0644), each atomically.
    pub fn save(&self, dir: &Path) -> Result<(), CaError> {
        let key_path = dir.join(CA_KEY_FILE);
        tabbify_fsutil::atomic_write(
            &key_path,
            self.issuer.key().serialize_pem().as_bytes(),
            0o600,
        )
        .map_err(|source| CaError::Write {
            path: key_path,
            source,
        })?;
        let cert_path = dir.join(CA_CERT_FILE);
        tabbify_fsutil::atomic_write(&cert_path, self.cert_pem.as_bytes(), 0o644).map_err(
            |source| CaError::Write {
                path: cert_path,
                source,
            },
        )
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn fingerprint(&self) -> CaFingerprint {
        self.fingerprint
    }

    /// A server certificate (and its fresh key) for `names` (DNS names or IP addresses), valid
    /// for `validity`; the chain is the certificate then the CA.
    pub fn issue_server(
        &self,
        names: &[String],
        validity: Duration,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CaError> {
        let key = KeyPair::generate().map_err(issue_err)?;
        let params = server_params(names, "tabbify coordinator", validity, crate::unix_now())?;
        let cert = params.signed_by(&key, &self.issuer).map_err(issue_err)?;
        let key_der = PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| CaError::Issue(format!("cannot encode the server key: {e}")))?;
        Ok((vec![cert.der().clone(), self.cert_der.clone()], key_der))
    }

    /// A server certificate for another service of the mesh (the artifact server, say) from its
    /// CSR: only the CSR's public key is used, the names are the ones the operator asked for.
    /// The chain is the certificate then the CA, PEM.
    pub fn issue_service(
        &self,
        csr_pem: &str,
        names: &[String],
        validity: Duration,
        now: u64,
    ) -> Result<IssuedCert, CaError> {
        let params = server_params(names, "tabbify service", validity, now)?;
        self.sign_csr(csr_pem, params, now + validity.as_secs())
    }

    /// A client certificate for a node's CSR. Only the CSR's public key is used (its signature
    /// proves the node holds the key); everything else comes from the coordinator: the peer id
    /// as common name and URI SAN, the node's ULA as IP SAN and its /64 as a URI SAN, client
    /// authentication only, valid from a little before `now` for `ttl`.
    pub fn issue_node(
        &self,
        csr_pem: &str,
        peer_id: &str,
        ula: Ipv6Addr,
        subnet: &str,
        ttl: Duration,
        now: u64,
    ) -> Result<IssuedCert, CaError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, peer_id);
        params.distinguished_name = dn;
        let uri = |text: String| {
            text.try_into()
                .map(SanType::URI)
                .map_err(|e: rcgen::Error| CaError::Issue(e.to_string()))
        };
        params.subject_alt_names = vec![
            uri(format!("{PEER_URI_PREFIX}{peer_id}"))?,
            uri(format!("{SUBNET_URI_PREFIX}{subnet}"))?,
            SanType::IpAddress(IpAddr::V6(ula)),
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let not_after = now + ttl.as_secs();
        params.not_before = offset(now.saturating_sub(CLOCK_SKEW.as_secs()));
        params.not_after = offset(not_after);
        params.use_authority_key_identifier_extension = true;
        self.sign_csr(csr_pem, params, not_after)
    }

    /// Signs `params` for the public key of `csr_pem` (nothing else in the CSR is used), with a
    /// fresh serial; the chain is the certificate then the CA.
    fn sign_csr(
        &self,
        csr_pem: &str,
        mut params: CertificateParams,
        not_after: u64,
    ) -> Result<IssuedCert, CaError> {
        if csr_pem.len() > 16 * 1024 {
            return Err(CaError::BadCsr("larger than 16 KiB".into()));
        }
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CaError::BadCsr(e.to_string()))?;
        let serial = random_serial();
        let serial_hex = hex::encode(serial.to_bytes());
        params.serial_number = Some(serial);
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(issue_err)?;
        Ok(IssuedCert {
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
            serial: serial_hex,
            not_after,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::node_cert::{NodeCertInfo, NodeKey};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_then_loaded_with_the_same_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let a = MeshCa::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = MeshCa::load_or_create(dir.path()).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        std::fs::remove_file(dir.path().join(CA_KEY_FILE)).unwrap();
        let err = MeshCa::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, CaError::HalfPresent { .. }), "{err}");
        assert!(err.to_string().contains("ca.key"), "{err}");
    }

    #[test]
    fn node_certificates_carry_what_the_coordinator_decides_not_what_the_csr_asks() {
        let ca = MeshCa::generate("test").unwrap();
        let key = NodeKey::generate().unwrap();
        let csr = key.csr_pem().unwrap();
        let now = crate::unix_now();
        let issued = ca
            .issue_node(
                &csr,
                "00aa11bb22cc33dd",
                "fd00:1:2:3::1".parse().unwrap(),
                "fd00:1:2:3::/64",
                Duration::from_secs(3600),
                now,
            )
            .unwrap();
        let chain = pem::certificates(issued.chain_pem.as_bytes(), "chain").unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1], *ca.cert_der());
        let info = NodeCertInfo::parse(&chain[0]).unwrap();
        assert_eq!(info.peer_id, "00aa11bb22cc33dd");
        assert_eq!(info.serial, issued.serial);
        assert_eq!(info.not_after, now + 3600);
        assert_eq!(issued.serial.len(), 32);
    }

    #[test]
    fn a_tampered_csr_is_refused() {
        let ca = MeshCa::generate("test").unwrap();
        let csr = NodeKey::generate().unwrap().csr_pem().unwrap();
        // Flip one base64 character in the middle of the body: the signature no longer matches
        // (or the DER no longer parses).
        let mut bytes = csr.into_bytes();
        let i = bytes.len() / 2;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        let err = ca
            .issue_node(
                &tampered,
                "ab",
                Ipv6Addr::LOCALHOST,
                "fd00::/64",
                Duration::from_secs(60),
                crate::unix_now(),
            )
            .unwrap_err();
        assert!(matches!(err, CaError::BadCsr(_)), "{err}");
        assert!(matches!(
            ca.issue_node(
                "junk",
                "ab",
                Ipv6Addr::LOCALHOST,
                "x",
                Duration::from_secs(1),
                0
            ),
            Err(CaError::BadCsr(_))
        ));
    }
}
