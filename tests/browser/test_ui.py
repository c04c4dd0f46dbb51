"""The web UI in real Chromium (Debian's, driven by Playwright) against the real `hearth`
binary and model on the default config: chat — streaming, reconnecting, scrolling, long
conversations, hostile output. Run by tests/integration/browser.rs; alone:

    HEARTH_BIN=target/debug/hearth HEARTH_MODEL_PATH=models/SmolLM2-135M-Instruct.Q4_1.gguf \\
      .venv/bin/python -m unittest -v tests.browser.test_ui
"""

import json
import re
import sys
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from playwright.sync_api import expect  # noqa: E402

import harness  # noqa: E402
from harness import ENDLESS, UiTest, call, long_conversation, report  # noqa: E402


class FirstRunAndStreaming(UiTest):
    def test_register_login_send_stream_progressively_then_reload(self):
        page = self.page
        frames = harness.record_frames(page)
        page.goto(self.base + "/")
        # First run: the page says the first account becomes admin, and shows the rules.
        expect(page.get_by_role("heading")).to_have_text("Welcome to Hearth")
        paint = page.evaluate("() => (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime")
        report("first_page_paint_ms", first_contentful_paint=round(paint or -1))
        expect(page.locator(".rules")).to_contain_text("8–256 characters")
        page.get_by_test_id("login-username").fill("alice")
        page.get_by_test_id("login-password").fill("short")
        page.get_by_test_id("login-submit").click()
        # The browser refuses a too-short password before sending it.
        expect(page.get_by_test_id("composer")).to_have_count(0)
        page.get_by_test_id("login-password").fill(harness.PASSWORD)
        page.get_by_test_id("login-submit").click()
        page.get_by_test_id("composer").wait_for()
        harness.wait_online(page)
        # The refresh token is out of the page's reach.
        self.assertNotIn("hearth_refresh", page.evaluate("() => document.cookie"))

        # Shift+Enter is a new line, Enter sends.
        composer = page.get_by_test_id("composer")
        composer.click()
        composer.type("Tell me about the sea")
        composer.press("Shift+Enter")
        composer.type("in a long paragraph.")
        self.assertEqual(composer.input_value(), "Tell me about the sea\nin a long paragraph.")
        composer.press("Enter")
        answer = self.last_answer()
        expect(answer).to_have_attribute("data-status", "done", timeout=120000)
        expect(composer).to_have_value("")

        # Token to screen: each token frame's sampling time against the first render that
        # shows all text up to and including it.
        latencies = harness.token_latencies(page, frames, self)
        p95 = harness.latency_report("token_to_screen_ms", latencies)
        # A p95 needs samples: a short answer's (a few tokens) is its maximum. The bound is
        # checked here when the answer has 20 tokens or more, and always over the
        # several-hundred-token answer of ScrollAndStop.
        if len(latencies) >= 20:
            self.assertLessEqual(p95, 100.0, latencies)

        # Stats under the answer: model, tokens, speed, first token.
        stats = answer.get_by_test_id("message-stats").inner_text()
        self.assertIn("SmolLM2-135M-Instruct.Q4_1", stats)
        self.assertRegex(stats, r"\d+ tokens")
        self.assertRegex(stats, r"tok/s")
        text = answer.locator(".md").inner_text()

        # Reload: the conversation is listed and shows the same answer.
        page.reload()
        page.get_by_test_id("conversation-item").first.wait_for()
        expect(page.get_by_test_id("conversation-item")).to_have_count(1)
        expect(self.last_answer().locator(".md")).to_have_text(text)
        expect(page.get_by_test_id("message-user")).to_have_text(
            re.compile("Tell me about the sea\nin a long paragraph."))


class ReconnectAndResume(UiTest):
    def test_an_answer_survives_a_reload_and_a_killed_server(self):
        token = self.admin()
        conv = self.conversation(token, ENDLESS)
        harness.ui_login(self.page, self.base, "admin")
        self.open(conv)
        page = self.page
        page.get_by_test_id("composer").fill("Write a long story about a lighthouse keeper.")
        page.get_by_test_id("send").click()
        page.wait_for_function(
            "() => Number(document.querySelector('[data-testid=message-assistant] .md')"
            "?.dataset.renderedChars || 0) > 40", timeout=60000)

        # The draft survives a reload too.
        page.get_by_test_id("composer").fill("a draft")
        before = self.rendered_chars()
        page.reload()
        harness.wait_online(page)
        expect(page.get_by_test_id("composer")).to_have_value("a draft")
        # The answer continues after the reload, from where it was.
        page.wait_for_function(
            f"() => Number(document.querySelector('[data-testid=message-assistant] .md')"
            f"?.dataset.renderedChars || 0) > {before + 20}", timeout=60000)
        expect(self.last_answer()).to_have_attribute("data-status", "streaming")

        # Kill the server mid-answer; restart it.
        self.server.kill()
        expect(page.get_by_test_id("connection")).not_to_have_attribute(
            "data-state", "online", timeout=10000)
        ready_at = self.server.start()
        harness.wait_online(page, timeout=15000)
        reconnect = time.time() - ready_at
        report("reconnect_after_ready_s", seconds=round(reconnect, 2))
        self.assertLessEqual(reconnect, 5.0)
        # The answer is marked interrupted and shows exactly what was stored: nothing repeated.
        answer = self.last_answer()
        expect(answer).to_have_attribute("data-status", "interrupted", timeout=15000)
        expect(answer.get_by_test_id("interrupted")).to_be_visible()
        status, listing = call(self.base, "GET", f"/api/conversations/{conv}/messages", token)
        self.assertEqual(status, 200, listing)
        stored = listing["data"][-1]
        self.assertEqual(stored["status"], "interrupted")
        # Seen once empty in a full run and never again: the server's log says whether the
        # partial saves were refused or never made.
        self.assertGreater(len(stored["content"]), 40, self.server.log())
        self.assertEqual(self.rendered_chars(), len(stored["content"]))
        squash = lambda s: re.sub(r"[\s*_#`>-]+", "", s)  # noqa: E731
        self.assertEqual(squash(answer.locator(".md").inner_text()), squash(stored["content"]))


class ScrollAndStop(UiTest):
    context_options = {"viewport": {"width": 1280, "height": 500}}

    def test_scrolling_up_stops_following_and_jump_to_latest_returns(self):
        token = self.admin()
        # Long enough to still be streaming after the checks below (Esc stops it).
        conv = self.conversation(token, {**ENDLESS, "max_tokens": 2000})
        frames = harness.record_frames(self.page)
        harness.ui_login(self.page, self.base, "admin")
        self.open(conv)
        page = self.page
        page.get_by_test_id("composer").fill("Write a long story about the sea.")
        page.get_by_test_id("send").click()
        box = page.get_by_test_id("messages")
        # Follows the stream while at the bottom.
        page.wait_for_function(
            "() => { const el = document.querySelector('[data-testid=messages]');"
            " return el.scrollHeight > el.clientHeight + 300; }", timeout=120000)
        gap = box.evaluate("el => el.scrollHeight - el.scrollTop - el.clientHeight")
        self.assertLess(gap, 40)
        expect(page.get_by_test_id("jump-to-latest")).to_have_count(0)

        box.hover()
        page.mouse.wheel(0, -250)
        page.wait_for_timeout(300)
        top = box.evaluate("el => el.scrollTop")
        chars = self.rendered_chars()
        expect(page.get_by_test_id("jump-to-latest")).to_be_visible()
        page.wait_for_timeout(2000)
        renders = page.evaluate("() => window.__renders")
        drops = [(a, b) for a, b in zip(renders, renders[1:]) if b[2] < a[2]]
        self.assertEqual(drops, [], "the text on screen only grows")
        self.assertGreater(self.rendered_chars(), chars + 10, "still streaming meanwhile")
        moved = abs(box.evaluate("el => el.scrollTop") - top)
        report("scroll_drift_px", px=moved)
        self.assertLessEqual(moved, 2)

        page.get_by_test_id("jump-to-latest").click()
        page.wait_for_timeout(500)
        gap = box.evaluate("el => el.scrollHeight - el.scrollTop - el.clientHeight")
        self.assertLess(gap, 40)
        expect(page.get_by_test_id("jump-to-latest")).to_have_count(0)

        # Token to screen over a long answer, while following and while scrolled up.
        latencies = harness.token_latencies(page, frames, self, streaming=True)
        self.assertLessEqual(harness.latency_report("token_to_screen_long_answer_ms", latencies), 100.0)

        # Esc stops the answer.
        page.keyboard.press("Escape")
        expect(self.last_answer()).to_have_attribute("data-status", "interrupted", timeout=15000)
        expect(page.get_by_test_id("send")).to_be_visible()


class LongConversation(UiTest):
    def test_a_200_message_chat_opens_fast_and_streams_without_long_tasks(self):
        token = self.admin()
        status, conv = call(self.base, "POST", "/api/conversations/import", token,
                            long_conversation())
        self.assertEqual(status, 201, conv)
        harness.ui_login(self.page, self.base, "admin")
        page = self.page
        all_rendered = ("() => { const a = document.querySelectorAll('[data-testid=message-assistant] .md');"
                        " return document.querySelectorAll('[data-testid^=message-]').length >= 200 &&"
                        " a.length >= 100 && a[a.length - 1].dataset.renderedChars; }")
        # Open it from the list.
        t0 = page.evaluate("() => performance.now()")
        page.get_by_test_id("conversation-item").first.locator("a").click()
        page.wait_for_function(all_rendered, timeout=30000)
        opened_ms = page.evaluate("() => performance.now()") - t0
        self.assertEqual(page.locator(".hljs").count(), 100, "every code block highlighted")
        # And from a cold page load.
        page.reload()
        page.wait_for_function(all_rendered, timeout=30000)
        cold = page.evaluate("() => ({t: performance.now(), fcp: (performance.getEntriesByName("
                             "'first-contentful-paint')[0] || {}).startTime})")
        report("long_chat_open_ms", from_list=round(opened_ms), cold_load=round(cold["t"]),
               first_contentful_paint=round(cold["fcp"] or -1))
        self.assertLessEqual(opened_ms, 1500)
        self.assertLessEqual(cold["t"], 1500)
        harness.wait_online(page)

        # Stream into it: no task over 100 ms while tokens arrive.
        page.evaluate("() => { window.__longTasks = []; }")
        page.get_by_test_id("composer").fill("And in Rust?")
        page.get_by_test_id("send").click()
        expect(self.last_answer()).to_have_attribute("data-status", "done", timeout=120000)
        tasks = page.evaluate("() => window.__longTasks")
        worst = max([d for _, d in tasks], default=0)
        report("long_chat_streaming_long_tasks", count=len(tasks), worst_ms=round(worst))
        self.assertLessEqual(worst, 100, tasks)
        # Only the last answer is the one that streamed; the view followed it.
        box = page.get_by_test_id("messages")
        self.assertLess(box.evaluate("el => el.scrollHeight - el.scrollTop - el.clientHeight"), 40)


class HostileOutput(UiTest):
    context_options = {"permissions": ["clipboard-read", "clipboard-write"]}
    CODE = 'const s = "<script>alert(1)</script>";\nif (a < b && b > c) { return `${s}` & 1; }'

    def setUp(self):
        self.evil = harness.CountingServer()
        self.addCleanup(self.evil.close)
        e = self.evil.origin
        self.answer = (
            "Here it comes.\n\n"
            f'<img src="{e}/raw-img.png" onerror="window.__pwned = 1">\n\n'
            "<script>window.__pwned = 2</script>\n\n"
            f"![tracking pixel]({e}/md-img.png)\n\n"
            "[click me](javascript:window.__pwned=3) and "
            f'<a href="{e}/a" onclick="window.__pwned=4">a raw link</a>\n\n'
            f'<iframe src="{e}/frame"></iframe><svg onload="window.__pwned=5"></svg>\n\n'
            f"<style>body {{ background: url({e}/css.png) }}</style>\n\n"
            f"```javascript\n{self.CODE}\n```\n\nDone."
        )
        self.fake = harness.FakeOpenAi("hostile", self.answer)
        self.addCleanup(self.fake.close)
        self.extra_config = self.fake.backend_toml()
        super().setUp()

    def check_harmless(self, page):
        self.assertIsNone(page.evaluate("() => window.__pwned ?? null"))
        answer = self.last_answer()
        md = answer.locator(".md")
        # Raw HTML is shown as text, never parsed.
        expect(md).to_contain_text("<script>window.__pwned = 2</script>")
        expect(md).to_contain_text("<img src=")
        self.assertEqual(md.locator("img, script, iframe, svg, style").count(), 0)
        # The remote image became a placeholder; the javascript: link lost its target.
        expect(md.locator(".image-placeholder")).to_have_text("[image: tracking pixel]")
        link = md.get_by_text("click me")
        self.assertIsNone(link.get_attribute("href"))
        link.click()
        page.wait_for_timeout(200)
        self.assertIsNone(page.evaluate("() => window.__pwned ?? null"))
        self.assertEqual(self.evil.hits, [])

    def test_hostile_model_output_runs_nothing_and_loads_nothing(self):
        token = self.admin()
        requests = []
        self.page.on("request", lambda r: requests.append(r.url))
        harness.ui_login(self.page, self.base, "admin")
        page = self.page
        page.get_by_test_id("model-picker").select_option("hostile")
        page.get_by_test_id("composer").fill("Say something nasty.")
        page.get_by_test_id("send").click()
        answer = self.last_answer()
        expect(answer).to_have_attribute("data-status", "done", timeout=60000)
        expect(answer.get_by_test_id("message-stats")).to_contain_text("hostile")
        self.check_harmless(page)

        # Copy copies the code exactly.
        answer.locator(".code-block .copy").click()
        expect(answer.locator(".code-block .copy")).to_have_text("Copied")
        self.assertEqual(page.evaluate("() => navigator.clipboard.readText()"), self.CODE)

        # The stored answer renders the same way after a reload.
        page.reload()
        self.last_answer().locator(".md").wait_for()
        self.check_harmless(page)
        foreign = [u for u in requests if not u.startswith(self.base) and not u.startswith("data:")]
        self.assertEqual(foreign, [])
        status, listing = call(self.base, "GET", "/api/conversations", token)
        self.assertEqual(listing["data"][0]["model"], "hostile")

    def test_tool_calls_and_results_show_as_text(self):
        token = self.admin()
        e = self.evil.origin
        hostile = f'<img src="{e}/tool.png" onerror="window.__pwned = 6">'
        export = {"format": "hearth.conversation.v1", "conversation": {"title": "Tools"},
                  "messages": [
                      {"id": "a", "role": "user", "content": "Weather in Paris?"},
                      {"id": "b", "parent_id": "a", "role": "assistant", "content": "",
                       "finish_reason": "tool_calls", "tool_calls": [
                           {"id": "call_1", "type": "function", "function": {
                               "name": "get_weather", "arguments": json.dumps({"city": hostile})}}]},
                      {"id": "c", "parent_id": "b", "role": "tool", "tool_call_id": "call_1",
                       "content": f"<script>window.__pwned = 7</script>{hostile}"},
                      {"id": "d", "parent_id": "c", "role": "assistant", "content": "It is sunny."}]}
        status, conv = call(self.base, "POST", "/api/conversations/import", token, export)
        self.assertEqual(status, 201, conv)
        requests = []
        self.page.on("request", lambda r: requests.append(r.url))
        harness.ui_login(self.page, self.base, "admin")
        page = self.page
        page.locator(f'[data-conversation-id="{conv["id"]}"]').click()
        call_el = page.get_by_test_id("tool-call")
        expect(call_el).to_contain_text("get_weather")
        expect(call_el).to_contain_text(hostile.replace('"', '\\"'))
        result = page.get_by_test_id("message-tool")
        expect(result).to_contain_text("<script>window.__pwned = 7</script>")
        expect(result).to_contain_text(hostile)
        self.assertEqual(page.locator(".msg img, .msg script").count(), 0)
        expect(self.last_answer()).to_contain_text("It is sunny.")
        page.wait_for_timeout(200)
        self.assertIsNone(page.evaluate("() => window.__pwned ?? null"))
        self.assertEqual(self.evil.hits, [])


if __name__ == "__main__":
    unittest.main()
