//! Getting Tabbify's binaries onto a node and moving it to a new release without losing it.
//!
//! `tabbify-fetch` reads a release manifest from a release URL, downloads a release, verifies
//! every file's sha256, installs it into `releases/<version>/` and points `current` at it
//! atomically; it also installs the microVM guest kernel. `tabbify-update` does the same for a
//! candidate, runs the candidate's check mode, swaps `current`, restarts the supervisor through a
//! pluggable command, and keeps the candidate only if `/health` is steady within a window —
//! otherwise it swaps back and quarantines the candidate.
//!
//! Decisions (`gate`, `manifest`) are pure; `download`, `fetch`, `check`, `restart` and `update`
//! do the I/O around them.

pub mod check;
pub mod download;
pub mod fetch;
pub mod gate;
pub mod health;
pub mod layout;
pub mod manifest;
pub mod restart;
pub mod update;

pub use download::ReleaseServer;
pub use layout::Layout;
pub use manifest::ReleaseManifest;

/// Logging for both binaries: stderr (the journal), `RUST_LOG` or `info`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour_on_stderr())
        .init();
}

/// Colour in log lines only for a person at a terminal: the journal and `docker logs` get plain
/// text, and `NO_COLOR` (set and not empty) turns colour off everywhere.
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
