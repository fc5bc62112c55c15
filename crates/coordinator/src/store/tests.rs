//! Store tests on real SQLite files in temp dirs.

use super::*;
use crate::liveness::LivenessPolicy;
use crate::registration::{Admission, AdmissionError};
use crate::store::RevokeError;
use crate::tokens::JoinRefusal;
use std::time::Duration;
use tabbify_wire::PublicKeyB64;
use tabbify_wire::mesh::{HeartbeatRequest, RegisterRequest, RosterEventKind};
use tabbify_wire::token::{CreateJoinTokenRequest, JoinTokenState};

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(&dir.path().join(DB_FILE)).unwrap()
}

fn request(key: u8) -> RegisterRequest {
    RegisterRequest {
        public_key: PublicKeyB64::from_bytes([key; 32]),
        display_name: format!("node-{key}"),
        tags: vec![Tag::wasm()],
        endpoints: vec![],
        requested_ula: None,
        version: "0.1.0".into(),
        peer_credential: None,
        resources: None,
        csr: None,
    }
}

/// A registration without mTLS: the proof of a known key is the credential in the body.
fn command(req: RegisterRequest, token: Option<&str>) -> RegisterCommand {
    RegisterCommand {
        proof: req
            .peer_credential
            .clone()
            .map(crate::node_auth::NodeProof::Credential),
        request: req,
        join_token: token.map(str::to_string),
        open_join: false,
        alloc_start: 1,
        certificate: None,
    }
}

fn cred_proof(c: &Option<String>) -> crate::node_auth::NodeProof {
    crate::node_auth::NodeProof::Credential(c.clone().unwrap_or_default())
}

fn reusable_token(store: &mut Store) -> String {
    store
        .create_join_token(
            &CreateJoinTokenRequest {
                reusable: true,
                ..Default::default()
            },
            T0,
        )
        .unwrap()
        .token
}

#[test]
fn register_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mesh, peer, cred) = {
        let mut store = open(&dir);
        let token = reusable_token(&mut store);
        let reg = store
            .register(command(request(1), Some(&token)), T0)
            .unwrap();
        assert_eq!(reg.revision, 1);
        assert_eq!(reg.event.as_ref().unwrap().kind, RosterEventKind::Joined);
        (store.mesh_prefix(), reg.peer, reg.credential)
    };
    let mut store = open(&dir);
    store.verify_consistency().unwrap();
    assert_eq!(store.mesh_prefix(), mesh, "the mesh prefix is created once");
    assert_eq!(store.revision(), 1);
    assert_eq!(store.peer(&peer.peer_id), Some(&peer));
    // The credential still proves ownership after the restart.
    let mut again = request(1);
    again.peer_credential = cred.clone();
    let reg = store.register(command(again, None), T0).unwrap();
    assert_eq!(reg.peer.ula, peer.ula);
    assert_eq!(reg.credential, cred);
    assert!(reg.event.is_none(), "nothing changed");
}

#[test]
fn failed_registration_consumes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let token = store
        .create_join_token(&CreateJoinTokenRequest::default(), T0)
        .unwrap();
    let reusable = reusable_token(&mut store);
    let first = store
        .register(command(request(1), Some(&reusable)), T0)
        .unwrap();
    // Ask for the address the first peer holds: refused, and the single-use token is untouched.
    let mut req = request(2);
    req.requested_ula = Some(first.peer.ula);
    let err = store
        .register(command(req, Some(&token.token)), T0)
        .unwrap_err();
    assert!(
        matches!(err, RegisterError::Address(AllocError::Taken { .. })),
        "{err:?}"
    );
    let info = store.join_token(&token.info.id, T0).unwrap().unwrap();
    assert_eq!(info.uses, 0);
    assert_eq!(info.state, JoinTokenState::Active);
    assert_eq!(store.revision(), 1);
    assert_eq!(store.counts(), (1, 1));
    // The same token still works once.
    store
        .register(command(request(2), Some(&token.token)), T0)
        .unwrap();
    let err = store
        .register(command(request(3), Some(&token.token)), T0)
        .unwrap_err();
    assert!(
        matches!(
            err,
            RegisterError::Admission(AdmissionError::Join(JoinRefusal::UsedUp { .. }))
        ),
        "{err:?}"
    );
    store.verify_consistency().unwrap();
}

use crate::addressing::AllocError;

#[test]
fn open_join_and_admission_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let mut cmd = command(request(9), None);
    cmd.open_join = true;
    let reg = store.register(cmd, T0).unwrap();
    assert_eq!(reg.admission, Admission::Open);
}

#[test]
fn plain_heartbeats_are_batched_and_a_crash_loses_only_their_last_seen() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let token = reusable_token(&mut store);
    let reg = store
        .register(command(request(1), Some(&token)), T0)
        .unwrap();
    let proof = cred_proof(&reg.credential);
    let soon = Timestamp(T0.0 + 1_000);
    let joined = store.work();
    store
        .heartbeat(&proof, false, &HeartbeatRequest::default(), soon)
        .unwrap();
    assert_eq!(
        store.work().since(&joined).rows_written,
        0,
        "a plain heartbeat writes no row"
    );
    assert_eq!(
        store.flush_heartbeats().unwrap(),
        0,
        "last_seen on disk is fresh enough"
    );
    // No flush, no clean shutdown: as after kill -9.
    drop(store);
    let mut store = open(&dir);
    let peer = store.peer(&reg.peer.peer_id).unwrap().clone();
    assert!(peer.online, "the peer is still online");
    assert_eq!(peer.last_seen, T0, "only the in-memory last_seen was lost");

    // New resources, or a last_seen on disk older than a minute, are queued and flushed in one
    // transaction.
    let later = Timestamp(T0.0 + LAST_SEEN_PERSIST_EVERY.as_millis() as u64 + 1);
    store
        .heartbeat(&proof, false, &HeartbeatRequest::default(), later)
        .unwrap();
    assert_eq!(store.flush_heartbeats().unwrap(), 1);
    assert_eq!(store.flush_heartbeats().unwrap(), 0);
    drop(store);
    let mut store = open(&dir);
    assert_eq!(store.peer(&reg.peer.peer_id).unwrap().last_seen, later);
    store.verify_consistency().unwrap();
}

#[test]
fn heartbeat_events_and_unknown_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let token = reusable_token(&mut store);
    let reg = store
        .register(command(request(1), Some(&token)), T0)
        .unwrap();
    let plain = store
        .heartbeat(
            &cred_proof(&reg.credential),
            false,
            &HeartbeatRequest::default(),
            Timestamp(T0.0 + 10),
        )
        .unwrap();
    assert!(plain.event.is_none());
    assert_eq!(plain.revision, 1);
    assert_eq!(
        store.peer(&reg.peer.peer_id).unwrap().last_seen,
        Timestamp(T0.0 + 10)
    );
    let retag = HeartbeatRequest {
        tags: vec![Tag::wasm(), Tag::docker()],
        ..Default::default()
    };
    let out = store
        .heartbeat(&cred_proof(&reg.credential), false, &retag, T0)
        .unwrap();
    assert_eq!(out.event.unwrap().kind, RosterEventKind::Updated);
    assert_eq!(out.revision, 2);
    let forged = crate::tokens::format_peer_credential(&reg.peer.peer_id, "forged");
    for bad in [forged.as_str(), "nonsense", ""] {
        let proof = crate::node_auth::NodeProof::Credential(bad.to_string());
        assert!(matches!(
            store.heartbeat(&proof, false, &HeartbeatRequest::default(), T0),
            Err(HeartbeatError::Auth(
                crate::node_auth::NodeAuthError::UnknownPeer
            ))
        ));
    }
    // The change that made an event is on disk.
    drop(store);
    let mut store = open(&dir);
    store.verify_consistency().unwrap();
    assert_eq!(store.peer(&reg.peer.peer_id).unwrap().tags.len(), 2);
}

#[test]
fn liveness_offline_then_purge_frees_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let token = reusable_token(&mut store);
    let reg = store
        .register(command(request(1), Some(&token)), T0)
        .unwrap();
    let policy = LivenessPolicy {
        heartbeat_interval: Duration::from_secs(1),
        offline_after_missed: 3,
        retention: Duration::from_secs(60),
    };
    assert!(
        store
            .apply_liveness(&policy, T0, Timestamp(T0.0 + 3_000))
            .unwrap()
            .is_empty()
    );
    let ev = store
        .apply_liveness(&policy, T0, Timestamp(T0.0 + 3_001))
        .unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].kind, RosterEventKind::Offline);
    assert!(!ev[0].peer.online);
    assert!(!store.peer(&reg.peer.peer_id).unwrap().online);
    let ev = store
        .apply_liveness(&policy, T0, Timestamp(T0.0 + 60_001))
        .unwrap();
    assert_eq!(ev[0].kind, RosterEventKind::Removed);
    assert_eq!(ev[0].revision, 3);
    assert!(store.peer(&reg.peer.peer_id).is_none());
    // The address is free again for another key.
    let mut req = request(2);
    req.requested_ula = Some(reg.peer.ula);
    let again = store.register(command(req, Some(&token)), T0).unwrap();
    assert_eq!(again.peer.ula, reg.peer.ula);
    store.verify_consistency().unwrap();
}

#[test]
fn events_after_pruning_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let token = reusable_token(&mut store);
    for k in 1..=10 {
        store
            .register(command(request(k), Some(&token)), T0)
            .unwrap();
    }
    let EventsAfter::Events(all) = store.events_after(0, 100).unwrap() else {
        panic!("log starts at 1");
    };
    assert_eq!(
        all.iter().map(|e| e.revision).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    let EventsAfter::Events(page) = store.events_after(4, 3).unwrap() else {
        panic!()
    };
    assert_eq!(
        page.iter().map(|e| e.revision).collect::<Vec<_>>(),
        vec![5, 6, 7]
    );
    assert_eq!(
        store.events_after(10, 5).unwrap(),
        EventsAfter::Events(vec![])
    );
    assert_eq!(store.events_after(11, 5).unwrap(), EventsAfter::Gone);

    assert_eq!(store.prune_events(4).unwrap(), 6);
    assert_eq!(store.oldest_revision().unwrap(), Some(7));
    assert_eq!(store.events_after(5, 5).unwrap(), EventsAfter::Gone);
    assert!(
        matches!(store.events_after(6, 5).unwrap(), EventsAfter::Events(v) if v[0].revision == 7)
    );
    drop(store);
    let mut store = open(&dir);
    assert_eq!(
        store.revision(),
        10,
        "the revision survives pruning and a reopen"
    );
    store.verify_consistency().unwrap();
    assert_eq!(store.snapshot().peers.len(), 10);
}

#[test]
fn remove_and_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let token = reusable_token(&mut store);
    let reg = store
        .register(command(request(1), Some(&token)), T0)
        .unwrap();
    let ev = store.remove_peer(&reg.peer.peer_id, T0).unwrap().unwrap();
    assert_eq!(ev.kind, RosterEventKind::Removed);
    assert!(store.remove_peer(&reg.peer.peer_id, T0).unwrap().is_none());
    let id = store.join_tokens(T0).unwrap().tokens[0].id.clone();
    store.revoke_join_token(&id, T0).unwrap();
    store.revoke_join_token(&id, Timestamp(T0.0 + 5)).unwrap();
    assert!(matches!(
        store.revoke_join_token("ffff", T0),
        Err(RevokeError::NotFound(_))
    ));
    assert_eq!(
        store.join_tokens(T0).unwrap().tokens[0].state,
        JoinTokenState::Revoked
    );
    let err = store
        .register(command(request(2), Some(&token)), T0)
        .unwrap_err();
    assert!(matches!(
        err,
        RegisterError::Admission(AdmissionError::Join(JoinRefusal::Revoked { .. }))
    ));
}

#[test]
fn refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    drop(Store::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = Store::open(&path).err().unwrap();
    assert!(err.to_string().contains("schema version 99"), "{err}");
}

#[test]
fn shared_listing_serialises_exactly_like_the_wire_type() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let token = reusable_token(&mut store);
    for k in [3, 1, 2] {
        store
            .register(command(request(k), Some(&token)), T0)
            .unwrap();
    }
    // A heartbeat and a liveness change refresh the cached JSON too.
    let c = store
        .register(command(request(4), Some(&token)), T0)
        .unwrap()
        .credential;
    let retag = HeartbeatRequest {
        tags: vec![Tag::docker()],
        ..Default::default()
    };
    store
        .heartbeat(&cred_proof(&c), false, &retag, Timestamp(T0.0 + 1))
        .unwrap();
    let policy = LivenessPolicy {
        heartbeat_interval: Duration::from_secs(1),
        offline_after_missed: 1,
        retention: Duration::from_secs(60),
    };
    store
        .apply_liveness(&policy, T0, Timestamp(T0.0 + 2_000))
        .unwrap();
    let view = store.peer_list(None);
    let owned = view.to_owned_list();
    let canonical = serde_json::to_string(&owned).unwrap();
    assert_eq!(serde_json::to_string(&view).unwrap(), canonical);
    assert_eq!(
        String::from_utf8(view.to_json().unwrap()).unwrap(),
        canonical
    );
    assert!(
        owned.peers.iter().all(|p| !p.online),
        "liveness change is in the cached JSON"
    );
    let empty = store.peer_list(Some(&Tag::firecracker()));
    assert_eq!(
        String::from_utf8(empty.to_json().unwrap()).unwrap(),
        serde_json::to_string(&empty.to_owned_list()).unwrap()
    );
    let parsed: tabbify_wire::mesh::PeerList =
        serde_json::from_str(&serde_json::to_string(&view).unwrap()).unwrap();
    assert_eq!(parsed, owned);
    assert_eq!(parsed.revision, 9);
    let subnets: Vec<_> = parsed.peers.iter().map(|p| p.ula).collect();
    let mut sorted = subnets.clone();
    sorted.sort();
    assert_eq!(subnets, sorted, "ordered by address");
    assert_eq!(store.peer_list(Some(&Tag::docker())).peers.len(), 1);
}

#[test]
fn a_removed_key_is_refused_until_readmitted_and_that_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let token;
    let first = {
        let mut store = open(&dir);
        token = reusable_token(&mut store);
        let reg = store
            .register(command(request(7), Some(&token)), T0)
            .unwrap();
        store.remove_peer(&reg.peer.peer_id, T0).unwrap().unwrap();
        let err = store
            .register(command(request(7), Some(&token)), T0)
            .unwrap_err();
        assert!(matches!(err, RegisterError::Removed(ref r) if r.peer_id == reg.peer.peer_id));
        assert!(err.to_string().contains("tcli peers readmit"), "{err}");
        store.verify_consistency().unwrap();
        reg.peer
    };
    let mut store = open(&dir);
    store.verify_consistency().unwrap();
    assert_eq!(store.removed_peers().len(), 1);
    let revision = store.revision();
    assert!(matches!(
        store.register(command(request(7), Some(&token)), T0),
        Err(RegisterError::Removed(_))
    ));
    assert_eq!(store.revision(), revision, "a refusal changes nothing");
    assert!(store.readmit("nobody").unwrap().is_none());
    let lifted = store.readmit(first.public_key.as_str()).unwrap().unwrap();
    assert_eq!(lifted.peer_id, first.peer_id);
    assert!(store.removed_peers().is_empty());
    let back = store
        .register(command(request(7), Some(&token)), T0)
        .unwrap();
    assert_ne!(back.peer.peer_id, first.peer_id);
    store.verify_consistency().unwrap();
}

#[test]
fn cascade_revocation_removes_exactly_the_peers_the_token_admitted() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let leaked = reusable_token(&mut store);
    let other = reusable_token(&mut store);
    let leaked_id = crate::tokens::parse_join_token(&leaked).unwrap().id;
    let a = store
        .register(command(request(1), Some(&leaked)), T0)
        .unwrap();
    let b = store
        .register(command(request(2), Some(&leaked)), T0)
        .unwrap();
    let c = store
        .register(command(request(3), Some(&other)), T0)
        .unwrap();
    let done = store.revoke_join_token_cascade(&leaked_id, T0).unwrap();
    let mut gone: Vec<_> = done.removed.iter().map(|r| r.peer_id.clone()).collect();
    gone.sort();
    let mut want = vec![a.peer.peer_id, b.peer.peer_id];
    want.sort();
    assert_eq!(gone, want);
    assert_eq!(done.events.len(), 2);
    assert_eq!(store.revision(), 5);
    assert!(store.peer(&c.peer.peer_id).is_some());
    assert_eq!(store.counts().0, 1);
    assert_eq!(
        store.join_token(&leaked_id, T0).unwrap().unwrap().state,
        JoinTokenState::Revoked
    );
    assert!(matches!(
        store.revoke_join_token_cascade("nope", T0),
        Err(RevokeError::NotFound(_))
    ));
    store.verify_consistency().unwrap();
}

#[test]
fn a_version_2_database_is_migrated_and_keeps_its_peers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    let peer = {
        let mut store = open(&dir);
        let token = reusable_token(&mut store);
        store
            .register(command(request(1), Some(&token)), T0)
            .unwrap()
            .peer
    };
    // Turn the file back into what version 2 wrote.
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "DROP INDEX peers_by_join_token; DROP TABLE removed_keys;
             ALTER TABLE peers DROP COLUMN cert_serial; ALTER TABLE peers DROP COLUMN prev_cert_serial;
             PRAGMA user_version = 2;",
        )
        .unwrap();
    }
    let mut store = open(&dir);
    let version: i64 = store
        .conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, super::schema::SCHEMA_VERSION);
    assert_eq!(store.peer(&peer.peer_id), Some(&peer));
    store.remove_peer(&peer.peer_id, T0).unwrap().unwrap();
    assert_eq!(store.removed_peers().len(), 1);
    store.verify_consistency().unwrap();
}

mod apps {
    use super::*;
    use crate::app_spec::{AppSpec, validate};
    use tabbify_wire::app::{AppName, ArtifactDigest};
    use tabbify_wire::mesh::NodeResources;
    use tabbify_wire::node_apps::AppState;
    use tabbify_wire::placement::{AppStatus, CreateAppRequest, NodeAppsReport, ReplicaReport};

    const GRACE: Duration = Duration::from_secs(30);

    fn spec(replicas: u32, digest: char) -> AppSpec {
        validate(
            CreateAppRequest {
                manifest: format!(
                    "[app]\nname = \"web\"\nreplicas = {replicas}\n[runtime]\nkind = \"wasm\"\ncomponent = \"w.wasm\"\n"
                ),
                artifact_digest: Some(
                    ArtifactDigest::parse(format!("sha256:{}", digest.to_string().repeat(64)))
                        .unwrap(),
                ),
                appsrv_url: None,
            },
            Some("http://127.0.0.1:9000"),
        )
        .unwrap()
    }

    fn join(store: &mut Store, token: &str, key: u8, at: Timestamp) -> Registered {
        let mut req = request(key);
        req.resources = Some(NodeResources {
            cpus: 2.0,
            memory_mb: 1024,
            cpus_free: 2.0,
            memory_mb_free: 1024,
        });
        store.register(command(req, Some(token)), at).unwrap()
    }

    #[test]
    fn apps_assignments_reports_and_revision_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let name = AppName::new("web").unwrap();
        let (list, n1) = {
            let mut store = open(&dir);
            let token = reusable_token(&mut store);
            let n1 = join(&mut store, &token, 1, T0);
            join(&mut store, &token, 2, Timestamp(T0.0 + 1));
            let put = store.put_app(spec(3, 'a'), T0, GRACE).unwrap();
            assert!(put.created);
            assert_eq!(put.view.version, 1);
            assert_eq!(put.view.status, AppStatus::Pending);
            assert_eq!(store.apps_revision(), 1);
            let again = store.put_app(spec(3, 'a'), T0, GRACE).unwrap();
            assert!(!again.created);
            assert_eq!(store.apps_revision(), 1, "no change, no revision");
            store.put_app(spec(2, 'b'), T0, GRACE).unwrap();
            assert_eq!(store.apps_revision(), 2);
            let ack = store
                .report_apps(
                    &n1.peer.peer_id,
                    NodeAppsReport {
                        applied_revision: Some(2),
                        apps: vec![ReplicaReport {
                            app: name.clone(),
                            version: 2,
                            state: AppState::Running,
                            address: Some(std::net::SocketAddr::new(
                                std::net::Ipv6Addr::from(u128::from(n1.peer.subnet.addr()) | 2)
                                    .into(),
                                8080,
                            )),
                            app_id: None,
                            error: Some("e".repeat(10_000)),
                        }],
                    },
                    false,
                    T0,
                )
                .unwrap();
            assert_eq!((ack.revision, ack.accepted), (2, 1));
            assert_eq!(store.apps_revision(), 2, "a report is not a revision");
            store.verify_consistency().unwrap();
            (store.app_list(), n1)
        };
        let mut store = open(&dir);
        store.verify_consistency().unwrap();
        store.place_apps(T0, GRACE).unwrap();
        assert_eq!(store.app_list(), list);
        assert_eq!(store.apps_revision(), 2);
        let view = store.app_view(&name).unwrap();
        assert_eq!(view.replicas[0].state, Some(AppState::Running));
        assert_eq!(
            view.replicas[0].error.as_ref().map(|e| e.chars().count()),
            Some(4096),
            "long errors are cut"
        );
        let set = store.assignment_set(&n1.peer.peer_id);
        assert_eq!((set.revision, set.assignments.len()), (2, 1));

        // Delete: the rows go with it, in one commit.
        assert!(store.delete_app(&name, T0, GRACE).unwrap());
        assert!(!store.delete_app(&name, T0, GRACE).unwrap());
        assert_eq!(store.apps_revision(), 3);
        store.verify_consistency().unwrap();
        drop(store);
        let store = open(&dir);
        assert!(store.app_list().apps.is_empty());
        assert_eq!(store.assignment_set(&n1.peer.peer_id).revision, 3);
    }

    #[test]
    fn a_purged_peer_loses_its_replicas_and_its_set() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        let token = reusable_token(&mut store);
        let n1 = join(&mut store, &token, 1, T0);
        store.put_app(spec(1, 'a'), T0, GRACE).unwrap();
        assert_eq!(store.assignment_set(&n1.peer.peer_id).assignments.len(), 1);
        store.remove_peer(&n1.peer.peer_id, T0).unwrap();
        store.place_apps(T0, GRACE).unwrap();
        let view = store.app_view(&AppName::new("web").unwrap()).unwrap();
        assert_eq!(view.pending_reason.as_deref(), Some("no node is online"));
        assert_eq!(store.assignment_set(&n1.peer.peer_id).revision, 0);
        store.verify_consistency().unwrap();
    }

    #[test]
    fn peer_credentials_identify_peers() {
        use crate::node_auth::{NodeAuthError, NodeProof};
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        let token = reusable_token(&mut store);
        let n1 = join(&mut store, &token, 1, T0);
        let good = n1.credential.clone().unwrap();
        let auth = |store: &Store, c: &str| {
            store.authenticate(&NodeProof::Credential(c.to_string()), false, false, 0)
        };
        assert_eq!(auth(&store, &good), Ok(n1.peer.peer_id.clone()));
        for bad in [
            "tbfp_nope_nope".to_string(),
            format!("{good}x"),
            String::new(),
        ] {
            assert_eq!(auth(&store, &bad), Err(NodeAuthError::UnknownPeer), "{bad}");
        }
        assert_eq!(
            store.authenticate(&NodeProof::Credential(good), true, false, 0),
            Err(NodeAuthError::CredentialNotAccepted)
        );
    }

    #[test]
    fn certificates_issued_at_registration_identify_the_peer_until_revoked() {
        use crate::node_auth::{NodeAuthError, NodeProof};
        use crate::store::CertificateRequest;
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        let token = reusable_token(&mut store);
        let ca = std::sync::Arc::new(tabbify_pki::MeshCa::generate("test").unwrap());
        let key = tabbify_pki::NodeKey::generate().unwrap();
        let issue = CertificateRequest {
            ca: ca.clone(),
            csr: key.csr_pem().unwrap(),
            ttl: Duration::from_secs(3600),
        };
        let mut cmd = command(request(7), Some(&token));
        cmd.certificate = Some(issue.clone());
        let reg = store.register(cmd, T0).unwrap();
        assert_eq!(reg.credential, None, "no bearer credential with mTLS");
        let cert = reg.certificate.unwrap();
        let info = tabbify_pki::NodeCertInfo::parse_pem(&cert.chain_pem).unwrap();
        let proof = NodeProof::Certificate {
            peer_id: info.peer_id.clone(),
            serial: info.serial.clone(),
            not_after: info.not_after,
        };
        let now = T0.0 / 1000;
        assert_eq!(
            store.authenticate(&proof, true, false, now),
            Ok(reg.peer.peer_id.clone())
        );
        // Survives a reopen.
        drop(store);
        let mut store = open(&dir);
        store.verify_consistency().unwrap();
        assert_eq!(
            store.authenticate(&proof, true, false, now),
            Ok(reg.peer.peer_id.clone())
        );
        // Two renewals later the first certificate no longer counts.
        let renewed = store.renew_certificate(&proof, &issue, T0).unwrap();
        assert_eq!(
            store.authenticate(&proof, true, false, now),
            Ok(reg.peer.peer_id.clone())
        );
        let second = NodeProof::Certificate {
            peer_id: info.peer_id.clone(),
            serial: renewed.serial.clone(),
            not_after: renewed.not_after,
        };
        store.renew_certificate(&second, &issue, T0).unwrap();
        assert!(matches!(
            store.authenticate(&proof, true, false, now),
            Err(NodeAuthError::Revoked { .. })
        ));
        assert!(store.revoke_certificates(&reg.peer.peer_id).unwrap());
        assert!(matches!(
            store.authenticate(&second, true, false, now),
            Err(NodeAuthError::Revoked { .. })
        ));
        assert!(!store.revoke_certificates("nobody").unwrap());
    }
}
