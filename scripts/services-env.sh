#!/usr/bin/env bash
# Install the servers the deployment tests run next to Hearth: nginx (tests/integration/proxy.rs
# runs deploy/nginx/hearth.conf with it). Debian's package, with apt; its service is not started
# (the tests run their own nginx on loopback ports). Idempotent: nothing happens when it is there.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/apt.sh
. "$root/scripts/lib/apt.sh"

if [ ! -x /usr/sbin/nginx ]; then
  apt_install nginx-light
fi
echo "services ready: $(/usr/sbin/nginx -v 2>&1)"
