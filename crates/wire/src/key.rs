//! A WireGuard (X25519) public key as it travels: standard base64 of 32 bytes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A validated base64 X25519 public key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PublicKeyB64 {
    text: String,
    bytes: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("public key is not valid base64: {0}")]
    Base64(String),
    #[error("public key must be 32 bytes (X25519), got {0}")]
    Length(usize),
}

impl PublicKeyB64 {
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let raw = STANDARD
            .decode(text.trim())
            .map_err(|e| KeyError::Base64(e.to_string()))?;
        let bytes: [u8; 32] = raw
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::Length(raw.len()))?;
        Ok(Self::from_bytes(bytes))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self {
            text: STANDARD.encode(bytes),
            bytes,
        }
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl TryFrom<String> for PublicKeyB64 {
    type Error = KeyError;
    fn try_from(s: String) -> Result<Self, KeyError> {
        Self::parse(&s)
    }
}

impl From<PublicKeyB64> for String {
    fn from(k: PublicKeyB64) -> String {
        k.text
    }
}

impl fmt::Display for PublicKeyB64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_normalises() {
        let k = PublicKeyB64::from_bytes([7; 32]);
        let parsed = PublicKeyB64::parse(k.as_str()).unwrap();
        assert_eq!(parsed, k);
        assert_eq!(parsed.as_bytes(), &[7; 32]);
    }

    #[test]
    fn rejects_wrong_length_and_garbage() {
        let short = STANDARD.encode([1u8; 31]);
        assert_eq!(PublicKeyB64::parse(&short), Err(KeyError::Length(31)));
        assert!(matches!(
            PublicKeyB64::parse("not base64!"),
            Err(KeyError::Base64(_))
        ));
    }
}
