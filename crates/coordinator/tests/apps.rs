//! The apps API over real HTTP against the real binary and a real SQLite file: create, update and
//! delete apps; precise refusals that store nothing; placement over registered fake nodes
//! (distinct nodes, runtime tags, pending reasons, node loss and grace); the assignment stream;
//! state reports and endpoints; and a kill -9 that loses nothing. The placement rules themselves
//! are unit-tested in `src/placement.rs`.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use common::*;
use nix::sys::signal::Signal;
use reqwest::StatusCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tabbify_client::{AppChange, CoordinatorClient};
use tabbify_wire::app::{AppName, ArtifactDigest};
use tabbify_wire::mesh::{NodeResources, RegisterResponse, RosterEventKind};
use tabbify_wire::node_apps::AppState;
use tabbify_wire::placement::{
    AppList, AppStatus, AppView, AssignmentSet, CreateAppRequest, NodeAppsReport, ReplicaReport,
};
use tabbify_wire::{ErrorCode, Tag};

const APPSRV: &str = "http://127.0.0.1:9000";
/// Liveness that never marks a node offline during a test.
const CALM: [&str; 6] = [
    "--heartbeat-interval",
    "10m",
    "--appsrv",
    APPSRV,
    "--node-lost-grace",
    "30s",
];

/// A fake node: registered through the real API with a real key, heartbeating on demand.
#[derive(Clone)]
struct Node {
    reg: RegisterResponse,
}

const FREE: NodeResources = NodeResources {
    cpus: 4.0,
    memory_mb: 4096,
    cpus_free: 4.0,
    memory_mb_free: 4096,
};

async fn join(c: &Coordinator, token: &str, name: &str, tags: &[&str]) -> Node {
    let mut req = request(random_key(), name);
    req.tags = tags.iter().map(|t| Tag::new(*t).unwrap()).collect();
    req.resources = Some(FREE);
    let reg: RegisterResponse = c.register(Some(token), &req).await;
    // Join order is by join time: keep the joins apart.
    tokio::time::sleep(Duration::from_millis(5)).await;
    Node { reg }
}

async fn heartbeat(c: &Coordinator, n: &Node) -> StatusCode {
    c.http
        .post(c.url("/v1/mesh/heartbeat"))
        .bearer_auth(n.reg.peer_credential.as_deref().unwrap())
        .json(&serde_json::json!({ "resources": FREE }))
        .send()
        .await
        .unwrap()
        .status()
}

/// A node heartbeating every 50 ms in a task of its own until [`Heartbeats::stop`].
struct Heartbeats {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Heartbeats {
    /// Stops the heartbeats and fails the test if any of them was not a 200 (the task keeps
    /// beating and notes each one; nothing else would notice).
    async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let failed = self.task.await.expect("the heartbeat task");
        assert!(failed.is_empty(), "heartbeats failed: {failed:?}");
    }
}

fn keep_alive(c: &Arc<Coordinator>, n: &Node) -> Heartbeats {
    let stop = Arc::new(AtomicBool::new(false));
    let (c, n, flag) = (Arc::clone(c), n.clone(), Arc::clone(&stop));
    let task = tokio::spawn(async move {
        let mut failed = Vec::new();
        while !flag.load(Ordering::SeqCst) {
            let status = heartbeat(&c, &n).await;
            if status != StatusCode::OK {
                failed.push(format!("{}: {status}", n.reg.peer_id));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        failed
    });
    Heartbeats { stop, task }
}

fn digest(c: char) -> ArtifactDigest {
    ArtifactDigest::parse(format!("sha256:{}", c.to_string().repeat(64))).unwrap()
}

fn wasm(name: &str, replicas: u32, extra: &str) -> String {
    format!(
        "[app]\nname = \"{name}\"\nreplicas = {replicas}\n[runtime]\nkind = \"wasm\"\ncomponent = \"{name}.wasm\"\n{extra}"
    )
}

fn create(manifest: String, d: Option<char>) -> CreateAppRequest {
    CreateAppRequest {
        manifest,
        artifact_digest: d.map(digest),
        appsrv_url: None,
    }
}

fn client(c: &Coordinator) -> CoordinatorClient {
    CoordinatorClient::new(&c.url).unwrap()
}

fn app_name(s: &str) -> AppName {
    AppName::new(s).unwrap()
}

async fn app(c: &Coordinator, name: &str) -> AppView {
    client(c).app(&c.admin, &app_name(name)).await.unwrap()
}

/// POSTs a raw body to `/v1/apps` with the admin token.
async fn post_raw(
    c: &Coordinator,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, serde_json::Value) {
    let resp = c
        .http
        .post(c.url("/v1/apps"))
        .bearer_auth(&c.admin)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

fn on(view: &AppView, replica: usize) -> Option<&str> {
    view.replicas[replica].peer_id.as_deref()
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `wait`.
async fn eventually<T, F, Fut>(wait: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + wait;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn open_watch(
    c: &Coordinator,
    n: &Node,
    since: Option<u64>,
    last_event_id: Option<u64>,
) -> SseReader {
    let mut req = reqwest::Client::new()
        .get(c.url("/v1/nodes/self/assignments/watch"))
        .bearer_auth(n.reg.peer_credential.as_deref().unwrap());
    if let Some(rev) = since {
        req = req.query(&[("since", rev)]);
    }
    if let Some(rev) = last_event_id {
        req = req.header("Last-Event-ID", rev.to_string());
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    SseReader::new(resp)
}

fn set_of(ev: &Sse) -> AssignmentSet {
    assert_eq!(ev.event, "assignments");
    let set: AssignmentSet = serde_json::from_str(&ev.data).unwrap();
    assert_eq!(set.revision, ev.revision());
    set
}

#[tokio::test]
async fn create_update_version_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(&dir.path().join("data"), &CALM);
    let token = c.reusable_token().await;
    let n1 = join(&c, &token, "n1", &["wasm"]).await;
    let api = client(&c);

    // Create: 201 with Location, placed at once.
    let resp = c
        .http
        .post(c.url("/v1/apps"))
        .bearer_auth(&c.admin)
        .json(&create(wasm("hello", 1, ""), Some('a')))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["location"], "/v1/apps/hello");
    let v1: AppView = resp.json().await.unwrap();
    assert_eq!(v1.version, 1);
    assert_eq!(v1.replicas_desired, 1);
    assert_eq!(v1.artifact_digest, Some(digest('a')));
    assert_eq!(
        v1.appsrv_url.as_deref(),
        Some(APPSRV),
        "--appsrv is the default"
    );
    assert_eq!(on(&v1, 0), Some(n1.reg.peer_id.as_str()));
    assert_eq!(v1.replicas[0].node_name.as_deref(), Some("n1"));
    assert_eq!(v1.replicas[0].node_ula, Some(n1.reg.ula));
    assert_eq!(v1.status, AppStatus::Deploying, "nothing reported yet");

    // The same request again: 200, same version, nothing touched.
    let (change, same) = api
        .create_app(&c.admin, &create(wasm("hello", 1, ""), Some('a')))
        .await
        .unwrap();
    assert_eq!(change, AppChange::Updated);
    assert_eq!((same.version, same.updated_at), (1, v1.updated_at));
    let rev_before = api.apps(&c.admin).await.unwrap().revision;

    // A new artifact, then a new manifest text: one version each.
    let (_, v2) = api
        .create_app(&c.admin, &create(wasm("hello", 1, ""), Some('b')))
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    let (_, v3) = api
        .create_app(
            &c.admin,
            &create(wasm("hello", 1, "[env]\nGREETING = \"hi\"\n"), Some('b')),
        )
        .await
        .unwrap();
    assert_eq!(v3.version, 3);
    assert_eq!(v3.created_at, v1.created_at);
    assert_eq!(
        on(&v3, 0),
        Some(n1.reg.peer_id.as_str()),
        "an update does not move it"
    );
    // Only the appsrv moved: same version.
    let mut moved = create(wasm("hello", 1, "[env]\nGREETING = \"hi\"\n"), Some('b'));
    moved.appsrv_url = Some("http://127.0.0.2:9000".into());
    let (_, v3b) = api.create_app(&c.admin, &moved).await.unwrap();
    assert_eq!(v3b.version, 3);
    assert_eq!(v3b.appsrv_url.as_deref(), Some("http://127.0.0.2:9000"));

    let list = api.apps(&c.admin).await.unwrap();
    assert_eq!(list.apps.len(), 1);
    assert_eq!(list.revision, rev_before + 3, "one revision per change");
    let set = api
        .assignments(n1.reg.peer_credential.as_deref())
        .await
        .unwrap();
    assert_eq!(set.assignments.len(), 1);
    assert_eq!(set.assignments[0].version, 3);
    assert_eq!(set.assignments[0].manifest, v3.manifest);
    assert_eq!(set.revision, list.revision);

    // Delete: 204, then 404, and the node's set is empty.
    api.delete_app(&c.admin, &app_name("hello")).await.unwrap();
    let err = api.app(&c.admin, &app_name("hello")).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
    let err = api
        .delete_app(&c.admin, &app_name("hello"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404));
    let set = api
        .assignments(n1.reg.peer_credential.as_deref())
        .await
        .unwrap();
    assert!(set.assignments.is_empty());
    assert_eq!(set.revision, list.revision + 1);

    // Every operator route wants the admin token.
    for (method, path) in [
        (reqwest::Method::GET, "/v1/apps"),
        (reqwest::Method::GET, "/v1/apps/hello"),
        (reqwest::Method::DELETE, "/v1/apps/hello"),
        (reqwest::Method::POST, "/v1/apps"),
    ] {
        let resp = c
            .http
            .request(method.clone(), c.url(path))
            .bearer_auth("tbfa_wrong")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert!(is_error_code(&body, ErrorCode::Unauthorized), "{body}");
    }
}

#[tokio::test]
async fn bad_requests_are_refused_precisely_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // No --appsrv: an artifact without appsrv_url is refused.
    let c = Coordinator::start(&dir.path().join("data"), &["--heartbeat-interval", "10m"]);
    let token = c.reusable_token().await;
    join(&c, &token, "n1", &["wasm"]).await;
    let good = wasm("hello", 1, "");
    let d = digest('a').as_str().to_string();
    let json = |v: serde_json::Value| v.to_string();

    let cases: Vec<(String, StatusCode, ErrorCode, &str)> = vec![
        (
            json(
                serde_json::json!({"manifest": good, "artifact_digest": d, "appsrv_url": APPSRV, "replicas": 2}),
            ),
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "unknown field `replicas`",
        ),
        (
            "{\"manifest\": ".into(),
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "invalid JSON body",
        ),
        (
            json(
                serde_json::json!({"manifest": "[app]\nname = \"x\"\ncolour = \"red\"\n[runtime]\nkind = \"wasm\"\n", "artifact_digest": d, "appsrv_url": APPSRV}),
            ),
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "tabbify.toml line 3, column 1: unknown field `colour`",
        ),
        (
            json(
                serde_json::json!({"manifest": wasm("hello", 1, "[resources]\nmemory_mb = 4\n"), "artifact_digest": d, "appsrv_url": APPSRV}),
            ),
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "line 8, column 13: `resources.memory_mb`",
        ),
        (
            json(serde_json::json!({"manifest": good, "appsrv_url": APPSRV})),
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "a wasm app needs an artifact",
        ),
        (
            json(
                serde_json::json!({"manifest": good, "artifact_digest": "sha256:xyz", "appsrv_url": APPSRV}),
            ),
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "`artifact_digest`",
        ),
        (
            json(
                serde_json::json!({"manifest": format!("[app]\nname = \"h\"\n[runtime]\nkind = \"wasm\"\nartifact = \"{}\"\n", digest('b')), "artifact_digest": d, "appsrv_url": APPSRV}),
            ),
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "disagrees with the manifest",
        ),
        (
            json(serde_json::json!({"manifest": good, "artifact_digest": d})),
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "no appsrv",
        ),
        (
            json(
                serde_json::json!({"manifest": good, "artifact_digest": d, "appsrv_url": "ftp://x/"}),
            ),
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "appsrv_url \"ftp://x/\"",
        ),
        (
            format!("{{\"manifest\": \"{}\"}}", "x".repeat(1024 * 1024 + 1)),
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            "1 MiB",
        ),
    ];
    for (body, status, code, needle) in cases {
        let got = post_raw(&c, body).await;
        assert_error(&got, status, code, needle);
    }
    // Unauthorised bodies are not even parsed.
    let resp = c
        .http
        .post(c.url("/v1/apps"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // Bad and unknown names in the path.
    let resp = c
        .http
        .get(c.url("/v1/apps/Bad_Name"))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let err = client(&c)
        .app(&c.admin, &app_name("nope"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound));

    // Nothing was stored and no revision was used.
    let list: AppList = c.admin_get("/v1/apps").await;
    assert!(list.apps.is_empty());
    assert_eq!(list.revision, 0);
}

#[tokio::test]
async fn replicas_spread_runtimes_match_and_pending_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(&dir.path().join("data"), &CALM);
    let token = c.reusable_token().await;
    let n1 = join(&c, &token, "n1", &["wasm"]).await;
    let n2 = join(&c, &token, "n2", &["wasm", "docker"]).await;
    let n3 = join(&c, &token, "n3", &["wasm"]).await;
    let api = client(&c);
    let put = |req: CreateAppRequest| {
        let api = api.clone();
        let admin = c.admin.clone();
        async move { api.create_app(&admin, &req).await.unwrap().1 }
    };

    let web = put(create(wasm("web", 2, ""), Some('a'))).await;
    assert_eq!(
        on(&web, 0),
        Some(n1.reg.peer_id.as_str()),
        "first in join order"
    );
    assert_eq!(
        on(&web, 1),
        Some(n2.reg.peer_id.as_str()),
        "a distinct node"
    );

    let docker =
        "[app]\nname = \"box\"\nreplicas = 2\n[runtime]\nkind = \"docker\"\nimage = \"nginx:1\"\n";
    let boxed = put(create(docker.into(), None)).await;
    assert_eq!(
        on(&boxed, 0),
        Some(n2.reg.peer_id.as_str()),
        "the only docker node"
    );
    assert_eq!(boxed.status, AppStatus::Pending);
    assert_eq!(
        boxed.replicas[1].pending_reason.as_deref(),
        Some("no online node offers the `docker` runtime besides the 1 already running a replica")
    );
    assert_eq!((boxed.artifact_digest, boxed.appsrv_url), (None, None));

    let vm = "[app]\nname = \"vm\"\n[runtime]\nkind = \"firecracker\"\nrootfs = \"vm.ext4\"\n";
    let vm_view = put(create(vm.into(), None)).await;
    assert_eq!(vm_view.status, AppStatus::Pending);
    assert_eq!(
        vm_view.pending_reason.as_deref(),
        Some("no online node offers the `firecracker` runtime")
    );

    let big = put(create(
        wasm("big", 1, "[resources]\nmemory_mb = 8192\n"),
        Some('c'),
    ))
    .await;
    let why = big.pending_reason.unwrap();
    assert!(why.starts_with("not enough free memory"), "{why}");
    assert!(why.contains("needs 1 cpus and 8192 MB"), "{why}");

    let wide = put(create(wasm("wide", 4, ""), Some('d'))).await;
    let placed: Vec<_> = (0..3).map(|i| on(&wide, i).unwrap().to_string()).collect();
    assert_eq!(
        placed,
        vec![
            n1.reg.peer_id.clone(),
            n2.reg.peer_id.clone(),
            n3.reg.peer_id.clone()
        ]
    );
    assert_eq!(
        wide.pending_reason.as_deref(),
        Some("no online node offers the `wasm` runtime besides the 3 already running a replica")
    );

    // Each node's set lists exactly its replicas.
    let apps_of = |set: AssignmentSet| -> Vec<String> {
        set.assignments.iter().map(|a| a.app.to_string()).collect()
    };
    let s2 = api
        .assignments(n2.reg.peer_credential.as_deref())
        .await
        .unwrap();
    assert_eq!(apps_of(s2.clone()), vec!["box", "web", "wide"]);
    assert_eq!(s2.get(&app_name("web")).unwrap().replica, 1);
    let s3 = api
        .assignments(n3.reg.peer_credential.as_deref())
        .await
        .unwrap();
    assert_eq!(apps_of(s3), vec!["wide"]);

    // A node with the missing runtime joins: the pending replica lands on it at once.
    let n4 = join(&c, &token, "n4", &["firecracker", "wasm"]).await;
    let vm_view = app(&c, "vm").await;
    assert_eq!(on(&vm_view, 0), Some(n4.reg.peer_id.as_str()));
    assert_eq!(vm_view.status, AppStatus::Deploying);
    let wide = app(&c, "wide").await;
    assert_eq!(on(&wide, 3), Some(n4.reg.peer_id.as_str()));
}

#[tokio::test]
async fn a_lost_nodes_replica_moves_after_the_grace_and_the_node_gets_an_empty_set() {
    let dir = tempfile::tempdir().unwrap();
    let c = Arc::new(Coordinator::start(
        &dir.path().join("data"),
        &[
            "--heartbeat-interval",
            "200ms",
            "--offline-after-missed",
            "3",
            "--retention",
            "1h",
            "--node-lost-grace",
            "1500ms",
            "--appsrv",
            APPSRV,
        ],
    ));
    let token = c.reusable_token().await;
    let n1 = join(&c, &token, "n1", &["wasm"]).await;
    let n2 = join(&c, &token, "n2", &["wasm"]).await;
    let mut roster = c.watch(Some(n2.reg.revision), false).await;
    let beats1 = keep_alive(&c, &n1);
    let beats2 = keep_alive(&c, &n2);
    let api = client(&c);
    let (_, view) = api
        .create_app(&c.admin, &create(wasm("web", 1, ""), Some('a')))
        .await
        .unwrap();
    assert_eq!(on(&view, 0), Some(n1.reg.peer_id.as_str()));

    // n1 goes quiet: offline after 600 ms, but it keeps the replica during the grace.
    beats1.stop().await;
    let degraded = eventually(Duration::from_secs(5), "n1 offline", || async {
        let v = app(&c, "web").await;
        (v.replicas[0].node_online == Some(false)).then_some(v)
    })
    .await;
    assert_eq!(on(&degraded, 0), Some(n1.reg.peer_id.as_str()));
    assert_eq!(degraded.status, AppStatus::Degraded);
    let offline = loop {
        let ev = roster
            .next(Duration::from_secs(5))
            .await
            .expect("n1's offline event")
            .roster_event();
        if ev.kind == RosterEventKind::Offline && ev.peer.peer_id == n1.reg.peer_id {
            break ev;
        }
    };

    // After the grace it is re-placed on n2.
    let moved = eventually(Duration::from_secs(8), "re-placement", || async {
        let v = app(&c, "web").await;
        (on(&v, 0) == Some(n2.reg.peer_id.as_str())).then_some(v)
    })
    .await;
    // Timed by the coordinator's own clock: the offline event and the new assignment.
    let waited = moved.replicas[0].assigned_at.expect("assigned").unix_ms() - offline.at.unix_ms();
    assert!(
        waited >= 1500,
        "not before the 1500 ms grace after going offline: {waited} ms"
    );
    assert!(waited < 1500 + 1000, "then promptly: {waited} ms");
    assert_eq!(moved.replicas[0].node_online, Some(true));
    assert!(
        moved.replicas[0].state.is_none(),
        "n1's report does not follow the replica"
    );

    // n1 comes back: it is not given the replica back, and its set says so.
    let beats1 = keep_alive(&c, &n1);
    eventually(Duration::from_secs(5), "n1 online", || async {
        let roster: tabbify_wire::mesh::Peer = c
            .get_json(&format!("/v1/mesh/peers/{}", n1.reg.peer_id))
            .await;
        roster.online.then_some(())
    })
    .await;
    let s1 = api
        .assignments(n1.reg.peer_credential.as_deref())
        .await
        .unwrap();
    assert!(s1.assignments.is_empty());
    let s2 = api
        .assignments(n2.reg.peer_credential.as_deref())
        .await
        .unwrap();
    assert_eq!(s2.assignments.len(), 1);
    assert_eq!(
        s1.revision, s2.revision,
        "both sets changed in the same commit"
    );
    let after = app(&c, "web").await;
    assert_eq!(
        on(&after, 0),
        Some(n2.reg.peer_id.as_str()),
        "still exactly one replica"
    );

    // A node removed from the roster loses its replicas at once (no grace). (Its heartbeats
    // stop first: after the removal they would be refused.)
    beats2.stop().await;
    let resp = c
        .http
        .delete(c.url(&format!("/v1/mesh/peers/{}", n2.reg.peer_id)))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let v = app(&c, "web").await;
    assert_eq!(on(&v, 0), Some(n1.reg.peer_id.as_str()));
    beats1.stop().await;
}

#[tokio::test]
async fn the_assignment_stream_sends_full_sets_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(&dir.path().join("data"), &CALM);
    let token = c.reusable_token().await;
    let n1 = join(&c, &token, "n1", &["wasm"]).await;
    let api = client(&c);
    let wait = Duration::from_secs(10);

    // Without `since`: the current (empty) set at once.
    let mut w = open_watch(&c, &n1, None, None).await;
    let first = set_of(&w.next(wait).await.expect("first set"));
    assert_eq!((first.revision, first.assignments.len()), (0, 0));
    assert_eq!(first.peer_id, n1.reg.peer_id);

    api.create_app(&c.admin, &create(wasm("one", 1, ""), Some('a')))
        .await
        .unwrap();
    let s = set_of(&w.next(wait).await.expect("set after create"));
    assert_eq!(s.assignments.len(), 1);
    assert_eq!(s.assignments[0].version, 1);
    assert_eq!(s.assignments[0].artifact_digest, Some(digest('a')));
    assert_eq!(s.assignments[0].appsrv_url.as_deref(), Some(APPSRV));
    api.create_app(&c.admin, &create(wasm("one", 1, ""), Some('b')))
        .await
        .unwrap();
    let s2 = set_of(&w.next(wait).await.expect("set after update"));
    assert!(s2.revision > s.revision);
    assert_eq!(s2.assignments[0].version, 2, "a whole new set, not a delta");
    drop(w);

    // An app this node does not hold does not wake it: create one that only fits a docker node.
    let docker = "[app]\nname = \"box\"\n[runtime]\nkind = \"docker\"\nimage = \"nginx:1\"\n";
    api.create_app(&c.admin, &create(docker.into(), None))
        .await
        .unwrap();

    // Resuming from the current revision: silence until the next change.
    let mut w = open_watch(&c, &n1, Some(s2.revision), None).await;
    assert!(w.next(Duration::from_millis(1500)).await.is_none());
    api.create_app(&c.admin, &create(wasm("two", 1, ""), Some('c')))
        .await
        .unwrap();
    let s3 = set_of(&w.next(wait).await.expect("set after a second app"));
    let names: Vec<String> = s3.assignments.iter().map(|a| a.app.to_string()).collect();
    assert_eq!(names, vec!["one", "two"]);
    drop(w);

    // Last-Event-ID overrides `since`: an older id gets the current set at once.
    let mut w = open_watch(&c, &n1, Some(s3.revision), Some(s2.revision)).await;
    assert_eq!(set_of(&w.next(wait).await.unwrap()).revision, s3.revision);
    api.delete_app(&c.admin, &app_name("one")).await.unwrap();
    let s4 = set_of(&w.next(wait).await.expect("set after delete"));
    assert_eq!(s4.assignments.len(), 1);
    assert_eq!(s4.assignments[0].app, app_name("two"));
    drop(w);

    // The client's parser reads the same stream.
    use futures_util::StreamExt;
    let mut stream = Box::pin(
        api.watch_assignments(n1.reg.peer_credential.as_deref(), Some(s3.revision))
            .await
            .unwrap(),
    );
    let got = tokio::time::timeout(wait, stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got, s4);

    // Credentials: none is 401, an unknown one is 404 unknown_peer (register again).
    let resp = c
        .http
        .get(c.url("/v1/nodes/self/assignments/watch"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let err = api
        .assignments(Some(&format!("tbfp_{}_wrongsecret", n1.reg.peer_id)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownPeer));
    let resp = c
        .http
        .get(c.url("/v1/nodes/self/assignments/watch?since=x"))
        .bearer_auth(n1.reg.peer_credential.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

fn running(app: &str, version: u64, ula: std::net::Ipv6Addr) -> ReplicaReport {
    let mut seg = ula.segments();
    seg[7] = 2;
    ReplicaReport {
        app: app_name(app),
        version,
        state: AppState::Running,
        address: Some(std::net::SocketAddr::new(
            std::net::Ipv6Addr::from(seg).into(),
            8080,
        )),
        app_id: None,
        error: None,
    }
}

#[tokio::test]
async fn reports_show_in_the_app_and_endpoints_are_running_replicas_on_online_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let c = Arc::new(Coordinator::start(
        &dir.path().join("data"),
        &[
            "--heartbeat-interval",
            "200ms",
            "--retention",
            "1h",
            "--node-lost-grace",
            "1h",
            "--appsrv",
            APPSRV,
        ],
    ));
    let token = c.reusable_token().await;
    let n1 = join(&c, &token, "n1", &["wasm"]).await;
    let n2 = join(&c, &token, "n2", &["wasm"]).await;
    let beats1 = keep_alive(&c, &n1);
    let beats2 = keep_alive(&c, &n2);
    let api = client(&c);
    api.create_app(&c.admin, &create(wasm("web", 2, ""), Some('a')))
        .await
        .unwrap();

    // n1 runs it; n2 is starting, and also mentions an app it does not hold.
    let r1 = running("web", 1, n1.reg.ula);
    let ack = api
        .report_apps_state(
            n1.reg.peer_credential.as_deref(),
            &NodeAppsReport {
                applied_revision: Some(1),
                apps: vec![r1.clone()],
            },
        )
        .await
        .unwrap();
    assert_eq!(ack.accepted, 1);
    let mut r2 = running("web", 1, n2.reg.ula);
    r2.state = AppState::Starting;
    let ack = api
        .report_apps_state(
            n2.reg.peer_credential.as_deref(),
            &NodeAppsReport {
                applied_revision: None,
                apps: vec![r2.clone(), running("stranger", 1, n2.reg.ula)],
            },
        )
        .await
        .unwrap();
    assert_eq!(
        ack.accepted, 1,
        "an app not assigned to the node is ignored"
    );
    let v = app(&c, "web").await;
    assert_eq!(v.status, AppStatus::Deploying);
    assert_eq!(v.replicas[0].state, Some(AppState::Running));
    assert_eq!(v.replicas[0].address, r1.address);
    assert_eq!(
        v.replicas[0].url,
        r1.address.map(|a| format!("http://{a}/"))
    );
    assert!(v.replicas[0].reported_at.is_some());
    assert_eq!(v.replicas[1].state, Some(AppState::Starting));

    // Endpoints: only the running one, for the admin token and for any peer credential.
    let e = api
        .app_endpoints(Some(&c.admin), &app_name("web"))
        .await
        .unwrap();
    assert_eq!(e.endpoints, vec![r1.address.unwrap()]);
    let e = api
        .app_endpoints(n2.reg.peer_credential.as_deref(), &app_name("web"))
        .await
        .unwrap();
    assert_eq!(e.endpoints.len(), 1);
    let err = api
        .app_endpoints(Some("tbfp_x_y"), &app_name("web"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401));
    let err = api
        .app_endpoints(Some(&c.admin), &app_name("nope"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404));

    // Both running at the current version: the app is running.
    r2.state = AppState::Running;
    api.report_apps_state(
        n2.reg.peer_credential.as_deref(),
        &NodeAppsReport {
            applied_revision: None,
            apps: vec![r2.clone()],
        },
    )
    .await
    .unwrap();
    assert_eq!(app(&c, "web").await.status, AppStatus::Running);
    let e = api
        .app_endpoints(Some(&c.admin), &app_name("web"))
        .await
        .unwrap();
    assert_eq!(e.endpoints.len(), 2);

    // A crashlooping replica makes it degraded; an omitted app reads as not reported.
    r2.state = AppState::Crashloop;
    api.report_apps_state(
        n2.reg.peer_credential.as_deref(),
        &NodeAppsReport {
            applied_revision: None,
            apps: vec![r2.clone()],
        },
    )
    .await
    .unwrap();
    assert_eq!(app(&c, "web").await.status, AppStatus::Degraded);
    api.report_apps_state(
        n2.reg.peer_credential.as_deref(),
        &NodeAppsReport::default(),
    )
    .await
    .unwrap();
    let v = app(&c, "web").await;
    assert_eq!(v.replicas[1].state, None);
    assert_eq!(v.status, AppStatus::Deploying);

    // n1 goes offline: its running replica is no longer an endpoint (grace is long: still there).
    beats1.stop().await;
    let e = eventually(Duration::from_secs(5), "n1 offline", || async {
        let e = api
            .app_endpoints(Some(&c.admin), &app_name("web"))
            .await
            .unwrap();
        e.endpoints.is_empty().then_some(e)
    })
    .await;
    assert_eq!(e.version, 1);
    let v = app(&c, "web").await;
    assert_eq!(on(&v, 0), Some(n1.reg.peer_id.as_str()));
    assert_eq!(
        v.replicas[0].state,
        Some(AppState::Running),
        "its last report stays"
    );
    beats2.stop().await;
}

#[tokio::test]
async fn kill_9_keeps_apps_assignments_reports_and_revision() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut c = Coordinator::start(&data, &CALM);
    let token = c.reusable_token().await;
    let n1 = join(&c, &token, "n1", &["wasm"]).await;
    let n2 = join(&c, &token, "n2", &["wasm"]).await;
    let api = client(&c);
    api.create_app(&c.admin, &create(wasm("web", 2, ""), Some('a')))
        .await
        .unwrap();
    api.create_app(&c.admin, &create(wasm("web", 2, ""), Some('b')))
        .await
        .unwrap();
    let docker = "[app]\nname = \"box\"\n[runtime]\nkind = \"docker\"\nimage = \"nginx:1\"\n";
    api.create_app(&c.admin, &create(docker.into(), None))
        .await
        .unwrap();
    api.report_apps_state(
        n1.reg.peer_credential.as_deref(),
        &NodeAppsReport {
            applied_revision: None,
            apps: vec![running("web", 2, n1.reg.ula)],
        },
    )
    .await
    .unwrap();
    let before = api.apps(&c.admin).await.unwrap();
    let set1 = api
        .assignments(n1.reg.peer_credential.as_deref())
        .await
        .unwrap();
    let set2 = api
        .assignments(n2.reg.peer_credential.as_deref())
        .await
        .unwrap();
    assert_eq!(before.apps.len(), 2);
    assert!(before.revision >= 3);

    c.guard.signal(Signal::SIGKILL).unwrap();
    c.guard
        .wait_timeout(Duration::from_secs(10))
        .expect("killed process exits");
    drop(c);

    let c = Coordinator::start(&data, &CALM);
    let api = client(&c);
    let after = api.apps(&c.admin).await.unwrap();
    assert_eq!(
        after, before,
        "apps, placement, reports, pending reasons and revision"
    );
    assert_eq!(
        api.assignments(n1.reg.peer_credential.as_deref())
            .await
            .unwrap(),
        set1
    );
    assert_eq!(
        api.assignments(n2.reg.peer_credential.as_deref())
            .await
            .unwrap(),
        set2
    );
    let web = after
        .apps
        .iter()
        .find(|a| a.name.as_str() == "web")
        .unwrap();
    assert_eq!(web.version, 2);
    assert_eq!(web.replicas[0].state, Some(AppState::Running));

    // A node resuming its watch from its revision hears nothing until something changes, and
    // the next change gets a higher revision than any before the crash.
    let mut w = open_watch(&c, &n1, Some(set1.revision), None).await;
    assert!(w.next(Duration::from_millis(1500)).await.is_none());
    api.delete_app(&c.admin, &app_name("web")).await.unwrap();
    let s = set_of(&w.next(Duration::from_secs(10)).await.unwrap());
    assert_eq!(s.revision, before.revision + 1);
    assert!(s.assignments.is_empty());
}

/// The coordinator's own ingress: `/app/<name>/…` goes to a replica its node reported running,
/// here a real HTTP server on loopback standing in for the app.
#[tokio::test]
async fn the_ingress_proxies_to_a_reported_replica_and_says_why_it_cannot() {
    let dir = tempfile::tempdir().unwrap();
    // The stand-in app serves on loopback, as a node without a data plane would.
    let mut args = CALM.to_vec();
    args.push("--allow-loopback-replicas");
    let c = Arc::new(Coordinator::start(&dir.path().join("data"), &args));
    let token = c.reusable_token().await;
    let n1 = join(&c, &token, "n1", &["wasm"]).await;
    let api = client(&c);
    api.create_app(&c.admin, &create(wasm("web", 1, ""), Some('a')))
        .await
        .unwrap();

    let unknown = c.http.get(c.url("/app/nope/")).send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    // Placed, but nothing reported running yet.
    let none = c.http.get(c.url("/app/web/")).send().await.unwrap();
    assert_eq!(none.status(), StatusCode::SERVICE_UNAVAILABLE);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/{*rest}",
        axum::routing::get(
            |uri: axum::http::Uri, headers: axum::http::HeaderMap| async move {
                let fwd = headers
                    .get("x-forwarded-for")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_string();
                format!("path={uri} xff={fwd}")
            },
        ),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut report = running("web", 1, n1.reg.ula);
    report.address = Some(backend);
    api.report_apps_state(
        n1.reg.peer_credential.as_deref(),
        &NodeAppsReport {
            applied_revision: None,
            apps: vec![report],
        },
    )
    .await
    .unwrap();
    let body = c
        .http
        .get(c.url("/app/web/hello/there?x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(body.status(), StatusCode::OK);
    let text = body.text().await.unwrap();
    assert!(text.starts_with("path=/hello/there?x=1 "), "{text}");
    assert!(text.contains("xff=127.0.0.1"), "{text}");
}
