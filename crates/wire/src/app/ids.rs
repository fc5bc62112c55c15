//! Names and identifiers of apps: the operator's app name, the supervisor's app id and the digest
//! of a staged artifact. Each is a validated string so a bad one never gets past the wire.

use serde::{Deserialize, Serialize};
use std::fmt;

const MAX_NAME_LEN: usize = 63;
const MAX_ID_LEN: usize = 128;

/// An app name: 1 to 63 characters of `[a-z0-9-]`, starting with a letter and not ending with
/// `-` (a DNS label, so it can name a host later).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AppName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppNameError {
    #[error("app name is empty")]
    Empty,
    #[error("app name {0:?} is longer than {MAX_NAME_LEN} characters")]
    TooLong(String),
    #[error(
        "app name {0:?} has invalid syntax: use lowercase letters, digits and '-', start with a letter, do not end with '-'"
    )]
    Syntax(String),
}

impl AppName {
    pub fn new(s: impl Into<String>) -> Result<Self, AppNameError> {
        let s = s.into();
        if s.is_empty() {
            return Err(AppNameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(AppNameError::TooLong(s));
        }
        let starts_ok = s.starts_with(|c: char| c.is_ascii_lowercase());
        let chars_ok = s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !starts_ok || !chars_ok || s.ends_with('-') {
            return Err(AppNameError::Syntax(s));
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AppName {
    type Error = AppNameError;
    fn try_from(s: String) -> Result<Self, AppNameError> {
        Self::new(s)
    }
}

impl std::str::FromStr for AppName {
    type Err = AppNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl From<AppName> for String {
    fn from(n: AppName) -> String {
        n.0
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The supervisor's id of one deployed app instance: 1 to 128 characters of `[A-Za-z0-9._-]`,
/// not starting with `.` (it names a directory on the node).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AppId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppIdError {
    #[error("app id is empty")]
    Empty,
    #[error("app id {0:?} is longer than {MAX_ID_LEN} characters")]
    TooLong(String),
    #[error(
        "app id {0:?} has invalid syntax: use letters, digits, '.', '_' and '-', not starting with '.'"
    )]
    Syntax(String),
}

impl AppId {
    pub fn new(s: impl Into<String>) -> Result<Self, AppIdError> {
        let s = s.into();
        if s.is_empty() {
            return Err(AppIdError::Empty);
        }
        if s.len() > MAX_ID_LEN {
            return Err(AppIdError::TooLong(s));
        }
        let chars_ok = s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !chars_ok || s.starts_with('.') {
            return Err(AppIdError::Syntax(s));
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AppId {
    type Error = AppIdError;
    fn try_from(s: String) -> Result<Self, AppIdError> {
        Self::new(s)
    }
}

impl From<AppId> for String {
    fn from(n: AppId) -> String {
        n.0
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The digest of a staged artifact: `sha256:` followed by 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ArtifactDigest(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("artifact digest {0:?} must start with \"sha256:\"")]
    Algorithm(String),
    #[error("artifact digest {0:?} must have 64 lowercase hex digits after \"sha256:\"")]
    Hex(String),
}

impl ArtifactDigest {
    pub fn parse(s: impl Into<String>) -> Result<Self, DigestError> {
        let s = s.into();
        let Some(hex) = s.strip_prefix("sha256:") else {
            return Err(DigestError::Algorithm(s));
        };
        let hex_ok = hex.len() == 64
            && hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
        if !hex_ok {
            return Err(DigestError::Hex(s));
        }
        Ok(Self(s))
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        self.0.trim_start_matches("sha256:")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ArtifactDigest {
    type Error = DigestError;
    fn try_from(s: String) -> Result<Self, DigestError> {
        Self::parse(s)
    }
}

impl From<ArtifactDigest> for String {
    fn from(d: ArtifactDigest) -> String {
        d.0
    }
}

impl fmt::Display for ArtifactDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names() {
        assert!(AppName::new("hello").is_ok());
        assert!(AppName::new("a1-b2").is_ok());
        assert_eq!(AppName::new(""), Err(AppNameError::Empty));
        for bad in ["Hello", "1app", "-app", "app-", "app_x", "app.x", "ä"] {
            assert!(
                matches!(AppName::new(bad), Err(AppNameError::Syntax(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            AppName::new("a".repeat(64)),
            Err(AppNameError::TooLong(_))
        ));
        assert!(AppName::new("a".repeat(63)).is_ok());
    }

    #[test]
    fn app_ids() {
        assert!(AppId::new("hello-01HX.v2_a").is_ok());
        assert_eq!(AppId::new(""), Err(AppIdError::Empty));
        for bad in ["..", ".hidden", "a/b", "a b", "a\0b"] {
            assert!(
                matches!(AppId::new(bad), Err(AppIdError::Syntax(_))),
                "{bad}"
            );
        }
        assert!(serde_json::from_str::<AppId>("\"../etc\"").is_err());
    }

    #[test]
    fn digests() {
        let hex = "ab".repeat(32);
        let d = ArtifactDigest::parse(format!("sha256:{hex}")).unwrap();
        assert_eq!(d.hex(), hex);
        assert!(matches!(
            ArtifactDigest::parse(format!("md5:{hex}")),
            Err(DigestError::Algorithm(_))
        ));
        assert!(matches!(
            ArtifactDigest::parse(format!("sha256:{}", "AB".repeat(32))),
            Err(DigestError::Hex(_))
        ));
        assert!(matches!(
            ArtifactDigest::parse("sha256:abc"),
            Err(DigestError::Hex(_))
        ));
    }
}
