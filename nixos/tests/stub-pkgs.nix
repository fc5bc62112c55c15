# A stand-in for nixpkgs' `pkgs`: every package is a store path named after it (nothing is
# built), and writeShellScript keeps its text so the checks can read and run it.
let
  storePath = name:
    "/nix/store/${builtins.substring 0 32 (builtins.hashString "sha256" name)}-${name}";
  package = name: { outPath = storePath name; pname = name; };
  names = [
    "busybox" "coreutils" "curl" "docker" "e2fsprogs" "firecracker" "iproute2" "jq" "oras"
    "qemu_kvm" "systemd"
  ];
in
builtins.listToAttrs (map (name: { inherit name; value = package name; }) names)
// {
  writeShellScript = name: text: {
    outPath = storePath name;
    inherit name;
    text = "#!/usr/bin/env bash\n" + text;
    isScript = true;
  };
}
