#!/usr/bin/env bash
# Fetch the Swagger UI and ReDoc assets that /docs and /redoc serve, from the npm packages swagger-ui-dist and
# redoc, each pinned by its integrity hash, into the git-ignored web/vendor/{swagger-ui,redoc}/.
# Idempotent: does nothing when every file is there and web/vendor/.stamp names the pinned versions.
set -euo pipefail
cd "$(dirname "$0")/.."

SWAGGER_PKG="swagger-ui-dist@5.35.0"
SWAGGER_INTEGRITY="sha512-U06rpMtW9V3XPGOBeamTUSr0Z09jMX4IJuANpE/EZbAhw0G8CgwrzU4YmXkn/h0wCDNsXdGarTNNHC3sU8yVUQ=="
# oauth2-redirect.html loads oauth2-redirect.js from beside itself.
SWAGGER_FILES=(swagger-ui-bundle.js swagger-ui.css oauth2-redirect.html oauth2-redirect.js LICENSE NOTICE)

REDOC_PKG="redoc@2.5.4"
REDOC_INTEGRITY="sha512-M6jWhG1qoBnH6TFmzJnstyCZ87HmOY/UzDm78mHiYihEdlV/YcS9ogOo1NlElnJMeLsyxHFe2yFc4sNjHTrABQ=="
REDOC_FILES=(bundles/redoc.standalone.js bundles/redoc.standalone.js.LICENSE.txt LICENSE)

# ReDoc 2 draws the Redocly logo in its sidebar from cdn.redoc.ly, with no option to turn it off; the docs
# must load nothing from another host, so that one URL is replaced by a blank inline image after the check.
REDOC_LOGO_URL="https://cdn.redoc.ly/redoc/logo-mini.svg"
REDOC_LOGO_LOCAL="data:image/svg+xml,%3Csvg xmlns=%27http://www.w3.org/2000/svg%27 width=%271%27 height=%271%27/%3E"

VENDOR=web/vendor
STAMP="$VENDOR/.stamp"
WANT="$SWAGGER_PKG $SWAGGER_INTEGRITY
$REDOC_PKG $REDOC_INTEGRITY
redoc.standalone.js: $REDOC_LOGO_URL -> blank inline image"

present=1
for f in "${SWAGGER_FILES[@]}"; do [ -s "$VENDOR/swagger-ui/$f" ] || present=0; done
for f in "${REDOC_FILES[@]}"; do [ -s "$VENDOR/redoc/$(basename "$f")" ] || present=0; done
[ "$present" = 1 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && exit 0

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# fetch PKG INTEGRITY DEST FILE...: npm pack PKG, check the tarball, copy each FILE (a path inside the
# package) to DEST under its base name, atomically.
fetch() {
  local pkg=$1 integrity=$2 dest=$3
  shift 3
  local dir="$tmp/${pkg%@*}"
  mkdir -p "$dir/x"
  echo "fetch-web-assets: npm pack $pkg" >&2
  (cd "$dir" && npm pack --silent "$pkg" >/dev/null)
  local tgz
  tgz=$(ls "$dir"/*.tgz)
  local actual
  actual="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
  if [ "$actual" != "$integrity" ]; then
    echo "fetch-web-assets: integrity mismatch for $pkg: got $actual" >&2
    exit 1
  fi
  tar -xzf "$tgz" -C "$dir/x"
  mkdir -p "$dest"
  local f
  for f in "$@"; do
    local src="$dir/x/package/$f"
    [ -s "$src" ] || { echo "fetch-web-assets: $f not found in $pkg" >&2; exit 1; }
    cp "$src" "$dest/$(basename "$f").tmp" && mv "$dest/$(basename "$f").tmp" "$dest/$(basename "$f")"
  done
}

rm -f "$STAMP"
fetch "$SWAGGER_PKG" "$SWAGGER_INTEGRITY" "$VENDOR/swagger-ui" "${SWAGGER_FILES[@]}"
fetch "$REDOC_PKG" "$REDOC_INTEGRITY" "$VENDOR/redoc" "${REDOC_FILES[@]}"
bundle="$VENDOR/redoc/redoc.standalone.js"
if [ "$(grep -o -F "$REDOC_LOGO_URL" "$bundle" | wc -l)" != 1 ]; then
  echo "fetch-web-assets: expected the logo URL $REDOC_LOGO_URL once in $bundle" >&2
  exit 1
fi
sed "s#${REDOC_LOGO_URL//./\\.}#${REDOC_LOGO_LOCAL}#" "$bundle" > "$bundle.tmp"
if grep -q -F "cdn.redoc.ly" "$bundle.tmp"; then
  echo "fetch-web-assets: $bundle still names cdn.redoc.ly after the patch" >&2
  exit 1
fi
mv "$bundle.tmp" "$bundle"
printf '%s\n' "$WANT" > "$STAMP.tmp" && mv "$STAMP.tmp" "$STAMP"
echo "fetch-web-assets: $VENDOR/ ready" >&2
