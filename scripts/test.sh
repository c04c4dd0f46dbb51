#!/usr/bin/env bash
# The whole test suite, as CI runs it: fetch the model, check formatting and lints, run every test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

./scripts/fetch-model.sh
# The OpenAI SDK and browser tests run Python from .venv with the pinned packages (openai,
# playwright); the browser tests drive Debian's Chromium, which browser-env.sh installs with apt.
./scripts/python-env.sh
./scripts/browser-env.sh
# nginx, for the test that runs the shipped reverse-proxy config (deploy/nginx/), and the
# PostgreSQL server.
./scripts/services-env.sh
# A throwaway PostgreSQL cluster on a free loopback port: the store's tests run on it as well as
# on SQLite (and fail rather than skip if it is missing), then the server's store-heavy tests
# run again with PostgreSQL as the store.
pg_dir="$(mktemp -d "${TMPDIR:-/tmp}/hearth-pg.XXXXXX")"
redis_dir="$(mktemp -d "${TMPDIR:-/tmp}/hearth-redis.XXXXXX")"
trap './scripts/postgres.sh stop "$pg_dir"; ./scripts/redis.sh stop "$redis_dir"; rm -rf "$pg_dir" "$redis_dir"' EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
HEARTH_TEST_POSTGRES="$(./scripts/postgres.sh start "$pg_dir" "$(free_port)")"
# And a throwaway Redis, for what replicas share (cache.url: budgets, the response cache,
# events, answers being generated).
HEARTH_TEST_REDIS="$(./scripts/redis.sh start "$redis_dir" "$(free_port)")"
export HEARTH_TEST_POSTGRES HEARTH_TEST_REDIS HEARTH_TEST_REQUIRE_POSTGRES=1
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# Tests that run the model share one engine per test binary and take a lock, so they never
# oversubscribe the CPU; the binaries themselves run one after another.
# Every target (as `--all-targets`), the browser suite apart: it goes last and alone (the same
# test binary, already built), since it measures how soon tokens reach the screen, which other
# tests hashing passwords beside it would skew. (The benches run once each, as tests; their
# harness takes no `--skip`.)
cargo test --locked --lib --bins --examples --tests -- --skip browser::
cargo test --locked --benches
HEARTH_TEST_STORE=postgres cargo test --locked --test integration -- \
  accounts:: playground:: conversation_tools:: blog:: web:: ws::
cargo test --locked --test integration -- browser::
