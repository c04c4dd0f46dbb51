// The post editor's AI tools: one button per action of POST /api/posts/{id}/assist, streamed
// over the page's WebSocket (a `generate` frame with `post_id`) into a suggestion box that
// the user accepts or discards. Without a socket the same request goes over HTTP in one piece.
//
// A suggestion never changes the post by itself. What it applies to is captured when the tool
// starts — the selection's range and text, the cursor — so that accepting it replaces exactly
// what was selected then, whatever is selected now; if that text has changed meanwhile it is
// found again or the accept is refused (the suggestion stays, to copy by hand).

import { html, useEffect, useRef, useState } from "../vendor/preact-htm.js";
import { api } from "../lib/session.js";
import { cancel, onSocketState, request } from "../lib/socket.js";

// `field`: the result fills that field; `selection`: it replaces the selection; `insert`: it
// goes in at the cursor (`block`: as paragraphs of their own).
const ACTIONS = [
  { id: "titles", label: "Titles", field: "title", help: "Suggest titles for the post" },
  { id: "outline", label: "Outline", insert: true, block: true, help: "Suggest an outline, inserted at the cursor" },
  { id: "continue", label: "Continue", insert: true, help: "Continue writing from the cursor" },
  { id: "expand", label: "Expand", selection: true, help: "Expand the selected text" },
  { id: "rewrite", label: "Rewrite", selection: true, help: "Rewrite the selected text in the chosen style" },
  { id: "summary", label: "Summary", field: "excerpt", help: "Summarise the post into its excerpt" },
  { id: "meta_description", label: "Meta description", field: "meta_description", help: "Write the meta description (at most 160 characters)" },
  { id: "keywords", label: "Keywords", field: "keywords", help: "Suggest keywords" },
  { id: "slug", label: "Slug", field: "slug", help: "Suggest a slug" },
];
const BY_ID = Object.fromEntries(ACTIONS.map((a) => [a.id, a]));
const STYLES = ["shorter", "longer", "simpler", "formal", "casual", "grammar"];
const PHASES = { sending: "sending…", queued: "queued…", thinking: "reading the post…", writing: "writing…", working: "working…" };
const FINISH = { length: " (cut at the length limit)", cancelled: " (stopped)" };
const NEED_SELECTION = "Select text in the body to rewrite or expand it.";

const splitList = (s) => s.split(/[,\n]/).map((t) => t.replace(/^\s*[-*\d.]+\s+/, "").trim()).filter(Boolean);

/** `body` with the captured selection replaced by `text`, or null if it cannot be found. */
function replaceSelection(body, cap, text) {
  let at = cap.start;
  if (body.slice(at, cap.end) !== cap.selected) {
    // Edited elsewhere meanwhile: the selected text, if it is still there exactly once.
    const i = body.indexOf(cap.selected);
    if (i < 0 || body.indexOf(cap.selected, i + 1) >= 0) return null;
    at = i;
  }
  // The selection's own surrounding whitespace stays (a sentence keeps its space after).
  const lead = cap.selected.match(/^\s*/)[0];
  const trail = cap.selected.slice(lead.length).match(/\s*$/)[0];
  const t = lead + text.trim() + trail;
  return { body: body.slice(0, at) + t + body.slice(at + cap.selected.length), from: at + lead.length, to: at + t.length - trail.length };
}

/** `body` with `text` inserted at the captured cursor, or null if it cannot be found. */
function insertAtCursor(body, cap, text, block) {
  let at = cap.start;
  if (body.slice(0, at) !== cap.body.slice(0, at)) {
    // Text before the cursor changed: the cursor is where its last 40 characters went.
    const ctx = cap.body.slice(Math.max(0, at - 40), at);
    const i = body.indexOf(ctx);
    if (i < 0 || body.indexOf(ctx, i + 1) >= 0) return null;
    at = i + ctx.length;
  }
  const before = body.slice(0, at);
  const after = body.slice(at);
  let t = block ? text.trim() : text.replace(/\s+$/, "");
  let lead = "";
  if (block) {
    if (before && !before.endsWith("\n\n")) lead = before.endsWith("\n") ? "\n" : "\n\n";
    if (after && !after.startsWith("\n")) t += "\n\n";
  } else if (before && !/\s$/.test(before) && !/^\s/.test(t)) {
    lead = " ";
  }
  return { body: before + lead + t + after, from: at + lead.length, to: at + lead.length + t.length };
}

function titlesOf(s) {
  if (s.titles && s.titles.length) return s.titles;
  return splitList(s.text.replace(/\n/g, ","));
}

/**
 * The toolbar and the suggestion. `bodyRef`: the Markdown textarea; `sel`: its selection
 * ({start, end}, to enable the selection tools); `getDraft()`: the editor's fields now;
 * `setField(name, value)`: an edit; `showDetails()`: open the panel a field is in.
 */
export function AssistBar({ postId, bodyRef, sel, getDraft, setField, showDetails }) {
  const [s, setS] = useState(null);
  const [style, setStyle] = useState("shorter");
  const [online, setOnline] = useState(false);
  const reqRef = useRef(null);   // the socket request in flight
  const abortRef = useRef(null); // the HTTP request in flight
  const runRef = useRef(0);      // answers of an earlier run are ignored

  useEffect(() => {
    const off = onSocketState((st) => setOnline(st === "online"));
    return () => {
      off();
      stopRequest();
    };
  }, []);

  function stopRequest() {
    if (reqRef.current) cancel(reqRef.current);
    if (abortRef.current) abortRef.current.abort();
    reqRef.current = null;
    abortRef.current = null;
  }

  const patch = (fn) => setS((x) => (x ? fn(x) : x));

  function finish(r) {
    reqRef.current = null;
    abortRef.current = null;
    patch((x) => ({ ...x, state: "done", text: r.text != null ? r.text : x.text, titles: r.titles, keywords: r.keywords, finish: r.finish_reason }));
  }

  function fail(message) {
    reqRef.current = null;
    abortRef.current = null;
    patch((x) => ({ ...x, state: "error", error: message }));
  }

  function start(a) {
    stopRequest();
    const draft = getDraft();
    const body = draft.body;
    const el = bodyRef.current;
    const from = el ? el.selectionStart : body.length;
    const to = el ? el.selectionEnd : body.length;
    const cap = { start: from, end: to, selected: body.slice(from, to), body };
    if (a.selection && !cap.selected.trim()) return;
    // The server counts characters as Unicode scalar values; JS strings count UTF-16 units.
    const options = { body };
    if (a.id === "continue") options.cursor = [...body.slice(0, from)].length;
    if (a.id === "rewrite") options.style = style;
    const selection = a.selection ? cap.selected : undefined;
    const run = ++runRef.current;
    const mine = (fn) => (...args) => run === runRef.current && fn(...args);
    const base = { action: a.id, capture: cap, text: "", state: "streaming", pick: 0, style };

    const reqId = request(
      { type: "generate", post_id: postId, action: a.id, selection, options },
      {
        onFrame: mine((f) => {
          if (f.type === "status") patch((x) => ({ ...x, phase: f.state }));
          else if (f.type === "token") patch((x) => ({ ...x, phase: "writing", text: x.text + f.text }));
          else if (f.type === "done") finish(f);
          else if (f.type === "error") fail(f.retry_after ? `${f.message} (retry in ${f.retry_after} s)` : f.message);
        }),
        onDrop: mine(() => fail("The connection dropped before the suggestion was done: try again.")),
      },
    );
    if (reqId) {
      reqRef.current = reqId;
      setS({ ...base, phase: "sending", via: "socket" });
      return;
    }
    // No socket: the same request over HTTP, answered in one piece.
    const ctl = new AbortController();
    abortRef.current = ctl;
    setS({ ...base, phase: "working", via: "http" });
    api("POST", `/api/posts/${encodeURIComponent(postId)}/assist`, { action: a.id, selection, options, stream: false }, { signal: ctl.signal })
      .then(mine(finish), mine((e) => fail(e.name === "AbortError" ? "Stopped." : e.message)));
  }

  function stop() {
    // Over the socket the answer ends with a `done` frame (finish_reason "cancelled") that
    // keeps what was written so far.
    if (reqRef.current) cancel(reqRef.current);
    else if (abortRef.current) abortRef.current.abort();
  }

  function discard() {
    runRef.current++;
    stopRequest();
    setS(null);
  }

  function selectInBody(from, to) {
    requestAnimationFrame(() => {
      const el = bodyRef.current;
      if (!el) return;
      el.focus();
      el.setSelectionRange(from, to);
    });
  }

  function accept() {
    const a = BY_ID[s.action];
    const text = s.text || "";
    if (a.id === "titles") {
      const t = titlesOf(s)[s.pick];
      if (t) setField("title", t);
    } else if (a.id === "keywords") {
      setField("keywords", (s.keywords && s.keywords.length ? s.keywords : splitList(text)).join(", "));
      showDetails();
    } else if (a.field) {
      setField(a.field, text.trim());
      showDetails();
    } else {
      const body = getDraft().body;
      const r = a.selection ? replaceSelection(body, s.capture, text) : insertAtCursor(body, s.capture, text, a.block);
      if (!r) {
        patch((x) => ({ ...x, error: a.selection
          ? "The selected text has changed since the tool started: copy the suggestion by hand."
          : "The text around the cursor has changed since the tool started: copy the suggestion by hand." }));
        return;
      }
      setField("body", r.body);
      selectInBody(r.from, r.to);
    }
    runRef.current++;
    setS(null);
  }

  const streaming = s && s.state === "streaming";
  const hasSelection = sel.end > sel.start;
  const button = (a) => html`<button type="button" data-testid=${`ai-${a.id}`} title=${a.selection && !hasSelection ? NEED_SELECTION : a.help}
    disabled=${streaming || (a.selection && !hasSelection)} onClick=${() => start(a)}>${a.label}</button>`;
  const titles = s && s.action === "titles" && s.state === "done" ? titlesOf(s) : null;
  const canAccept = s && s.state === "done" && (titles ? titles.length > 0 : !!(s.text || "").trim() || (s.keywords && s.keywords.length));

  return html`<div class="ai-tools" role="toolbar" aria-label="AI writing tools" data-testid="ai-tools">
      <span class="muted">AI</span>
      ${ACTIONS.map((a) => a.id !== "rewrite" ? button(a) : html`<span class="ai-rewrite">${button(a)}
        <label class="sr-only" for="ai-rewrite-style">Rewrite style</label>
        <select id="ai-rewrite-style" data-testid="ai-rewrite-style" value=${style} onChange=${(e) => setStyle(e.target.value)}>
          ${STYLES.map((v) => html`<option value=${v}>${v}</option>`)}
        </select></span>`)}
      ${!hasSelection && html`<span class="muted ai-hint" data-testid="ai-hint">${NEED_SELECTION}</span>`}
      ${!online && html`<span class="muted" data-testid="ai-offline">Offline: suggestions arrive in one piece.</span>`}
    </div>
    ${s && html`<div class="ai-suggestion" data-testid="ai-suggestion" data-state=${s.state} data-action=${s.action} aria-live="polite">
      <div class="row">
        <strong>${BY_ID[s.action].label}${s.action === "rewrite" ? ` (${s.style})` : ""}</strong>
        <span class="muted">${streaming ? PHASES[s.phase] || "" : s.state === "done" ? `suggestion${FINISH[s.finish] || ""}` : ""}</span>
        <span class="grow"></span>
        ${streaming && html`<button type="button" data-testid="ai-stop" onClick=${stop}>Stop</button>`}
        ${s.state === "done" && html`<button type="button" class="primary" data-testid="ai-accept" disabled=${!canAccept} onClick=${accept}>Accept</button>`}
        <button type="button" data-testid="ai-discard" onClick=${discard}>Discard</button>
      </div>
      ${s.error && html`<p class="error" role="alert" data-testid="ai-error">${s.error}</p>`}
      ${titles
        ? html`<ul class="ai-titles" aria-label="Suggested titles: pick one, then Accept">${titles.map((t, i) => html`<li>
            <button type="button" class="ai-title-option" data-testid="ai-title-option" aria-pressed=${i === s.pick ? "true" : "false"}
              onClick=${() => patch((x) => ({ ...x, pick: i }))}>${t}</button></li>`)}</ul>`
        : html`<pre class="ai-text" data-testid="ai-suggestion-text">${s.text}${s.state === "done" && !(s.text || "").trim() && !(s.keywords && s.keywords.length) ? html`<span class="muted">(the model wrote nothing)</span>` : ""}</pre>`}
    </div>`}`;
}
