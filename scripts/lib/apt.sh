# Shared by the scripts that install Debian packages the tests need (browser-env.sh,
# services-env.sh); sourced, not run. `apt_install PKG...` installs with apt-get as root (or
# through sudo), waiting up to 10 minutes for the dpkg lock (another apt run finishes first),
# and on failure refreshes stale (or missing) package lists once and retries. Package services
# are never started (policy-rc.d): the tests run their own servers on loopback ports.

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

apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: $* missing and there is no apt-get; install them by hand" >&2
    return 1
  fi
  local policy=/usr/sbin/policy-rc.d placed=0 rc=0
  if [ ! -e "$policy" ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod +x $policy" && placed=1
  fi
  local get=(as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600)
  echo "installing $* with apt-get ..."
  if ! "${get[@]}" install -y --no-install-recommends "$@"; then
    echo "apt-get install failed; running apt-get update and retrying ..."
    if ! "${get[@]}" update || ! "${get[@]}" install -y --no-install-recommends "$@"; then
      echo "error: could not install $* with apt-get: is the Debian mirror reachable?" >&2
      rc=1
    fi
  fi
  if [ "$placed" = 1 ]; then as_root rm -f "$policy"; fi
  return "$rc"
}
