#!/usr/bin/env bash
# Runs CMD with a throwaway PostgreSQL: tests/with-postgres.sh CMD [ARGS...]
# Exports PETCAM_TEST_POSTGRES_URL and DATABASE_URL for CMD, stops the server afterwards (also on failure or
# interrupt), and exits with CMD's status.
set -uo pipefail
[ $# -ge 1 ] || { echo "usage: $0 CMD [ARGS...]" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
script="$here/../scripts/test-postgres.sh"

dir=$(mktemp -d "${TMPDIR:-/tmp}/petcam-pg-XXXXXX") || exit 1
cleanup() { "$script" stop "$dir" >/dev/null 2>&1 || true; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

url=$("$script" start "$dir") || { echo "with-postgres: could not start PostgreSQL" >&2; exit 1; }
export PETCAM_TEST_POSTGRES_URL="$url" DATABASE_URL="$url"
"$@"
