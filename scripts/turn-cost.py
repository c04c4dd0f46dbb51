#!/usr/bin/env python3
"""What a conversation turn costs Hearth before the prompt reaches the model, at 20 and 200
messages: starts the release server on a fresh data directory, builds one conversation turn by
turn (one-token answers), and reports each turn's `context.prepare_ms` (reading the branch,
counting and fitting it to the context, building the prompt), next to the whole turn's time and
a /v1 request with the same messages (the baseline in the same run).

    cargo build --release && python3 scripts/turn-cost.py
"""
import json, os, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "hearth")


def call(base, method, path, token=None, body=None):
    req = urllib.request.Request(base + path, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, data, timeout=600) as r:
        return json.loads(r.read() or b"null")


def main():
    data = tempfile.mkdtemp(prefix="hearth-turn-cost-")
    env = dict(os.environ, HEARTH__SERVER__PORT="0", HEARTH__STORAGE__DATA_DIR=data,
               HEARTH__CACHE__ENABLED="false", RUST_LOG="warn")
    server = subprocess.Popen([BIN, "serve"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        for line in server.stdout:
            if line.startswith("hearth listening on "):
                base = line.split("listening on ", 1)[1].strip()
                break
        creds = {"username": "bench", "password": "correct horse battery"}
        call(base, "POST", "/api/auth/register", body=creds)
        token = call(base, "POST", "/api/auth/login", body=creds)["access_token"]
        conv = call(base, "POST", "/api/conversations", token,
                    {"params": {"max_tokens": 1, "temperature": 0}})["id"]
        rows = []
        for turn in range(1, 101):
            started = time.perf_counter()
            v = call(base, "POST", f"/api/conversations/{conv}/messages", token,
                     {"content": f"Question number {turn}: what comes after {turn}?", "stream": False})
            whole_ms = (time.perf_counter() - started) * 1000
            messages = 2 * turn
            if messages in (20, 200):
                branch = call(base, "GET", f"/api/conversations/{conv}/messages", token)["data"]
                chat = [{"role": m["role"], "content": m["content"]} for m in branch[:-1]]
                started = time.perf_counter()
                call(base, "POST", "/v1/chat/completions", token,
                     {"messages": chat, "max_tokens": 1, "temperature": 0, "cache": False})
                v1_ms = (time.perf_counter() - started) * 1000
                ctx = v["message"]["context"]
                rows.append((messages, ctx["prepare_ms"], whole_ms, v1_ms, ctx["estimated_tokens"]))
        print("messages  prepare_ms  turn_ms  same-messages /v1 ms  turn/v1  prompt tokens (est.)")
        for m, p, w, b, t in rows:
            print(f"{m:8}  {p:10.2f}  {w:7.1f}  {b:20.1f}  {w / b:7.2f}  {t:8}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    sys.exit(main())
