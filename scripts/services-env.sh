#!/usr/bin/env bash
# Install the servers the deployment tests run next to Hearth: nginx (tests/integration/proxy.rs
# runs deploy/nginx/hearth.conf with it). Debian's package, with apt; the service is not started
# (the tests run their own nginx on loopback ports). Idempotent: nothing happens when it is there.
set -euo pipefail

if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
  echo "services ready: $(/usr/sbin/nginx -v 2>&1 || nginx -v 2>&1)"
  exit 0
fi

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "error: need root (or sudo) to run: $*" >&2
    return 1
  fi
}

if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: nginx is missing and there is no apt-get; install nginx by hand" >&2
  exit 1
fi

# Keep the package's service from starting (no init may run here, and port 80 is not ours).
policy=/usr/sbin/policy-rc.d
placed_policy=0
if [ ! -e "$policy" ]; then
  as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod +x $policy"
  placed_policy=1
fi
cleanup() { if [ "$placed_policy" = 1 ]; then as_root rm -f "$policy"; fi; }
trap cleanup EXIT

install() {
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends nginx-light
}
echo "installing nginx-light with apt-get ..."
if ! install; then
  echo "apt-get install failed; running apt-get update and retrying ..."
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update
  install
fi
echo "services ready: $(/usr/sbin/nginx -v 2>&1)"
