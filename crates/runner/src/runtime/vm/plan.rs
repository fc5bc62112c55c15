//! The pure part of a microVM app: the manifest and the node's settings turned into what to
//! boot — the VM's name, vCPUs and memory, the guest kernel, the app's environment — and the
//! one-line quotes of guest failures that go into the runner's error.

use std::path::{Path, PathBuf};
use tabbify_vm::AppCommand;
use tabbify_vm::spec::{MAX_VCPUS, MIN_MEMORY_MB};
use tabbify_wire::app::Manifest;

/// Longest quote of a guest's failure in an error (the runner's error is one line).
pub const MAX_QUOTE: usize = 600;

/// A VM name (`[a-z0-9-]`, 1–48) for app `app_id`.
pub fn vm_name(app_id: &str) -> String {
    let mut name: String = app_id
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-') => c,
            _ => '-',
        })
        .take(48)
        .collect();
    if name.is_empty() {
        name.push_str("app");
    }
    name
}

/// vCPUs for `cpus` of the manifest: rounded up, 1 to [`MAX_VCPUS`].
pub fn vcpus(cpus: f64) -> u32 {
    let n = cpus.ceil();
    if n.is_nan() || n < 1.0 {
        1
    } else if n >= f64::from(MAX_VCPUS) {
        MAX_VCPUS
    } else {
        // In 1..MAX_VCPUS: exact.
        n as u32
    }
}

/// Guest memory: the manifest's, at least what a VM needs.
pub fn memory_mb(manifest_mb: u32) -> u32 {
    manifest_mb.max(MIN_MEMORY_MB)
}

/// What init runs: the image's command, the manifest's environment and `PORT` (the app's port,
/// unless the manifest sets `PORT` itself).
pub fn app_command(manifest: &Manifest) -> AppCommand {
    let mut env = manifest.env.clone();
    env.entry("PORT".into())
        .or_insert_with(|| manifest.http.port.to_string());
    AppCommand {
        env,
        ..AppCommand::default()
    }
}

/// The guest kernel: the node's (`node_kernel`), or the manifest's `kernel`, a file name in the
/// node kernel's directory (an app cannot name any other file of the node).
pub fn kernel_path(node_kernel: &Path, named: Option<&str>) -> Result<PathBuf, String> {
    let Some(name) = named else {
        return Ok(node_kernel.to_path_buf());
    };
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0');
    if !plain {
        return Err(format!(
            "runtime.kernel = {name:?} must be the file name of a kernel in the node's kernel directory"
        ));
    }
    let dir = node_kernel.parent().unwrap_or(Path::new("/"));
    Ok(dir.join(name))
}

/// `text` on one line (newlines as ` | `, blank lines dropped), its last [`MAX_QUOTE`] characters.
pub fn one_line(text: &str) -> String {
    let joined = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    match joined.char_indices().rev().nth(MAX_QUOTE - 1) {
        Some((cut, _)) => format!("…{}", &joined[cut..]),
        None => joined,
    }
}

/// Where a tap slot search starts for `app_id` (spreads apps over the slots).
pub fn first_slot(app_id: &str, slots: u32) -> u32 {
    // FNV-1a: stable across builds, unlike the std hasher.
    let mut h: u32 = 0x811c_9dc5;
    for b in app_id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % slots.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_vm_names() {
        assert_eq!(vm_name("hello-1a2b3c4d"), "hello-1a2b3c4d");
        assert_eq!(vm_name("Hello_World"), "hello-world");
        assert_eq!(vm_name(&"a".repeat(70)).len(), 48);
        assert_eq!(vm_name(""), "app");
    }

    #[test]
    fn resources_round_up_and_stay_in_range() {
        assert_eq!(vcpus(0.05), 1);
        assert_eq!(vcpus(1.0), 1);
        assert_eq!(vcpus(1.5), 2);
        assert_eq!(vcpus(256.0), MAX_VCPUS);
        assert_eq!(vcpus(f64::NAN), 1);
        assert_eq!(memory_mb(8), MIN_MEMORY_MB);
        assert_eq!(memory_mb(512), 512);
    }

    #[test]
    fn an_app_names_kernels_only_in_the_node_s_directory() {
        let node = Path::new("/var/lib/tabbify/kernels/vmlinux");
        assert_eq!(kernel_path(node, None).unwrap(), node);
        assert_eq!(
            kernel_path(node, Some("vmlinuz-6.1")).unwrap(),
            Path::new("/var/lib/tabbify/kernels/vmlinuz-6.1")
        );
        for bad in ["../etc/shadow", "/boot/vmlinuz", "..", ""] {
            assert!(kernel_path(node, Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn quotes_are_one_bounded_line() {
        assert_eq!(one_line("a\n\n  \nb\r\n"), "a | b");
        let long = one_line(&"x\n".repeat(5000));
        assert!(long.starts_with('…') && long.chars().count() == MAX_QUOTE + 1);
        assert!(!long.contains('\n'));
    }

    #[test]
    fn slots_spread_and_stay_in_range() {
        let a = first_slot("hello-00000001", 16_384);
        let b = first_slot("hello-00000002", 16_384);
        assert!(a < 16_384 && b < 16_384);
        assert_ne!(a, b);
        assert_eq!(first_slot("x", 0), 0);
    }
}
