#!/usr/bin/env bash
# Install what the deployment tests run next to Hearth: nginx (tests/integration/proxy.rs runs
# deploy/nginx/hearth.conf with it) and the openssl command line (tests/integration/tls.rs makes
# its certificates with it). Debian's package, with apt; its service is not started
# (the tests run their own nginx on loopback ports). Idempotent: nothing happens when it is there.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/apt.sh
. "$root/scripts/lib/apt.sh"

missing=()
[ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ "${#missing[@]}" -gt 0 ]; then
  apt_install "${missing[@]}"
fi
echo "services ready: $(/usr/sbin/nginx -v 2>&1), $(openssl version)"
