//! What `POST /v1/apps` may ask for: the operator's [`CreateAppRequest`] checked into an
//! [`AppSpec`] (the manifest parsed strictly, the artifact and the appsrv settled), and whether an
//! update changes the app enough to count as a new version.
//!
//! Pure rules, so every refusal is decided (and tested) before the store is touched: a refused
//! request changes nothing.

use tabbify_wire::app::{ArtifactDigest, Manifest, ManifestError, RuntimeKind, RuntimeSpec};
use tabbify_wire::placement::CreateAppRequest;

/// Longest accepted appsrv URL.
const MAX_URL_LEN: usize = 2048;

/// A create/update request that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct AppSpec {
    /// The manifest text as submitted.
    pub manifest_text: String,
    pub manifest: Manifest,
    pub artifact_digest: Option<ArtifactDigest>,
    pub appsrv_url: Option<String>,
}

impl AppSpec {
    pub fn runtime(&self) -> RuntimeKind {
        self.manifest.runtime.kind()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppSpecError {
    #[error("{0}")]
    Manifest(#[from] ManifestError),
    #[error(
        "the request's artifact_digest {request} disagrees with the manifest's `runtime.artifact` \
         {manifest}; give one, or the same in both"
    )]
    DigestMismatch {
        request: ArtifactDigest,
        manifest: ArtifactDigest,
    },
    #[error(
        "a wasm app needs an artifact: upload the component to the appsrv and pass its \
         artifact_digest (sha256:<hex>), or name it in the manifest's `runtime.artifact`; \
         `runtime.component` is a local path the nodes cannot read"
    )]
    MissingArtifact,
    #[error(
        "the app has an artifact but no appsrv to fetch it from: pass appsrv_url, or start the \
         coordinator with --appsrv URL"
    )]
    NoAppsrv,
    #[error("appsrv_url {url:?}: {why}")]
    BadAppsrvUrl { url: String, why: String },
}

/// Checks an appsrv URL: absolute `http` or `https` with a host, no query or fragment. Returns it
/// without a trailing slash.
pub fn check_appsrv_url(url: &str) -> Result<String, AppSpecError> {
    let bad = |why: &str| AppSpecError::BadAppsrvUrl {
        url: url.chars().take(200).collect(),
        why: why.to_string(),
    };
    if url.len() > MAX_URL_LEN {
        return Err(bad(&format!("longer than {MAX_URL_LEN} bytes")));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("must be an http:// or https:// URL"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad("must not have a query or a fragment"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// Checks a request; `default_appsrv` is the coordinator's `--appsrv`.
pub fn validate(
    req: CreateAppRequest,
    default_appsrv: Option<&str>,
) -> Result<AppSpec, AppSpecError> {
    let manifest = Manifest::from_toml_str(&req.manifest)?;
    let in_manifest = match &manifest.runtime {
        RuntimeSpec::Wasm(w) => w.artifact.clone(),
        RuntimeSpec::Docker(_) | RuntimeSpec::Firecracker(_) => None,
    };
    let artifact_digest = match (req.artifact_digest, in_manifest) {
        (Some(request), Some(manifest)) if request != manifest => {
            return Err(AppSpecError::DigestMismatch { request, manifest });
        }
        (Some(d), _) | (None, Some(d)) => Some(d),
        (None, None) => None,
    };
    if manifest.runtime.kind() == RuntimeKind::Wasm && artifact_digest.is_none() {
        return Err(AppSpecError::MissingArtifact);
    }
    let appsrv_url = match (req.appsrv_url, &artifact_digest) {
        (Some(url), _) => Some(check_appsrv_url(&url)?),
        (None, Some(_)) => Some(
            default_appsrv
                .map(str::to_string)
                .ok_or(AppSpecError::NoAppsrv)?,
        ),
        (None, None) => None,
    };
    Ok(AppSpec {
        manifest_text: req.manifest,
        manifest,
        artifact_digest,
        appsrv_url,
    })
}

/// Whether an update is a new version: the manifest text or the artifact changed. (A new appsrv
/// alone is not: the bytes are the same.)
pub fn is_new_version(
    old_manifest: &str,
    old_digest: Option<&ArtifactDigest>,
    new: &AppSpec,
) -> bool {
    old_manifest != new.manifest_text || old_digest != new.artifact_digest.as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> ArtifactDigest {
        ArtifactDigest::parse(format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }

    const COMPONENT: &str =
        "[app]\nname = \"hello\"\n[runtime]\nkind = \"wasm\"\ncomponent = \"hello.wasm\"\n";
    const DOCKER: &str =
        "[app]\nname = \"box\"\n[runtime]\nkind = \"docker\"\nimage = \"nginx:1\"\n";

    fn by_digest(c: char) -> String {
        format!(
            "[app]\nname = \"hello\"\n[runtime]\nkind = \"wasm\"\nartifact = \"{}\"\n",
            digest(c)
        )
    }

    fn req(manifest: &str, d: Option<char>, url: Option<&str>) -> CreateAppRequest {
        CreateAppRequest {
            manifest: manifest.into(),
            artifact_digest: d.map(digest),
            appsrv_url: url.map(str::to_string),
        }
    }

    const APPSRV: Option<&str> = Some("http://10.0.0.5:9000");

    #[test]
    fn a_wasm_app_takes_its_artifact_from_the_request_or_the_manifest() {
        let s = validate(req(COMPONENT, Some('a'), None), APPSRV).unwrap();
        assert_eq!(s.artifact_digest, Some(digest('a')));
        assert_eq!(s.appsrv_url.as_deref(), APPSRV);
        assert_eq!(s.runtime(), RuntimeKind::Wasm);
        let s = validate(req(&by_digest('b'), None, None), APPSRV).unwrap();
        assert_eq!(s.artifact_digest, Some(digest('b')));
        let s = validate(req(&by_digest('b'), Some('b'), None), APPSRV).unwrap();
        assert_eq!(s.artifact_digest, Some(digest('b')));
    }

    #[test]
    fn refusals() {
        assert_eq!(
            validate(req(COMPONENT, None, None), APPSRV),
            Err(AppSpecError::MissingArtifact)
        );
        assert!(matches!(
            validate(req(&by_digest('b'), Some('c'), None), APPSRV),
            Err(AppSpecError::DigestMismatch { .. })
        ));
        assert_eq!(
            validate(req(COMPONENT, Some('a'), None), None),
            Err(AppSpecError::NoAppsrv)
        );
        let err = validate(req("[app]\nname = \"x\"\ncolour = 1\n", None, None), APPSRV)
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3, column 1"), "{err}");
        assert!(err.contains("unknown field `colour`"), "{err}");
        for url in [
            "ftp://h/",
            "not a url",
            "http://h:9000/?x=1",
            "http://h/#f",
            "unix:/run/x",
        ] {
            assert!(
                matches!(
                    validate(req(COMPONENT, Some('a'), Some(url)), APPSRV),
                    Err(AppSpecError::BadAppsrvUrl { .. })
                ),
                "{url}"
            );
        }
    }

    #[test]
    fn a_docker_app_needs_no_artifact_or_appsrv() {
        let s = validate(req(DOCKER, None, None), None).unwrap();
        assert_eq!((s.artifact_digest, s.appsrv_url), (None, None));
        let s = validate(req(DOCKER, None, Some("https://a.example/")), None).unwrap();
        assert_eq!(s.appsrv_url.as_deref(), Some("https://a.example"));
    }

    #[test]
    fn versions_count_manifest_and_artifact_changes_only() {
        let s = validate(req(COMPONENT, Some('a'), None), APPSRV).unwrap();
        assert!(!is_new_version(COMPONENT, Some(&digest('a')), &s));
        assert!(is_new_version(COMPONENT, Some(&digest('b')), &s));
        assert!(is_new_version("[app]\n", Some(&digest('a')), &s));
        let moved = validate(
            req(COMPONENT, Some('a'), Some("http://elsewhere:9000")),
            APPSRV,
        )
        .unwrap();
        assert!(!is_new_version(COMPONENT, Some(&digest('a')), &moved));
    }
}
