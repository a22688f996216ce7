#!/usr/bin/env bash
# Makes the base images that deploy/ needs on a Docker host that cannot pull from Docker Hub, from Debian's own
# packages:
#   debian:12, debian:12-slim   debootstrap --variant=minbase of bookworm from the mirror apt uses here, imported
#                               with `docker import` (slim: the same tree without docs, man pages and locales)
#   postgres:15                 FOR TESTS ONLY: Debian's postgresql-15 behind an entrypoint of ours that keeps
#                               the official image's contract that deploy/docker-compose.yml relies on
#                               (tests/docker/postgres/)
# Idempotent: an image that already exists is left alone; the root file systems and the .debs are cached in
# $PETCAM_DOCKER_CACHE (default /var/cache/petcam-docker), so deleting the images and running this again only
# re-imports. Needs root (debootstrap), a running Docker engine, and the packages debootstrap, docker.io.
# Builds run with --network host: the engine runs without a bridge here (dockerd --bridge=none).
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${PETCAM_DOCKER_CACHE:-/var/cache/petcam-docker}
DOCKER=${DOCKER:-docker}
SUITE=bookworm

ROOTFS_DIR=
trap '[ -z "$ROOTFS_DIR" ] || rm -rf "$ROOTFS_DIR" "$ROOTFS_DIR.slim"' EXIT

log() { echo "docker-images: $*" >&2; }
have_image() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

# The first URI of an enabled "deb" entry for $1 (a suite) in apt's sources, deb822 files first.
apt_mirror() {
  local suite=$1 f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$suite" 'BEGIN { RS = ""; FS = "\n" }
      { uris = ""; suites = ""; types = ""; enabled = 1
        for (i = 1; i <= NF; i++) {
          l = $i
          if (l ~ /^[ \t]*#/) continue
          if (l ~ /^URIs:/)    { sub(/^URIs:[ \t]*/, "", l); uris = l }
          if (l ~ /^Suites:/)  { sub(/^Suites:[ \t]*/, "", l); suites = " " l " " }
          if (l ~ /^Types:/)   { sub(/^Types:[ \t]*/, "", l); types = " " l " " }
          if (l ~ /^Enabled:[ \t]*[Nn]o/) enabled = 0
        }
        if (enabled && types ~ / deb / && index(suites, " " suite " ")) { split(uris, u, " "); print u[1] }
      }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v suite="$suite" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                                         if ($(i + 1) == suite) print $i }' "$f"
  done
}

# debian-12-full.tar and debian-12-slim.tar in $CACHE, from one debootstrap run.
make_rootfs_tarballs() {
  local full=$CACHE/debian-12-full.tar slim=$CACHE/debian-12-slim.tar
  [ -s "$full" ] && [ -s "$slim" ] && return 0
  command -v debootstrap >/dev/null || { log "debootstrap is not installed (apt-get install debootstrap)"; exit 1; }
  local mirror security
  mirror=$(apt_mirror "$SUITE" | head -n 1)
  security=$(apt_mirror "$SUITE-security" | head -n 1)
  [ -n "$mirror" ] || { log "no 'deb ... $SUITE' entry in /etc/apt/sources.list{,.d/*}: cannot pick a mirror"; exit 1; }
  log "debootstrap $SUITE from $mirror (security: ${security:-none})"

  mkdir -p "$CACHE/debs"
  local dir
  dir=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  ROOTFS_DIR=$dir
  debootstrap --variant=minbase --cache-dir="$CACHE/debs" "$SUITE" "$dir" "$mirror" >&2

  # apt inside the image uses the same mirror, with bookworm-updates and security when this machine has them.
  rm -f "$dir/etc/apt/sources.list"
  {
    printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\n' "$mirror" "$SUITE" "$SUITE"
    printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    if [ -n "$security" ]; then
      printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\n' "$security" "$SUITE"
      printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    fi
  } > "$dir/etc/apt/sources.list.d/debian.sources"
  # What a container must not inherit from this machine; Docker mounts its own resolv.conf, hosts, hostname.
  : > "$dir/etc/resolv.conf"
  : > "$dir/etc/hostname"
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb \
         "$dir"/var/log/* "$dir"/tmp/* "$dir"/root/.bash_history
  # Images need no downloaded package lists or indexes of translations.
  printf 'Acquire::Languages "none";\n' > "$dir/etc/apt/apt.conf.d/90petcam-no-languages"

  # slim: dpkg stops installing documentation, man pages and translations, and the ones already there go.
  cp -a "$dir" "$dir.slim"

  # debian:12 is the build stage's base, which fetches from the npm registry: it trusts what this machine
  # trusts, the local CAs that ca-certificates adds when setup.sh installs it (a TLS-inspecting egress proxy's
  # CA, say), also for npm, which reads only its own cafile. PETCAM_DOCKER_LOCAL_CAS=0 leaves them out.
  if [ "${PETCAM_DOCKER_LOCAL_CAS:-1}" != 0 ] && compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    log "debian:12 gets this machine's local CAs: $(cd /usr/local/share/ca-certificates && echo *.crt)"
    mkdir -p "$dir/usr/local/share/ca-certificates" "$dir/usr/etc"
    cp /usr/local/share/ca-certificates/*.crt "$dir/usr/local/share/ca-certificates/"
    echo "cafile=/etc/ssl/certs/ca-certificates.crt" | tee "$dir/etc/npmrc" > "$dir/usr/etc/npmrc"
  fi
  tar -C "$dir" --numeric-owner --xattrs -cf "$full.tmp" . && mv "$full.tmp" "$full"
  cat > "$dir.slim/etc/dpkg/dpkg.cfg.d/90petcam-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG
  find "$dir.slim/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$dir.slim/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$dir.slim"/usr/share/man/* "$dir.slim"/usr/share/info/* "$dir.slim"/usr/share/groff/* \
         "$dir.slim"/usr/share/lintian/* "$dir.slim"/usr/share/linda/*
  find "$dir.slim/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  tar -C "$dir.slim" --numeric-owner --xattrs -cf "$slim.tmp" . && mv "$slim.tmp" "$slim"
  rm -rf "$dir" "$dir.slim"
  ROOTFS_DIR=
}

import_image() {  # tag tarball
  log "docker import $2 as $1"
  "$DOCKER" import --change 'CMD ["bash"]' \
    --message "debootstrap --variant=minbase $SUITE (scripts/docker-images.sh)" "$2" "$1" >/dev/null
}

"$DOCKER" info >/dev/null 2>&1 || { log "no Docker engine answers (start dockerd first)"; exit 1; }
if have_image debian:12 && have_image debian:12-slim; then
  log "debian:12 and debian:12-slim exist"
else
  mkdir -p "$CACHE"
  make_rootfs_tarballs
  have_image debian:12 || import_image debian:12 "$CACHE/debian-12-full.tar"
  have_image debian:12-slim || import_image debian:12-slim "$CACHE/debian-12-slim.tar"
fi

if have_image postgres:15; then
  log "postgres:15 exists"
else
  log "building the test stand-in postgres:15 from Debian's postgresql-15"
  "$DOCKER" build --network host -t postgres:15 tests/docker/postgres >&2
fi
"$DOCKER" image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' debian >&2
"$DOCKER" image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' postgres >&2
