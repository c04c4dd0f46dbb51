#!/usr/bin/env python3
"""Probe a running Hearth's resource limits as an attacker on loopback would, and print what
it cost the server. Standard library only.

    ./target/release/hearth serve --port 8080 &        # any config; note its pid
    python3 scripts/probe-limits.py --pid $! [--port 8080]

Probes (each bounded in count and time, loopback only):
  idle       open N sockets that never send a byte; how many are still open after the
             header-read timeout, and whether /health still answers meanwhile
  ws-lag     a WebSocket client that sends `cancel` frames with 1 MB ids and never reads;
             the server's RSS growth, and whether it closes the socket
  register   60 registrations at once (needs registration = open); peak RSS growth
"""

import argparse
import base64
import json
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.request


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) // 1024


def health_ok(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def probe_idle(port, count, wait):
    socks = []
    for _ in range(count):
        try:
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        except OSError:
            break
    opened = len(socks)
    health_during = health_ok(port)
    time.sleep(wait)
    still_open = refused = 0
    for s in socks:
        s.settimeout(0.05)
        got = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break  # closed by the server
                got += chunk
        except socket.timeout:
            still_open += 1
        except OSError:
            pass
        finally:
            s.close()
        if got.startswith(b"HTTP/1.1 503"):
            refused += 1
    after = health_ok(port)
    print(f"idle: opened {opened} silent sockets ({refused} refused with 503 over the cap); "
          f"/health while they were open: {health_during}; still open after {wait:.0f} s: "
          f"{still_open}; /health after: {after}")


def ws_frame(payload: bytes) -> bytes:
    """A masked client text frame."""
    head = bytearray([0x81])
    n = len(payload)
    if n < 126:
        head.append(0x80 | n)
    elif n < 1 << 16:
        head.append(0x80 | 126)
        head += n.to_bytes(2, "big")
    else:
        head.append(0x80 | 127)
        head += n.to_bytes(8, "big")
    mask = os.urandom(4)
    head += mask
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if n < 4096 else \
        (int.from_bytes(payload, "big") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big")).to_bytes(n, "big")
    return bytes(head) + body


def probe_ws_lag(port, pid, frames, key):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    s.sendall((
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
        f"Sec-WebSocket-Version: 13\r\n{auth}\r\n").encode())
    answer = s.recv(4096)
    if not answer.startswith(b"HTTP/1.1 101"):
        print(f"ws-lag: upgrade refused: {answer[:80]!r}")
        return
    before = rss_mib(pid)
    peak = before
    big = ws_frame(json.dumps({"type": "cancel", "id": "x" * 1_000_000}).encode())
    small = ws_frame(b'{"type":"cancel","id":"nobody"}')
    sent, closed = 0, False
    deadline = time.time() + 60
    try:
        for i in range(frames):
            s.sendall(big)
            sent += 1
            if i % 20 == 0:
                peak = max(peak, rss_mib(pid))
        while time.time() < deadline:
            s.sendall(small * 1000)
            sent += 1000
            peak = max(peak, rss_mib(pid))
    except OSError:
        closed = True
    peak = max(peak, rss_mib(pid))
    s.close()
    time.sleep(1)
    print(f"ws-lag: sent {sent} frames without reading; server closed the socket: {closed}; "
          f"RSS {before} MiB, peak +{peak - before} MiB, after close +{rss_mib(pid) - before} MiB")


def probe_register(port, pid):
    def register(name):
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/auth/register",
            data=json.dumps({"username": name, "password": "correct horse battery"}).encode(),
            headers={"content-type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=120).read()
        except urllib.error.HTTPError:
            pass
    tag = os.urandom(3).hex()
    register(f"warm{tag}")
    before = rss_mib(pid)
    peak = [before]
    running = [True]

    def sample():
        while running[0]:
            peak[0] = max(peak[0], rss_mib(pid))
            time.sleep(0.005)
    sampler = threading.Thread(target=sample)
    sampler.start()
    threads = [threading.Thread(target=register, args=(f"b{tag}{i:02d}",)) for i in range(60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    running[0] = False
    sampler.join()
    print(f"register: 60 at once; RSS {before} MiB, peak +{peak[0] - before} MiB")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pid", type=int, required=True, help="the server's process id")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--key", default="", help="a credential, if the server needs one")
    ap.add_argument("--idle", type=int, default=3000, help="silent sockets to open")
    ap.add_argument("--idle-wait", type=float, default=12.0)
    ap.add_argument("--ws-frames", type=int, default=300, help="1 MB cancel frames to send")
    ap.add_argument("--only", choices=["idle", "ws-lag", "register"])
    args = ap.parse_args()
    if args.only in (None, "idle"):
        probe_idle(args.port, args.idle, args.idle_wait)
    if args.only in (None, "ws-lag"):
        probe_ws_lag(args.port, args.pid, args.ws_frames, args.key)
    if args.only in (None, "register"):
        probe_register(args.port, args.pid)


if __name__ == "__main__":
    main()
