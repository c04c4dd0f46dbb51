#!/usr/bin/env bash
# Fetch the default model if missing, build the release binary and serve the OpenAI-compatible
# API on 127.0.0.1:8080 (see config.toml; extra arguments go to `hearth serve`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

./scripts/fetch-model.sh
cargo build --release --locked
exec ./target/release/hearth serve "$@"
