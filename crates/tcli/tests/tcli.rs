//! `tcli` against a real coordinator process: tokens created, listed and revoked, the roster as a
//! table and as JSON, a removed node kept out until re-admitted and a token revoked with the
//! nodes it admitted, and clear errors without an admin token or coordinator.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

use std::process::{Command, Output};
use tabbify_testkit::bin_path;
use tabbify_testkit::cluster::{CoordinatorProc, SupervisorOpts, SupervisorProc};

fn tcli(
    coord: &str,
    ca_file: Option<&std::path::Path>,
    admin_file: Option<&std::path::Path>,
    args: &[&str],
) -> Output {
    let mut cmd = Command::new(bin_path("tcli").unwrap());
    cmd.args(["--coordinator", coord])
        .args(args)
        .env_remove("TABBIFY_ADMIN_TOKEN")
        .env_remove("TABBIFY_MESH_COORDINATOR");
    if let Some(ca) = ca_file {
        cmd.arg("--ca-file").arg(ca);
    }
    if let Some(f) = admin_file {
        cmd.arg("--admin-token-file").arg(f);
    } else {
        cmd.args(["--admin-token-file", "/nonexistent/admin-token"]);
    }
    cmd.output().unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "tcli failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The roster's rows for `name`, as `(peer id, status)`.
fn roster_rows(coord: &CoordinatorProc, name: &str) -> Vec<(String, bool)> {
    let admin = coord.data_dir.join("admin-token");
    let json: serde_json::Value = serde_json::from_str(&stdout(&tcli(
        &coord.url,
        Some(&coord.ca_file()),
        Some(&admin),
        &["peers", "--json"],
    )))
    .unwrap();
    json["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["display_name"] == name)
        .map(|p| {
            (
                p["peer_id"].as_str().unwrap().to_string(),
                p["online"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// A real node holding a reusable token: removed, it tries to come straight back and is refused
/// until `tcli peers readmit`; then `tcli token revoke --cascade` removes it with its token.
#[test]
fn a_removed_node_stays_out_until_readmitted_and_cascade_revoke_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let coord = CoordinatorProc::start(
        &dir.path().join("coord"),
        "127.0.0.1:0",
        &["--heartbeat-interval", "1s"],
    )
    .unwrap();
    let admin = coord.data_dir.join("admin-token");
    let token = stdout(&tcli(
        &coord.url,
        Some(&coord.ca_file()),
        Some(&admin),
        &["token", "create", "--reusable"],
    ))
    .trim()
    .to_string();
    let token_id = token.split('_').nth(1).unwrap().to_string();
    let node = SupervisorProc::start(
        &dir.path().join("n"),
        &SupervisorOpts {
            coordinator: Some(coord.url.clone()),
            name: Some("leaver".into()),
            join_token: Some(token.clone()),
            args: vec![
                "--dataplane".into(),
                "off".into(),
                "--join-backoff-cap".into(),
                "1s".into(),
            ],
            ..Default::default()
        },
    )
    .unwrap();
    wait_for("the node joins", 20, || {
        !roster_rows(&coord, "leaver").is_empty()
    });
    let first = roster_rows(&coord, "leaver")[0].0.clone();

    stdout(&tcli(
        &coord.url,
        Some(&coord.ca_file()),
        Some(&admin),
        &["peer", "rm", &first],
    ));
    // The node's next heartbeat is refused, it registers again with its reusable token, and
    // the coordinator refuses its key: it stays out.
    wait_for("the node is told why", 20, || {
        std::fs::read_to_string(&node.log)
            .unwrap_or_default()
            .contains("tcli peers readmit")
    });
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        roster_rows(&coord, "leaver").is_empty(),
        "a removed node came back"
    );
    let removed = stdout(&tcli(
        &coord.url,
        Some(&coord.ca_file()),
        Some(&admin),
        &["peers", "removed"],
    ));
    assert!(
        removed.contains(&first) && removed.contains("removed by an operator"),
        "{removed}"
    );

    let readmitted = stdout(&tcli(
        &coord.url,
        Some(&coord.ca_file()),
        Some(&admin),
        &["peers", "readmit", &first],
    ));
    assert!(readmitted.contains("re-admitted"), "{readmitted}");
    wait_for("the node is back", 30, || {
        !roster_rows(&coord, "leaver").is_empty()
    });
    let second = roster_rows(&coord, "leaver")[0].0.clone();
    assert_ne!(second, first, "it comes back as a new peer");

    let out = stdout(&tcli(
        &coord.url,
        Some(&coord.ca_file()),
        Some(&admin),
        &["token", "revoke", &token_id, "--cascade"],
    ));
    assert!(out.contains("removed 1 peer"), "{out}");
    assert!(out.contains(&second), "{out}");
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(roster_rows(&coord, "leaver").is_empty());
    let err = tcli(
        &coord.url,
        Some(&coord.ca_file()),
        Some(&admin),
        &["peers", "readmit", "nobody"],
    );
    assert!(!err.status.success());
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("no removed peer"),
        "{}",
        String::from_utf8_lossy(&err.stderr)
    );
    drop(node);
}

#[test]
fn tokens_and_roster_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let coord = CoordinatorProc::start(&dir.path().join("coord"), "127.0.0.1:0", &[]).unwrap();
    let admin = coord.data_dir.join("admin-token");

    let token = stdout(&tcli(
        &coord.url,
        Some(&coord.ca_file()),
        Some(&admin),
        &[
            "token",
            "create",
            "--ttl",
            "1h",
            "--uses",
            "2",
            "--description",
            "ci",
        ],
    ))
    .trim()
    .to_string();
    assert!(token.starts_with("tbfj_"), "{token}");

    let node = SupervisorProc::start(
        &dir.path().join("n"),
        &SupervisorOpts {
            coordinator: Some(coord.url.clone()),
            name: Some("cli-node".into()),
            join_token: Some(token.clone()),
            args: vec!["--dataplane".into(), "off".into()],
            ..Default::default()
        },
    )
    .unwrap();
    // Wait until the node shows in the roster.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let table = loop {
        let t = stdout(&tcli(
            &coord.url,
            Some(&coord.ca_file()),
            Some(&admin),
            &["peers"],
        ));
        if t.contains("cli-node") || std::time::Instant::now() > deadline {
            break t;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("NAME") && header.contains("ULA") && header.contains("TAGS"));
    let row = lines.next().unwrap();
    assert!(
        row.starts_with("cli-node") && row.contains("online") && row.contains("wasm"),
        "{row}"
    );

    let json: serde_json::Value = serde_json::from_str(&stdout(&tcli(
        &coord.url,
        Some(&coord.ca_file()),
        Some(&admin),
        &["peers", "--json"],
    )))
    .unwrap();
    assert_eq!(json["peers"][0]["display_name"], "cli-node");
    let filtered: serde_json::Value = serde_json::from_str(&stdout(&tcli(
        &coord.url,
        Some(&coord.ca_file()),
        Some(&admin),
        &["peers", "--tag", "no-such-tag", "--json"],
    )))
    .unwrap();
    assert_eq!(filtered["peers"].as_array().unwrap().len(), 0);

    let list = stdout(&tcli(
        &coord.url,
        Some(&coord.ca_file()),
        Some(&admin),
        &["token", "list"],
    ));
    let id = token.split('_').nth(1).unwrap();
    let row = list.lines().find(|l| l.starts_with(id)).unwrap();
    assert!(
        row.contains("active") && row.contains("1/2") && row.contains("ci"),
        "{row}"
    );

    stdout(&tcli(
        &coord.url,
        Some(&coord.ca_file()),
        Some(&admin),
        &["token", "revoke", id],
    ));
    let list = stdout(&tcli(
        &coord.url,
        Some(&coord.ca_file()),
        Some(&admin),
        &["token", "list", "--json"],
    ));
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v["tokens"][0]["state"], "revoked");
    drop(node);
}

#[test]
fn errors_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let coord = CoordinatorProc::start(&dir.path().join("coord"), "127.0.0.1:0", &[]).unwrap();
    let o = tcli(&coord.url, Some(&coord.ca_file()), None, &["token", "list"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("TABBIFY_ADMIN_TOKEN"), "{err}");

    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "tbfa_wrong").unwrap();
    let o = tcli(
        &coord.url,
        Some(&coord.ca_file()),
        Some(&wrong),
        &["token", "list"],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("401"), "{err}");

    let o = tcli("http://127.0.0.1:9", None, Some(&wrong), &["peers"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot reach the coordinator"), "{err}");
}

/// The README's "run it" command: `tcli dev` brings up a coordinator, an appsrv and a node,
/// deploys hello-wasm and prints a URL that answers with its greeting; Ctrl-C (SIGINT) leaves
/// no process, port or TUN device behind; a second run reuses the state.
#[test]
fn dev_serves_the_sample_app_and_leaves_nothing_behind() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("dev");
    let port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
            .to_string()
    };
    let (cp, np, ap) = (port(), port(), port());
    let dev = |extra: &[&str]| {
        let mut cmd = Command::new(bin_path("tcli").unwrap());
        cmd.args(["dev", "--coordinator-port", &cp, "--node-port", &np])
            .args(["--appsrv-port", &ap])
            .args(extra)
            .arg("--dir")
            .arg(&state);
        cmd
    };
    let mut child = dev(&[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut printed = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.contains("Ctrl-C stops everything");
        printed.push(line);
        if done {
            break;
        }
    }
    let text = printed.join("\n");
    let url = printed
        .iter()
        .find_map(|l| l.strip_prefix("app"))
        .map(|r| r.trim().to_string())
        .unwrap_or_else(|| {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err);
            panic!("no app URL in:\n{text}\n{err}")
        });
    assert!(url.ends_with("/app/hello-wasm/"), "{text}");
    assert!(
        text.contains("dev-node") && text.contains("online"),
        "{text}"
    );
    // The coordinator serves TLS from the mesh CA in the state directory (as the printed curl
    // line says).
    assert!(url.starts_with("https://"), "{url}");
    let ca = state.join("coordinator/ca.crt");
    assert!(
        text.contains(&format!("--cacert {}", ca.display())),
        "{text}"
    );
    let body = Command::new("curl")
        .args(["-sS", "-m", "10", "--cacert", ca.to_str().unwrap(), &url])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&body.stdout),
        "hello from tabbify wasm\n",
        "{}",
        String::from_utf8_lossy(&body.stderr)
    );
    let ula = text
        .lines()
        .find(|l| l.starts_with("node"))
        .and_then(|l| l.split("ula=").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();

    // Ctrl-C: everything stops, runners included.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(child.wait().unwrap().success(), "{rest:?}");
    assert_eq!(rest.last().map(String::as_str), Some("stopped"), "{rest:?}");
    for p in [&cp, &np, &ap] {
        assert!(
            std::net::TcpStream::connect(format!("127.0.0.1:{p}")).is_err(),
            "port {p} still open"
        );
    }
    assert_eq!(leftover_processes(&state), Vec::<String>::new());
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains("tbf-dev"),
        "TUN device left behind"
    );

    // The second run reuses the state: same node, same address, the app already there.
    let second = stdout(&dev(&["--once"]).output().unwrap());
    assert!(second.contains(&format!("ula={ula}")), "{second}");
    assert!(second.contains("already deployed"), "{second}");
    assert_eq!(leftover_processes(&state), Vec::<String>::new());
}

/// Command lines of processes that still mention the dev state directory.
fn leftover_processes(state: &std::path::Path) -> Vec<String> {
    tabbify_testkit::processes_mentioning(&state.display().to_string())
        .into_iter()
        .map(|(_, cmd)| cmd)
        .collect()
}
