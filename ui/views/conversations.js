// The conversation list: search (Ctrl+K), new, and per conversation rename, pin, archive,
// export and delete.

import { html, useEffect, useRef, useState } from "../vendor/preact-htm.js";
import { api } from "../lib/session.js";

async function download(conv, format) {
  const r = await api("GET", `/api/conversations/${encodeURIComponent(conv.id)}/export?format=${format}`, undefined, { raw: true });
  const blob = await r.blob();
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  const safe = (conv.title || "conversation").replace(/[^\w.-]+/g, "_").slice(0, 60);
  a.download = `${safe}.${format === "markdown" ? "md" : "json"}`;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

function Item({ conv, current, onChanged, onError }) {
  const [open, setOpen] = useState(false);
  const act = async (fn) => {
    setOpen(false);
    try {
      await fn();
      onChanged();
    } catch (e) {
      onError(e.message);
    }
  };
  const patch = (body) => act(() => api("PATCH", `/api/conversations/${encodeURIComponent(conv.id)}`, body));
  return html`<li>
    <div class="conv-item" data-testid="conversation-item" data-conversation-id=${conv.id} aria-current=${current ? "true" : "false"}>
      <a href=${`#/c/${encodeURIComponent(conv.id)}`} title=${conv.title}>${conv.pinned ? "📌 " : ""}${conv.title || "New conversation"}</a>
      <button class="icon menu" type="button" aria-label=${`Actions for ${conv.title}`} aria-expanded=${open ? "true" : "false"}
        data-testid="conversation-menu" onClick=${() => setOpen(!open)}>⋯</button>
    </div>
    ${open && html`<div class="conv-actions">
      <button type="button" data-testid="rename" onClick=${() => {
        const title = prompt("Rename conversation", conv.title);
        if (title && title.trim()) patch({ title: title.trim() });
      }}>Rename</button>
      <button type="button" data-testid="pin" onClick=${() => patch({ pinned: !conv.pinned })}>${conv.pinned ? "Unpin" : "Pin"}</button>
      <button type="button" data-testid="archive" onClick=${() => patch({ archived: !conv.archived })}>${conv.archived ? "Unarchive" : "Archive"}</button>
      <button type="button" onClick=${() => act(() => download(conv, "json"))}>Export JSON</button>
      <button type="button" onClick=${() => act(() => download(conv, "markdown"))}>Export Markdown</button>
      <button type="button" class="danger" data-testid="delete" onClick=${() => {
        if (confirm(`Delete “${conv.title}”? This cannot be undone.`)) {
          act(async () => {
            await api("DELETE", `/api/conversations/${encodeURIComponent(conv.id)}`);
            if (current) location.hash = "#/";
          });
        }
      }}>Delete</button>
    </div>`}
  </li>`;
}

export function ConversationList({ currentId, version, open, onError }) {
  const [items, setItems] = useState([]);
  const [query, setQuery] = useState("");
  const [archived, setArchived] = useState(false);
  const [tick, setTick] = useState(0);
  const search = useRef(null);

  useEffect(() => {
    const ctl = new AbortController();
    const t = setTimeout(async () => {
      const q = new URLSearchParams({ limit: "100" });
      if (query.trim()) q.set("q", query.trim());
      if (archived) q.set("archived", "true");
      try {
        const r = await api("GET", `/api/conversations?${q}`, undefined, { signal: ctl.signal });
        setItems(r.data);
      } catch (e) {
        if (e.name !== "AbortError") onError(e.message);
      }
    }, query ? 250 : 0);
    return () => {
      clearTimeout(t);
      ctl.abort();
    };
  }, [query, archived, version, tick]);

  useEffect(() => {
    const onKey = (e) => {
      if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "k") {
        e.preventDefault();
        if (search.current) search.current.focus();
      }
    };
    addEventListener("keydown", onKey);
    return () => removeEventListener("keydown", onKey);
  }, []);

  return html`<aside class=${`sidebar${open ? " open" : ""}`} aria-label="Conversations">
    <div class="tools">
      <button class="primary" type="button" data-testid="new-conversation" onClick=${() => (location.hash = "#/")}>New conversation</button>
      <label class="sr-only" for="conv-search">Search conversations</label>
      <input id="conv-search" ref=${search} type="search" placeholder="Search (Ctrl+K)" data-testid="search"
        value=${query} onInput=${(e) => setQuery(e.target.value)} />
      <label class="inline"><input type="checkbox" checked=${archived} onChange=${(e) => setArchived(e.target.checked)} /> Archived</label>
    </div>
    <ul>
      ${items.map((c) => html`<${Item} key=${c.id} conv=${c} current=${c.id === currentId}
        onChanged=${() => setTick(tick + 1)} onError=${onError} />`)}
      ${items.length === 0 && html`<li class="muted empty-list">${query ? "Nothing found." : "No conversations yet."}</li>`}
    </ul>
  </aside>`;
}
