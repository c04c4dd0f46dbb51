#!/usr/bin/env python3
"""Serving benchmark: N concurrent streaming chat clients against a running Hearth server.

Reports, for each concurrency level, aggregate decode tokens/s, the ratio to one stream (the
baseline, measured in the same run), time to first token p50/p99, and the time to first token of
a conversation's second turn (served from the prefix cache) against its first. Standard library
only; loopback only.

    ./target/release/hearth serve --port 8080 &
    python3 scripts/bench-serve.py --url http://127.0.0.1:8080 --levels 1,4,8 --tokens 64
"""

import argparse
import http.client
import json
import statistics
import threading
import time
import urllib.parse


def stream_chat(url, model, messages, max_tokens, api_key=None):
    """One streaming request: returns (ttft_s, total_s, n_tokens, text, usage)."""
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    body = json.dumps({
        "model": model, "messages": messages, "max_tokens": max_tokens, "stream": True,
        "temperature": 0, "logit_bias": {"2": -100},
        "stream_options": {"include_usage": True},
    })
    headers = {"content-type": "application/json"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body, headers)
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:200]!r}")
    ttft = None
    n = 0
    text = []
    usage = {}
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        for choice in chunk.get("choices", []):
            piece = choice.get("delta", {}).get("content")
            if piece:
                if ttft is None:
                    ttft = time.perf_counter() - t0
                text.append(piece)
        if chunk.get("usage"):
            usage = chunk["usage"]
            n = usage["completion_tokens"]
    total = time.perf_counter() - t0
    conn.close()
    return ttft or total, total, n, "".join(text), usage


def percentile(xs, p):
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, round(p / 100 * (len(xs) - 1))))
    return xs[k]


def run_level(args, model, level):
    results = [None] * level
    topics = ["the sea", "mountains", "cities", "rivers", "forests", "deserts", "stars", "music",
              "bread", "trains", "birds", "rain", "snow", "islands", "gardens", "bridges"]

    def worker(i):
        messages = [{"role": "user", "content": f"Write a long story about {topics[i % len(topics)]}."}]
        results[i] = stream_chat(args.url, model, messages, args.tokens, args.api_key)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(level)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    tokens = sum(r[2] for r in results)
    ttfts = [r[0] for r in results]
    return tokens / wall, ttfts


def second_turn(args, model):
    """TTFT of a conversation's first turn (cold) and second turn (prefix cached).

    The first turn carries a pasted document (--context-words long), as when someone asks about
    a text; the second turn is a short follow-up question."""
    doc = " ".join(f"Paragraph {i}: Ana lives in Lisbon, sails on the Atlantic and keeps notes "
                   f"about tides, winds and harbours." for i in range(args.context_words // 16))
    history = [{"role": "user", "content": f"Here are my notes:\n{doc}\nSummarise them."}]
    cold, _, _, answer, u1 = stream_chat(args.url, model, history, 32, args.api_key)
    history += [{"role": "assistant", "content": answer},
                {"role": "user", "content": "What is my name?"}]
    warm, _, _, _, u2 = stream_chat(args.url, model, history, 8, args.api_key)
    return cold, warm, u1, u2


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--levels", default="1,4,8")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--context-words", type=int, default=400)
    args = ap.parse_args()
    u = urllib.parse.urlparse(args.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("GET", "/v1/models", headers={"authorization": f"Bearer {args.api_key}"} if args.api_key else {})
    model = json.loads(conn.getresponse().read())["data"][0]["id"]
    conn.close()
    stream_chat(args.url, model, [{"role": "user", "content": "warm up"}], 4, args.api_key)
    base = None
    print(f"model {model}, {args.tokens} tokens per stream")
    for level in [int(x) for x in args.levels.split(",")]:
        rate, ttfts = run_level(args, model, level)
        base = base or rate
        print(f"streams {level:2d}: aggregate {rate:6.1f} tok/s ({rate / base:4.2f}x one stream), "
              f"TTFT p50 {statistics.median(ttfts) * 1000:6.0f} ms p99 {percentile(ttfts, 99) * 1000:6.0f} ms")
    cold, warm, u1, u2 = second_turn(args, model)
    cached = u2.get("prompt_tokens_details", {}).get("cached_tokens", 0)
    print(f"first turn TTFT {cold * 1000:.0f} ms ({u1.get('prompt_tokens')} prompt tokens), "
          f"second turn TTFT {warm * 1000:.0f} ms ({u2.get('prompt_tokens')} prompt tokens, "
          f"{cached} cached): {cold / warm:.1f}x faster")


if __name__ == "__main__":
    main()
