//! Applying one layer (a tar stream, plain, gzip or zstd — recognised by its first bytes) to the
//! staging tree, with the OCI whiteout rules: `.wh.NAME` deletes NAME from the lower layers,
//! `.wh..wh..opq` empties its directory of lower-layer content.

use crate::error::{Result, VmError};
use crate::image::Verified;
use crate::staging::{EntryMeta, SpecialKind, SpecialNode, Staging};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Applies the layer read from `blob` to `staging`. `diff_id` (hex sha256 of the uncompressed
/// tar) is checked when given; `label` names the layer in errors about `source`.
pub fn apply_layer(
    blob: impl Read,
    staging: &mut Staging,
    source: &Path,
    label: &str,
    diff_id: Option<String>,
) -> Result<()> {
    let bad = |reason: String| VmError::image(source, format!("{label}: {reason}"));
    let mut buffered = BufReader::with_capacity(256 * 1024, blob);
    let head = buffered
        .fill_buf()
        .map_err(|e| bad(format!("reading: {e}")))?;
    let plain: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(buffered))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(buffered)
                .map_err(|e| bad(format!("zstd: {e}")))?,
        )
    } else {
        Box::new(buffered)
    };
    let verified = Verified::new(plain, diff_id, format!("uncompressed {label}"));
    let mut archive = tar::Archive::new(verified);
    let mut written: HashSet<String> = HashSet::new();
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("corrupt tar entry: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| bad(format!("bad entry path: {e}")))?
            .into_owned();
        if let Some(name) = path.file_name().and_then(|n| n.to_str())
            && name.starts_with(WHITEOUT_PREFIX)
        {
            let parent = path.parent().unwrap_or(Path::new(""));
            if name == OPAQUE_MARKER {
                staging.opaque(parent, &written)?;
            } else {
                staging.whiteout(&parent.join(&name[WHITEOUT_PREFIX.len()..]))?;
            }
            continue;
        }
        let header = entry.header();
        let num = |v: std::io::Result<u64>, what: &str| -> Result<u64> {
            v.map_err(|e| bad(format!("{}: bad {what}: {e}", path.display())))
        };
        let id = |v: u64, what: &str| -> Result<u32> {
            u32::try_from(v)
                .map_err(|_| bad(format!("{}: {what} {v} out of range", path.display())))
        };
        let meta = EntryMeta {
            uid: id(num(header.uid(), "uid")?, "uid")?,
            gid: id(num(header.gid(), "gid")?, "gid")?,
            mtime: i64::try_from(num(header.mtime(), "mtime")?).unwrap_or(i64::MAX),
        };
        let mode = header
            .mode()
            .map_err(|e| bad(format!("{}: bad mode: {e}", path.display())))?;
        let kind = header.entry_type();
        let key = match kind {
            tar::EntryType::Directory => staging.add_dir(&path, mode, meta)?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                staging.add_file(&path, mode, meta, &mut entry)?
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| bad(format!("{}: bad link target: {e}", path.display())))?
                    .ok_or_else(|| bad(format!("{}: link without a target", path.display())))?
                    .into_owned();
                if kind == tar::EntryType::Symlink {
                    staging.add_symlink(&path, &target, meta)?
                } else {
                    staging.add_hardlink(&path, &target)?
                }
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                let header = entry.header();
                let dev = |v: std::io::Result<Option<u32>>| -> Result<u32> {
                    v.map_err(|e| bad(format!("{}: bad device number: {e}", path.display())))
                        .map(Option::unwrap_or_default)
                };
                let node = SpecialNode {
                    kind: if kind == tar::EntryType::Char {
                        SpecialKind::Char
                    } else {
                        SpecialKind::Block
                    },
                    mode: mode & 0o7777,
                    major: dev(header.device_major())?,
                    minor: dev(header.device_minor())?,
                };
                staging.add_special(&path, node, meta)?
            }
            tar::EntryType::Fifo => staging.add_fifo(&path, mode, meta)?,
            // Metadata entries the tar crate has already folded into the next entry.
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => continue,
            other => {
                return Err(bad(format!(
                    "{}: unsupported tar entry type {other:?}",
                    path.display()
                )));
            }
        };
        // The entry and its parents belong to this layer: an opaque marker later in the same
        // layer must not remove them.
        let mut k = key.as_str();
        loop {
            written.insert(k.to_string());
            match k.rfind('/') {
                Some(i) => k = &k[..i],
                None => break,
            }
        }
    }
    // The end-of-archive marker may come before the end of the stream: read the rest so the
    // digest covers all of it.
    let mut rest = archive.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(|e| bad(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    struct T {
        _dir: tempfile::TempDir,
        root: std::path::PathBuf,
        staging: Staging,
    }

    fn staging() -> T {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let staging = Staging::new(root.clone(), "img".into());
        T {
            _dir: dir,
            root,
            staging,
        }
    }

    fn tar_of(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, body) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(1000);
            h.set_gid(1000);
            h.set_mtime(42);
            match body {
                Some(body) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(0o640);
                    h.set_size(body.len() as u64);
                    b.append_data(&mut h, path, body.as_bytes()).unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    b.append_data(&mut h, path, &[][..]).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn plain_gzip_and_zstd_layers_apply_the_same() {
        let raw = tar_of(&[("etc/", None), ("etc/hostname", Some("vm\n"))]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &raw).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&raw[..], 1).unwrap();
        let diff_id = hex::encode(sha2::Sha256::digest(&raw));
        for blob in [raw.clone(), gz, zst] {
            let mut t = staging();
            apply_layer(
                &blob[..],
                &mut t.staging,
                Path::new("img"),
                "layer 1",
                Some(diff_id.clone()),
            )
            .unwrap();
            assert_eq!(
                std::fs::read_to_string(t.root.join("etc/hostname")).unwrap(),
                "vm\n"
            );
            let m = t.staging.entries()["etc/hostname"];
            assert_eq!((m.uid, m.gid, m.mtime), (1000, 1000, 42));
        }
    }

    #[test]
    fn a_wrong_diff_id_or_a_truncated_layer_is_an_image_error() {
        let raw = tar_of(&[("a", Some("hello"))]);
        let mut t = staging();
        let e = apply_layer(
            &raw[..],
            &mut t.staging,
            Path::new("img"),
            "layer 1",
            Some("0".repeat(64)),
        )
        .unwrap_err();
        assert!(matches!(e, VmError::Image { .. }), "{e}");
        assert!(e.to_string().contains("layer 1"), "{e}");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &raw).unwrap();
        let gz = gz.finish().unwrap();
        let mut t = staging();
        let e = apply_layer(
            &gz[..gz.len() / 2],
            &mut t.staging,
            Path::new("img"),
            "layer 2",
            None,
        )
        .unwrap_err();
        assert!(matches!(e, VmError::Image { .. }), "{e}");
    }

    #[test]
    fn whiteouts_delete_lower_content_but_not_this_layers() {
        let mut t = staging();
        let lower = tar_of(&[
            ("etc/", None),
            ("etc/a", Some("1")),
            ("etc/b", Some("2")),
            ("old", Some("x")),
        ]);
        apply_layer(&lower[..], &mut t.staging, Path::new("img"), "l1", None).unwrap();
        let upper = tar_of(&[
            ("etc/c", Some("3")),
            ("etc/.wh..wh..opq", Some("")),
            (".wh.old", Some("")),
        ]);
        apply_layer(&upper[..], &mut t.staging, Path::new("img"), "l2", None).unwrap();
        assert!(t.root.join("etc/c").exists());
        assert!(!t.root.join("etc/a").exists());
        assert!(!t.root.join("etc/b").exists());
        assert!(!t.root.join("old").exists());
        assert!(!t.root.join(".wh.old").exists());
    }
}
