#!/usr/bin/env bash
# Create (if missing) the Python venv at .venv with the packages pinned in tests/python/requirements.txt:
# the OpenAI SDK that tests/openai_sdk.rs drives the server with, and Playwright for the browser
# tests (scripts/browser-env.sh). Idempotent: when .venv already has every pinned version, pip is
# not run.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
req="$root/tests/python/requirements.txt"

# The pinned version, read from the requirements file (one `openai==X.Y.Z` line).
want="$(sed -n 's/^openai==\([0-9][0-9.]*\)[[:space:]]*$/\1/p' "$req" | head -n1)"
if [ -z "$want" ]; then
  echo "error: no exact 'openai==X.Y.Z' pin found in $req" >&2
  exit 1
fi

# True when .venv has every exact `name==X.Y.Z` pin of the requirements file installed (so adding or
# bumping a pin there makes a stale venv reinstall).
has_pinned() {
  [ -x "$venv/bin/python" ] &&
    "$venv/bin/python" - "$req" >/dev/null 2>&1 <<'PY'
import re, sys
from importlib.metadata import version
pins = [m.groups() for m in (re.match(r"([A-Za-z0-9_.-]+)==([0-9][0-9.]*)\s*$", l) for l in open(sys.argv[1])) if m]
sys.exit(not pins or any(version(name) != want for name, want in pins))
PY
}

# The pins, for messages: "openai 2.54.0, playwright 1.65.2".
pins="$(sed -n 's/^\([A-Za-z0-9_.-]*\)==\([0-9][0-9.]*\)[[:space:]]*$/\1 \2/p' "$req" | paste -sd, - | sed 's/,/, /g')"

if has_pinned; then
  echo "python env ready: $venv ($pins)"
  exit 0
fi

PY="${PYTHON:-python3}"
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "error: $PY not found; install Python 3 (or set PYTHON) to run the OpenAI SDK tests" >&2
  exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "creating venv $venv ..."
  if ! "$PY" -m venv "$venv"; then
    rm -rf "$venv"
    echo "error: '$PY -m venv' failed; install the venv module (e.g. 'apt-get install python3-venv')" >&2
    exit 1
  fi
fi

echo "installing $pins into $venv ..."
if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"; then
  echo "error: pip install -r $req failed: is the network (PyPI) reachable?" >&2
  exit 1
fi

if ! has_pinned; then
  echo "error: $venv still lacks a pinned version ($pins) after pip install -r $req" >&2
  exit 1
fi
echo "python env ready: $venv ($pins)"
