#!/usr/bin/env bash
# Fetch the default model if missing, build the release binary and run it.
# Until the HTTP server lands (issue 3) this runs `hearth generate` as a stand-in:
#   ./scripts/serve.sh "Why is the sky blue?"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

./scripts/fetch-model.sh
cargo build --release --locked
prompt="${1:-Write a haiku about a warm hearth.}"
exec ./target/release/hearth generate --prompt "$prompt" --max-tokens "${MAX_TOKENS:-200}"
