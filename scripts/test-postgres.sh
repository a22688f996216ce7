#!/usr/bin/env bash
# A throwaway PostgreSQL for tests, on a free loopback port, in a directory of its own.
#   scripts/test-postgres.sh start DIR   -> prints postgresql://petcam@127.0.0.1:PORT/petcam
#   scripts/test-postgres.sh stop DIR    -> stops it and removes DIR
# Never touches the system's own cluster. As root the server runs as the `postgres` user (initdb refuses root).
set -euo pipefail

usage() {
  echo "usage: $0 start|stop DIR" >&2
  exit 2
}
[ $# -eq 2 ] || usage
cmd=$1
dir=$2

bindir=""
for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -V); do
  [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && bindir=$d
done
if [ -z "$bindir" ]; then
  if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
    bindir=$(dirname "$(command -v pg_ctl)")
  else
    echo "test-postgres: no PostgreSQL server binaries (install the postgresql package)" >&2
    exit 1
  fi
fi

as_owner=()
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || { echo "test-postgres: running as root needs a 'postgres' user" >&2; exit 1; }
  as_owner=(runuser -u postgres --)
fi
run() { "${as_owner[@]}" "$@"; }

# A port nobody listens on now: ask the kernel, else walk up from 55432.
free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
    return
  fi
  local p
  for p in $(seq 55432 55999); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return
    fi
  done
  echo "test-postgres: no free port" >&2
  exit 1
}

case "$cmd" in
  start)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    [ -e "$dir/location" ] && { echo "test-postgres: $dir is already in use" >&2; exit 1; }
    base=$dir
    if [ ${#as_owner[@]} -gt 0 ]; then
      chown postgres: "$dir"
      # DIR may sit below a directory only root can enter (pytest's tmp dirs): then the cluster lives in a
      # directory of its own under /tmp and DIR only records where.
      if ! run test -w "$dir"; then
        base=$(mktemp -d "${TMPDIR:-/tmp}/petcam-pg.XXXXXX")
        chown postgres: "$base"
      fi
    fi
    echo "$base" >"$dir/location"
    run "$bindir/initdb" --no-sync -A trust -U petcam -E UTF8 --locale=C -D "$base/data" >"$base/initdb.log" 2>&1 ||
      { cat "$base/initdb.log" >&2; exit 1; }
    started=""
    for _ in 1 2 3 4 5; do
      port=$(free_port)
      if run "$bindir/pg_ctl" -w -t 60 -D "$base/data" -l "$base/server.log" \
        -o "-k $base -p $port -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >/dev/null 2>&1; then
        started=1
        break
      fi
    done
    if [ -z "$started" ]; then
      echo "test-postgres: server did not start; its log follows" >&2
      cat "$base/server.log" >&2 || true
      exit 1
    fi
    echo "$port" >"$dir/port"
    run "$bindir/createdb" -h 127.0.0.1 -p "$port" -U petcam petcam >/dev/null
    echo "postgresql://petcam@127.0.0.1:$port/petcam"
    ;;
  stop)
    base=$dir
    [ -f "$dir/location" ] && base=$(cat "$dir/location")
    if [ -d "$base/data" ]; then
      run "$bindir/pg_ctl" -D "$base/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    [ "$base" != "$dir" ] && rm -rf "$base"
    rm -rf "$dir"
    ;;
  *)
    usage
    ;;
esac
