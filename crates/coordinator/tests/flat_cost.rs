//! One registration or heartbeat costs the same whatever the size of the roster: the rows
//! SQLite writes, the bytes of JSON the store produces and the peer records any pass looks at are
//! counted (not timed) for one more node at 100 and at 10,000 peers, through the service (so the
//! placement run after a roster change is included), with no app and with an app whose replica
//! is placed. Plain heartbeats write no row at all until the batched flush.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::sync::Arc;
use std::time::Duration;
use tabbify_coordinator::app_spec;
use tabbify_coordinator::guards::Guards;
use tabbify_coordinator::liveness::LivenessPolicy;
use tabbify_coordinator::node_auth::NodeProof;
use tabbify_coordinator::service::{Service, Settings};
use tabbify_coordinator::store::{RegisterCommand, Store, WorkCounters};
use tabbify_wire::app::ArtifactDigest;
use tabbify_wire::mesh::{HeartbeatRequest, NodeResources, RegisterRequest};
use tabbify_wire::placement::CreateAppRequest;
use tabbify_wire::token::CreateJoinTokenRequest;
use tabbify_wire::{PublicKeyB64, Tag, Timestamp};

const GRACE: Duration = Duration::from_secs(30);

struct Mesh {
    _dir: tempfile::TempDir,
    svc: Arc<Service>,
    token: String,
}

fn mesh() -> Mesh {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("c.db")).unwrap();
    let token = store
        .create_join_token(
            &CreateJoinTokenRequest {
                reusable: true,
                ..Default::default()
            },
            Timestamp::now(),
        )
        .unwrap()
        .token;
    let settings = Settings {
        open_join: false,
        liveness: LivenessPolicy {
            heartbeat_interval: Duration::from_secs(5),
            offline_after_missed: 3,
            retention: Duration::from_secs(3600),
        },
        mesh: store.mesh_prefix(),
        event_log_capacity: 100_000,
        serving_since: Timestamp::now(),
        node_lost_grace: GRACE,
        default_appsrv: None,
        mtls: None,
        guards: Guards::default(),
    };
    Mesh {
        _dir: dir,
        svc: Arc::new(Service::new(store, "tbfa_test", settings).unwrap()),
        token,
    }
}

fn request(i: u64, subnet: Option<u16>, prefix: tabbify_wire::Ipv6Prefix) -> RegisterRequest {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&i.to_le_bytes());
    key[31] = 0x5a;
    RegisterRequest {
        public_key: PublicKeyB64::from_bytes(key),
        display_name: format!("n{i:08}"),
        tags: vec![Tag::wasm()],
        endpoints: vec!["192.0.2.1:51820".parse().unwrap()],
        // The measured node asks for the same address in both meshes, so its JSON is as long.
        requested_ula: subnet.map(|s| {
            std::net::Ipv6Addr::from(u128::from(prefix.addr()) | (u128::from(s) << 64) | 1)
        }),
        version: "1.0.0".into(),
        peer_credential: None,
        resources: Some(NodeResources {
            cpus: 2.0,
            memory_mb: 1024,
            cpus_free: 2.0,
            memory_mb_free: 1024,
        }),
        csr: None,
    }
}

/// Registers node `i` through the service (placement included); returns its credential.
async fn join(m: &Mesh, i: u64, subnet: Option<u16>) -> String {
    let prefix = m.svc.settings.mesh;
    let cmd = RegisterCommand {
        request: request(i, subnet, prefix),
        join_token: Some(m.token.clone()),
        open_join: false,
        alloc_start: 1,
        proof: None,
        certificate: None,
    };
    m.svc
        .write(move |s, sink| {
            let reg = s.register(cmd, Timestamp::now()).unwrap();
            sink.extend(reg.event);
            reg.credential.unwrap()
        })
        .await
        .unwrap()
}

async fn work(m: &Mesh) -> WorkCounters {
    m.svc.read(|s| s.work()).await.unwrap()
}

/// What one more registration, then one plain heartbeat of it, cost in a mesh of `peers`.
async fn one_more(peers: u64, with_app: bool) -> (WorkCounters, WorkCounters, WorkCounters) {
    let m = mesh();
    for i in 0..peers {
        join(&m, i, None).await;
    }
    if with_app {
        let spec = app_spec::validate(
            CreateAppRequest {
                manifest: "[app]\nname = \"web\"\nreplicas = 1\n[runtime]\nkind = \"wasm\"\ncomponent = \"w.wasm\"\n".into(),
                artifact_digest: Some(ArtifactDigest::parse(format!("sha256:{}", "a".repeat(64))).unwrap()),
                appsrv_url: None,
            },
            Some("http://127.0.0.1:9000"),
        )
        .unwrap();
        let placed = m
            .svc
            .write(move |s, _| {
                s.put_app(spec, Timestamp::now(), GRACE).unwrap();
                s.app_list().apps[0].replicas.len()
            })
            .await
            .unwrap();
        assert_eq!(placed, 1, "the replica is placed, nothing is pending");
    }
    let before = work(&m).await;
    let cred = join(&m, 1_000_000, Some(0xfffe)).await;
    let registered = work(&m).await;
    let proof = NodeProof::Credential(cred);
    m.svc
        .write(move |s, _| {
            s.heartbeat(
                &proof,
                false,
                &HeartbeatRequest::default(),
                Timestamp::now(),
            )
            .unwrap()
        })
        .await
        .unwrap();
    let beat = work(&m).await;
    // The batched flush writes what the heartbeat left in memory.
    m.svc
        .write(|s, _| s.flush_all_heartbeats())
        .await
        .unwrap()
        .unwrap();
    let flushed = work(&m).await;
    (
        registered.since(&before),
        beat.since(&registered),
        flushed.since(&beat),
    )
}

fn assert_same(small: WorkCounters, large: WorkCounters, what: &str) {
    assert_eq!(
        small.rows_written, large.rows_written,
        "{what}: rows written at 100 vs 10,000 peers"
    );
    assert_eq!(
        small.peers_visited, large.peers_visited,
        "{what}: peers visited at 100 vs 10,000 peers"
    );
    // Timestamps and random ids may differ by a character or two; nothing may scale.
    assert!(
        small.bytes_serialised.abs_diff(large.bytes_serialised) <= 16,
        "{what}: bytes serialised at 100 ({}) vs 10,000 ({}) peers",
        small.bytes_serialised,
        large.bytes_serialised
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_costs_the_same_at_100_and_at_10000_peers() {
    let (reg_small, beat_small, _) = one_more(100, false).await;
    let (reg_large, beat_large, _) = one_more(10_000, false).await;
    println!("registration at 100: {reg_small:?}; at 10,000: {reg_large:?}");
    assert_same(reg_small, reg_large, "registration");
    assert!(
        reg_small.rows_written >= 3,
        "a join writes its token use, its peer and its event: {reg_small:?}"
    );
    assert_eq!(
        reg_small.peers_visited, 0,
        "a join without apps reads no other peer"
    );
    assert!(reg_small.bytes_serialised > 0);
    assert_same(beat_small, beat_large, "heartbeat");
    assert_eq!(
        beat_large.rows_written, 0,
        "a plain heartbeat is kept in memory until the batched flush"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_placed_app_a_registration_still_costs_the_same() {
    let (small, _, _) = one_more(100, true).await;
    let (large, _, _) = one_more(10_000, true).await;
    println!("registration with an app at 100: {small:?}; at 10,000: {large:?}");
    assert_same(small, large, "registration with a placed app");
}
