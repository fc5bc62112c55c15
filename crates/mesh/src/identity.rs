//! `mesh-identity.json`: who this node is on the mesh. The WireGuard private key is made once and
//! kept; the coordinator's answers (peer id, ULA, credential) are added after a join. Restarting
//! with the same file re-claims the same ULA; deleting it makes the node a fresh peer.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use boringtun::x25519::{PublicKey, StaticSecret};
use serde::{Deserialize, Serialize};
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use tabbify_wire::mesh::RegisterResponse;
use tabbify_wire::{Ipv6Prefix, PublicKeyB64};

/// File name inside the state directory.
pub const IDENTITY_FILE: &str = "mesh-identity.json";
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
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
    #[error("{path} is not a valid mesh identity ({reason}); move it away to join as a fresh peer")]
    Corrupt { path: PathBuf, reason: String },
}

/// What the coordinator assigned at the last successful join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub coordinator: String,
    pub peer_id: String,
    pub ula: Ipv6Addr,
    pub subnet: Ipv6Prefix,
    pub mesh_prefix: Ipv6Prefix,
    /// Only from a coordinator running `--insecure-no-mtls`; otherwise the node's client
    /// certificate (kept beside this file) identifies it.
    pub peer_credential: Option<String>,
}

/// The node's identity. The private key never leaves this struct except to the data plane.
#[derive(Clone)]
pub struct MeshIdentity {
    secret: [u8; 32],
    public: PublicKeyB64,
    pub registration: Option<Registration>,
}

impl std::fmt::Debug for MeshIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshIdentity")
            .field("public_key", &self.public.as_str())
            .field("registration", &self.registration)
            .finish_non_exhaustive()
    }
}

/// On-disk shape. Unknown fields are ignored so a newer node's file still loads.
#[derive(Serialize, Deserialize)]
struct IdentityFile {
    version: u32,
    private_key: String,
    public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    coordinator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    peer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ula: Option<Ipv6Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subnet: Option<Ipv6Prefix>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mesh_prefix: Option<Ipv6Prefix>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    peer_credential: Option<String>,
}

impl MeshIdentity {
    /// A new random key with no registration.
    pub fn generate() -> Self {
        // rand's thread RNG is a CSPRNG seeded from the OS; x25519 clamps the scalar itself.
        Self::from_secret(rand::random::<[u8; 32]>())
    }

    pub fn from_secret(secret: [u8; 32]) -> Self {
        let public = PublicKey::from(&StaticSecret::from(secret));
        Self {
            secret,
            public: PublicKeyB64::from_bytes(*public.as_bytes()),
            registration: None,
        }
    }

    pub fn public_key(&self) -> &PublicKeyB64 {
        &self.public
    }

    pub fn private_key_bytes(&self) -> [u8; 32] {
        self.secret
    }

    /// The ULA from the last join, if any.
    pub fn ula(&self) -> Option<Ipv6Addr> {
        self.registration.as_ref().map(|r| r.ula)
    }

    /// Records a successful join.
    pub fn apply_registration(&mut self, coordinator: &str, resp: &RegisterResponse) {
        self.registration = Some(Registration {
            coordinator: coordinator.to_string(),
            peer_id: resp.peer_id.clone(),
            ula: resp.ula,
            subnet: resp.subnet,
            mesh_prefix: resp.mesh_prefix,
            peer_credential: resp.peer_credential.clone(),
        });
    }

    /// Loads `<dir>/mesh-identity.json`, or makes a new identity and writes it there first, so the
    /// key is durable before anything is sent to a coordinator. Returns whether it was created.
    pub fn load_or_create(dir: &Path) -> Result<(Self, bool), IdentityError> {
        let path = dir.join(IDENTITY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => Ok((Self::parse(&path, &bytes)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = Self::generate();
                id.save(dir)?;
                Ok((id, true))
            }
            Err(source) => Err(IdentityError::Read { path, source }),
        }
    }

    fn parse(path: &Path, bytes: &[u8]) -> Result<Self, IdentityError> {
        let corrupt = |reason: String| IdentityError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let file: IdentityFile =
            serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        if file.version != FORMAT_VERSION {
            return Err(corrupt(format!(
                "format version {} is not supported (expected {FORMAT_VERSION})",
                file.version
            )));
        }
        let raw = STANDARD
            .decode(file.private_key.trim())
            .map_err(|e| corrupt(format!("private_key is not base64: {e}")))?;
        let secret: [u8; 32] = raw
            .as_slice()
            .try_into()
            .map_err(|_| corrupt(format!("private_key must be 32 bytes, got {}", raw.len())))?;
        let mut id = Self::from_secret(secret);
        if id.public.as_str() != file.public_key.trim() {
            return Err(corrupt("public_key does not match private_key".to_string()));
        }
        id.registration = match (
            file.coordinator,
            file.peer_id,
            file.ula,
            file.subnet,
            file.mesh_prefix,
        ) {
            (Some(coordinator), Some(peer_id), Some(ula), Some(subnet), Some(mesh_prefix)) => {
                if !subnet.contains(ula) {
                    return Err(corrupt(format!("ula {ula} is outside subnet {subnet}")));
                }
                Some(Registration {
                    coordinator,
                    peer_id,
                    ula,
                    subnet,
                    mesh_prefix,
                    peer_credential: file.peer_credential,
                })
            }
            (None, None, None, None, None) => None,
            _ => {
                return Err(corrupt(
                    "registration fields are only partly present".to_string(),
                ));
            }
        };
        Ok(id)
    }

    /// Writes the identity atomically with mode 0600.
    pub fn save(&self, dir: &Path) -> Result<(), IdentityError> {
        let path = dir.join(IDENTITY_FILE);
        let reg = self.registration.as_ref();
        let file = IdentityFile {
            version: FORMAT_VERSION,
            private_key: STANDARD.encode(self.secret),
            public_key: self.public.to_string(),
            coordinator: reg.map(|r| r.coordinator.clone()),
            peer_id: reg.map(|r| r.peer_id.clone()),
            ula: reg.map(|r| r.ula),
            subnet: reg.map(|r| r.subnet),
            mesh_prefix: reg.map(|r| r.mesh_prefix),
            peer_credential: reg.and_then(|r| r.peer_credential.clone()),
        };
        let mut json = serde_json::to_vec_pretty(&file).map_err(|e| IdentityError::Write {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        json.push(b'\n');
        tabbify_fsutil::ensure_dir(dir, 0o700)
            .and_then(|()| tabbify_fsutil::atomic_write(&path, &json, 0o600))
            .map_err(|source| IdentityError::Write { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn response() -> RegisterResponse {
        RegisterResponse {
            peer_id: "peer_1".into(),
            ula: "fd00:1:2:5::1".parse().unwrap(),
            subnet: "fd00:1:2:5::/64".parse().unwrap(),
            mesh_prefix: "fd00:1:2::/48".parse().unwrap(),
            heartbeat_interval_secs: 5,
            peer_credential: Some("tbfp_x".into()),
            client_certificate: None,
            ca_certificate: None,
            signing_key: None,
            observed_addr: None,
            revision: 1,
        }
    }

    #[test]
    fn created_once_then_reloaded_with_same_key_and_ula() {
        let d = tempfile::tempdir().unwrap();
        let (mut id, created) = MeshIdentity::load_or_create(d.path()).unwrap();
        assert!(created);
        id.apply_registration("http://c:8888", &response());
        id.save(d.path()).unwrap();
        let (again, created) = MeshIdentity::load_or_create(d.path()).unwrap();
        assert!(!created);
        assert_eq!(again.public_key(), id.public_key());
        assert_eq!(again.ula(), Some("fd00:1:2:5::1".parse().unwrap()));
        assert_eq!(again.registration, id.registration);
        let mode = std::fs::metadata(d.path().join(IDENTITY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn corrupt_files_are_refused_with_reason_and_left_alone() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join(IDENTITY_FILE);
        let other = MeshIdentity::generate();
        let cases = [
            ("{not json".to_string(), "key must be a string"),
            (
                r#"{"version":1,"private_key":"AAAA","public_key":"x"}"#.to_string(),
                "must be 32 bytes",
            ),
            (
                format!(
                    r#"{{"version":1,"private_key":"{}","public_key":"{}"}}"#,
                    STANDARD.encode([1u8; 32]),
                    other.public_key()
                ),
                "does not match",
            ),
            (
                format!(
                    r#"{{"version":9,"private_key":"{}","public_key":"x"}}"#,
                    STANDARD.encode([1u8; 32])
                ),
                "format version 9",
            ),
        ];
        for (text, want) in cases {
            std::fs::write(&path, &text).unwrap();
            let err = MeshIdentity::load_or_create(d.path()).unwrap_err();
            assert!(
                err.to_string().contains(want),
                "{err} should mention {want}"
            );
            assert!(err.to_string().contains("move it away"), "{err}");
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                text,
                "file untouched"
            );
        }
    }

    /// Parses 64 hex digits; the vectors below are written out as in RFC 7748.
    fn hex32(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    #[test]
    fn public_key_is_the_x25519_public_key_of_the_rfc_7748_vectors() {
        // RFC 7748 section 6.1: Alice's and Bob's private keys and the public keys they give,
        // and the same public keys in the base64 WireGuard and the coordinator use.
        let vectors = [
            (
                "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
                "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
                "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=",
            ),
            (
                "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
                "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
                "3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=",
            ),
        ];
        for (private, public, public_b64) in vectors {
            let id = MeshIdentity::from_secret(hex32(private));
            assert_eq!(id.public_key().as_bytes(), &hex32(public), "{private}");
            assert_eq!(id.public_key().as_str(), public_b64);
            assert_eq!(
                id.private_key_bytes(),
                hex32(private),
                "the key kept as given"
            );
        }
    }
}
