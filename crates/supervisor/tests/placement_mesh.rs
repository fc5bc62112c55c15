//! The coordinator routes apps to nodes, for real: a coordinator and an appsrv on one
//! network-namespace host, three supervisors on others (two that reach the Docker daemon, one
//! that does not and serves the ingress), all on the WireGuard mesh. `tcli deploy` stages
//! hello-wasm and the coordinator places its replicas; nodes pull their assignments, fetch and
//! verify the artifact and report back. Then a node's whole machine dies under steady load through
//! the ingress, its replica moves, the node comes back and stops what it no longer owns, and the
//! coordinator crashes and comes back with everything intact.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod apps_support;
mod mesh_support;

use apps_support::example_wasm;
use mesh_support::{LabNode, MeshLab, NodeOpts, curl, eventually};
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tabbify_testkit::{Capability, require};

const GREETING: &str = "hello from tabbify wasm\n";
/// How long a lost node's replicas wait before they move (the coordinator's --node-lost-grace).
const GRACE: Duration = Duration::from_secs(2);

fn app_view(lab: &MeshLab, name: &str) -> serde_json::Value {
    serde_json::from_str(&lab.tcli(&["app", name, "--json"])).unwrap()
}

/// (node name, state, address) of every placed replica.
fn placed(view: &serde_json::Value) -> Vec<(String, String, String)> {
    view["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| {
            Some((
                r["node_name"].as_str()?.to_string(),
                r["state"].as_str().unwrap_or("-").to_string(),
                r["address"].as_str().unwrap_or("-").to_string(),
            ))
        })
        .collect()
}

fn running_on(view: &serde_json::Value) -> BTreeSet<String> {
    placed(view)
        .into_iter()
        .filter(|(_, state, _)| state == "running")
        .map(|(node, _, _)| node)
        .collect()
}

fn write_manifest(lab: &MeshLab, file: &str, text: &str) -> String {
    let path = lab.dir.path().join(file);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

#[test]
fn apps_are_placed_served_through_the_ingress_moved_off_a_lost_node_and_survive_a_coordinator_crash()
 {
    require!(Capability::NetNs);
    require!(Capability::Docker);
    let wasm = example_wasm("hello-wasm");
    let grace = format!("{}ms", GRACE.as_millis());
    let mut lab = MeshLab::new("place", &["--node-lost-grace", &grace]);
    let (_appsrv, appsrv) = lab.start_appsrv();
    let token = lab.token();
    let names = ["node-a", "node-b", "node-c"];
    let hosts: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| lab.lan.add_host(n).unwrap())
        .collect();
    let opts = |i: usize| NodeOpts {
        docker: i < 2,
        extra_args: if i == 2 {
            vec!["--ingress".into(), "0.0.0.0:8081".into()]
        } else {
            vec![]
        },
    };
    let data = |i: usize| lab.dir.path().join(names[i]);
    let mut nodes: Vec<LabNode> = (0..3)
        .map(|i| {
            let n = lab.start_node(&hosts[i], names[i], &token, &data(i), &opts(i));
            // Placement goes by join order: keep it a, b, c.
            std::thread::sleep(Duration::from_millis(300));
            n
        })
        .collect();
    let peers = lab.tcli(&["peers"]);
    assert!(
        peers.lines().filter(|l| l.contains("online")).count() == 3,
        "{peers}"
    );

    // Two replicas on two distinct nodes (a and b, first in join order), both answering from c
    // over the mesh.
    let hello = write_manifest(
        &lab,
        "hello.toml",
        &format!(
            "[app]\nname = \"hello\"\nreplicas = 2\n\n[runtime]\nkind = \"wasm\"\ncomponent = \"{}\"\n",
            wasm.display()
        ),
    );
    let printed = lab.tcli(&["deploy", "-q", "-f", &hello, "--appsrv", &appsrv]);
    let view = app_view(&lab, "hello");
    assert_eq!(
        running_on(&view),
        BTreeSet::from(["node-a".to_string(), "node-b".to_string()]),
        "{view}"
    );
    assert_eq!(printed.lines().count(), 2, "one URL per replica: {printed}");
    for url in printed.lines() {
        let (code, body) = curl(&nodes[2].host, &[url]);
        assert_eq!((code, body.as_str()), (200, GREETING), "{url} from node-c");
    }

    // A docker app lands only on the nodes with the docker tag; the third replica fits nowhere.
    let web = write_manifest(
        &lab,
        "web.toml",
        "[app]\nname = \"web\"\nreplicas = 3\n\n[runtime]\nkind = \"docker\"\nimage = \"tabbify-test/absent:1\"\n",
    );
    lab.tcli(&["deploy", "-q", "--no-wait", "-f", &web, "--appsrv", &appsrv]);
    let view = app_view(&lab, "web");
    let docker_nodes: BTreeSet<String> = placed(&view).into_iter().map(|(n, _, _)| n).collect();
    assert_eq!(
        docker_nodes,
        BTreeSet::from(["node-a".to_string(), "node-b".to_string()]),
        "{view}"
    );
    let reason = view["pending_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("docker"), "{view}");
    // A runtime no node offers: pending, saying so.
    let vm = write_manifest(
        &lab,
        "vm.toml",
        "[app]\nname = \"vm\"\n\n[runtime]\nkind = \"firecracker\"\nrootfs = \"rootfs.ext4\"\n",
    );
    lab.tcli(&[
        "deploy",
        "-q",
        "--no-wait",
        "-f",
        &vm,
        "--artifact",
        wasm.to_str().unwrap(),
        "--appsrv",
        &appsrv,
    ]);
    let view = app_view(&lab, "vm");
    assert_eq!(view["status"], "pending", "{view}");
    assert!(
        view["pending_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("firecracker"),
        "{view}"
    );
    lab.tcli(&["rm", "web"]);
    lab.tcli(&["rm", "vm"]);

    // From outside the mesh (the coordinator's host has no TUN), through node c's ingress.
    let ingress = format!("http://{}:8081/app/hello/", nodes[2].host.underlay_addr());
    let (code, body) = curl(&lab.coord_host, &[&ingress]);
    assert_eq!((code, body.as_str()), (200, GREETING));

    // Steady load through the ingress while node a's machine dies.
    let load_host = lab.coord_host.clone();
    let url = ingress.clone();
    let load = std::thread::spawn(move || {
        let script = format!(
            "end=$((SECONDS+14)); while [ $SECONDS -lt $end ]; do \
             t=$(date +%s%3N); c=$(curl -s -o /dev/null -m 3 -w '%{{http_code}}' {url}); \
             echo \"$t $c\"; sleep 0.05; done"
        );
        load_host
            .exec_timeout("bash", &["-c", &script], Duration::from_secs(60))
            .unwrap()
    });
    std::thread::sleep(Duration::from_secs(3));
    let killed_at = now_ms();
    nodes[0].kill_machine();
    let out = load.join().unwrap();
    let lines = String::from_utf8_lossy(&out.stdout).into_owned();
    let samples: Vec<(u128, String)> = lines
        .lines()
        .filter_map(|l| {
            let (t, c) = l.split_once(' ')?;
            Some((t.parse().ok()?, c.to_string()))
        })
        .collect();
    let total = samples.len();
    let failed_after_first_second = samples
        .iter()
        .filter(|(t, c)| *t > killed_at + 1000 && c != "200")
        .count();
    println!(
        "ingress under load: {total} requests, {failed_after_first_second} failed after the first second of node loss"
    );
    assert!(total > 20, "the load loop ran: {lines}");
    assert_eq!(failed_after_first_second, 0, "{lines}");

    // The lost node's replica moves to c within grace + 10 s of the node going offline.
    eventually(
        "hello re-placed off node-a",
        GRACE + Duration::from_secs(15),
        || {
            running_on(&app_view(&lab, "hello"))
                == BTreeSet::from(["node-b".to_string(), "node-c".to_string()])
        },
    );
    println!(
        "re-placed and serving {} ms after the kill",
        now_ms() - killed_at
    );

    // Node a comes back with its state: it stops the replica it no longer owns.
    nodes[0] = lab.start_node(&hosts[0], names[0], &token, &data(0), &opts(0));
    eventually(
        "node-a drops the app it no longer owns",
        Duration::from_secs(20),
        || !nodes[0].app_names().contains(&"hello".to_string()),
    );
    let running_copies = nodes
        .iter()
        .filter(|n| n.app_names().contains(&"hello".to_string()))
        .count();
    assert_eq!(running_copies, 2, "exactly the desired replicas run");

    // The coordinator crashes and comes back: apps and assignments intact, nodes resume their
    // watch (a scale-up reaches all three).
    let before = app_view(&lab, "hello");
    lab.crash_and_restart_coordinator();
    let after = app_view(&lab, "hello");
    assert_eq!(after["version"], before["version"]);
    assert_eq!(placed(&after), placed(&before), "{after}");
    let hello3 = write_manifest(
        &lab,
        "hello3.toml",
        &format!(
            "[app]\nname = \"hello\"\nreplicas = 3\n\n[runtime]\nkind = \"wasm\"\ncomponent = \"{}\"\n",
            wasm.display()
        ),
    );
    lab.tcli(&["deploy", "-q", "-f", &hello3, "--appsrv", &appsrv]);
    let view = app_view(&lab, "hello");
    assert_eq!(running_on(&view).len(), 3, "{view}");
    let (code, body) = curl(&lab.coord_host, &[&ingress]);
    assert_eq!((code, body.as_str()), (200, GREETING));
}
