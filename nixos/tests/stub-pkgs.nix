# A stand-in for nixpkgs' `pkgs` where only Debian's nix-bin is installed (no nixpkgs): every
# package is a derivation that is never built (its builder fails), named after the attribute, so
# store paths are real and stable. `rustPlatform.buildRustPackage` instantiates a derivation from
# the arguments it is given and keeps them in `buildArgs`, so the checks can compare them with the
# repository. `lib` is the real nixpkgs lib.
{ lib }:
let
  system = "x86_64-linux";
  neverBuilt = attrs: derivation ({
    inherit system;
    builder = "/bin/sh";
    args = [ "-c" "echo this stub is never built >&2; exit 1" ];
  } // attrs);
  package = name: neverBuilt { inherit name; } // { pname = name; };
  names = [
    "coreutils" "docker" "e2fsprogs" "findutils" "firecracker" "gnugrep" "gnused" "iproute2"
    "iptables" "qemu_kvm" "systemd"
  ];

  buildRustPackage = flavour: args:
    let
      drv = neverBuilt {
        name = "${args.pname}-${args.version}";
        inherit (args) src;
        cargoLock = args.cargoLock.lockFile;
        cargoBuildFlags = args.cargoBuildFlags or [ ];
        postInstall = args.postInstall or "";
        inherit flavour;
      };
    in
    drv // {
      inherit (args) pname version;
      passthru = args.passthru or { };
      meta = args.meta or { };
      buildArgs = args;
    } // (args.passthru or { });

  pkgs = lib.genAttrs names package // {
    inherit lib;
    rustPlatform.buildRustPackage = buildRustPackage "glibc";
    pkgsStatic.rustPlatform.buildRustPackage = buildRustPackage "musl-static";
    callPackage = fn: overrides:
      let f = if builtins.isFunction fn then fn else import fn; in
      f (builtins.intersectAttrs (builtins.functionArgs f) pkgs // overrides);
  };
in
pkgs
