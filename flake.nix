# Tabbify node as a flake: the NixOS module and the node built from this repository.
#
#   inputs.tabbify.url = "git+https://…/tabbify-node";
#   inputs.tabbify.inputs.nixpkgs.follows = "nixpkgs";
#   nixosConfigurations.host = nixpkgs.lib.nixosSystem {
#     modules = [ tabbify.nixosModules.default ./configuration.nix ];
#   };
#
# The module builds its default `package` from its own checkout (nixos/package.nix) with the
# system's pkgs, so the flake adds no second nixpkgs to a system that follows its own.
{
  description = "Tabbify node: a self-hosted compute node on a private WireGuard mesh";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" ];
      forSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      nixosModules.default = ./nixos/tabbify-node.nix;
      nixosModules.tabbify-node = ./nixos/tabbify-node.nix;

      overlays.default = final: _prev: {
        tabbify-node = final.callPackage ./nixos/package.nix { };
      };

      packages = forSystems (pkgs: {
        default = pkgs.callPackage ./nixos/package.nix { };
      });
    };
}
