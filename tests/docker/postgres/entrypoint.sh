#!/usr/bin/env bash
# The stand-in postgres:15's entrypoint (see Dockerfile): as root, own the data directory and drop to the
# postgres user; on an empty data directory, initdb with POSTGRES_USER/POSTGRES_PASSWORD, create POSTGRES_DB
# on a server that listens on no TCP port (so a TCP pg_isready only passes once the real server runs),
# then start the server.
set -Eeuo pipefail

if [ "${1:-}" = postgres ] && [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ "${1:-}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "error: the database is not initialised and POSTGRES_PASSWORD is not set" >&2
    exit 1
  fi
  user=${POSTGRES_USER:-postgres}
  db=${POSTGRES_DB:-$user}
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  initdb --pgdata="$PGDATA" --username="$user" --pwfile="$pwfile" \
         --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8
  rm -f "$pwfile"
  # Passwords over TCP from anywhere (the official image's rule); the server listens where the command says.
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"

  pg_ctl --pgdata="$PGDATA" --wait --options="-c listen_addresses=''" start
  if [ "$db" != postgres ]; then
    echo 'CREATE DATABASE :"db";' | psql -v ON_ERROR_STOP=1 --no-psqlrc --username="$user" --dbname=postgres \
                                         --set=db="$db"
  fi
  pg_ctl --pgdata="$PGDATA" --wait --mode=fast stop
  echo "initialised $PGDATA: user $user, database $db" >&2
fi

exec "$@"
