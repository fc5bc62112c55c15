//! The deploy path end to end on loopback, without the mesh data plane: `tcli deploy` stages
//! hello-wasm on a real appsrv and creates the app at a real coordinator; a real node pulls its
//! assignment, fetches and verifies the artifact and runs it; `tcli apps`, `tcli app`,
//! `tcli logs` and `tcli rm` show and undo it. An artifact whose bytes were altered on the appsrv
//! after upload is never run: the node refuses it and says why. An assigned app replaced by hand
//! through the node's control API (same name and version, other bytes) is put back to the
//! assigned artifact.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use tabbify_testkit::cluster::{CoordinatorProc, SupervisorOpts, SupervisorProc};
use tabbify_testkit::{ChildGuard, bin_path, workspace_root};

const GREETING: &str = "hello from tabbify wasm\n";

/// tcli with its token cache beside the coordinator's data dir (never the real home).
fn tcli(coord: &str, admin: &Path, args: &[&str]) -> Output {
    Command::new(bin_path("tcli").unwrap())
        .args(["--coordinator", coord, "--admin-token-file"])
        .arg(admin)
        .args(args)
        .env_remove("TABBIFY_ADMIN_TOKEN")
        .env_remove("TABBIFY_OPERATOR_TOKEN")
        .env("XDG_CACHE_HOME", cache_of(admin))
        .output()
        .unwrap()
}

fn cache_of(admin: &Path) -> PathBuf {
    admin.parent().unwrap().parent().unwrap().join("tcli-cache")
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "tcli failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `target/wasm/hello-wasm.wasm`, built (or found up to date) by `examples/build.sh` once per
/// test binary; a failed build fails the test rather than leave it on an old component.
fn hello_wasm() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let root = workspace_root();
    let wasm = root.join("target/wasm/hello-wasm.wasm");
    BUILT.call_once(|| {
        let out = Command::new("bash")
            .arg(root.join("examples/build.sh"))
            .arg("hello-wasm")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "examples/build.sh hello-wasm failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    assert!(
        wasm.is_file(),
        "examples/build.sh made no {}",
        wasm.display()
    );
    wasm
}

fn get(url: &str) -> (u16, String) {
    get_with(url, "X-No-Auth: 1")
}

fn get_with(url: &str, header: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-m", "5", "-H", header, "-w", "\n%{http_code}", url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn app_json(coord: &str, admin: &Path, name: &str) -> serde_json::Value {
    serde_json::from_str(&ok(tcli(coord, admin, &["app", name, "--json"]))).unwrap()
}

/// Kills the runners started out of `dir` (they outlive their supervisor by design).
struct Runners(PathBuf);

impl Drop for Runners {
    fn drop(&mut self) {
        for (pid, _) in tabbify_testkit::processes_mentioning(&self.0.display().to_string()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[test]
fn deploy_serve_log_remove_and_refuse_a_tampered_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let _runners = Runners(dir.path().to_path_buf());
    // The node runs without a data plane, so its apps serve on loopback on this machine.
    let coord = CoordinatorProc::start(
        &dir.path().join("coord"),
        "127.0.0.1:0",
        &["--heartbeat-interval", "1s", "--allow-loopback-replicas"],
    )
    .unwrap();
    let admin = coord.data_dir.join("admin-token");
    let mut appsrv_cmd = Command::new(bin_path("tabbify-appsrv").unwrap());
    appsrv_cmd
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("appsrv"))
        .arg("--token-key-file")
        .arg(coord.data_dir.join("signing-key.pub"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = appsrv_cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let _appsrv_guard = ChildGuard::new("tabbify-appsrv", child);
    let appsrv = lines
        .next()
        .unwrap()
        .unwrap()
        .trim_start_matches("tabbify-appsrv listening on ")
        .to_string();

    let token = ok(tcli(&coord.url, &admin, &["token", "create", "--reusable"]));
    let node = SupervisorProc::start(
        &dir.path().join("node"),
        &SupervisorOpts {
            coordinator: Some(coord.url.clone()),
            name: Some("n1".into()),
            join_token: Some(token.trim().into()),
            args: vec!["--dataplane".into(), "off".into()],
            ..Default::default()
        },
    )
    .unwrap();

    // Deploy: staged, placed, pulled, verified, running; the printed address answers.
    let manifest = dir.path().join("tabbify.toml");
    std::fs::write(
        &manifest,
        format!(
            "[app]\nname = \"hello\"\n\n[runtime]\nkind = \"wasm\"\ncomponent = \"{}\"\n",
            hello_wasm().display()
        ),
    )
    .unwrap();
    let m = manifest.to_str().unwrap();
    let started = Instant::now();
    let printed = ok(tcli(
        &coord.url,
        &admin,
        &["deploy", "-q", "-f", m, "--appsrv", &appsrv],
    ));
    let url = printed.lines().next().unwrap().to_string();
    assert_eq!(get(&url), (200, GREETING.to_string()), "{url}");
    println!("deploy -> first 200: {:?}", started.elapsed());
    let listed = ok(tcli(&coord.url, &admin, &["apps"]));
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("hello ") && l.contains("running") && l.contains("1/1")),
        "{listed}"
    );
    let view = app_json(&coord.url, &admin, "hello");
    assert_eq!(view["replicas"][0]["node_name"], "n1", "{view}");

    // The log of the replica, from its node.
    let logs = ok(tcli(
        &coord.url,
        &admin,
        &["logs", "hello", "--node-api", &node.api],
    ));
    assert!(logs.contains("hello-wasm: Method::Get /"), "{logs}");
    // It got itself an operator token and cached it privately.
    let cached: Vec<_> = std::fs::read_dir(cache_of(&admin).join("tabbify"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&cached[0]).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // The node refuses the same read without it.
    let (code, body) = get(&format!("{}/v1/apps", node.api));
    assert_eq!(code, 401, "{body}");

    // The same deploy again is a no-op: same version, nothing re-uploaded.
    let again = tcli(
        &coord.url,
        &admin,
        &["deploy", "-f", m, "--appsrv", &appsrv],
    );
    let err = String::from_utf8_lossy(&again.stderr).into_owned();
    assert!(again.status.success(), "{err}");
    assert!(err.contains("already staged"), "{err}");
    assert_eq!(app_json(&coord.url, &admin, "hello")["version"], 1);

    // An artifact altered on the appsrv after it was staged: the node never runs it.
    let bad_wasm = dir.path().join("other.wasm");
    let mut bytes = std::fs::read(hello_wasm()).unwrap();
    // A custom section at the end: still a valid component, another digest.
    bytes.extend_from_slice(&[0, 4, 3, b'a', b'b', b'c']);
    std::fs::write(&bad_wasm, &bytes).unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "[app]\nname = \"bad\"\n\n[runtime]\nkind = \"wasm\"\ncomponent = \"{}\"\n",
            bad_wasm.display()
        ),
    )
    .unwrap();
    // Stage it, then change the stored bytes behind the appsrv's back.
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    let put = Command::new("curl")
        .args(["-sS", "-f", "-X", "PUT", "--data-binary"])
        .arg(format!("@{}", bad_wasm.display()))
        .args([
            "-H",
            &format!(
                "authorization: Bearer {}",
                ok(tcli(
                    &coord.url,
                    &admin,
                    &[
                        "login",
                        "--print",
                        "--scope",
                        "artifacts:write",
                        "--ttl",
                        "5m"
                    ]
                ))
                .trim()
            ),
        ])
        .arg(format!("{appsrv}/v1/blobs/sha256:{digest}"))
        .output()
        .unwrap();
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let stored = dir.path().join("appsrv/sha256").join(&digest);
    let mut tampered = bytes.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    std::fs::write(&stored, &tampered).unwrap();
    ok(tcli(
        &coord.url,
        &admin,
        &[
            "deploy",
            "-q",
            "--no-wait",
            "-f",
            bad.to_str().unwrap(),
            "--appsrv",
            &appsrv,
        ],
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    let error = loop {
        let v = app_json(&coord.url, &admin, "bad");
        if let Some(e) = v["replicas"][0]["error"].as_str() {
            break e.to_string();
        }
        assert!(Instant::now() < deadline, "no error reported: {v}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(error.contains("bytes that do not match"), "{error}");
    let read = ok(tcli(
        &coord.url,
        &admin,
        &["login", "--print", "--scope", "node:read"],
    ));
    let (code, body) = get_with(
        &format!("{}/v1/apps", node.api),
        &format!("Authorization: Bearer {}", read.trim()),
    );
    assert_eq!(code, 200, "{body}");
    let names: Vec<String> = serde_json::from_str::<serde_json::Value>(&body).unwrap()["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        vec!["hello".to_string()],
        "the tampered app never ran"
    );

    // Replaced by hand: someone with access to the node's control API deploys other bytes under
    // the assigned name. Same name, same app id, same coordinator version; only the artifact
    // differs. The node's reconcile notices and puts the assigned artifact back.
    let assigned = app_json(&coord.url, &admin, "hello")["artifact_digest"]
        .as_str()
        .unwrap()
        .to_string();
    // Root on the node: its control socket needs no token.
    let socket = node.control_socket.to_str().unwrap().to_string();
    let local = |_node_api: &str| -> serde_json::Value {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-m",
                "5",
                "--unix-socket",
                &socket,
                "http://node/v1/apps",
            ])
            .output()
            .unwrap();
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{body}");
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        list["apps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "hello")
            .cloned()
            .unwrap()
    };
    let before = local(&node.api);
    assert_eq!(before["artifact_digest"], assigned.as_str());
    let by_hand = Command::new("curl")
        .args(["-sS", "-m", "30", "-f", "--unix-socket", &socket, "-F"])
        .arg(format!("manifest=@{}", manifest.display()))
        .arg("-F")
        .arg(format!("artifact=@{}", bad_wasm.display()))
        .arg("http://node/v1/apps")
        .output()
        .unwrap();
    assert!(
        by_hand.status.success(),
        "{}",
        String::from_utf8_lossy(&by_hand.stderr)
    );
    let replaced: serde_json::Value = serde_json::from_slice(&by_hand.stdout).unwrap();
    assert_eq!(replaced["app_id"], before["app_id"], "{replaced}");
    assert_eq!(replaced["artifact_digest"], format!("sha256:{digest}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let restored = loop {
        let now = local(&node.api);
        if now["artifact_digest"] == assigned.as_str() && now["state"] == "running" {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "the hand-deployed artifact was not replaced: {now}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        restored["version"].as_u64() > replaced["version"].as_u64(),
        "put back by a new deploy: {restored}"
    );
    assert_eq!(get(&url), (200, GREETING.to_string()));
    let node_log = std::fs::read_to_string(&node.log).unwrap();
    assert!(
        node_log.contains("runs another artifact than assigned"),
        "the node says why"
    );

    // rm: the node stops the replica.
    ok(tcli(&coord.url, &admin, &["rm", "hello"]));
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(&url).0 == 200 {
        assert!(Instant::now() < deadline, "hello still serves after rm");
        std::thread::sleep(Duration::from_millis(100));
    }
}
