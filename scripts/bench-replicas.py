#!/usr/bin/env python3
"""What following an answer from another replica costs: scripts/replicas.sh starts two replicas
(A, B) sharing PostgreSQL and Redis; for each of --answers conversation answers generated on A,
the client that asked reads it on A, a second follower reads it on A (the baseline: a follower
on the generating replica) and a third on B (through the Redis stream). Each follower records
when each character offset arrived; reported: the lag behind the asking client at every offset,
p50 and p95, for the follower on A and the one on B, and the difference. Standard library only.

    cargo build --release
    scripts/bench-replicas.py --answers 10 --max-tokens 200
"""

import argparse
import http.client
import json
import os
import pathlib
import statistics
import subprocess
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def request(base, method, path, token=None, body=None):
    host = base.removeprefix("http://")
    conn = http.client.HTTPConnection(host, timeout=120)
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    return conn, conn.getresponse()


def call(base, method, path, token=None, body=None):
    conn, r = request(base, method, path, token, body)
    data = r.read()
    conn.close()
    if r.status >= 300:
        raise SystemExit(f"{method} {path}: {r.status} {data[:200]!r}")
    return json.loads(data) if data else None


def frames(response):
    """SSE `data:` payloads as JSON, as they arrive."""
    buf = b""
    while True:
        chunk = response.read1(65536)
        if not chunk:
            return
        buf += chunk
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            data = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
            if data:
                yield json.loads(b"\n".join(data))


def arrivals(response, first=None):
    """Arrival time of each character offset (and the message id from the first frame)."""
    times, count = [], 0
    for f in frames(response):
        if first is not None and f.get("type") == "message":
            first["id"] = f["message"]["id"]
            first["ready"].set()
        if f.get("type") == "token":
            now = time.perf_counter()
            n = len(f["text"])
            times.extend([now] * n)
            count += n
        if f.get("type") == "done":
            break
    return times


def one_answer(lb_a, lb_b, token, max_tokens):
    conv = call(lb_a, "POST", "/api/conversations", token,
                {"params": {"temperature": 0, "max_tokens": max_tokens}})["id"]
    first = {"ready": threading.Event()}
    results = {}

    def asker():
        conn, r = request(lb_a, "POST", f"/api/conversations/{conv}/messages", token,
                          {"content": "Tell me a long story about the sea and its ships."})
        results["asker"] = arrivals(r, first)
        conn.close()

    def follower(name, base):
        first["ready"].wait(60)
        conn, r = request(base, "GET", f"/api/messages/{first['id']}/stream", token)
        results[name] = arrivals(r)
        conn.close()

    threads = [threading.Thread(target=asker),
               threading.Thread(target=follower, args=("same", lb_a)),
               threading.Thread(target=follower, args=("other", lb_b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lags = {}
    for name in ("same", "other"):
        n = min(len(results["asker"]), len(results[name]))
        # The followers join a moment after the start and get the backlog at once: compare
        # from a quarter of the way on, where all three read live.
        start = n // 4
        lags[name] = [(results[name][i] - results["asker"][i]) * 1000 for i in range(start, n)]
    return lags


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--answers", type=int, default=10)
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--hearth", default=str(ROOT / "target/release/hearth"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, HEARTH_BIN=args.hearth, HEARTH__AUTH__REGISTRATION="open")
        out = subprocess.run([str(ROOT / "scripts/replicas.sh"), "start", d], env=env,
                             capture_output=True, text=True)
        try:
            if out.returncode != 0:
                raise SystemExit(out.stdout + out.stderr)
            urls = dict(line.split("=", 1) for line in out.stdout.split() if "=" in line)
            a, b = urls["A"], urls["B"]
            creds = {"username": "bench", "password": "correct horse battery"}
            call(a, "POST", "/api/auth/register", body=creds)
            token = call(b, "POST", "/api/auth/login", body=creds)["access_token"]
            same, other = [], []
            for _ in range(args.answers):
                lags = one_answer(a, b, token, args.max_tokens)
                same += lags["same"]
                other += lags["other"]
            print(f"{args.answers} answers, {len(same)} character offsets compared")
            print("lag behind the asking client (ms)   p50     p95")
            print(f"follower on the same replica      {pct(same, 50):6.2f}  {pct(same, 95):6.2f}")
            print(f"follower on the other replica     {pct(other, 50):6.2f}  {pct(other, 95):6.2f}")
            print(f"difference (p50)                  {pct(other, 50) - pct(same, 50):6.2f}")
        finally:
            subprocess.run([str(ROOT / "scripts/replicas.sh"), "stop", d])


if __name__ == "__main__":
    main()
