use super::*;
use crate::app::{MAX_REPLICAS, RestartPolicy};

const FULL: &str = r#"
[app]
name = "hello"
replicas = 2

[runtime]
kind = "wasm"
component = "target/wasm/hello-wasm.wasm"

[http]
port = 8081

[resources]
memory_mb = 64
cpus = 0.5

[env]
GREETING = "hi"
_X1 = ""

[restart]
policy = "always"
backoff_initial_ms = 200
backoff_max_ms = 5000
backoff_multiplier = 1.5
reset_after_ms = 30000
max_restarts = 7
"#;

fn parse(text: &str) -> Result<Manifest, ManifestError> {
    Manifest::from_toml_str(text)
}

fn err(text: &str) -> ManifestError {
    parse(text).expect_err("manifest should be rejected")
}

const WASM_HEAD: &str =
    "[app]\nname = \"hello\"\n[runtime]\nkind = \"wasm\"\ncomponent = \"a.wasm\"\n";

#[test]
fn full_manifest_reads_every_field() {
    let m = parse(FULL).unwrap();
    assert_eq!(m.app.name.as_str(), "hello");
    assert_eq!(m.app.replicas, 2);
    assert_eq!(
        m.runtime,
        RuntimeSpec::Wasm(WasmRuntime {
            component: Some("target/wasm/hello-wasm.wasm".into()),
            artifact: None
        })
    );
    assert_eq!(m.http.port, 8081);
    assert_eq!(m.resources.memory_mb, 64);
    assert_eq!(m.memory_bytes(), 64 * 1024 * 1024);
    assert!((m.resources.cpus - 0.5).abs() < f64::EPSILON);
    assert_eq!(m.env.get("GREETING").map(String::as_str), Some("hi"));
    assert_eq!(m.env.len(), 2);
    assert_eq!(m.restart.policy, RestartPolicy::Always);
    assert_eq!(m.restart.backoff_initial_ms, 200);
    assert_eq!(m.restart.backoff_max_ms, 5000);
    assert_eq!(m.restart.reset_after_ms, 30000);
    assert_eq!(m.restart.max_restarts, Some(7));
    assert_eq!(m.required_tag().as_str(), "wasm");
}

#[test]
fn minimal_manifest_gets_defaults() {
    let m = parse(WASM_HEAD).unwrap();
    assert_eq!(m.app.replicas, 1);
    assert_eq!(m.http.port, DEFAULT_HTTP_PORT);
    assert_eq!(m.resources.memory_mb, DEFAULT_MEMORY_MB);
    assert_eq!(m.restart, RestartSpec::default());
    assert_eq!(m.restart.policy, RestartPolicy::OnFailure);
    assert!(m.env.is_empty());
}

#[test]
fn unknown_key_is_named_with_line_and_column() {
    let text = "[app]\nname = \"hello\"\ncolour = \"red\"\n[runtime]\nkind = \"wasm\"\ncomponent = \"a.wasm\"\n";
    let e = err(text);
    let msg = e.to_string();
    assert!(msg.contains("`colour`"), "{msg}");
    assert!(msg.contains("line 3, column 1"), "{msg}");
    assert!(msg.contains("[app]"), "{msg}");
    assert_eq!(e.position(), Some(Position { line: 3, column: 1 }));
}

#[test]
fn unknown_table_and_nested_key_are_named() {
    let e = err(&format!("{WASM_HEAD}[scaling]\nmin = 1\n"));
    assert!(e.to_string().contains("`scaling`"), "{e}");
    assert_eq!(e.position().map(|p| p.line), Some(6));

    let e = err(&format!("{WASM_HEAD}[http]\nport = 80\n  hots = \"x\"\n"));
    let msg = e.to_string();
    assert!(
        msg.contains("`hots`") && msg.contains("line 8, column 3"),
        "{msg}"
    );
    assert!(msg.contains("(in [http])"), "{msg}");
}

#[test]
fn missing_fields_are_named() {
    let e = err("[app]\nreplicas = 1\n[runtime]\nkind = \"wasm\"\ncomponent = \"a.wasm\"\n");
    assert!(e.to_string().contains("missing field `name`"), "{e}");
    assert!(e.to_string().contains("[app]"), "{e}");

    let e = err("[app]\nname = \"x\"\n");
    assert!(e.to_string().contains("missing field `runtime`"), "{e}");

    let e = err("[app]\nname = \"x\"\n[runtime]\ncomponent = \"a.wasm\"\n");
    assert!(e.to_string().contains("missing field `kind`"), "{e}");

    let e = err("[app]\nname = \"x\"\n[runtime]\nkind = \"wasm\"\n");
    assert!(
        matches!(&e, ManifestError::Invalid { field, .. } if field == "runtime.component"),
        "{e}"
    );
    assert!(e.to_string().contains("line 4, column 8"), "{e}");

    let e = err("[app]\nname = \"x\"\n[runtime]\nkind = \"docker\"\n");
    assert!(
        matches!(&e, ManifestError::Invalid { field, .. } if field == "runtime.image"),
        "{e}"
    );
}

#[test]
fn syntax_errors_have_a_position() {
    let e = err("[app]\nname = \"x\n");
    assert!(matches!(e, ManifestError::Toml { .. }), "{e}");
    assert_eq!(e.position().map(|p| p.line), Some(2));
    let e = err("[app]\nname = \"x\"\n[runtime]\nkind = \"kvm\"\ncomponent = \"a\"\n");
    assert!(e.to_string().contains("kvm"), "{e}");
    assert_eq!(e.position().map(|p| p.line), Some(4));
}

#[test]
fn field_of_another_runtime_kind_is_rejected() {
    let e = err(&format!("{WASM_HEAD}image = \"nginx\"\n"));
    assert!(
        matches!(&e, ManifestError::Invalid { field, .. } if field == "runtime.image"),
        "{e}"
    );
    assert!(e.to_string().contains("kind = \"wasm\""), "{e}");
    assert_eq!(e.position().map(|p| p.line), Some(6));
}

#[test]
fn wasm_needs_exactly_one_source() {
    let hex = "0a".repeat(32);
    let both = format!("{WASM_HEAD}artifact = \"sha256:{hex}\"\n");
    assert!(err(&both).to_string().contains("both given"));
    let artifact_only =
        format!("[app]\nname = \"x\"\n[runtime]\nkind = \"wasm\"\nartifact = \"sha256:{hex}\"\n");
    let m = parse(&artifact_only).unwrap();
    let RuntimeSpec::Wasm(w) = &m.runtime else {
        panic!("wasm expected")
    };
    assert_eq!(w.artifact.as_ref().map(|d| d.hex().to_string()), Some(hex));
    let bad = "[app]\nname = \"x\"\n[runtime]\nkind = \"wasm\"\nartifact = \"sha256:xyz\"\n";
    let e = err(bad);
    assert!(
        matches!(&e, ManifestError::Invalid { field, .. } if field == "runtime.artifact"),
        "{e}"
    );
    let empty = "[app]\nname = \"x\"\n[runtime]\nkind = \"wasm\"\ncomponent = \"  \"\n";
    assert!(err(empty).to_string().contains("must not be empty"));
}

#[test]
fn docker_and_firecracker_manifests() {
    let docker = "[app]\nname = \"web\"\n[runtime]\nkind = \"docker\"\nimage = \"nginx:1.27\"\ncommand = [\"nginx\", \"-g\", \"daemon off;\"]\nnetwork = \"host\"\n";
    let m = parse(docker).unwrap();
    assert_eq!(m.required_tag().as_str(), "docker");
    assert_eq!(
        m.runtime,
        RuntimeSpec::Docker(DockerRuntime {
            image: "nginx:1.27".into(),
            command: vec!["nginx".into(), "-g".into(), "daemon off;".into()],
            network: DockerNetwork::Host,
        })
    );
    let bad_net = docker.replace("\"host\"", "\"overlay\"");
    assert!(err(&bad_net).to_string().contains("overlay"));

    let fc = "[app]\nname = \"vm\"\n[runtime]\nkind = \"firecracker\"\nrootfs = \"root.ext4\"\n";
    let m = parse(fc).unwrap();
    assert_eq!(m.runtime.kind(), RuntimeKind::Firecracker);
    let fc_both = format!("{fc}image = \"alpine\"\n");
    assert!(err(&fc_both).to_string().contains("exactly one"));
    let fc_component = format!("{fc}component = \"a.wasm\"\n");
    assert!(err(&fc_component).to_string().contains("runtime.component"));
}

#[test]
fn values_out_of_range_are_rejected_with_field_and_position() {
    let cases: &[(&str, &str)] = &[
        ("[http]\nport = 0\n", "http.port"),
        ("[resources]\nmemory_mb = 4\n", "resources.memory_mb"),
        ("[resources]\nmemory_mb = 100000\n", "resources.memory_mb"),
        ("[resources]\ncpus = 0.0\n", "resources.cpus"),
        ("[resources]\ncpus = nan\n", "resources.cpus"),
        ("[env]\n1BAD = \"x\"\n", "env.1BAD"),
        (
            "[restart]\nbackoff_initial_ms = 5\n",
            "restart.backoff_initial_ms",
        ),
        (
            "[restart]\nbackoff_initial_ms = 9000\nbackoff_max_ms = 1000\n",
            "restart.backoff_initial_ms",
        ),
        (
            "[restart]\nbackoff_multiplier = 0.5\n",
            "restart.backoff_multiplier",
        ),
    ];
    for (tail, field) in cases {
        let e = err(&format!("{WASM_HEAD}{tail}"));
        match &e {
            ManifestError::Invalid {
                field: f, position, ..
            } => {
                assert_eq!(f, field, "{tail}");
                assert_eq!(position.map(|p| p.line), Some(7), "{tail}: {e}");
            }
            other => panic!("{tail}: expected Invalid, got {other}"),
        }
    }
    let replicas = format!("[app]\nname = \"x\"\nreplicas = {}\n", MAX_REPLICAS + 1);
    let e = err(&format!(
        "{replicas}[runtime]\nkind = \"wasm\"\ncomponent = \"a\"\n"
    ));
    assert!(e.to_string().contains("app.replicas"), "{e}");
}

#[test]
fn type_errors_come_from_toml_with_position() {
    let e = err(&format!("{WASM_HEAD}[http]\nport = 70000\n"));
    assert!(matches!(e, ManifestError::Toml { .. }), "{e}");
    assert_eq!(e.position().map(|p| p.line), Some(7));
    let e = err(&format!("{WASM_HEAD}[env]\nN = 1\n"));
    assert!(e.to_string().contains("line 7"), "{e}");
}

#[test]
fn bad_app_name_is_explained() {
    let e = err("[app]\nname = \"Hello_World\"\n[runtime]\nkind = \"wasm\"\ncomponent = \"a\"\n");
    let msg = e.to_string();
    assert!(
        msg.contains("`app.name`") && msg.contains("line 2, column 8"),
        "{msg}"
    );
    assert!(msg.contains("lowercase"), "{msg}");
}

#[test]
fn json_round_trip_ignores_unknown_fields() {
    let m = parse(FULL).unwrap();
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(json["runtime"]["kind"], "wasm");
    assert_eq!(json["restart"]["policy"], "always");
    assert_eq!(serde_json::from_value::<Manifest>(json.clone()).unwrap(), m);
    let mut newer = json;
    newer["runtime"]["future_knob"] = true.into();
    newer["added_later"] = serde_json::json!({"x": 1});
    assert_eq!(serde_json::from_value::<Manifest>(newer).unwrap(), m);
}

#[test]
fn positions_count_lines_and_characters() {
    let text = "ab\nçd\n";
    assert_eq!(
        Position::of_offset(text, 0),
        Position { line: 1, column: 1 }
    );
    assert_eq!(
        Position::of_offset(text, 3),
        Position { line: 2, column: 1 }
    );
    assert_eq!(
        Position::of_offset(text, 5),
        Position { line: 2, column: 2 }
    );
    assert_eq!(Position::of_offset(text, 999).line, 3);
    assert_eq!(
        table_at("[a]\nx=1\n[[b.c]]\ny=2\n", 16).as_deref(),
        Some("b.c")
    );
    assert_eq!(table_at("x=1\n[a]\n", 0), None);
}

#[test]
fn crashloop_threshold_is_set_per_app_and_checked() {
    assert_eq!(parse(WASM_HEAD).unwrap().restart.crashloop_after, 3);
    let m = parse(&format!("{WASM_HEAD}[restart]\ncrashloop_after = 5\n")).unwrap();
    assert_eq!(m.restart.crashloop_after, 5);
    let e = err(&format!("{WASM_HEAD}[restart]\ncrashloop_after = 0\n"));
    let text = e.to_string();
    assert!(
        text.contains("restart.crashloop_after") && text.contains("between 1 and 1000"),
        "{text}"
    );
    assert!(text.contains("line 7"), "{text}");
    // Records written before the field existed still read, with the default.
    let json = serde_json::to_value(m.restart).unwrap();
    let mut old = json.as_object().unwrap().clone();
    old.remove("crashloop_after");
    let back: crate::app::RestartSpec = serde_json::from_value(old.into()).unwrap();
    assert_eq!(back.crashloop_after, 3);
}

#[test]
fn egress_is_a_microvm_setting_and_off_by_default() {
    let vm = "[app]\nname = \"vm\"\n[runtime]\nkind = \"firecracker\"\nimage = \"hello\"\n";
    let RuntimeSpec::Firecracker(fc) = parse(vm).unwrap().runtime else {
        panic!("a microVM runtime");
    };
    assert!(!fc.egress);
    let RuntimeSpec::Firecracker(fc) = parse(&format!("{vm}egress = true\n")).unwrap().runtime
    else {
        panic!("a microVM runtime");
    };
    assert!(fc.egress);
    let e = err(&format!("{WASM_HEAD}egress = true\n")).to_string();
    assert!(
        e.contains("runtime.egress") && e.contains("does not apply"),
        "{e}"
    );
}
