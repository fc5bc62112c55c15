//! The image of a docker app: already on the node's daemon, or loaded from the `docker save`
//! tarball deployed with the app. The node never pulls (registries may be out of reach, and a
//! deploy must not hang on one). A tarball is loaded only when the daemon does not already hold
//! the image it names under the same id, so restarts do not reload it.

use super::DockerError;
use bollard::Docker;
use bollard::query_parameters::ImportImageOptionsBuilder;
use futures_util::StreamExt;
use serde::Deserialize;
use std::io::Read;
use std::path::{Path, PathBuf};

/// One image of a `docker save` tarball (an entry of its `manifest.json`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SavedImage {
    /// `<hex>.json` (classic layout) or `blobs/sha256/<hex>` (OCI layout).
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
}

impl SavedImage {
    /// The image id the daemon gives this image: `sha256:` and the config's digest.
    pub fn image_id(&self) -> Option<String> {
        let name = self.config.rsplit('/').next()?;
        let hex = name.strip_suffix(".json").unwrap_or(name);
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| format!("sha256:{hex}"))
    }

    fn tags(&self) -> impl Iterator<Item = &String> {
        self.repo_tags.iter().flatten()
    }
}

/// `reference` in the short form `docker save` writes: `docker.io/` and `library/` dropped,
/// `:latest` added when there is no tag or digest.
pub fn normalize_reference(reference: &str) -> String {
    let short = reference
        .strip_prefix("docker.io/")
        .unwrap_or(reference)
        .trim_start_matches("library/");
    let last = short.rsplit('/').next().unwrap_or(short);
    if last.contains(':') || last.contains('@') {
        short.to_string()
    } else {
        format!("{short}:latest")
    }
}

/// Reads `manifest.json` out of a `docker save` tarball.
pub fn read_saved(bytes: &[u8], path: &Path) -> Result<Vec<SavedImage>, DockerError> {
    let bad = |message: String| DockerError::Tarball {
        path: path.to_path_buf(),
        message,
    };
    let mut archive = tar::Archive::new(bytes);
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("not a tar archive: {e}")))?;
        let is_manifest = entry
            .path()
            .is_ok_and(|p| p.as_os_str() == "manifest.json" || p.as_os_str() == "./manifest.json");
        if !is_manifest {
            continue;
        }
        let mut text = Vec::new();
        entry
            .read_to_end(&mut text)
            .map_err(|e| bad(format!("cannot read manifest.json: {e}")))?;
        let images: Vec<SavedImage> = serde_json::from_slice(&text)
            .map_err(|e| bad(format!("manifest.json is not a docker save manifest: {e}")))?;
        if images.is_empty() {
            return Err(bad("manifest.json names no image".into()));
        }
        return Ok(images);
    }
    Err(bad(
        "it has no manifest.json (make it with `docker save IMAGE -o image.tar`)".into(),
    ))
}

/// The image of `images` that `reference` names (by tag, or by id for `sha256:...`).
pub fn find<'a>(images: &'a [SavedImage], reference: &str) -> Option<&'a SavedImage> {
    if reference.starts_with("sha256:") {
        return images
            .iter()
            .find(|i| i.image_id().as_deref() == Some(reference));
    }
    let wanted = normalize_reference(reference);
    images
        .iter()
        .find(|i| i.tags().any(|t| normalize_reference(t) == wanted))
}

fn holds(images: &[SavedImage]) -> String {
    let tags: Vec<&str> = images
        .iter()
        .flat_map(|i| i.tags().map(String::as_str))
        .collect();
    if tags.is_empty() {
        "only untagged images".into()
    } else {
        tags.join(", ")
    }
}

/// What `ensure` did, for the app log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The daemon already had the image.
    Present,
    /// Loaded from the tarball at this path.
    Loaded(PathBuf),
}

/// The id of `reference` on the daemon, `None` when it has no such image.
async fn image_id(docker: &Docker, reference: &str) -> Result<Option<String>, DockerError> {
    match docker.inspect_image(reference).await {
        Ok(image) => Ok(Some(image.id.unwrap_or_default())),
        Err(e) if super::is_not_found(&e) => Ok(None),
        Err(e) => Err(DockerError::api("inspect the image", e)),
    }
}

/// Makes sure the daemon holds `reference`: from the tarball at `tarball` when one was deployed
/// (loaded unless the daemon has that very image already), else it must be there.
pub async fn ensure(
    docker: &Docker,
    reference: &str,
    tarball: &Path,
) -> Result<Source, DockerError> {
    let bytes = match std::fs::read(tarball) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(DockerError::ReadTarball {
                path: tarball.to_path_buf(),
                source,
            });
        }
    };
    let Some(bytes) = bytes else {
        return match image_id(docker, reference).await? {
            Some(_) => Ok(Source::Present),
            None => Err(DockerError::ImageMissing {
                image: reference.to_string(),
            }),
        };
    };
    let images = read_saved(&bytes, tarball)?;
    let Some(wanted) = find(&images, reference).and_then(SavedImage::image_id) else {
        return Err(DockerError::NotInTarball {
            image: reference.to_string(),
            holds: holds(&images),
        });
    };
    if image_id(docker, reference).await?.as_deref() == Some(wanted.as_str()) {
        return Ok(Source::Present);
    }
    let mut load = docker.import_image(
        ImportImageOptionsBuilder::default().quiet(true).build(),
        bollard::body_full(bytes.into()),
        None,
    );
    while let Some(step) = load.next().await {
        step.map_err(|e| DockerError::api("load the image tarball", e))?;
    }
    match image_id(docker, reference).await? {
        Some(id) if id == wanted => Ok(Source::Loaded(tarball.to_path_buf())),
        found => Err(DockerError::Tarball {
            path: tarball.to_path_buf(),
            message: format!(
                "after loading it, {reference} is {} on the daemon, not {wanted}",
                found.unwrap_or_else(|| "still missing".into())
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    const HEX: &str = "0050f43ee2d741193ee318a011b74813faf820d00eee1486334b1b69e385cc71";

    #[test]
    fn reads_classic_and_oci_manifests() {
        let classic = format!(
            r#"[{{"Config":"{HEX}.json","RepoTags":["tabbify-test/hello:1"],"Layers":[]}}]"#
        );
        let bytes = tarball(&[("layer/x", b"x"), ("manifest.json", classic.as_bytes())]);
        let images = read_saved(&bytes, Path::new("image.tar")).unwrap();
        let found = find(&images, "tabbify-test/hello:1").unwrap();
        assert_eq!(found.image_id().unwrap(), format!("sha256:{HEX}"));
        assert!(find(&images, "tabbify-test/hello:2").is_none());
        assert!(find(&images, &format!("sha256:{HEX}")).is_some());

        let oci = format!(r#"[{{"Config":"blobs/sha256/{HEX}","RepoTags":["hello:latest"]}}]"#);
        let images = read_saved(
            &tarball(&[("manifest.json", oci.as_bytes())]),
            Path::new("i.tar"),
        )
        .unwrap();
        assert!(
            find(&images, "hello").is_some(),
            "`hello` means hello:latest"
        );
        assert!(find(&images, "docker.io/library/hello:latest").is_some());
        assert_eq!(holds(&images), "hello:latest");
    }

    #[test]
    fn refuses_what_is_not_a_docker_save_tarball() {
        let path = Path::new("/apps/x/v1/image.tar");
        let none = read_saved(&tarball(&[("a.txt", b"a")]), path).unwrap_err();
        assert!(none.to_string().contains("no manifest.json"), "{none}");
        assert!(none.to_string().contains("/apps/x/v1/image.tar"), "{none}");
        let junk = read_saved(b"definitely not a tar archive, just some bytes", path);
        assert!(junk.is_err());
        let bad = read_saved(&tarball(&[("manifest.json", b"{}")]), path).unwrap_err();
        assert!(
            bad.to_string().contains("not a docker save manifest"),
            "{bad}"
        );
        let empty = read_saved(&tarball(&[("manifest.json", b"[]")]), path).unwrap_err();
        assert!(empty.to_string().contains("names no image"), "{empty}");
    }

    #[test]
    fn normalizes_references_like_docker_save() {
        assert_eq!(normalize_reference("nginx"), "nginx:latest");
        assert_eq!(
            normalize_reference("docker.io/library/nginx"),
            "nginx:latest"
        );
        assert_eq!(
            normalize_reference("reg:5000/team/app"),
            "reg:5000/team/app:latest"
        );
        assert_eq!(
            normalize_reference("reg:5000/team/app:2"),
            "reg:5000/team/app:2"
        );
        assert_eq!(normalize_reference("app@sha256:00"), "app@sha256:00");
    }

    #[test]
    fn image_ids_need_a_digest() {
        let img = |config: &str| SavedImage {
            config: config.into(),
            repo_tags: None,
        };
        assert_eq!(img("abc.json").image_id(), None);
        assert_eq!(
            img(&format!("blobs/sha256/{HEX}")).image_id(),
            Some(format!("sha256:{HEX}"))
        );
    }
}
