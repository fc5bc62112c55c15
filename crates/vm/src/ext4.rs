//! Turns a staging tree into an ext4 image with e2fsprogs, without root and without a loop device:
//! `mke2fs -d` copies the tree, then one `debugfs` script gives every inode its guest owner and
//! fixed times and creates the device nodes, and `e2fsck -fn` checks the result.
//!
//! The output is a pure function of the tree's content and the recorded metadata: the UUID and
//! directory hash seed are given, the filesystem's own clock is pinned with `E2FSPROGS_FAKE_TIME`,
//! the host's `/etc/mke2fs.conf` is ignored (built-in defaults), `mke2fs` adds directory entries
//! in sorted order, and the times `mke2fs` copies from the host (ctime, atime) are overwritten.

use crate::error::{IoContext, Result, VmError};
use crate::staging::{SpecialKind, Staging};
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

/// Block size of the images.
pub const BLOCK_SIZE: u64 = 4096;

/// What to make.
#[derive(Debug, Clone)]
pub struct Ext4Params {
    pub size_bytes: u64,
    /// Filesystem UUID and directory hash seed.
    pub uuid: String,
    /// Every filesystem-level time and every ctime.
    pub epoch: i64,
    pub label: String,
}

fn run(tool: &str, cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| VmError::Tool {
            tool: tool.into(),
            status: "not started".into(),
            stderr: format!("{e} (install e2fsprogs)"),
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(VmError::Tool {
            tool: tool.into(),
            status: out.status.to_string(),
            stderr: format!(
                "{}{}",
                stderr.trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ),
        });
    }
    Ok(stderr)
}

fn pinned(tool: &str, epoch: i64) -> Command {
    let mut c = Command::new(tool);
    c.env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .env(
            "MKE2FS_CONFIG",
            "/nonexistent/tabbify-uses-built-in-defaults",
        )
        .env("TZ", "UTC")
        .env("LC_ALL", "C");
    c
}

/// Quotes a path for debugfs's command parser: double quotes, a quote doubled.
fn quote(path: &str) -> Result<String> {
    if path.chars().any(|c| c.is_control()) {
        return Err(VmError::App(format!(
            "file name {path:?} has control characters, which the filesystem builder cannot express"
        )));
    }
    Ok(format!("\"{}\"", path.replace('"', "\"\"")))
}

/// The debugfs commands that give the image its guest metadata.
pub fn debugfs_script(
    staging: &Staging,
    epoch: i64,
    builder_uid: u32,
    builder_gid: u32,
) -> Result<String> {
    let mut s = String::new();
    // Device nodes first (mknod works on names in the current directory).
    for (key, node) in staging.special_nodes() {
        let (dir, name) = match key.rsplit_once('/') {
            Some((d, n)) => (format!("/{d}"), n),
            None => ("/".to_string(), key.as_str()),
        };
        let (kind, type_bits) = match node.kind {
            SpecialKind::Char => ("c", 0o020000),
            SpecialKind::Block => ("b", 0o060000),
        };
        let _ = writeln!(s, "cd {}", quote(&dir)?);
        let _ = writeln!(
            s,
            "mknod {} {kind} {} {}",
            quote(name)?,
            node.major,
            node.minor
        );
        let _ = writeln!(
            s,
            "sif {} mode 0{:o}",
            quote(&format!("/{key}"))?,
            type_bits | node.mode
        );
    }
    let _ = writeln!(s, "cd /");
    for (key, m) in staging.entries() {
        let p = quote(&format!("/{key}"))?;
        let is_special = staging.special_nodes().contains_key(key);
        if m.uid != builder_uid || is_special {
            let _ = writeln!(s, "sif {p} uid {}", m.uid);
        }
        if m.gid != builder_gid || is_special {
            let _ = writeln!(s, "sif {p} gid {}", m.gid);
        }
        let _ = writeln!(s, "sif {p} ctime @{epoch}");
        let _ = writeln!(s, "sif {p} atime @{}", m.mtime);
        if is_special {
            let _ = writeln!(s, "sif {p} mtime @{}", m.mtime);
            let _ = writeln!(s, "sif {p} crtime @{epoch}");
        }
    }
    // Permission bits the staged copy could not have (see `Staging::modes`).
    for (key, &mode) in staging.modes() {
        let staged = std::fs::symlink_metadata(staging.root().join(key))
            .io_ctx(|| format!("inspecting staged {key:?}"))?;
        use std::os::unix::fs::MetadataExt;
        if staged.mode() & 0o7777 != mode {
            let full = (staged.mode() & libc::S_IFMT) | mode;
            let _ = writeln!(s, "sif {} mode 0{full:o}", quote(&format!("/{key}"))?);
        }
    }
    for p in ["/", "/lost+found"] {
        let _ = writeln!(s, "sif {p} ctime @{epoch}");
        let _ = writeln!(s, "sif {p} atime @{epoch}");
    }
    Ok(s)
}

/// Builds the image at `out` (created or truncated) from `staging`.
pub fn make_ext4(staging: &Staging, out: &Path, params: &Ext4Params) -> Result<()> {
    let f = std::fs::File::create(out).io_ctx(|| format!("creating {}", out.display()))?;
    f.set_len(params.size_bytes)
        .io_ctx(|| format!("sizing {}", out.display()))?;
    drop(f);
    let blocks = params.size_bytes / BLOCK_SIZE;
    run(
        "mkfs.ext4",
        pinned("mkfs.ext4", params.epoch)
            .args([
                "-q", "-F", "-t", "ext4", "-b", "4096", "-I", "256", "-i", "8192", "-m", "0",
            ])
            .args(["-L", &params.label, "-U", &params.uuid])
            .arg("-E")
            .arg(format!(
                "hash_seed={},root_owner=0:0,lazy_itable_init=0,nodiscard",
                params.uuid
            ))
            .arg("-d")
            .arg(staging.root())
            .arg(out)
            .arg(blocks.to_string()),
    )?;

    let script = debugfs_script(
        staging,
        params.epoch,
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    )?;
    let script_path = out.with_extension("debugfs");
    std::fs::write(&script_path, &script)
        .io_ctx(|| format!("writing {}", script_path.display()))?;
    let result = run(
        "debugfs",
        pinned("debugfs", params.epoch)
            .arg("-w")
            .arg("-f")
            .arg(&script_path)
            .arg(out),
    );
    let _ = std::fs::remove_file(&script_path);
    // debugfs exits 0 even when a command fails; its errors are on stderr (after its banner).
    let stderr = result?;
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("debugfs "))
        .collect();
    if !errors.is_empty() {
        return Err(VmError::Tool {
            tool: "debugfs".into(),
            status: "command errors".into(),
            stderr: errors.join("; "),
        });
    }
    run("e2fsck", pinned("e2fsck", params.epoch).arg("-fn").arg(out))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::staging::{EntryMeta, SpecialNode};

    #[test]
    fn paths_are_quoted_for_debugfs() {
        assert_eq!(quote("/a b").unwrap(), "\"/a b\"");
        assert_eq!(quote("/c\"d").unwrap(), "\"/c\"\"d\"");
        assert!(quote("/new\nline").is_err());
    }

    #[test]
    fn the_script_sets_owners_only_where_they_differ_and_creates_devices() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Staging::new(dir.path().to_path_buf(), "img".into());
        let m = |uid| EntryMeta {
            uid,
            gid: uid,
            mtime: 5,
        };
        s.add_file(Path::new("etc/a"), 0o644, m(0), &mut "x".as_bytes())
            .unwrap();
        s.add_file(Path::new("home/u"), 0o644, m(1000), &mut "x".as_bytes())
            .unwrap();
        s.add_special(
            Path::new("dev/console"),
            SpecialNode {
                kind: SpecialKind::Char,
                mode: 0o600,
                major: 5,
                minor: 1,
            },
            m(0),
        )
        .unwrap();
        let script = debugfs_script(&s, 9, 0, 0).unwrap();
        assert!(
            script.contains(
                "cd \"/dev\"\nmknod \"console\" c 5 1\nsif \"/dev/console\" mode 020600\n"
            ),
            "{script}"
        );
        assert!(script.contains("sif \"/home/u\" uid 1000\n"), "{script}");
        assert!(!script.contains("sif \"/etc/a\" uid"), "{script}");
        assert!(
            script.contains("sif \"/etc/a\" ctime @9\nsif \"/etc/a\" atime @5\n"),
            "{script}"
        );
    }
}
