"""The web UI in real Chromium, continued: sessions across tabs, the rate-limit badge, the
settings and admin forms, the conversation list and branches, a phone-sized viewport, and the
screenshots. Run by tests/integration/browser.rs; alone as tests/browser/test_ui.py says, with
`tests.browser.test_pages`.
"""

import re
import sys
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from playwright.sync_api import expect  # noqa: E402

import harness  # noqa: E402
from harness import UiTest, call, long_conversation  # noqa: E402


class RateLimit(UiTest):
    extra_config = "[limits]\nrequests_per_minute = 3\n"

    def test_the_remaining_rate_limit_is_shown_and_warns_before_it_runs_out(self):
        token = self.admin()
        conv = self.conversation(token, {"max_tokens": 4})
        harness.ui_login(self.page, self.base, "admin")
        self.open(conv)
        page = self.page
        badge = page.get_by_test_id("rate-limit")
        expect(badge).to_have_text("3/3 requests")
        for left, warned in ((2, False), (1, True), (0, True)):
            page.get_by_test_id("composer").fill(f"Say {left}.")
            page.get_by_test_id("send").click()
            expect(page.get_by_test_id("message-assistant")).to_have_count(3 - left)
            expect(self.last_answer()).not_to_have_attribute("data-status", "streaming", timeout=60000)
            expect(badge).to_contain_text(f"{left}/3 requests")
            self.assertEqual("⚠" in badge.inner_text(), warned)
        page.get_by_test_id("composer").fill("One more.")
        page.get_by_test_id("send").click()
        expect(page.get_by_test_id("chat-error")).to_contain_text("retry in")
        # Refused before anything was stored; the text is back in the composer.
        expect(page.get_by_test_id("message-assistant")).to_have_count(3)
        expect(page.get_by_test_id("composer")).to_have_value("One more.")


class TwoTabs(UiTest):
    def at_once(self, tabs, mode):
        """In every tab at the same instant: `lock` — the page's own refresh (its session
        module, Web Locks and all), as if its token had just expired; `raw` — a bare
        refresh request, no lock. The results."""
        src = self.page.evaluate(
            "() => document.querySelector('script[type=module]').src.replace('app.js', 'lib/session.js')")
        at = time.time() * 1000 + 700
        for p in tabs:
            p.evaluate(
                """([src, at, mode]) => {
                  window.__result = undefined;
                  import(src).then(m => setTimeout(() => {
                    const run = mode === 'lock'
                      ? m.refresh(m.accessToken())
                      : fetch('/api/auth/refresh', {method: 'POST', body: '{}',
                          headers: {'x-hearth-csrf': '1', 'content-type': 'application/json'}})
                          .then(r => r.status);
                    run.then(r => { window.__result = r; },
                             e => { window.__result = 'error: ' + e.message; });
                  }, at - Date.now()));
                }""",
                [src, at, mode])
        for p in tabs:
            p.wait_for_function("() => window.__result !== undefined", timeout=15000)
        return [p.evaluate("() => window.__result") for p in tabs]

    def two_tabs(self):
        self.admin("ada")
        a = self.page
        harness.ui_login(a, self.base, "ada")
        b = self.ctx.new_page()
        b.goto(self.base + "/")
        b.get_by_test_id("composer").wait_for()
        return a, b

    def test_two_tabs_refreshing_at_once_stay_signed_in(self):
        a, b = self.two_tabs()
        # Both tabs refresh at the same instant, five times: the lock takes them in turn.
        for _ in range(5):
            self.assertEqual(self.at_once([a, b], "lock"), [True, True])
        for p in (a, b):
            p.reload()
            p.get_by_test_id("composer").wait_for()
        c = self.ctx.new_page()
        c.goto(self.base + "/")
        c.get_by_test_id("composer").wait_for()

    def test_without_the_lock_two_tabs_would_sign_each_other_out(self):
        """The control for the test above. Without the lock, the tab that loses the race sends
        the refresh token the other tab has just used; the server takes that as token theft
        and ends the session. Racing two bare requests only sometimes lands both before the
        first Set-Cookie, so the losing request is made on purpose: tab A refreshes (no lock),
        then the token it used is sent again, as tab B's request would have carried it."""
        a, _b = self.two_tabs()
        used = next(c["value"] for c in self.ctx.cookies() if c["name"] == "hearth_refresh")
        self.assertEqual(self.at_once([a], "raw"), [200])
        status, body = call(self.base, "POST", "/api/auth/refresh", body={},
                            headers={"x-hearth-csrf": "1", "cookie": f"hearth_refresh={used}"})
        self.assertEqual(status, 401, body)
        # Reuse revoked the whole family, so the token tab A just received is dead too.
        c = self.ctx.new_page()
        c.goto(self.base + "/")
        c.get_by_test_id("login-username").wait_for()


class ShortLivedTokens(UiTest):
    # Access tokens for 65 s: the page refreshes 60 s before expiry, i.e. after 5 s.
    extra_env = {"HEARTH__AUTH__ACCESS_TOKEN_TTL_SECS": "65"}

    def test_the_socket_moves_to_each_new_token_before_the_old_one_expires(self):
        self.admin("ada")
        page = self.page
        sockets = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        harness.ui_login(page, self.base, "ada")
        page.wait_for_timeout(8000)
        tokens = [re.search(r"api_key=([^&]+)", u).group(1) for u in sockets]
        self.assertGreaterEqual(len(tokens), 2, sockets)
        self.assertNotEqual(tokens[0], tokens[-1])
        # Online on the new socket, whose token is the page's current one.
        expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "online")
        status, _ = call(self.base, "GET", "/api/me", tokens[-1])
        self.assertEqual(status, 200)


class SettingsAndAdminForms(UiTest):
    def test_the_settings_and_admin_forms_store_what_they_say(self):
        token = self.admin("root")
        page = self.page
        page.on("dialog", lambda d: d.accept())
        harness.ui_login(page, self.base, "root")

        # Preferences.
        page.goto(self.base + "/#/settings")
        page.locator("#p-temp").fill("0.4")
        page.locator("#p-max").fill("50")
        page.locator("#p-system").fill("Be brief.")
        page.get_by_label("Add my memories to conversations").uncheck()
        page.get_by_role("button", name="Save preferences").click()
        expect(page.get_by_test_id("preferences-form").get_by_role("status")).to_have_text("Saved.")
        _, prefs = call(self.base, "GET", "/api/me/preferences", token)
        self.assertEqual((prefs["temperature"], prefs["max_tokens"], prefs["system_prompt"], prefs["memory"]),
                         (0.4, 50, "Be brief.", False))
        # An out-of-range value is refused by the form itself, and nothing changes.
        page.locator("#p-temp").fill("7")
        page.get_by_role("button", name="Save preferences").click()
        self.assertFalse(page.locator("#p-temp").evaluate("el => el.validity.valid"))
        self.assertEqual(call(self.base, "GET", "/api/me/preferences", token)[1]["temperature"], 0.4)
        page.locator("#p-temp").fill("0.4")

        # Memories.
        page.locator("#mem-new").fill("I live in Lyon.")
        page.get_by_role("button", name="Add", exact=True).click()
        expect(page.get_by_text("I live in Lyon.")).to_be_visible()
        self.assertEqual([m["content"] for m in call(self.base, "GET", "/api/me/memories", token)[1]["data"]],
                         ["I live in Lyon."])
        page.get_by_role("button", name="Delete memory").click()
        expect(page.get_by_text("I live in Lyon.")).to_have_count(0)
        self.assertEqual(call(self.base, "GET", "/api/me/memories", token)[1]["data"], [])

        # Admin: create a user, disable them, make them admin; the default model.
        page.goto(self.base + "/#/admin")
        page.locator("#nu-name").fill("carol")
        page.locator("#nu-pass").fill(harness.PASSWORD)
        page.get_by_role("button", name="Create user").click()
        expect(page.get_by_test_id("user-row")).to_have_count(2)
        carol = page.get_by_test_id("user-row").filter(has_text="carol")
        login = {"username": "carol", "password": harness.PASSWORD}
        self.assertEqual(call(self.base, "POST", "/api/auth/login", None, login)[0], 200)
        carol.get_by_role("button", name="Disable").click()
        expect(carol).to_contain_text("disabled")
        self.assertEqual(call(self.base, "POST", "/api/auth/login", None, login)[0], 401)
        carol.get_by_label("Role of carol").select_option("admin")
        expect(carol.get_by_label("Role of carol")).to_have_value("admin")
        users = call(self.base, "GET", "/api/admin/users", token)[1]["data"]
        self.assertEqual([(u["role"], u["disabled"]) for u in users if u["username"] == "carol"], [("admin", True)])
        page.locator("#default-model").select_option("SmolLM2-135M-Instruct.Q4_1")
        expect(page.locator("#default-model")).to_have_value("SmolLM2-135M-Instruct.Q4_1")
        self.assertEqual(call(self.base, "GET", "/api/admin/models", token)[1]["default_model"],
                         "SmolLM2-135M-Instruct.Q4_1")

        # A password change signs out here; the new password signs in.
        page.goto(self.base + "/#/settings")
        page.locator("#pw-cur").fill(harness.PASSWORD)
        page.locator("#pw-new").fill("a brand new passphrase")
        page.get_by_role("button", name="Change password").click()
        page.get_by_test_id("login-username").wait_for()
        self.assertEqual(call(self.base, "GET", "/api/me", token)[0], 401)
        harness.ui_login(page, self.base, "root", "a brand new passphrase")


class PagesAndScreenshots(UiTest):
    context_options = {"permissions": ["clipboard-read", "clipboard-write"]}

    def test_settings_admin_list_and_branches_work_and_fit_a_phone(self):
        token = self.admin("root")
        self.server.user("bob", admin_token=token)
        status, conv = call(self.base, "POST", "/api/conversations/import", token,
                            long_conversation(8, 4))
        self.assertEqual(status, 201)
        page = self.page
        page.on("dialog", lambda d: d.accept("Renamed chat") if d.type == "prompt" else d.accept())
        harness.ui_login(page, self.base, "root")

        # The list: search (Ctrl+K), rename, pin, archive.
        second = self.conversation(token, title="Groceries")
        page.reload()
        expect(page.get_by_test_id("conversation-item")).to_have_count(2)
        page.keyboard.press("Control+k")
        expect(page.get_by_test_id("search")).to_be_focused()
        page.keyboard.type("Groceries")
        expect(page.get_by_test_id("conversation-item")).to_have_count(1)
        page.get_by_test_id("search").fill("")
        item = page.locator(f"[data-conversation-id='{conv['id']}']")
        item.get_by_test_id("conversation-menu").click()
        page.get_by_test_id("rename").click()
        expect(item).to_contain_text("Renamed chat")
        page.locator(f"[data-conversation-id='{second}']").get_by_test_id("conversation-menu").click()
        page.get_by_test_id("archive").click()
        expect(page.get_by_test_id("conversation-item")).to_have_count(1)

        # A conversation: regenerate makes a branch; ‹ › switch between them.
        item.locator("a").click()
        expect(page.get_by_test_id("message-assistant")).to_have_count(4)
        first_id = self.last_answer().get_attribute("data-message-id")
        page.get_by_test_id("regenerate").click()
        # The old answer stays last (and done) until the new one is created, which waits for the
        # prompt's prefill: wait for the new message first, then for it to finish.
        not_first = re.compile(f"^(?!{re.escape(first_id)}$)")
        fourth = page.get_by_test_id("message-assistant").nth(3)
        expect(fourth).to_have_attribute("data-message-id", not_first, timeout=120000)
        expect(self.last_answer()).to_have_attribute("data-status", "done", timeout=120000)
        expect(self.last_answer().get_by_test_id("branch-position")).to_have_text("2/2")
        self.last_answer().get_by_role("button", name="Previous version").click()
        expect(self.last_answer().get_by_test_id("branch-position")).to_have_text("1/2")
        expect(self.last_answer()).to_have_attribute("data-message-id", first_id)
        expect(self.last_answer().locator(".md")).to_contain_text("That prints 42.")
        # Edit the last question: a new branch of the question, answered.
        user = page.get_by_test_id("message-user").last
        user.get_by_test_id("edit").click()
        page.locator(".edit-box textarea").fill("What is 2 + 2?")
        page.get_by_test_id("edit-save").click()
        expect(page.get_by_test_id("message-user").last).to_contain_text("What is 2 + 2?")
        expect(fourth).to_have_attribute("data-message-id", not_first, timeout=120000)
        expect(self.last_answer()).to_have_attribute("data-status", "done", timeout=120000)
        expect(page.get_by_test_id("message-user").last.get_by_test_id("branch-position")).to_have_text("2/2")
        # The settings drawer keeps this conversation's parameters.
        page.get_by_test_id("open-settings").click()
        page.get_by_test_id("param-temperature").fill("0.3")
        page.get_by_test_id("system-prompt").fill("You are terse.")
        page.get_by_test_id("settings-drawer").get_by_role("button", name="Save").click()
        expect(page.get_by_test_id("settings-drawer")).to_have_count(0)
        status, stored = call(self.base, "GET", f"/api/conversations/{conv['id']}", token)
        self.assertEqual((stored["params"]["temperature"], stored["system_prompt"]), (0.3, "You are terse."))
        self.shoot("chat")

        # Settings: an API key is shown once, works, and is revoked.
        page.goto(self.base + "/#/settings")
        page.locator("#key-name").fill("laptop")
        page.get_by_test_id("create-key").click()
        key = page.get_by_test_id("new-key-value").inner_text()
        self.assertTrue(key.startswith("sk-hearth-"), key)
        self.assertEqual(call(self.base, "GET", "/v1/models", key)[0], 200)
        self.shoot("settings")
        page.get_by_role("button", name="Done").click()
        expect(page.get_by_test_id("api-key-row")).to_have_count(1)
        page.get_by_test_id("api-key-row").get_by_role("button", name="Revoke").click()
        expect(page.get_by_test_id("api-key-row")).to_have_count(0)
        self.assertEqual(call(self.base, "GET", "/v1/models", key)[0], 401)

        # Admin: users, live metrics, backends, backup.
        page.goto(self.base + "/#/admin")
        expect(page.get_by_test_id("user-row")).to_have_count(2)
        expect(page.get_by_test_id("backend-row")).to_contain_text("local")
        expect(page.get_by_test_id("queue-depth")).to_have_text(re.compile(r"^\d+$"))
        page.get_by_test_id("backup").click()
        expect(page.get_by_role("status").filter(has_text="Saved")).to_be_visible(timeout=20000)
        self.shoot("admin")

        # A phone: nothing scrolls sideways, inputs are 16 px.
        for path in ("/#/", f"/#/c/{conv['id']}", "/#/settings", "/#/admin"):
            page.set_viewport_size({"width": 412, "height": 915})
            page.goto(self.base + path)
            page.wait_for_timeout(800)
            overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
            self.assertLessEqual(overflow, 0, path)
        page.goto(f"{self.base}/#/c/{conv['id']}")
        self.assertEqual(page.get_by_test_id("composer").evaluate("el => getComputedStyle(el).fontSize"), "16px")
        self.shoot("chat", sizes=[(412, 915)])

        # Sign out everywhere: this tab is signed out, and so is every other session.
        page.set_viewport_size({"width": 1280, "height": 800})
        page.goto(self.base + "/#/settings")
        page.get_by_test_id("sign-out-everywhere").click()
        page.get_by_test_id("login-username").wait_for()
        self.assertEqual(call(self.base, "GET", "/api/me", token)[0], 401)
        self.shoot("login")

    def shoot(self, name, sizes=((1280, 800), (412, 915))):
        page = self.page
        keep = page.viewport_size
        for w, h in sizes:
            page.set_viewport_size({"width": w, "height": h})
            for scheme in ("light", "dark"):
                page.emulate_media(color_scheme=scheme)
                page.wait_for_timeout(150)
                page.screenshot(path=str(harness.shots_dir() / f"{name}-{w}x{h}-{scheme}.png"))
        page.emulate_media(color_scheme="light")
        page.set_viewport_size(keep)


if __name__ == "__main__":
    unittest.main()
