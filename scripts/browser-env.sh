#!/usr/bin/env bash
# Prepare what the browser (web UI) tests need: Debian's Chromium at /usr/bin/chromium (with a font
# to render text in), and the pinned Playwright Python package in .venv, which drives that Chromium
# through `executable_path` (`playwright install` and its browser download are never used).
# Idempotent: when both are already there, neither apt nor pip is run.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
req="$root/tests/python/requirements.txt"
chromium=/usr/bin/chromium
font=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf

# The pinned version, read from the requirements file (one `playwright==X.Y.Z` line).
want="$(sed -n 's/^playwright==\([0-9][0-9.]*\)[[:space:]]*$/\1/p' "$req" | head -n1)"
if [ -z "$want" ]; then
  echo "error: no exact 'playwright==X.Y.Z' pin found in $req" >&2
  exit 1
fi

# --- Chromium (and fonts-dejavu-core) from apt ------------------------------------------------

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

# Wait up to 10 minutes for the dpkg lock, so that an apt run already under way (say, one that is
# installing chromium right now) finishes first instead of failing this one.
apt_install() {
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends chromium fonts-dejavu-core
}

if [ ! -x "$chromium" ] || [ ! -f "$font" ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: $chromium (or the DejaVu font) is missing and there is no apt-get;" \
      "install Chromium at $chromium by hand" >&2
    exit 1
  fi
  echo "installing chromium fonts-dejavu-core with apt-get ..."
  if ! apt_install; then
    # Stale package lists (or none yet, as in a fresh container): refresh them and retry once.
    echo "apt-get install failed; running apt-get update and retrying ..."
    if ! as_root apt-get -o DPkg::Lock::Timeout=600 update || ! apt_install; then
      echo "error: could not install chromium with apt-get: is the Debian mirror reachable?" >&2
      exit 1
    fi
  fi
  if [ ! -x "$chromium" ]; then
    echo "error: apt-get installed chromium but $chromium is still missing" >&2
    exit 1
  fi
fi

# Debian's /usr/bin/chromium is a shell wrapper; its /etc/chromium.d snippets can print harmless
# shell warnings on stderr, hence 2>/dev/null.
chromium_version="$("$chromium" --version 2>/dev/null | head -n1)"
if [ -z "$chromium_version" ]; then
  echo "error: '$chromium --version' printed nothing: is the install broken?" >&2
  exit 1
fi

# --- Playwright in .venv ----------------------------------------------------------------------

# tests/python/requirements.txt pins it next to the OpenAI SDK; python-env.sh creates .venv if
# needed and (re)installs whenever any pin is missing or stale.
"$root/scripts/python-env.sh"

if ! "$venv/bin/python" -c '
import sys
from importlib.metadata import version
import playwright.sync_api
sys.exit(version("playwright") != sys.argv[1])' "$want"; then
  echo "error: $venv lacks a working playwright==$want after scripts/python-env.sh" >&2
  exit 1
fi

echo "browser env ready: $chromium ($chromium_version), playwright $want in $venv"
