#!/usr/bin/env python3
"""Blog benchmark against a running Hearth server: Markdown rendering of a long post, and the
public post page under concurrent readers.

1. Creates a user (registration must be open, or pass --username/--password of an existing
   one), a ~5,000-word post (headings, lists, a table, code blocks, links) and publishes it.
2. Render: POST /api/render of the post, --renders times, p50 / p99; the baseline in the same
   run is POST /api/render of a one-line post (what HTTP, JSON and authentication cost alone),
   so `render - baseline` is the rendering itself.
3. Readers: --readers threads (keep-alive connections) GET the public page for --seconds;
   latency p50 / p99 and requests/s, against the same load on GET /health (the baseline), and
   with If-None-Match (the 304 path).

Standard library only; loopback only. Client and server share the machine's cores.

    HEARTH__AUTH__REGISTRATION=open ./target/release/hearth serve --port 8080 &
    python3 scripts/bench-blog.py --url http://127.0.0.1:8080 --readers 50 --seconds 10
"""

import argparse
import http.client
import json
import random
import statistics
import threading
import time
import urllib.parse


def request(conn, method, path, body=None, token=None, headers=None):
    h = {"content-type": "application/json"}
    if token:
        h["authorization"] = f"Bearer {token}"
    h.update(headers or {})
    conn.request(method, path, json.dumps(body) if body is not None else None, h)
    r = conn.getresponse()
    data = r.read()
    return r.status, r.headers, data


def long_post(words):
    rng = random.Random(7)
    vocab = ("bread flour water salt starter dough oven crust crumb knead proof bake rise "
             "yeast rye wheat loaf hydration gluten ferment temperature time steam").split()
    parts, n, section = [], 0, 0
    while n < words:
        section += 1
        parts.append(f"## Section {section}\n")
        for _ in range(3):
            sentence_words = [rng.choice(vocab) for _ in range(60)]
            n += 60
            text = " ".join(sentence_words).capitalize() + "."
            parts.append(text.replace(" crust ", " **crust** ").replace(" oven ", " [oven](https://example.com/oven) ") + "\n")
        parts.append("- one point\n- another point\n- [x] done\n")
        if section % 4 == 0:
            parts.append("```rust\nfn bake(loaf: &mut Loaf) -> Result<(), Burnt> {\n    loaf.heat(230)?;\n    Ok(())\n}\n```\n")
            parts.append("| flour | water |\n|---|---|\n| 500 g | 350 g |\n")
    return "\n".join(parts)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def ms(s):
    return f"{s * 1000:.2f} ms"


def readers(url, path, n, seconds, headers=None):
    u = urllib.parse.urlparse(url)
    lat, errors = [], []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def run():
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        mine = []
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            conn.request("GET", path, headers=headers or {})
            r = conn.getresponse()
            r.read()
            mine.append(time.perf_counter() - t0)
            if r.status not in (200, 304):
                errors.append(r.status)
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=run) for _ in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return lat, len(lat) / wall, errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--username", default="bench-writer")
    ap.add_argument("--password", default="correct horse battery")
    ap.add_argument("--words", type=int, default=5000)
    ap.add_argument("--renders", type=int, default=50)
    ap.add_argument("--readers", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=10)
    a = ap.parse_args()
    u = urllib.parse.urlparse(a.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    creds = {"username": a.username, "password": a.password}
    request(conn, "POST", "/api/auth/register", creds)
    s, _, body = request(conn, "POST", "/api/auth/login", creds)
    if s != 200:
        raise SystemExit(f"login failed ({s}): {body[:200]!r}; open registration or pass an account")
    token = json.loads(body)["access_token"]
    md = long_post(a.words)
    title = f"A long post {int(time.time())}"
    s, _, body = request(conn, "POST", "/api/posts", {"title": title, "body": md}, token)
    if s != 201:
        raise SystemExit(f"create failed ({s}): {body[:200]!r}")
    post = json.loads(body)
    request(conn, "POST", f"/api/posts/{post['id']}/publish", {}, token)
    print(f"post: {post['words']} words, {len(md.encode())} bytes of Markdown, {post['url']}")

    def timed(markdown):
        out = []
        for _ in range(a.renders):
            t0 = time.perf_counter()
            s, _, _ = request(conn, "POST", "/api/render", {"markdown": markdown}, token)
            out.append(time.perf_counter() - t0)
            assert s == 200, s
        return out

    base = timed("One line.")
    full = timed(md)
    print(f"render /api/render {a.words} words: p50 {ms(statistics.median(full))}, p99 {ms(pct(full, 99))}; "
          f"one-line baseline p50 {ms(statistics.median(base))}; "
          f"rendering alone ≈ {ms(statistics.median(full) - statistics.median(base))}")

    s, headers, page = request(conn, "GET", post["url"])
    assert s == 200, s
    etag = headers["etag"]
    print(f"page: {len(page)} bytes, ETag {etag}")
    results = {}
    for name, path, hdrs in [("GET /health (baseline)", "/health", None),
                             ("GET post page", post["url"], None),
                             ("GET post page, If-None-Match (304)", post["url"], {"if-none-match": etag})]:
        lat, rps, errors = readers(a.url, path, a.readers, a.seconds, hdrs)
        results[name] = (statistics.median(lat), pct(lat, 99), rps)
        print(f"{name:38} {a.readers} readers: p50 {ms(statistics.median(lat))}, p99 {ms(pct(lat, 99))}, "
              f"{rps:.0f} req/s, errors {len(errors)}")
    b50, b99, brps = results["GET /health (baseline)"]
    p50, p99, prps = results["GET post page"]
    print(f"ratio post page / baseline: p50 {p50 / b50:.2f}x, p99 {p99 / b99:.2f}x, throughput {prps / brps:.2f}x")


if __name__ == "__main__":
    main()
