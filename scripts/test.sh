#!/usr/bin/env bash
# The whole test suite, as CI runs it: fetch the model, check formatting and lints, run every test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

./scripts/fetch-model.sh
# The OpenAI SDK tests (tests/openai_sdk.rs) run Python from .venv with the pinned openai package.
./scripts/python-env.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# Tests that run the model share one engine per test binary and take a lock, so they never
# oversubscribe the CPU; the binaries themselves run one after another.
cargo test --all-targets --locked
