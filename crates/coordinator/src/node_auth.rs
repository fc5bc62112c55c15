//! Who a node request comes from, decided without I/O: a node certificate the TLS layer checked
//! against the mesh CA (the default), or a `tbfp_` peer credential (only with
//! `--insecure-no-mtls`). A certificate counts only while its peer is in the roster and its
//! serial is one of the two the coordinator last issued to that peer, so removing a peer or
//! revoking its certificates takes effect on the next request; an expired certificate is good
//! for nothing but getting a new one.

use crate::tokens::{self, SecretHash};

/// What a request presents to say which node it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeProof {
    Certificate {
        peer_id: String,
        /// Lowercase hex.
        serial: String,
        /// Seconds since the Unix epoch.
        not_after: u64,
    },
    /// `Authorization: Bearer tbfp_<peer id>_<secret>`.
    Credential(String),
}

impl NodeProof {
    /// The peer the proof claims to be (not yet checked).
    pub fn claimed_peer(&self) -> Option<String> {
        match self {
            NodeProof::Certificate { peer_id, .. } => Some(peer_id.clone()),
            NodeProof::Credential(c) => tokens::parse_peer_credential(c).ok().map(|p| p.id),
        }
    }
}

/// The certificates a peer may use: the latest and the one before it (so connections opened
/// just before a renewal keep working).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertSerials {
    pub current: Option<String>,
    pub previous: Option<String>,
}

impl CertSerials {
    pub fn accepts(&self, serial: &str) -> bool {
        self.current.as_deref() == Some(serial) || self.previous.as_deref() == Some(serial)
    }

    /// After issuing `serial`: it becomes current, the current one previous.
    pub fn rotated(&self, serial: String) -> Self {
        Self {
            previous: self.current.clone(),
            current: Some(serial),
        }
    }
}

/// Why a node request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeAuthError {
    #[error("no peer has this identity (removed, purged, or never registered): register again")]
    UnknownPeer,
    #[error(
        "this node certificate was revoked or replaced (serial {serial}); the peer must be re-admitted by an operator or join with a new key"
    )]
    Revoked { serial: String },
    #[error(
        "this node certificate expired at {expired_at} (Unix time); renew it (POST /v1/mesh/certificate) or register again"
    )]
    Expired { expired_at: u64 },
    #[error(
        "peer credentials (tbfp_…) are only accepted by a coordinator running with --insecure-no-mtls; this one authenticates nodes by their client certificate"
    )]
    CredentialNotAccepted,
}

/// What the store knows about the claimed peer.
#[derive(Debug, Clone, Copy)]
pub struct KnownIdentity<'a> {
    pub peer_id: &'a str,
    pub credential_hash: &'a SecretHash,
    pub serials: &'a CertSerials,
}

/// Checks `proof` against the peer it claims to be (`known`, `None` when no such peer).
/// `mtls`: certificates are the only proof; otherwise credentials are. `allow_expired`: the
/// request only renews the certificate.
pub fn check(
    known: Option<KnownIdentity<'_>>,
    proof: &NodeProof,
    mtls: bool,
    allow_expired: bool,
    now_unix: u64,
) -> Result<(), NodeAuthError> {
    match proof {
        NodeProof::Credential(_) if mtls => Err(NodeAuthError::CredentialNotAccepted),
        NodeProof::Credential(text) => {
            let parsed =
                tokens::parse_peer_credential(text).map_err(|_| NodeAuthError::UnknownPeer)?;
            let known = known.ok_or(NodeAuthError::UnknownPeer)?;
            let ok = parsed.id == known.peer_id
                && tokens::hashes_equal(
                    &tokens::hash_secret(&parsed.secret),
                    known.credential_hash,
                );
            if ok {
                Ok(())
            } else {
                Err(NodeAuthError::UnknownPeer)
            }
        }
        NodeProof::Certificate {
            peer_id,
            serial,
            not_after,
        } => {
            let known = known.ok_or(NodeAuthError::UnknownPeer)?;
            if known.peer_id != peer_id {
                return Err(NodeAuthError::UnknownPeer);
            }
            if !known.serials.accepts(serial) {
                return Err(NodeAuthError::Revoked {
                    serial: serial.clone(),
                });
            }
            if *not_after <= now_unix && !allow_expired {
                return Err(NodeAuthError::Expired {
                    expired_at: *not_after,
                });
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serials(cur: &str, prev: Option<&str>) -> CertSerials {
        CertSerials {
            current: Some(cur.into()),
            previous: prev.map(Into::into),
        }
    }

    fn cert(peer: &str, serial: &str, not_after: u64) -> NodeProof {
        NodeProof::Certificate {
            peer_id: peer.into(),
            serial: serial.into(),
            not_after,
        }
    }

    #[test]
    fn certificates() {
        let hash = tokens::hash_secret("s");
        let s = serials("bb", Some("aa"));
        let known = Some(KnownIdentity {
            peer_id: "p1",
            credential_hash: &hash,
            serials: &s,
        });
        assert_eq!(
            check(known, &cert("p1", "bb", 100), true, false, 50),
            Ok(())
        );
        assert_eq!(
            check(known, &cert("p1", "aa", 100), true, false, 50),
            Ok(())
        );
        assert_eq!(
            check(known, &cert("p1", "cc", 100), true, false, 50),
            Err(NodeAuthError::Revoked {
                serial: "cc".into()
            })
        );
        assert_eq!(
            check(known, &cert("p2", "bb", 100), true, false, 50),
            Err(NodeAuthError::UnknownPeer)
        );
        assert_eq!(
            check(None, &cert("p1", "bb", 100), true, false, 50),
            Err(NodeAuthError::UnknownPeer)
        );
        assert_eq!(
            check(known, &cert("p1", "bb", 100), true, false, 100),
            Err(NodeAuthError::Expired { expired_at: 100 })
        );
        assert_eq!(
            check(known, &cert("p1", "bb", 100), true, true, 500),
            Ok(())
        );
        let revoked = CertSerials::default();
        let known = Some(KnownIdentity {
            peer_id: "p1",
            credential_hash: &hash,
            serials: &revoked,
        });
        assert!(matches!(
            check(known, &cert("p1", "bb", 100), true, true, 50),
            Err(NodeAuthError::Revoked { .. })
        ));
    }

    #[test]
    fn credentials_only_without_mtls() {
        let hash = tokens::hash_secret("s3cret");
        let s = CertSerials::default();
        let known = Some(KnownIdentity {
            peer_id: "ab01",
            credential_hash: &hash,
            serials: &s,
        });
        let good = NodeProof::Credential(tokens::format_peer_credential("ab01", "s3cret"));
        assert_eq!(check(known, &good, false, false, 0), Ok(()));
        assert_eq!(
            check(known, &good, true, false, 0),
            Err(NodeAuthError::CredentialNotAccepted)
        );
        let wrong = NodeProof::Credential(tokens::format_peer_credential("ab01", "nope"));
        assert_eq!(
            check(known, &wrong, false, false, 0),
            Err(NodeAuthError::UnknownPeer)
        );
        let junk = NodeProof::Credential("junk".into());
        assert_eq!(
            check(known, &junk, false, false, 0),
            Err(NodeAuthError::UnknownPeer)
        );
        assert_eq!(good.claimed_peer().as_deref(), Some("ab01"));
    }

    #[test]
    fn rotation_keeps_one_previous() {
        let s = CertSerials::default().rotated("a".into());
        let s = s.rotated("b".into());
        assert!(s.accepts("a") && s.accepts("b"));
        let s = s.rotated("c".into());
        assert!(!s.accepts("a") && s.accepts("b") && s.accepts("c"));
    }
}
