#!/usr/bin/env bash
# Installs a Tabbify node on any systemd distribution: the four units of deploy/systemd, the
# node's settings in /etc/tabbify/node.env, and a bootstrap copy of tabbify-fetch (downloaded
# from the release server and sha256-verified against its manifest). Then it enables the units;
# tabbify-fetch installs the release on first start and tabbify-supervisor joins the mesh.
#
#   sudo deploy/install.sh --release-url URL [--node-name NAME] [--coordinator URL]
#                          [--join-token-file FILE] [--no-start]
#
#   --release-url URL       release server (<URL>/manifest.json)
#   --node-name NAME        name in the mesh roster (default: the host name)
#   --coordinator URL       coordinator to join (default: the one built into the binary)
#   --join-token-file FILE  file holding a join token (`tcli token create`); copied to
#                           /etc/tabbify/join-token (0600)
#   --no-start              install and enable, but start nothing
#   --root DIR              install into DIR instead of / (staging, image builds, tests): no
#                           systemctl calls; the first fetch runs right away into DIR
#
# Needs: curl, jq, sha256sum (coreutils), systemd. Idempotent: running it again updates the units
# and settings and keeps the node's state (/var/lib/tabbify).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root=/
release_url=""
node_name=""
coordinator=""
join_token_file=""
start=1

die() { echo "install.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --release-url) release_url="${2:?--release-url needs a URL}"; shift 2 ;;
        --node-name) node_name="${2:?--node-name needs a value}"; shift 2 ;;
        --coordinator) coordinator="${2:?--coordinator needs a URL}"; shift 2 ;;
        --join-token-file) join_token_file="${2:?--join-token-file needs a path}"; shift 2 ;;
        --no-start) start=0; shift ;;
        --root) root="${2:?--root needs a directory}"; shift 2 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

[ -n "$release_url" ] || die "--release-url is required (the release server to install from)"
case "$release_url" in http://*|https://*) ;; *) die "--release-url must be an http(s) URL" ;; esac
release_url="${release_url%/}"
if [ -n "$node_name" ] && ! [[ "$node_name" =~ ^[A-Za-z0-9._-]{1,63}$ ]]; then
    die "--node-name must be 1-63 characters of A-Z a-z 0-9 . _ -"
fi
if [ -n "$coordinator" ]; then
    case "$coordinator" in http://*|https://*) ;; *) die "--coordinator must be an http(s) URL" ;; esac
fi
if [ -n "$join_token_file" ] && [ ! -r "$join_token_file" ]; then
    die "--join-token-file $join_token_file is not readable"
fi
for tool in curl jq sha256sum install; do
    command -v "$tool" >/dev/null || die "$tool is required (apt-get install curl jq coreutils)"
done
if [ "$root" = / ]; then
    [ "$(id -u)" = 0 ] || die "run as root (the node needs root for TUN and KVM)"
    command -v systemctl >/dev/null || die "systemd is required (no systemctl found)"
    root=""
else
    root="$(cd "$root" && pwd)"
fi

unit_dir="$root/etc/systemd/system"
conf_dir="$root/etc/tabbify"
lib_dir="$root/usr/local/lib/tabbify"
doc_dir="$root/usr/local/share/doc/tabbify"
state_dir="$root/var/lib/tabbify"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# 1. The bootstrap tabbify-fetch, verified against the manifest before anything is installed.
echo "== reading $release_url/manifest.json"
curl --fail --silent --show-error --location --proto '=https,http' --retry 3 \
    --max-time 60 -o "$work/manifest.json" "$release_url/manifest.json" \
    || die "cannot read the release manifest at $release_url/manifest.json"
entry="$(jq -er '.latest as $v | .releases[] | select(.version == $v) | .files[]
                 | select(.name == "tabbify-fetch") | "\(.path) \(.sha256)"' \
         "$work/manifest.json" 2>/dev/null)" \
    || die "the release manifest lists no tabbify-fetch in its latest release"
fetch_path="${entry% *}"
fetch_sha="${entry#* }"
[[ "$fetch_path" =~ ^[A-Za-z0-9._+/-]+$ && "$fetch_path" != *..* ]] \
    || die "the manifest's path for tabbify-fetch is not a plain relative path: $fetch_path"
echo "== downloading $fetch_path"
curl --fail --silent --show-error --location --proto '=https,http' --retry 3 \
    --max-time 600 -o "$work/tabbify-fetch" "$release_url/$fetch_path" \
    || die "cannot download $release_url/$fetch_path"
echo "$fetch_sha  $work/tabbify-fetch" | sha256sum --check --status \
    || die "sha256 mismatch for $release_url/$fetch_path (expected $fetch_sha); nothing installed"

# 2. Files: binaries, units, settings.
install -d -m 0755 "$unit_dir" "$lib_dir" "$doc_dir"
install -d -m 0750 "$conf_dir"
install -d -m 0700 "$state_dir"
install -m 0755 "$work/tabbify-fetch" "$lib_dir/tabbify-fetch"
for unit in tabbify-fetch tabbify-supervisor tabbify-appsrv tabbify-update; do
    install -m 0644 "$here/systemd/$unit.service" "$unit_dir/$unit.service"
done
if [ -f "$here/../docs/install.md" ]; then
    install -m 0644 "$here/../docs/install.md" "$doc_dir/install.md"
fi
if [ -n "$join_token_file" ]; then
    install -m 0600 "$join_token_file" "$conf_dir/join-token"
fi
{
    echo "# Written by deploy/install.sh; read by the tabbify-* units."
    echo "TABBIFY_RELEASE_URL=$release_url"
    [ -n "$coordinator" ] && echo "TABBIFY_MESH_COORDINATOR=$coordinator"
    [ -n "$node_name" ] && echo "SUPERVISOR_NAME=$node_name"
    if [ -n "$join_token_file" ] || [ -f "$conf_dir/join-token" ]; then
        echo "TABBIFY_JOIN_TOKEN_FILE=/etc/tabbify/join-token"
    fi
    true
} > "$work/node.env"
install -m 0640 "$work/node.env" "$conf_dir/node.env"
echo "== installed units in $unit_dir, settings in $conf_dir/node.env"

# 3. Start (or, into a staging root, run the first fetch directly).
if [ -n "$root" ]; then
    "$lib_dir/tabbify-fetch" --if-missing --release-url "$release_url" --data-dir "$state_dir"
    echo "== staged into $root (no systemctl calls)"
    exit 0
fi
modprobe tun 2>/dev/null || true
systemctl daemon-reload
systemctl enable tabbify-fetch.service tabbify-supervisor.service tabbify-appsrv.service
if [ "$start" = 1 ]; then
    # The supervisor reports READY once it has joined; do not wait for that here.
    systemctl start --no-block tabbify-supervisor.service tabbify-appsrv.service
    echo "== starting; \`journalctl -u tabbify-fetch -u tabbify-supervisor -f\` follows it"
fi
