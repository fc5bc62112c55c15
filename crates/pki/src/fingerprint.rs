//! The SHA-256 of a CA certificate's DER bytes: what a join token carries after its secret so a
//! node can tell the real coordinator from anyone else presenting a certificate.

use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CaFingerprint(pub [u8; 32]);

impl CaFingerprint {
    pub fn of_der(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }

    pub fn matches(&self, der: &[u8]) -> bool {
        Self::of_der(der) == *self
    }
}

/// 64 lowercase hex digits.
impl fmt::Display for CaFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a CA fingerprint is 64 hex digits (the SHA-256 of the CA certificate), optionally with `sha256:` before them and `:` between bytes"
)]
pub struct BadFingerprint;

/// Accepts `abcd…`, `sha256:abcd…` and OpenSSL's `AB:CD:…`.
impl FromStr for CaFingerprint {
    type Err = BadFingerprint;

    fn from_str(s: &str) -> Result<Self, BadFingerprint> {
        let s = s.trim();
        let s = s
            .strip_prefix("sha256:")
            .or_else(|| s.strip_prefix("SHA256:"))
            .unwrap_or(s);
        let compact: String = s.chars().filter(|c| *c != ':').collect();
        if compact.len() != 64 {
            return Err(BadFingerprint);
        }
        let bytes = hex::decode(compact.to_ascii_lowercase()).map_err(|_| BadFingerprint)?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| BadFingerprint)?;
        Ok(Self(arr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_accepts_openssl_form() {
        let fp = CaFingerprint::of_der(b"not really a certificate");
        let text = fp.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<CaFingerprint>().unwrap(), fp);
        assert_eq!(
            format!("sha256:{text}").parse::<CaFingerprint>().unwrap(),
            fp
        );
        let openssl: Vec<String> = fp.0.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(openssl.join(":").parse::<CaFingerprint>().unwrap(), fp);
        assert!(fp.matches(b"not really a certificate"));
        assert!(!fp.matches(b"another"));
        for bad in [
            "",
            "abc",
            &text[..63],
            &format!("{text}00"),
            &"zz".repeat(32),
        ] {
            assert_eq!(bad.parse::<CaFingerprint>(), Err(BadFingerprint), "{bad}");
        }
    }
}
