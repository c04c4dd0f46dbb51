"""The blog editor in real Chromium against the real `hearth` binary and model: writing with a
live preview, the AI tools streamed into suggestions, autosave, publishing and the public page;
two tabs saving the same post (the conflict, and the user's choice); the list, the history, a
phone-sized screen. Run by tests/integration/browser.rs; alone:

    HEARTH_BIN=target/debug/hearth HEARTH_MODEL_PATH=models/SmolLM2-135M-Instruct.Q4_1.gguf \\
      .venv/bin/python -m unittest -v tests.browser.test_blog
"""

import re
import sys
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from playwright.sync_api import TimeoutError as PlaywrightTimeout, expect  # noqa: E402

import harness  # noqa: E402
from harness import UiTest, call, report  # noqa: E402

TITLE = "Notes from the hearth"
SENTENCE = "The fire keeps the whole house warm in winter."
BODY = f"""## Getting started

{SENTENCE} We light it every evening and talk about the day.

- dry wood
- a long match
- patience

```rust
fn main() {{
    let logs = 3;
    println!("{{}} logs on the fire", logs);
}}
```

Nothing beats a quiet evening by the fire with a good book and a cup of tea.
"""

# Before any page script: every change of the AI suggestion box — its data-state, the length of
# the text it shows, its action, and when (performance.now()) — for the tests to read back.
SUGGESTION_PROBE = """
window.__ai = [];
new MutationObserver(() => {
  const el = document.querySelector('[data-testid=ai-suggestion]');
  const text = el && el.querySelector('[data-testid=ai-suggestion-text]');
  const row = [el ? el.dataset.state : null, text ? text.textContent.length : -1,
               el ? el.dataset.action : null];
  const last = window.__ai[window.__ai.length - 1];
  if (!last || last[0] !== row[0] || last[1] !== row[1] || last[2] !== row[2]) {
    window.__ai.push([...row, performance.now()]);
  }
}).observe(document, {subtree: true, childList: true, characterData: true, attributes: true,
                      attributeFilter: ['data-state']});
"""

# Click Stop as soon as the suggestion shows text: "clicked", or "done" if it ended first.
STOP_AT_FIRST_TEXT = """() => new Promise(resolve => {
  const tick = () => {
    const el = document.querySelector('[data-testid=ai-suggestion]');
    const stop = document.querySelector('[data-testid=ai-stop]');
    if (el && el.dataset.state !== 'streaming') return resolve('done');
    const text = el && el.querySelector('[data-testid=ai-suggestion-text]');
    if (stop && text && text.textContent.length > 0) { stop.click(); return resolve('clicked'); }
    setTimeout(tick, 5);
  };
  tick();
})"""


def words(text):
    """The words of `text` (letters and digits), lowercased: Markdown's punctuation aside."""
    return re.findall(r"[a-z0-9]+", text.lower())


class BlogTest(UiTest):
    def setUp(self):
        super().setUp()
        self.ctx.add_init_script(SUGGESTION_PROBE)

    def stored(self, token, post_id):
        status, post = call(self.base, "GET", f"/api/posts/{post_id}", token)
        self.assertEqual(status, 200, post)
        return post

    def run_tool(self, page, action, timeout=120000):
        """Click the `action` tool and wait for its suggestion to be done: the ms to the first
        text on screen and to done, and the suggestion's final text."""
        page.evaluate("() => { window.__ai = []; }")
        clicked = page.evaluate("() => performance.now()")
        page.get_by_test_id(f"ai-{action}").click()
        box = page.get_by_test_id("ai-suggestion")
        expect(box).to_have_attribute("data-action", action)
        expect(box).to_have_attribute("data-state", "done", timeout=timeout)
        rows = [r for r in page.evaluate("() => window.__ai") if r[2] == action]
        streaming = [r for r in rows if r[0] == "streaming" and r[1] > 0]
        # The tokens were on screen while it was still streaming, and growing.
        self.assertTrue(streaming, rows)
        done = next(r for r in rows if r[0] == "done")
        first, end = streaming[0][3] - clicked, done[3] - clicked
        report(f"blog_assist_{action}_ms", first_text=round(first), done=round(end),
               streamed_renders=len(streaming))
        return first, end

    def shoot(self, page, name):
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            page.wait_for_timeout(150)
            page.screenshot(path=str(harness.shots_dir() / f"{name}-1280x800-{scheme}.png"))
        page.emulate_media(color_scheme="light")


class WriteAndPublish(BlogTest):
    def test_write_with_preview_ai_tools_autosave_publish_and_read_the_public_page(self):
        token = self.admin("alice")
        page = self.page
        frames = harness.record_frames(page)
        harness.ui_login(page, self.base, "alice")

        # The Blog page, then a new post.
        page.get_by_test_id("nav-blog").click()
        expect(page.get_by_test_id("post-list")).to_contain_text("No posts yet")
        page.get_by_test_id("new-post").click()
        title = page.get_by_test_id("post-title")
        expect(title).to_have_value("Untitled")
        post_id = page.url.split("#/posts/")[1]
        self.assertTrue(post_id.startswith("post_"), page.url)

        # Title and Markdown; the preview renders them as the public page will.
        started = time.time()
        title.fill(TITLE)
        body = page.get_by_test_id("post-body")
        body.fill(BODY)
        preview = page.get_by_test_id("post-preview")
        expect(preview.locator(".blog-article h2")).to_have_text("Getting started")
        expect(preview.locator(".blog-article li")).to_have_count(3)
        expect(preview.locator(".blog-article pre [class*='hl-']").first).to_be_attached()
        report("blog_preview_ms", after_typing=round((time.time() - started) * 1000))
        self.assertEqual(page.evaluate("() => window.__csp"), [])
        # The blog's stylesheet styles the preview, and only the preview.
        self.assertNotEqual(preview.locator(".blog-article pre").evaluate("el => getComputedStyle(el).borderTopStyle"), "none")
        self.assertEqual(page.evaluate("() => getComputedStyle(document.body).overflow"), "hidden")

        # Autosave: nothing clicked, the text is stored within moments of the last keystroke,
        # and the slug followed the title.
        state = page.get_by_test_id("post-save-state")
        expect(state).to_have_text("Saved", timeout=10000)
        report("blog_autosave_ms", after_typing=round((time.time() - started) * 1000))
        post = self.stored(token, post_id)
        self.assertEqual((post["title"], post["body"], post["slug"], post["status"]),
                         (TITLE, BODY, "notes-from-the-hearth", "draft"))
        # The SEO panel is read after the save.
        expect(page.get_by_test_id("seo-check").first).to_be_visible()
        expect(page.get_by_test_id("seo-words")).not_to_have_text("0")
        self.assertGreater(int(page.get_by_test_id("seo-words").inner_text()), 30)

        # Summary: streamed into a suggestion, accepted into the excerpt.
        self.run_tool(page, "summary")
        summary = page.get_by_test_id("ai-suggestion-text").inner_text().strip()
        self.assertTrue(summary, "the summary is empty")
        page.get_by_test_id("ai-accept").click()
        expect(page.get_by_test_id("ai-suggestion")).to_have_count(0)
        expect(page.get_by_test_id("post-excerpt")).to_have_value(summary)
        self.assertTrue(page.get_by_test_id("post-details").evaluate("el => el.open"))

        # Rewrite needs a selection; it then replaces exactly the text selected when it
        # started, even if the selection moved meanwhile.
        expect(page.get_by_test_id("ai-rewrite")).to_be_disabled()
        expect(page.get_by_test_id("ai-hint")).to_be_visible()
        body.evaluate("(el, s) => { const i = el.value.indexOf(s); el.focus(); el.setSelectionRange(i, i + s.length); }", SENTENCE)
        expect(page.get_by_test_id("ai-rewrite")).to_be_enabled()
        page.get_by_test_id("ai-rewrite-style").select_option("simpler")
        self.run_tool(page, "rewrite")
        rewritten = page.get_by_test_id("ai-suggestion-text").inner_text().strip()
        self.assertTrue(rewritten, "the rewrite is empty")
        body.evaluate("el => el.setSelectionRange(0, 5)")
        page.get_by_test_id("ai-accept").click()
        expected_body = BODY.replace(SENTENCE, rewritten)
        expect(body).to_have_value(expected_body)
        # The socket carried it: a `generate` frame's tokens and its `done`.
        kinds = [f.get("type") for f in frames if "message_id" not in f]
        self.assertIn("token", kinds)
        self.assertIn("done", kinds)

        # Titles: a list to pick from; Discard leaves the post as it was.
        self.run_tool(page, "titles")
        self.assertGreaterEqual(page.get_by_test_id("ai-title-option").count(), 1)
        page.get_by_test_id("ai-discard").click()
        expect(page.get_by_test_id("ai-suggestion")).to_have_count(0)
        expect(title).to_have_value(TITLE)

        # Continue, stopped at its first text: it ends at once; discarded, nothing changes.
        page.evaluate("() => { window.__ai = []; }")
        page.get_by_test_id("ai-continue").click()
        outcome = page.evaluate(STOP_AT_FIRST_TEXT)
        expect(page.get_by_test_id("ai-suggestion")).to_have_attribute("data-state", "done", timeout=60000)
        if outcome == "clicked":
            expect(page.get_by_test_id("ai-suggestion")).to_contain_text("stopped")
        report("blog_assist_stop", outcome=outcome)
        page.get_by_test_id("ai-discard").click()
        expect(body).to_have_value(expected_body)

        # Save now; what was accepted is stored.
        page.get_by_test_id("post-save").click()
        expect(state).to_have_text("Saved", timeout=10000)
        post = self.stored(token, post_id)
        self.assertEqual((post["body"], post["excerpt"]), (expected_body, summary))

        # Publish: the public link appears.
        page.get_by_test_id("post-publish").click()
        link = page.get_by_test_id("post-public-link")
        expect(link).to_be_visible()
        expect(page.get_by_test_id("post-publish")).to_have_text("Unpublish")
        self.assertEqual(link.get_attribute("href"), "/blog/alice/notes-from-the-hearth")
        self.assertEqual(link.get_attribute("target"), "_blank")
        self.assertIn("noopener", link.get_attribute("rel"))
        self.assertEqual(self.stored(token, post_id)["status"], "published")
        self.shoot(page, "blog-editor")

        # The list: it is published, not a draft.
        page.get_by_role("link", name="← All posts").click()
        expect(page.get_by_test_id("post-item")).to_have_count(1)
        expect(page.get_by_test_id("post-item")).to_contain_text(TITLE)
        expect(page.get_by_test_id("post-item")).to_have_attribute("data-status", "published")
        page.get_by_test_id("posts-filter-draft").click()
        expect(page.get_by_test_id("post-item")).to_have_count(0)
        page.get_by_test_id("posts-filter-published").click()
        expect(page.get_by_test_id("post-item")).to_have_count(1)
        self.shoot(page, "blog-list")

        # The public page: the title is its h1 and the accepted rewrite is in the article.
        href = post["url"]
        page.goto(self.base + href)
        expect(page.locator("h1")).to_have_text(TITLE)
        article = " ".join(words(page.locator("article").inner_text()))
        self.assertIn(" ".join(words(rewritten)), article)
        self.assertIn(" ".join(words("Nothing beats a quiet evening by the fire")), article)


def save_unless_refused(page):
    """Click Save, unless autosave (1.5 s after the last keystroke) already met the conflict,
    which disables the button."""
    try:
        page.get_by_test_id("post-save").click(timeout=3000)
    except PlaywrightTimeout:
        expect(page.get_by_test_id("post-conflict")).to_be_visible()


class TwoTabs(BlogTest):
    def test_a_stale_save_shows_the_conflict_and_never_overwrites_until_the_user_chooses(self):
        token = self.admin("alice")
        status, post = call(self.base, "POST", "/api/posts", token,
                            {"title": "Shared", "body": "First line.\n"})
        self.assertEqual(status, 201, post)
        pid = post["id"]
        a = self.page
        harness.ui_login(a, self.base, "alice")
        a.goto(f"{self.base}/#/posts/{pid}")
        b = self.ctx.new_page()
        b.goto(f"{self.base}/#/posts/{pid}")
        for p in (a, b):
            expect(p.get_by_test_id("post-body")).to_have_value("First line.\n")

        # Tab B saves first.
        b.bring_to_front()
        b.get_by_test_id("post-body").fill("Written in tab B.\n")
        b.get_by_test_id("post-save").click()
        expect(b.get_by_test_id("post-save-state")).to_have_text("Saved")
        self.assertEqual(self.stored(token, pid)["body"], "Written in tab B.\n")

        # Tab A still holds revision 1: its save is refused and shows their version.
        a.bring_to_front()
        a_body = a.get_by_test_id("post-body")
        a_body.fill("Written in tab A.")
        # Saved by autosave or by the button, whichever comes first: refused either way.
        save_unless_refused(a)
        conflict = a.get_by_test_id("post-conflict")
        expect(conflict).to_be_visible()
        expect(conflict).to_contain_text("Written in tab B.")
        expect(a.get_by_test_id("post-save-state")).to_have_text("Conflict")
        # Autosave waits for the user: more typing saves nothing.
        a_body.press("End")
        a_body.type(" More.")
        a.wait_for_timeout(2500)
        stored = self.stored(token, pid)
        self.assertEqual((stored["body"], stored["revision"]), ("Written in tab B.\n", 2))
        self.shoot(a, "blog-conflict")

        # Keep mine: the user's explicit choice goes on top of theirs.
        a.get_by_test_id("conflict-overwrite").click()
        expect(a.get_by_test_id("post-save-state")).to_have_text("Saved")
        expect(conflict).to_have_count(0)
        stored = self.stored(token, pid)
        self.assertEqual((stored["body"], stored["revision"]), ("Written in tab A. More.", 3))

        # Tab B is now the stale one: Load theirs replaces its text with the stored one.
        b.bring_to_front()
        b_body = b.get_by_test_id("post-body")
        b_body.fill("B again.\n")
        save_unless_refused(b)
        expect(b.get_by_test_id("post-conflict")).to_be_visible()
        b.get_by_test_id("conflict-load").click()
        expect(b.get_by_test_id("post-conflict")).to_have_count(0)
        expect(b_body).to_have_value("Written in tab A. More.")
        expect(b.get_by_test_id("post-save-state")).to_have_text("Saved")
        self.assertEqual(self.stored(token, pid)["revision"], 3)

        # History: every save is a revision; restoring B's makes a new one with its text.
        b.get_by_test_id("post-revisions").click()
        expect(b.get_by_test_id("revision-item")).to_have_count(3)
        rev2 = b.locator("[data-testid=revision-item][data-revision='2']")
        rev2.get_by_test_id("revision-show").click()
        expect(rev2.get_by_test_id("revision-body")).to_have_text("Written in tab B.\n")
        rev2.get_by_test_id("revision-restore").click()
        expect(b_body).to_have_value("Written in tab B.\n")
        expect(b.get_by_test_id("revision-item")).to_have_count(4)
        stored = self.stored(token, pid)
        self.assertEqual((stored["body"], stored["revision"]), ("Written in tab B.\n", 4))


class ListAndPhone(BlogTest):
    def test_the_list_filters_and_opens_posts_delete_asks_and_the_pages_fit_a_phone(self):
        token = self.admin("alice")
        ids = []
        for t in ("First draft", "Second draft", "Out there"):
            status, post = call(self.base, "POST", "/api/posts", token, {"title": t, "body": f"About {t}."})
            self.assertEqual(status, 201, post)
            ids.append(post["id"])
        self.assertEqual(call(self.base, "POST", f"/api/posts/{ids[2]}/publish", token)[0], 200)
        page = self.page
        page.on("dialog", lambda d: d.accept())
        harness.ui_login(page, self.base, "alice")
        page.goto(self.base + "/#/posts")
        items = page.get_by_test_id("post-item")
        expect(items).to_have_count(3)
        page.get_by_test_id("posts-filter-draft").click()
        expect(items).to_have_count(2)
        page.get_by_test_id("posts-filter-published").click()
        expect(items).to_have_count(1)
        expect(items).to_contain_text("Out there")
        expect(items).to_contain_text("3 words")

        # Opening one; the meta description counts its characters as they are typed.
        items.click()
        expect(page.get_by_test_id("post-title")).to_have_value("Out there")
        expect(page.get_by_test_id("post-public-link")).to_be_visible()
        page.get_by_test_id("post-details").locator("summary").click()
        page.get_by_test_id("post-meta-description").fill("é" * 20)
        expect(page.get_by_test_id("meta-count")).to_have_text("20/160")

        # A phone: nothing scrolls sideways, on the list or in the editor.
        page.set_viewport_size({"width": 412, "height": 915})
        for path in ("/#/posts", f"/#/posts/{ids[0]}"):
            page.goto(self.base + path)
            page.wait_for_timeout(800)
            overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
            self.assertLessEqual(overflow, 0, path)
            inner = page.evaluate("() => { const p = document.querySelector('.page'); return p ? p.scrollWidth - p.clientWidth : 0; }")
            self.assertLessEqual(inner, 0, path)
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            page.wait_for_timeout(150)
            page.screenshot(path=str(harness.shots_dir() / f"blog-editor-412x915-{scheme}.png"))
        page.emulate_media(color_scheme="light")
        page.set_viewport_size({"width": 1280, "height": 800})

        # Delete asks first (accepted here), then the post is gone.
        page.get_by_test_id("post-delete").click()
        expect(page.get_by_test_id("post-list")).to_be_visible()
        self.assertEqual(call(self.base, "GET", f"/api/posts/{ids[0]}", token)[0], 404)
        page.get_by_test_id("posts-filter-all").click()
        expect(items).to_have_count(2)


if __name__ == "__main__":
    unittest.main()
