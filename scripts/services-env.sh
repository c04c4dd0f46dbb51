#!/usr/bin/env bash
# Install what the deployment tests run next to Hearth: nginx (tests/integration/proxy.rs runs
# deploy/nginx/hearth.conf with it), the openssl command line (tests/integration/tls.rs makes
# its certificates with it), the PostgreSQL server (scripts/postgres.sh starts a throwaway
# cluster for the store's tests) and Redis (scripts/redis.sh, for what replicas share through cache.url). Debian's packages, with apt; their services are not started
# (the tests run their own on loopback ports). Idempotent: nothing happens when they are there.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/apt.sh
. "$root/scripts/lib/apt.sh"

missing=()
[ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ "${#missing[@]}" -gt 0 ]; then
  apt_install "${missing[@]}"
fi
pg_bin="$(dirname "$(ls -d /usr/lib/postgresql/*/bin/postgres | sort -V | tail -1)")"
echo "services ready: $(/usr/sbin/nginx -v 2>&1), $(openssl version), $("$pg_bin/postgres" --version), $(redis-server --version | cut -d' ' -f1-3)"
