# Tabbify node for NixOS: copy this file to /etc/nixos/, set the node's name on the marked line,
# add `./tabbify-node.nix` to the `imports` of configuration.nix, and run
# `sudo nixos-rebuild switch`.
#
# It loads the tun and kvm-intel (or kvm-amd) modules, installs the host tools the runtimes call
# (firecracker, iproute2, e2fsprogs, busybox, oras), and defines four units:
#   tabbify-fetch       first boot: download the node's binaries and the Firecracker guest kernel
#                       over HTTPS from the release URL, every file sha256-verified
#   tabbify-supervisor  the node (Type=notify, Restart=on-failure, root for TUN and KVM;
#                       KillMode=process so its runners survive its restart)
#   tabbify-appsrv      the artifact server on :9000
#   tabbify-update      health-gated self-update, on demand: systemctl start tabbify-update
#
# Every setting is an option under services.tabbify-node (see `options` below); the defaults need
# no other configuration.
{ config, lib, pkgs, ... }:

let
  # ── Edit this line: the node's name in the mesh roster. ──
  nodeName = "tabbify-node-1";

  cfg = config.services.tabbify-node;
  inherit (lib) mkOption mkIf types;

  stateDir = cfg.stateDir;
  supervisorUnit = "tabbify-supervisor.service";

  # What the supervisor, the runners and the VMM shell out to.
  hostTools =
    [ pkgs.iproute2 pkgs.e2fsprogs pkgs.busybox pkgs.oras ]
    ++ lib.optionals cfg.capabilities.firecracker [ pkgs.firecracker pkgs.qemu_kvm ]
    ++ lib.optionals cfg.capabilities.docker [ pkgs.docker ];

  commonEnvironment =
    {
      TABBIFY_DATA_DIR = stateDir;
      TABBIFY_RELEASE_URL = cfg.releaseUrl;
    }
    // lib.optionalAttrs (cfg.coordinator != null) {
      TABBIFY_MESH_COORDINATOR = cfg.coordinator;
    };

  # First boot: the release manifest names tabbify-fetch with its sha256; that binary is
  # downloaded, verified, and installs the whole release (and the guest kernel) itself.
  fetchBootstrap = pkgs.writeShellScript "tabbify-fetch-bootstrap" ''
    set -euo pipefail
    url="''${TABBIFY_RELEASE_URL%/}"
    if [ -x ${lib.escapeShellArg stateDir}/current/tabbify-supervisor ]; then
      echo "tabbify-fetch: a release is already current"; exit 0
    fi
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    curl --fail --silent --show-error --location --proto '=https,http' \
      --retry 5 --retry-connrefused --max-time 120 -o "$work/manifest.json" "$url/manifest.json"
    entry="$(jq -er '.latest as $v | .releases[] | select(.version == $v) | .files[]
                     | select(.name == "tabbify-fetch") | "\(.path) \(.sha256)"' \
             "$work/manifest.json")" || {
      echo "tabbify-fetch: the release manifest at $url lists no tabbify-fetch" >&2; exit 1; }
    path="''${entry% *}"; sha="''${entry#* }"
    curl --fail --silent --show-error --location --proto '=https,http' \
      --retry 5 --retry-connrefused --max-time 600 -o "$work/tabbify-fetch" "$url/$path"
    echo "$sha  $work/tabbify-fetch" | sha256sum --check --status || {
      echo "tabbify-fetch: sha256 mismatch for $url/$path; refusing to run it" >&2; exit 1; }
    chmod 0755 "$work/tabbify-fetch"
    "$work/tabbify-fetch" --if-missing --release-url "$url" --data-dir ${lib.escapeShellArg stateDir}
  '';

  supervisorArgs =
    [ "--data-dir" stateDir ]
    ++ lib.concatMap (t: [ "--tag" t ]) cfg.extraTags;

  updateArgs = [
    "--data-dir" stateDir
    "--release-url" cfg.releaseUrl
    "--health-window" cfg.update.healthWindow
    "--restart-command" "${pkgs.systemd}/bin/systemctl restart ${supervisorUnit}"
  ];
in
{
  options.services.tabbify-node = {
    enable = mkOption {
      type = types.bool;
      default = true;
      description = "Run a Tabbify node on this machine (importing this module opts in).";
    };

    nodeName = mkOption {
      type = types.strMatching "[A-Za-z0-9._-]{1,63}";
      default = nodeName;
      example = "edge-fra-1";
      description = "The node's display name in the mesh roster (SUPERVISOR_NAME).";
    };

    coordinator = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "http://coordinator.example:8888";
      description = ''
        The coordinator to join (TABBIFY_MESH_COORDINATOR). null uses the address baked into
        the binary.
      '';
    };

    joinTokenFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/run/secrets/tabbify-join-token";
      description = ''
        A file holding the join token (`tcli token create`), read by the supervisor on its first
        join. Keep it out of the Nix store: give a path, not a literal.
      '';
    };

    capabilities = {
      firecracker = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Offer the microVM runtime: load kvm-<kvmVendor> and install firecracker and QEMU. The
          node advertises `firecracker` only when /dev/kvm actually works.
        '';
      };
      docker = mkOption {
        type = types.bool;
        default = false;
        description = "Offer the docker runtime: enable the Docker daemon the supervisor uses.";
      };
    };

    kvmVendor = mkOption {
      type = types.enum [ "intel" "amd" ];
      default = "intel";
      description = "Which KVM module to load: kvm-intel or kvm-amd.";
    };

    releaseUrl = mkOption {
      type = types.strMatching "https?://.+";
      default = "https://releases.tabbify.dev/node";
      description = ''
        The release server: <releaseUrl>/manifest.json lists the releases with a sha256 for
        every file. tabbify-fetch installs from it on first boot, tabbify-update moves to its
        latest release.
      '';
    };

    stateDir = mkOption {
      type = types.path;
      default = "/var/lib/tabbify";
      description = ''
        The node's state: mesh-identity.json (its key and ULA), releases/, current, kernels/.
      '';
    };

    extraTags = mkOption {
      type = types.listOf (types.strMatching "[a-z0-9][a-z0-9-]{0,31}");
      default = [ ];
      example = [ "eu-central" ];
      description = "Operator tags to advertise besides the runtimes the node finds.";
    };

    appsrv.port = mkOption {
      type = types.port;
      default = 9000;
      description = "Port of the artifact server (tabbify-appsrv).";
    };

    update.healthWindow = mkOption {
      type = types.strMatching "[0-9]+(ms|s|m|min)";
      default = "60s";
      description = ''
        How long a restarted supervisor has to answer /health steadily before tabbify-update
        rolls back to the previous release.
      '';
    };

    openFirewall = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Open the WireGuard port (51820/udp) and, on the mesh interface tbf0 only, the control
        API (8730) and the artifact server.
      '';
    };
  };

  config = mkIf cfg.enable {
    boot.kernelModules =
      [ "tun" ] ++ lib.optional cfg.capabilities.firecracker "kvm-${cfg.kvmVendor}";

    environment.systemPackages = hostTools;

    virtualisation.docker.enable = mkIf cfg.capabilities.docker true;

    networking.firewall = mkIf cfg.openFirewall {
      allowedUDPPorts = [ 51820 ];
      interfaces.tbf0.allowedTCPPorts = [ 8730 cfg.appsrv.port ];
    };

    systemd.services.tabbify-fetch = {
      description = "Tabbify node: fetch binaries and guest kernel (first boot)";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      before = [ supervisorUnit "tabbify-appsrv.service" ];
      path = [ pkgs.curl pkgs.jq pkgs.coreutils ];
      environment = commonEnvironment;
      unitConfig.ConditionPathExists = "!${stateDir}/current/tabbify-supervisor";
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        ExecStart = fetchBootstrap;
        Restart = "on-failure";
        RestartSec = "15s";
        StateDirectory = "tabbify";
        StateDirectoryMode = "0700";
      };
    };

    systemd.services.tabbify-supervisor = {
      description = "Tabbify node supervisor";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" "tabbify-fetch.service" ]
        ++ lib.optional cfg.capabilities.docker "docker.service";
      requires = [ "tabbify-fetch.service" ];
      path = hostTools;
      environment =
        commonEnvironment
        // { SUPERVISOR_NAME = cfg.nodeName; }
        // lib.optionalAttrs (cfg.joinTokenFile != null) {
          TABBIFY_JOIN_TOKEN_FILE = toString cfg.joinTokenFile;
        };
      serviceConfig = {
        Type = "notify";
        NotifyAccess = "main";
        ExecStart = "${stateDir}/current/tabbify-supervisor ${lib.escapeShellArgs supervisorArgs}";
        User = "root";
        Restart = "on-failure";
        RestartSec = "2s";
        # A restart stops the supervisor only: its runners keep serving and are adopted again.
        KillMode = "process";
        TimeoutStartSec = "10min";
        TimeoutStopSec = "30s";
        WatchdogSec = "60s";
        LimitNOFILE = 1048576;
        StateDirectory = "tabbify";
        StateDirectoryMode = "0700";
      };
    };

    systemd.services.tabbify-appsrv = {
      description = "Tabbify artifact server (:${toString cfg.appsrv.port})";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" "tabbify-fetch.service" ];
      requires = [ "tabbify-fetch.service" ];
      environment = commonEnvironment // {
        TABBIFY_APPSRV_LISTEN = "[::]:${toString cfg.appsrv.port}";
        TABBIFY_APPSRV_DATA_DIR = "/var/lib/tabbify-appsrv";
      };
      unitConfig.ConditionPathExists = "${stateDir}/current/tabbify-appsrv";
      serviceConfig = {
        Type = "simple";
        # Plain HTTP, like the coordinator today (TLS is pending); the firewall limits it to the
        # mesh interface.
        ExecStart = "${stateDir}/current/tabbify-appsrv --insecure-no-mtls";
        Restart = "on-failure";
        RestartSec = "2s";
        StateDirectory = "tabbify-appsrv";
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        NoNewPrivileges = true;
      };
    };

    systemd.services.tabbify-update = {
      description = "Tabbify node: health-gated self-update";
      wants = [ "network-online.target" ];
      after = [ "network-online.target" supervisorUnit ];
      environment = commonEnvironment;
      serviceConfig = {
        Type = "oneshot";
        ExecStart = "${stateDir}/current/tabbify-update ${lib.escapeShellArgs updateArgs}";
        TimeoutStartSec = "15min";
      };
    };
  };
}
