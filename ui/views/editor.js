// The post editor (`#/posts/<id>`): title, Markdown with a live preview, the details (slug,
// tags, excerpt, meta description, keywords, cover alt), autosave, publishing, history, the
// AI tools (./assist.js), the preview, the conflict banner, the history and the SEO panel
// (./post_panels.js).
//
// Saving is optimistic concurrency: every PATCH carries the revision this editor last saw, and
// a stale one is refused (409 revision_conflict) instead of overwriting what another tab or
// device saved. The editor then shows their version and waits — autosave paused — until the
// user picks "Load theirs" or "Keep mine"; it never resolves a conflict on its own.
// One save is in flight at a time; edits made meanwhile are saved right after it.
// Only the fields that changed since the last save are sent.

import { html, useEffect, useRef, useState } from "../vendor/preact-htm.js";
import { api } from "../lib/session.js";
import { AssistBar } from "./assist.js";
import { ConflictBanner, Preview, Revisions, SeoPanel } from "./post_panels.js";

const AUTOSAVE_MS = 1500;
const PREVIEW_MS = 300;
const META_MAX = 160;
const FIELDS = ["title", "body", "slug", "tags", "excerpt", "meta_description", "keywords", "cover_alt"];
const LISTS = new Set(["tags", "keywords"]);
const STATE_TEXT = { saved: "Saved", saving: "Saving…", unsaved: "Unsaved changes", conflict: "Conflict" };

/** A slug the way the server makes one from a title: lowercase ASCII words joined by hyphens. */
export function slugify(s) {
  return String(s)
    .normalize("NFKD")
    .replace(/[\u0300-\u036f]/g, "")
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 80)
    .replace(/-+$/, "");
}

/** Whether `slug` is the one the server made from `title` (`-2`, `-3`… when taken). */
function slugFollowsTitle(slug, title) {
  const s = slugify(title);
  return !!s && (slug === s || new RegExp(`^${s}-\\d+$`).test(slug));
}

/** The editable fields of a post, as the inputs hold them (lists comma-separated). */
function fieldsOf(post) {
  return {
    title: post.title || "",
    body: post.body || "",
    slug: post.slug || "",
    tags: (post.tags || []).join(", "),
    excerpt: post.excerpt || "",
    meta_description: post.meta_description || "",
    keywords: (post.keywords || []).join(", "),
    cover_alt: post.cover_alt || "",
  };
}

const splitList = (s) => s.split(",").map((t) => t.trim()).filter(Boolean);

/** The PATCH fields for what `draft` changed since `saved`. */
function changes(draft, saved) {
  const out = {};
  for (const k of FIELDS) if (draft[k] !== saved[k]) out[k] = LISTS.has(k) ? splitList(draft[k]) : draft[k];
  return out;
}

function Field({ id, label, field, value, onInput, hint, multiline, ...rest }) {
  return html`<div class="field">
    <label for=${id}>${label}${hint ? html` <span class="muted">${hint}</span>` : ""}</label>
    ${multiline
      ? html`<textarea id=${id} data-field=${field} rows="2" value=${value} onInput=${(e) => onInput(field, e.target.value)} ...${rest}></textarea>`
      : html`<input id=${id} data-field=${field} value=${value} onInput=${(e) => onInput(field, e.target.value)} ...${rest} />`}
  </div>`;
}

export function PostEditor({ postId }) {
  const [post, setPost] = useState(null);
  const [loadError, setLoadError] = useState(null);
  const [draft, setDraftState] = useState(null);
  const [saveState, setSaveState] = useState("saved");
  const [saveError, setSaveError] = useState(null);
  const [conflict, setConflict] = useState(null);
  const [previewHtml, setPreviewHtml] = useState("");
  const [previewError, setPreviewError] = useState(null);
  const [seo, setSeo] = useState(null);
  const [history, setHistory] = useState(false);
  const [historyVersion, setHistoryVersion] = useState(0);
  const [sel, setSel] = useState({ start: 0, end: 0 });
  const [busy, setBusy] = useState(false);

  const url = `/api/posts/${encodeURIComponent(postId)}`;
  const postRef = useRef(null);
  const draftRef = useRef(null);
  const savedRef = useRef(null);    // the fields as last saved (what `changes` compares with)
  const revRef = useRef(0);         // the revision those fields are
  const conflictRef = useRef(null);
  const savingRef = useRef(null);   // the save in flight
  const againRef = useRef(false);   // edits arrived during it
  const timerRef = useRef(0);
  const autoSlugRef = useRef(false);
  const goneRef = useRef(false);    // deleted: nothing more to save
  const bodyRef = useRef(null);
  const detailsRef = useRef(null);

  const isDirty = () => !!draftRef.current && Object.keys(changes(draftRef.current, savedRef.current)).length > 0;

  function setDraft(next) {
    draftRef.current = next;
    setDraftState(next);
  }

  function setConflictNow(c) {
    conflictRef.current = c;
    setConflict(c);
  }

  /** Take `p` as the stored post and the editor's text (on load, "Load theirs", restore). */
  function adopt(p) {
    postRef.current = p;
    setPost(p);
    revRef.current = p.revision;
    savedRef.current = fieldsOf(p);
    setDraft(fieldsOf(p));
    // Until a post is first published its slug follows its title, unless the user set one.
    autoSlugRef.current = p.status === "draft" && p.published_at == null && slugFollowsTitle(p.slug, p.title);
    setSaveState("saved");
  }

  const loadSeo = () => api("GET", `${url}/seo`).then(setSeo, () => {});

  async function showConflict(e) {
    let current = e.body && e.body.current;
    if (!current) {
      // The error body's `current` is not kept by ApiError: read the stored post instead
      // (it is at least as new).
      try {
        current = await api("GET", url);
      } catch (err) {
        setSaveError(`This post was changed elsewhere, and reading it failed: ${err.message}`);
        setSaveState("unsaved");
        return;
      }
    }
    clearTimeout(timerRef.current);
    setConflictNow(current);
    setSaveState("conflict");
  }

  /** Record a save's answer: `sent` the fields as sent, `keys` the ones the PATCH carried. */
  function saved(p, sent, keys) {
    postRef.current = p;
    setPost(p);
    revRef.current = p.revision;
    const base = { ...savedRef.current };
    for (const k of keys) base[k] = sent[k];
    // Fields the server normalises (slug, lists) are shown as stored, unless they were edited
    // meanwhile or are being typed into (a trailing comma must not vanish under the caret).
    const stored = fieldsOf(p);
    const current = { ...draftRef.current };
    let changed = false;
    for (const k of ["slug", "tags", "keywords"]) {
      const typing = document.activeElement && document.activeElement.dataset && document.activeElement.dataset.field === k;
      if (keys.includes(k) && current[k] === sent[k] && stored[k] !== sent[k] && !typing) {
        current[k] = base[k] = stored[k];
        changed = true;
      }
    }
    savedRef.current = base;
    if (changed) setDraft(current);
  }

  async function saveOnce() {
    const sent = draftRef.current;
    const body = changes(sent, savedRef.current);
    let problem = null;
    if (body.title !== undefined && !body.title.trim()) {
      delete body.title;
      problem = "A post needs a title: it is not saved without one.";
    }
    if (body.slug !== undefined && !body.slug.trim()) delete body.slug;
    const keys = Object.keys(body);
    if (!keys.length) {
      setSaveError(problem);
      setSaveState(isDirty() ? "unsaved" : "saved");
      return;
    }
    setSaveState("saving");
    try {
      const p = await api("PATCH", url, { revision: revRef.current, ...body });
      saved(p, sent, keys);
      setSaveError(problem);
      setSaveState(isDirty() ? "unsaved" : "saved");
      loadSeo();
    } catch (e) {
      if (e.code === "revision_conflict") {
        await showConflict(e);
      } else if (body.slug !== undefined && autoSlugRef.current && (e.code === "slug_taken" || e.param === "slug")) {
        // A slug made from the title: taken means try the next number; refused means stop
        // following the title and keep the stored slug.
        const m = /^(.*?)(?:-(\d+))?$/.exec(body.slug);
        if (e.code === "slug_taken" && m && Number(m[2] || 1) < 50) {
          setDraft({ ...draftRef.current, slug: `${m[1]}-${Number(m[2] || 1) + 1}` });
        } else {
          autoSlugRef.current = false;
          setDraft({ ...draftRef.current, slug: savedRef.current.slug });
        }
        againRef.current = true;
      } else {
        setSaveError(e.param ? `${e.message} (${e.param})` : e.message);
        setSaveState("unsaved");
      }
    }
  }

  /** Save now (unless a conflict waits for the user); resolves when saved or refused. */
  async function save() {
    clearTimeout(timerRef.current);
    if (conflictRef.current || !postRef.current || goneRef.current) return;
    if (savingRef.current) {
      againRef.current = true;
      return savingRef.current;
    }
    const run = saveOnce();
    savingRef.current = run;
    try {
      await run;
    } finally {
      savingRef.current = null;
    }
    if (againRef.current) {
      againRef.current = false;
      if (isDirty()) await save();
    }
  }

  /** Wait for the save in flight, then save what is left; true when everything is stored. */
  async function flush() {
    clearTimeout(timerRef.current);
    while (savingRef.current) await savingRef.current;
    if (isDirty()) await save();
    return !conflictRef.current && !isDirty();
  }

  function edited() {
    if (conflictRef.current) return; // paused: the user decides first
    setSaveState(isDirty() ? "unsaved" : "saved");
    clearTimeout(timerRef.current);
    timerRef.current = setTimeout(save, AUTOSAVE_MS);
  }

  /** An edit of one field (typing, or an AI suggestion accepted). */
  function setField(name, value) {
    const next = { ...draftRef.current, [name]: value };
    if (name === "slug") autoSlugRef.current = false;
    if (name === "title" && autoSlugRef.current && slugify(value)) next.slug = slugify(value);
    setDraft(next);
    edited();
  }

  async function keepMine() {
    const theirs = conflictRef.current;
    if (!theirs) return;
    // The editor's text goes on top of their revision: an explicit choice of the user's.
    postRef.current = theirs;
    setPost(theirs);
    revRef.current = theirs.revision;
    savedRef.current = fieldsOf(theirs);
    setConflictNow(null);
    setSaveError(null);
    await save();
    if (!conflictRef.current && !isDirty()) setSaveState("saved");
  }

  function loadTheirs() {
    const theirs = conflictRef.current;
    if (!theirs) return;
    setConflictNow(null);
    setSaveError(null);
    adopt(theirs);
    loadSeo();
  }

  async function togglePublish() {
    setBusy(true);
    setSaveError(null);
    try {
      if (!(await flush())) {
        if (!conflictRef.current) setSaveError("Save your changes first.");
        return;
      }
      const action = postRef.current.status === "published" ? "unpublish" : "publish";
      const p = await api("POST", `${url}/${action}`);
      // Only what publishing changes: the held revision stays the one this editor saved, so
      // a newer save from elsewhere is still caught as a conflict.
      const next = { ...postRef.current, status: p.status, published_at: p.published_at, url: p.url };
      postRef.current = next;
      setPost(next);
      if (p.status === "published") autoSlugRef.current = false;
      loadSeo();
    } catch (e) {
      setSaveError(e.message);
    } finally {
      setBusy(false);
    }
  }

  async function remove() {
    if (!confirm(`Delete “${draftRef.current.title || "Untitled"}”? This cannot be undone.`)) return;
    try {
      clearTimeout(timerRef.current);
      goneRef.current = true;
      await api("DELETE", url);
      location.hash = "#/posts";
    } catch (e) {
      goneRef.current = false;
      setSaveError(e.message);
    }
  }

  async function restore(revision) {
    setSaveError(null);
    // What is unsaved goes into a revision of its own first: a restore loses nothing.
    if (!(await flush())) return;
    try {
      adopt(await api("POST", `${url}/revisions/${revision}/restore`, { revision: revRef.current }));
      setHistoryVersion((v) => v + 1);
      loadSeo();
    } catch (e) {
      if (e.code === "revision_conflict") await showConflict(e);
      else setSaveError(e.message);
    }
  }

  // Load the post.
  useEffect(() => {
    api("GET", url).then(
      (p) => {
        adopt(p);
        loadSeo();
      },
      (e) => setLoadError(e.status === 404 ? "This post does not exist (or is not yours)." : e.message),
    );
    const onKey = (e) => {
      if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "s") {
        e.preventDefault();
        save();
      }
    };
    const onLeave = (e) => {
      if (isDirty() || savingRef.current) {
        e.preventDefault();
        e.returnValue = "";
      }
    };
    const onHide = () => document.visibilityState === "hidden" && isDirty() && save();
    const onSelection = () => document.activeElement === bodyRef.current && trackSel();
    addEventListener("keydown", onKey);
    addEventListener("beforeunload", onLeave);
    document.addEventListener("visibilitychange", onHide);
    document.addEventListener("selectionchange", onSelection);
    return () => {
      removeEventListener("keydown", onKey);
      removeEventListener("beforeunload", onLeave);
      document.removeEventListener("visibilitychange", onHide);
      document.removeEventListener("selectionchange", onSelection);
      clearTimeout(timerRef.current);
      // Leaving the editor (another route) saves what is left.
      if (isDirty()) save();
    };
  }, [postId]);

  // The preview, from the server's renderer, a moment after the last keystroke.
  const bodyText = draft ? draft.body : null;
  useEffect(() => {
    if (bodyText === null) return;
    const ctl = new AbortController();
    const t = setTimeout(async () => {
      try {
        const r = await api("POST", "/api/render", { markdown: bodyText }, { signal: ctl.signal });
        setPreviewHtml(r.html);
        setPreviewError(null);
      } catch (e) {
        if (e.name !== "AbortError") setPreviewError(e.message);
      }
    }, PREVIEW_MS);
    return () => {
      clearTimeout(t);
      ctl.abort();
    };
  }, [bodyText]);

  function trackSel() {
    const el = bodyRef.current;
    if (!el) return;
    const start = el.selectionStart;
    const end = el.selectionEnd;
    setSel((s) => (s.start === start && s.end === end ? s : { start, end }));
  }

  if (loadError) {
    return html`<div class="page"><div class="inner">
      <p class="notice error" role="alert" data-testid="post-error">${loadError}</p>
      <p><a href="#/posts">← All posts</a></p></div></div>`;
  }
  if (!post || !draft) return html`<div class="page"><div class="inner"><p class="muted">Loading…</p></div></div>`;

  const published = post.status === "published";
  const metaLength = [...draft.meta_description].length;
  const set = setField;

  return html`<div class="page editor-page" onfocusout=${() => isDirty() && save()}><div class="inner">
    <div class="row editor-head">
      <a href="#/posts">← All posts</a>
      <span class=${`badge${published ? " ok" : ""}`} data-testid="post-status">${published ? "Published" : "Draft"}</span>
      <span class="grow"></span>
      <span class=${`save-state ${saveState}`} role="status" data-testid="post-save-state" data-state=${saveState}>${STATE_TEXT[saveState]}</span>
      <button type="button" data-testid="post-save" disabled=${!!conflict} onClick=${() => save()}>Save</button>
      <button type="button" class=${published ? "" : "primary"} data-testid="post-publish" disabled=${busy || !!conflict}
        onClick=${togglePublish}>${published ? "Unpublish" : "Publish"}</button>
      ${published && post.url && html`<a href=${post.url} target="_blank" rel="noopener" data-testid="post-public-link">View public page ↗</a>`}
      <button type="button" data-testid="post-revisions" aria-expanded=${history ? "true" : "false"} onClick=${() => setHistory(!history)}>History</button>
      <button type="button" class="danger" data-testid="post-delete" onClick=${remove}>Delete</button>
    </div>
    ${saveError && html`<p class="notice error" role="alert" data-testid="post-error">${saveError}</p>`}
    ${conflict && html`<${ConflictBanner} current=${conflict} onLoad=${loadTheirs} onOverwrite=${keepMine} />`}
    ${history && html`<${Revisions} url=${url} version=${historyVersion} current=${post.revision} onRestore=${restore} onClose=${() => setHistory(false)} />`}

    <label class="sr-only" for="post-title">Title</label>
    <input id="post-title" class="post-title" data-testid="post-title" data-field="title" maxlength="200" placeholder="Title"
      value=${draft.title} onInput=${(e) => set("title", e.target.value)} />

    <${AssistBar} postId=${postId} bodyRef=${bodyRef} sel=${sel} getDraft=${() => draftRef.current} setField=${setField}
      showDetails=${() => detailsRef.current && (detailsRef.current.open = true)} />

    <div class="editor-panes">
      <div class="pane">
        <label for="post-body">Markdown</label>
        <textarea id="post-body" ref=${bodyRef} data-testid="post-body" data-field="body" spellcheck="true"
          placeholder="Write in Markdown: # headings, - lists, \`\`\`code\`\`\`…" value=${draft.body}
          onInput=${(e) => {
            set("body", e.target.value);
            trackSel();
          }}
          onSelect=${trackSel} onKeyUp=${trackSel} onMouseUp=${trackSel} onFocus=${trackSel}></textarea>
      </div>
      <div class="pane">
        <span class="pane-label" id="preview-label">Preview</span>
        ${previewError && html`<p class="notice error" data-testid="preview-error">Preview failed: ${previewError}</p>`}
        <div class="preview-frame" aria-labelledby="preview-label">
          <${Preview} html=${previewHtml} />
        </div>
      </div>
    </div>

    <details class="post-details" ref=${detailsRef} data-testid="post-details">
      <summary>Details</summary>
      <div class="details-grid">
        <${Field} id="post-slug" label="Slug" field="slug" value=${draft.slug} onInput=${set} data-testid="post-slug"
          hint=${autoSlugRef.current ? "(follows the title until published)" : ""} />
        <${Field} id="post-tags" label="Tags" field="tags" value=${draft.tags} onInput=${set} data-testid="post-tags" hint="comma-separated" />
        <${Field} id="post-keywords" label="Keywords" field="keywords" value=${draft.keywords} onInput=${set} data-testid="post-keywords" hint="comma-separated" />
        <${Field} id="post-cover-alt" label="Cover image alt text" field="cover_alt" value=${draft.cover_alt} onInput=${set} data-testid="post-cover-alt" />
        <${Field} id="post-excerpt" label="Excerpt" field="excerpt" value=${draft.excerpt} onInput=${set} data-testid="post-excerpt" multiline />
        <${Field} id="post-meta" label="Meta description" field="meta_description" value=${draft.meta_description} onInput=${set}
          data-testid="post-meta-description" multiline
          hint=${html`<span class=${metaLength > META_MAX ? "error" : ""} data-testid="meta-count">${metaLength}/${META_MAX}</span>`} />
      </div>
    </details>

    <${SeoPanel} seo=${seo} />
  </div></div>`;
}
