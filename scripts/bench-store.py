#!/usr/bin/env python3
"""The same API benchmark on Hearth's two stores: `hearth serve` on SQLite (the default) and on
PostgreSQL (`storage.url`), started fresh in turn on loopback, measured the same way from the
client side. Only store-bound routes, no generation: each client thread, as its own user,
imports a conversation (a transaction writing a tree of messages), reads it back, lists and
searches its conversations and adds and lists memories, for a fixed time. Reported per store:
operations per second (all clients together) and the p50/p95 latency of each kind; then the
ratio PostgreSQL / SQLite. Standard library only.

    scripts/bench-store.py --hearth target/release/hearth \\
        --postgres postgres://hearth@127.0.0.1:5432/hearth --clients 4 --seconds 20

The PostgreSQL database should be empty (a fresh schema: append
`?options=-csearch_path%3Dbench` after `CREATE SCHEMA bench`).
"""

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import tempfile
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(conn, method, path, token=None, body=None):
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers=headers)
    r = conn.getresponse()
    data = r.read()
    if r.status >= 300:
        raise RuntimeError(f"{method} {path}: {r.status} {data[:200]!r}")
    return json.loads(data) if data else None


def start(args, port, data, url):
    env = dict(os.environ, HEARTH__MODEL__PATH=args.model, HEARTH__STORAGE__DATA_DIR=data,
               HEARTH__AUTH__REGISTRATION="open", HEARTH__AUTH__LOGIN_PER_IP_PER_MINUTE="100000",
               RUST_LOG="warn")
    if url:
        env["HEARTH__STORAGE__URL"] = url
    proc = subprocess.Popen([args.hearth, "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"hearth exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/ready")
            if c.getresponse().status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("hearth did not start")


def conversation(i, k):
    msgs = [{"id": "m0", "parent_id": None, "role": "user",
             "content": f"client {i} turn {k}: tell me about otters and rivers"}]
    for j in range(1, 8):
        role = "assistant" if j % 2 else "user"
        msgs.append({"id": f"m{j}", "parent_id": f"m{j - 1}", "role": role,
                     "content": f"message {j} about beavers, dams and the river {k}"})
    return {"format": "hearth.conversation.v1", "conversation": {"title": f"River {i}.{k}"},
            "messages": msgs}


def client(port, i, seconds, out):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    creds = {"username": f"bench{i}", "password": "correct horse battery"}
    call(conn, "POST", "/api/auth/register", body=creds)
    token = call(conn, "POST", "/api/auth/login", body=creds)["access_token"]
    times = {}
    end = time.time() + seconds
    k = 0
    while time.time() < end:
        k += 1
        steps = [
            ("import", "POST", "/api/conversations/import", conversation(i, k)),
            ("list", "GET", "/api/conversations?limit=20", None),
            ("search", "GET", f"/api/conversations?q=river%20{k}", None),
            ("memory", "POST", "/api/me/memories", {"content": f"note {k}"}),
        ]
        for kind, method, path, body in steps:
            t = time.perf_counter()
            v = call(conn, method, path, token, body)
            times.setdefault(kind, []).append(time.perf_counter() - t)
            if kind == "import":
                t = time.perf_counter()
                call(conn, "GET", f"/api/conversations/{v['id']}", token)
                times.setdefault("get", []).append(time.perf_counter() - t)
        if k % 20 == 0:
            # Memories are capped per user: clear them so the writes keep succeeding.
            for m in call(conn, "GET", "/api/me/memories", token)["data"]:
                call(conn, "DELETE", f"/api/me/memories/{m['id']}", token)
    out[i] = times


def run(args, url):
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        proc = start(args, port, data, url)
        try:
            out = {}
            threads = [threading.Thread(target=client, args=(port, i, args.seconds, out))
                       for i in range(args.clients)]
            t0 = time.time()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.time() - t0
        finally:
            proc.terminate()
            proc.wait(30)
    merged = {}
    for times in out.values():
        for kind, ts in times.items():
            merged.setdefault(kind, []).extend(ts)
    ops = sum(len(ts) for ts in merged.values())
    lat = {kind: (statistics.median(ts) * 1000, statistics.quantiles(ts, n=20)[18] * 1000)
           for kind, ts in merged.items()}
    return ops / elapsed, lat


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hearth", default="target/release/hearth")
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--postgres", required=True, help="an empty PostgreSQL database URL")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20)
    args = ap.parse_args()
    results = {}
    for name, url in [("sqlite", None), ("postgres", args.postgres)]:
        results[name] = run(args, url)
        rate, lat = results[name]
        print(f"{name:9} {rate:8.1f} ops/s  " + "  ".join(
            f"{k} p50 {p50:.1f} p95 {p95:.1f} ms" for k, (p50, p95) in sorted(lat.items())))
    (s_rate, s_lat), (p_rate, p_lat) = results["sqlite"], results["postgres"]
    print(f"postgres/sqlite: throughput {p_rate / s_rate:.2f}x; p50 latency " + ", ".join(
        f"{k} {p_lat[k][0] / s_lat[k][0]:.2f}x" for k in sorted(s_lat)))


if __name__ == "__main__":
    main()
