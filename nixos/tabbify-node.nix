# Tabbify node for NixOS. Import it (from a checkout or the flake's nixosModules.default) and set
# options in configuration.nix; nothing in this file needs editing:
#
#   imports = [ /path/to/tabbify-node/nixos/tabbify-node.nix ];
#   services.tabbify-node = {
#     enable = true;
#     coordinator = "http://coord.example:8888";
#     joinTokenFile = "/run/secrets/tabbify-join-token";
#   };
#
# The node's programs come from the Nix store (`package`, built from this repository by
# ./package.nix), so they are pinned by the system generation and `nixos-rebuild --rollback`
# covers them. The spec's run-time self-update (tabbify-fetch + tabbify-update, binaries in
# <stateDir>/current) is an explicit opt-in: `selfUpdate.enable`.
#
# Units: tabbify-supervisor (the node), tabbify-appsrv (artifact server, appsrv.enable), and with
# selfUpdate.enable tabbify-fetch (first-boot install) and tabbify-update (health-gated update, on
# demand or on selfUpdate.timer).
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.tabbify-node;
  inherit (lib)
    mkOption
    mkEnableOption
    mkIf
    mkMerge
    types
    literalExpression
    optional
    optionals
    optionalAttrs
    ;

  supervisorUnit = "tabbify-supervisor.service";

  # The mesh's control API port is fixed by the protocol (tabbify_wire::SUPERVISOR_PORT): peers,
  # the coordinator and tcli reach every node at [its ULA]:8730.
  controlPort = 8730;

  # One ExecStart= argument as systemd parses it: double-quoted when it holds anything but plain
  # characters, with `%` (specifiers) and `$` (variables) doubled so they stay literal.
  systemdArg =
    arg:
    if builtins.isAttrs arg then
      arg.verbatim
    else
      let
        s = toString arg;
        literal = builtins.replaceStrings [ "%" "$" ] [ "%%" "$$" ] s;
      in
      if builtins.match "[A-Za-z0-9_./:@,+=-]+" s != null then
        literal
      else
        "\"" + builtins.replaceStrings [ "\\" "\"" ] [ "\\\\" "\\\"" ] literal + "\"";
  execLine = program: args: lib.concatStringsSep " " ([ program ] ++ map systemdArg args);

  # A credential as the unit reads it: `%d` is the unit's credentials directory, which only the
  # unit's processes can read (the file itself may stay root-only). Passed verbatim: the `%` is
  # meant for systemd.
  credential = name: { verbatim = "%d/${name}"; };

  # Under /var/lib systemd creates and owns the state directory (StateDirectory=); elsewhere a
  # tmpfiles rule creates it.
  stateUnderVarLib = lib.hasPrefix "/var/lib/" cfg.stateDir;
  stateDirectoryName = lib.removePrefix "/var/lib/" cfg.stateDir;
  stateDirectory =
    if stateUnderVarLib then
      {
        StateDirectory = stateDirectoryName;
        StateDirectoryMode = "0700";
      }
    else
      { ReadWritePaths = [ cfg.stateDir ]; };

  # Where the supervisor runs from: the store, or <stateDir>/current when self-updating.
  binDir = if cfg.selfUpdate.enable then "${cfg.stateDir}/current" else "${cfg.package}/bin";

  # What the supervisor, its runners and the VMM really execute (`ip`, `iptables`, `mkfs.ext4`,
  # `debugfs`, the VMMs); nothing of it is installed system-wide.
  supervisorPath = [
    pkgs.iproute2
  ]
  ++ optionals cfg.capabilities.firecracker [
    pkgs.iptables
    pkgs.e2fsprogs
    pkgs.firecracker
    pkgs.qemu_kvm
  ];

  supervisorArgs = [
    "--data-dir"
    cfg.stateDir
    "--name"
    cfg.nodeName
    "--listen-port"
    cfg.listenPort
    "--tun-name"
    cfg.tunName
    "--vm-kernel"
    cfg.vmKernel
  ]
  ++ optionals (cfg.coordinator != null) [
    "--coordinator"
    cfg.coordinator
  ]
  ++ optionals (cfg.joinTokenFile != null) [
    "--join-token-file"
    (credential "join-token")
  ]
  ++ optionals (cfg.ingress != null) [
    "--ingress"
    cfg.ingress
  ]
  ++ lib.concatMap (t: [
    "--tag"
    t
  ]) cfg.extraTags;

  # Settings every unit here takes: no home directories, no kernel logs, no clock or host name
  # changes, no real-time scheduling, no SUID, native system calls only.
  commonHardening = {
    ProtectHome = true;
    ProtectClock = true;
    ProtectKernelLogs = true;
    ProtectHostname = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    NoNewPrivileges = true;
    SystemCallArchitectures = "native";
  };

  # The updater's units: network clients that write only the state directory.
  updaterHardening = commonHardening // {
    UMask = "0077";
    ProtectSystem = "strict";
    PrivateTmp = true;
    PrivateDevices = true;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectControlGroups = true;
    ProtectProc = "invisible";
    RestrictNamespaces = true;
    RestrictAddressFamilies = [
      "AF_UNIX"
      "AF_INET"
      "AF_INET6"
      "AF_NETLINK"
    ];
    CapabilityBoundingSet = "";
    SystemCallFilter = [
      "@system-service"
      "~@privileged @resources"
    ];
  };

  releaseArgs = [
    "--data-dir"
    cfg.stateDir
    "--release-url"
    cfg.selfUpdate.releaseUrl
  ];
in
{
  options.services.tabbify-node = {
    enable = mkEnableOption "the Tabbify node (tabbify-supervisor, and tabbify-appsrv unless appsrv.enable is false)";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = literalExpression "pkgs.callPackage ./package.nix { } (built from this repository)";
      description = ''
        The node's programs (tabbify-supervisor, tabbify-runner, tabbify-appsrv, tabbify-fetch,
        tabbify-update, tabbify-vm-init). The units run them from the store, unless
        selfUpdate.enable runs the supervisor from <stateDir>/current instead.
      '';
    };

    nodeName = mkOption {
      type = types.strMatching "[A-Za-z0-9._-]{1,63}";
      default = config.networking.hostName;
      defaultText = literalExpression "config.networking.hostName";
      example = "edge-fra-1";
      description = "The node's display name in the mesh roster.";
    };

    coordinator = mkOption {
      type = types.nullOr (types.strMatching "https?://[^[:space:]\"\\\\]+");
      default = null;
      example = "http://coordinator.example:8888";
      description = ''
        The coordinator to join. null uses the address baked into the build
        (TABBIFY_DEFAULT_COORDINATOR at build time).
      '';
    };

    joinTokenFile = mkOption {
      type = types.nullOr (types.pathWith {
        inStore = false;
        absolute = true;
      });
      default = null;
      example = "/run/secrets/tabbify-join-token";
      description = ''
        A file holding the join token (`tcli token create`), handed to the supervisor with
        LoadCredential= (it may stay readable by root only). A string, not a Nix path, so the
        secret is never copied into the world-readable store.
      '';
    };

    extraTags = mkOption {
      type = types.listOf (types.strMatching "[a-z0-9][a-z0-9-]{0,31}");
      default = [ ];
      example = [ "eu-central" ];
      description = "Operator tags to advertise besides the runtimes the node finds.";
    };

    stateDir = mkOption {
      type = types.externalPath;
      default = "/var/lib/tabbify";
      description = ''
        The node's state: mesh-identity.json (its key and ULA), apps, artifact cache; with
        selfUpdate also releases/, current and kernels/.
      '';
    };

    listenPort = mkOption {
      type = types.port;
      default = 51820;
      description = "The WireGuard UDP port of the mesh.";
    };

    tunName = mkOption {
      type = types.strMatching "[A-Za-z0-9_.-]{1,15}";
      default = "tbf0";
      description = "The mesh's TUN interface (at most 15 characters).";
    };

    controlPort = mkOption {
      type = types.port;
      default = controlPort;
      readOnly = true;
      description = ''
        The node's control API port on the mesh interface. Fixed by the mesh protocol (peers,
        the coordinator and tcli reach every node there); read it to refer to it elsewhere.
      '';
    };

    openFirewall = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Open the WireGuard port (listenPort/udp) to the world. The mesh interface's own ports
        (control API, artifact server) are always open on tunName only.
      '';
    };

    ingress = mkOption {
      type = types.nullOr (types.strMatching "[^[:space:]\"\\\\]+:[0-9]+");
      default = null;
      example = "0.0.0.0:8080";
      description = ''
        Serve the mesh's apps to clients outside it at http://ADDR/app/<name>/ (--ingress).
        Its port is not opened in the firewall.
      '';
    };

    capabilities = {
      firecracker = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Offer the microVM runtime: QEMU, Firecracker, e2fsprogs and iptables on the
          supervisor's path. The node advertises `firecracker` only when /dev/kvm really runs
          guests.
        '';
      };
      docker = mkOption {
        type = types.bool;
        default = false;
        description = "Offer the docker runtime: enable the Docker daemon the supervisor uses.";
      };
    };

    kvmVendor = mkOption {
      type = types.nullOr (
        types.enum [
          "intel"
          "amd"
        ]
      );
      default = null;
      description = ''
        Load kvm-intel or kvm-amd. null (the default) relies on the hardware configuration
        (nixos-generate-config already loads the right one).
      '';
    };

    vmKernel = mkOption {
      type = types.path;
      default = "${cfg.stateDir}/kernels/vmlinux";
      defaultText = literalExpression ''"''${config.services.tabbify-node.stateDir}/kernels/vmlinux"'';
      description = ''
        The microVM guest kernel (--vm-kernel); a modules/ directory beside it is used when its
        virtio drivers are modules. selfUpdate's tabbify-fetch installs the release's kernel at
        the default; without selfUpdate, put one there or point this at one.
      '';
    };

    microvmEgress = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Let microVM apps whose manifest asks for `egress` reach beyond the node: sets
        net.ipv4.ip_forward = 1 (the node then forwards and masquerades that guest's traffic
        only). Without it such apps are refused with a message.
      '';
    };

    appsrv = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = "Run the artifact server (tabbify-appsrv) on this node.";
      };
      port = mkOption {
        type = types.port;
        default = 9000;
        description = "Port of the artifact server.";
      };
      listenAddress = mkOption {
        type = types.str;
        default = "[::]";
        example = "[fd8a:1::2]";
        description = ''
          Address the artifact server binds. Whatever it is, the unit can only send and receive
          on `lo` and the mesh interface (RestrictNetworkInterfaces=).
        '';
      };
      uploadTokenFile = mkOption {
        type = types.nullOr (types.pathWith {
          inStore = false;
          absolute = true;
        });
        default = null;
        example = "/run/secrets/tabbify-appsrv-upload-token";
        description = ''
          A file with the bearer token uploads must carry (LoadCredential=). Without it the
          server refuses uploads and only serves what is already stored.
        '';
      };
    };

    selfUpdate = {
      enable = mkOption {
        type = types.bool;
        default = false;
        description = ''
          The spec's run-time update flow instead of Nix pinning: tabbify-fetch installs the
          latest release into <stateDir>/current on first boot, the supervisor runs from
          there, and tabbify-update moves to a newer release, health-gated. Those
          binaries sit outside the store: generations and rollbacks do not cover them, and
          they must be static executables (a glibc-linked release does not start on NixOS).
        '';
      };
      releaseUrl = mkOption {
        type = types.strMatching "https?://[^[:space:]]+";
        default = "https://releases.tabbify.dev/node";
        description = "The release server: <releaseUrl>/manifest.json lists releases with a sha256 per file.";
      };
      healthWindow = mkOption {
        type = types.strMatching "[0-9]+(ms|s|m|min)";
        default = "60s";
        description = ''
          How long a restarted supervisor has to answer /health steadily before tabbify-update
          rolls back to the previous release.
        '';
      };
      timer = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "weekly";
        description = ''
          When to run tabbify-update (a systemd OnCalendar= expression). null: only on demand,
          `systemctl start tabbify-update`.
        '';
      };
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions = [
        {
          assertion = cfg.microvmEgress -> cfg.capabilities.firecracker;
          message = "services.tabbify-node.microvmEgress needs capabilities.firecracker (egress is for microVM apps).";
        }
        {
          # It is written bare into ExecStart=, ReadWritePaths= and ConditionPathExists=.
          assertion = builtins.match ".*[[:space:]\"\\%$].*" cfg.stateDir == null;
          message = "services.tabbify-node.stateDir must not contain white space, quotes, backslashes, % or $.";
        }
        {
          assertion = cfg.selfUpdate.timer != null -> cfg.selfUpdate.enable;
          message = "services.tabbify-node.selfUpdate.timer needs selfUpdate.enable.";
        }
      ];

      boot.kernelModules = [ "tun" ] ++ optional (cfg.kvmVendor != null) "kvm-${cfg.kvmVendor}";

      boot.kernel.sysctl = mkIf cfg.microvmEgress { "net.ipv4.ip_forward" = 1; };

      virtualisation.docker.enable = mkIf cfg.capabilities.docker true;

      systemd.tmpfiles.rules = optional (!stateUnderVarLib) "d ${cfg.stateDir} 0700 root root - -";

      networking.firewall = {
        allowedUDPPorts = optional cfg.openFirewall cfg.listenPort;
        interfaces.${cfg.tunName}.allowedTCPPorts = [
          controlPort
        ]
        ++ optional cfg.appsrv.enable cfg.appsrv.port;
      };

      systemd.services.tabbify-supervisor = {
        description = "Tabbify node supervisor";
        wantedBy = [ "multi-user.target" ];
        wants = [ "network-online.target" ] ++ optional cfg.selfUpdate.enable "tabbify-fetch.service";
        after = [
          "network-online.target"
        ]
        ++ optional cfg.selfUpdate.enable "tabbify-fetch.service"
        ++ optional cfg.capabilities.docker "docker.service";
        path = supervisorPath;
        serviceConfig = stateDirectory // commonHardening // {
          Type = "notify";
          NotifyAccess = "main";
          ExecStart = execLine "${binDir}/tabbify-supervisor" supervisorArgs;
          Restart = "on-failure";
          RestartSec = "2s";
          # A restart stops the supervisor only: its runners keep serving and are adopted again.
          KillMode = "process";
          TimeoutStartSec = "10min";
          TimeoutStopSec = "30s";
          WatchdogSec = "60s";
          LimitNOFILE = 1048576;
          LoadCredential = optional (cfg.joinTokenFile != null) "join-token:${cfg.joinTokenFile}";
          # What the supervisor cannot take, and why:
          # - it stays root with CAP_NET_ADMIN/CAP_NET_RAW: it creates the mesh TUN device and
          #   microVM taps, sets addresses and routes, and egress adds iptables rules;
          # - no PrivateDevices/DevicePolicy=closed: /dev/net/tun and /dev/kvm (the microVMs);
          # - no ProtectKernelTunables: it writes per-interface settings under /proc/sys/net;
          # - no ProtectSystem=strict or PrivateTmp: its runners outlive a restart and share
          #   /run/tabbify (microVM tap slots) and the state directory with the next supervisor;
          # - no MemoryDenyWriteExecute: wasmtime compiles apps to machine code;
          # - no RestrictNamespaces/ProtectKernelModules: QEMU and iptables (netfilter modules).
          ProtectSystem = "full";
          ProtectControlGroups = true;
          CapabilityBoundingSet = [
            "CAP_NET_ADMIN"
            "CAP_NET_RAW"
            "CAP_NET_BIND_SERVICE"
          ];
          RestrictAddressFamilies = [
            "AF_UNIX"
            "AF_INET"
            "AF_INET6"
            "AF_NETLINK"
          ];
          # ProtectClock= turns on the device allow-list: the mesh TUN, microVM taps and KVM.
          DeviceAllow = [
            "/dev/net/tun rw"
            "/dev/kvm rw"
          ];
          # A deny-list only: QEMU and Firecracker need more than @system-service.
          SystemCallFilter = [
            "~@clock @cpu-emulation @debug @module @mount @obsolete @raw-io @reboot @swap"
          ];
          SystemCallErrorNumber = "EPERM";
        };
      };
    }

    (mkIf cfg.appsrv.enable {
      systemd.services.tabbify-appsrv = {
        description = "Tabbify artifact server";
        wantedBy = [ "multi-user.target" ];
        wants = [ "network-online.target" ];
        after = [ "network-online.target" ] ++ optional cfg.selfUpdate.enable "tabbify-fetch.service";
        serviceConfig = commonHardening // {
          Type = "simple";
          # Plain HTTP, like the coordinator today (TLS is pending): the unit can only talk on
          # loopback and the mesh interface.
          # Always the store's: a dynamic user cannot enter the root-only state directory, and
          # the artifact store's format does not follow the node's releases.
          ExecStart = execLine "${cfg.package}/bin/tabbify-appsrv" (
            [
              "--listen"
              "${cfg.appsrv.listenAddress}:${toString cfg.appsrv.port}"
              "--data-dir"
              "/var/lib/tabbify-appsrv"
              "--insecure-no-mtls"
            ]
            ++ optionals (cfg.appsrv.uploadTokenFile != null) [
              "--upload-token-file"
              (credential "upload-token")
            ]
          );
          LoadCredential = optional (
            cfg.appsrv.uploadTokenFile != null
          ) "upload-token:${cfg.appsrv.uploadTokenFile}";
          Restart = "on-failure";
          RestartSec = "2s";
          DynamicUser = true;
          UMask = "0077";
          StateDirectory = "tabbify-appsrv";
          StateDirectoryMode = "0700";
          ProtectSystem = "strict";
          PrivateTmp = true;
          PrivateDevices = true;
          PrivateUsers = true;
          ProtectKernelTunables = true;
          ProtectKernelModules = true;
          ProtectControlGroups = true;
          ProtectProc = "invisible";
          ProcSubset = "pid";
          RestrictNamespaces = true;
          MemoryDenyWriteExecute = true;
          RemoveIPC = true;
          CapabilityBoundingSet = "";
          RestrictAddressFamilies = [
            "AF_UNIX"
            "AF_INET"
            "AF_INET6"
          ];
          RestrictNetworkInterfaces = [
            "lo"
            cfg.tunName
          ];
          SystemCallFilter = [
            "@system-service"
            "~@privileged @resources"
          ];
        };
      };
    })

    (mkIf cfg.selfUpdate.enable {
      systemd.services.tabbify-fetch = {
        description = "Tabbify node: install the latest release and guest kernel (first boot)";
        wantedBy = [ "multi-user.target" ];
        wants = [ "network-online.target" ];
        after = [ "network-online.target" ];
        before = [ supervisorUnit ] ++ optional cfg.appsrv.enable "tabbify-appsrv.service";
        unitConfig.ConditionPathExists = "!${cfg.stateDir}/current/tabbify-supervisor";
        serviceConfig = stateDirectory // updaterHardening // {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = execLine "${cfg.package}/bin/tabbify-fetch" ([ "--if-missing" ] ++ releaseArgs);
          Restart = "on-failure";
          RestartSec = "15s";
        };
      };

      systemd.services.tabbify-update = {
        description = "Tabbify node: health-gated self-update";
        wants = [ "network-online.target" ];
        after = [
          "network-online.target"
          supervisorUnit
        ];
        serviceConfig = stateDirectory // updaterHardening // {
          Type = "oneshot";
          ExecStart = execLine "${cfg.package}/bin/tabbify-update" (
            releaseArgs
            ++ [
              "--health-window"
              cfg.selfUpdate.healthWindow
              "--restart-command"
              "${config.systemd.package}/bin/systemctl restart ${supervisorUnit}"
            ]
          );
          TimeoutStartSec = "15min";
        };
      };

      systemd.timers.tabbify-update = mkIf (cfg.selfUpdate.timer != null) {
        wantedBy = [ "timers.target" ];
        timerConfig = {
          OnCalendar = cfg.selfUpdate.timer;
          Persistent = true;
          RandomizedDelaySec = "1h";
        };
      };
    })
  ]);
}
