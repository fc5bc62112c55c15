//! Artifacts that are not wasi:http components: the runner refuses them at load with a message
//! that says what is wrong, in the app log and on stderr, and exits non-zero leaving no socket.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::*;

fn assert_refused(artifact_bytes: &[u8], expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    let artifact = dir.path().join("app.wasm");
    std::fs::write(&artifact, artifact_bytes).unwrap();
    let app = TestApp::new(&artifact, 64, 1_000);
    let (status, stderr) = app.run_to_exit();
    assert!(!status.success(), "runner accepted it; stderr: {stderr}");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(expected),
        "stderr lacks {expected:?}: {stderr}"
    );
    let log = app.log();
    assert!(
        log.contains("fatal: cannot load the app") && log.contains(expected),
        "log: {log}"
    );
    assert!(!app.spec.socket.exists(), "socket left behind");
    assert!(
        !app.path().join("runner.pid").exists(),
        "pid file left behind"
    );
}

#[test]
fn random_bytes_are_not_wasm() {
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert_refused(&noise, "is not a WebAssembly binary");
}

#[test]
fn a_core_module_is_not_a_component() {
    // The smallest valid core module: magic, version 1, no sections.
    assert_refused(
        b"\0asm\x01\0\0\0",
        "is a core WebAssembly module, not a component",
    );
}

#[test]
fn a_truncated_component_does_not_compile() {
    let hello = std::fs::read(example_wasm("hello-wasm")).unwrap();
    assert_refused(&hello[..hello.len() / 2], "does not compile");
}

#[test]
fn a_missing_artifact_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::new(&dir.path().join("nowhere.wasm"), 64, 1_000);
    let (status, stderr) = app.run_to_exit();
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains("cannot read artifact") && stderr.contains("nowhere.wasm"),
        "{stderr}"
    );
}

#[test]
fn a_missing_spec_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(RUNNER)
        .arg("--app-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("spec.json"));
}
