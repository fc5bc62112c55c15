//! Operator tokens: who may use a node's control API and the appsrv's uploads.
//!
//! The coordinator holds one ed25519 signing key (`<data-dir>/signing-key`) and mints short-lived
//! tokens with it; each names its holder, when it was issued and when it expires, a random id,
//! the scopes it grants (`node:read`, `node:write`, `artifacts:write`) and, optionally, the node
//! names or tags it is limited to. A token is self-contained: a node checks it offline with the
//! public key it pinned at join, so the control API keeps working while the coordinator is down,
//! and the coordinator stores no token at all.
//!
//! Text forms (all base64url without padding):
//! - token: `tbfo_<payload>.<signature>`, the payload being the JSON claims;
//! - public key: `tbfk_<32 bytes>`;
//! - signing-key file: one line `tbfs_<32-byte seed>`, mode 0600, written atomically.
//!
//! [`verify`] is pure (the clock is a parameter) and says precisely why a token is refused.

mod keys;
mod token;
mod verify;

pub use keys::{KeyError, PUBLIC_KEY_PREFIX, SIGNING_KEY_PREFIX, SigningKey, VerifyingKey};
pub use tabbify_wire::operator::Scope;
pub use token::{Claims, Grant, TOKEN_PREFIX, TOKEN_VERSION, mint};
pub use verify::{CLOCK_SKEW_SECS, NodeFacts, Refusal, Requirement, bearer_value, verify};
