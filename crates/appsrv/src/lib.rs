//! `tabbify-appsrv`: the content-addressed artifact store apps are deployed from, and the node's
//! side of it. Blobs are named by their sha256 digest; an upload whose bytes do not hash to the
//! name it was sent under is refused and leaves nothing behind; downloads resume where a cut
//! connection left them and are verified before anyone may use them.

pub mod fetch;
pub mod metrics;
pub mod server;
pub mod store;
pub mod tls_serve;

pub use fetch::{BlobFetcher, FetchError, Fetched};
pub use store::{BlobStore, PutOutcome, StoreError};

/// Computes the `sha256:<hex>` digest of bytes in memory.
pub fn digest_of(bytes: &[u8]) -> tabbify_wire::app::ArtifactDigest {
    use sha2::Digest;
    let hex = hex::encode(sha2::Sha256::digest(bytes));
    // A sha256 hex string always parses.
    tabbify_wire::app::ArtifactDigest::parse(format!("sha256:{hex}"))
        .unwrap_or_else(|_| unreachable!("sha256 hex is 64 lowercase digits"))
}
