// Two panels of the post editor: the SEO checks (computed by the server from the stored post,
// so they are read again after every save) and the post's history (its revisions, each one
// viewable and restorable; a restore is a new revision, so nothing is lost).

import { html, useEffect, useState } from "../vendor/preact-htm.js";
import { api } from "../lib/session.js";

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
