#!/usr/bin/env bash
# Two Hearth replicas behind nginx on loopback, sharing a throwaway PostgreSQL and Redis:
#   scripts/replicas.sh start DIR   starts PostgreSQL, Redis, replicas A and B (each with its
#                                   own data directory and config in DIR/a, DIR/b) and nginx
#                                   running deploy/nginx/hearth-replicas.conf; prints (and writes
#                                   to DIR/env) LB, A, B (URLs), A_PID, B_PID, POSTGRES, REDIS
#   scripts/replicas.sh stop DIR    stops them all
# The binary is $HEARTH_BIN (default target/release/hearth: `cargo build --release`), the
# model $HEARTH_MODEL (default the one scripts/fetch-model.sh fetches); any other setting comes
# from the environment as usual (HEARTH__AUTH__REGISTRATION=open, …).
# Needs what scripts/services-env.sh installs (postgresql, redis-server, nginx).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"

cmd="${1:?usage: replicas.sh start DIR | stop DIR}"
dir="$(mkdir -p "${2:?DIR}" && cd "$2" && pwd)"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

stop() {
  for r in a b; do
    if [ -f "$dir/$r/pid" ]; then kill "$(cat "$dir/$r/pid")" 2>/dev/null || true; fi
  done
  if [ -f "$dir/nginx/nginx.pid" ]; then kill "$(cat "$dir/nginx/nginx.pid")" 2>/dev/null || true; fi
  ./scripts/redis.sh stop "$dir/redis" || true
  ./scripts/postgres.sh stop "$dir/pg" || true
}

wait_ready() { # URL LOG PID
  python3 - "$1" "$2" "$3" <<'PY'
import os, sys, time, urllib.request
url, log, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
deadline = time.time() + 180
while time.time() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(f"{url} exited; see {log}")
    try:
        if urllib.request.urlopen(url + "/ready", timeout=2).status == 200:
            sys.exit(0)
    except Exception:
        time.sleep(0.2)
sys.exit(f"{url} not ready in 180 s; see {log}")
PY
}

case "$cmd" in
  start)
    bin="${HEARTH_BIN:-$root/target/release/hearth}"
    [ -x "$bin" ] || { echo "no $bin: cargo build --release (or set HEARTH_BIN)" >&2; exit 1; }
    model="${HEARTH_MODEL:-$root/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
    # PostgreSQL runs as its own user when this is root: it must be able to reach DIR/pg.
    chmod a+x "$dir"
    postgres="$(./scripts/postgres.sh start "$dir/pg" "$(free_port)")"
    redis="$(./scripts/redis.sh start "$dir/redis" "$(free_port)")"
    declare -A port
    for r in a b; do
      port[$r]="$(free_port)"
      mkdir -p "$dir/$r"
      cat >"$dir/$r/config.toml" <<TOML
[server]
host = "127.0.0.1"
port = ${port[$r]}
trusted_proxies = ["127.0.0.1"]

[model]
path = "$model"

[storage]
data_dir = "$dir/$r"
url = "$postgres"

[cache]
url = "$redis"
TOML
      HEARTH_CONFIG="$dir/$r/config.toml" nohup "$bin" serve >"$dir/$r/log" 2>&1 &
      echo $! >"$dir/$r/pid"
    done
    for r in a b; do wait_ready "http://127.0.0.1:${port[$r]}" "$dir/$r/log" "$(cat "$dir/$r/pid")"; done
    lb="$(free_port)"
    mkdir -p "$dir/nginx"
    sed -e "s/127.0.0.1:8081/127.0.0.1:${port[a]}/" -e "s/127.0.0.1:8082/127.0.0.1:${port[b]}/" \
      -e "s/listen 80;/listen 127.0.0.1:$lb;/" deploy/nginx/hearth-replicas.conf >"$dir/nginx/site.conf"
    d="$dir/nginx"
    cat >"$d/nginx.conf" <<CONF
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $d/body;
  proxy_temp_path $d/proxy;
  fastcgi_temp_path $d/fastcgi;
  uwsgi_temp_path $d/uwsgi;
  scgi_temp_path $d/scgi;
  include $d/site.conf;
}
CONF
    /usr/sbin/nginx -p "$d" -c "$d/nginx.conf"
    wait_ready "http://127.0.0.1:$lb" "$d/error.log" "$(cat "$d/nginx.pid")"
    cat >"$dir/env" <<ENV
LB=http://127.0.0.1:$lb
A=http://127.0.0.1:${port[a]}
B=http://127.0.0.1:${port[b]}
A_PID=$(cat "$dir/a/pid")
B_PID=$(cat "$dir/b/pid")
POSTGRES=$postgres
REDIS=$redis
ENV
    cat "$dir/env"
    ;;
  stop)
    stop
    ;;
  *)
    echo "usage: replicas.sh start DIR | stop DIR" >&2
    exit 2
    ;;
esac
