//! systemd unit files in tests: their settings, `systemd-analyze verify` in a root of our own,
//! and the exposure `systemd-analyze security --offline` gives them.

use super::text;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `Key=Value` lines of a unit file, in order.
pub fn settings(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The first value of `key`.
pub fn get<'a>(s: &'a [(String, String)], key: &str) -> Option<&'a str> {
    s.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Every value of `key`, in order.
pub fn get_all<'a>(s: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    s.iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Writes `units` (file name, text) into `root`'s /etc/systemd/system and returns their paths.
pub fn install_units(root: &Path, units: &[(String, String)]) -> Vec<PathBuf> {
    let unit_dir = root.join("etc/systemd/system");
    std::fs::create_dir_all(&unit_dir).unwrap();
    units
        .iter()
        .map(|(name, text)| {
            let path = unit_dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect()
}

/// Runs `systemd-analyze verify --root` on `units` (file name, text) and returns what it
/// printed. The root holds the host's system units (targets the units depend on) plus ours, and
/// an executable at every path an `Exec*=` line names (unless one is there already).
pub fn verify_root(root: &Path, units: &[(String, String)]) -> String {
    let (ok, printed) = verify_root_status(root, units);
    assert!(ok, "systemd-analyze verify failed:\n{printed}");
    printed
}

/// [`verify_root`] for units that may fail: whether `systemd-analyze verify` succeeded, and
/// what it printed.
pub fn verify_root_status(root: &Path, units: &[(String, String)]) -> (bool, String) {
    let system = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .find(|p| Path::new(p).is_dir())
        .expect("no system unit directory");
    let dest = root.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&dest).unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{system}/."))
        .arg(&dest)
        .status()
        .unwrap();
    assert!(st.success());
    let paths = install_units(root, units);
    for (_, text) in units {
        for (key, value) in settings(text) {
            if !key.starts_with("Exec") {
                continue;
            }
            let exe = value
                .trim_start_matches(['-', '@', ':', '+', '!'])
                .split_whitespace()
                .next()
                .unwrap()
                .to_string();
            let stub = root.join(exe.trim_start_matches('/'));
            if !stub.exists() {
                std::fs::create_dir_all(stub.parent().unwrap()).unwrap();
                std::fs::write(&stub, "#!/bin/sh\n").unwrap();
                std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .args(&paths)
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), printed)
}

/// The overall exposure `systemd-analyze security --offline` gives the unit file at `path`
/// (0.0 best, 10.0 worst).
pub fn exposure(path: &Path) -> f64 {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level for"))
        .unwrap_or_else(|| panic!("no exposure level for {}: {}", path.display(), text(&out)));
    line.rsplit_once(": ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable exposure line {line:?}"))
}
