#!/usr/bin/env bash
# make test-docker: the Docker deployment built and run for real, on loopback only.
#  1. installs docker.io, docker-compose (1.29) and debootstrap from apt when missing;
#  2. starts dockerd when no engine answers, without a bridge or iptables (--bridge=none --iptables=false),
#     and stops it again at the end (an engine that was already running is left alone);
#  3. makes the base images with scripts/docker-images.sh when they are missing (no Docker Hub here);
#  4. runs tests/docker/test_docker.py: builds deploy/Dockerfile, starts deploy/docker-compose.yml with
#     tests/docker/docker-compose.test.yml (host networking, 127.0.0.1 only), checks it as a user would
#     and prints the figures.
# Every wait is bounded. PETCAM_DOCKER_KEEP_IMAGES=0 removes the petcam image at the end (default: kept,
# so the next run's build is cached).
set -euo pipefail
cd "$(dirname "$0")/../.."

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
missing=()
for p in docker.io docker-compose debootstrap; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "test-docker: installing ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# Debian's client, which matches its engine (a newer docker CLI elsewhere on the PATH may lack its builder).
export DOCKER=${DOCKER:-$(command -v /usr/bin/docker || command -v docker)}
export DOCKER_COMPOSE=${DOCKER_COMPOSE:-docker-compose}

started=""
stop_dockerd() {
  [ -n "$started" ] || return 0
  echo "test-docker: stopping the dockerd it started (pid $started)" >&2
  $SUDO kill -TERM "$started" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$started" 2>/dev/null || return 0; sleep 0.5; done
  $SUDO kill -KILL "$started" 2>/dev/null || true
}
trap stop_dockerd EXIT

if ! "$DOCKER" info >/dev/null 2>&1; then
  log=${TMPDIR:-/tmp}/petcam-dockerd.log
  echo "test-docker: starting dockerd --bridge=none --iptables=false (log: $log)" >&2
  $SUDO dockerd --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
    > "$log" 2>&1 &
  started=$!
  for _ in $(seq 1 120); do
    "$DOCKER" info >/dev/null 2>&1 && break
    kill -0 "$started" 2>/dev/null || { tail -n 20 "$log" >&2; echo "test-docker: dockerd exited" >&2; exit 1; }
    sleep 0.5
  done
  "$DOCKER" info >/dev/null 2>&1 || { tail -n 20 "$log" >&2; echo "test-docker: dockerd did not answer in 60 s" >&2; exit 1; }
fi

t0=$(date +%s)
scripts/docker-images.sh
echo "test-docker: base images ready in $(( $(date +%s) - t0 )) s" >&2

/usr/bin/python3 -m pytest -q -s -p no:cacheprovider tests/docker
