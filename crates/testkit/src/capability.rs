//! What a test needs from the machine, and the one place that decides to skip or fail.

use std::path::Path;
use std::process::{Command, Stdio};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Running as root (uid 0).
    Root,
    /// `/dev/net/tun` opens and we may create network namespaces (`ip netns`).
    NetNs,
    /// A Docker daemon answers `docker info`.
    Docker,
    /// `/dev/kvm` exists and opens read-write.
    Kvm,
    /// `qemu-system-x86_64` is on PATH.
    Qemu,
    /// `nix-instantiate` is on PATH (Debian's `nix-bin`).
    Nix,
    /// `systemd-analyze` is on PATH (Debian's `systemd`).
    SystemdAnalyze,
    /// `wireguard-go` and `wg` are on PATH (Debian's `wireguard-go` and `wireguard-tools`).
    WireguardGo,
    /// nixpkgs' `lib` is on disk ([`nixpkgs_lib`]), for evaluating the NixOS module.
    NixpkgsLib,
    /// This network namespace forwards IPv4 (`net.ipv4.ip_forward = 1`, as Docker sets it).
    Ipv4Forwarding,
}

/// nixpkgs' `lib` directory: `$TABBIFY_NIXPKGS_LIB`, else the vendored copy beside the
/// workspace (`../shared/vendor/nixpkgs-lib/lib`).
pub fn nixpkgs_lib() -> std::path::PathBuf {
    match std::env::var_os("TABBIFY_NIXPKGS_LIB") {
        Some(p) => p.into(),
        None => crate::workspace_root().join("../shared/vendor/nixpkgs-lib/lib"),
    }
}

impl Capability {
    /// `None` when present, otherwise a one-line reason.
    pub fn missing_reason(self) -> Option<String> {
        match self {
            Capability::Root => {
                (nix::unistd::geteuid().as_raw() != 0).then(|| "not running as root".to_string())
            }
            Capability::NetNs => {
                if nix::unistd::geteuid().as_raw() != 0 {
                    return Some("network namespaces need root".into());
                }
                if !Path::new("/dev/net/tun").exists() {
                    return Some("/dev/net/tun is missing".into());
                }
                if !command_ok("ip", &["netns", "list"]) {
                    return Some("`ip netns` (iproute2) is not usable".into());
                }
                None
            }
            Capability::Docker => (!command_ok("docker", &["info"]))
                .then(|| "no Docker daemon answers `docker info`".to_string()),
            Capability::Kvm => std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .err()
                .map(|e| format!("/dev/kvm does not open read-write: {e}")),
            Capability::Qemu => (!command_ok("qemu-system-x86_64", &["--version"]))
                .then(|| "qemu-system-x86_64 is not installed".to_string()),
            Capability::Nix => (!command_ok("nix-instantiate", &["--version"]))
                .then(|| "nix-instantiate is not installed (apt-get install nix-bin)".to_string()),
            Capability::SystemdAnalyze => (!command_ok("systemd-analyze", &["--version"]))
                .then(|| "systemd-analyze is not installed (apt-get install systemd)".to_string()),
            Capability::NixpkgsLib => {
                let lib = nixpkgs_lib();
                (!lib.join("default.nix").is_file()).then(|| {
                    format!(
                        "no nixpkgs lib at {} (set TABBIFY_NIXPKGS_LIB)",
                        lib.display()
                    )
                })
            }
            Capability::WireguardGo => (!(command_ok("wireguard-go", &["--version"])
                && command_ok("wg", &["--version"])))
            .then(|| {
                "wireguard-go or wg is not installed (apt-get install wireguard-go wireguard-tools)"
                    .to_string()
            }),
            Capability::Ipv4Forwarding => {
                let on = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
                    .is_ok_and(|v| v.trim() == "1");
                (!on).then(|| {
                    "this host does not forward IPv4 (sysctl -w net.ipv4.ip_forward=1)".to_string()
                })
            }
        }
    }
}

fn command_ok(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// True when every capability in `cap` is there. When one is missing: with
/// `TABBIFY_REQUIRE_ALL=1` this panics (the test fails); otherwise it prints one line and returns
/// false so the test can return early.
pub fn require(cap: Capability) -> bool {
    let Some(reason) = cap.missing_reason() else {
        return true;
    };
    if std::env::var("TABBIFY_REQUIRE_ALL").is_ok_and(|v| v == "1") {
        panic!("required capability {cap:?} is missing: {reason} (TABBIFY_REQUIRE_ALL=1)");
    }
    eprintln!("skipped: {reason}");
    false
}
