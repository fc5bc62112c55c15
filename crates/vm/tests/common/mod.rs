//! Shared by the VM tests: building the guest init and hello-http once per test process, finding
//! the guest kernel, and writing real image formats (a `docker save` archive, an OCI layout) from
//! a list of files, the way Docker and OCI tools lay them out.

#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // test support: a failed setup step should panic the test

use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use tabbify_testkit::workspace_root;

fn run_once(
    cell: &'static OnceLock<Result<(), String>>,
    what: &str,
    cmd: impl FnOnce() -> Command,
) {
    let r = cell.get_or_init(|| {
        let out = cmd()
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{what}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{what} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = r {
        panic!("{e}");
    }
}

/// The static guest init, built for musl into `target/guest` (its own target dir, so this works
/// while the outer cargo holds its lock).
pub fn guest_init() -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let root = workspace_root();
    let target = root.join("target/guest");
    run_once(&BUILT, "building tabbify-vm-init for musl", || {
        let mut c = Command::new("cargo");
        c.current_dir(&root)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .args([
                "build",
                "--quiet",
                "--release",
                "--target",
                "x86_64-unknown-linux-musl",
            ])
            .args(["-p", "tabbify-vm-init", "--target-dir"])
            .arg(&target);
        c
    });
    target.join("x86_64-unknown-linux-musl/release/tabbify-vm-init")
}

/// `examples/hello-http`, static.
pub fn hello_http() -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let root = workspace_root();
    run_once(&BUILT, "examples/build.sh hello-http", || {
        let mut c = Command::new("bash");
        c.arg(root.join("examples/build.sh")).arg("hello-http");
        c
    });
    root.join("target/native/hello-http")
}

/// The guest kernel from `scripts/fetch-vm-kernel.sh` (run when missing). `None` (test skips)
/// when it cannot be had, unless `TABBIFY_REQUIRE_ALL=1`.
pub fn guest_kernel() -> Option<PathBuf> {
    static FETCHED: OnceLock<bool> = OnceLock::new();
    let root = workspace_root();
    let kernel = root.join("target/vm/vmlinuz");
    let ok = *FETCHED.get_or_init(|| {
        if kernel.is_file() {
            return true;
        }
        Command::new("bash")
            .arg(root.join("scripts/fetch-vm-kernel.sh"))
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            && kernel.is_file()
    });
    if ok {
        return Some(kernel);
    }
    let reason = "no guest kernel at target/vm/vmlinuz (scripts/fetch-vm-kernel.sh failed)";
    if std::env::var("TABBIFY_REQUIRE_ALL").is_ok_and(|v| v == "1") {
        panic!("{reason} (TABBIFY_REQUIRE_ALL=1)");
    }
    eprintln!("skipped: {reason}");
    None
}

/// One file of a test layer.
pub enum Item<'a> {
    Dir(&'a str),
    DirMode(&'a str, u32),
    File {
        path: &'a str,
        mode: u32,
        uid: u64,
        data: Vec<u8>,
    },
    Symlink(&'a str, &'a str),
    /// `(path)`: an empty regular file (whiteouts are named like this).
    Empty(&'a str),
    /// A raw header name, not checked (for traversal attempts).
    Raw(&'a str, Vec<u8>),
}

/// A layer tar of `items`.
pub fn layer_tar(items: &[Item]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for item in items {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match item {
            Item::Dir(p) | Item::DirMode(p, _) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(match item {
                    Item::DirMode(_, m) => *m,
                    _ => 0o755,
                });
                h.set_size(0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            Item::File {
                path,
                mode,
                uid,
                data,
            } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_uid(*uid);
                h.set_gid(*uid);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, &data[..]).unwrap();
            }
            Item::Symlink(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
            Item::Empty(p) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            Item::Raw(name, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                // Write the name bytes directly: the tar crate refuses `..` in set_path.
                let gnu = h.as_gnu_mut().unwrap();
                gnu.name[..name.len()].copy_from_slice(name.as_bytes());
                h.set_cksum();
                b.append(&h, &data[..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn config_json(layers: &[Vec<u8>], config: &serde_json::Value) -> Vec<u8> {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", sha256_hex(l)))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

/// A `docker save` archive (legacy layout: `<id>/layer.tar`, `<hex>.json`, `manifest.json`).
pub fn docker_archive(path: &Path, layers: &[Vec<u8>], config: &serde_json::Value) {
    let cfg = config_json(layers, config);
    let cfg_name = format!("{}.json", sha256_hex(&cfg));
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data).unwrap();
    };
    let mut names = Vec::new();
    for l in layers {
        let name = format!("{}/layer.tar", sha256_hex(l));
        add(&name, l);
        names.push(name);
    }
    add(&cfg_name, &cfg);
    let manifest = serde_json::json!([{
        "Config": cfg_name,
        "RepoTags": ["tabbify/test:latest"],
        "Layers": names,
    }]);
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    b.into_inner().unwrap().sync_all().unwrap();
}

/// An OCI image layout with gzip layers.
pub fn oci_layout(dir: &Path, layers: &[Vec<u8>], config: &serde_json::Value) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| -> (String, usize) {
        let hex = sha256_hex(data);
        std::fs::write(blobs.join(&hex), data).unwrap();
        (format!("sha256:{hex}"), data.len())
    };
    let cfg = config_json(layers, config);
    let (cfg_digest, cfg_size) = put(&cfg);
    let layer_descs: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| {
            let (d, s) = put(&gzip(l));
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": s})
        })
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest, "size": cfg_size},
        "layers": layer_descs,
    }))
    .unwrap();
    let (m_digest, m_size) = put(&manifest);
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": m_digest, "size": m_size,
                "platform": {"architecture": "amd64", "os": "linux"},
            }],
        }))
        .unwrap(),
    )
    .unwrap();
}

/// The hello-http image: `/bin/hello-http` plus a little of what real images have.
pub fn hello_layers() -> Vec<Vec<u8>> {
    let bin = std::fs::read(hello_http()).unwrap();
    vec![
        layer_tar(&[
            Item::Dir("bin/"),
            Item::Dir("etc/"),
            Item::File {
                path: "etc/passwd",
                mode: 0o644,
                uid: 0,
                data: b"root:x:0:0:root:/root:/bin/sh\nweb:x:1000:1000::/srv:/bin/false\n".to_vec(),
            },
            Item::Dir("srv/"),
            Item::Symlink("var/run", "/run"),
        ]),
        layer_tar(&[Item::File {
            path: "bin/hello-http",
            mode: 0o755,
            uid: 0,
            data: bin,
        }]),
    ]
}

/// The image config of hello-http.
pub fn hello_config() -> serde_json::Value {
    serde_json::json!({
        "Entrypoint": ["/bin/hello-http"],
        "Env": ["PATH=/bin", "PORT=8080"],
        "WorkingDir": "/srv",
    })
}

/// Output of `debugfs -R "<request>" image` (stdout).
pub fn debugfs(image: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(image)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}
