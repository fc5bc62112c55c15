//! `tabbify-fetch` against a real HTTP release server: installs a release and the guest kernel
//! and makes it current; a second run downloads nothing; a sha256 mismatch is refused before
//! anything moves.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;

#[test]
fn fetch_installs_verifies_and_refuses_a_tampered_release() {
    let server = ReleaseServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("state");
    let data_s = data.to_str().unwrap();
    let supervisor = supervisor_build("a");
    let runner_like = b"#!/bin/sh\necho runner\n".to_vec();
    let kernel: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let a = Release::new("0.1.0+a")
        .file("tabbify-supervisor", supervisor.clone())
        .file("tabbify-runner", runner_like.clone());
    server.publish("0.1.0+a", &[&a], Some(&kernel));

    // First boot: everything is downloaded, verified and made current.
    let out = run(FETCH, &["--release-url", &server.url, "--data-dir", data_s]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(current_target(&data).as_deref(), Some("releases/0.1.0+a"));
    let installed = data.join("current/tabbify-supervisor");
    assert_eq!(std::fs::read(&installed).unwrap(), supervisor);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&installed).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
    }
    assert_eq!(std::fs::read(data.join("kernels/vmlinux")).unwrap(), kernel);
    // The installed supervisor is a working program.
    let version = std::process::Command::new(&installed)
        .arg("--version")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&version.stdout).starts_with("tabbify-supervisor "),
        "{version:?}"
    );
    assert_eq!(server.hits("0.1.0+a/tabbify-supervisor"), 1);

    // Again: verified in place, nothing downloaded.
    let out = run(FETCH, &["--release-url", &server.url, "--data-dir", data_s]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("already installed and verified"),
        "{}",
        text(&out)
    );
    assert_eq!(server.hits("0.1.0+a/tabbify-supervisor"), 1);
    assert_eq!(server.hits("kernels/vmlinux-test"), 1);

    // First-boot mode with a release current: not even the manifest is read.
    let manifest_reads = server.hits("manifest.json");
    let out = run(
        FETCH,
        &[
            "--release-url",
            &server.url,
            "--data-dir",
            data_s,
            "--if-missing",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(server.hits("manifest.json"), manifest_reads);

    // A release whose download does not match its manifest entry is refused; nothing moves.
    let mut evil = supervisor_build("b");
    evil.truncate(evil.len() - 1);
    evil.push(b'!');
    let b = Release::new("0.2.0")
        .file("tabbify-runner", runner_like.clone())
        .tampered_file("tabbify-supervisor", supervisor_build("b"), evil);
    server.publish("0.2.0", &[&a, &b], Some(&kernel));
    let out = run(FETCH, &["--release-url", &server.url, "--data-dir", data_s]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sha256 mismatch for tabbify-supervisor"),
        "{}",
        text(&out)
    );
    assert!(!data.join("releases/0.2.0").exists());
    assert_eq!(current_target(&data).as_deref(), Some("releases/0.1.0+a"));
    let staging: Vec<_> = std::fs::read_dir(data.join(".staging"))
        .unwrap()
        .filter_map(Result::ok)
        .collect();
    assert!(staging.is_empty(), "staging left behind: {staging:?}");

    // A manifest that points outside the release URL is refused before any download.
    server.put(
        "manifest.json",
        br#"{"schema":1,"latest":"9","releases":[{"version":"9","files":[
            {"name":"tabbify-supervisor","path":"../../etc/passwd","size":1,
             "sha256":"0000000000000000000000000000000000000000000000000000000000000000"}]}]}"#
            .to_vec(),
    );
    let out = run(FETCH, &["--release-url", &server.url, "--data-dir", data_s]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("\"../../etc/passwd\" is not a relative path"),
        "{}",
        text(&out)
    );
    assert_eq!(current_target(&data).as_deref(), Some("releases/0.1.0+a"));

    // An unreachable server is a clear error too.
    let out = run(
        FETCH,
        &[
            "--release-url",
            "http://127.0.0.1:9/nothing",
            "--data-dir",
            data_s,
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot fetch http://127.0.0.1:9/nothing/manifest.json"),
        "{}",
        text(&out)
    );
}
