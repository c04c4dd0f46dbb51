"""What the browser tests share: the real `hearth` binary started as users start it (the repo's
config.toml, a fresh data directory, a port of its own), killed and restarted on demand; the
API called over plain HTTP; Debian's Chromium driven by Playwright; and two stand-ins on
loopback — a remote OpenAI-compatible service whose answer is chosen by the test, and a server
that only counts the requests it gets (none must reach it).

Set by tests/integration/browser.rs: HEARTH_BIN, HEARTH_MODEL_PATH, HEARTH_SCREENSHOTS.
"""

import atexit
import http.server
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import unittest
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("HEARTH_CHROMIUM", "/usr/bin/chromium")
PASSWORD = "correct horse battery"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

# Before any page script: CSP violations, long tasks, and every render of an answer
# (`data-rendered-chars` changing) with its time, for the tests to read back.
PAGE_PROBES = """
window.__csp = [];
document.addEventListener('securitypolicyviolation',
  e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));
window.__longTasks = [];
try {
  new PerformanceObserver(list => {
    for (const e of list.getEntries()) window.__longTasks.push([e.startTime, e.duration]);
  }).observe({type: 'longtask', buffered: true});
} catch (e) {}
window.__renders = [];
new MutationObserver(records => {
  const t = performance.timeOrigin + performance.now();
  for (const r of records) {
    const host = r.target.closest && r.target.closest('[data-message-id]');
    window.__renders.push([t, host ? host.dataset.messageId : null,
                           Number(r.target.dataset.renderedChars)]);
  }
}).observe(document, {subtree: true, attributes: true, attributeFilter: ['data-rendered-chars']});
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, method, path, token=None, body=None, headers=None):
    """One API request: (status, parsed JSON or None)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    if body is not None:
        req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw.decode(errors="replace")


class Server:
    """`hearth serve` on its own port and data directory, with the repo's config.toml plus
    `extra_config` (TOML appended) and `extra_env` (e.g. `HEARTH__AUTH__…` overrides)."""

    def __init__(self, extra_config="", extra_env=None):
        self.extra_env = extra_env or {}
        self.data_dir = Path(tempfile.mkdtemp(prefix="hearth-ui-"))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.config = self.data_dir / "config.toml"
        self.config.write_text((ROOT / "config.toml").read_text() + "\n" + extra_config)
        self.log_path = self.data_dir / "server.log"
        self.proc = None
        self._log = None

    def _close_log(self):
        if self._log:
            self._log.close()
            self._log = None

    def start(self, timeout=180):
        self._close_log()
        log = self._log = open(self.log_path, "ab")
        env = dict(os.environ, HEARTH__STORAGE__DATA_DIR=str(self.data_dir), **self.extra_env)
        self.proc = subprocess.Popen(
            [os.environ["HEARTH_BIN"], "serve", "--config", str(self.config),
             "--port", str(self.port), "--model", os.environ["HEARTH_MODEL_PATH"]],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hearth exited ({self.proc.returncode}):\n{self.log()}")
            try:
                status, _ = call(self.base, "GET", "/ready")
                if status == 200:
                    return time.time()
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"hearth not ready after {timeout} s:\n{self.log()}")

    def kill(self):
        """SIGKILL: no shutdown, no last writes."""
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def cleanup(self):
        self.stop()
        self._close_log()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def user(self, name, admin_token=None):
        """Register `name` (the first account becomes admin) or, given an admin's token,
        create it; then log in. Returns the access token."""
        creds = {"username": name, "password": PASSWORD}
        if admin_token:
            status, body = call(self.base, "POST", "/api/admin/users", admin_token, creds)
        else:
            status, body = call(self.base, "POST", "/api/auth/register", None, creds)
        assert status == 201, (status, body)
        status, body = call(self.base, "POST", "/api/auth/login", None, creds)
        assert status == 200, (status, body)
        return body["access_token"]


class _Quiet(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _serve(handler):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


class CountingServer:
    """A server on loopback that answers 200 to anything and counts what it got."""

    def __init__(self):
        hits = self.hits = []

        class H(_Quiet):
            def do_GET(self):
                hits.append(self.path)
                self.send_response(200)
                self.send_header("content-type", "image/png")
                self.end_headers()

            do_POST = do_GET

        self.httpd = _serve(H)
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()


class FakeOpenAi:
    """A remote OpenAI-compatible service that streams `answer` (in small chunks) for its one
    model, whatever it is asked."""

    def __init__(self, model, answer):
        self.model, self.answer = model, answer
        fake = self

        class H(_Quiet):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                body = json.dumps({"object": "list", "data": [
                    {"id": fake.model, "object": "model", "created": 0, "owned_by": "fake"}]}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                n = int(self.headers.get("content-length") or 0)
                req = json.loads(self.rfile.read(n) or b"{}")
                chunks = [fake.answer[i:i + 12] for i in range(0, len(fake.answer), 12)]
                base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                        "model": fake.model}
                if not req.get("stream"):
                    body = json.dumps({
                        "id": "chatcmpl-fake", "object": "chat.completion", "created": 0,
                        "model": fake.model,
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": fake.answer}}],
                        "usage": {"prompt_tokens": 5, "completion_tokens": len(chunks),
                                  "total_tokens": 5 + len(chunks)}}).encode()
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("connection", "close")
                self.end_headers()

                def event(obj):
                    self.wfile.write(f"data: {json.dumps(obj)}\n\n".encode())
                    self.wfile.flush()

                event({**base, "choices": [{"index": 0, "delta": {"role": "assistant"}}]})
                for c in chunks:
                    event({**base, "choices": [{"index": 0, "delta": {"content": c}}]})
                    time.sleep(0.01)
                event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                if (req.get("stream_options") or {}).get("include_usage"):
                    event({**base, "choices": [], "usage": {
                        "prompt_tokens": 5, "completion_tokens": len(chunks),
                        "total_tokens": 5 + len(chunks)}})
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

        self.httpd = _serve(H)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def backend_toml(self, name="fake"):
        return (f'[[backends]]\nname = "{name}"\nkind = "openai"\n'
                f'base_url = "{self.base_url}"\nmodels = ["{self.model}"]\n')

    def close(self):
        self.httpd.shutdown()


_browser = None


def browser():
    """The one Chromium of the test run, started on first use."""
    global _browser
    if _browser is None:
        pw = sync_playwright().start()
        _browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)

        def close():
            _browser.close()
            pw.stop()

        atexit.register(close)
    return _browser


def new_context(browser, **kw):
    ctx = browser.new_context(**kw)
    ctx.add_init_script(PAGE_PROBES)
    return ctx


def ui_login(page, base, name, password=PASSWORD):
    page.goto(base + "/")
    page.get_by_test_id("login-username").fill(name)
    page.get_by_test_id("login-password").fill(password)
    page.get_by_test_id("login-submit").click()
    page.get_by_test_id("composer").wait_for(timeout=20000)
    wait_online(page)


def wait_online(page, timeout=20000):
    page.wait_for_function(
        "() => document.querySelector('[data-testid=connection]')?.dataset.state === 'online'",
        timeout=timeout)


def percentile(values, p):
    s = sorted(values)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def token_latencies(page, frames, test, streaming=False):
    """For every token frame with `sampled_at_us`, the ms from its sampling to the first render
    of the answer that shows all text up to and including it (`PAGE_PROBES` records renders).
    `streaming`: the answer is still coming, so the frames received so far are taken now and
    the renders a second later, by when every one of them must be on screen."""
    tokens = [f for f in list(frames) if f.get("type") == "token" and "sampled_at_us" in f]
    if streaming:
        page.wait_for_timeout(1000)
    test.assertGreater(len(tokens), 5, frames[:5])
    message_id = tokens[0]["message_id"]
    # The answer's `done` can reach the page before its last text is drawn (drawing is
    # batched every ~50 ms): give the last draw a moment before reading what was drawn, so
    # the check below asks whether every token got on screen, not whether it already had.
    everything = sum(len(f["text"]) for f in tokens)
    try:
        page.wait_for_function(
            "([mid, n]) => window.__renders.some(r => r[1] === mid && r[2] >= n)",
            arg=[message_id, everything], timeout=5000)
    except Exception:
        pass  # reported below, token by token
    renders = [(t, n) for t, mid, n in page.evaluate("() => window.__renders") if mid == message_id]
    latencies, total = [], 0
    for f in tokens:
        total += len(f["text"])
        shown = next((t for t, n in renders if n >= total), None)
        test.assertIsNotNone(shown, f"text up to {total} chars never rendered")
        latencies.append(shown - f["sampled_at_us"] / 1000.0)
    test.assertGreater(len({n for _, n in renders}), 3, "rendered progressively")
    return latencies


def record_frames(page):
    """Every frame the page's WebSockets receive, parsed, in a list that grows."""
    frames = []
    page.on("websocket", lambda ws: ws.on(
        "framereceived", lambda payload: frames.append(json.loads(payload))))
    return frames


def latency_report(name, latencies):
    p95 = percentile(latencies, 95)
    report(name, tokens=len(latencies), p50=round(percentile(latencies, 50), 1),
           p95=round(p95, 1), max=round(max(latencies), 1))
    return p95


def shots_dir():
    d = Path(os.environ.get("HEARTH_SCREENSHOTS", ROOT / "target" / "ui-screenshots"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def report(name, **figures):
    """A measured figure, printed for the log (and the issue's note)."""
    print(f"FIGURE {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()), flush=True)


# End-of-turn tokens banned and repeats discouraged: an answer that runs to its max_tokens. (The
# small model otherwise falls into a loop within a few hundred tokens, which the repetition
# guard rightly ends; a frequency penalty of 0.5 kept seeds 1–3 going for 2000 tokens.)
ENDLESS = {"temperature": 0.7, "seed": 1, "max_tokens": 400, "frequency_penalty": 0.5,
           "logit_bias": {"0": -100, "2": -100}}


def long_conversation(n_messages=200, code_blocks=100):
    messages, parent = [], None
    for i in range(n_messages):
        mid = f"m{i}"
        if i % 2 == 0:
            content = f"Question {i // 2}: how do I sum a list in Python, variant {i}?"
            role = "user"
        else:
            role = "assistant"
            content = (f"Answer {i // 2}. Use **sum**, for example:\n\n```python\n"
                       f"def total_{i}(xs):\n    # adds every item\n    return sum(x * {i} for x in xs)\n"
                       f"print(total_{i}([1, 2, 3]))\n```\n\nThat prints `{6 * i}`.")
        messages.append({"id": mid, "parent_id": parent, "role": role, "content": content,
                         "status": "done"})
        parent = mid
    assert sum(m["content"].count("```python") for m in messages) == code_blocks
    return {"format": "hearth.conversation.v1",
            "conversation": {"title": "A long chat", "params": {"max_tokens": 120},
                             "active_leaf": parent},
            "messages": messages}


class UiTest(unittest.TestCase):
    """A fresh server per test, a fresh browser context per test; every page is checked for
    script errors and CSP violations at the end."""

    extra_config = ""
    extra_env = {}
    context_options = {}

    def setUp(self):
        self.server = Server(self.extra_config, self.extra_env)
        self.server.start()
        self.base = self.server.base
        self.addCleanup(self.server.cleanup)
        options = {"viewport": {"width": 1280, "height": 800}, **self.context_options}
        self.ctx = new_context(browser(), **options)
        self.addCleanup(self.ctx.close)
        self.errors = []
        self.ctx.on("page", self._watch)
        self.page = self.ctx.new_page()

    def _watch(self, page):
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

    def tearDown(self):
        for page in self.ctx.pages:
            try:
                csp = page.evaluate("() => window.__csp || []")
            except Exception:  # closed or navigating
                csp = []
            self.assertEqual(csp, [], "CSP violations")
        self.assertEqual(self.errors, [], "script errors")

    def admin(self, name="admin"):
        return self.server.user(name)

    def conversation(self, token, params=None, **fields):
        status, conv = call(self.base, "POST", "/api/conversations", token,
                            {"params": params or {}, **fields})
        self.assertEqual(status, 201, conv)
        return conv["id"]

    def open(self, conv_id):
        self.page.goto(f"{self.base}/#/c/{conv_id}")
        self.page.get_by_test_id("composer").wait_for()
        wait_online(self.page)

    def last_answer(self):
        return self.page.locator("[data-testid=message-assistant]").last

    def rendered_chars(self):
        v = self.last_answer().locator(".md").get_attribute("data-rendered-chars")
        return int(v or 0)
