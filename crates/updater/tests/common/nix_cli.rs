//! Debian's `nix-instantiate`, run as root without a `nixbld` group.

use std::process::Command;

pub fn nix_instantiate() -> Command {
    let mut cmd = Command::new("nix-instantiate");
    cmd.env("NIX_CONFIG", "build-users-group =");
    cmd
}
