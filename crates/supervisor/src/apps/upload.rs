//! Reading a deploy request: `multipart/form-data` with the parts `manifest` (the text of a
//! `tabbify.toml`) and `artifact` (the `.wasm` bytes; for a docker app, optionally the image's
//! `docker save` tarball), so that `curl -F manifest=@tabbify.toml -F artifact=@app.wasm`
//! deploys. A microVM app (`kind = "firecracker"`) sends its image as a `docker save` tarball
//! (`image = ...`) or its ext4 root filesystem (`rootfs = ...`). Every way the request can be
//! wrong gets its own precise error; the runner's load errors come later, from the runner. Image
//! tarballs and filesystems are far larger than components, so docker and microVM apps have
//! their own size limit.

use super::error::AppError;
use axum::body::Bytes;
use axum::extract::multipart::{Multipart, MultipartError};
use sha2::{Digest, Sha256};
use tabbify_wire::app::{ArtifactDigest, Manifest, RuntimeKind};

/// A deploy request, read and checked.
#[derive(Debug, Clone)]
pub struct Upload {
    pub manifest: Manifest,
    pub artifact: Bytes,
    pub digest: ArtifactDigest,
}

const PARTS: &str = "a deploy takes the multipart parts `manifest` (tabbify.toml) and `artifact` (the .wasm component; for a docker app, the image's `docker save` tarball or nothing; for a microVM app, its image's `docker save` tarball or its ext4 root filesystem)";

/// The largest deploy requests a node takes, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    /// Any app but a docker one (`--max-app-upload-mib`).
    pub app: usize,
    /// A docker or microVM app, whose artifact is its image tarball or root filesystem
    /// (`--max-image-upload-mib`).
    pub image: usize,
}

impl UploadLimits {
    /// The limit on a request body before its manifest is read.
    pub fn body(&self) -> usize {
        self.app.max(self.image)
    }

    fn for_kind(&self, kind: RuntimeKind) -> (usize, &'static str) {
        match kind {
            RuntimeKind::Docker | RuntimeKind::Firecracker => {
                (self.image, "--max-image-upload-mib")
            }
            _ => (self.app, "--max-app-upload-mib"),
        }
    }
}

fn part_error(e: MultipartError, limits: &UploadLimits) -> AppError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        too_large(limits, None)
    } else {
        AppError::BadRequest(format!("unreadable multipart body: {}", e.body_text()))
    }
}

/// The 413 for an upload over the limit of apps of `kind` (`None`: the kind is not known yet).
pub fn too_large(limits: &UploadLimits, kind: Option<RuntimeKind>) -> AppError {
    const MIB: usize = 1024 * 1024;
    match kind {
        Some(kind) => {
            let (limit, flag) = limits.for_kind(kind);
            AppError::TooLarge(format!(
                "the upload is larger than this node's limit for {kind} apps of {limit} bytes ({} MiB; {flag})",
                limit / MIB
            ))
        }
        None => AppError::TooLarge(format!(
            "the upload is larger than this node takes: {} MiB for a docker or microVM app with its image (--max-image-upload-mib), {} MiB for other apps (--max-app-upload-mib)",
            limits.image / MIB,
            limits.app / MIB
        )),
    }
}

/// Reads the parts of a deploy and holds it to the limit of its app's kind.
pub async fn read_upload(
    mut multipart: Multipart,
    limits: &UploadLimits,
) -> Result<Upload, AppError> {
    let mut manifest_text: Option<String> = None;
    let mut artifact: Option<Bytes> = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| part_error(e, limits))?
    {
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "manifest" | "artifact" => {}
            "" => {
                return Err(AppError::BadRequest(format!(
                    "a multipart part has no name; {PARTS}"
                )));
            }
            other => {
                return Err(AppError::BadRequest(format!(
                    "unknown multipart part `{other}`; {PARTS}"
                )));
            }
        }
        let bytes = field.bytes().await.map_err(|e| part_error(e, limits))?;
        let duplicate = match name.as_str() {
            "manifest" => {
                let text = String::from_utf8(bytes.to_vec()).map_err(|e| {
                    AppError::BadRequest(format!("the manifest part is not UTF-8 text: {e}"))
                })?;
                manifest_text.replace(text).is_some()
            }
            _ => artifact.replace(bytes).is_some(),
        };
        if duplicate {
            return Err(AppError::BadRequest(format!(
                "the part `{name}` is given twice; {PARTS}"
            )));
        }
    }
    let Some(text) = manifest_text else {
        return Err(AppError::BadRequest(format!(
            "missing part `manifest`; {PARTS}"
        )));
    };
    let size = text.len() + artifact.as_ref().map_or(0, Bytes::len);
    let upload = check(&text, artifact)?;
    let kind = upload.manifest.runtime.kind();
    if size > limits.for_kind(kind).0 {
        return Err(too_large(limits, Some(kind)));
    }
    Ok(upload)
}

/// Validates the manifest against this node and the artifact against the manifest. A wasm app
/// needs its component; a docker app may come without an artifact (its image is on the node); a
/// microVM app needs its image tarball (`image`) or ext4 filesystem (`rootfs`).
pub fn check(manifest_text: &str, artifact: Option<Bytes>) -> Result<Upload, AppError> {
    let manifest =
        Manifest::from_toml_str(manifest_text).map_err(|e| AppError::BadRequest(e.to_string()))?;
    let kind = manifest.runtime.kind();
    let artifact = match (kind, artifact) {
        (RuntimeKind::Wasm, None) => {
            return Err(AppError::BadRequest(format!(
                "missing part `artifact`; {PARTS}"
            )));
        }
        (RuntimeKind::Wasm, Some(a)) if a.is_empty() => {
            return Err(AppError::BadRequest(
                "the artifact part is empty; send the .wasm component".into(),
            ));
        }
        (RuntimeKind::Wasm, Some(a)) => a,
        (RuntimeKind::Docker, a) => {
            let a = a.unwrap_or_default();
            if !a.is_empty() && !is_tar(&a) {
                return Err(AppError::InvalidArtifact(
                    "the artifact of a docker app is its image as a `docker save` tarball (or nothing, when the image is on the node); this is not a tar archive".into(),
                ));
            }
            a
        }
        (RuntimeKind::Firecracker, a) => {
            let a = a.unwrap_or_default();
            check_vm_artifact(&manifest.runtime, &a)?;
            a
        }
    };
    let digest =
        ArtifactDigest::parse(format!("sha256:{}", hex::encode(Sha256::digest(&artifact))))
            .map_err(|e| AppError::Internal(e.to_string()))?;
    if let tabbify_wire::app::RuntimeSpec::Wasm(w) = &manifest.runtime
        && let Some(named) = &w.artifact
        && *named != digest
    {
        return Err(AppError::InvalidArtifact(format!(
            "the uploaded artifact has digest {digest}, but the manifest names runtime.artifact = \"{named}\""
        )));
    }
    Ok(Upload {
        manifest,
        artifact,
        digest,
    })
}

/// A microVM app's artifact is what its manifest says it is: an image tarball for `image`, an ext4
/// filesystem for `rootfs`. (Its content is checked by the runner, which builds or boots it.)
fn check_vm_artifact(
    runtime: &tabbify_wire::app::RuntimeSpec,
    artifact: &[u8],
) -> Result<(), AppError> {
    let tabbify_wire::app::RuntimeSpec::Firecracker(vm) = runtime else {
        return Ok(());
    };
    let what = if vm.rootfs.is_some() {
        "its ext4 root filesystem (runtime.rootfs)"
    } else {
        "its image as a `docker save` tarball (runtime.image)"
    };
    if artifact.is_empty() {
        return Err(AppError::BadRequest(format!(
            "a microVM app is deployed with {what} as the `artifact` part; it is missing or empty"
        )));
    }
    if vm.rootfs.is_some() && !is_ext4(artifact) {
        return Err(AppError::InvalidArtifact(format!(
            "the artifact of this microVM app must be {what}; this is not an ext4 filesystem (no ext2/3/4 superblock magic)"
        )));
    }
    if vm.image.is_some() && !is_tar(artifact) {
        return Err(AppError::InvalidArtifact(format!(
            "the artifact of this microVM app must be {what}; this is not a tar archive"
        )));
    }
    Ok(())
}

/// An ext2/3/4 filesystem has the magic 0xEF53 at offset 56 of its superblock (which starts at
/// byte 1024).
fn is_ext4(bytes: &[u8]) -> bool {
    bytes.get(1080..1082) == Some(&[0x53, 0xEF][..])
}

/// A POSIX tar archive carries `ustar` at offset 257 of its first header.
fn is_tar(bytes: &[u8]) -> bool {
    bytes.get(257..262) == Some(b"ustar")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str =
        "[app]\nname = \"hello\"\n[runtime]\nkind = \"wasm\"\ncomponent = \"app.wasm\"\n";

    #[test]
    fn accepts_a_wasm_manifest_and_hashes_the_artifact() {
        let up = check(HELLO, Some(Bytes::from_static(b"\0asm"))).unwrap();
        assert_eq!(up.manifest.app.name.as_str(), "hello");
        assert_eq!(
            up.digest.as_str(),
            "sha256:cd5d4935a48c0672cb06407bb443bc0087aff947c6b864bac886982c73b3027f"
        );
    }

    #[test]
    fn manifest_errors_name_the_field_and_the_place() {
        let unknown = check(
            &format!("{HELLO}colour = \"red\"\n"),
            Some(Bytes::from_static(b"x")),
        )
        .unwrap_err();
        assert!(matches!(unknown, AppError::BadRequest(_)));
        let msg = unknown.to_string();
        assert!(
            msg.contains("unknown field `colour`") && msg.contains("line 6"),
            "{msg}"
        );
        let missing = check(
            "[app]\n[runtime]\nkind = \"wasm\"\ncomponent = \"a.wasm\"\n",
            Some(Bytes::from_static(b"x")),
        )
        .unwrap_err();
        assert!(
            missing.to_string().contains("missing field `name`"),
            "{missing}"
        );
    }

    #[test]
    fn microvm_apps_take_an_image_tarball_or_an_ext4_rootfs() {
        let rootfs =
            "[app]\nname = \"vm\"\n[runtime]\nkind = \"firecracker\"\nrootfs = \"r.ext4\"\n";
        let image = "[app]\nname = \"vm\"\n[runtime]\nkind = \"firecracker\"\nimage = \"hello\"\n";
        let mut ext4 = vec![0u8; 4096];
        ext4[1080..1082].copy_from_slice(&[0x53, 0xEF]);
        let mut tar = vec![0u8; 1024];
        tar[257..262].copy_from_slice(b"ustar");
        assert!(check(rootfs, Some(Bytes::from(ext4.clone()))).is_ok());
        assert!(check(image, Some(Bytes::from(tar.clone()))).is_ok());
        let e = check(rootfs, Some(Bytes::from(tar))).unwrap_err();
        assert!(matches!(e, AppError::InvalidArtifact(_)), "{e}");
        assert!(e.to_string().contains("not an ext4"), "{e}");
        let e = check(image, Some(Bytes::from(ext4))).unwrap_err();
        assert!(matches!(e, AppError::InvalidArtifact(_)), "{e}");
        assert!(e.to_string().contains("docker save"), "{e}");
        let e = check(image, None).unwrap_err();
        assert!(matches!(e, AppError::BadRequest(_)), "{e}");
        assert!(e.to_string().contains("missing or empty"), "{e}");
        let limits = UploadLimits { app: 1, image: 2 };
        assert_eq!(limits.for_kind(RuntimeKind::Firecracker).0, 2);
    }

    #[test]
    fn empty_or_mismatched_artifacts_are_refused() {
        let e = check(HELLO, None).unwrap_err();
        assert!(e.to_string().contains("missing part `artifact`"), "{e}");
        let e = check(HELLO, Some(Bytes::new())).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        let pinned = format!(
            "[app]\nname = \"hello\"\n[runtime]\nkind = \"wasm\"\nartifact = \"sha256:{}\"\n",
            "0".repeat(64)
        );
        let e = check(&pinned, Some(Bytes::from_static(b"\0asm"))).unwrap_err();
        assert!(matches!(e, AppError::InvalidArtifact(_)), "{e}");
        assert!(
            e.to_string()
                .contains("the manifest names runtime.artifact"),
            "{e}"
        );
    }

    #[test]
    fn docker_apps_have_their_own_size_limit() {
        let limits = UploadLimits {
            app: 64 << 20,
            image: 1024 << 20,
        };
        assert_eq!(limits.body(), 1024 << 20);
        assert_eq!(limits.for_kind(RuntimeKind::Wasm).0, 64 << 20);
        assert_eq!(limits.for_kind(RuntimeKind::Docker).0, 1024 << 20);
        let e = too_large(&limits, Some(RuntimeKind::Wasm)).to_string();
        assert!(e.contains("64 MiB; --max-app-upload-mib"), "{e}");
        let e = too_large(&limits, Some(RuntimeKind::Docker)).to_string();
        assert!(e.contains("1024 MiB; --max-image-upload-mib"), "{e}");
        let e = too_large(&limits, None).to_string();
        assert!(
            e.contains("--max-image-upload-mib") && e.contains("--max-app-upload-mib"),
            "{e}"
        );
    }

    #[test]
    fn docker_apps_take_a_tarball_or_nothing() {
        let docker = "[app]\nname = \"web\"\n[runtime]\nkind = \"docker\"\nimage = \"nginx\"\n";
        let bare = check(docker, None).unwrap();
        assert!(bare.artifact.is_empty());
        assert_eq!(
            bare.digest.as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "no artifact: the digest of nothing"
        );
        let mut tar = vec![0u8; 1024];
        tar[257..262].copy_from_slice(b"ustar");
        assert!(check(docker, Some(Bytes::from(tar))).is_ok());
        let e = check(docker, Some(Bytes::from_static(b"\0asm not a tar"))).unwrap_err();
        assert!(matches!(e, AppError::InvalidArtifact(_)), "{e}");
        assert!(e.to_string().contains("docker save"), "{e}");
    }
}
