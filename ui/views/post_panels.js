// Panels of the post editor: the Markdown preview, the conflict banner, the SEO checks
// (computed by the server from the stored post, so they are read again after every save) and
// the post's history (its revisions, each one viewable and restorable; a restore is a new
// revision, so nothing is lost).

import { Component, html, useEffect, useState } from "../vendor/preact-htm.js";
import DOMPurify from "../vendor/purify.js";
import { api } from "../lib/session.js";

const PREVIEW_PURIFY = {
  FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "iframe", "object", "embed", "link", "meta", "base"],
  FORBID_ATTR: ["style", "srcset", "action", "formaction"],
  ALLOW_DATA_ATTR: false,
  RETURN_DOM_FRAGMENT: true,
};

/**
 * The server's rendering, sanitised again here (defence in depth). Images from other origins
 * become placeholders: the UI's CSP would block them (and report it), and the preview should
 * not tell their servers who is writing what.
 */
function cleanPreview(htmlText) {
  const frag = DOMPurify.sanitize(htmlText || "", PREVIEW_PURIFY);
  for (const img of frag.querySelectorAll("img")) {
    const src = img.getAttribute("src") || "";
    let local = src.startsWith("data:");
    try {
      local = local || new URL(src, location.href).origin === location.origin;
    } catch {
      local = false;
    }
    if (local) continue;
    const span = document.createElement("span");
    span.className = "image-placeholder";
    span.textContent = `[image: ${img.getAttribute("alt") || src}]`;
    img.replaceWith(span);
  }
  return frag;
}

/**
 * The preview, styled by the public blog's own stylesheet (/blog/style.css) so that it looks as
 * the published page will. That stylesheet styles a whole page (`:root` variables, `body`,
 * `h1`, `pre`…), so it lives in the preview's shadow root, where it styles the article and
 * nothing of the app (and the app's rules stay out of the article). A stylesheet link is
 * allowed by the UI's CSP; the colours and fonts it reads from variables are inherited from
 * the host (style.css, "Blog editor").
 */
export class Preview extends Component {
  shouldComponentUpdate(next) {
    if (next.html !== this.props.html) this.draw(next.html);
    return false;
  }
  componentDidMount() {
    const root = this.host.attachShadow({ mode: "open" });
    const link = document.createElement("link");
    link.rel = "stylesheet";
    link.href = "/blog/style.css";
    this.article = document.createElement("article");
    this.article.className = "blog-article post-body";
    root.append(link, this.article);
    this.draw(this.props.html);
  }
  draw(htmlText) {
    if (this.article) this.article.replaceChildren(cleanPreview(htmlText));
  }
  render() {
    return html`<div class="preview-host" data-testid="post-preview" ref=${(el) => (this.host = el)}></div>`;
  }
}

/** A refused save: their version, and the user's two choices. */
export function ConflictBanner({ current, onLoad, onOverwrite }) {
  const lines = (current.body || "").split("\n").slice(0, 6).join("\n");
  return html`<div class="notice conflict" role="alert" data-testid="post-conflict">
    <p><strong>This post was changed elsewhere</strong> (revision ${current.revision}, ${new Date(current.updated_at * 1000).toLocaleString()}).
      Your changes are not saved. Their version:</p>
    <p class="conflict-title">${current.title}</p>
    <pre class="conflict-body">${lines}${(current.body || "").split("\n").length > 6 ? "\n…" : ""}</pre>
    <div class="row">
      <button type="button" data-testid="conflict-load" onClick=${onLoad}>Load theirs</button>
      <button type="button" class="danger" data-testid="conflict-overwrite" onClick=${onOverwrite}>Keep mine (overwrite theirs)</button>
    </div>
  </div>`;
}


/** Flesch reading ease in words: 60–70 is plain English. */
function fleschWord(score) {
  if (score == null) return "";
  if (score >= 80) return "easy";
  if (score >= 60) return "plain";
  if (score >= 30) return "fairly hard";
  return "hard";
}

/** The result of GET /api/posts/{id}/seo (null while loading). */
export function SeoPanel({ seo }) {
  if (!seo) {
    return html`<section class="seo-panel" data-testid="seo-panel" aria-labelledby="seo-h"><h2 id="seo-h">SEO</h2>
      <p class="muted">Checking…</p></section>`;
  }
  const checks = seo.checks || [];
  const passed = checks.filter((c) => c.ok).length;
  const flesch = seo.flesch_reading_ease;
  return html`<section class="seo-panel" data-testid="seo-panel" aria-labelledby="seo-h">
    <h2 id="seo-h">SEO <span class="muted">— ${passed}/${checks.length} checks pass, as saved</span></h2>
    <div class="stats">
      <div><strong data-testid="seo-words">${seo.word_count}</strong>words</div>
      <div><strong data-testid="seo-reading-time">${seo.reading_time_minutes}</strong>min read</div>
      <div><strong>${seo.sentence_count}</strong>sentences</div>
      <div><strong data-testid="seo-flesch">${flesch == null ? "—" : Math.round(flesch)}</strong>Flesch reading ease${flesch == null ? "" : ` (${fleschWord(flesch)})`}</div>
    </div>
    <ul class="seo-checks">
      ${checks.map((c) => html`<li class=${c.ok ? "ok" : "fail"} data-testid="seo-check" data-id=${c.id} data-ok=${c.ok ? "true" : "false"}>
        <span aria-hidden="true">${c.ok ? "✓" : "✗"}</span> <span class="sr-only">${c.ok ? "Passes:" : "Fails:"}</span> ${c.message}</li>`)}
    </ul>
    ${seo.headings && seo.headings.length > 0 && html`<details><summary>Outline (${seo.headings.length} headings)</summary>
      <ul class="seo-outline">${seo.headings.map((h) => html`<li class=${`h${h.level}`}>${"#".repeat(h.level)} ${h.text}</li>`)}</ul></details>`}
  </section>`;
}

/** The revisions of the post at `url`, newest first; `current` is the editor's revision. */
export function Revisions({ url, version, current, onRestore, onClose }) {
  const [list, setList] = useState(null);
  const [error, setError] = useState(null);
  const [shown, setShown] = useState(null); // {revision, title, body}

  useEffect(() => {
    api("GET", `${url}/revisions`).then((r) => setList(r.data), (e) => setError(e.message));
  }, [url, version, current]);

  async function show(revision) {
    if (shown && shown.revision === revision) return setShown(null);
    try {
      setShown(await api("GET", `${url}/revisions/${revision}`));
    } catch (e) {
      setError(e.message);
    }
  }

  return html`<section class="revisions" data-testid="revision-list" aria-labelledby="rev-h">
    <div class="row"><h2 id="rev-h" class="grow">History</h2>
      <button type="button" class="icon" aria-label="Close history" onClick=${onClose}>✕</button></div>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${!list && !error && html`<p class="muted">Loading…</p>`}
    <ul>
      ${(list || []).map((r) => html`<li data-testid="revision-item" data-revision=${r.revision}>
        <div class="row">
          <span class="grow"><strong>Revision ${r.revision}</strong> · ${r.title} · ${r.words} words ·
            <span class="added">+${r.added}</span> <span class="removed">−${r.removed}</span> ·
            <span class="muted">${new Date(r.created_at * 1000).toLocaleString()}</span></span>
          <button type="button" data-testid="revision-show" aria-expanded=${shown && shown.revision === r.revision ? "true" : "false"}
            onClick=${() => show(r.revision)}>View</button>
          ${r.revision === current
            ? html`<span class="muted">current</span>`
            : html`<button type="button" data-testid="revision-restore" onClick=${() => onRestore(r.revision)}>Restore</button>`}
        </div>
        ${shown && shown.revision === r.revision && html`<pre class="revision-body" data-testid="revision-body">${shown.body}</pre>`}
      </li>`)}
    </ul>
  </section>`;
}
