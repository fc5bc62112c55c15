//! Unit tests of `node.toml` reading: defaults, every accepted form, and that each refusal points
//! at the right line and column.

use super::spec::*;
use std::path::{Path, PathBuf};

fn ok(text: &str) -> NodeSpec {
    parse(text, "node.toml", Path::new("/srv/node")).unwrap()
}

fn err(text: &str) -> SpecError {
    parse(text, "node.toml", Path::new("/srv/node")).unwrap_err()
}

#[test]
fn an_empty_file_is_the_default_node() {
    let s = ok("");
    assert_eq!(s.restart, RestartPolicy::OnFailure { max_retries: None });
    assert_eq!(s.container, "tbf-sup");
    assert_eq!(s.state, StateMount::Volume("tbf-state".into()));
    assert_eq!(s.image, "tabbify-supervisor");
    assert!(!s.docker && !s.firecracker);
    assert_eq!(s.coordinator, None);
    assert_eq!(s.cpus, None);
}

#[test]
fn every_section_is_read() {
    let s = ok(r#"
[backend]
kind = "docker"
restart = "on-failure:3"
container = "edge-1"
volume = "/srv/tabbify-state"
[capabilities]
docker = true
firecracker = true
[mesh]
coordinator = "https://coord.example:8888/"
name = "edge-fra-1"
join_token_file = "secrets/join"
tags = ["eu-central", "eu-central", "ssd"]
[resources]
cpus = 2
memory_mb = 2048
"#);
    assert_eq!(
        s.restart,
        RestartPolicy::OnFailure {
            max_retries: Some(3)
        }
    );
    assert_eq!(s.container, "edge-1");
    assert_eq!(s.state, StateMount::HostDir("/srv/tabbify-state".into()));
    assert_eq!(s.image, "tabbify-supervisor:fc");
    assert!(s.docker && s.firecracker);
    assert_eq!(s.coordinator.as_deref(), Some("https://coord.example:8888"));
    assert_eq!(s.name.as_deref(), Some("edge-fra-1"));
    assert_eq!(
        s.join_token,
        Some(JoinToken::File(PathBuf::from("/srv/node/secrets/join")))
    );
    let tags: Vec<&str> = s.tags.iter().map(|t| t.as_str()).collect();
    assert_eq!(tags, ["eu-central", "ssd"]);
    assert_eq!(s.cpus, Some(2.0));
    assert_eq!(s.memory_mb, Some(2048));
}

#[test]
fn unknown_keys_point_at_the_key() {
    let e = err("[backend]\nrestart = \"always\"\nrestrat = \"no\"\n");
    assert_eq!((e.line, e.column), (3, 1), "{e}");
    assert!(e.message.contains("unknown field `restrat`"), "{e}");
    assert!(
        e.message.contains("restart"),
        "lists the accepted keys: {e}"
    );
    let e = err("[backends]\n");
    assert_eq!((e.line, e.column), (1, 2), "{e}");
}

#[test]
fn bad_values_point_at_the_value() {
    let e = err("[backend]\nrestart = \"sometimes\"\n");
    assert_eq!((e.line, e.column), (2, 11), "{e}");
    assert!(e.message.contains("\"on-failure:N\""), "{e}");
    assert!(e.snippet.ends_with("^^^^^^^^^^^"), "{}", e.snippet);

    let e = err("[resources]\ncpus = 0\n");
    assert_eq!((e.line, e.column), (2, 8), "{e}");
    let e = err("[resources]\ncpus = \"two\"\n");
    assert!(e.message.contains("must be a number"), "{e}");
    let e = err("[resources]\nmemory_mb = 16\n");
    assert!(e.message.contains("between 64 and"), "{e}");
    let e = err("[resources]\nmemory_mb = 1.5\n");
    assert_eq!(e.line, 2, "{e}");

    let e = err("[mesh]\ncoordinator = \"coord:8888\"\n");
    assert!(e.message.contains("not an http:// or https:// URL"), "{e}");
    let e = err("[mesh]\ntags = [\"ok\", \"docker\"]\n");
    assert_eq!((e.line, e.column), (2, 15), "{e}");
    assert!(e.message.contains("runtime tag"), "{e}");
    let e = err("[backend]\ncontainer = \"-bad\"\n");
    assert!(e.message.contains("not a valid Docker name"), "{e}");
    let e = err("[backend]\nkind = \"firecracker\"\n");
    assert!(e.message.contains("only backend is \"docker\""), "{e}");
}

#[test]
fn conflicting_settings_point_at_the_second_one() {
    let e = err("[backend]\nnetwork = \"tbf\"\n[capabilities]\ndocker = true\n");
    assert_eq!((e.line, e.column), (2, 11), "{e}");
    assert!(e.message.contains("host network"), "{e}");
    let e = err("[mesh]\njoin_token = \"tbfj_x\"\njoin_token_file = \"t\"\n");
    assert_eq!((e.line, e.column), (3, 19), "{e}");
}

#[test]
fn syntax_errors_have_a_position_too() {
    let e = err("[backend]\nrestart = on-failure\n");
    assert_eq!(e.line, 2, "{e}");
    let text = e.to_string();
    assert!(text.starts_with("node.toml:2:"), "{text}");
}

#[test]
fn columns_count_characters_not_bytes() {
    let e = err("[mesh]\nname = \"nœud-1\"\n");
    assert_eq!((e.line, e.column), (2, 8), "{e}");
}
