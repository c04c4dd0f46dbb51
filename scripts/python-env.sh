#!/usr/bin/env bash
# Create (if missing) the Python venv at .venv with the pinned OpenAI SDK that tests/openai_sdk.rs
# drives the server with. Idempotent: when .venv already has the pinned version, pip is not run.
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

has_pinned() {
  [ -x "$venv/bin/python" ] &&
    "$venv/bin/python" -c 'import sys, openai; sys.exit(openai.__version__ != sys.argv[1])' "$want" \
      >/dev/null 2>&1
}

if has_pinned; then
  echo "python env ready: $venv (openai $want)"
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

echo "installing openai==$want into $venv ..."
if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"; then
  echo "error: pip install -r $req failed: is the network (PyPI) reachable?" >&2
  exit 1
fi

if ! has_pinned; then
  echo "error: $venv still lacks openai==$want after pip install" >&2
  exit 1
fi
echo "python env ready: $venv (openai $want)"
