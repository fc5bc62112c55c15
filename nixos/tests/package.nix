# The Nix build of the node (../package.nix) and the flake's outputs, instantiated with the stub
# `pkgs` (no nixpkgs here): `nix-instantiate nixos/tests/package.nix --argstr nixpkgsLib …` writes
# the derivation; `-A info` (with --eval --strict --json) shows what it was built from.
{ nixpkgsLib }:
let
  lib = import nixpkgsLib;
  pkgs = import ./stub-pkgs.nix { inherit lib; };
  node = pkgs.callPackage ../package.nix { };
  args = node.buildArgs;

  flake = import ../../flake.nix;
  outputs = flake.outputs {
    self = outputs;
    nixpkgs = {
      inherit lib;
      legacyPackages.x86_64-linux = pkgs;
    };
  };
in
node
// {
  info = {
    inherit (node) pname version drvPath;
    src = "${args.src}";
    lockFile = toString args.cargoLock.lockFile;
    lockSha256 = builtins.hashFile "sha256" args.cargoLock.lockFile;
    outputHashes = builtins.attrNames (args.cargoLock.outputHashes or { });
    cargoBuildFlags = args.cargoBuildFlags;
    doCheck = args.doCheck;
    postInstall = args.postInstall;
    vmInit = {
      inherit (node.vmInit) drvPath flavour;
      cargoBuildFlags = node.vmInit.buildArgs.cargoBuildFlags;
      lockFile = toString node.vmInit.buildArgs.cargoLock.lockFile;
    };
    flake = {
      description = flake.description;
      module = toString outputs.nixosModules.default;
      package = outputs.packages.x86_64-linux.default.drvPath;
      overlayPackage = (outputs.overlays.default pkgs pkgs).tabbify-node.drvPath;
    };
  };
}
