//! Test support shared by every crate's integration tests: capability checks that skip (or, with
//! `TABBIFY_REQUIRE_ALL=1`, fail) when the machine lacks something, locating the workspace's built
//! binaries, child processes that are killed when a test ends, however it ends, and metric
//! expositions read sample by sample.

pub mod capability;
pub mod cluster;
pub mod metrics;
pub mod netns;
pub mod process;

pub use capability::{Capability, nixpkgs_lib, require};
pub use process::{ChildGuard, bin_path, processes_mentioning, read_ready_line, workspace_root};

/// Skips the calling test (returns early) when `cap` is missing, unless `TABBIFY_REQUIRE_ALL=1`,
/// in which case the test fails with the reason.
#[macro_export]
macro_rules! require {
    ($cap:expr) => {
        if !$crate::capability::require($cap) {
            return;
        }
    };
}
