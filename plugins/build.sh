#!/usr/bin/env bash
# Builds every guest plugin (release, wasm32-wasip2) and lays them out for PATCHBAY_PLUGINS_DIR:
#   plugins/dist/<name>/{<name>.wasm,plugin.toml}
# A plugin is any workspace member with a plugin.toml; helper crates (guest/) have none.
# Environment: CARGO (default cargo), JOBS (default 1: the build machines are small and shared).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/target}"
cargo="${CARGO:-cargo}"
"$cargo" build --release --workspace --target wasm32-wasip2 -j "${JOBS:-1}"

out="$CARGO_TARGET_DIR/wasm32-wasip2/release"
dist="$here/dist"
rm -rf "$dist"
for manifest in */plugin.toml; do
    name="$(dirname "$manifest")"
    # Cargo names cdylib artifacts after the crate with `-` turned into `_`.
    artifact="$out/${name//-/_}.wasm"
    [[ -f "$artifact" ]] || { echo "build.sh: missing $artifact for $name" >&2; exit 1; }
    mkdir -p "$dist/$name"
    cp "$artifact" "$dist/$name/$name.wasm"
    cp "$manifest" "$dist/$name/plugin.toml"
done

# Sizes, smallest first, so a plugin that suddenly drags in a large dependency stands out.
( cd "$dist" && wc -c -- */*.wasm | sort -n )
