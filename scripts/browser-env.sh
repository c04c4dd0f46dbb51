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

# shellcheck source=lib/apt.sh
. "$root/scripts/lib/apt.sh"

if [ ! -x "$chromium" ] || [ ! -f "$font" ]; then
  apt_install chromium fonts-dejavu-core || exit 1
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
