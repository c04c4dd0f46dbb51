// The chat page: the conversation list, the open conversation (its active branch), the model
// picker, the remaining rate limit and the composer.
//
// Answers stream over the page's WebSocket as conversation turns. An answer outlives the
// socket on the server, so when the socket comes back (or the page is reloaded) the branch is
// read again and every answer still generating is followed from the characters already on
// screen — never repeated, never skipped; one that ended meanwhile is shown as stored.
// The view follows the stream only while the reader is at the bottom.

import { html, useEffect, useLayoutEffect, useRef, useState } from "../vendor/preact-htm.js";
import { api } from "../lib/session.js";
import { onSocketOpen, onSocketState, request } from "../lib/socket.js";
import { Message } from "./message.js";
import { ConversationList } from "./conversations.js";
import { SettingsDrawer } from "./drawer.js";

const chars = (s) => [...(s || "")].length;
const draftKey = (id) => `hearth.draft.${id || "new"}`;

/** The branch after a `message` frame: up to the new messages' parent, then them. */
function withTurn(ms, user, answer) {
  const first = user || answer;
  const at = first.parent_id == null ? -1 : ms.findIndex((m) => m.id === first.parent_id);
  const replaced = ms[at + 1];
  const out = ms.slice(0, at + 1);
  const sib = (m) => (replaced && replaced.role === m.role ? [...(replaced.siblings || [replaced.id]), m.id] : [m.id]);
  if (user) out.push({ ...user, siblings: sib(user) });
  out.push({ ...answer, siblings: user ? [answer.id] : sib(answer) });
  return out;
}

/** The server's branch, keeping text this page already shows of answers still generating. */
function merged(local, server) {
  const mine = new Map(local.map((m) => [m.id, m]));
  return server.map((m) => {
    const l = mine.get(m.id);
    if (m.status === "streaming" && l && l.status === "streaming" && l.content.startsWith(m.content)) {
      return { ...m, content: l.content, phase: l.phase };
    }
    return m;
  });
}

function RateBadge({ rate }) {
  if (!rate) return null;
  const parts = [];
  let warn = false;
  for (const [key, unit] of [["requests", "requests"], ["tokens", "tokens today"]]) {
    const r = rate[key];
    if (!r) continue;
    parts.push(`${r.remaining}/${r.limit} ${unit}`);
    if (r.remaining <= Math.max(1, Math.floor(r.limit * 0.2))) warn = true;
  }
  if (!parts.length) return null;
  return html`<span class=${`rate ${warn ? "notice warn" : "muted"}`} data-testid="rate-limit"
    title=${warn ? "You are close to your limit" : "Remaining budget"}>${warn ? "⚠ " : ""}${parts.join(" · ")}</span>`;
}

export function ChatPage({ conversationId }) {
  const [conv, setConv] = useState(null);
  const [messages, setMessages] = useState([]);
  const [models, setModels] = useState([]);
  const [prefs, setPrefs] = useState(null);
  const [pendingModel, setPendingModel] = useState("");
  const [rate, setRate] = useState(null);
  const [error, setError] = useState(null);
  const [listVersion, setListVersion] = useState(0);
  const [drawer, setDrawer] = useState(false);
  const [sidebar, setSidebar] = useState(false);
  const [online, setOnline] = useState(false);
  const [following, setFollowing] = useState(true);
  const [draft, setDraft] = useState(localStorage.getItem(draftKey(conversationId)) || "");
  const [loading, setLoading] = useState(false);
  // A turn sent whose answer has not started: its `status` frames (queued, thinking).
  const [pending, setPending] = useState(null);

  const messagesRef = useRef(messages);
  messagesRef.current = messages;
  const convId = useRef(conversationId);
  const skipLoad = useRef(null);
  const followed = useRef(new Map()); // message id -> socket request id
  const followRef = useRef(true);
  const lastTop = useRef(0);
  const scroller = useRef(null);
  const composer = useRef(null);

  const busy = !!pending || messages.some((m) => m.status === "streaming");

  const refreshRate = () => api("GET", "/api/rate-limit").then(setRate).catch(() => {});
  const bumpList = () => setListVersion((v) => v + 1);

  function patchMessage(id, fn) {
    setMessages((ms) => ms.map((m) => (m.id === id ? fn(m) : m)));
  }

  function onFrame(frame, reqId) {
    switch (frame.type) {
      case "message":
        // A turn sent from a conversation the reader has since left keeps going on the server.
        if (frame.message.conversation_id !== convId.current) break;
        followed.current.set(frame.message.id, reqId);
        setPending(null);
        setMessages((ms) => withTurn(ms, frame.user_message, frame.message));
        break;
      case "status":
        setPending((p) => (p && p.reqId === reqId ? { reqId, phase: frame.state } : p));
        break;
      case "token":
        patchMessage(frame.message_id, (m) => ({ ...m, content: m.content + frame.text, phase: "writing" }));
        break;
      case "done": {
        followed.current.delete(frame.message_id);
        const u = frame.usage || {};
        patchMessage(frame.message_id, (m) => ({
          ...m,
          status: frame.status,
          finish_reason: frame.finish_reason,
          error: frame.error,
          model: frame.model || m.model,
          prompt_tokens: u.prompt_tokens,
          completion_tokens: u.completion_tokens,
          timings: frame.timings || m.timings,
          tool_calls: frame.tool_calls || m.tool_calls,
        }));
        refreshRate();
        bumpList();
        // The model names a new conversation in the background.
        setTimeout(() => {
          bumpList();
          const id = convId.current;
          if (id) api("GET", `/api/conversations/${encodeURIComponent(id)}`).then((c) => convId.current === id && setConv(c), () => {});
        }, 4000);
        if (frame.status !== "done" && convId.current) load(convId.current);
        break;
      }
      case "error":
        setPending((p) => (p && p.reqId === reqId ? null : p));
        for (const [mid, rid] of followed.current) if (rid === reqId) followed.current.delete(mid);
        setError(frame.retry_after ? `${frame.message} (retry in ${frame.retry_after} s)` : frame.message);
        if (frame.status === 429) refreshRate();
        break;
    }
  }

  function follow(m) {
    if (followed.current.has(m.id)) return;
    let reqId = null;
    reqId = request(
      { type: "resume", message_id: m.id, offset: chars(m.content), timestamps: true },
      { onFrame: (f) => onFrame(f, reqId), onDrop: () => followed.current.delete(m.id) },
    );
    if (reqId) followed.current.set(m.id, reqId);
  }

  async function load(id) {
    setLoading(true);
    try {
      const [c, list] = await Promise.all([
        api("GET", `/api/conversations/${encodeURIComponent(id)}`),
        api("GET", `/api/conversations/${encodeURIComponent(id)}/messages`),
      ]);
      if (convId.current !== id) return;
      setConv(c);
      const next = merged(messagesRef.current, list.data);
      setMessages(next);
      for (const m of next) if (m.role === "assistant" && m.status === "streaming") follow(m);
    } catch (e) {
      if (convId.current === id) setError(e.status === 404 ? "This conversation does not exist (or is not yours)." : e.message);
    } finally {
      setLoading(false);
    }
  }

  useEffect(() => {
    api("GET", "/api/models").then((r) => setModels(r.data)).catch(() => {});
    api("GET", "/api/me/preferences").then(setPrefs).catch(() => {});
    refreshRate();
    const offState = onSocketState((s) => setOnline(s === "online"));
    // Back online: read the branch again and follow what is still generating.
    const offOpen = onSocketOpen(() => convId.current && load(convId.current));
    return () => {
      offState();
      offOpen();
    };
  }, []);

  useEffect(() => {
    convId.current = conversationId;
    setDraft(localStorage.getItem(draftKey(conversationId)) || "");
    setSidebar(false);
    setDrawer(false);
    if (skipLoad.current && skipLoad.current === conversationId) {
      skipLoad.current = null;
      return;
    }
    followed.current.clear();
    setPending(null);
    followRef.current = true;
    setFollowing(true);
    setMessages([]);
    setConv(null);
    setError(null);
    if (conversationId) load(conversationId);
  }, [conversationId]);

  function toBottom() {
    const el = scroller.current;
    if (!el) return;
    el.scrollTop = el.scrollHeight;
    lastTop.current = el.scrollTop;
  }

  useLayoutEffect(() => {
    if (followRef.current) toBottom();
  }, [messages]);

  function onScroll() {
    const el = scroller.current;
    const atBottom = el.scrollHeight - el.scrollTop - el.clientHeight < 8;
    const movedUp = el.scrollTop < lastTop.current - 1;
    lastTop.current = el.scrollTop;
    const next = atBottom ? true : movedUp ? false : followRef.current;
    if (next !== followRef.current) {
      followRef.current = next;
      setFollowing(next);
    }
  }

  function jump() {
    followRef.current = true;
    setFollowing(true);
    toBottom();
  }

  async function ensureConversation() {
    if (convId.current) return convId.current;
    const c = await api("POST", "/api/conversations", pendingModel ? { model: pendingModel } : {});
    skipLoad.current = c.id;
    convId.current = c.id;
    setConv(c);
    localStorage.removeItem(draftKey(null));
    location.hash = `#/c/${encodeURIComponent(c.id)}`;
    return c.id;
  }

  async function turn(fields) {
    setError(null);
    try {
      const id = await ensureConversation();
      let reqId = null;
      let started = false;
      reqId = request(
        { type: "generate", conversation_id: id, timestamps: true, ...fields },
        {
          onFrame: (f) => {
            if (f.type === "message") started = true;
            // Refused before it started (a limit, a bad parameter): the text is back to send later.
            if (f.type === "error" && !started && fields.content && fields.parent_id === undefined) {
              setDraft((d) => d || fields.content);
            }
            onFrame(f, reqId);
          },
          // The answer may have started: reading the branch again on reconnect finds it.
          onDrop: () => setPending((p) => (p && p.reqId === reqId ? null : p)),
        },
      );
      if (reqId) setPending({ reqId, phase: "sending" });
      if (!reqId) {
        setError("Not connected to the server; reconnecting — try again in a moment.");
        return false;
      }
      followRef.current = true;
      setFollowing(true);
      return true;
    } catch (e) {
      setError(e.message);
      return false;
    }
  }

  async function send() {
    const content = draft;
    if (!content.trim() || busy) return;
    setDraft("");
    localStorage.removeItem(draftKey(convId.current));
    const ok = await turn({ content });
    if (!ok) setDraft(content);
  }

  async function stop() {
    for (const m of messagesRef.current) {
      if (m.status === "streaming") {
        await api("POST", `/api/messages/${encodeURIComponent(m.id)}/cancel`).catch(() => {});
      }
    }
  }

  useEffect(() => {
    const onKey = (e) => {
      if (e.key === "Escape" && messagesRef.current.some((m) => m.status === "streaming")) {
        e.preventDefault();
        stop();
      }
    };
    addEventListener("keydown", onKey);
    return () => removeEventListener("keydown", onKey);
  }, []);

  async function switchBranch(messageId) {
    try {
      await api("PUT", `/api/conversations/${encodeURIComponent(convId.current)}/active`, { message_id: messageId });
      await load(convId.current);
    } catch (e) {
      setError(e.message);
    }
  }

  async function pickModel(value) {
    if (!conv) return setPendingModel(value);
    try {
      setConv(await api("PATCH", `/api/conversations/${encodeURIComponent(conv.id)}`, { model: value || null }));
    } catch (e) {
      setError(e.message);
    }
  }

  async function saveSettings(body) {
    const id = await ensureConversation();
    setConv(await api("PATCH", `/api/conversations/${encodeURIComponent(id)}`, body));
  }

  const modelValue = conv ? conv.model || "" : pendingModel;
  const lastAssistant = [...messages].reverse().find((m) => m.role === "assistant");
  const defaultModel = models.find((m) => m.default);

  return html`<div class="chat">
    <${ConversationList} currentId=${conversationId} version=${listVersion} open=${sidebar} onError=${setError} />
    <main class="main">
      <div class="chat-head">
        <button class="icon show-narrow" type="button" aria-label="Conversations" onClick=${() => setSidebar(!sidebar)}>☰</button>
        <h1>${(conv && conv.title) || "New conversation"}</h1>
        <label class="sr-only" for="model-picker">Model</label>
        <select id="model-picker" class="model-picker" data-testid="model-picker" value=${modelValue}
          onChange=${(e) => pickModel(e.target.value)}>
          <option value="">Default${defaultModel ? ` (${defaultModel.id})` : ""}</option>
          ${models.map((m) => html`<option value=${m.id} disabled=${m.status === "unavailable"}>
            ${m.id} — ${m.local ? "local" : "remote"}${m.status === "unavailable" ? ", unavailable (breaker open)" : ""}</option>`)}
        </select>
        <${RateBadge} rate=${rate} />
        <button type="button" data-testid="open-settings" aria-expanded=${drawer ? "true" : "false"} onClick=${() => setDrawer(!drawer)}>Settings</button>
      </div>
      <div class="messages" ref=${scroller} onScroll=${onScroll} data-testid="messages">
        <div class="inner">
          ${error && html`<p class="notice error" role="alert" data-testid="chat-error">${error}</p>`}
          ${!messages.length && !loading && html`<p class="empty">Ask anything. Enter sends, Shift+Enter adds a line, Esc stops.</p>`}
          ${messages.map((m) => html`<${Message} key=${m.id} m=${m} busy=${busy} last=${m === lastAssistant}
            onSwitch=${switchBranch} onRendered=${() => followRef.current && toBottom()}
            onEdit=${(um, text) => turn({ content: text, parent_id: um.parent_id ?? null })}
            onRegenerate=${(am) => turn({ regenerate: am.id })} />`)}
          ${pending && html`<div class="msg assistant" data-testid="pending" aria-live="polite">
            <span class="typing" role="status"><span></span><span></span><span></span>
              <em class="muted">${pending.phase === "queued" ? "queued…" : pending.phase === "thinking" ? "reading your message…" : "sending…"}</em></span>
          </div>`}
        </div>
      </div>
      ${!following && html`<button class="jump" type="button" data-testid="jump-to-latest" onClick=${jump}>↓ Jump to latest</button>`}
      <form class="composer" onSubmit=${(e) => { e.preventDefault(); send(); }}>
        <div class="inner">
          <label class="sr-only" for="composer">Message</label>
          <textarea id="composer" ref=${composer} data-testid="composer" rows="1" placeholder="Message Hearth"
            value=${draft}
            onInput=${(e) => {
              setDraft(e.target.value);
              localStorage.setItem(draftKey(convId.current), e.target.value);
            }}
            onKeyDown=${(e) => {
              if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
                e.preventDefault();
                send();
              }
            }}></textarea>
          ${busy
            ? html`<button type="button" data-testid="stop" onClick=${stop}>Stop</button>`
            : html`<button class="primary" type="submit" data-testid="send" disabled=${!draft.trim() || !online}>Send</button>`}
        </div>
      </form>
      ${drawer && html`<${SettingsDrawer} conv=${conv} prefs=${prefs} onSave=${saveSettings} onClose=${() => setDrawer(false)} />`}
    </main>
  </div>`;
}
