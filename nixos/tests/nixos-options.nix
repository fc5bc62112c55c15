# The part of NixOS that tabbify-node.nix sets, declared with the real module system (the types
# follow NixOS's own declarations), so the module can be evaluated by `lib.evalModules` where
# only nixpkgs' lib is available. Nothing here implements NixOS: eval.nix renders the units.
{ lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  # NixOS's `unitOption`: a scalar or a list of them (one line per element).
  unitValue = types.oneOf [
    types.bool
    types.int
    types.str
    (types.listOf (types.oneOf [ types.bool types.int types.str ]))
  ];
  unitNames = mkOption { type = types.listOf types.str; default = [ ]; };
  ports = mkOption { type = types.listOf types.port; default = [ ]; };
in
{
  options = {
    assertions = mkOption {
      type = types.listOf (types.submodule {
        options.assertion = mkOption { type = types.bool; };
        options.message = mkOption { type = types.str; };
      });
      default = [ ];
    };
    networking.hostName = mkOption { type = types.str; default = "nixos"; };
    networking.firewall = {
      allowedUDPPorts = ports;
      allowedTCPPorts = ports;
      interfaces = mkOption {
        type = types.attrsOf (types.submodule {
          options.allowedTCPPorts = ports;
          options.allowedUDPPorts = ports;
        });
        default = { };
      };
    };
    boot.kernelModules = mkOption { type = types.listOf types.str; default = [ ]; };
    boot.kernel.sysctl = mkOption {
      type = types.attrsOf (types.nullOr (types.oneOf [ types.bool types.int types.str ]));
      default = { };
    };
    environment.systemPackages = mkOption { type = types.listOf types.package; default = [ ]; };
    virtualisation.docker.enable = mkOption { type = types.bool; default = false; };
    systemd.package = mkOption { type = types.package; default = pkgs.systemd; };
    systemd.tmpfiles.rules = mkOption { type = types.listOf types.str; default = [ ]; };
    systemd.services = mkOption {
      default = { };
      type = types.attrsOf (types.submodule {
        options = {
          description = mkOption { type = types.str; default = ""; };
          wantedBy = unitNames;
          requiredBy = unitNames;
          wants = unitNames;
          requires = unitNames;
          after = unitNames;
          before = unitNames;
          path = mkOption { type = types.listOf (types.either types.package types.str); default = [ ]; };
          environment = mkOption {
            type = types.attrsOf (types.nullOr (types.oneOf [ types.str types.path types.package ]));
            default = { };
          };
          unitConfig = mkOption { type = types.attrsOf unitValue; default = { }; };
          serviceConfig = mkOption { type = types.attrsOf unitValue; default = { }; };
        };
      });
    };
    systemd.timers = mkOption {
      default = { };
      type = types.attrsOf (types.submodule {
        options = {
          description = mkOption { type = types.str; default = ""; };
          wantedBy = unitNames;
          unitConfig = mkOption { type = types.attrsOf unitValue; default = { }; };
          timerConfig = mkOption { type = types.attrsOf unitValue; default = { }; };
        };
      });
    };
  };
}
