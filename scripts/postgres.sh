#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests, on loopback: `scripts/postgres.sh start DIR PORT`
# creates it in DIR (once) and starts it, printing the URL to use (user `hearth`, database
# `hearth`, no password: trust on loopback only); `scripts/postgres.sh stop DIR` stops it.
# Debian's server binaries (scripts/services-env.sh installs them). As root the cluster runs as
# the `postgres` user, since PostgreSQL refuses to run as root.
set -euo pipefail

cmd="${1:?usage: postgres.sh start DIR PORT | stop DIR}"
dir="$(mkdir -p "${2:?DIR}" && cd "$2" && pwd)"
bin="$(dirname "$(ls -d /usr/lib/postgresql/*/bin/postgres 2>/dev/null | sort -V | tail -1)")"
[ -x "$bin/pg_ctl" ] || { echo "no PostgreSQL server: run scripts/services-env.sh" >&2; exit 1; }

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
  start)
    port="${3:?PORT}"
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      as_owner "$bin/initdb" -D "$dir/data" -U hearth -A trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log"
    fi
    # Small and fast: no durability needed for a cluster thrown away after the run.
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400" \
      start >/dev/null
    as_owner "$bin/psql" -h 127.0.0.1 -p "$port" -U hearth -d postgres -qAtc \
      "SELECT 1 FROM pg_database WHERE datname = 'hearth'" | grep -q 1 ||
      as_owner "$bin/psql" -h 127.0.0.1 -p "$port" -U hearth -d postgres -qc "CREATE DATABASE hearth"
    echo "postgres://hearth@127.0.0.1:$port/hearth"
    ;;
  stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
      as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    fi
    ;;
  *)
    echo "usage: postgres.sh start DIR PORT | stop DIR" >&2
    exit 2
    ;;
esac
