# A minimal stand-in for nixpkgs' `lib`, enough to evaluate tabbify-node.nix without nixpkgs
# (the checks run where only Debian's nix-bin is installed). Options are plain attribute sets
# tagged "option"; types carry a `check` used by eval.nix to type-check defaults and settings;
# mkIf/mkMerge produce tagged values eval.nix resolves the way the module system would.
rec {
  mkOption = attrs: attrs // { _type = "option"; };
  mkIf = condition: content: { _type = "if"; inherit condition content; };
  mkMerge = contents: { _type = "merge"; inherit contents; };

  optional = cond: x: if cond then [ x ] else [ ];
  optionals = cond: xs: if cond then xs else [ ];
  optionalAttrs = cond: attrs: if cond then attrs else { };
  concatMap = f: list: builtins.concatLists (map f list);
  concatStringsSep = builtins.concatStringsSep;
  mapAttrsToList = f: attrs: map (name: f name attrs.${name}) (builtins.attrNames attrs);

  # Same rule as nixpkgs: leave safe strings bare, single-quote the rest.
  escapeShellArg = arg:
    let s = toString arg; in
    if builtins.match "[[:alnum:],._+:@%/-]+" s != null then s
    else "'${builtins.replaceStrings [ "'" ] [ "'\\''" ] s}'";
  escapeShellArgs = args: builtins.concatStringsSep " " (map escapeShellArg args);

  types = {
    bool = { name = "bool"; check = builtins.isBool; };
    str = { name = "str"; check = builtins.isString; };
    path = {
      name = "path";
      check = v: builtins.isPath v || (builtins.isString v && builtins.substring 0 1 v == "/");
    };
    port = { name = "port"; check = v: builtins.isInt v && v >= 0 && v <= 65535; };
    enum = values: {
      name = "one of ${builtins.toJSON values}";
      check = v: builtins.elem v values;
    };
    nullOr = t: { name = "null or ${t.name}"; check = v: v == null || t.check v; };
    listOf = t: {
      name = "list of ${t.name}";
      check = v: builtins.isList v && builtins.all t.check v;
    };
    strMatching = re: {
      name = "string matching ${builtins.toJSON re}";
      check = v: builtins.isString v && builtins.match re v != null;
    };
  };
}
