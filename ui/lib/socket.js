// The one WebSocket of the page (`/ws`), shared by every view.
//
// It authenticates with the access token in the URL (browsers cannot set headers on a
// WebSocket), reconnects with backoff (250 ms doubling to 2 s) whenever it drops, and a socket
// the server closed with 1008 (the token expired or was revoked) first gets a fresh token.
// Frames are routed by their `id` to the handler that sent the request; handlers learn that
// the socket went (`onDrop`) so that views can resume their answers once it is back.
// The server checks the socket's credential again and again, so when the page gets a new access
// token the socket is reopened with it (once nothing is in flight on it), before the old one
// expires.

import { accessToken, onTokenChange, refresh } from "./session.js";

const MAX_BACKOFF_MS = 2000;

let ws = null;
let state = "offline"; // offline | connecting | online
let attempts = 0;
let timer = 0;
let wanted = false;
let counter = 0;
let staleToken = false; // opened with a token the page has since replaced
const handlers = new Map();      // id -> {onFrame, onDrop}
const stateListeners = new Set();
const openListeners = new Set();

function setState(s) {
  state = s;
  for (const fn of stateListeners) fn(s);
}

/** `fn(state)` on every change; returns an unsubscribe function. */
export function onSocketState(fn) {
  stateListeners.add(fn);
  fn(state);
  return () => stateListeners.delete(fn);
}

/** `fn()` each time the socket (re)opens. */
export function onSocketOpen(fn) {
  openListeners.add(fn);
  return () => openListeners.delete(fn);
}

export function socketState() {
  return state;
}

/** Start (and keep) the connection. */
export function connect() {
  wanted = true;
  if (ws || state === "connecting") return;
  open();
}

/** Close and stop reconnecting (on sign-out). */
export function disconnect() {
  wanted = false;
  clearTimeout(timer);
  if (ws) ws.close(1000);
  ws = null;
  setState("offline");
}

/** Open the socket; `quiet`: a planned reopen, not shown as a reconnect. */
function open(quiet = false) {
  const token = accessToken();
  if (!token) {
    setState("offline");
    return;
  }
  if (!quiet) setState("connecting");
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const sock = new WebSocket(`${proto}//${location.host}/ws?api_key=${encodeURIComponent(token)}`);
  ws = sock;
  staleToken = false;
  sock.onopen = () => {
    attempts = 0;
    setState("online");
    for (const fn of openListeners) fn();
  };
  sock.onmessage = (e) => {
    let frame;
    try {
      frame = JSON.parse(e.data);
    } catch {
      return;
    }
    const h = frame.id != null ? handlers.get(frame.id) : null;
    if (!h) return;
    const last = frame.type === "done" || (frame.type === "error" && frame.code !== "duplicate_id");
    if (last) handlers.delete(frame.id);
    h.onFrame(frame);
    if (last) reopenIfStale();
  };
  sock.onclose = async (e) => {
    if (ws !== sock) return;
    ws = null;
    setState("offline");
    const dropped = [...handlers.values()];
    handlers.clear();
    for (const h of dropped) h.onDrop && h.onDrop();
    if (!wanted) return;
    if (e.code === 1008) {
      try {
        await refresh(accessToken());
      } catch {
        // The next attempt tries again.
      }
    }
    const delay = Math.min(MAX_BACKOFF_MS, 250 * 2 ** attempts++);
    clearTimeout(timer);
    timer = setTimeout(() => wanted && !ws && open(), delay);
  };
}

/** Reopen a socket whose token was replaced, once nothing is in flight on it. */
function reopenIfStale() {
  if (!staleToken || handlers.size > 0 || !ws) return;
  const old = ws;
  ws = null;
  old.onclose = null;
  old.close(1000);
  open(true);
}

onTokenChange(() => {
  if (!ws) return;
  staleToken = true;
  reopenIfStale();
});

/** Reconnect now (e.g. the page became visible again). */
export function reconnectSoon() {
  if (wanted && !ws) {
    clearTimeout(timer);
    attempts = 0;
    open();
  }
}

/**
 * Send a request frame; its reply frames go to `onFrame` until its `done` or `error`, and
 * `onDrop` is called if the socket goes first. Returns the frame's id, or null when offline.
 */
export function request(frame, { onFrame, onDrop }) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return null;
  const id = frame.id || `c${++counter}`;
  handlers.set(id, { onFrame, onDrop });
  ws.send(JSON.stringify({ ...frame, id }));
  return id;
}

/** Stop a request (for a conversation answer: stop the answer itself). */
export function cancel(id) {
  if (ws && ws.readyState === WebSocket.OPEN && handlers.has(id)) {
    ws.send(JSON.stringify({ type: "cancel", id }));
  }
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") reconnectSoon();
});
addEventListener("online", reconnectSoon);
