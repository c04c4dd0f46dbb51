#!/usr/bin/env python3
"""Hearth's server against llama-server on the same GGUF, each started fresh in turn on loopback
with the same thread count, measured the same way from the client side.

For each server, in this order:
  - resident memory at rest (after start-up);
  - the first request of the fresh process (a ~250-token chat prompt, 128 tokens);
  - the same request warm (three more, each prompt unique so no prefix or response cache
    helps), the median kept;
  - serving: 1, 4 and 8 concurrent streams of 128 tokens (aggregate decode tokens/s, time to
    first token p50), resident memory at its peak while 8 stream.
Prompt speed is prompt tokens / time to first token; decode speed is (tokens − 1) / (time of
the last token − time of the first), from the streamed chunks. End-of-generation tokens are
biased away so every answer is 128 tokens. Standard library only.

    scripts/bench-servers.py --hearth target/release/hearth \\
        --llama-server "$LLAMACPP_DIR/src/llama.cpp/build/bin/llama-server" \\
        --model models/SmolLM2-135M-Instruct.Q4_1.gguf --threads 2 --rounds 2
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

SENTENCES = [
    "The harbour town woke slowly under a grey sky, its fishing boats rocking at their moorings.",
    "A baker carried trays of warm bread along the quay while gulls circled above the market.",
    "Children ran between the stalls, and an old sailor mended nets beside the lighthouse steps.",
    "By noon the fog had lifted, and the whole bay shone silver from the cliffs to the pier.",
]


def prompt(i):
    """A unique ~250-token chat: the number in front defeats prefix and response caches."""
    body = " ".join(SENTENCES[(i + j) % len(SENTENCES)] for j in range(11))
    return [{"role": "user", "content": f"Story {i}. {body} Continue the story."}]


MODEL = {}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def model_id(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/v1/models", headers={"authorization": "Bearer dummy"})
    return json.loads(c.getresponse().read())["data"][0]["id"]


def stream(port, i, tokens):
    """One streamed chat: (prompt_tokens, ttft_s, completion_tokens, decode_s)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = json.dumps({
        "model": MODEL[port], "messages": prompt(i), "max_tokens": tokens, "stream": True,
        "temperature": 0, "logit_bias": {"0": -100, "2": -100},
        "stream_options": {"include_usage": True},
    })
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body,
                 {"content-type": "application/json", "authorization": "Bearer dummy"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:300]!r}")
    first = last = None
    usage = {}
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if any(c.get("delta", {}).get("content") for c in chunk.get("choices", [])):
            last = time.perf_counter()
            first = first or last
        usage = chunk.get("usage") or usage
    conn.close()
    return usage["prompt_tokens"], first - t0, usage["completion_tokens"], last - first


def speeds(r):
    p, ttft, n, dec = r
    return p / ttft, (n - 1) / dec if dec > 0 else float("nan")


def level(port, n, tokens, base, pid=None):
    """n concurrent streams: (aggregate decode tok/s, ttft p50 ms, peak rss MB)."""
    results = [None] * n
    def run(k):
        results[k] = stream(port, base + k, tokens)
    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    peak = 0.0
    while any(t.is_alive() for t in threads):
        if pid:
            peak = max(peak, rss_mb(pid))
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    total = sum(r[2] for r in results)
    return total / wall, statistics.median(r[1] for r in results) * 1000, peak


def start(kind, args, port, data):
    if kind == "hearth":
        env = dict(os.environ, HEARTH__MODEL__PATH=args.model,
                   HEARTH__MODEL__THREADS=str(args.threads),
                   HEARTH__STORAGE__DATA_DIR=data, RUST_LOG="warn")
        cmd = [args.hearth, "serve", "--port", str(port)]
    else:
        env = dict(os.environ)
        cmd = [args.llama_server, "-m", args.model, "-t", str(args.threads), "-np", "8",
               "-c", "8192", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/v1/models", headers={"authorization": "Bearer dummy"})
            if c.getresponse().status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{kind} did not start")


def measure(kind, args, r):
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        proc = start(kind, args, port, data)
        try:
            time.sleep(1)
            MODEL[port] = model_id(port)
            res = {"rss_idle": rss_mb(proc.pid)}
            base = 1000 * r
            res["first"] = speeds(stream(port, base, args.tokens))
            res["rss_one"] = rss_mb(proc.pid)
            warm = [speeds(stream(port, base + 1 + k, args.tokens)) for k in range(3)]
            res["warm"] = (statistics.median(w[0] for w in warm),
                           statistics.median(w[1] for w in warm))
            for n in (1, 4, 8):
                res[f"serve_{n}"] = level(port, n, args.tokens, base + 10 * n, proc.pid)
            return res
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hearth", default="target/release/hearth")
    ap.add_argument("--llama-server", required=True)
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--json", help="also write the raw figures here")
    a = ap.parse_args()
    a.model = os.path.abspath(a.model)
    rounds = []
    for r in range(1, a.rounds + 1):
        row = {}
        for kind in ("llama", "hearth"):
            print(f"round {r}: {kind}…", flush=True)
            row[kind] = measure(kind, a, r)
        rounds.append(row)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rounds, f, indent=1)
    print(f"\n{'':34} {'hearth':>10} {'llama-server':>13} {'ratio':>7}")
    for r, row in enumerate(rounds, 1):
        h, l = row["hearth"], row["llama"]
        lines = [
            ("first request: prompt tok/s", h["first"][0], l["first"][0]),
            ("first request: decode tok/s", h["first"][1], l["first"][1]),
            ("warm: prompt tok/s", h["warm"][0], l["warm"][0]),
            ("warm: decode tok/s", h["warm"][1], l["warm"][1]),
        ]
        for n in (1, 4, 8):
            lines.append((f"{n} streams: aggregate tok/s", h[f"serve_{n}"][0], l[f"serve_{n}"][0]))
            lines.append((f"{n} streams: TTFT p50 ms", h[f"serve_{n}"][1], l[f"serve_{n}"][1]))
        lines += [
            ("RSS idle MB", h["rss_idle"], l["rss_idle"]),
            ("RSS after one request MB", h["rss_one"], l["rss_one"]),
            ("RSS peak, 8 streams MB", h["serve_8"][2], l["serve_8"][2]),
        ]
        print(f"round {r}")
        for name, hv, lv in lines:
            print(f"  {name:<32} {hv:>10.1f} {lv:>13.1f} {hv / lv:>6.2f}x")


if __name__ == "__main__":
    main()
