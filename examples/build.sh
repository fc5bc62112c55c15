#!/usr/bin/env bash
# Builds every example app for wasm32-wasip2 (release) and copies the components to
# <repo>/target/wasm/<name>.wasm, where the runner's tests and the benchmarks look for them.
#
#   examples/build.sh            # build all examples
#   examples/build.sh hello-wasm # build one
#
# Each example is its own cargo project (excluded from the workspace); they share one target dir,
# <repo>/target/examples, so a rebuild is incremental.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
out="$root/target/wasm"
build_dir="$root/target/examples"
examples=("$@")
if [ ${#examples[@]} -eq 0 ]; then
    examples=(hello-wasm misbehave fetcher hello-http)
fi

# ---------------------------------------------------------------------------------------------
# Native examples (microVM / container apps), owned by the microVM runtime (crates/vm).
# Built as static binaries for x86_64-unknown-linux-musl and copied to <repo>/target/native/.
#
#   examples/build.sh hello-http # build one (also part of the default "build all")
# ---------------------------------------------------------------------------------------------
build_native() {
    local name="$1"
    local native_out="$root/target/native"
    if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
        rustup target add x86_64-unknown-linux-musl >&2
    fi
    mkdir -p "$native_out"
    env -u CARGO_TARGET_DIR -u RUSTFLAGS -u CARGO_BUILD_TARGET \
        cargo build --quiet --release --target x86_64-unknown-linux-musl \
        --manifest-path "$here/$name/Cargo.toml" --target-dir "$build_dir"
    local tmp="$native_out/.$name.tmp"
    cp "$build_dir/x86_64-unknown-linux-musl/release/$name" "$tmp"
    mv -f "$tmp" "$native_out/$name"
    echo "$native_out/$name"
}
native_examples=(hello-http)
is_native() { local n; for n in "${native_examples[@]}"; do [ "$n" = "$1" ] && return 0; done; return 1; }
# ---------------------------------------------------------------------------------------------

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2 >&2
fi

mkdir -p "$out"
for name in "${examples[@]}"; do
    if is_native "$name"; then build_native "$name"; continue; fi
    manifest="$here/$name/Cargo.toml"
    [ -f "$manifest" ] || { echo "build.sh: no example named $name" >&2; exit 2; }
    # Cargo's environment from an outer build (tests call this script) must not leak in.
    env -u CARGO_TARGET_DIR -u RUSTFLAGS -u CARGO_BUILD_TARGET \
        cargo build --quiet --release --target wasm32-wasip2 \
        --manifest-path "$manifest" --target-dir "$build_dir"
    artifact="$build_dir/wasm32-wasip2/release/${name//-/_}.wasm"
    tmp="$out/.$name.wasm.tmp"
    cp "$artifact" "$tmp"
    mv -f "$tmp" "$out/$name.wasm"
    echo "$out/$name.wasm"
done
