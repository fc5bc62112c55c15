//! `tcli node up --dry-run` against golden files: the sample node.toml files render the exact
//! `docker run` (one argument per line, shell-quoted), and each bad file gets the error an
//! operator would want — file, line, column, the line itself with a caret, and what is accepted.
//! `UPDATE_GOLDEN=1` rewrites the golden files from the current output.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

const TCLI: &str = env!("CARGO_BIN_EXE_tcli");

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Runs `tcli node up -f NAME --dry-run` in the golden directory (so paths in messages are
/// relative and stable); returns (success, stdout, stderr).
fn dry_run(name: &str) -> (bool, String, String) {
    let out = Command::new(TCLI)
        .current_dir(golden_dir())
        .args(["node", "up", "-f", name, "--dry-run"])
        .env_remove("TABBIFY_MESH_COORDINATOR")
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn check_golden(file: &str, actual: &str) {
    let path = golden_dir().join(file);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
    assert_eq!(
        actual, expected,
        "{file} differs from the output (UPDATE_GOLDEN=1 to accept it)"
    );
}

#[test]
fn dry_run_prints_the_exact_docker_run() {
    for (toml, golden) in [
        ("node.toml", "node.dry-run.txt"),
        ("node-fc.toml", "node-fc.dry-run.txt"),
    ] {
        let (ok, stdout, stderr) = dry_run(toml);
        assert!(ok, "{toml}: {stderr}");
        assert_eq!(stderr, "", "a dry run says nothing else");
        check_golden(golden, &stdout);
    }
}

#[test]
fn the_printed_command_is_one_shell_command() {
    // The output is valid shell: `sh -n` parses it, and `set --` recovers the arguments exactly
    // (quoting included) without running docker.
    let (ok, stdout, _) = dry_run("node-fc.toml");
    assert!(ok);
    let script = format!(
        "set -- {}\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done",
        stdout.trim_end().trim_start_matches("docker run")
    );
    let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let args = String::from_utf8(out.stdout).unwrap();
    let args: Vec<&str> = args.lines().collect();
    assert!(
        args.contains(&"--volume=/srv/tabbify state:/var/lib/tabbify"),
        "{args:?}"
    );
    assert!(
        args.contains(&"--env=TABBIFY_JOIN_TOKEN=tbfj_abc'def"),
        "{args:?}"
    );
    assert!(args.contains(&"--device=/dev/kvm"), "{args:?}");
    assert_eq!(args.last(), Some(&"tabbify-supervisor:fc"));
}

#[test]
fn bad_node_toml_files_get_errors_worth_reading() {
    let bad: Vec<String> = std::fs::read_dir(golden_dir())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("bad-") && n.ends_with(".toml"))
        .collect();
    assert!(bad.len() >= 8, "{bad:?}");
    for name in bad {
        let (ok, stdout, stderr) = dry_run(&name);
        assert!(!ok, "{name} was accepted");
        assert_eq!(stdout, "", "{name}: nothing is printed on stdout");
        assert!(
            stderr.starts_with(&format!("tcli: {name}:")),
            "{name}: the error names the file, line and column: {stderr}"
        );
        check_golden(&name.replace(".toml", ".err"), &stderr);
    }
}

#[test]
fn a_missing_file_is_named() {
    let (ok, _, stderr) = dry_run("nope.toml");
    assert!(!ok);
    assert!(
        stderr.starts_with("tcli: cannot read nope.toml:"),
        "{stderr}"
    );
}
