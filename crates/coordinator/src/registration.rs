//! The pure rules of joining and staying in the mesh: what a register or heartbeat body may
//! contain, who is admitted (credential, join token, or open join), and how a peer record changes
//! (and whether that change is worth an event).

use crate::tokens::{self, IdAndSecret, JoinRefusal, JoinTokenRecord, SecretHash};
use tabbify_wire::mesh::{HeartbeatRequest, NodeResources, Peer, PeerId, RegisterRequest};
use tabbify_wire::{Endpoint, Tag, Timestamp};

pub const MAX_DISPLAY_NAME_CHARS: usize = 63;
pub const MAX_VERSION_CHARS: usize = 64;
pub const MAX_TAGS: usize = 32;
pub use tabbify_wire::MAX_ENDPOINTS;

/// A body that parsed as JSON but breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidBody(pub String);

/// Checks a register body and returns it with tags and endpoints sorted and de-duplicated.
pub fn validate_register(mut req: RegisterRequest) -> Result<RegisterRequest, InvalidBody> {
    check_display_name(&req.display_name)?;
    check_version(&req.version)?;
    req.tags = normalise_tags(req.tags)?;
    req.endpoints = normalise_endpoints(req.endpoints)?;
    if let Some(r) = &req.resources {
        check_resources(r)?;
    }
    Ok(req)
}

/// Checks a heartbeat body, normalising like [`validate_register`].
pub fn validate_heartbeat(mut req: HeartbeatRequest) -> Result<HeartbeatRequest, InvalidBody> {
    if let Some(v) = &req.version {
        check_version(v)?;
    }
    req.tags = normalise_tags(req.tags)?;
    req.endpoints = normalise_endpoints(req.endpoints)?;
    if let Some(r) = &req.resources {
        check_resources(r)?;
    }
    Ok(req)
}

fn check_display_name(name: &str) -> Result<(), InvalidBody> {
    let chars = name.chars().count();
    if name.trim().is_empty() {
        return Err(InvalidBody("display_name must not be empty".into()));
    }
    if chars > MAX_DISPLAY_NAME_CHARS {
        return Err(InvalidBody(format!(
            "display_name is {chars} characters long; the limit is {MAX_DISPLAY_NAME_CHARS}"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(InvalidBody(
            "display_name must not contain control characters".into(),
        ));
    }
    Ok(())
}

fn check_version(version: &str) -> Result<(), InvalidBody> {
    let chars = version.chars().count();
    if version.trim().is_empty() {
        return Err(InvalidBody("version must not be empty".into()));
    }
    if chars > MAX_VERSION_CHARS || version.chars().any(char::is_control) {
        return Err(InvalidBody(format!(
            "version must be at most {MAX_VERSION_CHARS} printable characters"
        )));
    }
    Ok(())
}

fn normalise_tags(mut tags: Vec<Tag>) -> Result<Vec<Tag>, InvalidBody> {
    if tags.len() > MAX_TAGS {
        return Err(InvalidBody(format!(
            "{} tags given; the limit is {MAX_TAGS}",
            tags.len()
        )));
    }
    tags.sort();
    tags.dedup();
    Ok(tags)
}

fn normalise_endpoints(mut endpoints: Vec<Endpoint>) -> Result<Vec<Endpoint>, InvalidBody> {
    if endpoints.len() > MAX_ENDPOINTS {
        return Err(InvalidBody(format!(
            "{} endpoints given; the limit is {MAX_ENDPOINTS}",
            endpoints.len()
        )));
    }
    endpoints.sort();
    endpoints.dedup();
    Ok(endpoints)
}

fn check_resources(r: &NodeResources) -> Result<(), InvalidBody> {
    for (name, v) in [("cpus", r.cpus), ("cpus_free", r.cpus_free)] {
        if !v.is_finite() || v < 0.0 {
            return Err(InvalidBody(format!(
                "resources.{name} must be a finite number >= 0"
            )));
        }
    }
    Ok(())
}

/// What the coordinator knows about a registered key, enough to decide on a re-registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownPeer<'a> {
    pub peer_id: &'a str,
    pub credential_hash: &'a SecretHash,
    pub allowed_tags: Option<&'a [Tag]>,
    /// The request came with this peer's node certificate (checked by the caller).
    pub proven_by_certificate: bool,
}

/// The join token as presented in `Authorization`, with the record its id names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresentedToken<'a> {
    None,
    /// Something was sent but it is not `tbfj_<id>_<secret>`.
    Malformed(String),
    Parsed {
        token: IdAndSecret,
        record: Option<&'a JoinTokenRecord>,
    },
}

/// How a registration was admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// A known key that proved ownership with its credential.
    Returning,
    /// A new key admitted by this join token (one use is consumed).
    Token { token_id: String },
    /// A new key admitted without a token because the coordinator runs with `--open-join`.
    Open,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    #[error(
        "public key already registered; prove ownership with the node certificate (or, with --insecure-no-mtls, the peer credential) its first registration returned"
    )]
    NotOwner,
    #[error("{0}")]
    Join(JoinRefusal),
    #[error("{0}")]
    Malformed(String),
    #[error("peer {peer_id} may only advertise {allowed}; not allowed: {denied}")]
    TagNotAllowed {
        peer_id: String,
        denied: String,
        allowed: String,
    },
}

/// Decides who may register with `tags`.
pub fn admit(
    known: Option<&KnownPeer<'_>>,
    credential: Option<&str>,
    token: &PresentedToken<'_>,
    open_join: bool,
    tags: &[Tag],
    now: Timestamp,
) -> Result<Admission, AdmissionError> {
    if let Some(known) = known {
        if !known.proven_by_certificate && !credential_matches(known, credential) {
            return Err(AdmissionError::NotOwner);
        }
        if let Some(allowed) = known.allowed_tags {
            check_peer_tags(known.peer_id, tags, allowed)?;
        }
        return Ok(Admission::Returning);
    }
    match token {
        PresentedToken::None if open_join => Ok(Admission::Open),
        PresentedToken::None => Err(AdmissionError::Join(JoinRefusal::Missing)),
        PresentedToken::Malformed(why) => Err(AdmissionError::Malformed(why.clone())),
        PresentedToken::Parsed { token, record } => {
            tokens::check_join(token, *record, tags, now).map_err(AdmissionError::Join)?;
            Ok(Admission::Token {
                token_id: token.id.clone(),
            })
        }
    }
}

fn credential_matches(known: &KnownPeer<'_>, credential: Option<&str>) -> bool {
    let Some(parsed) = credential.and_then(|c| tokens::parse_peer_credential(c).ok()) else {
        return false;
    };
    // The id check is not secret; the secret comparison is constant-time.
    parsed.id == known.peer_id
        && tokens::hashes_equal(&tokens::hash_secret(&parsed.secret), known.credential_hash)
}

/// The tag rule a join token left on a peer, enforced on every later register and heartbeat.
pub fn check_peer_tags(peer_id: &str, tags: &[Tag], allowed: &[Tag]) -> Result<(), AdmissionError> {
    tokens::check_tags_allowed(tags, allowed).map_err(|denied| AdmissionError::TagNotAllowed {
        peer_id: peer_id.to_string(),
        denied,
        allowed: if allowed.is_empty() {
            "(none)".into()
        } else {
            allowed
                .iter()
                .map(Tag::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        },
    })
}

/// The peer after a re-registration, and whether the roster changed in a way watchers care about.
pub fn reregistered(old: &Peer, req: &RegisterRequest, now: Timestamp) -> (Peer, bool) {
    let mut new = old.clone();
    new.display_name = req.display_name.clone();
    new.tags = req.tags.clone();
    new.endpoints = req.endpoints.clone();
    new.version = req.version.clone();
    if req.resources.is_some() {
        new.resources = req.resources;
    }
    new.online = true;
    new.last_seen = now;
    let changed = roster_visible_change(old, &new);
    (new, changed)
}

/// The peer after a heartbeat. Empty `tags` / `endpoints` and absent `version` / `resources` mean
/// "unchanged", so a minimal `{}` heartbeat only refreshes `last_seen`.
pub fn heartbeat_applied(old: &Peer, req: &HeartbeatRequest, now: Timestamp) -> (Peer, bool) {
    let mut new = old.clone();
    if !req.tags.is_empty() {
        new.tags = req.tags.clone();
    }
    if !req.endpoints.is_empty() {
        new.endpoints = req.endpoints.clone();
    }
    if let Some(v) = &req.version {
        new.version = v.clone();
    }
    if req.resources.is_some() {
        new.resources = req.resources;
    }
    new.online = true;
    new.last_seen = now;
    let changed = roster_visible_change(old, &new);
    (new, changed)
}

/// Changes that other nodes act on. `last_seen` and `resources` move on every heartbeat and are
/// read from the roster on demand instead of being pushed as events.
pub fn roster_visible_change(old: &Peer, new: &Peer) -> bool {
    old.online != new.online
        || old.display_name != new.display_name
        || old.tags != new.tags
        || old.endpoints != new.endpoints
        || old.version != new.version
}

/// Identifier for a new peer.
pub fn new_peer_id() -> PeerId {
    tokens::new_id()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;
    use tabbify_wire::PublicKeyB64;

    const NOW: Timestamp = Timestamp(5_000);

    fn tags(list: &[&str]) -> Vec<Tag> {
        list.iter().map(|t| Tag::new(*t).unwrap()).collect()
    }

    fn request() -> RegisterRequest {
        RegisterRequest {
            public_key: PublicKeyB64::from_bytes([1; 32]),
            display_name: "edge-1".into(),
            tags: tags(&["wasm", "docker", "wasm"]),
            endpoints: vec![
                "10.0.0.2:51820".parse().unwrap(),
                "10.0.0.1:51820".parse().unwrap(),
            ],
            requested_ula: None,
            version: "0.1.0".into(),
            peer_credential: None,
            resources: None,
            csr: None,
        }
    }

    fn peer() -> Peer {
        Peer {
            peer_id: "ab01".into(),
            ula: Ipv6Addr::LOCALHOST,
            subnet: "fd00:0:0:1::/64".parse().unwrap(),
            display_name: "edge-1".into(),
            tags: tags(&["wasm"]),
            public_key: PublicKeyB64::from_bytes([1; 32]),
            endpoints: vec![],
            last_seen: Timestamp(1_000),
            online: true,
            version: "0.1.0".into(),
            joined_at: Some(Timestamp(1_000)),
            resources: None,
        }
    }

    #[test]
    fn register_body_is_normalised() {
        let req = validate_register(request()).unwrap();
        assert_eq!(req.tags, tags(&["docker", "wasm"]));
        assert_eq!(req.endpoints[0].to_string(), "10.0.0.1:51820");
    }

    #[test]
    fn register_body_rules() {
        type Mutation = Box<dyn Fn(&mut RegisterRequest)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|r| r.display_name = String::new()),
                "display_name must not be empty",
            ),
            (
                Box::new(|r| r.display_name = "   ".into()),
                "display_name must not be empty",
            ),
            (
                Box::new(|r| r.display_name = "x".repeat(64)),
                "64 characters long; the limit is 63",
            ),
            (
                Box::new(|r| r.display_name = "a\nb".into()),
                "control characters",
            ),
            (
                Box::new(|r| r.version = String::new()),
                "version must not be empty",
            ),
            (Box::new(|r| r.version = "v".repeat(65)), "at most 64"),
            (
                Box::new(|r| {
                    r.tags = (0..33)
                        .map(|i| Tag::new(format!("t{i}")).unwrap())
                        .collect()
                }),
                "33 tags",
            ),
            (
                Box::new(|r| {
                    r.endpoints = (1..=17)
                        .map(|p| format!("10.0.0.1:{p}").parse().unwrap())
                        .collect()
                }),
                "17 endpoints",
            ),
            (
                Box::new(|r| {
                    r.resources = Some(NodeResources {
                        cpus: f64::NAN,
                        ..Default::default()
                    })
                }),
                "resources.cpus",
            ),
        ];
        for (mutate, want) in cases {
            let mut req = request();
            mutate(&mut req);
            let err = validate_register(req).unwrap_err();
            assert!(err.0.contains(want), "{err} should contain {want:?}");
        }
        let mut ok = request();
        ok.display_name = "é".repeat(63);
        assert!(
            validate_register(ok).is_ok(),
            "limit counts characters, not bytes"
        );
    }

    #[test]
    fn known_key_needs_its_credential() {
        let secret = "s3cret";
        let hash = tokens::hash_secret(secret);
        let known = KnownPeer {
            peer_id: "ab01",
            credential_hash: &hash,
            allowed_tags: None,
            proven_by_certificate: false,
        };
        let good = tokens::format_peer_credential("ab01", secret);
        let other_peer = tokens::format_peer_credential("ab02", secret);
        let wrong = tokens::format_peer_credential("ab01", "nope");
        assert_eq!(
            admit(
                Some(&known),
                Some(&good),
                &PresentedToken::None,
                false,
                &[],
                NOW
            ),
            Ok(Admission::Returning)
        );
        for cred in [
            None,
            Some(wrong.as_str()),
            Some(other_peer.as_str()),
            Some("garbage"),
        ] {
            assert_eq!(
                admit(Some(&known), cred, &PresentedToken::None, true, &[], NOW),
                Err(AdmissionError::NotOwner),
                "{cred:?}"
            );
        }
    }

    #[test]
    fn a_valid_token_does_not_replace_the_credential_of_a_known_key() {
        let hash = tokens::hash_secret("s");
        let known = KnownPeer {
            peer_id: "ab01",
            credential_hash: &hash,
            allowed_tags: None,
            proven_by_certificate: false,
        };
        let rec = JoinTokenRecord {
            id: "ab".into(),
            secret_hash: tokens::hash_secret("t"),
            description: None,
            created_at: Timestamp(0),
            expires_at: Timestamp(u64::MAX),
            uses_allowed: None,
            uses: 0,
            tags: None,
            revoked_at: None,
        };
        let token = PresentedToken::Parsed {
            token: IdAndSecret {
                id: "ab".into(),
                secret: "t".into(),
            },
            record: Some(&rec),
        };
        assert_eq!(
            admit(Some(&known), None, &token, false, &[], NOW),
            Err(AdmissionError::NotOwner)
        );
        assert_eq!(
            admit(None, None, &token, false, &[], NOW),
            Ok(Admission::Token {
                token_id: "ab".into()
            })
        );
    }

    #[test]
    fn new_key_without_token() {
        assert_eq!(
            admit(None, None, &PresentedToken::None, false, &[], NOW),
            Err(AdmissionError::Join(JoinRefusal::Missing))
        );
        assert_eq!(
            admit(None, None, &PresentedToken::None, true, &[], NOW),
            Ok(Admission::Open)
        );
        let malformed = PresentedToken::Malformed("not a join token".into());
        assert_eq!(
            admit(None, None, &malformed, true, &[], NOW),
            Err(AdmissionError::Malformed("not a join token".into())),
            "a token that is sent is checked even with open join"
        );
    }

    #[test]
    fn restricted_peer_keeps_its_restriction() {
        let hash = tokens::hash_secret("s");
        let allowed = tags(&["wasm"]);
        let known = KnownPeer {
            peer_id: "ab01",
            credential_hash: &hash,
            allowed_tags: Some(&allowed),
            proven_by_certificate: false,
        };
        let cred = tokens::format_peer_credential("ab01", "s");
        let err = admit(
            Some(&known),
            Some(&cred),
            &PresentedToken::None,
            false,
            &tags(&["docker", "wasm"]),
            NOW,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "peer ab01 may only advertise wasm; not allowed: docker"
        );
    }

    #[test]
    fn heartbeat_changes_and_events() {
        let old = peer();
        let (same, changed) = heartbeat_applied(&old, &HeartbeatRequest::default(), NOW);
        assert!(!changed, "plain heartbeat is not an event");
        assert_eq!(same.last_seen, NOW);
        assert_eq!(same.tags, old.tags);

        let mut offline = old.clone();
        offline.online = false;
        let (back, changed) = heartbeat_applied(&offline, &HeartbeatRequest::default(), NOW);
        assert!(changed && back.online, "coming back online is an event");

        let req = HeartbeatRequest {
            tags: tags(&["docker", "wasm"]),
            ..Default::default()
        };
        assert!(
            heartbeat_applied(&old, &req, NOW).1,
            "new tags are an event"
        );
        let req = HeartbeatRequest {
            endpoints: vec!["192.0.2.1:51820".parse().unwrap()],
            ..Default::default()
        };
        assert!(
            heartbeat_applied(&old, &req, NOW).1,
            "new endpoints are an event"
        );
        let req = HeartbeatRequest {
            resources: Some(NodeResources {
                cpus: 4.0,
                memory_mb: 1024,
                cpus_free: 1.0,
                memory_mb_free: 10,
            }),
            ..Default::default()
        };
        let (new, changed) = heartbeat_applied(&old, &req, NOW);
        assert!(!changed, "resources alone are not an event");
        assert_eq!(new.resources, req.resources);
    }

    #[test]
    fn reregistration_updates_fields() {
        let old = peer();
        let req = validate_register(request()).unwrap();
        let (new, changed) = reregistered(&old, &req, NOW);
        assert!(changed);
        assert_eq!(new.tags, tags(&["docker", "wasm"]));
        assert_eq!(new.peer_id, old.peer_id);
        assert_eq!(new.ula, old.ula);
        let (_, again) = reregistered(&new, &req, NOW);
        assert!(!again, "identical re-registration is not an event");
    }
}
