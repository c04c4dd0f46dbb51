#!/usr/bin/env python3
"""Resident memory of a running OpenAI-compatible server (Hearth or llama-server) at rest, after
one chat request and at its peak while N requests generate at once. Reads VmRSS from
/proc/PID/status (Linux); standard library only.

    ./target/release/hearth serve --port 8097 &
    python3 scripts/bench-rss.py --url http://127.0.0.1:8097 --pid $! --streams 8
"""

import argparse
import json
import threading
import time
import urllib.request


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def model_id(url, key):
    req = urllib.request.Request(f"{url}/v1/models", headers={"authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)["data"][0]["id"]


def chat(url, key, model, i, tokens):
    body = json.dumps({
        "model": model, "max_tokens": tokens, "temperature": 0.7,
        "messages": [{"role": "user", "content": f"Tell a long story about bread number {i}."}],
    }).encode()
    req = urllib.request.Request(f"{url}/v1/chat/completions", body, {
        "content-type": "application/json", "authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=600) as r:
        r.read()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--api-key", default="dummy")
    a = ap.parse_args()
    model = model_id(a.url, a.api_key)
    idle = rss_kb(a.pid)
    chat(a.url, a.api_key, model, 0, a.tokens)
    after_one = rss_kb(a.pid)
    threads = [threading.Thread(target=chat, args=(a.url, a.api_key, model, i, a.tokens))
               for i in range(a.streams)]
    for t in threads:
        t.start()
    peak = 0
    while any(t.is_alive() for t in threads):
        peak = max(peak, rss_kb(a.pid))
        time.sleep(0.1)
    peak = max(peak, rss_kb(a.pid))
    print(f"model {model}: idle {idle / 1024:.0f} MB, after one request {after_one / 1024:.0f} MB, "
          f"peak with {a.streams} streams {peak / 1024:.0f} MB")


if __name__ == "__main__":
    main()
