//! Mesh tags: what a node offers (`wasm`, `docker`, `firecracker`, or an operator's own label).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Tag every node carries.
pub const TAG_WASM: &str = "wasm";
/// Tag of a node whose Docker daemon answers.
pub const TAG_DOCKER: &str = "docker";
/// Tag of a node with usable KVM and a VMM that can use it.
pub const TAG_FIRECRACKER: &str = "firecracker";

const MAX_TAG_LEN: usize = 63;

/// A validated tag: 1 to 63 characters of `[a-z0-9-]`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Tag(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    #[error("tag is empty")]
    Empty,
    #[error("tag {0:?} is longer than {MAX_TAG_LEN} characters")]
    TooLong(String),
    #[error(
        "tag {0:?} has invalid syntax: use lowercase letters, digits and '-', starting with a letter or digit"
    )]
    Syntax(String),
}

impl Tag {
    pub fn new(s: impl Into<String>) -> Result<Self, TagError> {
        let s = s.into();
        if s.is_empty() {
            return Err(TagError::Empty);
        }
        if s.len() > MAX_TAG_LEN {
            return Err(TagError::TooLong(s));
        }
        let first_ok = s
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok = s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !first_ok || !rest_ok {
            return Err(TagError::Syntax(s));
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn wasm() -> Self {
        Self(TAG_WASM.into())
    }
    pub fn docker() -> Self {
        Self(TAG_DOCKER.into())
    }
    pub fn firecracker() -> Self {
        Self(TAG_FIRECRACKER.into())
    }
}

impl TryFrom<String> for Tag {
    type Error = TagError;
    fn try_from(s: String) -> Result<Self, TagError> {
        Tag::new(s)
    }
}

impl From<Tag> for String {
    fn from(t: Tag) -> String {
        t.0
    }
}

impl FromStr for Tag {
    type Err = TagError;
    fn from_str(s: &str) -> Result<Self, TagError> {
        Tag::new(s)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_well_formed_tags() {
        for ok in [
            "wasm",
            "docker",
            "firecracker",
            "gpu-a100",
            "eu-west-1",
            "7",
        ] {
            assert_eq!(Tag::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_bad_tags_with_reason() {
        assert_eq!(Tag::new(""), Err(TagError::Empty));
        assert!(matches!(Tag::new("Wasm"), Err(TagError::Syntax(_))));
        assert!(matches!(Tag::new("-x"), Err(TagError::Syntax(_))));
        assert!(matches!(Tag::new("a b"), Err(TagError::Syntax(_))));
        assert!(matches!(
            Tag::new("a".repeat(64)),
            Err(TagError::TooLong(_))
        ));
    }

    #[test]
    fn deserialising_validates() {
        let err = serde_json::from_str::<Tag>("\"NOPE!\"").unwrap_err();
        assert!(err.to_string().contains("invalid syntax"), "{err}");
    }
}
