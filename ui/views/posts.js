// The blog: `#/posts` lists the user's posts (all, drafts or published) and makes new ones;
// `#/posts/<id>` opens one in the editor (./editor.js).
//
// A new post is created at once, titled "Untitled", and opened: the editor saves from the
// first keystroke (it needs the post's id and revision for that, and for the AI tools), and
// its slug follows the title until the post is first published.

import { html, useEffect, useState } from "../vendor/preact-htm.js";
import { api } from "../lib/session.js";
import { PostEditor } from "./editor.js";

const FILTERS = [
  ["", "All"],
  ["draft", "Drafts"],
  ["published", "Published"],
];

/** "3 min ago", "yesterday", or a date: how long ago a unix time `t` was. */
export function ago(t) {
  if (!t) return "never";
  const s = Math.max(0, Date.now() / 1000 - t);
  if (s < 45) return "just now";
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  if (s < 2 * 86400) return "yesterday";
  return new Date(t * 1000).toLocaleDateString();
}

function PostRow({ post }) {
  const href = `#/posts/${encodeURIComponent(post.id)}`;
  return html`<li>
    <a class="post-item" href=${href} data-testid="post-item" data-post-id=${post.id} data-status=${post.status}>
      <span class="post-item-title">${post.title || "Untitled"}</span>
      <span class=${`badge${post.status === "published" ? " ok" : ""}`}>${post.status === "published" ? "Published" : "Draft"}</span>
      <span class="muted" title=${new Date(post.updated_at * 1000).toLocaleString()}>updated ${ago(post.updated_at)}</span>
      <span class="muted">${post.words} ${post.words === 1 ? "word" : "words"}</span>
    </a>
  </li>`;
}

function PostList({ me }) {
  const [status, setStatus] = useState("");
  const [posts, setPosts] = useState(null);
  const [error, setError] = useState(null);
  const [creating, setCreating] = useState(false);

  useEffect(() => {
    const ctl = new AbortController();
    setPosts(null);
    const q = status ? `?status=${status}` : "";
    api("GET", `/api/posts${q}`, undefined, { signal: ctl.signal }).then(
      (r) => setPosts(r.data),
      (e) => e.name !== "AbortError" && setError(e.message),
    );
    return () => ctl.abort();
  }, [status]);

  async function create() {
    setCreating(true);
    setError(null);
    try {
      const post = await api("POST", "/api/posts", { title: "Untitled" });
      location.hash = `#/posts/${encodeURIComponent(post.id)}`;
    } catch (e) {
      setError(e.message);
      setCreating(false);
    }
  }

  return html`<div class="page"><div class="inner">
    <div class="row posts-head">
      <h1 class="grow">Blog</h1>
      <a href=${`/blog/${encodeURIComponent(me.username)}`} target="_blank" rel="noopener">Your public blog ↗</a>
      <button class="primary" type="button" data-testid="new-post" disabled=${creating} onClick=${create}>New post</button>
    </div>
    <div class="row" role="group" aria-label="Show">
      ${FILTERS.map(([value, label]) => html`<button type="button" class="filter" aria-pressed=${status === value ? "true" : "false"}
        data-testid=${`posts-filter-${value || "all"}`} onClick=${() => setStatus(value)}>${label}</button>`)}
    </div>
    ${error && html`<p class="notice error" role="alert">${error}</p>`}
    ${posts === null && !error && html`<p class="muted">Loading…</p>`}
    ${posts && html`<ul class="post-list" data-testid="post-list">
      ${posts.map((p) => html`<${PostRow} key=${p.id} post=${p} />`)}
      ${posts.length === 0 && html`<li class="muted empty-list">${status === "published" ? "Nothing published yet." : status === "draft" ? "No drafts." : "No posts yet: start one with “New post”."}</li>`}
    </ul>`}
  </div></div>`;
}

/** The blog pages: the list, or the editor of `postId`. */
export function PostsPage({ me, postId }) {
  if (postId) return html`<${PostEditor} key=${postId} postId=${postId} me=${me} />`;
  return html`<${PostList} me=${me} />`;
}
