//! Reading a deploy request: `multipart/form-data` with the parts `manifest` (the text of a
//! `tabbify.toml`) and `artifact` (the `.wasm` bytes), so that
//! `curl -F manifest=@tabbify.toml -F artifact=@app.wasm` deploys. Every way the request can be
//! wrong gets its own precise error; the runner's load errors come later, from the runner.

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

const PARTS: &str = "a deploy takes the multipart parts `manifest` (tabbify.toml) and `artifact` (the .wasm component)";

fn part_error(e: MultipartError, limit: usize) -> AppError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        too_large(limit)
    } else {
        AppError::BadRequest(format!("unreadable multipart body: {}", e.body_text()))
    }
}

pub fn too_large(limit: usize) -> AppError {
    AppError::TooLarge(format!(
        "the upload is larger than this node's limit of {} bytes ({} MiB; --max-app-upload-mib)",
        limit,
        limit / (1024 * 1024)
    ))
}

/// Reads the parts of a deploy. `limit` is the body limit in force (for the 413 message).
pub async fn read_upload(mut multipart: Multipart, limit: usize) -> Result<Upload, AppError> {
    let mut manifest_text: Option<String> = None;
    let mut artifact: Option<Bytes> = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| part_error(e, limit))?
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
        let bytes = field.bytes().await.map_err(|e| part_error(e, limit))?;
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
    let Some(artifact) = artifact else {
        return Err(AppError::BadRequest(format!(
            "missing part `artifact`; {PARTS}"
        )));
    };
    check(&text, artifact)
}

/// Validates the manifest against this node and the artifact against the manifest.
pub fn check(manifest_text: &str, artifact: Bytes) -> Result<Upload, AppError> {
    let manifest =
        Manifest::from_toml_str(manifest_text).map_err(|e| AppError::BadRequest(e.to_string()))?;
    let kind = manifest.runtime.kind();
    if kind != RuntimeKind::Wasm {
        return Err(AppError::Unsupported(format!(
            "runtime.kind = \"{kind}\" is not run by this node's supervisor yet; it runs \"wasm\" apps"
        )));
    }
    if artifact.is_empty() {
        return Err(AppError::BadRequest(
            "the artifact part is empty; send the .wasm component".into(),
        ));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str =
        "[app]\nname = \"hello\"\n[runtime]\nkind = \"wasm\"\ncomponent = \"app.wasm\"\n";

    #[test]
    fn accepts_a_wasm_manifest_and_hashes_the_artifact() {
        let up = check(HELLO, Bytes::from_static(b"\0asm")).unwrap();
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
            Bytes::from_static(b"x"),
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
            Bytes::from_static(b"x"),
        )
        .unwrap_err();
        assert!(
            missing.to_string().contains("missing field `name`"),
            "{missing}"
        );
    }

    #[test]
    fn other_runtimes_and_empty_or_mismatched_artifacts_are_refused() {
        let docker = "[app]\nname = \"web\"\n[runtime]\nkind = \"docker\"\nimage = \"nginx\"\n";
        let e = check(docker, Bytes::from_static(b"x")).unwrap_err();
        assert!(
            matches!(e, AppError::Unsupported(_)) && e.to_string().contains("docker"),
            "{e}"
        );
        let e = check(HELLO, Bytes::new()).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        let pinned = format!(
            "[app]\nname = \"hello\"\n[runtime]\nkind = \"wasm\"\nartifact = \"sha256:{}\"\n",
            "0".repeat(64)
        );
        let e = check(&pinned, Bytes::from_static(b"\0asm")).unwrap_err();
        assert!(matches!(e, AppError::InvalidArtifact(_)), "{e}");
        assert!(
            e.to_string()
                .contains("the manifest names runtime.artifact"),
            "{e}"
        );
    }
}
