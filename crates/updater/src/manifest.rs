//! The release manifest a release server publishes at `<release-url>/manifest.json`: which
//! versions exist, the files of each with their size and sha256, and the microVM guest kernel.
//! Everything in it names a path on disk or on the server, so it is checked here, once, before
//! anything is downloaded: a manifest that passes [`ReleaseManifest::parse`] cannot point outside
//! the release URL or the install root.
//!
//! ```json
//! {
//!   "schema": 1,
//!   "latest": "0.2.0",
//!   "releases": [
//!     { "version": "0.2.0",
//!       "files": [ { "name": "tabbify-supervisor", "path": "0.2.0/tabbify-supervisor",
//!                    "size": 12345678, "sha256": "9f86d0…" } ] }
//!   ],
//!   "guest_kernel": { "name": "vmlinux", "path": "kernels/vmlinux-6.1", "size": 1, "sha256": "…" }
//! }
//! ```
//!
//! The manifest comes from our own release tooling, so unknown fields are ignored (a newer
//! server can add some without breaking older nodes).

use serde::Deserialize;
use std::collections::HashSet;

/// The manifest schema this build understands.
pub const MANIFEST_SCHEMA: u32 = 1;
/// The file name of the manifest under the release URL.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The largest manifest we read.
pub const MANIFEST_MAX_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ReleaseManifest {
    pub schema: u32,
    /// The version a node installs when none is asked for.
    pub latest: String,
    pub releases: Vec<Release>,
    #[serde(default)]
    pub guest_kernel: Option<FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Release {
    pub version: String,
    pub files: Vec<FileEntry>,
}

/// One file to download: installed as `name`, fetched from `<release-url>/<path>`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("the release manifest is not valid JSON of the expected shape: {0}")]
    Json(String),
    #[error(
        "the release manifest has schema {found}; this build understands schema {MANIFEST_SCHEMA}"
    )]
    Schema { found: u32 },
    #[error(
        "version {0:?} is not a valid release version (1-64 characters of A-Z a-z 0-9 . _ + -, \
         not starting with '.')"
    )]
    BadVersion(String),
    #[error("release {0} is listed twice")]
    DuplicateVersion(String),
    #[error("\"latest\" names {0}, which is not among the releases")]
    LatestMissing(String),
    #[error("release {0} has no files")]
    NoFiles(String),
    #[error(
        "file name {0:?} is not valid (1-64 characters of A-Z a-z 0-9 . _ -, not starting with '.')"
    )]
    BadFileName(String),
    #[error("release {version} lists {name} twice")]
    DuplicateFile { version: String, name: String },
    #[error(
        "path {0:?} is not a relative path of plain segments (A-Z a-z 0-9 . _ + -, no '.' or '..')"
    )]
    BadPath(String),
    #[error("sha256 of {name} is {sha256:?}: expected 64 lowercase hex digits")]
    BadSha256 { name: String, sha256: String },
    #[error("release {version} does not include {name}, which this node needs")]
    MissingFile { version: String, name: String },
    #[error("version {0} is not in the release manifest (available: {1})")]
    UnknownVersion(String, String),
}

impl ReleaseManifest {
    /// Parses and checks a manifest.
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        let m: ReleaseManifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    fn validate(&self) -> Result<(), ManifestError> {
        if self.schema != MANIFEST_SCHEMA {
            return Err(ManifestError::Schema { found: self.schema });
        }
        let mut versions = HashSet::new();
        for r in &self.releases {
            check_version(&r.version)?;
            if !versions.insert(r.version.as_str()) {
                return Err(ManifestError::DuplicateVersion(r.version.clone()));
            }
            if r.files.is_empty() {
                return Err(ManifestError::NoFiles(r.version.clone()));
            }
            let mut names = HashSet::new();
            for f in &r.files {
                f.validate()?;
                if !names.insert(f.name.as_str()) {
                    return Err(ManifestError::DuplicateFile {
                        version: r.version.clone(),
                        name: f.name.clone(),
                    });
                }
            }
        }
        check_version(&self.latest)?;
        if !versions.contains(self.latest.as_str()) {
            return Err(ManifestError::LatestMissing(self.latest.clone()));
        }
        if let Some(k) = &self.guest_kernel {
            k.validate()?;
        }
        Ok(())
    }

    /// The release to install: `requested`, or `latest`.
    pub fn select(&self, requested: Option<&str>) -> Result<&Release, ManifestError> {
        let want = requested.unwrap_or(&self.latest);
        self.releases
            .iter()
            .find(|r| r.version == want)
            .ok_or_else(|| {
                ManifestError::UnknownVersion(
                    want.to_string(),
                    self.releases
                        .iter()
                        .map(|r| r.version.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                )
            })
    }
}

impl Release {
    /// Checks that every file in `required` is part of this release.
    pub fn require_files(&self, required: &[&str]) -> Result<(), ManifestError> {
        for name in required {
            if !self.files.iter().any(|f| f.name == *name) {
                return Err(ManifestError::MissingFile {
                    version: self.version.clone(),
                    name: (*name).to_string(),
                });
            }
        }
        Ok(())
    }
}

impl FileEntry {
    fn validate(&self) -> Result<(), ManifestError> {
        check_file_name(&self.name)?;
        check_path(&self.path)?;
        let hex_ok = self.sha256.len() == 64
            && self
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex_ok {
            return Err(ManifestError::BadSha256 {
                name: self.name.clone(),
                sha256: self.sha256.clone(),
            });
        }
        Ok(())
    }
}

/// A release version is a directory name on disk: plain characters only.
pub fn check_version(v: &str) -> Result<(), ManifestError> {
    let ok = (1..=64).contains(&v.len())
        && !v.starts_with('.')
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ManifestError::BadVersion(v.to_string()))
    }
}

fn check_file_name(n: &str) -> Result<(), ManifestError> {
    let ok = (1..=64).contains(&n.len())
        && !n.starts_with('.')
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ManifestError::BadFileName(n.to_string()))
    }
}

fn check_path(p: &str) -> Result<(), ManifestError> {
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
    };
    if p.len() <= 512 && p.split('/').all(segment_ok) {
        Ok(())
    } else {
        Err(ManifestError::BadPath(p.to_string()))
    }
}

/// The version a binary of release `release_version` reports in `/health`: the release version
/// without semver build metadata (`0.2.0+build.7` reports `0.2.0`).
pub fn reported_version(release_version: &str) -> &str {
    release_version
        .split_once('+')
        .map_or(release_version, |(core, _)| core)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn manifest_json(latest: &str, file_name: &str, path: &str, sha: &str) -> String {
        format!(
            r#"{{"schema":1,"latest":"{latest}","future_field":true,
                "releases":[{{"version":"0.2.0","files":[
                  {{"name":"{file_name}","path":"{path}","size":4,"sha256":"{sha}"}}]}}]}}"#
        )
    }

    #[test]
    fn parses_a_good_manifest_and_ignores_unknown_fields() {
        let m = ReleaseManifest::parse(
            manifest_json(
                "0.2.0",
                "tabbify-supervisor",
                "0.2.0/tabbify-supervisor",
                SHA,
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(m.select(None).unwrap().version, "0.2.0");
        assert_eq!(m.select(Some("0.2.0")).unwrap().files[0].size, 4);
        let err = m.select(Some("9.9.9")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "version 9.9.9 is not in the release manifest (available: 0.2.0)"
        );
    }

    #[test]
    fn rejects_paths_that_leave_the_release_url() {
        for bad in [
            "../etc/passwd",
            "/abs",
            "a//b",
            "a/./b",
            "http://evil/x",
            "a?b",
        ] {
            let err = ReleaseManifest::parse(manifest_json("0.2.0", "f", bad, SHA).as_bytes())
                .unwrap_err();
            assert_eq!(err, ManifestError::BadPath(bad.into()), "{bad}");
        }
    }

    #[test]
    fn rejects_names_versions_and_hashes_that_are_not_plain() {
        let err = ReleaseManifest::parse(manifest_json("0.2.0", "../x", "p", SHA).as_bytes())
            .unwrap_err();
        assert_eq!(err, ManifestError::BadFileName("../x".into()));
        let err =
            ReleaseManifest::parse(manifest_json("0.2.0", "f", "p", "ABC").as_bytes()).unwrap_err();
        assert!(matches!(err, ManifestError::BadSha256 { .. }), "{err}");
        let err =
            ReleaseManifest::parse(manifest_json("1.0.0", "f", "p", SHA).as_bytes()).unwrap_err();
        assert_eq!(err, ManifestError::LatestMissing("1.0.0".into()));
        for bad in ["", ".hidden", "a/b", "x y", &"9".repeat(65)] {
            assert!(check_version(bad).is_err(), "{bad:?}");
        }
        for good in ["0.2.0", "0.2.0+build.7", "1.0.0-rc.1"] {
            assert!(check_version(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn rejects_duplicates_empty_releases_and_other_schemas() {
        let dup_files = format!(
            r#"{{"schema":1,"latest":"1","releases":[{{"version":"1","files":[
                {{"name":"f","path":"a","size":1,"sha256":"{SHA}"}},
                {{"name":"f","path":"b","size":1,"sha256":"{SHA}"}}]}}]}}"#
        );
        assert!(matches!(
            ReleaseManifest::parse(dup_files.as_bytes()),
            Err(ManifestError::DuplicateFile { .. })
        ));
        let empty = r#"{"schema":1,"latest":"1","releases":[{"version":"1","files":[]}]}"#;
        assert_eq!(
            ReleaseManifest::parse(empty.as_bytes()),
            Err(ManifestError::NoFiles("1".into()))
        );
        let schema2 = r#"{"schema":2,"latest":"1","releases":[]}"#;
        assert_eq!(
            ReleaseManifest::parse(schema2.as_bytes()),
            Err(ManifestError::Schema { found: 2 })
        );
        assert!(matches!(
            ReleaseManifest::parse(b"{\"schema\":1}"),
            Err(ManifestError::Json(_))
        ));
    }

    #[test]
    fn required_files_are_named_when_missing() {
        let m =
            ReleaseManifest::parse(manifest_json("0.2.0", "other", "p", SHA).as_bytes()).unwrap();
        let err = m
            .select(None)
            .unwrap()
            .require_files(&["tabbify-supervisor"])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "release 0.2.0 does not include tabbify-supervisor, which this node needs"
        );
    }

    #[test]
    fn build_metadata_is_not_part_of_the_reported_version() {
        assert_eq!(reported_version("0.2.0+build.7"), "0.2.0");
        assert_eq!(reported_version("0.2.0"), "0.2.0");
        assert_eq!(reported_version("1.0.0-rc.1+x"), "1.0.0-rc.1");
    }
}
