#!/usr/bin/env bash
# Installs the Debian 12 packages PetCam needs (only those missing) and fetches the models.
# Idempotent; runs apt as root or through sudo.
#
# PETCAM_SETUP=build: only what `make build` needs (compilers, -dev libraries, and what fetches the models and
# web assets), for deploy/Dockerfile's build stage; the packages in TEST_ONLY below are left out. Unset or
# `all` (the default): everything, tests and benchmarks included.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  # build
  cmake g++ make pkg-config clang-format
  # libraries
  libtorch-dev libdnnl-dev libopencv-dev libpng-dev libjwt-dev libsodium-dev libcrypt-dev libfmt-dev libspdlog-dev nlohmann-json3-dev libcli11-dev libgtest-dev
  librestinio-dev libasio-dev libhttp-parser-dev libsoci-dev libsqlite3-dev libpq-dev
  libheif-dev libwebp-dev libheif-examples
  # PostgreSQL server: the tests start a throwaway one (initdb/pg_ctl); production may use any PostgreSQL
  postgresql
  # tests, reference and benchmarks: plain PyTorch, real photos, pytest
  python3-torch python3-numpy python3-pil python3-pytest python3-skimage python-matplotlib-data python3-requests
  # the docs pages in a real browser; HTTP load for the benchmarks
  chromium chromium-driver python3-selenium wrk
  # the Docker files are checked statically (no Docker engine here)
  python3-yaml binutils
  # model fetch (npm pack; Node.js/npm may come from the image already, see below)
  openssl ca-certificates
  # HEIC/HEIF and WebP images
  libheif-dev libwebp-dev
  # SOCI's headers include Boost, which libsoci-dev does not depend on (found by the Docker build)
  libboost-dev
)

# For tests, benchmarks and checks only; PETCAM_SETUP=build skips them. A package not named here is installed
# in both modes, so one added above is never missing from the image's build.
TEST_ONLY=(
  clang-format postgresql
  python3-torch python3-numpy python3-pil python3-pytest python3-skimage python-matplotlib-data python3-requests
  chromium chromium-driver python3-selenium wrk
  python3-yaml binutils
)

case "${PETCAM_SETUP:-all}" in
  all) ;;
  build)
    wanted=()
    for p in "${PACKAGES[@]}"; do
      [[ " ${TEST_ONLY[*]} " == *" $p "* ]] || wanted+=("$p")
    done
    PACKAGES=("${wanted[@]}")
    ;;
  *) echo "setup: PETCAM_SETUP=${PETCAM_SETUP} (expected all or build)" >&2; exit 2 ;;
esac

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm: any working npm will do; Debian's conflicts with NodeSource's nodejs, so install only if absent.
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

scripts/fetch-models.sh
scripts/fetch-web-assets.sh
