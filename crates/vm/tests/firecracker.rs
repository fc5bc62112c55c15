//! The Firecracker backend without the real binary (it cannot be installed here):
//!
//! * every request body we send is validated against Firecracker's published OpenAPI schema
//!   (`shared/vendor/firecracker-api.yaml`, Swagger 2.0): path and method exist, required fields,
//!   types, enum values, numeric bounds, and no property the schema does not define (Firecracker
//!   rejects unknown fields);
//! * the whole `Firecracker::start` → `stop` exchange runs against a fake `firecracker` process: a
//!   unix-socket server (this test binary, started through a small wrapper script) that records
//!   every request, answers like Firecracker, and plays the guest's console.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use serde_norway::Value as Yaml;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tabbify_testkit::{Capability, require};
use tabbify_vm::console::GuestExit;
use tabbify_vm::vmm::firecracker_api::{self, ActionType, ApiRequest};
use tabbify_vm::{Firecracker, TapConfig, VmError, VmSpec, Vmm};

// ---------------------------------------------------------------------------------------------
// The schema check
// ---------------------------------------------------------------------------------------------

fn schema_doc() -> Yaml {
    let path = tabbify_testkit::workspace_root().join("../shared/vendor/firecracker-api.yaml");
    let path = if path.is_file() {
        path
    } else {
        PathBuf::from("/work/shared/vendor/firecracker-api.yaml")
    };
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap()
}

fn get<'a>(v: &'a Yaml, key: &str) -> Option<&'a Yaml> {
    v.as_mapping()?.get(Yaml::String(key.into()))
}

/// Follows `$ref: "#/definitions/X"`.
fn resolve<'a>(doc: &'a Yaml, schema: &'a Yaml) -> &'a Yaml {
    match get(schema, "$ref").and_then(Yaml::as_str) {
        Some(r) => {
            let name = r
                .strip_prefix("#/definitions/")
                .expect("local definition ref");
            let defs = get(doc, "definitions").expect("definitions");
            resolve(
                doc,
                get(defs, name).unwrap_or_else(|| panic!("no definition {name}")),
            )
        }
        None => schema,
    }
}

/// Every way `value` breaks `schema`, with a JSON path for each.
fn validate(doc: &Yaml, schema: &Yaml, value: &serde_json::Value, at: &str) -> Vec<String> {
    let schema = resolve(doc, schema);
    let mut errors = Vec::new();
    if let Some(allowed) = get(schema, "enum").and_then(Yaml::as_sequence) {
        let ok = allowed.iter().any(|a| match (a, value) {
            (Yaml::String(s), serde_json::Value::String(v)) => s == v,
            (Yaml::Number(n), serde_json::Value::Number(v)) => n.as_i64() == v.as_i64(),
            _ => false,
        });
        if !ok {
            errors.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    let ty = get(schema, "type")
        .and_then(Yaml::as_str)
        .unwrap_or("object");
    match ty {
        "object" => {
            let Some(obj) = value.as_object() else {
                return vec![format!("{at}: expected an object, got {value}")];
            };
            let props = get(schema, "properties").and_then(Yaml::as_mapping);
            for req in get(schema, "required")
                .and_then(Yaml::as_sequence)
                .into_iter()
                .flatten()
            {
                let name = req.as_str().unwrap();
                if !obj.contains_key(name) {
                    errors.push(format!("{at}: required property {name:?} is missing"));
                }
            }
            let additional = get(schema, "additionalProperties");
            for (k, v) in obj {
                match props.and_then(|p| p.get(Yaml::String(k.clone()))) {
                    Some(sub) => errors.extend(validate(doc, sub, v, &format!("{at}.{k}"))),
                    // Firecracker's server denies unknown fields unless the schema allows them.
                    None => match additional {
                        Some(Yaml::Bool(true)) => {}
                        Some(sub @ Yaml::Mapping(_)) => {
                            errors.extend(validate(doc, sub, v, &format!("{at}.{k}")));
                        }
                        _ => errors.push(format!("{at}: unknown property {k:?}")),
                    },
                }
            }
        }
        "string" if !value.is_string() => {
            errors.push(format!("{at}: expected a string, got {value}"))
        }
        "boolean" if !value.is_boolean() => {
            errors.push(format!("{at}: expected a boolean, got {value}"))
        }
        "integer" => match value.as_i64() {
            None => errors.push(format!("{at}: expected an integer, got {value}")),
            Some(n) => {
                if let Some(min) = get(schema, "minimum").and_then(Yaml::as_i64)
                    && n < min
                {
                    errors.push(format!("{at}: {n} is below the minimum {min}"));
                }
                if let Some(max) = get(schema, "maximum").and_then(Yaml::as_i64)
                    && n > max
                {
                    errors.push(format!("{at}: {n} is above the maximum {max}"));
                }
            }
        },
        "array" => match value.as_array() {
            None => errors.push(format!("{at}: expected an array, got {value}")),
            Some(items) => {
                if let Some(item_schema) = get(schema, "items") {
                    for (i, item) in items.iter().enumerate() {
                        errors.extend(validate(doc, item_schema, item, &format!("{at}[{i}]")));
                    }
                }
            }
        },
        _ => {}
    }
    errors
}

/// Matches a concrete path against a template like `/drives/{drive_id}`; returns the parameters.
fn match_template(template: &str, path: &str) -> Option<Vec<(String, String)>> {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    if t.len() != p.len() {
        return None;
    }
    let mut params = Vec::new();
    for (ts, ps) in t.iter().zip(&p) {
        if let Some(name) = ts.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            params.push((name.to_string(), ps.to_string()));
        } else if ts != ps {
            return None;
        }
    }
    Some(params)
}

/// Checks one request against the document: the operation exists, the body matches its schema,
/// and path parameters agree with the body's ids.
fn check_request(doc: &Yaml, req: &ApiRequest) -> Vec<String> {
    let paths = get(doc, "paths").and_then(Yaml::as_mapping).unwrap();
    let Some((template, item, params)) = paths.iter().find_map(|(k, v)| {
        let t = k.as_str()?;
        match_template(t, &req.path).map(|p| (t, v, p))
    }) else {
        return vec![format!(
            "{} {}: no such path in the API",
            req.method, req.path
        )];
    };
    let Some(op) = get(item, &req.method.to_lowercase()) else {
        return vec![format!("{} {template}: method not in the API", req.method)];
    };
    let body_param = get(op, "parameters")
        .and_then(Yaml::as_sequence)
        .and_then(|ps| {
            ps.iter()
                .find(|p| get(p, "in").and_then(Yaml::as_str) == Some("body"))
        });
    let Some(schema) = body_param.and_then(|p| get(p, "schema")) else {
        return vec![format!("{} {template}: the API takes no body", req.method)];
    };
    let mut errors = validate(
        doc,
        schema,
        &req.body,
        &format!("{} {}", req.method, req.path),
    );
    for (name, value) in params {
        if let Some(in_body) = req.body.get(&name)
            && in_body.as_str() != Some(value.as_str())
        {
            errors.push(format!(
                "{}: path {name}={value} but body says {in_body}",
                req.path
            ));
        }
    }
    errors
}

fn files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (k, r, i) = (
        dir.join("vmlinuz"),
        dir.join("rootfs.ext4"),
        dir.join("initrd.cpio"),
    );
    for p in [&k, &r, &i] {
        std::fs::write(p, b"placeholder").unwrap();
    }
    (k, r, i)
}

fn spec(dir: &Path, tap: Option<TapConfig>) -> VmSpec {
    let (kernel, rootfs, initrd) = files(dir);
    VmSpec {
        name: "fc-test".into(),
        kernel,
        initrd: Some(initrd),
        rootfs,
        rootfs_read_only: true,
        vcpus: 2,
        memory_mb: 256,
        tap,
        boot_args: Some("loglevel=4".into()),
        console_log: dir.join("console.log"),
        run_dir: dir.to_path_buf(),
    }
}

#[test]
fn every_request_body_we_send_matches_the_published_schema() {
    let doc = schema_doc();
    let dir = tempfile::tempdir().unwrap();
    let mut requests = firecracker_api::configuration_requests(&spec(
        dir.path(),
        Some(TapConfig::for_slot(5).unwrap()),
    ));
    requests.push(firecracker_api::action_request(ActionType::InstanceStart));
    assert_eq!(requests.len(), 5);
    for req in &requests {
        let errors = check_request(&doc, req);
        assert!(
            errors.is_empty(),
            "{} {} {}: {errors:#?}",
            req.method,
            req.path,
            req.body
        );
    }
    // Without a network or an initrd the bodies are different, and still valid.
    let minimal = VmSpec {
        initrd: None,
        ..spec(dir.path(), None)
    };
    for req in firecracker_api::configuration_requests(&minimal) {
        assert_eq!(check_request(&doc, &req), Vec::<String>::new(), "{req:?}");
    }
}

#[test]
fn the_schema_check_catches_what_firecracker_would_refuse() {
    let doc = schema_doc();
    let bad = |path: &str, body: serde_json::Value| ApiRequest {
        method: "PUT",
        path: path.into(),
        body,
    };
    let cases = [
        (
            bad("/machine-config", serde_json::json!({"vcpu_count": 2})),
            "mem_size_mib",
        ),
        (
            bad(
                "/machine-config",
                serde_json::json!({"vcpu_count": 0, "mem_size_mib": 1}),
            ),
            "below the minimum",
        ),
        (
            bad(
                "/machine-config",
                serde_json::json!({"vcpu_count": "2", "mem_size_mib": 1}),
            ),
            "expected an integer",
        ),
        (
            bad(
                "/boot-source",
                serde_json::json!({"kernel_image_path": "/k", "cmdline": "x"}),
            ),
            "unknown property",
        ),
        (
            bad("/actions", serde_json::json!({"action_type": "Reboot"})),
            "is not one of",
        ),
        (
            bad(
                "/drives/root",
                serde_json::json!({"drive_id": "other", "is_root_device": true}),
            ),
            "path drive_id=root",
        ),
        (bad("/no-such-thing", serde_json::json!({})), "no such path"),
    ];
    for (req, want) in cases {
        let errors = check_request(&doc, &req);
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{req:?}: wanted {want:?} in {errors:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The fake firecracker process
// ---------------------------------------------------------------------------------------------

/// Not a test: the body of the fake `firecracker` process that the wrapper script starts (with
/// `FAKE_FC_SOCKET` and friends set). It serves the API socket like Firecracker (204 for each
/// request, 400 with a `fault_message` for `FAKE_FC_FAIL`), records each request as a JSON line,
/// and after `InstanceStart` plays the guest console: init's boot lines, then the stop.
#[test]
#[ignore = "helper process for the Firecracker API tests, started by them"]
fn fake_firecracker_process() {
    use std::io::{BufRead, Read, Write};
    let Ok(socket) = std::env::var("FAKE_FC_SOCKET") else {
        return;
    };
    let record = std::env::var("FAKE_FC_RECORD").unwrap();
    let fail = std::env::var("FAKE_FC_FAIL").unwrap_or_default();
    std::fs::write(format!("{record}.pid"), std::process::id().to_string()).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&record)
        .unwrap();
    for conn in listener.incoming() {
        let mut conn = conn.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let (head, body) = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("Content-Length: ")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    break (head, buf[end + 4..end + 4 + len].to_vec());
                }
            }
            let n = conn.read(&mut chunk).unwrap();
            if n == 0 {
                break (String::new(), Vec::new());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        if head.is_empty() {
            continue; // a readiness probe that connected and left
        }
        let mut words = head.split_whitespace();
        let (method, path) = (
            words.next().unwrap().to_string(),
            words.next().unwrap().to_string(),
        );
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        writeln!(
            log,
            "{}",
            serde_json::json!({"method": method, "path": path, "body": body})
        )
        .unwrap();
        if path == fail {
            let msg = format!("{{\"fault_message\": \"fake refusal of {path}\"}}");
            write!(
                conn,
                "HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\n\r\n{msg}",
                msg.len()
            )
            .unwrap();
            continue;
        }
        write!(
            conn,
            "HTTP/1.1 204 No Content\r\nServer: Firecracker API\r\n\r\n"
        )
        .unwrap();
        if path == "/actions" && body["action_type"] == "InstanceStart" {
            break;
        }
    }
    println!("\ntabbify-init: booted");
    println!("tabbify-init: app-started pid=42");
    std::io::stdout().flush().unwrap();
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        if let Some(stop) = tabbify_vm_init::contract::StopRequest::parse(&line) {
            println!("tabbify-init: stopping grace_ms={}", stop.grace_ms);
            println!("tabbify-init: app-killed signal=15");
            std::io::stdout().flush().unwrap();
            std::process::exit(0);
        }
    }
    std::process::exit(1);
}

/// A `firecracker` stand-in: a script that runs [`fake_firecracker_process`] with the API socket
/// from `--api-sock`, recording into `record`, refusing `fail` (a path) when given.
fn fake_binary(dir: &Path, record: &Path, fail: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let script = dir.join("firecracker");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nsock=\nwhile [ $# -gt 0 ]; do\n  case \"$1\" in --api-sock) sock=\"$2\"; shift 2 ;; *) shift ;; esac\n\
             done\nFAKE_FC_SOCKET=\"$sock\" FAKE_FC_RECORD='{}' FAKE_FC_FAIL='{fail}' exec '{}' \
             --exact fake_firecracker_process --include-ignored --nocapture --test-threads 1\n",
            record.display(),
            exe.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn recorded(record: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn fake_pid(record: &Path) -> u32 {
    std::fs::read_to_string(format!("{}.pid", record.display()))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// What `spec(dir, tap slot)` must send, request by request: (method, path, body).
fn expected_exchange(
    dir: &Path,
    tap_slot: Option<u32>,
) -> Vec<(String, String, serde_json::Value)> {
    let d = dir.display();
    // Tap slot 11: 10.213.0.44/30, the host .45, the guest .46.
    let net = match tap_slot {
        Some(11) => " tabbify.ip=10.213.0.46/30 tabbify.gw=10.213.0.45",
        None => "",
        Some(other) => panic!("no hand-written values for tap slot {other}"),
    };
    let put = |path: &str, body: serde_json::Value| ("PUT".to_string(), path.to_string(), body);
    let mut want = vec![
        put(
            "/machine-config",
            serde_json::json!({"vcpu_count": 2, "mem_size_mib": 256, "smt": false}),
        ),
        put(
            "/boot-source",
            serde_json::json!({
                "kernel_image_path": format!("{d}/vmlinuz"),
                "initrd_path": format!("{d}/initrd.cpio"),
                "boot_args": format!(
                    "console=ttyS0 panic=-1 quiet root=/dev/vda rootfstype=ext4 ro \
                     init=/.tabbify/init tabbify.hostname=fc-test{net} reboot=k pci=off loglevel=4"
                ),
            }),
        ),
        put(
            "/drives/rootfs",
            serde_json::json!({
                "drive_id": "rootfs",
                "path_on_host": format!("{d}/rootfs.ext4"),
                "is_root_device": true,
                "is_read_only": true,
            }),
        ),
    ];
    if tap_slot.is_some() {
        want.push(put(
            "/network-interfaces/eth0",
            serde_json::json!({
                "iface_id": "eth0",
                "host_dev_name": "tbfvm11",
                "guest_mac": "02:54:42:00:00:0b",
            }),
        ));
    }
    want.push(put(
        "/actions",
        serde_json::json!({"action_type": "InstanceStart"}),
    ));
    want
}

/// Runs a full start/stop against the fake (with the tap of `tap_slot`, if any) and checks the
/// exchange.
async fn start_and_stop(dir: &Path, tap_slot: Option<u32>) {
    let record = dir.join("requests.jsonl");
    let fc = Firecracker {
        binary: fake_binary(dir, &record, ""),
        api_timeout: Duration::from_secs(20),
    };
    let spec = spec(dir, tap_slot.map(|slot| TapConfig::for_slot(slot).unwrap()));
    let vm = fc.start(&spec).await.unwrap();
    let socket = spec.run_dir.join("firecracker.sock");
    assert!(socket.exists(), "API socket missing while running");
    if let Some(t) = &spec.tap {
        assert!(
            tabbify_vm::tap::interface_exists(&t.name),
            "tap missing while running"
        );
    }

    // The exchange: our configuration, in order, then InstanceStart — nothing else. Written
    // out by hand from `spec()`, not rebuilt with the code under test.
    let got = recorded(&record);
    let got: Vec<(String, String, serde_json::Value)> = got
        .iter()
        .map(|g| {
            (
                g["method"].as_str().unwrap().to_string(),
                g["path"].as_str().unwrap().to_string(),
                g["body"].clone(),
            )
        })
        .collect();
    assert_eq!(got, expected_exchange(dir, tap_slot), "{got:#?}");
    let doc = schema_doc();
    for (_, path, body) in got {
        let req = ApiRequest {
            method: "PUT",
            path,
            body,
        };
        assert_eq!(check_request(&doc, &req), Vec::<String>::new());
    }

    // The console reaches the guest state; stop goes through the console too.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !vm.guest_state().booted {
        assert!(
            Instant::now() < deadline,
            "no boot lines: {}",
            vm.console_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = fake_pid(&record);
    let exit = vm.stop(Duration::from_millis(500)).await.unwrap();
    assert_eq!(exit.guest, Some(GuestExit::Killed(15)), "{exit:?}");
    assert!(!exit.forced);
    assert!(!socket.exists(), "API socket left behind");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "fake firecracker still running"
    );
    if let Some(t) = &spec.tap {
        assert!(
            !tabbify_vm::tap::interface_exists(&t.name),
            "tap left behind"
        );
    }
}

#[test]
fn the_backend_configures_starts_and_stops_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(start_and_stop(dir.path(), None));
}

#[test]
fn with_a_network_the_tap_is_created_named_in_the_api_and_removed() {
    require!(Capability::Root);
    require!(Capability::NetNs);
    let dir = tempfile::tempdir().unwrap();
    let lan = tabbify_testkit::netns::Lan::new("fcfake").unwrap();
    let host = lan.add_host("h").unwrap();
    let path = dir.path().to_path_buf();
    host.in_namespace(move || runtime().block_on(start_and_stop(&path, Some(11))))
        .unwrap();
}

#[test]
fn an_api_refusal_is_a_named_error_and_nothing_is_left_running() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("requests.jsonl");
    let fc = Firecracker {
        binary: fake_binary(dir.path(), &record, "/boot-source"),
        api_timeout: Duration::from_secs(20),
    };
    let spec = spec(dir.path(), None);
    let e = runtime().block_on(fc.start(&spec)).unwrap_err();
    match &e {
        VmError::FirecrackerApi {
            method,
            path,
            status,
            message,
        } => {
            assert_eq!(
                (method.as_str(), path.as_str(), *status),
                ("PUT", "/boot-source", 400)
            );
            assert_eq!(message, "fake refusal of /boot-source");
        }
        other => panic!("expected FirecrackerApi, got {other}"),
    }
    // It stopped at the refusal: no drive, no start.
    let paths: Vec<String> = recorded(&record)
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(paths, ["/machine-config", "/boot-source"]);
    let pid = fake_pid(&record);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "fake firecracker still running"
    );
    assert!(!spec.run_dir.join("firecracker.sock").exists());
}

#[test]
fn a_firecracker_that_dies_at_once_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let fc = Firecracker {
        binary: "/bin/false".into(),
        api_timeout: Duration::from_secs(20),
    };
    let e = runtime()
        .block_on(fc.start(&spec(dir.path(), None)))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("exited with exit status: 1 before its API socket appeared"),
        "{e}"
    );
}
