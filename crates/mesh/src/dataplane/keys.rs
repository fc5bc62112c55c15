//! WireGuard static keys: generating a private key and deriving its public key, with boringtun's
//! re-export of x25519-dalek so the keys are exactly the ones its handshakes use.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use boringtun::x25519::{PublicKey, StaticSecret};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyTextError {
    #[error("key is not valid base64")]
    Base64,
    #[error("key must be 32 bytes, got {0}")]
    Length(usize),
}

/// A fresh private key from the OS RNG, clamped as X25519 (and `wg genkey`) do.
pub fn generate_private_key() -> [u8; 32] {
    let mut key: [u8; 32] = rand::random();
    key[0] &= 248;
    key[31] &= 127;
    key[31] |= 64;
    key
}

/// The public key of `private_key`.
pub fn public_key(private_key: &[u8; 32]) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(*private_key)).to_bytes()
}

/// Standard base64, the form `wg` and the wire types use.
pub fn encode_key(key: &[u8; 32]) -> String {
    STANDARD.encode(key)
}

/// Parses a base64 key (private or public), tolerating surrounding whitespace.
pub fn decode_key(text: &str) -> Result<[u8; 32], KeyTextError> {
    let raw = STANDARD
        .decode(text.trim())
        .map_err(|_| KeyTextError::Base64)?;
    raw.as_slice()
        .try_into()
        .map_err(|_| KeyTextError::Length(raw.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_clamped_and_distinct() {
        let a = generate_private_key();
        let b = generate_private_key();
        assert_ne!(a, b);
        assert_eq!(a[0] & 7, 0);
        assert_eq!(a[31] & 0xc0, 0x40);
    }

    #[test]
    fn public_key_matches_rfc7748_vector() {
        // RFC 7748 section 6.1, Alice's key pair.
        let private: [u8; 32] =
            hex_bytes("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let public = hex_bytes("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        assert_eq!(public_key(&private), public);
    }

    #[test]
    fn base64_round_trip_and_errors() {
        let k = generate_private_key();
        assert_eq!(decode_key(&format!(" {}\n", encode_key(&k))), Ok(k));
        assert_eq!(decode_key("!!"), Err(KeyTextError::Base64));
        assert_eq!(
            decode_key(&STANDARD.encode([0u8; 31])),
            Err(KeyTextError::Length(31))
        );
    }

    fn hex_bytes(s: &str) -> [u8; 32] {
        let v: Vec<u8> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect();
        v.try_into().unwrap()
    }
}
