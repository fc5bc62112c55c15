# The node's programs built from this repository by Nix, pinned by Cargo.lock:
#   tabbify-supervisor, tabbify-runner (beside it, where the supervisor looks first),
#   tabbify-appsrv, tabbify-fetch, tabbify-update, tabbify-vm (the microVM image tool), tcli,
#   and tabbify-vm-init, the microVM guest init, which must be a static executable (it runs as
#   PID 1 in guests without a dynamic loader), so it is built separately against musl.
#
#   pkgs.callPackage ./nixos/package.nix { }
#
# The crates come from Cargo.lock through `cargoLock.lockFile` (every entry has a checksum there;
# a git dependency would also need its hash in `cargoLock.outputHashes`). The tests do not run in
# the build: most need root, network namespaces, Docker or KVM (see scripts/test).
{
  lib,
  rustPlatform,
  pkgsStatic,
}:

let
  workspace = (lib.importTOML ../Cargo.toml).workspace.package;

  # Only what cargo reads: the workspace manifest, the lock file and crates/ (no target/, no
  # examples, no editor or CI files). cleanSourceWith rather than lib.fileset, which needs
  # Nix 2.14 (builtins.readFileType); the checks here run with Debian's Nix 2.8.
  root = toString ../.;
  src = lib.cleanSourceWith {
    name = "tabbify-node-source";
    src = ../.;
    filter =
      path: _type:
      let
        rel = lib.removePrefix "${root}/" (toString path);
      in
      rel == "Cargo.toml" || rel == "Cargo.lock" || rel == "crates" || lib.hasPrefix "crates/" rel;
  };

  common = {
    version = workspace.version;
    inherit src;
    cargoLock.lockFile = ../Cargo.lock;
    doCheck = false;
  };

  # The workspace packages whose binaries the node runs.
  nodePackages = [
    "tabbify-supervisor"
    "tabbify-runner"
    "tabbify-appsrv"
    "tabbify-updater"
    "tabbify-vm"
    "tcli"
  ];

  vmInit = pkgsStatic.rustPlatform.buildRustPackage (
    common
    // {
      pname = "tabbify-vm-init";
      cargoBuildFlags = [
        "-p"
        "tabbify-vm-init"
      ];
      meta.platforms = [ "x86_64-linux" ];
    }
  );
in
rustPlatform.buildRustPackage (
  common
  // {
    pname = "tabbify-node";
    cargoBuildFlags = lib.concatMap (p: [
      "-p"
      p
    ]) nodePackages;

    # The runner finds the guest init beside its own executable.
    postInstall = ''
      install -Dm0755 ${vmInit}/bin/tabbify-vm-init $out/bin/tabbify-vm-init
    '';

    passthru = {
      inherit vmInit nodePackages;
    };

    meta = {
      description = "Tabbify node: joins a private WireGuard mesh and runs apps (wasm, Docker, microVM)";
      license = lib.licenses.asl20;
      mainProgram = "tabbify-supervisor";
      platforms = [ "x86_64-linux" ];
    };
  }
)
