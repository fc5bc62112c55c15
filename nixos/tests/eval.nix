# Evaluates tabbify-node.nix against the stub lib and pkgs, with option values from
# `settingsJson` (JSON, shaped like services.tabbify-node), and returns what NixOS would build
# from it: the resolved config, each systemd service rendered as a unit file, and the scripts.
#
#   nix-instantiate --eval --strict --json nixos/tests/eval.nix --argstr settingsJson '{}'
#
# Unknown settings, values of the wrong type and options without a description or type abort the
# evaluation with a message.
{ settingsJson ? "{}" }:
let
  lib = import ./stub-lib.nix;
  pkgs = import ./stub-pkgs.nix;
  settings = builtins.fromJSON settingsJson;
  module = import ../tabbify-node.nix;
  evaluated = module { inherit lib pkgs config; };

  isOption = v: builtins.isAttrs v && (v._type or null) == "option";
  showPath = path: builtins.concatStringsSep "." path;

  # Option tree -> values: the setting when given, else the default; every value type-checked.
  resolveOptions = path: opts: given:
    let
      unknown = builtins.filter (n: !(opts ? ${n})) (builtins.attrNames given);
    in
    if unknown != [ ] then
      throw "unknown option ${showPath (path ++ [ (builtins.head unknown) ])}"
    else
      builtins.mapAttrs
        (name: o:
          let
            p = path ++ [ name ];
            has = given ? ${name};
          in
          if isOption o then
            let v = if has then given.${name} else o.default; in
            if !(o ? description) || !(o ? type) then
              throw "option ${showPath p} has no description or type"
            else if o.type.check v then v
            else throw "option ${showPath p}: ${builtins.toJSON v} is not a ${o.type.name}"
          else resolveOptions p o (if has then given.${name} else { }))
        opts;

  config = {
    services.tabbify-node =
      resolveOptions [ "services" "tabbify-node" ] evaluated.options.services.tabbify-node settings;
  };

  # mkIf / mkMerge as the module system applies them; packages (outPath) stay as they are.
  resolve = v:
    if builtins.isAttrs v && v ? _type then
      (if v._type == "if" then (if v.condition then resolve v.content else null)
       else if v._type == "merge" then
         builtins.foldl' (a: b: a // b) { } (map resolve v.contents)
       else throw "unknown _type ${v._type}")
    else if builtins.isAttrs v && !(v ? outPath) then
      let resolved = builtins.mapAttrs (_: resolve) v; in
      builtins.removeAttrs resolved
        (builtins.filter (n: resolved.${n} == null) (builtins.attrNames resolved))
    else v;

  final = resolve evaluated.config;
  services = final.systemd.services or { };

  # A unit file the way NixOS writes one: list-valued dependencies space-separated,
  # environment (with PATH from `path`) as Environment= lines, booleans as true/false.
  render = svc:
    let
      str = v: if builtins.isBool v then (if v then "true" else "false") else toString v;
      kv = k: v: if builtins.isList v then map (x: "${k}=${str x}") v else [ "${k}=${str v}" ];
      section = title: attrs:
        "[${title}]\n"
        + builtins.concatStringsSep ""
          (map (l: l + "\n")
            (builtins.concatLists (lib.mapAttrsToList kv attrs)));
      joined = name: field:
        lib.optionalAttrs ((svc.${field} or [ ]) != [ ])
          { ${name} = builtins.concatStringsSep " " svc.${field}; };
      env = (svc.environment or { })
        // lib.optionalAttrs (svc ? path)
          { PATH = builtins.concatStringsSep ":" (map (p: "${p}/bin") svc.path); };
      unit = { Description = svc.description; }
        // joined "Wants" "wants" // joined "After" "after"
        // joined "Before" "before" // joined "Requires" "requires"
        // (svc.unitConfig or { });
      service = svc.serviceConfig
        // { Environment = lib.mapAttrsToList (k: v: "\"${k}=${toString v}\"") env; };
      install = joined "WantedBy" "wantedBy";
    in
    section "Unit" unit + "\n" + section "Service" service
    + (if install == { } then "" else "\n" + section "Install" install);

  scripts = builtins.listToAttrs (builtins.concatLists (lib.mapAttrsToList
    (name: svc:
      let exec = svc.serviceConfig.ExecStart or null; in
      lib.optional (builtins.isAttrs exec && (exec.isScript or false))
        { name = exec.name; value = { path = exec.outPath; text = exec.text; }; })
    services));
in
{
  config = final;
  units = builtins.mapAttrs (_: render) services;
  inherit scripts;
}
