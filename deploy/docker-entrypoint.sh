#!/bin/sh
# The container's entrypoint (tested directly by the integration tests, as no Docker engine runs
# in CI). For `serve` with no model configured (HEARTH__MODEL__PATH unset and no config file
# naming one), make sure the default model is in $HEARTH_MODELS_DIR — fetched and checked at
# first start, left alone when it is already there (a mounted or earlier-fetched file) — and
# point Hearth at it. Then exec Hearth, so it is PID 1 and receives SIGTERM itself.
set -eu

HEARTH_BIN="${HEARTH_BIN:-hearth}"
MODELS_DIR="${HEARTH_MODELS_DIR:-/data/models}"
FETCH="${HEARTH_FETCH_MODEL:-/usr/local/share/hearth/fetch-model.sh}"
DEFAULT_MODEL="SmolLM2-135M-Instruct.Q4_1.gguf"

# The image names /etc/hearth/config.toml; without a file mounted there, run on the defaults
# and the environment (Hearth refuses a named config that does not exist).
if [ -n "${HEARTH_CONFIG:-}" ] && [ ! -e "$HEARTH_CONFIG" ]; then
    unset HEARTH_CONFIG
fi

# Whether the config file sets `path` in its [model] section.
config_names_a_model() {
    [ -n "${HEARTH_CONFIG:-}" ] && [ -f "$HEARTH_CONFIG" ] && awk '
        /^[[:space:]]*\[/ { in_model = ($0 ~ /^[[:space:]]*\[model\][[:space:]]*(#.*)?$/) }
        in_model && /^[[:space:]]*path[[:space:]]*=/ { found = 1 }
        END { exit !found }' "$HEARTH_CONFIG"
}

if [ "${1:-serve}" = "serve" ] && [ -z "${HEARTH__MODEL__PATH:-}" ] && ! config_names_a_model; then
    mkdir -p "$MODELS_DIR"
    HEARTH_MODELS_DIR="$MODELS_DIR" "$FETCH"
    HEARTH__MODEL__PATH="$MODELS_DIR/$DEFAULT_MODEL"
    export HEARTH__MODEL__PATH
fi

exec "$HEARTH_BIN" "$@"
