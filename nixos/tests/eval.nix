# Evaluates tabbify-node.nix with nixpkgs' real module system (`lib.evalModules`) beside the NixOS
# options it sets (nixos-options.nix) and a stub `pkgs` (stub-pkgs.nix), with option values from
# `settingsJson` (JSON shaped like services.tabbify-node), then renders the systemd units the way
# NixOS writes them.
#
#   nix-instantiate --eval --strict --json nixos/tests/eval.nix \
#     --argstr nixpkgsLib /path/to/nixpkgs/lib --argstr settingsJson '{"enable":true}'
#
# Unknown options and bad values abort with the module system's own messages; failed
# `assertions` abort the way a NixOS system build does.
{
  nixpkgsLib,
  settingsJson ? "{}",
  hostName ? "node-a",
}:
let
  lib = import nixpkgsLib;
  pkgs = import ./stub-pkgs.nix { inherit lib; };
  settings = builtins.fromJSON settingsJson;

  evaluate = modules: lib.evalModules {
    modules = [
      ./nixos-options.nix
      { _module.args.pkgs = pkgs; networking.hostName = hostName; }
    ] ++ modules;
  };

  evaluated = evaluate [
    ../tabbify-node.nix
    { services.tabbify-node = settings; }
  ];
  config = evaluated.config;
  failed = map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);
  checked =
    if failed == [ ] then config
    else throw "Failed assertions:\n${lib.concatMapStrings (m: "- ${m}\n") failed}";

  # What the module can change on a system.
  system = cfg: {
    inherit (cfg.systemd) services timers;
    tmpfiles = cfg.systemd.tmpfiles.rules;
    kernelModules = cfg.boot.kernelModules;
    sysctl = cfg.boot.kernel.sysctl;
    docker = cfg.virtualisation.docker.enable;
    firewall = cfg.networking.firewall;
    systemPackages = cfg.environment.systemPackages;
    assertions = cfg.assertions;
  };

  # Unit files as NixOS writes them: list values one line each, booleans true/false,
  # dependencies space-separated, PATH from `path` plus NixOS's default service path.
  value = v: if builtins.isBool v then (if v then "true" else "false") else toString v;
  lines = attrs: builtins.concatLists (lib.mapAttrsToList
    (k: v: if builtins.isList v then map (x: "${k}=${value x}") v else [ "${k}=${value v}" ])
    attrs);
  section = title: attrs: "[${title}]\n" + lib.concatMapStrings (l: l + "\n") (lines attrs);
  joined = attrs: lib.filterAttrs (_: v: v != "")
    (builtins.mapAttrs (_: builtins.concatStringsSep " ") attrs);
  defaultPath = with pkgs; [ coreutils findutils gnugrep gnused config.systemd.package ];
  servicePath = svc: lib.concatStringsSep ":"
    (builtins.concatMap (p: [ "${p}/bin" "${p}/sbin" ]) (svc.path ++ defaultPath));
  renderService = svc:
    section "Unit" ({ Description = svc.description; } // joined {
      Wants = svc.wants; Requires = svc.requires; After = svc.after; Before = svc.before;
    } // svc.unitConfig)
    + "\n"
    + section "Service" ({
      Environment = lib.mapAttrsToList (k: v: "\"${k}=${toString v}\"")
        (svc.environment // { PATH = servicePath svc; });
    } // svc.serviceConfig)
    + lib.optionalString (svc.wantedBy != [ ]) ("\n" + section "Install" (joined { WantedBy = svc.wantedBy; }));
  renderTimer = t:
    section "Unit" ({ Description = t.description; } // t.unitConfig)
    + "\n" + section "Timer" t.timerConfig
    + lib.optionalString (t.wantedBy != [ ]) ("\n" + section "Install" (joined { WantedBy = t.wantedBy; }));
  units = lib.mapAttrs' (n: s: lib.nameValuePair "${n}.service" (renderService s)) checked.systemd.services
    // lib.mapAttrs' (n: t: lib.nameValuePair "${n}.timer" (renderTimer t)) checked.systemd.timers;

  options = map (o: { inherit (o) name type readOnly; description = o.description or null; })
    (lib.optionAttrSetToDocList evaluated.options.services.tabbify-node);
in
{
  system = system checked;
  inherit units options;
  settings = builtins.removeAttrs checked.services.tabbify-node [ "package" ];
  package = {
    path = "${checked.services.tabbify-node.package}";
    flags = checked.services.tabbify-node.package.buildArgs.cargoBuildFlags;
  };
  # The same system without the module: what enable = false must leave untouched.
  withoutModule = system (evaluate [ ]).config;
}
