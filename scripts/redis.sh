#!/usr/bin/env bash
# A throwaway Redis for the tests, on loopback: `scripts/redis.sh start DIR PORT` starts it
# (no persistence), printing the URL to use; `scripts/redis.sh stop DIR` stops it. Debian's
# redis-server (scripts/services-env.sh installs it).
set -euo pipefail

cmd="${1:?usage: redis.sh start DIR PORT | stop DIR}"
dir="$(mkdir -p "${2:?DIR}" && cd "$2" && pwd)"

case "$cmd" in
  start)
    port="${3:?PORT}"
    redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize yes \
      --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
    for _ in $(seq 100); do
      redis-cli -p "$port" ping >/dev/null 2>&1 && break
      sleep 0.1
    done
    echo "redis://127.0.0.1:$port"
    ;;
  stop)
    if [ -f "$dir/redis.pid" ]; then
      kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
    fi
    ;;
  *)
    echo "usage: redis.sh start DIR PORT | stop DIR" >&2
    exit 2
    ;;
esac
