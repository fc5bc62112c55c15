//! The signing key (coordinator, or a `--no-mesh` node) and its public half, with their text
//! forms and the key file.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Prefix of the public key's text form.
pub const PUBLIC_KEY_PREFIX: &str = "tbfk_";
/// Prefix of the signing-key file's line.
pub const SIGNING_KEY_PREFIX: &str = "tbfs_";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} does not hold a signing key (expected one line `{SIGNING_KEY_PREFIX}…`)")]
    NotASigningKey { path: PathBuf },
    #[error("{path} is readable by others; chmod 600 it")]
    TooOpen { path: PathBuf },
    #[error("not a public key: {0} (expected `{PUBLIC_KEY_PREFIX}` and 32 bytes in base64url)")]
    NotAPublicKey(String),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + use<> {
    let path = path.to_path_buf();
    move |source| KeyError::Io {
        action,
        path,
        source,
    }
}

/// The key that signs tokens. Its bytes never appear in `Debug` output or logs.
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SigningKey")
            .field(&self.verifying_key().to_text())
            .finish()
    }
}

impl SigningKey {
    /// A new random key (rand's thread RNG is a CSPRNG seeded from the OS).
    pub fn generate() -> Self {
        Self::from_seed(rand::random::<[u8; 32]>())
    }

    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey(self.0.verifying_key())
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.0.sign(message).to_bytes()
    }

    fn to_file_text(&self) -> String {
        format!(
            "{SIGNING_KEY_PREFIX}{}\n",
            URL_SAFE_NO_PAD.encode(self.0.to_bytes())
        )
    }

    fn from_file_text(text: &str, path: &Path) -> Result<Self, KeyError> {
        let bad = || KeyError::NotASigningKey {
            path: path.to_path_buf(),
        };
        let b64 = text
            .trim()
            .strip_prefix(SIGNING_KEY_PREFIX)
            .ok_or_else(bad)?;
        let bytes = URL_SAFE_NO_PAD.decode(b64).map_err(|_| bad())?;
        let seed: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
        Ok(Self::from_seed(seed))
    }

    /// Reads the key at `path`.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(io("read", path))?;
        Self::from_file_text(&text, path)
    }

    /// Writes the key to `path` (mode 0600, atomically).
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        tabbify_fsutil::atomic_write(path, self.to_file_text().as_bytes(), 0o600)
            .map_err(io("write", path))
    }

    /// Reads the key at `path`, or makes one and writes it there when the file does not exist.
    /// Returns whether it was created. A file that exists but is not a key is an error (never
    /// silently replaced: every token signed with it would stop working), and so is a key file
    /// others can read (whoever read it can mint tokens).
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), KeyError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let key = Self::from_file_text(&text, path)?;
                if let Ok(meta) = std::fs::metadata(path)
                    && meta.permissions().mode() & 0o077 != 0
                {
                    return Err(KeyError::TooOpen {
                        path: path.to_path_buf(),
                    });
                }
                Ok((key, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                key.save(path)?;
                Ok((key, true))
            }
            Err(e) => Err(io("read", path)(e)),
        }
    }
}

/// The public half: what nodes and the appsrv verify tokens with.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VerifyingKey(pub(crate) ed25519_dalek::VerifyingKey);

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl std::fmt::Display for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl VerifyingKey {
    /// `tbfk_<base64url>`.
    pub fn to_text(&self) -> String {
        format!(
            "{PUBLIC_KEY_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(self.0.as_bytes())
        )
    }

    pub fn from_text(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let shown: String = text.chars().take(60).collect();
        let bad = |why: &str| KeyError::NotAPublicKey(format!("{shown:?}: {why}"));
        let b64 = text
            .strip_prefix(PUBLIC_KEY_PREFIX)
            .ok_or_else(|| bad("no prefix"))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|_| bad("not base64url"))?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| bad("not 32 bytes"))?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|_| bad("not a point on the curve"))
    }

    /// Reads a file holding the text form.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(io("read", path))?;
        Self::from_text(&text)
    }

    /// Writes the text form to `path` atomically (a public key: mode 0644).
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        tabbify_fsutil::atomic_write(path, format!("{}\n", self.to_text()).as_bytes(), 0o644)
            .map_err(io("write", path))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn key_file_is_private_created_once_and_reloaded() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("signing-key");
        let (k1, created) = SigningKey::load_or_create(&p).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (k2, created) = SigningKey::load_or_create(&p).unwrap();
        assert!(!created);
        assert_eq!(k1.verifying_key(), k2.verifying_key());
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with(SIGNING_KEY_PREFIX) && text.ends_with('\n'));
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp file"
        );
    }

    #[test]
    fn a_file_that_is_not_a_key_is_an_error_and_left_alone() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("signing-key");
        for junk in ["hello\n", "tbfs_AAAA\n", "tbfs_!!!\n", ""] {
            std::fs::write(&p, junk).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            let err = SigningKey::load_or_create(&p).unwrap_err();
            assert!(
                matches!(err, KeyError::NotASigningKey { .. }),
                "{junk:?}: {err}"
            );
            assert_eq!(std::fs::read_to_string(&p).unwrap(), junk);
        }
    }

    #[test]
    fn a_key_readable_by_others_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("signing-key");
        SigningKey::generate().save(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = SigningKey::load_or_create(&p).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn public_key_text_round_trips_and_rejects_junk() {
        let k = SigningKey::from_seed([7; 32]).verifying_key();
        let text = k.to_text();
        assert!(text.starts_with(PUBLIC_KEY_PREFIX));
        assert_eq!(VerifyingKey::from_text(&format!(" {text}\n")).unwrap(), k);
        for junk in [
            "",
            "tbfk_",
            "tbfk_abc",
            "ed25519:abc",
            &text[1..],
            &format!("{text}AA"),
        ] {
            assert!(VerifyingKey::from_text(junk).is_err(), "{junk:?}");
        }
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k.pub");
        k.save(&p).unwrap();
        assert_eq!(VerifyingKey::load(&p).unwrap(), k);
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let k = SigningKey::from_seed([9; 32]);
        let secret = URL_SAFE_NO_PAD.encode([9u8; 32]);
        assert!(!format!("{k:?}").contains(&secret));
    }
}
