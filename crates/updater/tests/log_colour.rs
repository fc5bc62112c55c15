//! Log lines carry colour codes only on a terminal: the journal (systemd hands the daemons a
//! socket or a file) and `docker logs` get plain text, and `NO_COLOR` turns colour off on a
//! terminal too. Checked on the updater's tabbify-fetch and on the supervisor, each run once
//! with stderr on a pipe and twice on a pseudo-terminal (`script`, from util-linux).

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::process::Command;

fn has_colour(output: &[u8]) -> bool {
    output.windows(2).any(|w| w == b"\x1b[")
}

fn shell_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// What `argv` writes with stdout and stderr on a pseudo-terminal (`env` added).
fn on_terminal(argv: &[String], env: &[(&str, &str)]) -> Vec<u8> {
    let line: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &line.join(" "), "/dev/null"])
        .env_remove("NO_COLOR")
        .envs(env.iter().copied())
        .output()
        .expect("script (util-linux) runs");
    out.stdout
}

/// What `argv` writes to stderr when it is a pipe.
fn on_pipe(argv: &[String]) -> Vec<u8> {
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    out.stderr
}

fn check(name: &str, argv: &[String]) {
    let piped = on_pipe(argv);
    let shown = String::from_utf8_lossy(&piped);
    assert!(shown.contains("INFO"), "{name} logged nothing: {shown}");
    assert!(!has_colour(&piped), "{name} coloured a pipe: {shown:?}");

    let tty = on_terminal(argv, &[]);
    let shown = String::from_utf8_lossy(&tty);
    assert!(
        shown.contains("INFO"),
        "{name} logged nothing on a terminal: {shown}"
    );
    assert!(
        has_colour(&tty),
        "{name} did not colour a terminal: {shown:?}"
    );

    let no_color = on_terminal(argv, &[("NO_COLOR", "1")]);
    let shown = String::from_utf8_lossy(&no_color);
    assert!(
        shown.contains("INFO"),
        "{name} logged nothing with NO_COLOR: {shown}"
    );
    assert!(!has_colour(&no_color), "{name} ignored NO_COLOR: {shown:?}");
}

#[test]
fn logs_are_coloured_on_a_terminal_only() {
    let server = ReleaseServer::start();
    publish_installable(&server, "0.1.0", std::fs::read(FETCH).unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let mut run = 0;
    let mut fetch = || {
        run += 1;
        vec![
            FETCH.to_string(),
            "--release-url".into(),
            server.url.clone(),
            "--data-dir".into(),
            tmp.path()
                .join(format!("fetch-{run}"))
                .display()
                .to_string(),
        ]
    };
    // A fresh data directory each time, so every run downloads (and logs) again.
    let piped = on_pipe(&fetch());
    assert!(!has_colour(&piped), "{}", String::from_utf8_lossy(&piped));
    assert!(String::from_utf8_lossy(&piped).contains("INFO"));
    let tty = on_terminal(&fetch(), &[]);
    assert!(has_colour(&tty), "{}", String::from_utf8_lossy(&tty));
    let no_color = on_terminal(&fetch(), &[("NO_COLOR", "1")]);
    assert!(
        !has_colour(&no_color),
        "{}",
        String::from_utf8_lossy(&no_color)
    );
    assert!(String::from_utf8_lossy(&no_color).contains("INFO"));

    // The supervisor in its loopback mode, stopped after two seconds.
    let supervisor = vec![
        "timeout".to_string(),
        "2".into(),
        supervisor_path().display().to_string(),
        "--no-mesh".into(),
        "--bind".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        tmp.path().join("supervisor").display().to_string(),
    ];
    check("tabbify-supervisor", &supervisor);
}
